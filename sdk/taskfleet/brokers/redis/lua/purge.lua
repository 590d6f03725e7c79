-- Delete the ready and delayed messages of one queue; in-flight ones stay with their workers.
-- KEYS: ready, inflight, delayed, msg, rank, dlv, signal
-- Returns the number of messages deleted.
local deleted = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[3])
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('UNLINK', KEYS[1], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
  return deleted
end
for _, set in ipairs({KEYS[1], KEYS[3]}) do
  while true do
    local ids = redis.call('ZRANGE', set, 0, 999)
    if #ids == 0 then break end
    redis.call('HDEL', KEYS[4], unpack(ids))
    redis.call('HDEL', KEYS[5], unpack(ids))
    redis.call('HDEL', KEYS[6], unpack(ids))
    redis.call('ZREM', set, unpack(ids))
  end
end
redis.call('DEL', KEYS[7])
return deleted
