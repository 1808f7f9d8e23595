-- orelink view: applies a batch of events to the operators' view.
-- ARGV[1]: key prefix ("<namespace>view:"); ARGV[2]: the epoch the caller
-- works in; ARGV[3]: JSON array of ops, each {t = "topic:partition", o = offset, k = kind, ...};
-- ARGV[4]: how long (ms) a closed order or capacity stays after it closed.
-- Its numbers stay in the aggregates; the entity's own keys (its status,
-- allocations, share, capacity record) expire, so the view grows with what
-- is open, not with history. Within that time its checks absorb duplicates.
-- A key is written with its expiry or with none: Redis keeps a key's
-- expiry through later HSETs.
-- Returns {-1} if the epoch changed (a rebuild or FLUSHALL: the caller re-seeks),
-- {applied} when every op went through, or {applied, i, reason} when op i
-- (1-based) failed: the ops before it are applied and their offsets stored,
-- nothing of op i or after it is, and the caller dead-letters op i and goes on
-- after it. An op checks its numbers before it writes anything, so an op
-- refused for a number leaves no trace. An op at or below its partition's stored offset was applied
-- before and is skipped, which is what makes replays and concurrent writers
-- harmless; entity checks (a capacity declared twice, an allocation id seen,
-- an older order version) absorb duplicates at new offsets.
local P = ARGV[1]
if redis.call('GET', P .. 'epoch') ~= ARGV[2] then
  return {-1}
end
local ops = cjson.decode(ARGV[3])
local RETAIN = ARGV[4]
local DAY_MIN = 1440
-- Lua numbers are doubles: integers are exact up to 2^53, and Redis is handed
-- them formatted with %d (tostring would write 1e+14 from 10^14 on).
local EXACT = 9007199254740992

local function num(v)
  return tonumber(v) or 0
end

-- Refuses what is not an exact integer, naming the field.
local function int(op, field)
  local v = op[field]
  if type(v) ~= 'number' or v ~= math.floor(v) or v >= EXACT or v <= -EXACT then
    error('field ' .. field .. ' is not an integer the view can add exactly: ' .. tostring(v), 0)
  end
  return v
end

local function d(v)
  return string.format('%d', v)
end

local function agg(cell, field, delta)
  if delta ~= 0 then
    redis.call('HINCRBY', P .. 'agg:' .. cell, field, d(delta))
  end
end

-- Adds delta to bucket `slot` of hash `key`, and prunes buckets more than
-- `keep` slots before it: its field 'low' is the oldest slot kept; once it
-- is `slack` slots too old, up to `step` of them go at a time.
local function bucket(key, slot, delta, keep, slack, step)
  redis.call('HINCRBY', key, d(slot), d(delta))
  local low = num(redis.call('HGET', key, 'low'))
  if low == 0 then
    redis.call('HSET', key, 'low', d(slot))
  elseif slot - low > keep + slack then
    local upto = math.min(slot - keep, low + step)
    for m = low, upto - 1 do
      redis.call('HDEL', key, d(m))
    end
    redis.call('HSET', key, 'low', d(upto))
  end
end

