-- A worker's heartbeat (the fleet store). KEYS: the worker's record key, the namespace's worker index.
-- ARGV: worker id, record, ttl in ms. The record expires by its TTL; the index (ZSET id -> expiry by the server
-- clock) is what workers() lists, pruned here and on read, so it never outgrows the live fleet for long.
local now = now_ms()
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', int(now))
redis.call('ZADD', KEYS[2], int(now + ttl), ARGV[1])
return 1
