-- wrk script: the 30-byte JSON POST of shared/bench/post.lua, with a key from $BENCH_AUTH.
wrk.method = "POST"
wrk.body = '{"input":"Hello HAL","n":9000}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
