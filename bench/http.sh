#!/usr/bin/env bash
# bench/http.sh: Meridian's edge side by side with nginx proxy_cache and Varnish, in one run.
#
# It installs nginx, varnish, wrk and h2load (nghttp2-client) from Debian packages if they are
# missing, starts one reference origin and, in front of it, the Meridian edge, nginx and Varnish
# on their own 127.0.0.x addresses, then loads each with wrk on cache hits (1 KiB, 16 KiB, 1 MiB)
# and on a miss-heavy mix; then HTTP/2 over TLS with h2load for Meridian and nginx (Varnish has no
# TLS), and HTTP/3 for Meridian with bench/h3load (quic-go). It prints requests/s and latency side
# by side with the Meridian/nginx and Meridian/Varnish ratios from this run, and writes
# bench/results/http.json.
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
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin

go build -o "$WORK/meridian" .
go build -o "$WORK/h3load" ./bench/h3load
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=bench.local \
  -addext subjectAltName=DNS:bench.local 2>/dev/null
chmod 644 "$WORK/key.pem"
HOST=bench.local
ORIGIN=127.0.0.1:18080
EDGE=127.0.0.2:18081
EDGE_TLS=127.0.0.2:18444
NGINX=127.0.0.3:18082
NGINX_TLS=127.0.0.3:18443
VARNISH=127.0.0.4:18083

"$WORK/meridian" origin --listen $ORIGIN 2>"$WORK/origin.log" & PIDS+=($!)

cat >"$WORK/edge.yaml" <<YAML
pop: bench
node: e1
listen: $EDGE
https_listen: $EDGE_TLS
tls:
  certs: [{cert: $WORK/cert.pem, key: $WORK/key.pem}]
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
  # The default (1000) closes load generators' connections mid-run; h2load does not reconnect.
  keepalive_requests 10000000;
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=bench:64m max_size=1g inactive=1h use_temp_path=off;
  upstream origin { server $ORIGIN; keepalive 64; }
  server {
    listen $NGINX;
    listen $NGINX_TLS ssl http2;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
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

# HTTP/2 over TLS: h2load, one thread, CONNS connections, 10 streams each.
DSECS=${DUR%s}
h2run() { # NAME ADDR CASE PATH
  local out rps mean
  out=$(h2load -D "$DSECS" -c "$CONNS" -m 10 -t "$THREADS" -H ":authority: $HOST" "https://$2$4" 2>&1)
  rps=$(awk '/^finished in/ {for (i=1;i<=NF;i++) if ($i ~ /req\/s/) {v=$(i-1); gsub(",","",v); print v}}' <<<"$out")
  mean=$(awk '/time for request:/ {v=$6; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' <<<"$out")
  printf '%-9s %-8s %12s req/s  mean %8s ms\n' "$1" "$3" "$rps" "$mean" >&2
  ROWS+=("$1 $3 ${rps:-0} ${mean:-0}")
}
for c in "h2-1k /hit/1k?size=1024&cc=max-age%3D3600" "h2-16k /hit/16k?size=16384&cc=max-age%3D3600"; do
  set -- $c
  h2run meridian $EDGE_TLS "$1" "$2"
  h2run nginx $NGINX_TLS "$1" "$2"
done
# HTTP/3: Meridian only (nginx 1.22 and Varnish have none).
for c in "h3-1k /hit/1k?size=1024&cc=max-age%3D3600" "h3-16k /hit/16k?size=16384&cc=max-age%3D3600"; do
  set -- $c
  out=$("$WORK/h3load" -url "https://$EDGE_TLS$2" -host $HOST -c "$CONNS" -t 4 -d "$DUR")
  rps=$(sed -E 's/.*"rps":([0-9.e+]+).*/\1/' <<<"$out")
  p99=$(sed -E 's/.*"p99_ms":([0-9.e+]+).*/\1/' <<<"$out")
  printf '%-9s %-8s %12s req/s  p99 %8s ms  %s\n' meridian "$1" "$rps" "$p99" "$out" >&2
  ROWS+=("meridian $1 $rps $p99")
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
    printf '    {"server": "%s", "case": "%s", "rps": %s, "latency_ms": %s}' "$1" "$2" "${3:-0}" "${4:-0}"
  done
  echo ""
  echo "  ]"
  echo "}"
} >"$OUT"

echo >&2
printf '%-9s %14s %14s %14s %12s %12s   %s\n' case meridian nginx varnish "M/nginx" "M/varnish" "latency ms (M / nginx / varnish; p99, h2: mean)" >&2
for c in hit-1k hit-16k hit-1m miss-mix h2-1k h2-16k h3-1k h3-16k; do
  m=$(printf '%s\n' "${ROWS[@]}" | awk -v c=$c '$1=="meridian" && $2==c {print $3, $4}')
  n=$(printf '%s\n' "${ROWS[@]}" | awk -v c=$c '$1=="nginx" && $2==c {print $3, $4}')
  v=$(printf '%s\n' "${ROWS[@]}" | awk -v c=$c '$1=="varnish" && $2==c {print $3, $4}')
  awk -v c=$c -v m="$m" -v n="$n" -v v="$v" 'BEGIN {
    split(m, M, " "); split(n, N, " "); split(v, V, " ");
    printf "%-9s %14.0f %14.0f %14.0f %12.2f %12.2f   %s / %s / %s\n", c, M[1], N[1], V[1], (N[1] ? M[1]/N[1] : 0), (V[1] ? M[1]/V[1] : 0), M[2], N[2], V[2]
  }' >&2
done
echo "wrote $OUT" >&2
