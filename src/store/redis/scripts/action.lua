-- action.lua: the actions a user takes on a notification. ARGV[1] is the operation:
--   claim <id> <ttl ms>: hold the sending of an action of `id` to the upstream for at most
--     ttl ms (Redis's clock), so that racing requests on any node send it once, and a
--     collapse passes the notification by meanwhile (`supersede`); 1 when held, 0 while
--     another holds it
--   release <id>: let go of the claim; returns 0
--   take <id> <the action's JSON> <now (RFC 3339)> <now_ms> <log_capacity> <deadline (Unix
--     ms, Redis's clock)> <epoch (fresh; kept only when the log has none yet)>: record the
--     action, once; mark the notification read (and seen) and commit it whole as `updated`.
--     Returns {'missing'}, {'conflict'} or {'taken', the notification JSON, the position of
--     its `updated` change ('<epoch>.<seq>')}.
-- KEYS: 1 the user's base key (then, on a cluster, the tray's keys, declared)
local b, op, id = KEYS[1], ARGV[1], ARGV[2]
if op == 'claim' then
  if acting(b, id) then return 0 end
  redis.call('HSET', key(b, 'acting'), id, int(redis_ms() + tonumber(ARGV[3])))
  return 1
elseif op == 'release' then
  redis.call('HDEL', key(b, 'acting'), id)
  return 0
end
if late(ARGV[7]) then return redis.error_reply(LATE_REPLY) end
if not delivered(b, id) then return {'missing'} end
if redis.call('HSETNX', key(b, 'action'), id, ARGV[3]) == 0 then return {'conflict'} end
redis.call('HSETNX', key(b, 'read_at'), id, ARGV[4])
redis.call('HSETNX', key(b, 'seen_at'), id, ARGV[4])
sync(b, id)
local json = whole(b, id)
local epoch, seq = commit(b, 'updated', with_counts(b, json), ARGV[5], ARGV[8], ARGV[6])
return {'taken', json, epoch .. '.' .. seq}
