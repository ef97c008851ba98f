-- GET /api/v1/me with Authorization: Bearer, round-robin over many users (issue 14): each
-- thread takes every LK_THREADS-th line of LK_TOKENS_FILE (email, access token, refresh
-- token; tab-separated) and cycles through its tokens, so consecutive requests are different
-- users and the per-user caches do not make it one user.
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  local nthreads = tonumber(os.getenv("LK_THREADS"))
  tokens = {}
  local idx = 0
  for line in io.lines(os.getenv("LK_TOKENS_FILE")) do
    if idx % nthreads == tid then
      local _, access = string.match(line, "^([^\t]+)\t([^\t]+)\t")
      table.insert(tokens, access)
    end
    idx = idx + 1
  end
  cur = 0
end
request = function()
  cur = (cur % #tokens) + 1
  return wrk.format("GET", "/api/v1/me", {["Authorization"] = "Bearer " .. tokens[cur]}, nil)
end
