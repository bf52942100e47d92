-- wrk script: a JSON POST with a key from $BENCH_AUTH; the body is $BENCH_BODY, by default the
-- 30-byte JSON of shared/bench/post.lua.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"input":"Hello HAL","n":9000}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
