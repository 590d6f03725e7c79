-- Store messages of one queue, each ready now or after its delay. Re-enqueueing an id replaces it: the sorted sets
-- are keyed by id, and a stale in-flight copy loses its lease (an ack from its worker becomes a no-op); its delivery
-- count is kept. A new message has no delivery count yet: the fetch that leases it counts from 0.
-- Every command is sent once per call with all the messages (a few commands in all, whatever the batch size);
-- a batch that names an id twice is stored message by message instead, in order, so the last copy wins.
-- A call whose ready messages find the queue's wake-up list empty (the queue went from empty to non-empty: see
-- signal in common.lua) also PUBLISHes the queue's name on its wake channel (wake_channel in common.lua), so an
-- operator holding the queue at zero replicas polls at once. No extra command otherwise: the test is RPUSH's reply,
-- and a PUBLISH to a channel nobody follows is a lookup in the server's channel table.
-- KEYS: ready, inflight, delayed, msg, rank, dlv, seq, signal, tf:queues
-- ARGV: queue name, then per message: id, data, priority (0-9), delay_ms
-- Returns the number of messages stored.
local n = (#ARGV - 1) / 4
redis.call('SADD', KEYS[9], ARGV[1])

local function one_by_one()
  local now, ready = nil, 0
  for i = 2, #ARGV, 4 do
    local id, priority, delay_ms = ARGV[i], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
    local base = (9 - priority) * PRIORITY_STEP
    if redis.call('HSET', KEYS[4], id, ARGV[i + 1]) == 0 then
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZREM', KEYS[2], id)
      redis.call('ZREM', KEYS[3], id)
    end
    if delay_ms > 0 then
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
  return ready
end

local ids, stored, seen, n_ready = {}, {}, {}, 0
for i = 2, #ARGV, 4 do
  local id = ARGV[i]
  if seen[id] then
    ids = nil
    break
  end
  seen[id] = true
  ids[#ids + 1] = id
  stored[#stored + 1] = id
  stored[#stored + 1] = ARGV[i + 1]
  if tonumber(ARGV[i + 3]) <= 0 then
    n_ready = n_ready + 1
  end
end

local ready = 0
if ids == nil then
  ready = one_by_one()
else
  if redis.call('HSET', KEYS[4], unpack(stored)) < n then
    -- Some ids were stored already: take the old copies out of every set before the new ones go in.
    redis.call('ZREM', KEYS[1], unpack(ids))
    redis.call('ZREM', KEYS[2], unpack(ids))
    redis.call('ZREM', KEYS[3], unpack(ids))
  end
  local seq = 0
  if n_ready > 0 then
    seq = redis.call('INCRBY', KEYS[7], n_ready) - n_ready
  end
  local ranks, ready_set, delayed_set, now = {}, {}, {}, nil
  for i = 2, #ARGV, 4 do
    local id, delay_ms = ARGV[i], tonumber(ARGV[i + 3])
    local base = (9 - tonumber(ARGV[i + 2])) * PRIORITY_STEP
    ranks[#ranks + 1] = id
    if delay_ms > 0 then
      -- The sequence number is drawn at promotion, so the message queues behind what is ready by then.
      now = now or now_ms()
      ranks[#ranks + 1] = int(base)
      delayed_set[#delayed_set + 1] = int(now + delay_ms)
      delayed_set[#delayed_set + 1] = id
    else
      seq = seq + 1
      local rank = int(base + seq)
      ranks[#ranks + 1] = rank
      ready_set[#ready_set + 1] = rank
      ready_set[#ready_set + 1] = id
    end
  end
  redis.call('HSET', KEYS[5], unpack(ranks))
  if #ready_set > 0 then
    redis.call('ZADD', KEYS[1], unpack(ready_set))
  end
  if #delayed_set > 0 then
    redis.call('ZADD', KEYS[3], unpack(delayed_set))
  end
  ready = n_ready
end
if ready > 0 and signal(KEYS[8], ready) then
  redis.call('PUBLISH', wake_channel(ARGV[1]), ARGV[1])
end
return n
