-- Lease up to ARGV[1] messages from several queues in one call. For each queue: promote due delayed messages, put
-- expired leases back in ready at their old rank, then pop. Queues get an equal share first, then the rest is
-- filled in order (the client rotates the order every call).
-- KEYS: per queue, 9 keys: ready, inflight, delayed, msg, rank, dlv, seq, signal, dead
-- ARGV: max_messages, visibility_timeout_ms, max_deliveries, queue names...
-- Returns {ms until the earliest delayed message is due or -1, then per message: queue index (0-based), id,
--          data, delivery count}
local K = 9
local nq = #KEYS / K
local want, vt_ms, max_dlv = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local out = {-1}
local got = 0
local next_due = nil
local exhausted = {}

local function prepare(b)
  local ready, inflight, delayed, rank, seq = KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 5], KEYS[b + 7]
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
  if #due > 0 then
    for _, id in ipairs(due) do
      local r = tonumber(redis.call('HGET', rank, id) or (9 * PRIORITY_STEP))
      local fresh = int(r - r % PRIORITY_STEP + redis.call('INCR', seq))
      redis.call('HSET', rank, id, fresh)
      redis.call('ZADD', ready, fresh, id)
    end
    redis.call('ZREM', delayed, unpack(due))
  end
  local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, 1000)
  if #expired > 0 then
    for _, id in ipairs(expired) do
      local r = redis.call('HGET', rank, id)
      if r then
        redis.call('ZADD', ready, r, id)
      end
    end
    redis.call('ZREM', inflight, unpack(expired))
  end
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if first[2] then
    local at = tonumber(first[2])
    if next_due == nil or at < next_due then
      next_due = at
    end
  end
end

local function pop(qi, n)
  local b = qi * K
  local ready, inflight, msg, rank, dlv = KEYS[b + 1], KEYS[b + 2], KEYS[b + 4], KEYS[b + 5], KEYS[b + 6]
  while n > 0 do
    local asked = n
    local popped = redis.call('ZPOPMIN', ready, asked)
    for i = 1, #popped, 2 do
      local id = popped[i]
      local data = redis.call('HGET', msg, id)
      if not data then
        redis.call('HDEL', rank, id)
        redis.call('HDEL', dlv, id)
      else
        local count = redis.call('HINCRBY', dlv, id, 1)
        if count > max_dlv then
          redis.call('HDEL', msg, id)
          redis.call('HDEL', rank, id)
          redis.call('HDEL', dlv, id)
          local reason = 'delivered ' .. (count - 1) .. ' times without an ack (its worker died each time)'
          redis.call('RPUSH', KEYS[b + 9], dead_record(ARGV[4 + qi], id, reason, data, now))
        else
          redis.call('ZADD', inflight, int(now + vt_ms), id)
          out[#out + 1] = qi
          out[#out + 1] = id
          out[#out + 1] = data
          out[#out + 1] = count
          got = got + 1
          n = n - 1
        end
      end
    end
    if #popped < 2 * asked then
      -- ready is empty: drop stale wake-up tokens so idle consumers block instead of spinning.
      exhausted[qi] = true
      redis.call('DEL', KEYS[b + 8])
      return
    end
  end
end

for qi = 0, nq - 1 do
  prepare(qi * K)
end
local share = math.ceil(want / nq)
for qi = 0, nq - 1 do
  if got >= want then break end
  pop(qi, math.min(share, want - got))
end
for qi = 0, nq - 1 do
  if got >= want then break end
  if not exhausted[qi] then
    pop(qi, want - got)
  end
end
if next_due ~= nil then
  out[1] = math.max(0, next_due - now)
end
return out
