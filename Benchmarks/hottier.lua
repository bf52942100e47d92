-- wrk script for hottier.sh: pinned util/Echo calls whose inputs are all different (a counter per
-- thread and connection, padded with "x" to $BENCH_INPUT_BYTES), so every call is a miss that is
-- stored, in SQLite and in the hot tier: the tier fills, then evicts.
local counter = 0
local id = 0
local pad = string.rep("x", tonumber(os.getenv("BENCH_INPUT_BYTES") or "100"))
function setup(thread) id = id + 1; thread:set("id", id) end
request = function()
  counter = counter + 1
  return wrk.format("POST", nil, {["Authorization"] = os.getenv("BENCH_AUTH"), ["Content-Type"] = "application/json"},
                    '"' .. id .. "-" .. counter .. "-" .. pad .. '"')
end
