-- subscribed.lua: a connected user's first Web Push subscription takes the notifications that
-- became active from ARGV[3] on (the later of --push-after ago and the opening of the user's
-- oldest live stream; made then, or delivered or woken then: see `activate`) and are still
-- active, unseen and unread (`unseen` is a subset of `unread`):
-- each is pushed when its --push-after ends, if still so (stage `send`, the check for a live
-- stream passed), as it would have been had the subscription existed when it became active
-- (`escalate`, which leaves one already pending to itself).
-- KEYS: 1 the user's base key
-- ARGV: 1 the lowest id made at ARGV[3] (ids are ULIDs: they sort by creation time)
--       2 --push-after, ms 3 from when (Unix ms)
-- Returns the earliest due time it set (Unix ms), or '' when it set none.
local b, after = KEYS[1], tonumber(ARGV[2])
local first
local function take(id, at)
  if escalate(b, id, '1', int(at), 'send') and (not first or at < first) then first = at end
end
-- Those that became active after they were made first: that time, not their making, counts.
local activated = redis.call('ZRANGE', key(b, 'activated'), ARGV[3], '+inf', 'BYSCORE', 'WITHSCORES')
for i = 1, #activated, 2 do
  local id = activated[i]
  if redis.call('ZSCORE', key(b, 'unseen'), id) then take(id, tonumber(activated[i + 1]) + after) end
end
local CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
for _, id in ipairs(redis.call('ZRANGE', key(b, 'unseen'), '[' .. ARGV[1], '+', 'BYLEX')) do
  -- A ULID's first ten characters are its Unix ms in base 32.
  local ms = 0
  for i = 1, 10 do
    ms = ms * 32 + (string.find(CROCKFORD, string.sub(id, i, i), 1, true) or 1) - 1
  end
  take(id, ms + after)
end
return first and int(first) or ''
