-- head.lua: a user's change-log head (epoch, seq, counts) and, given a position, the changes
-- logged after it, read at one instant.
-- KEYS: 1 the user's base key
-- ARGV: 1 a fresh epoch, kept when the user has none ('': only read it) 2 the seq to replay
--       after ('': no replay) 3 the log's capacity 4 the epoch of that position, when it is
--       one this log handed out (a stream's last change, not a client's Last-Event-ID, which
--       may be made up; '': not) 5 a fresh epoch for a log that went back 6 the print of the
--       change at that position: the first 16 hex digits of the SHA-1 of its entry after the
--       seq and its tab (kind, ms, data; '': unknown)
-- Returns {epoch ('' when none), seq, unread, unseen, entry...}: the newest `seq - after`
-- entries of `changes` as `commit` logged them (fewer once trimmed; a log written in part by
-- another layout may hold older ones too: the caller checks the seqs). None when more than
-- the capacity were logged since: the log may still hold them (it is cut back only once it
-- is 100 over), but a replay covers the last `capacity` changes only, as in the memory store.
local b = KEYS[1]
local epoch
if ARGV[1] ~= '' then
  epoch = redis.call('SET', key(b, 'epoch'), ARGV[1], 'NX', 'GET') or ARGV[1]
else
  epoch = redis.call('GET', key(b, 'epoch')) or ''
end
local seq = tonumber(redis.call('GET', key(b, 'seq')) or '0')
-- A position of this epoch beyond the head, or whose seq the log holds for another change:
-- this Redis went back (restarted from a snapshot older than its last writes, or a Cluster
-- replica promoted without them), and the seqs after what it kept are, or will be, handed
-- out again for other changes. A new epoch tells them apart: every position of the old one
-- resets.
if ARGV[2] ~= '' and ARGV[4] ~= '' and ARGV[4] == epoch then
  local after = tonumber(ARGV[2])
  local went_back = after > seq
  if not went_back and after > 0 and ARGV[6] ~= '' then
    local entry = redis.call('LINDEX', key(b, 'changes'), after - seq - 1)
    local at, rest = string.match(entry or '', '^(%d+)\t(.*)$')
    went_back = tonumber(at) == after and string.sub(redis.sha1hex(rest), 1, 16) ~= ARGV[6]
  end
  if went_back then
    epoch = ARGV[5]
    redis.call('SET', key(b, 'epoch'), epoch)
  end
end
local out = {epoch, tostring(seq), tostring(redis.call('ZCARD', key(b, 'unread'))),
  tostring(redis.call('ZCARD', key(b, 'unseen')))}
if ARGV[2] ~= '' then
  local missed = seq - tonumber(ARGV[2])
  if missed > 0 and missed <= tonumber(ARGV[3]) then
    for _, entry in ipairs(redis.call('LRANGE', key(b, 'changes'), -missed, -1)) do
      out[#out + 1] = entry
    end
  end
end
return out