-- Event-time series of a cell: per minute for the last 24 h, per hour for
-- the last 8 days, and per day (days of China Standard Time, UTC+8, as the
-- region's operators count them) since the first event, which the totals
-- over a chosen period are read from.
local HOUR_MS, CST_MS = 3600000, 28800000
local function series(cell, name, at, delta)
  if delta == 0 then return end
  bucket(P .. 'ts:' .. cell .. ':' .. name, math.floor(at / 60000), delta, DAY_MIN, 60, 120)
  bucket(P .. 'tsh:' .. cell .. ':' .. name, math.floor(at / HOUR_MS), delta, 8 * 7 * 24, 24, 48)
  redis.call('HINCRBY', P .. 'tsa:' .. cell .. ':' .. name, d(math.floor((at + CST_MS) / 86400000)), d(delta))
end

-- Per-day buckets of the last 8 days (event time), for days of cover.
local function daily(cell, name, at, delta)
  if delta == 0 then return end
  local key = P .. 'tsd:' .. cell .. ':' .. name
  local day = math.floor(at / 86400000)
  redis.call('HINCRBY', key, d(day), d(delta))
  for _, k in ipairs(redis.call('HKEYS', key)) do
    if num(k) < day - 8 then
      redis.call('HDEL', key, k)
    end
  end
end

-- The view's clock: the latest event time it has applied.
local function clock(at)
  if at > num(redis.call('GET', P .. 'clock')) then
    redis.call('SET', P .. 'clock', d(at))
  end
end

local function cap_remaining(h)
  if num(h.declared) == 1 and num(h.open) == 1 then
    return math.max(num(h.q) - num(h.alloc), 0)
  end
  return 0
end

-- A capacity declared and then withdrawn or used up is closed: its record
-- expires (an allocation's, or the declaration's, whichever comes last).
local function settle_cap(key, h)
  if num(h.declared) == 1 and cap_remaining(h) == 0 then
    redis.call('PEXPIRE', key, RETAIN)
  end
end

-- The keys of an order that are its own, by family|order id.
local function order_keys(member)
  return P .. 'ord:' .. member, P .. 'alo:' .. member, P .. 'shr:' .. member
end

local function hget_all(key)
  local flat = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #flat, 2 do
    h[flat[i]] = flat[i + 1]
  end
  return h
end

local apply = {}

-- Capacity declared or withdrawn.
apply.cap = function(op)
  int(op, 'q'); int(op, 'at')
  local key = P .. 'cap:' .. op.f .. '|' .. op.id
  local h = hget_all(key)
  -- A capacity stays in the cluster it was declared in, whatever cluster a
  -- later withdrawal names.
  local cell = (h.c or op.c) .. '|' .. op.f
  local before = cap_remaining(h)
  if op.kind == 'D' then
    if num(h.declared) == 1 then return false end
    h.declared, h.open, h.q = 1, 1, op.q
    redis.call('HSET', key, 'declared', 1, 'open', 1, 'q', d(op.q), 'c', op.c)
    agg(cell, 'declared_kg', op.q)
    agg(cell, 'open_capacities', 1)
    series(cell, 'declared', op.at, op.q)
    redis.call('SADD', P .. 'cells', cell)
  else
    if num(h.declared) ~= 1 or num(h.open) ~= 1 then return false end
    h.open = 0
    redis.call('HSET', key, 'open', 0)
    agg(cell, 'open_capacities', -1)
  end
  agg(cell, 'cap_remaining_kg', cap_remaining(h) - before)
  settle_cap(key, h)
  clock(op.at)
  return true
end

-- An allocation: capacity side by the capacity's cluster.
apply.al = function(op)
  int(op, 'q'); int(op, 'ekwh'); int(op, 'at')
  local per_order = P .. 'alo:' .. op.f .. '|' .. op.ord
  if redis.call('HSETNX', per_order, op.id, op.j) == 0 then return false end
  local key = P .. 'cap:' .. op.f .. '|' .. op.cap
  local h = hget_all(key)
  local before = cap_remaining(h)
  h.alloc = num(h.alloc) + op.q
  redis.call('HSET', key, 'alloc', d(h.alloc))
  local cell = op.cc .. '|' .. op.f
  agg(cell, 'cap_remaining_kg', cap_remaining(h) - before)
  settle_cap(key, h)
  -- An allocation that comes after its order's closing status expires with it.
  local status = redis.call('HGET', P .. 'ord:' .. op.f .. '|' .. op.ord, 's')
  if status and status ~= 'OPEN' then
    redis.call('PEXPIRE', per_order, RETAIN)
  end
  agg(cell, 'cap_allocated_kg', op.q)
  agg(cell, 'allocations', 1)
  if op.ekwh >= 0 then
    agg(cell, 'energy_kwh', op.ekwh)
    agg(cell, 'energy_kg', op.q)
  end
  series(cell, 'allocated', op.at, op.q)
  redis.call('SADD', P .. 'cells', cell)
  redis.call('LPUSH', P .. 'latest', op.j)
  redis.call('LTRIM', P .. 'latest', 0, 199)
  clock(op.at)
  return true
end

-- The matcher's status of an order: the highest version wins.
apply.st = function(op)
  int(op, 'v'); int(op, 'r'); int(op, 'a'); int(op, 'at')
  local key = P .. 'ord:' .. op.f .. '|' .. op.id
  local h = hget_all(key)
  local old_v = num(h.v)
  if op.v <= old_v then return false end
  local cell = op.c .. '|' .. op.f
  local was_open = (h.s == 'OPEN') and 1 or 0
  local is_open = (op.s == 'OPEN') and 1 or 0
  local old_rem = was_open * num(h.r)
  local new_rem = is_open * op.r
  agg(cell, 'open_demand_kg', new_rem - old_rem)
  agg(cell, 'order_allocated_kg', op.a - num(h.a))
  agg(cell, 'open_orders', is_open - was_open)
  if old_v == 0 then
    agg(cell, 'orders', 1)
    agg(cell, 'demand_kg', op.r + op.a)
    series(cell, 'demand', op.at, op.r + op.a)
    daily(cell, 'demand', op.at, op.r + op.a)
  end
  clock(op.at)
  redis.call('HSET', key, 'v', d(op.v), 's', op.s, 'r', d(op.r), 'a', d(op.a), 'c', op.c, 'j', op.j)
  local open_key = P .. 'open:' .. op.c
  if is_open == 1 then
    redis.call('ZADD', open_key, d(op.at), op.f .. '|' .. op.id)
  else
    redis.call('ZREM', open_key, op.f .. '|' .. op.id)
    -- Closed for good (filled or cancelled): the order's own keys expire.
    for _, k in ipairs({order_keys(op.f .. '|' .. op.id)}) do
      redis.call('PEXPIRE', k, RETAIN)
    end
  end
  redis.call('SADD', P .. 'cells', cell)
  return true
end

-- A share or its withdrawal.
apply.sh = function(op)
  local member = op.f .. '|' .. op.ord
  local changed = false
  if op.kind == 'S' then
    redis.call('HSET', P .. 'shr:' .. member, 'j', op.j)
    -- Shared again after a withdrawal: it stays while shared.
    redis.call('PERSIST', P .. 'shr:' .. member)
    if redis.call('SADD', P .. 'sout:' .. op.origin, member) == 1 then
      agg(op.origin .. '|' .. op.f, 'shared_out', 1)
      redis.call('SADD', P .. 'cells', op.origin .. '|' .. op.f)
      changed = true
    end
    for _, t in ipairs(op.targets) do
      if redis.call('SADD', P .. 'sin:' .. t, member) == 1 then
        agg(t .. '|' .. op.f, 'shared_in', 1)
        redis.call('SADD', P .. 'cells', t .. '|' .. op.f)
        changed = true
      end
    end
  else
    redis.call('PEXPIRE', P .. 'shr:' .. member, RETAIN)
    if redis.call('SREM', P .. 'sout:' .. op.origin, member) == 1 then
      agg(op.origin .. '|' .. op.f, 'shared_out', -1)
      changed = true
    end
    for _, t in ipairs(op.targets) do
      if redis.call('SREM', P .. 'sin:' .. t, member) == 1 then
        agg(t .. '|' .. op.f, 'shared_in', -1)
        changed = true
      end
    end
  end
  return changed
end

-- A site's stock of one product: the latest snapshot by event time stands.
apply.inv = function(op)
  int(op, 'oh'); int(op, 'rs'); int(op, 'at')
  local key = P .. 'inv:' .. op.site .. '|' .. op.p
  local h = hget_all(key)
  if h.at ~= nil and op.at < num(h.at) then return false end
  local cell = op.c .. '|' .. op.f
  agg(cell, 'stock_on_hand_kg', op.oh - num(h.oh))
  agg(cell, 'stock_reserved_kg', op.rs - num(h.rs))
  if h.at == nil then
    agg(cell, 'stock_items', 1)
  end
  redis.call('HSET', key, 'at', d(op.at), 'oh', d(op.oh), 'rs', d(op.rs), 'c', op.c, 'f', op.f)
  redis.call('SADD', P .. 'cells', cell)
  clock(op.at)
  return true
end

-- Carriers' lanes. Per lane (`lane:<from>><to>`): offers and the room they
-- offered, withdrawals, parts booked and their kilograms, unbooked
-- remainders, the freight of the booked parts at the offers' prices and at
-- the planning figure, and `room_kg`: what live offers still have. An
-- offer's room counts while it is offered, not withdrawn and its window has
-- not ended by the lane's latest event time; each event changes the lane by
-- the difference it makes to its offer's room, so offers, withdrawals and
-- bookings may arrive in any order across their topics.
local function lagg(lane, field, delta)
  if delta ~= 0 then
    redis.call('HINCRBY', P .. 'lane:' .. lane, field, d(delta))
  end
end

local function offer_room(h)
  if num(h.seen) == 1 and num(h.w) ~= 1 and num(h.x) ~= 1 then
    return math.max(num(h.cap) - num(h.bk), 0)
  end
  return 0
end

-- An offer with no room left, withdrawn or past its window is closed: its
-- record expires and it leaves the lane's window index.
local function settle_offer(lane, id, key, h)
  if num(h.seen) == 1 and offer_room(h) == 0 then
    redis.call('ZREM', P .. 'lanew:' .. lane, id)
    redis.call('PEXPIRE', key, RETAIN)
  end
end

-- Offers of the lane whose window ended before the lane's clock (the
-- latest event time it has seen, `at` included) stop counting, a few per
-- event; an offer applied after a later event of its lane is swept at once.
local function sweep_lane(lane, at)
  local lane_key = P .. 'lane:' .. lane
  local seen = num(redis.call('HGET', lane_key, 'clock'))
  if at > seen then
    redis.call('HSET', lane_key, 'clock', d(at))
  else
    at = seen
  end
  local ended = redis.call('ZRANGEBYSCORE', P .. 'lanew:' .. lane, '-inf', '(' .. d(at), 'LIMIT', 0, 20)
  for _, id in ipairs(ended) do
    local key = P .. 'off:' .. id
    local h = hget_all(key)
    local before = offer_room(h)
    h.x = 1
    redis.call('HSET', key, 'x', 1)
    lagg(lane, 'room_kg', offer_room(h) - before)
    settle_offer(lane, id, key, h)
  end
