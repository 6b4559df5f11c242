-- Shared by every tray script (prepended to each by `redis.rs`). A user's keys all start
-- with the user's base key `herald:{u:<user>}` (one hash tag, so one cluster slot), which the
-- scripts receive as a KEYS entry and extend with a suffix (see `keys.rs` and docs/redis.md).
-- On a cluster every key below follows in KEYS too, unread: declared, they make Redis answer
-- TRYAGAIN while a slot migration has split them between two nodes.
--   items HASH id -> the published part of the notification JSON (no closing brace)
--   order ZSET every id (scores 0, lexical = creation order)
--   unread, unseen ZSET the *active* ids not read / not seen (what the counts count)
--   read_at, seen_at, archived HASH id -> RFC 3339 time
--   snoozed HASH id -> RFC 3339 time the snooze ends
--   wake ZSET id -> Unix ms it is delivered (deliver_at) or its snooze ends
--   expire ZSET id -> Unix ms it expires
--   action HASH id -> the taken action's JSON; acting HASH id -> until when (Unix ms, Redis's
--   clock) a node holds the sending of an action of it to the upstream
--   meta HASH id -> '<count>\t<replaced id>' for a collapsed notification
--   cat HASH id -> category; collapse HASH collapse key -> the ids in the tray that carry it,
--     space-separated, in the order they were published (or delivered); the newest 16
--   push HASH endpoint -> Web Push subscription JSON
--   pushdue ZSET id -> Unix ms its Web Push escalation is due; pushstage HASH id -> 'check'
--   (is the user connected?) or 'send', with '@<ms>' once leased: when it first came due;
--   pushlease HASH id -> the token of the sender that leased it (while one has); pushsent
--   HASH id -> the fingerprints of the subscriptions that took its push (space-separated),
--   so a sender taking over a lease pushes the others only
--   activated ZSET id -> Unix ms it became active after it was made (delivered, or its snooze
--   ended) while the user had no subscription; kept 7 days (the longest --push-after)
--   seq, epoch, changes, ch, prefs: the change log's head, its epoch, its entries (a LIST) and
--   channel, preferences
-- A notification is *active* when it is not archived and not in `wake` (neither held for
-- delivery nor snoozed).

local function key(b, suffix) return b .. ':' .. suffix end

-- An integer as text. `tostring` (and `..`) write a Lua number as a double with '%.14g',
-- about twice the cost of '%d'; a group publish writes several per member. Scores that are
-- constants are passed as strings ('0') for the same reason.
local function int(n) return string.format('%d', n) end

-- Whether Redis's clock is past the caller's deadline (Unix ms): the caller has answered 503
-- by then, so the write must not happen (the script returns LATE_REPLY instead).
local LATE_REPLY = 'LATE tray write arrived after its deadline'
local function redis_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function late(deadline) return redis_ms() > tonumber(deadline) end

local function active(b, id)
  return redis.call('HEXISTS', key(b, 'archived'), id) == 0
    and not redis.call('ZSCORE', key(b, 'wake'), id)
end

-- Held for delivery: waiting in `wake` without a snooze.
local function held(b, id)
  return redis.call('ZSCORE', key(b, 'wake'), id) ~= false
    and redis.call('HEXISTS', key(b, 'snoozed'), id) == 0
end

-- A stored, delivered notification.
local function delivered(b, id)
  return redis.call('HEXISTS', key(b, 'items'), id) == 1 and not held(b, id)
end

-- Keep the count sets in step with the item's state (the one rule for what counts).
local function sync(b, id)
  local on = active(b, id)
  if on and redis.call('HEXISTS', key(b, 'read_at'), id) == 0 then
    redis.call('ZADD', key(b, 'unread'), '0', id)
  else
    redis.call('ZREM', key(b, 'unread'), id)
  end
  if on and redis.call('HEXISTS', key(b, 'seen_at'), id) == 0 then
    redis.call('ZADD', key(b, 'unseen'), '0', id)
  else
    redis.call('ZREM', key(b, 'unseen'), id)
  end
end

-- The collapse key of a stored notification (nil when it has none, or it is not stored).
local function collapse_key(b, id)
  local item = redis.call('HGET', key(b, 'items'), id)
  if not item then return nil end
  local ok, n = pcall(cjson.decode, item .. '}')
  if ok and type(n.collapse_key) == 'string' then return n.collapse_key end
  return nil
end

-- At most this many ids are kept per collapse key: the newest that carry it (Rust's
-- `store::COLLAPSE_KEPT`).
local COLLAPSE_KEPT = 16

