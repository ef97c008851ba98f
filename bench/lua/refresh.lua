-- POST /api/v1/auth/refresh. Each thread has one connection and its own slice of sessions;
-- it cycles through them and keeps each session's newest refresh token from the answer,
-- so every request is a real rotation (never the grace path).
local threads = {}
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  local nthreads = tonumber(os.getenv("LK_THREADS"))
  tokens = {}
  local idx = 0
  for line in io.lines(os.getenv("LK_TOKENS_FILE")) do
    if idx % nthreads == tid then table.insert(tokens, line) end
    idx = idx + 1
  end
  cur = 0
end
request = function()
  cur = (cur % #tokens) + 1
  return wrk.format("POST", "/api/v1/auth/refresh", {["Cookie"] = "refresh_token=" .. tokens[cur]}, nil)
end
response = function(status, headers, body)
  local sc = headers["set-cookie"] or headers["Set-Cookie"]
  if status == 200 and sc then
    local t = string.match(sc, "refresh_token=([%w_%-]+)")
    if t then tokens[cur] = t end
  end
end
