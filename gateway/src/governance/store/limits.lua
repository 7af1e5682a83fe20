-- The twin of gateway/src/governance/ledger.rs inside Redis: one tenant's token buckets,
-- calendar budgets and reservations, read and changed atomically in one round trip on the
-- server's clock (TIME). Keys are hash-tagged by tenant, so all three live in one Cluster slot.
--
-- KEYS: state hash, reservations zset (score = expiry ms), reservation details hash,
--       cancelled ids zset (score = until when remembered).
-- ARGV: op (reserve | settle | cancel | peek), request id, tokens (reserve) or used (settle),
--       rpm, tpm, max_concurrent, tokens_per_day, tokens_per_month (0 = no limit), ttl ms.
-- Reply: {code (1 granted/settled, 0 refused, 2 nothing to settle), limit code, retry ms
--        (-1 never), requests left, tokens left, concurrent left, today left, month left,
--        requests reset ms, tokens reset ms, day reset ms, month reset ms}.
local state, held, detail, cancelled = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, id = ARGV[1], ARGV[2]
local tokens = tonumber(ARGV[3])
local rpm, tpm, maxc = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local per_day, per_month, ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local DAY, MINUTE = 86400000, 60000

-- Howard Hinnant's civil calendar algorithms, as in ledger.rs.
local function civil_from_days(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400
  if month <= 2 then year = year + 1 end
  return year, month
end
local function days_from_civil(year, month, day)
  if month <= 2 then year = year - 1 end
  local era = math.floor(year / 400)
  local yoe = year - era * 400
  local shifted = month > 2 and month - 3 or month + 9
  local doy = math.floor((153 * shifted + 2) / 5) + day - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local day = math.floor(now / DAY)
local year, month_of_year = civil_from_days(day)
local month = year * 12 + month_of_year - 1
local next_year, next_month_of_year = year, month_of_year + 1
if next_month_of_year == 13 then next_year, next_month_of_year = year + 1, 1 end
local next_day = (day + 1) * DAY
local next_month = days_from_civil(next_year, next_month_of_year, 1) * DAY

-- Reservations past their TTL (a gateway died): gone, and charged what they reserved.
local expired = redis.call('ZRANGEBYSCORE', held, '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', held, '-inf', now)
  for i = 1, #expired do redis.call('HDEL', detail, expired[i]) end
end

-- Cancelled ids are remembered for a reservation's TTL: a reserve that arrives later is void.
redis.call('ZREMRANGEBYSCORE', cancelled, '-inf', now)

local s = redis.call('HMGET', state, 'rq', 'rq_at', 'tk', 'tk_at', 'day', 'day_used', 'month', 'month_used')
local function level(value, at, cap)
  if cap == 0 or not value then return cap end
  local refilled = tonumber(value) + math.max(now - tonumber(at), 0) * cap / MINUTE
  if refilled > cap then refilled = cap end
  return refilled
end
local rq, tk = level(s[1], s[2], rpm), level(s[3], s[4], tpm)
local day_used, month_used = 0, 0
if s[5] and tonumber(s[5]) == day then day_used = tonumber(s[6]) end
if s[7] and tonumber(s[7]) == month then month_used = tonumber(s[8]) end
local in_flight = redis.call('ZCARD', held)

local function wait(missing, cap)
  if missing <= 0 then return 0 end
  return math.ceil(missing * MINUTE / cap)
end
local function reply(code, limit, retry)
  return {code, limit, retry,
    math.floor(math.max(rq, 0)), math.floor(tk), math.max(maxc - in_flight, 0),
    math.max(per_day - day_used, 0), math.max(per_month - month_used, 0),
    rpm > 0 and wait(rpm - rq, rpm) or 0, tpm > 0 and wait(tpm - tk, tpm) or 0,
    next_day - now, next_month - now}
end
-- Tokens reserved by requests in flight in this day (field 2) or month (field 3) window.
local function held_in(field, window)
  local total = 0
  for _, reservation in ipairs(redis.call('HVALS', detail)) do
    local reserved, at_day, at_month = string.match(reservation, '^(%d+):(%d+):(%d+)$')
    local at = field == 2 and at_day or at_month
    if tonumber(at) == window then total = total + tonumber(reserved) end
  end
  return total
end
-- As budget_retry in ledger.rs: never, soon (held by requests in flight), or when the window turns.
local function budget_retry(budget, used, held, window_left)
  if tokens > budget then return -1 end
  if math.max(used - held, 0) + tokens <= budget then return 1000 end
  return window_left
end
local function save()
  if rpm > 0 then redis.call('HSET', state, 'rq', tostring(rq), 'rq_at', now) end
  if tpm > 0 then redis.call('HSET', state, 'tk', tostring(tk), 'tk_at', now) end
  redis.call('HSET', state, 'day', day, 'day_used', day_used, 'month', month, 'month_used', month_used)
  -- Idle tenants' counters go away after a month and a bit.
  redis.call('PEXPIRE', state, 35 * DAY)
end

-- Refunds reservation `id` down to `used` tokens; false if it is not held.
local function settle(used)
  local reservation = redis.call('HGET', detail, id)
  if not reservation then return false end
  local reserved, at_day, at_month = string.match(reservation, '^(%d+):(%d+):(%d+)$')
  redis.call('HDEL', detail, id)
  redis.call('ZREM', held, id)
  in_flight = in_flight - 1
  local refund = tonumber(reserved) - used
  if tpm > 0 then tk = math.min(tk + refund, tpm) end
  if tonumber(at_day) == day then day_used = math.max(day_used - refund, 0) end
  if tonumber(at_month) == month then month_used = math.max(month_used - refund, 0) end
  save()
  return true
end

if op == 'reserve' then
  if redis.call('HEXISTS', detail, id) == 1 then return reply(1, 0, 0) end
  if redis.call('ZSCORE', cancelled, id) then return reply(1, 0, 0) end
  if maxc > 0 and in_flight >= maxc then return reply(0, 3, 1000) end
  if rpm > 0 and rq < 1 then return reply(0, 1, wait(1 - rq, rpm)) end
  if tpm > 0 and tk < tokens then
    if tokens <= tpm then return reply(0, 2, wait(tokens - tk, tpm)) end
    return reply(0, 2, -1)
  end
  if per_day > 0 and day_used + tokens > per_day then
    return reply(0, 4, budget_retry(per_day, day_used, held_in(2, day), next_day - now))
  end
  if per_month > 0 and month_used + tokens > per_month then
    return reply(0, 5, budget_retry(per_month, month_used, held_in(3, month), next_month - now))
  end
  if rpm > 0 then rq = rq - 1 end
  if tpm > 0 then tk = tk - tokens end
  day_used, month_used = day_used + tokens, month_used + tokens
  redis.call('ZADD', held, now + ttl, id)
  redis.call('HSET', detail, id, tokens .. ':' .. day .. ':' .. month)
  redis.call('PEXPIRE', held, ttl + MINUTE)
  redis.call('PEXPIRE', detail, ttl + MINUTE)
  in_flight = in_flight + 1
  save()
  return reply(1, 0, 0)
elseif op == 'settle' then
  if not settle(tokens) then return reply(2, 0, 0) end
  return reply(1, 0, 0)
elseif op == 'cancel' then
  if not settle(0) then
    redis.call('ZADD', cancelled, now + ttl, id)
    redis.call('PEXPIRE', cancelled, ttl + MINUTE)
  end
  return reply(1, 0, 0)
end
return reply(1, 0, 0)
