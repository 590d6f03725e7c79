-- A reply to an inbox (the fleet store). KEYS: the inbox's list, its "open" key. ARGV: the reply, the list's TTL
-- in ms. Dropped when the inbox is closed or gone (no open key), so a late reply never outlives its inbox.
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
