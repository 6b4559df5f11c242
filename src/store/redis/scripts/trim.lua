-- trim.lua: the retention cleaner's cut of one user's change log: the changes committed
-- before a time are dropped, oldest first (a replay from before them gets `reset`). `seq`
-- and `epoch` stay, so positions handed out (a listing's `position`) keep their meaning.
-- KEYS: 1 the user's base key
-- ARGV: 1 the time (Unix ms)
-- Returns the number of changes dropped.
local log = key(KEYS[1], 'changes')
local before = tonumber(ARGV[1])
-- entries are `<seq>\t<event>\t<commit ms>\t<data>`, oldest first; none (`false`) when the
-- user has no log (a tray of notifications held for their `deliver_at` only)
local function old(entry)
  if not entry then return false end
  local at = tonumber(string.match(entry, '^[^\t]*\t[^\t]*\t(%d+)\t'))
  return at ~= nil and at < before
end
if not old(redis.call('LINDEX', log, 0)) then return 0 end
local dropped, chunk = 1, 16
while true do
  local entries = redis.call('LRANGE', log, dropped, dropped + chunk - 1)
  for _, entry in ipairs(entries) do
    if not old(entry) then
      redis.call('LTRIM', log, dropped, -1)
      return dropped
    end
    dropped = dropped + 1
  end
  if #entries < chunk then break end
  chunk = math.min(chunk * 2, 256)
end
redis.call('DEL', log)
return dropped
