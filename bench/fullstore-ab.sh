#!/usr/bin/env bash
# bench/fullstore-ab.sh: two revisions of the edge side by side at a full store. Each edge
# (default config, max_bytes 1 GiB, its own address, one reference origin) is first filled
# with NOBJ unique 1 KiB objects through its HTTP port (wrk), so the collector has a store's
# worth of objects to mark, then serves cache hits over HTTP/2 (h2load) and HTTP/1.1 (wrk),
# the two edges in turn, for each object size and round. It prints requests/s, the edge's CPU
# per request (/proc/PID/stat) and the collections during the run, then each edge's last
# collection (GODEBUG=gctrace=1): live heap and the collection's wall and CPU time.
# It installs wrk, h2load (nghttp2-client) and curl from Debian if missing.
#
# Usage: bench/fullstore-ab.sh BASE [HEAD]   (git revisions; HEAD defaults to the work tree)
# DUR (seconds per run, default 5), ROUNDS (default 2), NOBJ (default 250000) pick the cases.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?usage: bench/fullstore-ab.sh BASE [HEAD]}
HEAD=${2:-}
DUR=${DUR:-5}
ROUNDS=${ROUNDS:-2}
NOBJ=${NOBJ:-250000}
source bench/ab-lib.sh
ab_need wrk wrk h2load nghttp2-client curl curl
ab_build "$BASE" base
ab_build "$HEAD" head
cat >"$W/fill.lua" <<'LUA'
-- unique 1 KiB objects, one per request, numbered from START, until N answers
local i, done = tonumber(os.getenv("START")), 0
local n = tonumber(os.getenv("N"))
request = function()
  i = i + 1
  return wrk.format("GET", "/obj/" .. i .. "?size=1024&cc=max-age%3D36000", {["Host"] = "bench.local"})
end
response = function()
  done = done + 1
  if done >= n then wrk.thread:stop() end
end
LUA
ab_origin "$W/meridian.head"
declare -A ADDR=([base]=127.0.0.81 [head]=127.0.0.82)
for v in base head; do
  EDGE_ENV=GODEBUG=gctrace=1 ab_edge $v "$W/meridian.$v" "${ADDR[$v]}"
done
gcs() { grep -c '^gc ' "$W/edge-$1.log" || true; }
for v in base head; do
  filled=0 chunk=0
  while ((filled < NOBJ)); do # in 5 s runs: wrk runs its whole duration even once stopped
    chunk=$((chunk + 1))
    out=$(START=$((chunk * 10000000)) N=$((NOBJ - filled)) wrk -t1 -c64 -d5s -s "$W/fill.lua" "http://${ADDR[$v]}:18080" 2>&1)
    filled=$((filled + $(awk '/requests in/ {print $1}' <<<"$out")))
  done
  echo "fill $v: $filled objects, RSS $(awk '/VmRSS/ {print int($2/1024) " MiB"}' "/proc/${PID[$v]}/status")"
done
# run PROTO V SIZE: one load run on a hit, and its line.
run() {
  local proto=$1 v=$2 size=$3 out rps n c0 c1 g0 g1
  local path="/hit/$size?size=$size&cc=max-age%3D3600"
  if [ "$proto" = h2 ]; then
    local url="https://${ADDR[$v]}:18443$path"
    for _ in 1 2; do curl -sk -o /dev/null -H "Host: bench.local" "$url"; done # stored, then a hit
    c0=$(ab_cpu "${PID[$v]}"); g0=$(gcs "$v")
    out=$(h2load -D "$DUR" -c 64 -m 10 -t 1 -H ":authority: bench.local" "$url" 2>&1)
    c1=$(ab_cpu "${PID[$v]}"); g1=$(gcs "$v")
    rps=$(awk '/^finished in/ {print $4}' <<<"$out")
    n=$(awk '/^status codes:/ {print $3}' <<<"$out")
  else
    local url="http://${ADDR[$v]}:18080$path"
    for _ in 1 2; do curl -s -o /dev/null -H "Host: bench.local" "$url"; done
    c0=$(ab_cpu "${PID[$v]}"); g0=$(gcs "$v")
    out=$(wrk -t1 -c64 -d"${DUR}s" -H "Host: bench.local" "$url" 2>&1)
    c1=$(ab_cpu "${PID[$v]}"); g1=$(gcs "$v")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
  fi
  printf '%s round %d size %-6s %-4s %10s req/s  CPU %6s us/req  collections %d\n' "$proto" "$round" "$size" "$v" "$rps" "$(ab_us_per $((c1 - c0)) "$n")" $((g1 - g0))
}
for round in $(seq "$ROUNDS"); do
  for size in 1024 16384; do
    for proto in h2 h1; do
      for v in base head; do run "$proto" "$v" "$size"; done
    done
  done
done
for v in base head; do
  echo "$v last collection: $(grep '^gc ' "$W/edge-$v.log" | tail -1)"
done
