-- action.lua: record the action a user took on a notification, once; mark it read (and
-- seen) and commit it whole as `updated`.
-- KEYS: 1 the user's base key
-- ARGV: 1 id 2 the action's JSON 3 now (RFC 3339) 4 now_ms 5 log_capacity 6 deadline
--       (Unix ms, Redis's clock) 7 epoch (fresh; kept only when the log has none yet)
-- Returns {'missing'}, {'conflict'} or {'taken', the notification JSON}.
if late(ARGV[6]) then return redis.error_reply(LATE_REPLY) end
local b, id = KEYS[1], ARGV[1]
if not delivered(b, id) then return {'missing'} end
if redis.call('HSETNX', key(b, 'action'), id, ARGV[2]) == 0 then return {'conflict'} end
redis.call('HSETNX', key(b, 'read_at'), id, ARGV[3])
redis.call('HSETNX', key(b, 'seen_at'), id, ARGV[3])
sync(b, id)
local json = whole(b, id)
commit(b, 'updated', with_counts(b, json), ARGV[4], ARGV[7], ARGV[5])
return {'taken', json}
