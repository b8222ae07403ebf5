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
need=()
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
go build -o "$WORK/meridian" .
ORIGIN=127.0.0.70:18170
"$WORK/meridian" origin --listen $ORIGIN 2>"$WORK/origin.log" & PIDS+=($!)
declare -A ADDR=([fast]=127.0.0.71 [std]=127.0.0.72) PID=()
for v in fast std; do
  cat >"$WORK/edge-$v.yaml" <<YAML
pop: bench
node: e-$v
listen: ${ADDR[$v]}:18080
https_listen: ${ADDR[$v]}:18443
tls: {dev: true, disable_http3: true}
http2: $v
admin_listen: "off"
cache: {max_bytes: 1073741824}
hosts:
  - host: bench.local
    origin: http://$ORIGIN
YAML
  "$WORK/meridian" edge --config "$WORK/edge-$v.yaml" 2>"$WORK/edge-$v.log" & PID[$v]=$!
  PIDS+=(${PID[$v]})
done
for v in fast std; do
  for _ in $(seq 50); do curl -sk -o /dev/null "https://${ADDR[$v]}:18443/" && break; sleep 0.1; done
done
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
clk=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for size in $SIZES; do
    for v in fast std; do
      url="https://${ADDR[$v]}:18443/hit/$size?size=$size&cc=max-age%3D3600"
      for _ in 1 2; do curl -sk -o /dev/null -H "Host: bench.local" "$url"; done # stored, then a hit
      c0=$(cpu "${PID[$v]}")
      out=$(h2load -D "$DUR" -c "$CONNS" -m 10 -t 1 -H ":authority: bench.local" "$url" 2>&1)
      c1=$(cpu "${PID[$v]}")
      rps=$(awk '/^finished in/ {print $4}' <<<"$out")
      ok=$(awk '/^status codes:/ {print $3}' <<<"$out")
      us=$(awk -v t=$((c1 - c0)) -v c="$clk" -v r="$ok" 'BEGIN {printf "%.1f", r ? t/c*1e6/r : 0}')
      printf 'round %d size %-8s %-4s %10s req/s  2xx %8s  CPU %6s us/req\n' "$round" "$size" "$v" "$rps" "$ok" "$us"
    done
  done
done
