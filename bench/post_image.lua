-- wrk script: every request POSTs one image (the file named by BENCH_IMAGE) as a multipart upload in
-- the form field "file"; when the run ends, one JSON line with the counts and latency percentiles.
local path = assert(os.getenv("BENCH_IMAGE"), "set BENCH_IMAGE to the image file to upload")
local file = assert(io.open(path, "rb"))
local image = file:read("*a")
file:close()
local boundary = "cnnservebenchboundary"
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.body = "--" .. boundary .. "\r\n"
  .. 'Content-Disposition: form-data; name="file"; filename="image.png"\r\n'
  .. "Content-Type: image/png\r\n\r\n" .. image .. "\r\n--" .. boundary .. "--\r\n"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "microseconds": %d, "errors": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
