-- Lease up to ARGV[1] messages from several queues in one call. For each queue: promote due delayed messages, put
-- expired leases back in ready at their old rank, then pop. Queues get an equal share first, then the rest is
-- filled in order (the client rotates the order every call). Each step sends one command for all the messages it
-- moves, so the cost of a call grows little with the number of messages.
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

-- Promote the due delayed messages of one queue (up to 1000 per call), in due order, behind what is ready now.
local function promote(ready, delayed, rank, seq)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
  if #due == 0 then
    return
  end
  local ranks = redis.call('HMGET', rank, unpack(due))
  local last = redis.call('INCRBY', seq, #due)
  local fresh, members = {}, {}
  for i, id in ipairs(due) do
    local r = tonumber(ranks[i] or (9 * PRIORITY_STEP))
    local value = int(r - r % PRIORITY_STEP + last - #due + i)
    fresh[#fresh + 1] = id
    fresh[#fresh + 1] = value
    members[#members + 1] = value
    members[#members + 1] = id
  end
  redis.call('HSET', rank, unpack(fresh))
  redis.call('ZADD', ready, unpack(members))
  redis.call('ZREM', delayed, unpack(due))
end

local function prepare(b)
  local ready, inflight, delayed, rank, seq = KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 5], KEYS[b + 7]
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if first[2] and tonumber(first[2]) <= now then
    promote(ready, delayed, rank, seq)
    first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  end
  if first[2] then
    local at = tonumber(first[2])
    if next_due == nil or at < next_due then
      next_due = at
    end
  end
  local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, 1000)
  if #expired > 0 then
    local ranks = redis.call('HMGET', rank, unpack(expired))
    local members = {}
    for i, id in ipairs(expired) do
      if ranks[i] then
        members[#members + 1] = ranks[i]
        members[#members + 1] = id
      end
    end
    if #members > 0 then
      redis.call('ZADD', ready, unpack(members))
    end
    redis.call('ZREM', inflight, unpack(expired))
  end
end

local function pop(qi, n)
  local b = qi * K
  local ready, inflight, msg, rank, dlv = KEYS[b + 1], KEYS[b + 2], KEYS[b + 4], KEYS[b + 5], KEYS[b + 6]
  local deadline = int(now + vt_ms)
  while n > 0 do
    local asked = n
    local popped = redis.call('ZPOPMIN', ready, asked)
    if #popped > 0 then
      local ids = {}
      for i = 1, #popped, 2 do
        ids[#ids + 1] = popped[i]
      end
      local datas = redis.call('HMGET', msg, unpack(ids))
      local counts = redis.call('HMGET', dlv, unpack(ids))
      local leased, leases, gone = {}, {}, {}
      for i, id in ipairs(ids) do
        local data = datas[i]
        if not data then
          gone[#gone + 1] = id
        else
          local count = tonumber(counts[i] or 0) + 1
          if count > max_dlv then
            gone[#gone + 1] = id
            redis.call('HDEL', msg, id)
            local reason = 'delivered ' .. (count - 1) .. ' times without an ack (its worker died each time)'
            redis.call('RPUSH', KEYS[b + 9], dead_record(ARGV[4 + qi], id, reason, data, now))
          else
            leased[#leased + 1] = id
            leased[#leased + 1] = count
            leases[#leases + 1] = deadline
            leases[#leases + 1] = id
            out[#out + 1] = qi
            out[#out + 1] = id
            out[#out + 1] = data
            out[#out + 1] = count
            got = got + 1
            n = n - 1
          end
        end
      end
      if #gone > 0 then
        redis.call('HDEL', rank, unpack(gone))
        redis.call('HDEL', dlv, unpack(gone))
      end
      if #leased > 0 then
        redis.call('HSET', dlv, unpack(leased))
        redis.call('ZADD', inflight, unpack(leases))
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
