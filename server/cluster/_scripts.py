"""The Lua scripts of the store: each check-and-set runs atomically inside Redis.

A script is one round trip and runs with no other command in between, like a
MULTI/EXEC transaction, but it can also *decide* (compare a lease's value, check
a de-duplication mark) which a transaction cannot. ``register_script`` calls them
by SHA and loads them again after a Redis restart (NOSCRIPT).

Scripts take every key they write in KEYS except where noted (live_nodes reads
node hashes by a prefix): the cluster runs on one Redis, not a Redis Cluster.
"""

from __future__ import annotations

#: KEYS: node hash, nodes set. ARGV: ttl_ms, node_id, field, value, ...
HEARTBEAT = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"""

#: KEYS: nodes set. ARGV: node hash prefix. Returns the HGETALL of each live node and
#: drops from the set the ids whose hash expired.
LIVE_NODES = """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HGETALL', ARGV[1] .. id)
  if #h == 0 then
    redis.call('SREM', KEYS[1], id)
  else
    out[#out + 1] = h
  end
end
return out
"""

#: KEYS: node hash, nodes set. ARGV: node_id.
REMOVE_NODE = """
redis.call('DEL', KEYS[1])
return redis.call('SREM', KEYS[2], ARGV[1])
"""

#: KEYS: hunts hash. ARGV: name, json, limit ('' for none).
#: Returns 1 created, 0 the name exists, -1 the catalogue is full.
DEFINE_HUNT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if ARGV[3] ~= '' and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

#: KEYS: lease, fence. ARGV: node_id, ttl_ms. Returns the new token, or nil when leased.
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
"""

#: KEYS: leases. ARGV: ttl_ms, then the expected value of each lease. Returns 1/0 each.
RENEW = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

#: KEYS: lease. ARGV: expected value. Returns 1 when deleted.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: KEYS: leaderboard, names. ARGV: limit. Returns member, score, name, member, ...
LEADERBOARD = """
local top = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local out = {}
for i = 1, #top, 2 do
  out[#out + 1] = top[i]
  out[#out + 1] = top[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], top[i]) or ''
end
return out
"""

#: KEYS: stream. ARGV: group, consumer, count. This consumer's pending entries as
#: id, fields (nil when the entry was trimmed since), ... (coredis 6.9 cannot parse the
#: nil of a trimmed entry in a plain XREADGROUP reply).
READ_PENDING = """
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                     'STREAMS', KEYS[1], '0')
local out = {}
if not r then return out end
for _, e in ipairs(r[1][2]) do
  out[#out + 1] = e[1]
  out[#out + 1] = e[2] or false
end
return out
"""

#: One batch of the event sink, all or nothing and at most once.
#: KEYS: stream, leaderboard, names, exported, the sink's mark, user leaderboard, user names.
#: ARGV: seq, mark_ttl_ms, stream_maxlen, node, n_discoveries, n_scores, n_removed,
#:       n_exported, n_users, then 8 per discovery (hunt, tick, player_id, name, value, x,
#:       y, user), 3 per score (member, score, name), 1 per removed member, 2 per hunt
#:       (hunt, tick), 3 per user (user, score, name): a user's score only ever rises
#:       (ZADD GT: the best in any hunt), the name is the latest.
#: Returns 0 when the mark shows this batch (or a later one) was already written: a
#: retry after a lost reply writes nothing twice.
WRITE_BATCH = """
local seq = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[5]) or '0') >= seq then return 0 end
local i = 10
for _ = 1, tonumber(ARGV[5]) do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*',
    'hunt', ARGV[i], 'tick', ARGV[i + 1], 'player_id', ARGV[i + 2], 'name', ARGV[i + 3],
    'value', ARGV[i + 4], 'x', ARGV[i + 5], 'y', ARGV[i + 6], 'user', ARGV[i + 7],
    'node', ARGV[4])
  i = i + 8
end
for _ = 1, tonumber(ARGV[6]) do
  redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 2])
  i = i + 3
end
for _ = 1, tonumber(ARGV[7]) do
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[3], ARGV[i])
  i = i + 1
end
for _ = 1, tonumber(ARGV[8]) do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, tonumber(ARGV[9]) do
  redis.call('ZADD', KEYS[6], 'GT', ARGV[i + 1], ARGV[i])
  redis.call('HSET', KEYS[7], ARGV[i], ARGV[i + 2])
  i = i + 3
end
redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[2])
return 1
"""

#: KEYS: results stream, published set. ARGV: key, maxlen, field, value, ... Adds one
#: round's results to the stream unless its key is in the set already; returns the new
#: entry's id, or false for a round published before.
PUBLISH_RESULT = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then
  return false
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
"""
