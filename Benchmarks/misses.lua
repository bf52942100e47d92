-- wrk script for backup.sh: pinned util/Echo calls whose inputs are all different and compress
-- poorly (a counter, then $BENCH_INPUT_BYTES of random letters taken at a random place in a
-- fixed 1 MiB of them), so every call is a miss whose answer is stored at nearly its size.
local counter = 0
local id = 0
local size = tonumber(os.getenv("BENCH_INPUT_BYTES") or "65536")
local letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
local pool
function setup(thread) id = id + 1; thread:set("id", id) end
function init(args)
  math.randomseed(id * 7919 + os.time())
  local parts = {}
  for i = 1, 1048576 do local k = math.random(1, #letters); parts[i] = letters:sub(k, k) end
  pool = table.concat(parts)
end
request = function()
  counter = counter + 1
  local at = math.random(1, #pool - size)
  return wrk.format("POST", nil, {["Authorization"] = os.getenv("BENCH_AUTH"), ["Content-Type"] = "application/json"},
                    '"' .. id .. "-" .. counter .. "-" .. pool:sub(at, at + size - 1) .. '"')
end
