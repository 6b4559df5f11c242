-- Store one notification for each of a batch of users and commit each user's `notification`
-- change. One Redis server: any users. Redis Cluster: the caller sends users of one slot only
-- (each user's keys share the user's hash tag), so a call touches one slot. Each change is
-- logged and announced with SPUBLISH in this same script, so a user's announcements leave
-- Redis in seq order.
-- KEYS: per user, ARGV[6] keys: 1 items 2 order 3 unread 4 read_at 5 seq 6 log 7 epoch
--       8 unseen 9 seen_at 10 prefs [11 idempotency key]
-- ARGV: 1 deadline (Unix ms, Redis's clock): past it the caller has answered 503, so refuse
--       2 max_per_user 3 log_capacity 4 now_ms 5 idempotency_ttl_ms 6 keys per user
--       7 tail: the notification JSON after its "user" member, shared by the batch
--       8 category a user may have muted ('' when none, or the notification is critical)
--       then per user 4: id, the user as a JSON string, channel, epoch (a fresh random one
--       from the caller, used only when the user's log has none yet)
-- A user's notification JSON is '{"id":"' .. id .. '","user":' .. user .. tail, byte for byte
-- what Herald's `model::Template::json` writes (ids are ULIDs: nothing to escape).
-- The change's data is the notification JSON with the tray's "unread_count" and
-- "unseen_count" added at its end. The channel message is
-- c<TAB>epoch<TAB>seq<TAB>kind<TAB>now_ms<TAB>data.
-- Returns {failure, outcome per user handled}: an outcome is 1 (stored), 0 (the user muted
-- the category: nothing stored) or the id an idempotency key stored before (nothing new
-- stored). `failure` is '' when every user was
-- handled; otherwise the error of the user after the last outcome, whose writes failed, and
-- the users after it were not attempted.
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[1]) then
  return redis.error_reply('LATE tray write arrived after its deadline')
end
local max, cap, ms, ttl = tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local per, tail, category = tonumber(ARGV[6]), ARGV[7], ARGV[8]

local function store(k, a)
  local id = ARGV[a + 1]
  if per == 11 then
    local previous = redis.call('GET', KEYS[k + 11])
    if previous then
      return previous
    end
  end
  if category ~= '' and redis.call('HGET', KEYS[k + 10], category) == '1' then
    return 0
  end
  local json = '{"id":"' .. id .. '","user":' .. ARGV[a + 2] .. tail
  redis.call('HSET', KEYS[k + 1], id, json)
  redis.call('ZADD', KEYS[k + 2], '0', id)
  redis.call('ZADD', KEYS[k + 3], '0', id)
  redis.call('ZADD', KEYS[k + 8], '0', id)
  local over = redis.call('ZCARD', KEYS[k + 2]) - max
  if over > 0 then
    local oldest = redis.call('ZPOPMIN', KEYS[k + 2], over)
    for i = 1, #oldest, 2 do
      redis.call('HDEL', KEYS[k + 1], oldest[i])
      redis.call('ZREM', KEYS[k + 3], oldest[i])
      redis.call('HDEL', KEYS[k + 4], oldest[i])
      redis.call('ZREM', KEYS[k + 8], oldest[i])
      redis.call('HDEL', KEYS[k + 9], oldest[i])
    end
  end
  local epoch = redis.call('SET', KEYS[k + 7], ARGV[a + 4], 'NX', 'GET') or ARGV[a + 4]
  local seq = tostring(redis.call('INCR', KEYS[k + 5]))
  local data = string.sub(json, 1, -2) .. ',"unread_count":' .. redis.call('ZCARD', KEYS[k + 3])
    .. ',"unseen_count":' .. redis.call('ZCARD', KEYS[k + 8]) .. '}'
  redis.call('XADD', KEYS[k + 6], 'MAXLEN', '~', cap, seq .. '-1', 'k', 'notification', 'd', data, 't', ms)
  redis.call('SPUBLISH', ARGV[a + 3], 'c\t' .. epoch .. '\t' .. seq .. '\tnotification\t' .. ms .. '\t' .. data)
  -- Last, so a user whose writes failed can be sent again under the same key.
  if per == 11 then
    redis.call('SET', KEYS[k + 11], id, 'PX', ttl)
  end
  return 1
end

local out = {''}
for u = 0, #KEYS / per - 1 do
  local ok, outcome = pcall(store, u * per, 8 + u * 4)
  if not ok then
    out[1] = type(outcome) == 'table' and (outcome.err or 'ERR') or tostring(outcome)
    break
  end
  out[#out + 1] = outcome
end
return out
