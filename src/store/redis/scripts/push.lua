-- push.lua: what the sender of a leased Web Push escalation does with it, only while it holds
-- the lease (`pushlease` names the token due.lua leased it under; a snooze or an archive
-- drops it with the escalation, and an escalation begun afresh is leased under another).
-- KEYS: 1 the user's base key
-- ARGV: 1 'later' (due again at ARGV[4] as stage ARGV[5], released from the lease; a stage
--       '<stage>@<ms>' keeps when it first came due, as a stopping node hands a push back),
--       'extend' (leased until ARGV[4], only ever later), 'done' (dropped), 'sent' (the
--       subscription whose fingerprint is ARGV[5] took the push) or 'pushed' (which did)
--       2 the notification id 3 the lease token 4 Unix ms 5 stage ('check' or 'send'), or a
--       subscription's fingerprint
-- Returns -1 when the lease is not held; else, for 'later', 1 when the due time moved
-- (0 when not), for 'pushed' the fingerprints, space-separated ('' when none), 1 for the
-- others.
local b, op, id, lease = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', key(b, 'pushlease'), id) ~= lease
  or not redis.call('ZSCORE', key(b, 'pushdue'), id) then
  return -1
end
if op == 'later' then
  redis.call('HDEL', key(b, 'pushlease'), id)
  redis.call('HSET', key(b, 'pushstage'), id, ARGV[5])
  return redis.call('ZADD', key(b, 'pushdue'), 'XX', 'CH', ARGV[4], id)
elseif op == 'extend' then
  redis.call('ZADD', key(b, 'pushdue'), 'XX', 'GT', ARGV[4], id)
elseif op == 'sent' then
  local sent = redis.call('HGET', key(b, 'pushsent'), id)
  redis.call('HSET', key(b, 'pushsent'), id, sent and (sent .. ' ' .. ARGV[5]) or ARGV[5])
elseif op == 'pushed' then
  return redis.call('HGET', key(b, 'pushsent'), id) or ''
else
  drop_push(b, id)
end
return 1
