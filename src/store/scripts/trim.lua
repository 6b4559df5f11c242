-- trim.lua: the retention cleaner's cut of one user's change log. The changes committed
-- before a time are dropped, oldest first (a replay from before them gets `reset`); a user
-- left with no notification and no change keeps no log at all: `seq` and `epoch` go too, so
-- the next change starts a new epoch and any position handed out before resets.
-- KEYS: 1 the user's base key
-- ARGV: 1 the time (Unix ms)
-- Returns the number of changes dropped.
local b = KEYS[1]
local log = key(b, 'changes')
local before = tonumber(ARGV[1])
local dropped = 0
local done = false
while not done do
  -- entries are `<seq>\t<event>\t<commit ms>\t<data>`, oldest first
  local entries = redis.call('LRANGE', log, dropped, dropped + 99)
  done = #entries < 100
  for _, entry in ipairs(entries) do
    local at = tonumber(string.match(entry, '^[^\t]*\t[^\t]*\t(%d+)\t'))
    if not at or at >= before then
      done = true
      break
    end
    dropped = dropped + 1
  end
end
if dropped > 0 then
  redis.call('LTRIM', log, dropped, -1)
end
if redis.call('EXISTS', log) == 0 and redis.call('EXISTS', key(b, 'order')) == 0 then
  redis.call('DEL', key(b, 'seq'), key(b, 'epoch'))
end
return dropped
