-- subscribed.lua: a user's first Web Push subscription escalates the notifications made since
-- a given moment that are still active, unseen and unread (`unseen` is a subset of `unread`),
-- each due at its creation, as a publish would have escalated them had the subscription been
-- there (`escalate` leaves one already pending alone).
-- KEYS: 1 the user's base key
-- ARGV: 1 the lowest id made at that moment (ids are ULIDs: they sort by creation time)
-- Returns the earliest due time it set (Unix ms), or '' when it set none.
local b = KEYS[1]
local CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
local first
for _, id in ipairs(redis.call('ZRANGE', key(b, 'unseen'), '[' .. ARGV[1], '+', 'BYLEX')) do
  -- A ULID's first ten characters are its Unix ms in base 32.
  local ms = 0
  for i = 1, 10 do
    ms = ms * 32 + (string.find(CROCKFORD, string.sub(id, i, i), 1, true) or 1) - 1
  end
  if escalate(b, id, '1', int(ms)) and (not first or ms < first) then first = ms end
end
return first and int(first) or ''