-- The ids in the tray that carry collapse key `ck` (the newest COLLAPSE_KEPT), oldest first.
local function carrying(b, ck)
  local ids = {}
  for id in string.gmatch(redis.call('HGET', key(b, 'collapse'), ck) or '', '%S+') do
    ids[#ids + 1] = id
  end
  return ids
end

-- Note that `id` carries collapse key `ck` (the newest that does).
local function name_collapse(b, ck, id)
  local ids = carrying(b, ck)
  ids[#ids + 1] = id
  redis.call('HSET', key(b, 'collapse'), ck,
    table.concat(ids, ' ', math.max(1, #ids - COLLAPSE_KEPT + 1)))
end

-- Drop the Web Push escalation of `id` (pending or leased) with its lease.
local function drop_push(b, id)
  redis.call('ZREM', key(b, 'pushdue'), id)
  redis.call('HDEL', key(b, 'pushstage'), id)
  redis.call('HDEL', key(b, 'pushlease'), id)
  redis.call('HDEL', key(b, 'pushsent'), id)
end

-- Remove every trace of a notification, from its collapse key's ids too.
local function remove(b, id)
  if redis.call('EXISTS', key(b, 'collapse')) == 1 then
    local ck = collapse_key(b, id)
    local ids = ck and redis.call('HGET', key(b, 'collapse'), ck)
    if ids == id then
      redis.call('HDEL', key(b, 'collapse'), ck)
    elseif ids then
      local padded = ' ' .. ids .. ' '
      local at = string.find(padded, ' ' .. id .. ' ', 1, true)
      if at then
        local rest = string.sub(padded, 2, at) .. string.sub(padded, at + #id + 2, -2)
        rest = string.match(rest, '^%s*(.-)%s*$')
        if rest == '' then
          redis.call('HDEL', key(b, 'collapse'), ck)
        else
          redis.call('HSET', key(b, 'collapse'), ck, rest)
        end
      end
    end
  end
  for _, h in ipairs({'items', 'read_at', 'seen_at', 'archived', 'snoozed', 'action', 'meta', 'cat',
      'pushstage', 'pushlease', 'pushsent', 'acting'}) do
    redis.call('HDEL', key(b, h), id)
  end
  for _, z in ipairs({'order', 'unread', 'unseen', 'wake', 'expire', 'pushdue'}) do
    redis.call('ZREM', key(b, z), id)
  end
end

-- Whether an action of notification `id` is being sent to the upstream: its claim in
-- `acting` (`action.lua`) has not run out by Redis's clock.
local function acting(b, id)
  local till = redis.call('HGET', key(b, 'acting'), id)
  return till ~= false and tonumber(till) > redis_ms()
end

-- Collapse under key `ck`: the newest active unread notification that carries it (if any) is
-- removed; returns the count the notification taking its place carries (as text) and the
-- removed id (nil when none). The caller then names its notification under `ck`. One whose
-- action is being sent to the upstream (`acting`) is passed by: taking the action reads it, and records it on the notification that was sent.
local function supersede(b, ck)
  local ids = carrying(b, ck)
  if #ids == 0 then return '1', nil end
  local unread = redis.call('ZMSCORE', key(b, 'unread'), unpack(ids))
  for i = #ids, 1, -1 do
    if unread[i] and not acting(b, ids[i]) then
      local old = ids[i]
      local meta = redis.call('HGET', key(b, 'meta'), old)
      local count = int((meta and tonumber(string.match(meta, '^(%d+)')) or 1) + 1)
      remove(b, old)
      return count, old
    end
  end
  return '1', nil
end

local function quoted(v)
  if v then return '"' .. v .. '"' end
  return 'null'
end

-- The whole notification JSON: the published part and the state's suffix, member for member
-- what serde writes for `model::ItemState` (times, ids and counts need no escaping; the
-- action is stored as JSON).
local function whole(b, id)
  local base = redis.call('HGET', key(b, 'items'), id)
  if not base then return nil end
  local count, replaces = '1', nil
  local meta = redis.call('HGET', key(b, 'meta'), id)
  if meta then count, replaces = string.match(meta, '^(%d+)\t(.*)$') end
  return base
    .. ',"read_at":' .. quoted(redis.call('HGET', key(b, 'read_at'), id))
    .. ',"seen_at":' .. quoted(redis.call('HGET', key(b, 'seen_at'), id))
    .. ',"archived_at":' .. quoted(redis.call('HGET', key(b, 'archived'), id))
    .. ',"snoozed_until":' .. quoted(redis.call('HGET', key(b, 'snoozed'), id))
    .. ',"action":' .. (redis.call('HGET', key(b, 'action'), id) or 'null')
    .. ',"count":' .. count .. ',"replaces":' .. quoted(replaces) .. '}'
end

-- The tray's counts: as text, and as the members every event that carries them ends with.
local function tally(b)
  return int(redis.call('ZCARD', key(b, 'unread'))), int(redis.call('ZCARD', key(b, 'unseen')))
end

local function count_members(unread, unseen)
  return ',"unread_count":' .. unread .. ',"unseen_count":' .. unseen
end

local function counts(b)
  return count_members(tally(b))
end

-- A JSON object with the tray's counts added at its end.
local function with_counts(b, json)
  return string.sub(json, 1, -2) .. counts(b) .. '}'
end

-- Log one change; returns its epoch and seq. `fresh` is an epoch the caller drew, kept only
-- when the user's log has none yet. The log (`changes`) is a LIST of
-- seq<TAB>kind<TAB>ms<TAB>data, oldest first, one entry per seq; once it holds LOG_SLACK more
-- than `cap` entries it is cut back to the newest `cap` (a list, not a stream: creating a
-- user's first stream cost a fifth of a group publish).
local LOG_SLACK = 100
local function log(b, kind, data, ms, fresh, cap)
  local epoch = redis.call('SET', key(b, 'epoch'), fresh, 'NX', 'GET') or fresh
  local seq = int(redis.call('INCR', key(b, 'seq')))
  local logged = redis.call('RPUSH', key(b, 'changes'), seq .. '\t' .. kind .. '\t' .. ms .. '\t' .. data)
  if logged > tonumber(cap) + LOG_SLACK then
    redis.call('LTRIM', key(b, 'changes'), -tonumber(cap), -1)
  end
  return epoch, seq
end

-- Log one change and announce it on the user's channel:
-- c<TAB>epoch<TAB>seq<TAB>kind<TAB>ms<TAB>data. Returns its epoch and seq.
local function commit(b, kind, data, ms, fresh, cap)
  local epoch, seq = log(b, kind, data, ms, fresh, cap)
  redis.call('SPUBLISH', key(b, 'ch'), 'c\t' .. epoch .. '\t' .. seq .. '\t' .. kind .. '\t' .. ms .. '\t' .. data)
  return epoch, seq
end

-- Escalate a notification that just became active to Web Push, when some node sends it
-- (`push`: '1'; due.lua also passes 'w', another node does; '0' none) and the user has a
-- subscription: first check, at once, whether the user is connected. An escalation of it
-- still pending (leased or waiting: it is on the due index) decides instead: a second would
-- push twice. (Pending means with a due time: a stage alone is no escalation.) `stage`
-- 'send' (default 'check') skips the check: pushed at `ms` if still unseen and unread.
local function escalate(b, id, push, ms, stage)
  if push ~= '0' and redis.call('EXISTS', key(b, 'push')) == 1
    and not redis.call('ZSCORE', key(b, 'pushdue'), id) then
    redis.call('ZADD', key(b, 'pushdue'), ms, id)
    redis.call('HSET', key(b, 'pushstage'), id, stage or 'check')
    -- A fresh escalation: no lease, pushed nowhere yet (also should a node of the version
    -- before `pushsent` have dropped the last one without clearing it).
    redis.call('HDEL', key(b, 'pushlease'), id)
    redis.call('HDEL', key(b, 'pushsent'), id)
    return true
  end
  return false
end

-- How long `activated` keeps when a notification became active: the longest --push-after.
local ACTIVATED_KEPT_MS = 7 * 86400 * 1000

-- Escalate (above) a notification that became active after it was made: delivered at its
-- `deliver_at`, or its snooze ended. While the user has no subscription, none escalates:
-- then note when it became active, for a first subscription to take it (`subscribed.lua`).
local function activate(b, id, push, ms)
  if escalate(b, id, push, ms) or push == '0' or redis.call('EXISTS', key(b, 'push')) == 1 then
    return
  end
  local z = key(b, 'activated')
  redis.call('ZADD', z, ms, id)
  redis.call('ZREMRANGEBYSCORE', z, '-inf', '(' .. int(tonumber(ms) - ACTIVATED_KEPT_MS))
  redis.call('PEXPIRE', z, ACTIVATED_KEPT_MS)
end

-- When something of this tray is due next ('' when nothing is); with `hold` (Unix ms), a Web
-- Push escalation counts as due no earlier than then.
local function next_due(b, hold)
  local first = ''
  for _, z in ipairs({'wake', 'expire', 'pushdue'}) do
    local top = redis.call('ZRANGE', key(b, z), 0, 0, 'WITHSCORES')
    local at = top[2]
    if at and hold and z == 'pushdue' and tonumber(at) < hold then at = string.format('%d', hold) end
    if at and (first == '' or tonumber(at) < tonumber(first)) then first = at end
  end
  return first
end

