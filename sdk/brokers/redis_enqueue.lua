-- Store messages of one queue, each ready now or after its delay. Re-enqueueing an id replaces it: the sorted sets
-- are keyed by id, and a stale in-flight copy loses its lease (an ack from its worker becomes a no-op).
-- KEYS: ready, inflight, delayed, msg, rank, dlv, seq, signal, tf:queues
-- ARGV: queue name, then per message: id, data, priority (0-9), delay_ms
-- Returns the number of messages stored.
local now = nil
local ready = 0
redis.call('SADD', KEYS[9], ARGV[1])
for i = 2, #ARGV, 4 do
  local id, priority, delay_ms = ARGV[i], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local base = (9 - priority) * PRIORITY_STEP
  local replaced = redis.call('HSET', KEYS[4], id, ARGV[i + 1]) == 0
  if replaced then
    redis.call('HSETNX', KEYS[6], id, 0)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
  else
    redis.call('HSET', KEYS[6], id, 0)
  end
  if delay_ms > 0 then
    -- The sequence number is drawn at promotion, so the message queues behind what is ready by then.
    now = now or now_ms()
    redis.call('HSET', KEYS[5], id, int(base))
    redis.call('ZADD', KEYS[3], int(now + delay_ms), id)
  else
    local rank = int(base + redis.call('INCR', KEYS[7]))
    redis.call('HSET', KEYS[5], id, rank)
    redis.call('ZADD', KEYS[1], rank, id)
    ready = ready + 1
  end
end
if ready > 0 then
  signal(KEYS[8], ready)
end
return (#ARGV - 1) / 4
