-- get.lua: one delivered notification, whole ('' when there is none).
-- KEYS: 1 the user's base key
-- ARGV: 1 id
if not delivered(KEYS[1], ARGV[1]) then return '' end
return whole(KEYS[1], ARGV[1])
