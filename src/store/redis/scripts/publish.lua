-- publish.lua: store one notification for each of a batch of users and commit each user's
-- `notification` change. One Redis server: any users. Redis Cluster: the caller sends users
-- of one slot only, so a call touches one slot. Each change is logged and announced in this
-- same script, so a user's announcements leave Redis in seq order: on the user's channel, or,
-- when the call names a batch channel, all of the call's in one message on it (below).
-- KEYS: per user, ARGV[6] keys: 1 the user's base key [2 the idempotency key]; then, on a
--       cluster, the keys of the users' trays, declared for Redis and not read here
-- ARGV: 1 deadline (Unix ms, Redis's clock) 2 max_per_user 3 log_capacity 4 now_ms
--       5 idempotency_ttl_ms 6 keys per user
--       7 tail: the notification JSON after its "user" member up to its state, shared
--       8 category a user may have muted ('' when none, or the notification is critical)
--       9 category ('' when none) 10 collapse key ('') 11 deliver at, Unix ms ('')
--       12 expires at, Unix ms ('') 13 Web Push sent by some node ('1'|'0')
--       14 batch channel ('': announce each user's change on the user's channel)
--       15 the idempotency key's stamp ('' when none): stored with the id, as `id@stamp`; a
--          key stored with another stamp is another record's (a Kafka broker that lost its
--          log hands out offsets again), and stores anew; without a stamp on either side, the
--          key matches
--       then per user 3: id, the user as a JSON string, epoch (a fresh random one, used only
--       when the user's log has none yet)
-- A user's notification JSON is '{"id":"' .. id .. '","user":' .. user .. tail .. state,
-- byte for byte what Herald's `model::Template::json` writes. A collapse key that an active
-- unread notification of the user carries replaces the newest such (count + 1, "replaces" its
-- id; no `deleted` change). A notification delivered later waits in `wake` and commits nothing
-- now (it collapses when delivered: `due.lua`). The oldest notifications dropped to keep the
-- tray at max_per_user (delivered ones before those held for delivery: `trim`) go in one
-- `deleted` change after the notification (those delivered; on a batch line when the
-- notification is announced on one).
-- The batch message (one SPUBLISH at the end, for the users whose change was logged) is
-- g<TAB>ms<TAB>tail, then per user a line
-- <LF>epoch<TAB>seq<TAB>count<TAB>replaced id ('')<TAB>unread<TAB>unseen<TAB>id<TAB>dropped
-- ids (comma-separated, '')<TAB>user JSON, from which a node writes the change's data exactly
-- as logged (`store::batch`), and, when ids were dropped, their `deleted` (seq + 1).
-- Returns {failure, outcome per user handled}: an outcome is 1 (stored), 2 (stored, and a
-- Web Push escalation is due now), 0 (the user muted the category: nothing stored) or the id
-- an idempotency key stored before. `failure` is ''
-- when every user was handled; otherwise the error of the user after the last outcome,
-- whose writes failed; the users after it were not attempted.
if late(ARGV[1]) then return redis.error_reply(LATE_REPLY) end
local max, cap, ms, ttl = tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local per, tail, muted_by = tonumber(ARGV[6]), ARGV[7], ARGV[8]
local category, collapse, deliver, expire, push = ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local batch, stamp, announced = ARGV[14], ARGV[15], {}
local FRESH = ',"read_at":null,"seen_at":null,"archived_at":null,"snoozed_until":null,"action":null'

-- Drop the `over` oldest past max_per_user, never the new one: delivered ones first, oldest
-- first; one held for delivery (not in the tray yet) only when too few delivered are left.
-- Returns the delivered ones dropped: streams have seen them, and are told they went.
local function trim(b, over, new)
  local gone, waiting, from, size = {}, {}, 0, over
  while #gone < over do
    local page = redis.call('ZRANGE', key(b, 'order'), from, from + size - 1)
    for _, id in ipairs(page) do
      if id ~= new and #gone < over then
        if held(b, id) then waiting[#waiting + 1] = id else gone[#gone + 1] = id end
      end
    end
    if #page < size then break end
    from, size = from + size, size * 2
  end
  for _, id in ipairs(gone) do remove(b, id) end
  for i = 1, over - #gone do remove(b, waiting[i]) end
  return gone
end

local function store(k, a)
  local b, id = KEYS[k + 1], ARGV[a + 1]
  if per == 2 then
    local previous = redis.call('GET', KEYS[k + 2])
    if previous then
      local earlier, at = string.match(previous, '^([^@]*)@?(.*)$')
      if stamp == '' or at == '' or at == stamp then return earlier end
    end
  end
  if muted_by ~= '' and redis.call('HGET', key(b, 'prefs'), muted_by) == '1' then
    return 0
  end
  local count, replaces = '1', nil
  if collapse ~= '' and deliver == '' then count, replaces = supersede(b, collapse) end
  local base = '{"id":"' .. id .. '","user":' .. ARGV[a + 2] .. tail
  redis.call('HSET', key(b, 'items'), id, base)
  redis.call('ZADD', key(b, 'order'), '0', id)
  if replaces then redis.call('HSET', key(b, 'meta'), id, count .. '\t' .. replaces) end
  if category ~= '' then redis.call('HSET', key(b, 'cat'), id, category) end
  if collapse ~= '' and deliver == '' then name_collapse(b, collapse, id) end
  if expire ~= '' then redis.call('ZADD', key(b, 'expire'), expire, id) end
  if deliver ~= '' then
    redis.call('ZADD', key(b, 'wake'), deliver, id)
  else
    redis.call('ZADD', key(b, 'unread'), '0', id)
    redis.call('ZADD', key(b, 'unseen'), '0', id)
  end
  -- (a table only for a full tray: this runs for every member of a group publish)
  local over, dropped = redis.call('ZCARD', key(b, 'order')) - max, nil
  if over > 0 then dropped = trim(b, over, id) end
  local outcome = 1
  if deliver == '' then
    if escalate(b, id, push, ms) then outcome = 2 end
    local unread, unseen = tally(b)
    local data = base .. FRESH .. ',"count":' .. count .. ',"replaces":' .. quoted(replaces)
      .. count_members(unread, unseen) .. '}'
    if batch == '' then
      commit(b, 'notification', data, ms, ARGV[a + 3], cap)
    else
      local epoch, seq = log(b, 'notification', data, ms, ARGV[a + 3], cap)
      local line = epoch .. '\t' .. seq .. '\t' .. count .. '\t' .. (replaces or '')
        .. '\t' .. unread .. '\t' .. unseen .. '\t' .. id .. '\t'
      -- The oldest dropped to keep the tray at --max-per-user: their `deleted` (the next
      -- seq, the same counts) is logged here and announced on the same line.
      if dropped and #dropped > 0 then
        log(b, 'deleted', '{"ids":' .. cjson.encode(dropped) .. count_members(unread, unseen)
          .. '}', ms, ARGV[a + 3], cap)
        line = line .. table.concat(dropped, ',')
        dropped = nil
      end
      announced[#announced + 1] = line .. '\t' .. ARGV[a + 2]
    end
  end
  -- Dropped ones not announced on a batch line: one `deleted` after the notification.
  if dropped and #dropped > 0 then
    commit(b, 'deleted', '{"ids":' .. cjson.encode(dropped) .. counts(b) .. '}', ms,
      ARGV[a + 3], cap)
  end
  -- Last, so a user whose writes failed can be sent again under the same key.
  if per == 2 then
    redis.call('SET', KEYS[k + 2], stamp == '' and id or id .. '@' .. stamp, 'PX', ttl)
  end
  return outcome
end

local out = {''}
for u = 0, (#ARGV - 15) / 3 - 1 do
  local ok, outcome = pcall(store, u * per, 15 + u * 3)
  if not ok then
    out[1] = type(outcome) == 'table' and (outcome.err or 'ERR') or tostring(outcome)
    break
  end
  out[#out + 1] = outcome
end
if #announced > 0 then
  redis.call('SPUBLISH', batch, 'g\t' .. ms .. '\t' .. tail .. '\n' .. table.concat(announced, '\n'))
end
return out
