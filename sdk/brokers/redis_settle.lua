-- Settle leases of one queue. A lease counts only while the message is in-flight with the delivery count the
-- worker was given, so a worker whose lease expired (and whose message was delivered again) changes nothing.
-- KEYS: ready, inflight, msg, rank, dlv, signal
-- ARGV: mode ('ack' | 'release' | 'nack' | 'extend'), visibility_timeout_ms, then id, delivery count, ...
-- Returns the number of leases settled.
local mode = ARGV[1]
local deadline = nil
if mode == 'extend' then
  deadline = int(now_ms() + tonumber(ARGV[2]))
end
local settled = 0
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('ZSCORE', KEYS[2], id) and redis.call('HGET', KEYS[5], id) == ARGV[i + 1] then
    settled = settled + 1
    if mode == 'extend' then
      redis.call('ZADD', KEYS[2], 'XX', deadline, id)
    elseif mode == 'ack' then
      redis.call('ZREM', KEYS[2], id)
      redis.call('HDEL', KEYS[3], id)
      redis.call('HDEL', KEYS[4], id)
      redis.call('HDEL', KEYS[5], id)
    else
      -- Back to ready at the rank it was enqueued with: ahead of everything that came after it.
      redis.call('ZREM', KEYS[2], id)
      redis.call('ZADD', KEYS[1], redis.call('HGET', KEYS[4], id) or int(9 * PRIORITY_STEP), id)
      if mode == 'release' then
        redis.call('HINCRBY', KEYS[5], id, -1)
      end
    end
  end
end
if settled > 0 and (mode == 'release' or mode == 'nack') then
  signal(KEYS[6], settled)
end
return settled
