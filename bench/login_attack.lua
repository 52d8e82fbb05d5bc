-- wrk script of the login-under-attack benchmark (bench/login_attack.py): every request is
-- GET /token with Basic credentials whose password is new (a counter), for the account(s) named
-- in BENCH_ACCOUNTS (comma-separated, taken in turn); done() prints the answers by status.
local accounts = {}
for name in string.gmatch(os.getenv("BENCH_ACCOUNTS") or "nobody", "[^,]+") do accounts[#accounts + 1] = name end
local path = os.getenv("BENCH_PATH") or "/token?service=lading"
local prefix = os.getenv("BENCH_SEED") or "guess"
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = 4 - (b and 0 or 1) - (c and 0 or 1)
    for k = 1, 4 do
      if k <= chars then
        local index = math.floor(n / 2 ^ (6 * (4 - k))) % 64
        out[#out + 1] = alphabet:sub(index + 1, index + 1)
      else
        out[#out + 1] = "="
      end
    end
  end
  return table.concat(out)
end

local counter = 0
statuses = {}  -- global: done() reads it from the thread with thread:get

request = function()
  counter = counter + 1
  local account = accounts[(counter % #accounts) + 1]
  local credentials = base64(account .. ":" .. prefix .. "-" .. counter)
  return wrk.format("GET", path, {["Authorization"] = "Basic " .. credentials})
end

response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local threads = {}
setup = function(thread) threads[#threads + 1] = thread end

done = function(summary, latency, requests)
  local parts = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for status, count in pairs(counts) do parts[#parts + 1] = string.format('"%d":%d', status, count) end
  end
  local e = summary.errors
  io.write(string.format('BENCH-ATTACK {"requests":%d,"errors":%d,"statuses":{%s}}\n', summary.requests,
    e.connect + e.read + e.write + e.timeout, table.concat(parts, ",")))
end
