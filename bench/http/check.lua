-- wrk script: POST /v1/check consumes, spread over many customers.
-- Environment: TOLLGATE_KEY (a server key), BENCH_CUSTOMERS (how many
-- customers bench-0 .. bench-N-1 exist; default 1000), BENCH_CONSUME
-- ("true": consume, the default; "false": dry-run checks, which write nothing).
local key = os.getenv("TOLLGATE_KEY") or ""
local customers = tonumber(os.getenv("BENCH_CUSTOMERS") or "1000")
local consume = os.getenv("BENCH_CONSUME") or "true"
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer " .. key,
}

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000)
end

function request()
  local body = string.format(
    '{"customer":"bench-%d","feature":"queries_per_month","quantity":1,"consume":%s}',
    math.random(0, customers - 1), consume)
  return wrk.format("POST", "/v1/check", headers, body)
end
