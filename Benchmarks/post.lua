-- wrk script: a JSON POST with a key from $BENCH_AUTH; the body is $BENCH_BODY, by default the
-- 30-byte JSON of shared/bench/post.lua. With $BENCH_DELAY_MS set, each connection waits about
-- that many milliseconds after an answer before its next call (a paced load rather than a
-- saturating one): a random wait from half to one and a half times it, so the connections do not
-- call in step. With a fixed wait they would: all start at once, so all would call at once, every
-- wait, and p99 would time bursts of CONNS calls at once rather than the load's mean rate.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"input":"Hello HAL","n":9000}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pause then
  function init(args) math.randomseed(os.time() + math.floor(os.clock() * 1e6)) end
  function delay() return math.floor(pause * (0.5 + math.random()) + 0.5) end
end
