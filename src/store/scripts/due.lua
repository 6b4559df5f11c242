-- due.lua: expire, deliver and wake what is due in one user's tray. Atomic, so running it on
-- several nodes at once, or again, handles each notification exactly once. Expired
-- notifications go in one `deleted` change (reason "expired"); each delivered or woken one
-- arrives whole as a `notification` (an archived one whose snooze ends, as `updated`).
-- KEYS: 1 the user's base key
-- ARGV: 1 now_ms 2 log_capacity 3 epoch (fresh; kept only when the log has none yet)
-- Returns when something is due next (Unix ms), or ''.
local b, now, cap, fresh = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local expired = {}
for _, id in ipairs(redis.call('ZRANGE', key(b, 'expire'), '-inf', now, 'BYSCORE')) do
  if redis.call('HEXISTS', key(b, 'items'), id) == 1 then expired[#expired + 1] = id end
  remove(b, id)
end
if #expired > 0 then
  commit(b, 'deleted', '{"ids":' .. cjson.encode(expired) .. ',"reason":"expired"' .. counts(b) .. '}',
    now, fresh, cap)
end
for _, id in ipairs(redis.call('ZRANGE', key(b, 'wake'), '-inf', now, 'BYSCORE')) do
  redis.call('ZREM', key(b, 'wake'), id)
  redis.call('HDEL', key(b, 'snoozed'), id)
  if redis.call('HEXISTS', key(b, 'items'), id) == 1 then
    sync(b, id)
    local event = 'updated'
    if active(b, id) then event = 'notification' end
    commit(b, event, with_counts(b, whole(b, id)), now, fresh, cap)
  end
end
return next_due(b)
