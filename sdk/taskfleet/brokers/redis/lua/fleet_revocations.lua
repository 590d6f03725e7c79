-- Store revocations and/or list the live ones (the fleet store). KEYS: the revoked ZSET (task id -> expiry ms),
-- the revocations HASH (task id -> JSON). ARGV: triples of task id, expiry (Unix ms), JSON; none to only list.
-- Expired ones are deleted first, 1000 at a time (unpack's limit); both keys expire with the last revocation.
-- Returns the JSON of every live revocation when called with no ARGV, else nothing.
local now = int(now_ms())
while true do
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
  if #gone == 0 then
    break
  end
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
end
if #ARGV == 0 then
  return redis.call('HVALS', KEYS[2])
end
for i = 1, #ARGV, 3 do
  if tonumber(ARGV[i + 1]) > tonumber(now) then
    redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  end
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last == 2 then
  redis.call('PEXPIREAT', KEYS[1], last[2])
  redis.call('PEXPIREAT', KEYS[2], last[2])
end
return nil
