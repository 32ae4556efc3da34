-- wrk script for `make bench`: `wrk -t1 -c64 -d5s -s wrk_urls.lua http://127.0.0.1:PORT/ -- PATHS`
-- cycles through the request paths in PATHS (one a line), counts answers that are not
-- 3xx, and prints one line `BENCH_RESULT {json}` that loadtest/bench.py parses.

local requests = {}
local position = 0
local threads = {}

-- Read by done() through thread:get, so it has to be a global of each thread's state.
non_3xx = 0

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   -- a line is a path, then optional tab-separated "Name: value" headers
   for line in io.lines(args[1]) do
      if line ~= "" then
         local fields = {}
         for field in string.gmatch(line, "[^\t]+") do
            table.insert(fields, field)
         end
         local headers = {}
         for i = 2, #fields do
            local name, value = string.match(fields[i], "^([^:]+):%s*(.*)$")
            headers[name] = value
         end
         table.insert(requests, wrk.format("GET", fields[1], headers))
      end
   end
   if #requests == 0 then
      error("no request paths in " .. tostring(args[1]))
   end
end

function request()
   position = position % #requests + 1
   return requests[position]
end

function response(status, headers, body)
   if status < 300 or status > 399 then
      non_3xx = non_3xx + 1
   end
end

function done(summary, latency, _)
   local non_3xx_total = 0
   for _, thread in ipairs(threads) do
      non_3xx_total = non_3xx_total + thread:get("non_3xx")
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
         .. '"non_3xx": %d, "socket_errors": %d, "timeouts": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      non_3xx_total, errors.connect + errors.read + errors.write, errors.timeout
   ))
end
