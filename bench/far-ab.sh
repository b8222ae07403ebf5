#!/usr/bin/env bash
# bench/far-ab.sh: two revisions of the edge side by side on unique-URL misses from an origin
# that answers after DELAY (default 20ms), as one across a WAN does: every miss then runs
# longer than edge/http1's 5 ms watchDelay, which loopback misses (about 4 ms at this machine's
# best) mostly do not. The origin is the reference origin (`meridian origin`, delay=, size=,
# cc=); each edge has the default config (max_bytes 1 GiB) and is started afresh, empty, for
# each run; the two run in turn, their order swapped every other round (wrk -t1 -c64, every
# request a URL never asked before). Each line gives requests/s and the edge's CPU
# microseconds per request (/proc/PID/stat). The rate is bounded by the delay (64 connections /
# DELAY), so compare CPU per request, not requests/s. It installs wrk and curl if missing.
#
# Usage: bench/far-ab.sh BASE [HEAD]   (git revisions; HEAD defaults to the work tree)
# DELAY (default 20ms), DUR (seconds per run, default 6), ROUNDS (default 4), SIZE (bytes,
# default 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?usage: bench/far-ab.sh BASE [HEAD]}
HEAD=${2:-}
DELAY=${DELAY:-20ms}
DUR=${DUR:-6}
ROUNDS=${ROUNDS:-4}
SIZE=${SIZE:-1024}
source bench/ab-lib.sh
ab_need wrk wrk curl curl
ab_build "$BASE" base
ab_build "$HEAD" head
ab_origin "$W/meridian.head"
for _ in $(seq 50); do curl -s -o /dev/null "http://$ORIGIN/x" && break; sleep 0.1; done

cat >"$W/unique.lua" <<LUA
-- Every request a URL never asked before, answered by the origin after $DELAY.
function init(args)
  run, counter = args[1], 0
end
function request()
  counter = counter + 1
  return wrk.format("GET", "/u/" .. run .. "-" .. counter .. "?delay=$DELAY&size=$SIZE&cc=max-age%3D3600", {["Host"] = "bench.local"})
end
LUA

ADDR=127.0.0.85
echo "origin delay $DELAY, $SIZE-byte objects; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  order="base head"
  if ((round % 2 == 0)); then order="head base"; fi
  for v in $order; do
    ab_edge "$v" "$W/meridian.$v" "$ADDR"
    c0=$(ab_cpu "${PID[$v]}")
    wrk -t1 -c64 -d"${DUR}s" -s "$W/unique.lua" "http://$ADDR:18080/" -- "$v-$round-$RANDOM" >"$W/wrk.txt"
    c1=$(ab_cpu "${PID[$v]}")
    kill "${PID[$v]}"
    wait "${PID[$v]}" 2>/dev/null || true
    reqs=$(awk '/requests in/ {print $1}' "$W/wrk.txt")
    rps=$(awk '/Requests\/sec/ {print $2}' "$W/wrk.txt")
    printf 'round %d %-4s %9s req/s  CPU %s us/req\n' "$round" "$v" "$rps" "$(ab_us_per $((c1 - c0)) "$reqs")"
  done
done
