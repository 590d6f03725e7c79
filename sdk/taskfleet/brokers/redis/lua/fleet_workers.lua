-- The ids of the live workers (the fleet store). KEYS: the namespace's worker index. Prunes expired entries
-- first, by the server clock (the same clock their TTLs run on).
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now_ms()))
return redis.call('ZRANGE', KEYS[1], 0, -1)
