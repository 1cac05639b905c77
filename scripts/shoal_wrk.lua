-- wrk script for shoal's HTTP API, the counterpart of ../shared/bench/etcd_wrk.lua.
-- usage: wrk -t2 -c50 -d20s -s shoal_wrk.lua http://127.0.0.1:7101 -- <put|get|get_stale> [nkeys] [valsize] [keyfile]
-- Keys "bench-key-%06d" uniformly at random from [0, nkeys); values are valsize bytes.
-- keyfile (optional): one key number per line; only those keys are used (a leader-routed
-- run gives each wrk the keys whose shard the node it targets leads).
local reqs, nreq
function init(args)
  local op = args[1] or "put"
  local nkeys = tonumber(args[2] or "100000")
  local vsize = tonumber(args[3] or "100")
  math.randomseed(os.time() * 1000 + math.random(1000000))
  local val = string.rep("v", vsize)
  local numbers = {}
  if args[4] then
    for line in io.lines(args[4]) do
      numbers[#numbers + 1] = tonumber(line)
    end
  else
    for i = 0, nkeys - 1 do
      numbers[#numbers + 1] = i
    end
  end
  reqs = {}
  for n, i in ipairs(numbers) do
    local path = string.format("/v1/kv/bench-key-%06d", i)
    if op == "put" then
      reqs[n] = wrk.format("PUT", path, nil, val)
    elseif op == "get_stale" then
      reqs[n] = wrk.format("GET", path .. "?consistency=stale")
    else
      reqs[n] = wrk.format("GET", path)
    end
  end
  nreq = #numbers
end

function request()
  return reqs[math.random(nreq)]
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d secs=%.1f rps=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f mean_ms=%.3f errors(connect=%d read=%d write=%d status=%d timeout=%d)\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000,
    e.connect, e.read, e.write, e.status, e.timeout))
end
