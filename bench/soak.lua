-- Soak load for wrk: POSTs captured AdmissionReviews to /validate, rotating through the
-- files listed (one path per line) in $BODIES, each connection pausing $DELAY_MS between
-- requests so the rate stays at the chosen share of capacity.
local bodies = {}
for path in io.lines(os.getenv("BODIES")) do
  local f = assert(io.open(path, "r"))
  bodies[#bodies + 1] = f:read("*a")
  f:close()
end
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])
end

delay = function()
  return delay_ms
end
