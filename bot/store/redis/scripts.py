"""The Lua scripts of the Redis store: each runs atomically on the server, with the server's clock.

Accepting, marking, renewing and taking over jobs run here, so two replicas never take the same job and clock drift
between hosts does not matter; so do a rate-limit token take, adding a conversation file (keeping at most N, in
order), removing one chat message's turns, and recording or expiring ratings. Each script names its KEYS and ARGV
above it.
"""

from __future__ import annotations

LUA_PRELUDE = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
local function finished(state) return state == 'answered' or state == 'failed' end
"""

# KEYS: job hash, unfinished zset, finished zset.
# ARGV: job id, owner, lease_s, created_at ('' = now), finished ttl ms, field/value pairs…
ACCEPT = (
    LUA_PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = now()
local lease = t + tonumber(ARGV[3])
local created = ARGV[4]
if created == '' then created = fmt(t) end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'lease_until', fmt(lease), 'created_at', created, 'updated_at', fmt(t))
if finished(redis.call('HGET', KEYS[1], 'state')) then
  redis.call('ZADD', KEYS[3], fmt(t), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
else
  redis.call('ZADD', KEYS[2], fmt(lease), ARGV[1])
end
return 1
"""
)

# KEYS: job hash, unfinished zset, finished zset.
# ARGV: job id, new state, '1' when reply_state is given, reply_state JSON, error, finished ttl ms,
# owner ('' = whoever holds it; else only while the job is unfinished and leased to that owner).
MARK = (
    LUA_PRELUDE
    + """
local fields = redis.call('HMGET', KEYS[1], 'state', 'owner')
local current = fields[1]
if not current then return 0 end
if ARGV[7] ~= '' and (fields[2] ~= ARGV[7] or finished(current)) then return 0 end
local t = now()
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updated_at', fmt(t), 'error', ARGV[5])
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'reply_state', ARGV[4]) end
if finished(ARGV[2]) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], fmt(t), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
elseif finished(current) then
  redis.call('PERSIST', KEYS[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'lease_until'), ARGV[1])
end
return 1
"""
)

# KEYS: unfinished zset, then one job hash per id. ARGV: owner, lease_s, then the ids (same order as KEYS[2..]).
RENEW = (
    LUA_PRELUDE
    + """
local lease = fmt(now() + tonumber(ARGV[2]))
local renewed = {}
for i = 2, #KEYS do
  local fields = redis.call('HMGET', KEYS[i], 'owner', 'state')
  if fields[1] == ARGV[1] and fields[2] and not finished(fields[2]) then
    redis.call('HSET', KEYS[i], 'lease_until', lease)
    redis.call('ZADD', KEYS[1], lease, ARGV[i + 1])
    renewed[#renewed + 1] = ARGV[i + 1]
  end
end
return renewed
"""
)

# KEYS: unfinished zset. ARGV: user, job key prefix. The unfinished set is small (bounded by the queues).
PENDING_FOR = (
    LUA_PRELUDE
    + """
local count = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HMGET', ARGV[2] .. id, 'user', 'state')
  if fields[1] == ARGV[1] and fields[2] and not finished(fields[2]) then count = count + 1 end
end
return count
"""
)

# KEYS: bucket hash. ARGV: tokens per second, burst. Returns '0' when a token was taken, else the seconds to wait.
# A bucket that has refilled completely is the same as none, so the key expires then.
TAKE_TOKEN = (
    LUA_PRELUDE
    + """
local t = now()
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local fields = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = capacity
if fields[1] then
  tokens = math.min(capacity, tonumber(fields[1]) + math.max(t - tonumber(fields[2]), 0) * rate)
end
if tokens < 1 then return fmt((1 - tokens) / rate) end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', fmt(tokens), 'updated', fmt(t))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((capacity - tokens) / rate * 1000)))
return '0'
"""
)

# KEYS: unfinished zset. ARGV: owner, lease_s, '1' to include live leases, job key prefix.
# Returns the claimed jobs' hashes (flat field/value arrays).
TAKE_OVER = (
    LUA_PRELUDE
    + """
local t = now()
local upto = fmt(t)
if ARGV[3] == '1' then upto = '+inf' end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', upto)
local lease = fmt(t + tonumber(ARGV[2]))
local claimed = {}
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  local state = redis.call('HGET', key, 'state')
  if (not state) or finished(state) then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('HSET', key, 'owner', ARGV[1], 'lease_until', lease, 'updated_at', fmt(t))
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('ZADD', KEYS[1], lease, id)
    claimed[#claimed + 1] = redis.call('HGETALL', key)
  end
end
return claimed
"""
)

# KEYS: files hash. ARGV: content hash, file ref, created_at, max files.
# Each entry remembers its insertion number (counter in the reserved field '#seq') so files keep their order.
ADD_FILE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local seq = redis.call('HINCRBY', KEYS[1], '#seq', 1)
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({file_ref = ARGV[2], created_at = ARGV[3], seq = seq}))
local excess = redis.call('HLEN', KEYS[1]) - 1 - tonumber(ARGV[4])
if excess > 0 then
  local all = redis.call('HGETALL', KEYS[1])
  local entries = {}
  for i = 1, #all, 2 do
    if all[i] ~= '#seq' then entries[#entries + 1] = {all[i], cjson.decode(all[i + 1]).seq} end
  end
  table.sort(entries, function(a, b) return a[2] < b[2] end)
  for i = 1, excess do redis.call('HDEL', KEYS[1], entries[i][1]) end
end
return 1
"""
SEQ_FIELD = "#seq"

# KEYS: turns list. ARGV: message id. Removes the turns of one chat message; returns how many.
FORGET_TURNS = """
local removed = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, turn = pcall(cjson.decode, item)
  if ok and type(turn) == 'table' and turn.message_id == ARGV[1] then
    removed = removed + redis.call('LREM', KEYS[1], 0, item)
  end
end
return removed
"""

# KEYS: ratings hash, ratings zset. ARGV: rating id (job and user), rating JSON, created_at.
# Records one person's rating of one answer, replacing theirs; returns the rating it replaced (nil for a first).
RATE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if not old then return false end
local ok, rating = pcall(cjson.decode, old)
if ok and type(rating) == 'table' and type(rating.rating) == 'string' then return rating.rating end
return ''
"""

# KEYS: ratings hash, ratings zset. ARGV: cutoff time. Deletes ratings older than the cutoff; returns how many.
EXPIRE_RATINGS = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, id in ipairs(gone) do redis.call('HDEL', KEYS[1], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
return #gone
"""
