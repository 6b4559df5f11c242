-- list.lua: one page of a tray, newest first, and the change-log head it reflects.
-- KEYS: 1 the user's base key
-- ARGV: 1 before ('' for the newest) 2 limit 3 archived ('exclude'|'only'|'include')
--       4 snoozed ('1': only snoozed ones; '0': none) 5 unread ('1'|'0') 6 unseen ('1'|'0')
--       7 epoch (fresh; kept only when the log has none yet) 8.. categories (none: all)
-- Returns {unread_count, unseen_count, more (0|1), epoch, seq, json1, json2, ...}.
local b, limit = KEYS[1], tonumber(ARGV[2])
local archived, snoozed, unread, unseen = ARGV[3], ARGV[4] == '1', ARGV[5] == '1', ARGV[6] == '1'
local categories = nil
if #ARGV > 7 then
  categories = {}
  for i = 8, #ARGV do categories[ARGV[i]] = true end
end
-- The active unread (unseen) set is exactly the page's set when only active ones list.
local set = key(b, 'order')
if archived == 'exclude' and not snoozed then
  if unseen then set = key(b, 'unseen') elseif unread then set = key(b, 'unread') end
end

local function admits(id)
  if held(b, id) then return false end
  local is_archived = redis.call('HEXISTS', key(b, 'archived'), id) == 1
  if archived == 'exclude' and is_archived then return false end
  if archived == 'only' and not is_archived then return false end
  if (redis.call('HEXISTS', key(b, 'snoozed'), id) == 1) ~= snoozed then return false end
  if unread and redis.call('HEXISTS', key(b, 'read_at'), id) == 1 then return false end
  if unseen and redis.call('HEXISTS', key(b, 'seen_at'), id) == 1 then return false end
  if categories and not categories[redis.call('HGET', key(b, 'cat'), id) or ''] then return false end
  return true
end

local page = {}
local max = '+'
if ARGV[1] ~= '' then max = '(' .. ARGV[1] end
while #page <= limit do
  local ids = redis.call('ZRANGE', set, max, '-', 'BYLEX', 'REV', 'LIMIT', 0, 200)
  for _, id in ipairs(ids) do
    if admits(id) then
      page[#page + 1] = id
      if #page > limit then break end
    end
  end
  if #ids < 200 then break end
  max = '(' .. ids[#ids]
end
local more = 0
if #page > limit then more = 1 end
local epoch = redis.call('SET', key(b, 'epoch'), ARGV[7], 'NX', 'GET') or ARGV[7]
local seq = redis.call('GET', key(b, 'seq')) or '0'
local out = {tostring(redis.call('ZCARD', key(b, 'unread'))),
  tostring(redis.call('ZCARD', key(b, 'unseen'))), tostring(more), epoch, seq}
for i = 1, math.min(#page, limit) do out[#out + 1] = whole(b, page[i]) end
return out
