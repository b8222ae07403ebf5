#!/usr/bin/env bash
# bench/http2-ab.sh: the edge's two HTTP/2 servers side by side, one binary: `http2: fast`
# (edge/h2) and `http2: std` (net/http), each edge on its own address in front of one
# reference origin, over TLS with the edge's development certificate. For each object size and
# round it runs h2load on cache hits against each edge in turn and prints requests/s, the 2xx
# count and the edge's CPU ticks (/proc/PID/stat, user + system) over the run, from which CPU
# per request follows. It installs h2load (nghttp2-client) and curl from Debian if missing.
#
# Usage: bench/http2-ab.sh [seconds per run (default 4)] [connections (default 64)]
# SIZES (default "1024 16384") and ROUNDS (default 2) pick the cases.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-4}
CONNS=${2:-64}
SIZES=${SIZES:-1024 16384}
ROUNDS=${ROUNDS:-2}
source bench/ab-lib.sh
ab_need h2load nghttp2-client curl curl
go build -o "$W/meridian" .
ab_origin "$W/meridian"
declare -A ADDR=([fast]=127.0.0.71 [std]=127.0.0.72)
for v in fast std; do
  ab_edge $v "$W/meridian" "${ADDR[$v]}" "http2: $v"
done
for round in $(seq "$ROUNDS"); do
  for size in $SIZES; do
    for v in fast std; do
      url="https://${ADDR[$v]}:18443/hit/$size?size=$size&cc=max-age%3D3600"
      for _ in 1 2; do curl -sk -o /dev/null -H "Host: bench.local" "$url"; done # stored, then a hit
      c0=$(ab_cpu "${PID[$v]}")
      out=$(h2load -D "$DUR" -c "$CONNS" -m 10 -t 1 -H ":authority: bench.local" "$url" 2>&1)
      c1=$(ab_cpu "${PID[$v]}")
      rps=$(awk '/^finished in/ {print $4}' <<<"$out")
      ok=$(awk '/^status codes:/ {print $3}' <<<"$out")
      printf 'round %d size %-8s %-4s %10s req/s  2xx %8s  CPU %6s us/req\n' "$round" "$size" "$v" "$rps" "$ok" "$(ab_us_per $((c1 - c0)) "$ok")"
    done
  done
done
