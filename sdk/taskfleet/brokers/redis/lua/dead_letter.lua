-- Move one in-flight message to the queue's dead-letter list, with its bytes and the reason, atomically.
-- A lease that was lost (expired and delivered again, or settled) is left alone. The client sends the bytes it was
-- delivered, already base64-encoded: while the lease holds they are the stored bytes, and encoding a large message
-- in Lua would stall the server.
-- KEYS: inflight, msg, rank, dlv, dead
-- ARGV: id, delivery count, reason, queue name, data as base64
-- Returns 1 when the message was dead-lettered, 0 when its lease was lost.
local id = ARGV[1]
if not redis.call('ZSCORE', KEYS[1], id) or redis.call('HGET', KEYS[4], id) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('HDEL', KEYS[3], id)
redis.call('HDEL', KEYS[4], id)
redis.call('RPUSH', KEYS[5], dead_json(ARGV[4], id, ARGV[3], now_ms(), ARGV[5]))
return 1
