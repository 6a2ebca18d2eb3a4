"""``Store.claim_next`` for the Redis store: one Lua script, atomic on the server.

ARGV: prefix, owner, lease (microseconds), holder, session, explicit ("1"/"0"), machine
("" if none), max_attempts, the session's score in the owner index, then ids to skip. Walks the due part of <prefix>:queue (ready and
claimed ids by when each is claimable: a ready one when it changed or its backoff ends, a
claimed one when its lease ends) from the start up to now, so live claims are never walked
past, and claims the first claimable id, writing the record, its indexes and its audit events
as RedisStore._write and the shared rules would. A live claim under the owner's name that a
restarted owner takes back (from <prefix>:owner:<owner>, read either side of this session's
score, so this session's own claims cost nothing) goes first if it was claimed before that
one became due. Returns nil, {"claimed", id, version, lease, token, attempt}, or {"special",
id} for a live claim taken back or one out of attempts, which the caller claims through the
exact rules. An entry found in the due part that is not due (scored by an older
version, by its last change) is scored by when it is due, once.
"""

from __future__ import annotations

__all__ = ["CLAIM_NEXT"]

CLAIM_NEXT = """
local prefix, owner, lease_us, holder = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local session, explicit, machine = ARGV[5], ARGV[6] == "1", ARGV[7]
local max_attempts, mine = tonumber(ARGV[8]), tonumber(ARGV[9])
local skip = {}
for i = 10, #ARGV do skip[ARGV[i]] = true end

local function civil(days)  -- days since 1970-01-01 to year, month, day (proleptic Gregorian)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

-- Microseconds since the epoch as ISO text: the record's form, or the audit trail's ("Z").
local function iso(us, audit)
  local s = math.floor(us / 1000000)
  local frac = us - s * 1000000
  local days = math.floor(s / 86400)
  local rem = s - days * 86400
  local y, m, d = civil(days)
  local text = string.format("%04d-%02d-%02dT%02d:%02d:%02d", y, m, d, math.floor(rem / 3600),
    math.floor((rem % 3600) / 60), rem % 60)
  if not audit then return text .. string.format(".%06d+00:00", frac) end
  if frac == 0 then return text .. "Z" end
  return text .. string.format(".%06dZ", frac)
end

local function int(n) return string.format("%.0f", n) end

local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local queue, leases = prefix .. ":queue", prefix .. ":leases"

-- A claim's score in the owner index: its holder's session hashed (codec.session_score).
local function session_score(held)
  return tonumber(string.sub(redis.sha1hex(held:match("^([^/]*)") or ""), 1, 13), 16)
end

-- The live claim under the owner's name a restarted owner takes back, claimed first: read
-- either side of this session's score, so this session's own claims are not read.
local owners = prefix .. ":owner:" .. owner
local back, back_at = nil, nil
local others = redis.call("ZRANGEBYSCORE", owners, "-inf", "(" .. int(mine))
for _, id in ipairs(redis.call("ZRANGEBYSCORE", owners, "(" .. int(mine), "+inf")) do
  others[#others + 1] = id
end
for _, id in ipairs(others) do
  if not skip[id] then
    local f = redis.call("HMGET", prefix .. ":c:" .. id, "status", "holder", "updated_at")
    local held = f[2] or ""
    local until_ = tonumber(redis.call("ZSCORE", leases, id))
    if f[1] == "claimed" and (until_ == nil or until_ > now) and held ~= ""
        and held:match("^([^/]*)") ~= session
        and (explicit or (machine ~= "" and held:match("^[^/]*/([^/]*)") == machine))
        and (back_at == nil or f[3] < back_at) then
      back, back_at = id, f[3]
    end
    -- scored by an older version (by creation): score it by its holder's session, once
    local scored = held ~= "" and session_score(held)
    if scored and tonumber(redis.call("ZSCORE", owners, id)) ~= scored then
      redis.call("ZADD", owners, scored, id)
    end
  end
end

local start = 0
while true do
  local ids, step = nil, 1
  if back then  -- its claim time is compared with when each entry became due
    ids, step = redis.call("ZRANGEBYSCORE", queue, "-inf", int(now), "WITHSCORES", "LIMIT",
      start, 16), 2
  else
    ids = redis.call("ZRANGEBYSCORE", queue, "-inf", int(now), "LIMIT", start, 16)
  end
  if #ids == 0 then
    if back then return {"special", back} end
    return nil
  end
  for i = 1, #ids, step do
    local id = ids[i]
    if back and back_at < iso(tonumber(ids[i + 1])) then return {"special", back} end
    local key = prefix .. ":c:" .. id
    local f = redis.call("HMGET", key, "status", "claimed_by", "holder", "attempts", "fence",
      "version", "run_id")
    local status, held_by = f[1], f[2]
    local until_ = tonumber(redis.call("ZSCORE", leases, id))
    local pick, special = false, false
    if skip[id] then
      start = start + 1
    elseif status == "ready" then
      pick = until_ == nil or until_ <= now
      if not pick then redis.call("ZADD", queue, int(until_), id) end  -- due at its backoff
    elseif status == "claimed" then
      pick = until_ ~= nil and until_ <= now
      special = pick and tonumber(f[4] or "0") >= max_attempts
      if not pick and until_ ~= nil then redis.call("ZADD", queue, int(until_), id) end
      if not pick and until_ == nil then start = start + 1 end
    else
      redis.call("ZREM", queue, id)
    end
    if special then return {"special", id} end
    if pick then
      local version = tonumber(f[6]) + 1
      local token = tonumber(f[5] or "0") + 1
      local attempt = tonumber(f[4] or "0") + 1
      local lease = now + lease_us
      local run_id = f[7]
      redis.call("HSET", key, "version", version, "status", "claimed", "updated_at", iso(now),
        "claimed_by", owner, "lease_until", iso(lease), "fence", token, "attempts", attempt,
        "holder", holder)
      redis.call("HDEL", key, "claim_token", "not_before", "output")
      local created = redis.call("ZSCORE", prefix .. ":all", id)
      redis.call("ZREM", prefix .. ":status:" .. status, id)
      redis.call("ZADD", prefix .. ":status:claimed", created, id)
      redis.call("ZADD", queue, int(lease), id)
      redis.call("ZADD", leases, int(lease), id)
      if status == "claimed" and held_by then
        redis.call("ZREM", prefix .. ":owner:" .. held_by, id)
      end
      redis.call("ZADD", owners, mine, id)
      local audit = prefix .. ":audit:" .. run_id
      if status == "claimed" then
        redis.call("RPUSH", audit, cjson.encode({run_id = run_id, continuation_id = id,
          kind = "expired", at = iso(now, true), actor = owner,
          detail = {owner = held_by, lease_until = iso(until_, true)}}))
      end
      redis.call("RPUSH", audit, cjson.encode({run_id = run_id, continuation_id = id,
        kind = "claimed", at = iso(now, true), actor = owner,
        detail = {lease_until = iso(lease, true), token = token, attempt = attempt}}))
      return {"claimed", id, version, int(lease), token, attempt}
    end
  end
end
"""
