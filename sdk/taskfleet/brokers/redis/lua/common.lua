-- Helpers shared by the Taskfleet Redis scripts. _scripts.py prepends this file to each script when loading it, so
-- every script is still one self-contained EVALSHA.
--
-- Keys of a queue Q (the {Q} hash tag keeps them in one cluster slot; named by QueueKeys in _keys.py):
--   tf:{Q}:ready (ZSET id -> rank), tf:{Q}:inflight (ZSET id -> lease deadline ms),
--   tf:{Q}:delayed (ZSET id -> due time ms), tf:{Q}:msg (HASH id -> bytes), tf:{Q}:rank (HASH id -> rank),
--   tf:{Q}:dlv (HASH id -> delivery count), tf:{Q}:seq (counter), tf:{Q}:signal (LIST of wake-up tokens),
--   tf:{Q}:dead (LIST of JSON dead-letter records).
-- Channel of a queue Q: tf:{Q}:wake (pub/sub; the enqueue that finds Q's wake-up list empty publishes Q on it).
-- rank = (9 - priority) * 2^40 + seq: ZPOPMIN serves the highest priority first, FIFO within a priority.

local PRIORITY_STEP = 1099511627776 -- 2^40
local SIGNAL_KEEP = 100             -- wake-up tokens kept per queue (enough to wake every idle consumer)

-- The pub/sub channel the enqueue of a message into an empty queue publishes on (QueueKeys.wake_channel in _keys.py).
local function wake_channel(queue)
  return 'tf:{' .. queue .. '}:wake'
end

-- Milliseconds by the server's clock, so client clock skew never moves a lease or a due time.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integer text for scores: Lua would print large numbers as 1.7e+12.
local function int(x)
  return string.format('%d', x)
end

-- Push up to SIGNAL_KEEP wake-up tokens (one per message made ready): each wakes one blocked consumer. Returns true
-- when the list was empty before (RPUSH's reply, so it costs nothing): no message was made ready since a fetch last
-- found the queue's ready set empty (which deletes the list), i.e. the queue just went from empty to non-empty.
local function signal(key, n)
  local tokens = {}
  for i = 1, math.min(n, SIGNAL_KEEP) do
    tokens[i] = '1'
  end
  local len = redis.call('RPUSH', key, unpack(tokens))
  if len > SIGNAL_KEEP then
    redis.call('LTRIM', key, -SIGNAL_KEEP, -1)
  end
  return len == #tokens
end

local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'

local function base64(s)
  -- Two output characters per 12-bit value, from a table built per call (dead-lettering is rare); locals and
  -- no string concatenation in the loop keep a 1 MB message to a few tens of milliseconds of server time.
  local byte, floor = string.byte, math.floor
  local sextets, pairs12 = {}, {}
  for v = 0, 63 do
    sextets[v] = B64:sub(v + 1, v + 1)
  end
  for v = 0, 4095 do
    pairs12[v] = sextets[floor(v / 64)] .. sextets[v % 64]
  end
  local out, k, n = {}, 0, #s
  local full = n - n % 3
  for i = 1, full, 3 do
    local a, b, c = byte(s, i, i + 2)
    local hi = a * 16 + floor(b / 16)
    out[k + 1] = pairs12[hi]
    out[k + 2] = pairs12[(b % 16) * 256 + c]
    k = k + 2
  end
  if n - full == 1 then
    local a = byte(s, n)
    out[k + 1] = pairs12[a * 16] .. '=='
  elseif n - full == 2 then
    local a, b = byte(s, n - 1, n)
    out[k + 1] = pairs12[a * 16 + floor(b / 16)] .. sextets[(b % 16) * 4] .. '='
  end
  return table.concat(out)
end

-- The JSON record of a dead letter (data base64-encoded, dead_at in Unix seconds).
local function dead_json(queue, id, reason, at_ms, data_b64)
  return cjson.encode({id = id, queue = queue, reason = reason, dead_at = at_ms / 1000, data_b64 = data_b64})
end

local function dead_record(queue, id, reason, data, at_ms)
  return dead_json(queue, id, reason, at_ms, base64(data))
end