end

apply.off = function(op)
  int(op, 'cap'); int(op, 'upto'); int(op, 'at')
  local key = P .. 'off:' .. op.id
  local h = hget_all(key)
  local before = offer_room(h)
  if op.kind == 'O' then
    if num(h.seen) == 1 then return false end
    h.seen, h.cap = 1, op.cap
    redis.call('HSET', key, 'seen', 1, 'cap', d(op.cap), 'until', d(op.upto), 'l', op.l, 'mode', op.mode)
    lagg(op.l, 'offers', 1)
    lagg(op.l, 'offered_kg', op.cap)
    redis.call('SADD', P .. 'lanem:' .. op.l, op.mode)
    if offer_room(h) > 0 then
      redis.call('ZADD', P .. 'lanew:' .. op.l, d(op.upto), op.id)
    end
  else
    if num(h.w) == 1 then return false end
    h.w = 1
    redis.call('HSET', key, 'w', 1, 'l', op.l)
    lagg(op.l, 'withdrawn', 1)
  end
  lagg(op.l, 'room_kg', offer_room(h) - before)
  -- (A withdrawal seen before its offer keeps its record until the offer comes.)
  settle_offer(op.l, op.id, key, h)
  sweep_lane(op.l, op.at)
  redis.call('SADD', P .. 'lanes', op.l)
  clock(op.at)
  return true
