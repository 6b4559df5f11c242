-- subscribed.lua: a connected user's first Web Push subscription takes the notifications made
-- within --push-after before it that are still active, unseen and unread (`unseen` is a
-- subset of `unread`): each is pushed when its --push-after ends, if still so (stage `send`,
-- the check for a live stream passed), as it would have been had the subscription existed
-- when it was published (`escalate`, which leaves one already pending to itself).
-- KEYS: 1 the user's base key
-- ARGV: 1 the lowest id made --push-after ago (ids are ULIDs: they sort by creation time)
--       2 --push-after, ms
-- Returns the earliest due time it set (Unix ms), or '' when it set none.
local b, after = KEYS[1], tonumber(ARGV[2])
local CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
local first
for _, id in ipairs(redis.call('ZRANGE', key(b, 'unseen'), '[' .. ARGV[1], '+', 'BYLEX')) do
  -- A ULID's first ten characters are its Unix ms in base 32.
  local ms = 0
  for i = 1, 10 do
    ms = ms * 32 + (string.find(CROCKFORD, string.sub(id, i, i), 1, true) or 1) - 1
  end
  local at = ms + after
  if escalate(b, id, '1', int(at), 'send') and (not first or at < first) then first = at end
end
return first and int(first) or ''
