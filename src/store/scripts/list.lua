-- One page of a tray, newest first, and the change-log head it reflects.
-- KEYS: 1 items 2 order 3 unread 4 read_at 5 seq 6 epoch 7 unseen 8 seen_at
-- ARGV: 1 before ('' for the newest) 2 limit 3 filter ('all'|'unread'|'unseen')
--       4 epoch (a fresh random one, kept only when the user's log has none yet)
-- Returns {unread_count, unseen_count, more (0|1), epoch, seq,
--          json1, read_at1, seen_at1, json2, ...}; '' for no read_at or seen_at.
local set = KEYS[2]
if ARGV[3] == 'unread' then set = KEYS[3] elseif ARGV[3] == 'unseen' then set = KEYS[7] end
local max = '+'
if ARGV[1] ~= '' then max = '(' .. ARGV[1] end
local limit = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', set, max, '-', 'BYLEX', 'REV', 'LIMIT', 0, limit + 1)
local more = 0
if #ids > limit then more = 1 end
local epoch = redis.call('SET', KEYS[6], ARGV[4], 'NX', 'GET') or ARGV[4]
local seq = redis.call('GET', KEYS[5]) or '0'
local out = {tostring(redis.call('ZCARD', KEYS[3])), tostring(redis.call('ZCARD', KEYS[7])),
  tostring(more), epoch, seq}
for i = 1, math.min(#ids, limit) do
  out[#out + 1] = redis.call('HGET', KEYS[1], ids[i]) or ''
  out[#out + 1] = redis.call('HGET', KEYS[4], ids[i]) or ''
  out[#out + 1] = redis.call('HGET', KEYS[8], ids[i]) or ''
end
return out
