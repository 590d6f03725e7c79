-- Append events to the fleet store's stream (emit_events), capped. KEYS: the stream. ARGV: the cap (entries; `~`
-- lets Redis trim whole nodes only), then the events, oldest first. One call and one reply for a whole batch: the
-- cost a worker pays per event is packing one argument.
local cap = ARGV[1]
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', cap, '*', 'e', ARGV[i])
end
return #ARGV - 1
