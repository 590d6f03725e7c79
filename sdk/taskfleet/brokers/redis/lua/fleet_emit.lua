-- Append events to the fleet store's stream (emit_events), capped. KEYS: the stream. ARGV: the cap (entries; `~`
-- lets Redis trim whole nodes only), then the events, oldest first. One call and one reply for a whole batch (the
-- cost a worker pays per event is packing one argument), and one trim for the batch, not one per event.
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])
return #ARGV - 1
