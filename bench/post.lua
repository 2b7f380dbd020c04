-- wrk script: POST one fixed body (read from the file named after "--") to the URL's path, and
-- print the run's summary as one JSON line for bench/harness.py.
--
--   wrk -t1 -c32 -d10s -s bench/post.lua http://127.0.0.1:PORT/e/KEY -- body.json
--
-- No request() function is defined, so wrk formats the request once and resends it (its fast
-- static path); init() only has to fill in method, headers and body.

function init(args)
   local file = assert(io.open(args[1], "rb"))
   wrk.body = file:read("*a")
   file:close()
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
