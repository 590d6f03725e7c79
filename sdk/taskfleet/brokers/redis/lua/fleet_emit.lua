-- Append a batch of events to the fleet store's stream (emit_events), capped in events. KEYS: the stream, its event
-- counter. ARGV: the cap (events), then per entry its event count and its events (newline-joined), oldest first.
-- One entry per batch (event_entries.pack), not one per event: the server's work per entry was most of the cost.
-- The counter holds the events in the stream; when it passes the cap by a tenth, whole entries are trimmed from the
-- head while at least the cap is left (amortised: one trim per tenth of the cap emitted, not one per batch).
local stream, counter = KEYS[1], KEYS[2]
local cap = tonumber(ARGV[1])

local function count_of(fields)
  -- fields: {'n', count, 'e', events}; an entry without 'n' holds one event
  for i = 1, #fields, 2 do
    if fields[i] == 'n' then return tonumber(fields[i + 1]) or 1 end
  end
  return 1
end

if redis.call('EXISTS', stream) == 0 then
  redis.call('DEL', counter)  -- the stream went (deleted, flushed): its count went with it
elseif redis.call('EXISTS', counter) == 0 then
  local total = 0  -- a stream with no counter (written before one was kept): count it once
  for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+')) do total = total + count_of(entry[2]) end
  redis.call('SET', counter, total)
end

local added = 0
for i = 2, #ARGV, 2 do
  redis.call('XADD', stream, '*', 'n', ARGV[i], 'e', ARGV[i + 1])
  added = added + tonumber(ARGV[i])
end
local total = redis.call('INCRBY', counter, added)

if total > cap + math.floor(cap / 10) then
  local len = redis.call('XLEN', stream)
  local dropped, from, done = 0, '-', false
  while not done do
    local page = redis.call('XRANGE', stream, from, '+', 'COUNT', 100)
    for _, entry in ipairs(page) do
      local n = count_of(entry[2])
      if total - n < cap or dropped + 1 >= len then done = true break end  -- the newest entry always stays
      total, dropped = total - n, dropped + 1
      from = '(' .. entry[1]
    end
    if #page < 100 then done = true end
  end
  if dropped > 0 then
    redis.call('XTRIM', stream, 'MAXLEN', '=', len - dropped)
    redis.call('SET', counter, total)
  end
end
return added
