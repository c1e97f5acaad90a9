-- Cycle through a file of "PATH<TAB>BODY" lines, one POST per line (a GET when BODY is empty),
-- on kept-alive connections.
-- Usage: wrk -t1 -c32 -d10s -s wrk_cycle.lua http://host:port -- requests.tsv ["Name: value" ...]
-- Every further argument is a header sent on every request (the production configuration's
-- "Authorization: Basic ...").
local requests = {}
local index = 0

function init(args)
  local file = assert(io.open(args[1], "r"))
  local headers = { ["Content-Type"] = "application/json" }
  for i = 2, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    if name then headers[name] = value end
  end
  for line in file:lines() do
    local path, body = line:match("^([^\t]*)\t(.*)$")
    if body == "" then
      requests[#requests + 1] = wrk.format("GET", path, headers)
    else
      requests[#requests + 1] = wrk.format("POST", path, headers, body)
    end
  end
  file:close()
  -- threads start at different offsets so they do not hit the same session together
  index = math.random(#requests) - 1
end

function request()
  index = index % #requests + 1
  return requests[index]
end
