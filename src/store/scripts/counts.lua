-- A tray's counts, per category too, and the change-log head they reflect.
-- KEYS: 1 items 2 unread 3 unseen 4 seq 5 epoch
-- ARGV: 1 epoch (a fresh random one, kept only when the user's log has none yet)
-- Returns {unread, unseen, epoch, seq, category1, unread1, unseen1, category2, ...}: every
-- category of the tray's notifications, uncategorised ones left out.
local epoch = redis.call('SET', KEYS[5], ARGV[1], 'NX', 'GET') or ARGV[1]
local seq = redis.call('GET', KEYS[4]) or '0'
local unread, unseen = {}, {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do unread[id] = true end
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do unseen[id] = true end
local order, by = {}, {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, n = pcall(cjson.decode, all[i + 1])
  local category = ok and type(n) == 'table' and n.category
  if type(category) == 'string' then
    local c = by[category]
    if not c then
      c = {0, 0}
      by[category] = c
      order[#order + 1] = category
    end
    if unread[all[i]] then c[1] = c[1] + 1 end
    if unseen[all[i]] then c[2] = c[2] + 1 end
  end
end
local out = {tostring(redis.call('ZCARD', KEYS[2])), tostring(redis.call('ZCARD', KEYS[3])), epoch, seq}
for _, category in ipairs(order) do
  out[#out + 1] = category
  out[#out + 1] = tostring(by[category][1])
  out[#out + 1] = tostring(by[category][2])
end
return out
