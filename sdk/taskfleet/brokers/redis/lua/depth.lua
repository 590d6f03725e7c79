-- Count the messages of one queue (writes nothing). A delayed message whose due time has passed by the server's
-- clock (the clock enqueue.lua scored it with and fetch.lua promotes by) is counted as due, not delayed: it is
-- work to do now, which only a fetch moves to ready.
-- KEYS: ready, inflight, delayed, dead
-- Returns {ready, in-flight, delayed (not yet due), due, dead}.
local now = now_ms()
local due = redis.call('ZCOUNT', KEYS[3], '-inf', now)
return {
  redis.call('ZCARD', KEYS[1]),
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCARD', KEYS[3]) - due,
  due,
  redis.call('LLEN', KEYS[4]),
}
