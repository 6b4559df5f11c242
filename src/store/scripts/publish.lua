-- Store one notification for one user and commit its `notification` change.
-- All keys share the user's hash tag (one slot). The change is logged and announced with
-- SPUBLISH in this same script, so announcements leave Redis in seq order.
-- KEYS: 1 items 2 order 3 unread 4 read_at 5 seq 6 log 7 epoch [8 idempotency key]
-- ARGV: 1 id 2 json 3 max_per_user 4 log_capacity 5 now_ms 6 idempotency_ttl_ms 7 channel
--       8 deadline (Unix ms, Redis's clock): past it the caller has answered 503, so refuse
--       9 epoch (a fresh random one from the caller, used only when the log has none yet)
-- The channel message is c<TAB>epoch<TAB>seq<TAB>kind<TAB>now_ms<TAB>data.
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[8]) then
  return redis.error_reply('LATE tray write arrived after its deadline')
end
if KEYS[8] then
  local previous = redis.call('GET', KEYS[8])
  if previous then
    return {'0', previous}
  end
  redis.call('SET', KEYS[8], ARGV[1], 'PX', ARGV[6])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #oldest, 2 do
    redis.call('HDEL', KEYS[1], oldest[i])
    redis.call('ZREM', KEYS[3], oldest[i])
    redis.call('HDEL', KEYS[4], oldest[i])
  end
end
local epoch = redis.call('SET', KEYS[7], ARGV[9], 'NX', 'GET') or ARGV[9]
local seq = redis.call('INCR', KEYS[5])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[4], seq .. '-1', 'k', 'notification', 'd', ARGV[2], 't', ARGV[5])
redis.call('SPUBLISH', ARGV[7], 'c\t' .. epoch .. '\t' .. seq .. '\tnotification\t' .. ARGV[5] .. '\t' .. ARGV[2])
return {'1', ARGV[1]}
