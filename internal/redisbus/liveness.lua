-- The liveness round of one node. Every key is built here from the prefix
-- ARGV[1] ("P{n}:"): all share the {n} slot (KEYS[1] = P{n}:gen routes the
-- script in Cluster). No shebang: the script is a write, so it waits out
-- CLIENT PAUSE WRITE instead of judging leases nobody could renew.
--
-- ARGV: 1 prefix, 2 mode (reg | tick | leave), 3 my id, 4 gen (reg: a
-- proposal), 5 lo, 6 counter (my lease must hold a value in [lo, counter)),
-- 7 ttl ms, 8 registration info, 9 node name, 10 my previous id ("" none),
-- 11 ids missing at my last round ("\n"-separated), 12 how (probe | event),
-- 13 the other ids registered at my last round ("\n"-separated).
--
-- Returns {"RESET"} (gen changed: Redis lost its data), {"DEAD"} (I was
-- reaped), {"ROLLBACK"} (my lease holds a value I never wrote), or
-- {status, reaped, live, suspects, retired, gen, announced}: status OK or
-- SUSPECT (more than half the peers vanished at once: they are reaped only
-- if still missing at my next round), reaped = ids I tombed (I clean them),
-- live = the registered ids after the round, retired = my previous
-- incarnations I tombed at registration, announced = the ids of ARGV[13]
-- no longer registered whose end was announced (a leave's bye, a restart's
-- gone: their tomb says so), so that a round that comes before the
-- announcement reaches me does not count a deploy as a death.
if redis.replicate_commands then redis.replicate_commands() end
local p, mode, me = ARGV[1], ARGV[2], ARGV[3]
local ttl = tonumber(ARGV[7])
local ctl, reg = p .. 'ctl', p .. 'reg'

-- A tomb's value says how the id ended: 'bye' (it left), 'gone' (a new
-- incarnation retired it), '1' (reaped).
local function tomb(id, why)
  redis.call('SET', p .. 'tomb:' .. id, why, 'PX', 3600000)
  redis.call('DEL', p .. 'lease:' .. id)
  redis.call('HDEL', reg, id)
end

if mode == 'leave' then
  redis.call('PUBLISH', ctl, 'bye ' .. me)
  -- Already reaped (I had not learnt it yet): the tomb keeps saying so.
  if redis.call('EXISTS', p .. 'tomb:' .. me) == 0 then tomb(me, 'bye') end
  return {'OK'}
end

local g
local retired = {}
if mode == 'reg' then
  redis.call('SET', KEYS[1], ARGV[4], 'NX')
  g = redis.call('GET', KEYS[1])
  local function retire(old)
    if old and old ~= '' and old ~= me and redis.call('EXISTS', p .. 'tomb:' .. old) == 0 and
        (redis.call('EXISTS', p .. 'lease:' .. old) == 1 or redis.call('HEXISTS', reg, old) == 1) then
      tomb(old, 'gone')
      redis.call('PUBLISH', ctl, 'gone ' .. old)
      retired[#retired + 1] = old
    end
  end
  retire(ARGV[10])
  local last = redis.call('GET', p .. 'last:' .. ARGV[9])
  if last ~= ARGV[10] then retire(last) end
  redis.call('SET', p .. 'last:' .. ARGV[9], me, 'PX', 86400000)
  redis.call('PUBLISH', ctl, 'hello ' .. me)
else
  g = redis.call('GET', KEYS[1])
  if g ~= ARGV[4] then return {'RESET'} end
  if redis.call('EXISTS', p .. 'tomb:' .. me) == 1 then return {'DEAD'} end
  -- Reaped so long ago that the tomb expired (1 h), or the registry was
  -- restored without me: dead all the same, peers forgot this id.
  if redis.call('HEXISTS', reg, me) == 0 then return {'DEAD'} end
  local v = redis.call('GET', p .. 'lease:' .. me)
  if v then
    v = tonumber(v)
    if v == nil or v < tonumber(ARGV[5]) or v >= tonumber(ARGV[6]) then return {'ROLLBACK'} end
  end
end

redis.call('SET', p .. 'lease:' .. me, ARGV[6], 'PX', ttl)
redis.call('HSET', reg, me, ARGV[8])
-- last:<node> lives a day past the last round of its node.
if mode == 'tick' then
  redis.call('PEXPIRE', p .. 'last:' .. ARGV[9], 86400000)
  -- rooms:<me> too: one nobody reaped cannot stay forever.
  redis.call('PEXPIRE', p .. 'rooms:' .. me, 86400000)
end

-- The judgement clock: when no node ran a round for more than ttl/2 (Redis
-- paused, stopped or unreachable for everyone), nobody could renew either:
-- reap nobody for one ttl, so every node gets a chance to renew first.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', p .. 'clock') or '0') or 0
if now - last > ttl / 2 then
  redis.call('SET', p .. 'grace', '1', 'PX', ttl)
end
redis.call('SET', p .. 'clock', tostring(now), 'PX', ttl * 4)
local grace = redis.call('EXISTS', p .. 'grace') == 1

-- Probe every other registered lease: EXISTS forces Redis to expire it
-- (and emit its expired event).
local cand, others = {}, 0
for _, id in ipairs(redis.call('HKEYS', reg)) do
  if id ~= me then
    others = others + 1
    if redis.call('EXISTS', p .. 'lease:' .. id) == 0 then
      if redis.call('EXISTS', p .. 'tomb:' .. id) == 1 then
        redis.call('HDEL', reg, id)
      else
        cand[#cand + 1] = id
      end
    end
  end
end

local reaped, suspects = {}, {}
if not grace then
  local mass = #cand > 1 and #cand * 2 > others
  local seen = {}
  for id in string.gmatch(ARGV[11], '[^\n]+') do seen[id] = true end
  for _, id in ipairs(cand) do
    if mass and not seen[id] then
      suspects[#suspects + 1] = id
    else
      tomb(id, '1')
      redis.call('PUBLISH', ctl, 'dead ' .. id .. ' ' .. ARGV[12])
      reaped[#reaped + 1] = id
    end
  end
end

local status = 'OK'
if #suspects > 0 then status = 'SUSPECT' end
local announced = {}
for id in string.gmatch(ARGV[13] or '', '[^\n]+') do
  if redis.call('HEXISTS', reg, id) == 0 then
    local why = redis.call('GET', p .. 'tomb:' .. id)
    if why == 'bye' or why == 'gone' then announced[#announced + 1] = id end
  end
end
return {status, reaped, redis.call('HKEYS', reg), suspects, retired, g, announced}