end

apply.bk = function(op)
  int(op, 'b'); int(op, 'q'); int(op, 'cny'); int(op, 'pcny'); int(op, 'at')
  -- The booker writes each booking once; a record at a new offset with a
  -- booking id seen within the retention is a duplicate.
  if not redis.call('SET', P .. 'bkg:' .. op.id, 1, 'NX', 'PX', RETAIN) then return false end
  if op.b == 1 then
    lagg(op.l, 'parts', 1)
    lagg(op.l, 'booked_kg', op.q)
    if op.cny >= 0 and op.pcny >= 0 then
      lagg(op.l, 'booked_cny', op.cny)
      lagg(op.l, 'planning_cny', op.pcny)
      lagg(op.l, 'costed_kg', op.q)
    end
    local key = P .. 'off:' .. op.off
    local h = hget_all(key)
    local before = offer_room(h)
    h.bk = num(h.bk) + op.q
    redis.call('HSET', key, 'bk', d(h.bk), 'l', op.l)
    lagg(op.l, 'room_kg', offer_room(h) - before)
    settle_offer(op.l, op.off, key, h)
  else
    lagg(op.l, 'unbooked', 1)
    lagg(op.l, 'unbooked_kg', op.q)
  end
  sweep_lane(op.l, op.at)
  redis.call('SADD', P .. 'lanes', op.l)
  return true
end

apply.dl = function(op)
  redis.call('HINCRBY', P .. 'dlq', op.class, 1)
  return true
end

-- Undecodable input (the router dead-letters it): only the offset moves.
apply.skip = function(op)
  return false
end

local offsets = {}
local applied = 0
local failed, reason = nil, nil
for i, op in ipairs(ops) do
  local last = offsets[op.t]
  if last == nil then
    last = tonumber(redis.call('HGET', P .. 'offsets', op.t)) or -1
  end
  if op.o > last then
    local fn = apply[op.k]
    if fn == nil then
      failed, reason = i, 'unknown op kind ' .. tostring(op.k)
      break
    end
    local ok, result = pcall(fn, op)
    if not ok then
      -- redis.call raises a table {err = ...}; the view's own checks a string.
      failed, reason = i, (type(result) == 'table' and result.err) or tostring(result)
      break
    end
    if result then
      applied = applied + 1
    end
    offsets[op.t] = op.o
  end
end
for tp, o in pairs(offsets) do
  redis.call('HSET', P .. 'offsets', tp, d(o))
end
if failed then
  return {applied, failed, reason}
end
return {applied}
