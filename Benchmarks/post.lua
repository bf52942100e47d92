-- wrk script: a JSON POST with a key from $BENCH_AUTH; the body is $BENCH_BODY, by default the
-- 30-byte JSON of shared/bench/post.lua. With $BENCH_DELAY_MS set, each connection waits that many
-- milliseconds after an answer before its next call (a paced load rather than a saturating one).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"input":"Hello HAL","n":9000}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pause then
  function delay() return pause end
end
