-- counts.lua: a tray's counts, per category too, and the change-log head they reflect.
-- KEYS: 1 the user's base key
-- ARGV: 1 epoch (fresh; kept only when the log has none yet)
-- Returns {unread, unseen, epoch, seq, category1, unread1, unseen1, category2, ...}: every
-- category with an active notification (its counts may be 0), in first-seen order.
local b = KEYS[1]
local epoch = redis.call('SET', key(b, 'epoch'), ARGV[1], 'NX', 'GET') or ARGV[1]
local seq = redis.call('GET', key(b, 'seq')) or '0'
local order, by = {}, {}
local all = redis.call('HGETALL', key(b, 'cat'))
for i = 1, #all, 2 do
  local id, category = all[i], all[i + 1]
  if active(b, id) then
    local c = by[category]
    if not c then
      c = {0, 0}
      by[category] = c
      order[#order + 1] = category
    end
    if redis.call('ZSCORE', key(b, 'unread'), id) then c[1] = c[1] + 1 end
    if redis.call('ZSCORE', key(b, 'unseen'), id) then c[2] = c[2] + 1 end
  end
end
local out = {tostring(redis.call('ZCARD', key(b, 'unread'))),
  tostring(redis.call('ZCARD', key(b, 'unseen'))), epoch, seq}
for _, category in ipairs(order) do
  out[#out + 1] = category
  out[#out + 1] = tostring(by[category][1])
  out[#out + 1] = tostring(by[category][2])
end
return out
