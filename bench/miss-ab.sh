#!/usr/bin/env bash
# bench/miss-ab.sh: two revisions of the edge side by side on unique-URL misses, with nginx
# proxy_cache as the anchor in the same run (issue 15's miss goal). The origin is an nginx
# serving two static files (1 KiB, 16 KiB) for any /u/<anything>/<file>, as in bench/http.sh.
# Each edge has the default config (max_bytes 1 GiB, its own address); nginx has the cache of
# bench/http.sh, its directory in the work directory as there (NGINX_CACHE_DIR=/dev/shm puts
# it, in a directory of its own, on tmpfs, so that the disk cannot slow nginx's misses). For each round and size the three
# servers run in turn, the two edges' order swapped every other round (wrk -t1 -c64, every
# request a URL never asked before); each line gives requests/s and CPU
# microseconds per request (/proc/PID/stat), with the part of it spent in the kernel. The
# edges are restarted, empty, at the start of every round.
# It installs wrk, nginx and curl from Debian if missing.
#
# With FLOOR=1 a fourth server runs beside them: bench/missfloor, the least a Go caching proxy
# does on a miss (no RFC 9111, no headers of its own), built from the work tree: what Go and
# this machine charge for a miss without the edge's work. nginx's CPU is its master's and
# workers'. Every line also gives the origin's CPU per request behind that server (its
# master's and workers'), which is not the same behind every cache (docs/benchmarks.md).
#
# Usage: bench/miss-ab.sh BASE [HEAD]   (git revisions; HEAD defaults to the work tree)
# DUR (seconds per run, default 6), ROUNDS (default 3) and FILES (default "1k 16k") pick the cases. PREFILL (seconds,
# default 0) first fills each restarted edge with unique 1 KiB misses for that long (14 s puts
# about 165,000 objects in), so that the rounds meet a store that fills and churns, a cache's
# steady state, rather than an empty one. PREFILL_FILE (default 1k) is the file the fill asks
# for: 16k with PREFILL=30 passes the default 1 GiB, so the rounds meet a full store that
# evicts, whose memory the process already has. With PREFILL_ALL=1 nginx and the floor are
# filled the same way before every round too (nginx's cache is not emptied between rounds). Each edge's line also gives its RSS after the run, and,
# with EDGE_ENV=GODEBUG=gctrace=1 (the edges' environment), the collections during it.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?usage: bench/miss-ab.sh BASE [HEAD]}
HEAD=${2:-}
DUR=${DUR:-6}
ROUNDS=${ROUNDS:-3}
FILES=${FILES:-1k 16k}
PREFILL=${PREFILL:-0}
PREFILL_FILE=${PREFILL_FILE:-1k}
PREFILL_ALL=${PREFILL_ALL:-}
FLOOR=${FLOOR:-}
source bench/ab-lib.sh
ab_need wrk wrk nginx nginx curl curl
source bench/nginx-lib.sh
AB_CLEANUP+=('[ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true'
  '[ -f "$W/nginx-static.pid" ] && kill "$(cat "$W/nginx-static.pid")" 2>/dev/null || true'
  'rm -rf "${NGINX_CACHE:-}"') # the fresh directory only: never the one named, which may be /dev/shm
ab_build "$BASE" base
ab_build "$HEAD" head

STATIC=127.0.0.71:18171
NGINX=127.0.0.83:18080
nginx_static_origin "$W" "$STATIC"

# A fresh directory of its own, inside the one named, so that the exit removes only that.
NGINX_CACHE=$(mktemp -d -p "${NGINX_CACHE_DIR:-$W}" nginx-cache.XXXXXX)
chmod 777 "$NGINX_CACHE"
cat >"$W/nginx.conf" <<NGINX
$(nginx_head "$W" nginx)
  proxy_cache_path $NGINX_CACHE levels=1:2 keys_zone=bench:64m max_size=1g inactive=1h use_temp_path=off;
  upstream static { server $STATIC; keepalive 64; }
  server {
    listen $NGINX;
$(nginx_cache_location static)
  }
}
NGINX
nginx -c "$W/nginx.conf" -p "$W"

declare -A ADDR=([base]=127.0.0.81:18080 [head]=127.0.0.82:18080 [nginx]=$NGINX [floor]=127.0.0.84:18080)
SERVERS="base head nginx"
if [ -n "$FLOOR" ]; then
  go build -o "$W/missfloor" ./bench/missfloor
  SERVERS+=" floor"
fi
for v in base head; do
  # ab_edge's host is the reference origin's; these edges need the static one instead.
  printf '%s\n' "pop: bench" "node: e-$v" "listen: ${ADDR[$v]}" 'admin_listen: "off"' \
    "cache: {max_bytes: 1073741824}" "hosts:" "  - host: static.local" "    origin: http://$STATIC" >"$W/edge-$v.yaml"
