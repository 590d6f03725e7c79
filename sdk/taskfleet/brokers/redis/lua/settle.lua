-- Settle leases of one queue. A lease counts only while the message is in-flight with the delivery count the
-- worker was given, so a worker whose lease expired (and whose message was delivered again) changes nothing.
-- Each step sends one command for all the leases it settles, so acking a batch costs little more than one.
-- KEYS: ready, inflight, msg, rank, dlv, signal
-- ARGV: mode ('ack' | 'release' | 'nack' | 'extend'), visibility_timeout_ms, then id, delivery count, ...
-- Returns the number of leases settled; for 'extend', the leases renewed: {id, delivery count, ...}.
local mode = ARGV[1]
local ids = {}
for i = 3, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
local none = 0
if mode == 'extend' then
  none = {}
end
if #ids == 0 then
  return none
end
local counts = redis.call('HMGET', KEYS[5], unpack(ids))
-- Held: still in-flight, with the delivery count this worker was given (each id once).
local candidates, count_of = {}, {}
for i, id in ipairs(ids) do
  if counts[i] == ARGV[2 * i + 2] and not count_of[id] then
    count_of[id] = tonumber(counts[i])
    candidates[#candidates + 1] = id
  end
end
if #candidates == 0 then
  return none
end
local held = {}
if (redis.REDIS_VERSION_NUM or 0) >= 0x070000 then
  -- One ZMSCORE for all (Redis >= 6.2; scripts learn the version from 7.0 on).
  local scores = redis.call('ZMSCORE', KEYS[2], unpack(candidates))
  for i, id in ipairs(candidates) do
    if scores[i] then
      held[#held + 1] = id
    end
  end
  if mode ~= 'extend' and #held > 0 then
    redis.call('ZREM', KEYS[2], unpack(held))
  end
else
  for _, id in ipairs(candidates) do
    if mode == 'extend' then
      if redis.call('ZSCORE', KEYS[2], id) then
        held[#held + 1] = id
      end
    elseif redis.call('ZREM', KEYS[2], id) == 1 then
      held[#held + 1] = id
    end
  end
end
if #held == 0 then
  return none
end
if mode == 'extend' then
  local deadline = int(now_ms() + tonumber(ARGV[2]))
  local leases = {}
  for _, id in ipairs(held) do
    leases[#leases + 1] = deadline
    leases[#leases + 1] = id
  end
  redis.call('ZADD', KEYS[2], 'XX', unpack(leases))
  local renewed = {}
  for _, id in ipairs(held) do
    renewed[#renewed + 1] = id
    renewed[#renewed + 1] = count_of[id]
  end
  return renewed
elseif mode == 'ack' then
  redis.call('HDEL', KEYS[3], unpack(held))
  redis.call('HDEL', KEYS[4], unpack(held))
  redis.call('HDEL', KEYS[5], unpack(held))
else
  -- Back to ready at the rank it was enqueued with: ahead of everything that came after it.
  local ranks = redis.call('HMGET', KEYS[4], unpack(held))
  local members, uncounted = {}, {}
  for i, id in ipairs(held) do
    members[#members + 1] = ranks[i] or int(9 * PRIORITY_STEP)
    members[#members + 1] = id
    uncounted[#uncounted + 1] = id
    uncounted[#uncounted + 1] = count_of[id] - 1
  end
  redis.call('ZADD', KEYS[1], unpack(members))
  if mode == 'release' then
    redis.call('HSET', KEYS[5], unpack(uncounted))
  end
  signal(KEYS[6], #held)
end
return #held
