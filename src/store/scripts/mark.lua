-- Mark notifications read, unread, seen or deleted and commit one change for those whose
-- state changed. Reading also sees. KEYS: 1 items 2 order 3 unread 4 read_at 5 seq 6 log
-- 7 epoch 8 unseen 9 seen_at
-- ARGV: 1 kind ('read'|'unread'|'seen'|'deleted') 2 now_ms 3 now (RFC 3339) 4 log_capacity
--       5 channel
--       6 all ('1'|'0') 7 deadline (Unix ms, Redis's clock: past it, refuse)
--       8 epoch (a fresh random one, used only when the log has none yet) 9.. ids
-- The channel message is c<TAB>epoch<TAB>seq<TAB>kind<TAB>now_ms<TAB>data.
-- Returns {found, changed ids...}.
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[7]) then
  return redis.error_reply('LATE tray write arrived after its deadline')
end
local kind = ARGV[1]
local ids
if ARGV[6] == '1' then
  if kind == 'read' then
    ids = redis.call('ZRANGE', KEYS[3], 0, -1)
  elseif kind == 'seen' then
    ids = redis.call('ZRANGE', KEYS[8], 0, -1)
  else
    ids = redis.call('ZRANGE', KEYS[2], 0, -1)
  end
else
  ids = {}
  for i = 9, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local found = 0
local changed = {}
for _, id in ipairs(ids) do
  if redis.call('HEXISTS', KEYS[1], id) == 1 then
    found = found + 1
    local did = 0
    if kind == 'read' then
      did = redis.call('ZREM', KEYS[3], id)
      if did == 1 then
        redis.call('HSET', KEYS[4], id, ARGV[3])
        if redis.call('ZREM', KEYS[8], id) == 1 then redis.call('HSET', KEYS[9], id, ARGV[3]) end
      end
    elseif kind == 'seen' then
      did = redis.call('ZREM', KEYS[8], id)
      if did == 1 then redis.call('HSET', KEYS[9], id, ARGV[3]) end
    elseif kind == 'unread' then
      did = redis.call('ZADD', KEYS[3], 0, id)
      if did == 1 then redis.call('HDEL', KEYS[4], id) end
    else
      redis.call('HDEL', KEYS[1], id)
      redis.call('ZREM', KEYS[2], id)
      redis.call('ZREM', KEYS[3], id)
      redis.call('HDEL', KEYS[4], id)
      redis.call('ZREM', KEYS[8], id)
      redis.call('HDEL', KEYS[9], id)
      did = 1
    end
    if did == 1 then changed[#changed + 1] = id end
  end
end
if #changed > 0 then
  local data = '{"ids":' .. cjson.encode(changed) .. ',"unread_count":' .. redis.call('ZCARD', KEYS[3])
    .. ',"unseen_count":' .. redis.call('ZCARD', KEYS[8]) .. '}'
  local epoch = redis.call('SET', KEYS[7], ARGV[8], 'NX', 'GET') or ARGV[8]
  local seq = redis.call('INCR', KEYS[5])
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[4], seq .. '-1', 'k', kind, 'd', data, 't', ARGV[2])
  redis.call('SPUBLISH', ARGV[5], 'c\t' .. epoch .. '\t' .. seq .. '\t' .. kind .. '\t' .. ARGV[2] .. '\t' .. data)
end
local out = {tostring(found)}
for _, id in ipairs(changed) do out[#out + 1] = id end
return out
