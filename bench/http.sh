#!/usr/bin/env bash
# bench/http.sh: Meridian's edge side by side with nginx proxy_cache and Varnish, in one run.
#
# It installs nginx, varnish and wrk from Debian packages if they are missing, starts one
# reference origin and, in front of it, the Meridian edge, nginx and Varnish on their own
# 127.0.0.x addresses, then loads each with wrk on cache hits (1 KiB, 16 KiB, 1 MiB) and on a
# miss-heavy mix. It prints requests/s and p99 latency side by side with the Meridian/nginx and
# Meridian/Varnish ratios from this run, and writes bench/results/http.json.
#
# Usage: bench/http.sh [duration (default 10s)] [connections (default 64)]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}
CONNS=${2:-64}
THREADS=${THREADS:-1}
OUT=bench/results/http.json
WORK=$(mktemp -d /tmp/meridian-bench-http.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v varnishd >/dev/null || [ -x /usr/sbin/varnishd ] || need+=(varnish)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin

go build -o "$WORK/meridian" .
HOST=bench.local
ORIGIN=127.0.0.1:18080
EDGE=127.0.0.2:18081
NGINX=127.0.0.3:18082
VARNISH=127.0.0.4:18083

"$WORK/meridian" origin --listen $ORIGIN 2>"$WORK/origin.log" & PIDS+=($!)

cat >"$WORK/edge.yaml" <<YAML
pop: bench
node: e1
listen: $EDGE
admin_listen: "off"
cache:
  max_bytes: 1073741824
  max_object_bytes: 4194304
hosts:
  - host: $HOST
    origin: http://$ORIGIN
YAML
"$WORK/meridian" edge --config "$WORK/edge.yaml" 2>"$WORK/edge.log" & PIDS+=($!)

mkdir -p "$WORK/nginx-cache"
# nginx workers run as an unprivileged user: let them into the work directory.
chmod 755 "$WORK"
chown -R "$(id -un www-data 2>/dev/null || echo nobody)" "$WORK/nginx-cache" 2>/dev/null || true
cat >"$WORK/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=bench:64m max_size=1g inactive=1h use_temp_path=off;
  upstream origin { server $ORIGIN; keepalive 64; }
  server {
    listen $NGINX;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_cache bench;
      proxy_cache_lock on;
      proxy_buffers 16 64k;
      proxy_max_temp_file_size 0;
      add_header X-Cache-Status \$upstream_cache_status;
    }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK"

varnishd -F -n "$WORK/varnish" -a $VARNISH -b $ORIGIN -s malloc,1G -p thread_pool_min=50 >"$WORK/varnish.log" 2>&1 & PIDS+=($!)

wait_up() { # addr
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null -H "Host: $HOST" "http://$1/_health_probe"; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not come up" >&2; exit 1
}
for a in $ORIGIN $EDGE $NGINX $VARNISH; do wait_up $a; done

cat >"$WORK/miss.lua" <<'LUA'
-- 90 % of requests go to a key space far larger than any run can warm: misses.
math.randomseed(os.time())
request = function()
  local path
  if math.random() < 0.9 then
    path = "/miss/" .. math.random(1, 100000000) .. "?size=1024&cc=max-age%3D3600"
  else
    path = "/hot/" .. math.random(1, 100) .. "?size=1024&cc=max-age%3D3600"
  end
  return wrk.format("GET", path, {["Host"] = "bench.local"})
end
LUA

# run NAME ADDR CASE PATH|lua
declare -a ROWS
run() {
  local name=$1 addr=$2 case=$3 target=$4 out
  if [[ $target == lua ]]; then
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DUR" --latency -s "$WORK/miss.lua" "http://$addr/")
  else
    for _ in 1 2 3; do curl -s -o /dev/null -H "Host: $HOST" "http://$addr$target"; done # warm
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DUR" --latency -H "Host: $HOST" "http://$addr$target")
  fi
  local rps p99 errs
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' <<<"$out")
  errs=$(awk '/Non-2xx or 3xx responses:/ {print $NF} /Socket errors/ {print "socket:" $0}' <<<"$out" | tr '\n' ' ')
  printf '%-9s %-8s %12s req/s  p99 %8s ms  %s\n' "$name" "$case" "$rps" "$p99" "$errs" >&2
  ROWS+=("$name $case $rps $p99")
}

CASES=("hit-1k /hit/1k?size=1024&cc=max-age%3D3600"
       "hit-16k /hit/16k?size=16384&cc=max-age%3D3600"
       "hit-1m /hit/1m?size=1048576&cc=max-age%3D3600"
       "miss-mix lua")
for c in "${CASES[@]}"; do
  set -- $c
  for p in "meridian $EDGE" "nginx $NGINX" "varnish $VARNISH"; do
    set -- $c $p
    run "$3" "$4" "$1" "$2"
  done
done

# Report: a table with ratios, and JSON.
{
  echo "{"
  echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"machine\": \"$(nproc) cores, $(uname -m), $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//')\","
  echo "  \"command\": \"bench/http.sh $DUR $CONNS (wrk -t$THREADS -c$CONNS)\","
  echo "  \"results\": ["
  first=1
  for r in "${ROWS[@]}"; do
    set -- $r
    [ $first -eq 1 ] || echo ","
    first=0
    printf '    {"server": "%s", "case": "%s", "rps": %s, "p99_ms": %s}' "$1" "$2" "${3:-0}" "${4:-0}"
  done
  echo ""
  echo "  ]"
  echo "}"
} >"$OUT"

echo >&2
printf '%-9s %14s %14s %14s %12s %12s   %s\n' case meridian nginx varnish "M/nginx" "M/varnish" "p99 ms (M / nginx / varnish)" >&2
for c in hit-1k hit-16k hit-1m miss-mix; do
  m=$(printf '%s\n' "${ROWS[@]}" | awk -v c=$c '$1=="meridian" && $2==c {print $3, $4}')
  n=$(printf '%s\n' "${ROWS[@]}" | awk -v c=$c '$1=="nginx" && $2==c {print $3, $4}')
  v=$(printf '%s\n' "${ROWS[@]}" | awk -v c=$c '$1=="varnish" && $2==c {print $3, $4}')
  awk -v c=$c -v m="$m" -v n="$n" -v v="$v" 'BEGIN {
    split(m, M, " "); split(n, N, " "); split(v, V, " ");
    printf "%-9s %14.0f %14.0f %14.0f %12.2f %12.2f   %s / %s / %s\n", c, M[1], N[1], V[1], (N[1] ? M[1]/N[1] : 0), (V[1] ? M[1]/V[1] : 0), M[2], N[2], V[2]
  }' >&2
done
echo "wrote $OUT" >&2
