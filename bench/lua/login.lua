-- POST /api/v1/auth/login cycling over LK_USERS pre-created accounts, each request from a
-- different client IP (the server trusts 127.0.0.1 as a proxy), so the per-IP and
-- per-email limits are not what is measured.
local n = tonumber(os.getenv("LK_USERS"))
local password = os.getenv("LK_PASSWORD")
local i = 0
local thread_id = 0
function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end
function init(args)
  i = (tid or 0) * 7919
end
request = function()
  i = i + 1
  local body = '{"email":"bench' .. (i % n) .. '@bench.example","password":"' .. password .. '"}'
  local ip = "10." .. (i % 250) .. "." .. (math.floor(i / 250) % 250) .. "." .. ((tid or 0) + 1)
  return wrk.format("POST", "/api/v1/auth/login", {["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip}, body)
end
