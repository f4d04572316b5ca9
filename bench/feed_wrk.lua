-- wrk script of bench/feed.py: GET one path, rotating the bearer token over many users.
--
--   wrk -t1 -c64 -d15s --latency -s bench/feed_wrk.lua URL -- TOKENS_FILE [PATH] [DELAY_MS]
--
-- TOKENS_FILE holds one access token a line; each request takes the next one, so
-- the load spreads over every user (per-user caches, rate limits and refresh
-- coalescing behave as with real traffic). PATH defaults to /v1/feed?limit=20.
-- DELAY_MS paces each connection: before each request it waits a random time with
-- that mean (exponential, so connections do not fall into step), which holds the
-- whole run near connections * 1000 / (DELAY_MS + latency) requests a second.
-- done() prints one line "BENCH {json}" with the totals, latencies in microseconds.

local tokens = {}
local headers = {}
local path = "/v1/feed?limit=20"
local n = 0
local i = 0
local mean_delay = 0

function init(args)
  local file = args[1]
  if file then
    for line in io.lines(file) do
      if #line > 0 then
        tokens[#tokens + 1] = "Bearer " .. line
      end
    end
  end
  if args[2] then
    path = args[2]
  end
  if args[3] then
    mean_delay = tonumber(args[3])
  end
  n = #tokens
  if n > 0 then
    math.randomseed(os.time() + math.floor(os.clock() * 1e6))
    i = math.random(n) - 1
  end
end

function delay()
  if mean_delay <= 0 then
    return 0
  end
  return math.floor(-mean_delay * math.log(1 - math.random()) + 0.5)
end

function request()
  if n == 0 then
    return wrk.format("GET", path)
  end
  i = i % n + 1
  headers["Authorization"] = tokens[i]
  return wrk.format("GET", path, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
