"""The dashboard (``taskfleet dashboard``, docs/dashboard.md): the fleet's monitor, Flower's job done on the fleet
store's events, registry and control commands.

- ``model``: the plain data the parts share (history rows, queries, pages, series) and the interfaces between them.
- ``history``: the durable history (SQLite, with retention) and the ingester that fills it from the events stream,
  the brokers' queue depths and, on Kubernetes, the TaskQueues' replicas.
- ``kube``: reading TaskQueues and their Events (the only dashboard module that imports ``kubernetes``).
- ``web``: the ASGI app (FastAPI): HTML pages, the JSON API and its OpenAPI document, auth and roles.
"""
