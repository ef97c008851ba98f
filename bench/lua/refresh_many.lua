-- POST /api/v1/auth/refresh over many sessions (issue 14). Each thread has its own slice of
-- LK_SESSIONS lines of LK_TOKENS_FILE from line LK_OFFSET (email, access, refresh; tab-separated), cycles through it and keeps each
-- session's newest refresh token, so every request is a real rotation. With LK_RATE set,
-- each connection waits between requests so that the threads together offer about LK_RATE
-- requests per second (closed loop: a slow answer delays that connection's next request,
-- so the achieved rate is printed beside the offered one).
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  local nthreads = tonumber(os.getenv("LK_THREADS"))
  local offset = tonumber(os.getenv("LK_OFFSET") or "0")
  local limit = tonumber(os.getenv("LK_SESSIONS") or "0")
  tokens = {}
  local idx = 0
  for line in io.lines(os.getenv("LK_TOKENS_FILE")) do
    if limit > 0 and idx >= offset + limit then break end
    if idx >= offset and idx % nthreads == tid then
      local _, _, refresh = string.match(line, "^([^\t]+)\t([^\t]+)\t([^\t]+)$")
      table.insert(tokens, refresh)
    end
    idx = idx + 1
  end
  cur = 0
  local rate = tonumber(os.getenv("LK_RATE") or "0")
  local conns = tonumber(os.getenv("LK_CONNS") or "1")
  gap_ms = 0
  if rate > 0 then gap_ms = math.floor(1000 * conns / rate) end
end
delay = function()
  return gap_ms
end
request = function()
  cur = (cur % #tokens) + 1
  return wrk.format("POST", "/api/v1/auth/refresh", {["Cookie"] = "refresh_token=" .. tokens[cur]}, nil)
end
response = function(status, headers, body)
  local sc = headers["set-cookie"] or headers["Set-Cookie"]
  if status == 200 and sc then
    local t = string.match(sc, "refresh_token=([%w_%-%.]+)")
    if t then tokens[cur] = t end
  end
end
