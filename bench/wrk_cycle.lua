-- Cycle through a file of "PATH<TAB>BODY" lines, one POST per line (a GET when BODY is empty),
-- on kept-alive connections.
-- Usage: wrk -t1 -c32 -d10s -s wrk_cycle.lua http://host:port -- requests.tsv
local requests = {}
local index = 0

function init(args)
  local file = assert(io.open(args[1], "r"))
  local headers = { ["Content-Type"] = "application/json" }
  for line in file:lines() do
    local path, body = line:match("^([^\t]*)\t(.*)$")
    if body == "" then
      requests[#requests + 1] = wrk.format("GET", path)
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
