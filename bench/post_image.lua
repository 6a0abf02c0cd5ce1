-- wrk script: every request POSTs one image (the file named by BENCH_IMAGE) as a multipart upload in
-- the form field "file" -- or, for servers that take another encoding, the ready-made body in the file
-- named by BENCH_BODY with BENCH_CONTENT_TYPE (and BENCH_HEADER "Name: value" if set). When the run
-- ends, one JSON line with the counts and latency percentiles.
local function read(path)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  return data
end
wrk.method = "POST"
local body = os.getenv("BENCH_BODY")
if body then
  wrk.body = read(body)
  wrk.headers["Content-Type"] = assert(os.getenv("BENCH_CONTENT_TYPE"), "set BENCH_CONTENT_TYPE with BENCH_BODY")
  local extra = os.getenv("BENCH_HEADER")
  if extra then
    local name, value = extra:match("^([^:]+):%s*(.*)$")
    wrk.headers[name] = value
  end
else
  local image = read(assert(os.getenv("BENCH_IMAGE"), "set BENCH_IMAGE to the image file to upload"))
  local boundary = "cnnservebenchboundary"
  wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
  wrk.body = "--" .. boundary .. "\r\n"
    .. 'Content-Disposition: form-data; name="file"; filename="image.png"\r\n'
    .. "Content-Type: image/png\r\n\r\n" .. image .. "\r\n--" .. boundary .. "--\r\n"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "microseconds": %d, "errors": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
