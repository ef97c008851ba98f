-- POST /api/v1/auth/signup with new addresses (issue 14), each request from another client
-- IP through the trusted proxy. LK_RUN makes the addresses unique across runs.
local run = os.getenv("LK_RUN")
local password = os.getenv("LK_PASSWORD")
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  i = 0
end
request = function()
  i = i + 1
  local body = '{"email":"new-' .. run .. '-' .. tid .. '-' .. i .. '@bench.example","password":"' .. password .. '"}'
  local ip = "10." .. (i % 250) .. "." .. (math.floor(i / 250) % 250) .. "." .. (100 + (tid or 0))
  return wrk.format("POST", "/api/v1/auth/signup", {["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip}, body)
end
