-- due.lua: expire, deliver and wake what is due in one user's tray. Atomic, so running it on
-- several nodes at once, or again, handles each notification exactly once. Expired
-- notifications go in one `deleted` change (reason "expired"; one never delivered, its
-- delivery and expiry both past, goes unannounced); each delivered or woken one
-- arrives whole as a `notification` (an archived one whose snooze ends, as `updated`). One
-- delivered with a collapse key collapses then, as a publish would (no `deleted` change).
-- Then the Web Push escalations that are due: one no longer active, unread and unseen is
-- cancelled. The others: a node that sends Web Push leases each (due again at now + lease,
-- in case it dies before it is done; `pushlease` names the lease's token, see push.lua) and
-- returns it. A node with Web Push off leaves them to a node that sends it: all of them while
-- another node does, and those due within the hand-over time while none does (one may be
-- starting, or restarting); older ones are cancelled. Such a node counts escalations as due
-- no earlier than the hold time from now, so that it does not come back to them every tick;
-- the nodes that send Web Push take them then.
-- KEYS: 1 the user's base key
-- ARGV: 1 now_ms 2 log_capacity 3 epoch (fresh; kept only when the log has none yet)
--       4 Web Push: '1' this node sends it, 'w' only another node does, '0' no node does
--       5 lease (ms) 6 hand-over time (ms) 7 hold time (ms) 8 the lease's token
--       9 deadline (Unix ms, Redis's clock)
-- Returns {next due (Unix ms, or ''), cancelled escalations, unread_count,
--          then per escalation: stage ('check' or 'send'), when it first came due in that
--          stage (Unix ms), the notification JSON}.
-- Past its deadline it runs nothing (LATE): a primary that hung while the call waited, and
-- whose replica took over meanwhile, must not commit (and announce) changes the new primary
-- never sees; the next tick sends it again.
if late(ARGV[9]) then return redis.error_reply(LATE_REPLY) end
local b, now, cap, fresh, push = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local expired = {}
for _, id in ipairs(redis.call('ZRANGE', key(b, 'expire'), '-inf', now, 'BYSCORE')) do
  -- one never delivered (its delivery and expiry both passed) goes unannounced
  if delivered(b, id) then expired[#expired + 1] = id end
  remove(b, id)
end
if #expired > 0 then
  commit(b, 'deleted', '{"ids":' .. cjson.encode(expired) .. ',"reason":"expired"' .. counts(b) .. '}',
    now, fresh, cap)
end

for _, id in ipairs(redis.call('ZRANGE', key(b, 'wake'), '-inf', now, 'BYSCORE')) do
  local delivering = held(b, id)
  redis.call('ZREM', key(b, 'wake'), id)
  redis.call('HDEL', key(b, 'snoozed'), id)
  if redis.call('HEXISTS', key(b, 'items'), id) == 1 then
    -- Delivered now, it collapses as a publish at this moment would.
    local ck = delivering and collapse_key(b, id)
    if ck then
      local count, replaces = supersede(b, ck)
      if replaces then redis.call('HSET', key(b, 'meta'), id, count .. '\t' .. replaces) end
      name_collapse(b, ck, id)
    end
    sync(b, id)
    local event = 'updated'
    if active(b, id) then
      event = 'notification'
      activate(b, id, push, now)
    end
    commit(b, event, with_counts(b, whole(b, id)), now, fresh, cap)
  end
end
local out = {'', 0, redis.call('ZCARD', key(b, 'unread'))}
local escalations = redis.call('ZRANGE', key(b, 'pushdue'), '-inf', now, 'BYSCORE', 'WITHSCORES')
for i = 1, #escalations, 2 do
  local id, at = escalations[i], escalations[i + 1]
  local wanted = redis.call('ZSCORE', key(b, 'unread'), id) and redis.call('ZSCORE', key(b, 'unseen'), id)
  if wanted and push == '1' then
    -- The stage keeps when it first came due, '<stage>@<ms>', so that a node that takes it
    -- again after a lease ran out (its sender died) counts from then, not from the lapsed
    -- lease: --push-after for a check (from the notification's activation), the TTL for a
    -- push (from its first try).
    local stage = redis.call('HGET', key(b, 'pushstage'), id) or 'send'
    local named, since = string.match(stage, '^(%a+)@(%d+)$')
    if named then
      stage = named
    else
      since = at
      redis.call('HSET', key(b, 'pushstage'), id, stage .. '@' .. at)
    end
    redis.call('ZADD', key(b, 'pushdue'), tonumber(now) + tonumber(ARGV[5]), id)
    redis.call('HSET', key(b, 'pushlease'), id, ARGV[8])
    out[#out + 1] = stage
    out[#out + 1] = since
    out[#out + 1] = whole(b, id)
  elseif not wanted or (push == '0' and tonumber(at) <= tonumber(now) - tonumber(ARGV[6])) then
    drop_push(b, id)
    out[2] = out[2] + 1
  end
  -- else left for a node that sends Web Push
end
-- A node with Web Push off counts escalations as due no earlier than the hold time.
out[1] = next_due(b, push ~= '1' and tonumber(now) + tonumber(ARGV[7]) or nil)
return out