done
# start_edges: both edges afresh, with empty stores: a miss costs more as the store fills (the
# collector marks more), so every round starts from the same state.
start_edges() {
  local v p keep
  for v in base head ${FLOOR:+floor}; do
    if [ -n "${PID[$v]:-}" ]; then
      kill "${PID[$v]}"
      wait "${PID[$v]}" 2>/dev/null || true
      keep=() # the exit must not signal the old PID, which may be reused by then
      for p in "${PIDS[@]}"; do [ "$p" = "${PID[$v]}" ] || keep+=("$p"); done
      PIDS=("${keep[@]}")
    fi
    if [ "$v" = floor ]; then # afresh too: it forgets nothing until it holds 1 GiB
      "$W/missfloor" -listen "${ADDR[floor]}" -origin "$STATIC" 2>>"$W/floor.log" &
    else
      env ${EDGE_ENV:-} "$W/meridian.$v" edge --config "$W/edge-$v.yaml" 2>>"$W/edge-$v.log" &
    fi
    PID[$v]=$!
    PIDS+=($!)
    for _ in $(seq 50); do curl -s -o /dev/null "http://${ADDR[$v]}/" && break; sleep 0.1; done
  done
}
start_edges

cat >"$W/unique.lua" <<'LUA'
-- Every request a URL never asked before: /u/<run>-<counter>/<file>.
function init(args)
  run, file, counter = args[1], args[2], 0
end
function request()
  counter = counter + 1
  return wrk.format("GET", "/u/" .. run .. "-" .. counter .. "/" .. file, {["Host"] = "static.local"})
end
LUA

# Every server must store what the origin sends: the second request for a URL is a hit.
for v in $SERVERS; do
  for _ in 1 2; do
    h=$(curl -s -o /dev/null -D - -H "Host: static.local" "http://${ADDR[$v]}/u/check-$v/1k")
  done
  grep -qiE '^(cache-status: .*hit|x-cache-status: hit)' <<<"$h" || {
    echo "$v did not store /u/check-$v/1k: $h" >&2
    exit 1
  }
done

cpu_of() { # cpu_of V [ab_sys]: the server's CPU ticks so far, or its system ticks (nginx and the origin: master's and workers')
  local p t=0 of=${2:-ab_cpu}
  if [ "$1" = nginx ] || [ "$1" = origin ]; then
    local pidf=$W/nginx.pid
    [ "$1" = nginx ] || pidf=$W/nginx-static.pid
    for p in $(cat "$pidf") $(pgrep -P "$(cat "$pidf")"); do t=$((t + $($of "$p"))); done
    echo "$t"
  else
    $of "${PID[$1]}"
  fi
}
gcs() { grep -c '^gc ' "$W/edge-$1.log" || true; } # collections so far, with gctrace on
run() { # run V FILE: one load run and its line
  local v=$1 file=$2 out rps n c0 c1 s0 s1 o0 o1 cpu errs mem="" g0=0
  [ "$v" = base ] || [ "$v" = head ] && g0=$(gcs "$v")
  c0=$(cpu_of "$v")
  s0=$(cpu_of "$v" ab_sys)
  o0=$(cpu_of origin)
  out=$(wrk -t1 -c64 -d"${DUR}s" -s "$W/unique.lua" "http://${ADDR[$v]}/" -- "$v-$file-$round-$RANDOM$RANDOM" "$file" 2>&1)
  c1=$(cpu_of "$v")
  s1=$(cpu_of "$v" ab_sys)
  o1=$(cpu_of origin)
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  errs=$(awk '/Non-2xx|Socket errors/' <<<"$out" | tr -s ' \n' ' ')
  cpu="CPU $(ab_us_per $((c1 - c0)) "$n") us/req (kernel $(ab_us_per $((s1 - s0)) "$n")), origin $(ab_us_per $((o1 - o0)) "$n")"
  if [ "$v" = base ] || [ "$v" = head ]; then
    mem="RSS $(awk '/VmRSS/ {print int($2/1024)}' "/proc/${PID[$v]}/status") MiB"
    [[ ${EDGE_ENV:-} != *gctrace=1* ]] || mem+=", $(($(gcs "$v") - g0)) GCs"
  fi
  printf 'round %d %-4s %-5s %10s req/s  %s %s %s\n' "$round" "$file" "$v" "$rps" "$cpu" "$mem" "$errs"
}
prefill() {
  local v
  ((PREFILL > 0)) || return 0
  local who="base head"
  [ -z "$PREFILL_ALL" ] || who="base head nginx ${FLOOR:+floor}"
  for v in $who; do
    wrk -t1 -c64 -d"${PREFILL}s" -s "$W/unique.lua" "http://${ADDR[$v]}/" -- "fill-$v-$RANDOM$RANDOM" "$PREFILL_FILE" >/dev/null
  done
}
for round in $(seq "$ROUNDS"); do
  ((round == 1)) || start_edges
  prefill
  for file in $FILES; do
    order="base head nginx"
    ((round % 2)) || order="head base nginx" # every other round the other edge goes first
    [ -n "$FLOOR" ] && order+=" floor"
    for v in $order; do run "$v" "$file"; done
  done
done
