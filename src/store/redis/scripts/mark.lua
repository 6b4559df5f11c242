-- mark.lua: apply one change to named notifications (or to all it can change) and commit:
-- read, unread, seen, deleted, archived, unarchived (one status change naming the changed
-- ids, with the counts), snooze, unsnooze (each changed notification whole: `updated`, or
-- `notification` when an unsnooze makes it active again, which escalates it to Web Push as a
-- snooze end does). Reading also sees.
-- KEYS: 1 the user's base key
-- ARGV: 1 kind 2 now_ms 3 now (RFC 3339) 4 log_capacity 5 all ('1'|'0')
--       6 deadline (Unix ms, Redis's clock) 7 epoch (fresh; kept only when the log has none)
--       8 snooze end, Unix ms ('' unless snooze) 9 snooze end, RFC 3339
--       10 Web Push sent by some node ('1'|'0') 11.. ids
-- Returns {found, the log's head after it ('<epoch>.<seq>', '' when the user has no log),
-- changed ids...}.
if late(ARGV[6]) then return redis.error_reply(LATE_REPLY) end
local b, kind, ms, now, cap, fresh = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[7]
local ids = {}
if ARGV[5] == '1' then
  if kind == 'read' then
    ids = redis.call('ZRANGE', key(b, 'unread'), 0, -1)
  elseif kind == 'seen' then
    ids = redis.call('ZRANGE', key(b, 'unseen'), 0, -1)
  elseif kind == 'unarchived' then
    ids = redis.call('HKEYS', key(b, 'archived'))
  elseif kind == 'unsnooze' then
    ids = redis.call('HKEYS', key(b, 'snoozed'))
  else
    for _, id in ipairs(redis.call('ZRANGE', key(b, 'order'), 0, -1)) do
      if active(b, id) then ids[#ids + 1] = id end
    end
  end
else
  for i = 11, #ARGV do ids[#ids + 1] = ARGV[i] end
end

local function set_if_absent(h, id)
  return redis.call('HSETNX', key(b, h), id, now)
end

local found, changed = 0, {}
for _, id in ipairs(ids) do
  if delivered(b, id) then
    found = found + 1
    local did = 0
    if kind == 'read' then
      did = set_if_absent('read_at', id)
      if did == 1 then set_if_absent('seen_at', id) end
    elseif kind == 'seen' then
      did = set_if_absent('seen_at', id)
    elseif kind == 'unread' then
      did = redis.call('HDEL', key(b, 'read_at'), id)
    elseif kind == 'archived' then
      did = set_if_absent('archived', id)
      -- Archived before its Web Push: never pushed (unarchiving does not bring it back).
      if did == 1 then drop_push(b, id) end
    elseif kind == 'unarchived' then
      did = redis.call('HDEL', key(b, 'archived'), id)
    elseif kind == 'snooze' then
      redis.call('HSET', key(b, 'snoozed'), id, ARGV[9])
      redis.call('ZADD', key(b, 'wake'), ARGV[8], id)
      -- Its end escalates afresh, `--push-after` after it is active again.
      drop_push(b, id)
      did = 1
    elseif kind == 'unsnooze' then
      did = redis.call('HDEL', key(b, 'snoozed'), id)
      if did == 1 then redis.call('ZREM', key(b, 'wake'), id) end
    elseif kind == 'deleted' then
      remove(b, id)
      did = 1
    end
    if did == 1 then
      changed[#changed + 1] = id
      if kind ~= 'deleted' then sync(b, id) end
      if kind == 'snooze' or kind == 'unsnooze' then
        local event = 'updated'
        if kind == 'unsnooze' and active(b, id) then
          event = 'notification'
          activate(b, id, ARGV[10], ms)
        end
        commit(b, event, with_counts(b, whole(b, id)), ms, fresh, cap)
      end
    end
  end
end
if #changed > 0 and kind ~= 'snooze' and kind ~= 'unsnooze' then
  local data = '{"ids":' .. cjson.encode(changed) .. counts(b) .. '}'
  commit(b, kind, data, ms, fresh, cap)
end
local epoch = redis.call('GET', key(b, 'epoch'))
local head = ''
if epoch then head = epoch .. '.' .. (redis.call('GET', key(b, 'seq')) or '0') end
local out = {tostring(found), head}
for _, id in ipairs(changed) do out[#out + 1] = id end
return out
