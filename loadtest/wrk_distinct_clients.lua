-- wrk script: every request comes from a new client address, sent as X-Forwarded-For through
-- a trusted peer, to measure a worker's memory with many distinct clients (README, limits):
-- `wrk -t1 -c32 -d120s -s loadtest/wrk_distinct_clients.lua 'http://127.0.0.1:8000/?video=...'`
-- Addresses run through 10.0.0.0/8 (16.7 million) in order, so none repeats within a run.

local counter = 0

function request()
   counter = counter + 1
   -- wrk runs LuaJIT (Lua 5.1): no bit operators, so the octets come from division
   local address = string.format(
      "10.%d.%d.%d",
      math.floor(counter / 65536) % 256,
      math.floor(counter / 256) % 256,
      counter % 256
   )
   return wrk.format("GET", nil, { ["X-Forwarded-For"] = address })
end
