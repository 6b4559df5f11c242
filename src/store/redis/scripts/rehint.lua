-- rehint.lua: move a user's entry in the due index (`herald:due`, user -> Unix ms; no user
-- keys, so it runs on any slot) after due.lua ran for it. The entry was `seen` when the due
-- task picked the user; if it still is, it becomes `next` (or goes, when nothing is due);
-- if a writer lowered it meanwhile, only a lower `next` applies.
-- KEYS: 1 the due index
-- ARGV: 1 user 2 seen (Unix ms) 3 next (Unix ms, or '')
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if current and tonumber(current) == tonumber(ARGV[2]) then
  if ARGV[3] == '' then
    redis.call('ZREM', KEYS[1], ARGV[1])
  else
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  end
elseif ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[1], 'LT', ARGV[3], ARGV[1])
end
return 1
