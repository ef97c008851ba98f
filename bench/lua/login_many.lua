-- POST /api/v1/auth/login over many seeded users (issue 14: scale-{i}@bench.example, one
-- shared password), each request from another client IP through the trusted proxy, so the
-- rate limits are not what is measured. LK_USERS: how many users to cycle over.
local n = tonumber(os.getenv("LK_USERS"))
local password = os.getenv("LK_PASSWORD")
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  i = (tid or 0) * 104729
end
request = function()
  i = i + 7919
  local body = '{"email":"scale-' .. (i % n) .. '@bench.example","password":"' .. password .. '"}'
  local ip = "10." .. (i % 250) .. "." .. (math.floor(i / 250) % 250) .. "." .. ((tid or 0) + 1)
  return wrk.format("POST", "/api/v1/auth/login", {["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip}, body)
end
