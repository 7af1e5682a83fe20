-- Stores one response and keeps its tenant within its share (the twin of memory.rs's bounds):
-- KEYS[1] the response hash, KEYS[2] the tenant's index (id -> expiry ms), KEYS[3] the
-- tenant's sizes (id -> bytes); ARGV: id, tenant, conversation, response, size, ttl_ms,
-- max_bytes, max_count, the prefix of the tenant's response keys. Expired ids leave the books;
-- then the tenant's oldest go until the new one fits. One tenant never pushes out another's.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms)
for _, old in ipairs(expired) do
  redis.call('HDEL', KEYS[3], old)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
local total = 0
for _, bytes in ipairs(redis.call('HVALS', KEYS[3])) do
  total = total + tonumber(bytes)
end
local size = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
while redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[8]) or total + size > tonumber(ARGV[7]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then
    break
  end
  total = total - tonumber(redis.call('HGET', KEYS[3], oldest) or '0')
  redis.call('HDEL', KEYS[3], oldest)
  redis.call('ZREM', KEYS[2], oldest)
  redis.call('DEL', ARGV[9] .. oldest)
end
redis.call('HSET', KEYS[1], 'tenant', ARGV[2], 'conversation', ARGV[3], 'response', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now_ms + ttl, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], size)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return 1
