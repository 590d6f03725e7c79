-- Move dead letters of one queue back to ready as fresh messages, atomically: each record is taken out of the
-- dead-letter list by value (LREM of the first equal record; equal records are interchangeable, so the order of
-- the others is kept) and, only when it was still there, stored as ready with its delivery count reset, at
-- priority 0 (records do not keep it) behind what is ready now. The client sends the bytes it decoded from each
-- record: decoding base64 in Lua would stall the server on large messages. An id still stored (enqueued again
-- since) is replaced, as by enqueue.
-- KEYS: ready, inflight, delayed, msg, rank, dlv, seq, signal, dead, tf:queues
-- ARGV: queue name, then per dead letter, oldest first: the record as stored, id, data
-- Returns the number of dead letters moved.
local moved = 0
for i = 2, #ARGV, 3 do
  if redis.call('LREM', KEYS[9], 1, ARGV[i]) == 1 then
    local id = ARGV[i + 1]
    local rank = int(9 * PRIORITY_STEP + redis.call('INCR', KEYS[7]))
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HSET', KEYS[4], id, ARGV[i + 2])
    redis.call('HSET', KEYS[5], id, rank)
    redis.call('HSET', KEYS[6], id, 0)
    redis.call('ZADD', KEYS[1], rank, id)
    moved = moved + 1
  end
end
if moved > 0 then
  redis.call('SADD', KEYS[10], ARGV[1])
  signal(KEYS[8], moved)
end
return moved
