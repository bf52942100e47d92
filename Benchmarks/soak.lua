-- wrk script for Benchmarks/soak.sh: a mix of what teams send, one kind of request after another on
-- each connection: cache hits, misses with fresh inputs (so entries are stored and evicted all the
-- time), pass-through, large answers gzip-compressed, gzip uploads, data writes, reads and
-- listings, upstream faults (an error status, a dropped connection, a slow answer), and the
-- refusals users cause (wrong key, outside the data prefixes, a traversal, a data
-- URI in an input, a failing algorithm). Each request carries X-Request-ID "<kind>.<thread>.<n>";
-- the gateway sends it back, so each answer's status is counted under the kind that asked for it.
-- done() prints one line per kind and status: "soak <kind> <status> <count>".
local key = os.getenv("SOAK_KEY")
local gzipped = (function()
  local f = assert(io.open(os.getenv("SOAK_GZIP_BODY"), "rb"))
  local data = f:read("*a")
  f:close()
  return data
end)()
local file_body = string.rep("soak data 0123456789abcdef\n", 150)   -- about 4 KB

local json = { ["Content-Type"] = "application/json" }
local function with(extra)
  local h = { ["Content-Type"] = "application/json" }
  for k, v in pairs(extra) do h[k] = v end
  return h
end

-- name -> function(n) returning method, path, headers, body
local kinds = {
  { "hit", function(n) return "POST", "/v1/algo/util/Echo/1.0.0", json, '{"input":"soak"}' end },
  { "miss", function(n) return "POST", "/v1/algo/util/Echo/1.0.0", json,
      '{"input":"soak ' .. tid .. " " .. n .. '"}' end },
  { "pass", function(n) return "POST", "/v1/algo/util/Echo", json, '{"input":"soak"}' end },
  { "big_gzip", function(n) return "POST", "/v1/algo/test/Big/1.0.0",
      { ["Content-Type"] = "text/plain", ["Accept-Encoding"] = "gzip" }, tostring(20000 + n % 50) end },
  -- Answers of 64 KiB or more, 40 of them, churning through a hot tier that holds a dozen:
  -- entries leave it while hits still send them (counted under the answer bound until sent).
  { "big_hot", function(n) return "POST", "/v1/algo/test/Big/1.0.0", { ["Content-Type"] = "text/plain" },
      tostring(70000 + n % 40) end },
  { "gzip_upload", function(n) return "POST", "/v1/algo/util/Echo/1.0.0",
      with({ ["Content-Encoding"] = "gzip" }), gzipped end },
  { "no_cache", function(n) return "POST", "/v1/algo/util/Echo/1.0.0",
      with({ ["Cache-Control"] = "no-cache" }), '{"input":"soak"}' end },
  { "put", function(n) return "PUT", "/v1/data/.my/soak/f" .. (n % 100),
      { ["Content-Type"] = "application/octet-stream" }, file_body end },
  { "get", function(n) return "GET", "/v1/data/.my/soak/f" .. ((n - 1) % 100), {}, nil end },   -- the put just before
  { "list", function(n) return "GET", "/v1/data/.my/soak", {}, nil end },
  -- An algorithm's own error is a 200 from Algorithmia, with an "error" field (never cached).
  { "fail", function(n) return "POST", "/v1/algo/test/Fail/1.0.0", json, '"soak"' end },
  -- Upstream faults, asked of the simulator per request (X-Sim-Fault passes through the gateway):
  -- an error status passed on as it is, a connection dropped without an answer, a slow answer.
  { "upstream_500", function(n) return "POST", "/v1/algo/util/Echo", with({ ["X-Sim-Fault"] = "status=500" }),
      '{"input":"soak"}' end },
  { "upstream_drop", function(n) return "POST", "/v1/algo/util/Echo", with({ ["X-Sim-Fault"] = "drop" }),
      '{"input":"soak"}' end },
  { "upstream_slow", function(n) return "POST", "/v1/algo/util/Echo", with({ ["X-Sim-Fault"] = "delay=50" }),
      '{"input":"soak"}' end },
  { "outside_prefix", function(n) return "GET", "/v1/data/.my/other/f", {}, nil end },
  { "traversal", function(n) return "GET", "/v1/data/.my/soak/..%2f..%2fother/f", {}, nil end },
  { "input_ref", function(n) return "POST", "/v1/algo/util/Echo/1.0.0", json, '"data://.my/other/f"' end },
  { "wrong_key", function(n) return "POST", "/v1/algo/util/Echo/1.0.0",
      with({ Authorization = "Simple not-a-key" }), '{"input":"soak"}' end },
}

local threads = {}
local next_tid = 1
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local n = 0
counts = {}

function request()
  n = n + 1
  local kind = kinds[(n % #kinds) + 1]
  local method, path, headers, body = kind[2](n)
  local h = { Authorization = "Simple " .. key, ["X-Request-ID"] = kind[1] .. "." .. tid .. "." .. n }
  for k, v in pairs(headers) do h[k] = v end
  return wrk.format(method, path, h, body)
end

function response(status, headers, body)
  local id = headers["X-Request-ID"] or headers["x-request-id"] or "unknown."
  local kind = id:match("^([%w_]+)%.") or "unknown"
  local label = kind .. " " .. status
  counts[label] = (counts[label] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    for label, count in pairs(c) do total[label] = (total[label] or 0) + count end
  end
  for label, count in pairs(total) do io.write("soak " .. label .. " " .. count .. "\n") end
end
