"""Private: what the Redis and SQLite brokers, result backends and beat stores share (``redis``: client set-up,
error translation and the hot-path connections; ``sqlite``: URL parsing, per-process connections and transactions),
and ``schemes``: the one table that maps a URL scheme to its broker, result backend and beat store.

Nothing outside ``taskfleet`` should import from here. This ``__init__`` imports nothing, so importing one module of
the package does not load the client libraries of another.
"""
