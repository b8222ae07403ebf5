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
# Then the large-object case (issue 14): one 64 MiB object, 16 clients (wrk), against a fresh,
# cold Meridian edge (slices), nginx with its slice module and Varnish, one server at a time,
# in rounds. For each it prints throughput (MiB/s, req/s), the origin's body bytes for the
# object during that server's run (the reference origin's /_stats, diffed), the peak RSS of the
# cache process (VmHWM; nginx: summed over master and workers; Varnish: the cache child) and its
# CPU seconds per GiB delivered, then the medians with the Meridian/nginx and Meridian/Varnish
# ratios; it writes bench/results/http-large.json.
#
# Usage: bench/http.sh [duration (default 10s)] [connections (default 64)]
#        bench/http.sh --large [duration (default 10s)] [connections (default 16)]
#                                   the large-object case alone
# CASES=std runs only the small-object, miss, HTTP/2 and HTTP/3 cases; CASES=large is --large.
# Large case knobs: LARGE_DUR, LARGE_CONNS, LARGE_SIZE (bytes, default 67108864), LARGE_ROUNDS
# (default 3: each round runs the three servers in turn, each cold; medians are reported).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${CASES:-all} # CASES is reused below as the list of small-object cases
if [[ ${1:-} == --large ]]; then
  MODE=large
  shift
fi
case $MODE in all|std|large) ;; *) echo "CASES must be all, std or large" >&2; exit 2 ;; esac
DUR=${1:-10s}
CONNS=${2:-64}
LARGE_DUR=${LARGE_DUR:-10s}
LARGE_ROUNDS=${LARGE_ROUNDS:-3}
LARGE_CONNS=${LARGE_CONNS:-16}
if [[ $MODE == large ]]; then
  LARGE_DUR=${1:-$LARGE_DUR}
  LARGE_CONNS=${2:-$LARGE_CONNS}
fi
LARGE_SIZE=${LARGE_SIZE:-67108864}
THREADS=${THREADS:-1}
OUT=${OUT:-bench/results/http.json}
OUT_LARGE=${OUT_LARGE:-bench/results/http-large.json}
WORK=$(mktemp -d /tmp/meridian-bench-http.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  [ -f "$WORK/nginx-large.pid" ] && kill "$(cat "$WORK/nginx-large.pid")" 2>/dev/null || true
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
[[ $MODE == large ]] || go build -o "$WORK/h3load" ./bench/h3load
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
LARGE_EDGE=127.0.0.2:18091
LARGE_NGINX=127.0.0.3:18092
LARGE_VARNISH=127.0.0.4:18093

"$WORK/meridian" origin --listen $ORIGIN 2>"$WORK/origin.log" & PIDS+=($!)

wait_up() { # addr
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null -H "Host: $HOST" "http://$1/_health_probe"; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not come up" >&2; exit 1
}
wait_up $ORIGIN

# ---- Large objects (issue 14) ----
# One object of LARGE_SIZE bytes, LARGE_CONNS wrk clients for LARGE_DUR, against each cache in
# turn, each started fresh (cold) and stopped after its run, so the run measures the first
# miss collapsing (into slices for Meridian and nginx, into one streamed fetch for Varnish)
# and then hits, and the peak RSS belongs to this case alone. The three use the same object
# path; the origin's body bytes for it are read before and after each run (after a second's
# settling, so background fetches still running when wrk stops count too).
LARGE_PATH=/large/object
LARGE_TARGET="$LARGE_PATH?size=$LARGE_SIZE&cc=max-age%3D3600"
declare -a LROWS

origin_path_stat() { # FIELD (paths|bytes): the origin's count for LARGE_PATH
  curl -s "http://$ORIGIN/_stats" | tr -d ' \n' | sed -E "s/.*\"$1\":\{([^}]*)\}.*/\1/" |
    grep -oE "\"$LARGE_PATH\":[0-9]+" | cut -d: -f2 | grep . || echo 0
}
cpu_ticks() { # PID...: user+system clock ticks summed over the processes
  local t=0 p v
  for p in "$@"; do
    v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || true)
    t=$((t + ${v:-0}))
  done
  echo $t
}
hwm_kb() { # PID...: VmHWM summed over the processes, in KiB
  local t=0 p v
  for p in "$@"; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    t=$((t + ${v:-0}))
  done
  echo $t
}
mib() { # wrk size (e.g. 1.23GB; wrk's units are binary) -> MiB
  awk -v v="$1" 'BEGIN {
    u = v; sub(/^[0-9.]+/, "", u); n = v + 0
    f = (u == "B") ? 1/1048576 : (u == "KB") ? 1/1024 : (u == "MB") ? 1 : (u == "GB") ? 1024 : (u == "TB") ? 1048576 : 0
    printf "%.1f", n * f
  }'
}
stop_pid() { # PID: TERM, then wait until it is gone (at most 10 s)
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}

large_start_meridian() {
  cat >"$WORK/edge-large.yaml" <<YAML
pop: bench
node: e2
listen: $LARGE_EDGE
admin_listen: "off"
cache:
  max_bytes: 1073741824
  max_object_bytes: 4194304
hosts:
  - host: $HOST
    origin: http://$ORIGIN
YAML
  "$WORK/meridian" edge --config "$WORK/edge-large.yaml" 2>"$WORK/edge-large.log" &
  LPID=$!
  PIDS+=($LPID)
  wait_up $LARGE_EDGE
}
large_start_nginx() {
  mkdir -p "$WORK/nginx-large-cache"
  chmod 755 "$WORK"
  chown -R "$(id -un www-data 2>/dev/null || echo nobody)" "$WORK/nginx-large-cache" 2>/dev/null || true
  # The slice module as documented: every 2 MiB slice is its own cache entry, fetched with
  # Range, one fetch per slice (proxy_cache_lock). sendfile is left off (nginx's default, as in
  # the other cases): on this VM "sendfile on; tcp_nopush on;" (Debian's nginx.conf) measured
  # 584 MiB/s against 983 MiB/s off (docs/benchmarks.md, "Large objects").
  cat >"$WORK/nginx-large.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx-large.pid;
error_log $WORK/nginx-large-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  proxy_cache_path $WORK/nginx-large-cache levels=1:2 keys_zone=large:64m max_size=2g inactive=1h use_temp_path=off;
  upstream origin { server $ORIGIN; keepalive 64; }
  server {
    listen $LARGE_NGINX;
    location / {
      slice 2m;
      proxy_cache large;
      proxy_cache_key \$uri\$is_args\$args\$slice_range;
      proxy_set_header Range \$slice_range;
      proxy_cache_valid 200 206 1h;
      proxy_cache_lock on;
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_buffers 16 64k;
      add_header X-Cache-Status \$upstream_cache_status;
    }
  }
}
NGINX
  nginx -c "$WORK/nginx-large.conf" -p "$WORK"
  wait_up $LARGE_NGINX
  LPID=$(cat "$WORK/nginx-large.pid")
}
large_start_varnish() {
  # Default VCL: a miss streams to every waiting client (do_stream) from one backend fetch;
  # the whole object is kept in malloc storage, sized well above it.
  varnishd -F -n "$WORK/varnish-large" -a $LARGE_VARNISH -b $ORIGIN -s malloc,1G -p thread_pool_min=50 \
    >"$WORK/varnish-large.log" 2>&1 &
  LPID=$!
  PIDS+=($LPID)
  wait_up $LARGE_VARNISH
}

# large_run NAME ADDR ROUND
large_run() {
  local name=$1 addr=$2 round=$3 b0 r0 b1 r1 c0 c1 out rps xfer total reqs errs pids rss sum cpu
  # The cache's processes: Meridian's edge; nginx's master and its workers; Varnish's cache
  # child (the manager is not the cache).
  case $name in
    meridian) pids=$LPID ;;
    nginx) pids="$LPID $(pgrep -P "$LPID" | tr '\n' ' ')" ;;
    varnish) pids=$(pgrep -P "$LPID" | tr '\n' ' ') ;;
  esac
  b0=$(origin_path_stat bytes); r0=$(origin_path_stat paths); c0=$(cpu_ticks $pids)
  out=$(wrk -t"$THREADS" -c"$LARGE_CONNS" -d"$LARGE_DUR" --timeout 120s -H "Host: $HOST" "http://$addr$LARGE_TARGET")
  sleep 1
  b1=$(origin_path_stat bytes); r1=$(origin_path_stat paths); c1=$(cpu_ticks $pids)
  rss=$(hwm_kb $pids)
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  xfer=$(mib "$(awk '/^Transfer\/sec:/ {print $2}' <<<"$out")")
  total=$(mib "$(awk '/requests in/ {print $(NF-1)}' <<<"$out")")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  # CPU seconds of the cache's processes per GiB delivered (less sensitive to the machine's
  # other load than throughput).
  cpu=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v m="$total" 'BEGIN {printf "%.3f", (m > 0 ? t / hz / (m / 1024) : 0)}')
  errs=$(awk '/Non-2xx or 3xx responses:/ {print "non2xx:" $NF} /Socket errors/ {print "socket:" $0}' <<<"$out" | tr '\n' ' ')
  # One more fetch through the cache, hashed against the origin's bytes.
  sum=$(curl -s -H "Host: $HOST" "http://$addr$LARGE_TARGET" | sha256sum | cut -d' ' -f1)
  [[ $sum == "$LARGE_SUM" ]] && sum=ok || sum="WRONG-BODY"
  printf '%-9s round %d %8s MiB/s %6s req/s %5s reqs  origin %6.1f MiB in %3d requests  peak RSS %6.1f MiB  CPU %5s s/GiB  body %s %s\n' \
    "$name" "$round" "$xfer" "$rps" "$reqs" "$(awk -v b=$((b1 - b0)) 'BEGIN {print b/1048576}')" $((r1 - r0)) \
    "$(awk -v k="$rss" 'BEGIN {print k/1024}')" "$cpu" "$sum" "$errs" >&2
  [[ -n $errs ]] && printf '%s\n' "$out" >&2
  LROWS+=("$name $round ${xfer:-0} ${rps:-0} ${reqs:-0} $((b1 - b0)) $((r1 - r0)) $rss $cpu $sum")
}

large_med() { # SERVER FIELD: the median over the rounds
  printf '%s\n' "${LROWS[@]}" | awk -v s="$1" -v f="$2" '$1==s {print $f}' | sort -g |
    awk '{a[NR]=$1} END {if (NR == 0) print 0; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

large_case() {
  echo "large-object case: $LARGE_SIZE bytes, wrk -t$THREADS -c$LARGE_CONNS -d$LARGE_DUR per server, $LARGE_ROUNDS rounds, every run cold; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  # The expected body, straight from the origin (before any run: the runs' counts are diffs).
  LARGE_SUM=$(curl -s -H "Host: $HOST" "http://$ORIGIN$LARGE_TARGET" | sha256sum | cut -d' ' -f1)
  local round
  for round in $(seq 1 "$LARGE_ROUNDS"); do
    large_start_meridian; large_run meridian $LARGE_EDGE "$round"; stop_pid "$LPID"
    large_start_nginx; large_run nginx $LARGE_NGINX "$round"
    [[ $round -gt 1 ]] || echo "nginx cache on disk (page cache, not in its RSS): $(du -sm "$WORK/nginx-large-cache" | cut -f1) MiB" >&2
    stop_pid "$LPID"
    rm -rf "$WORK/nginx-large-cache"
    large_start_varnish; large_run varnish $LARGE_VARNISH "$round"; stop_pid "$LPID"
  done

  {
    echo "{"
    echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo "  \"machine\": \"$(nproc) cores, $(uname -m), $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)\","
    echo "  \"command\": \"bench/http.sh --large $LARGE_DUR $LARGE_CONNS (wrk -t$THREADS -c$LARGE_CONNS, object $LARGE_SIZE bytes, $LARGE_ROUNDS rounds, every run cold)\","
    echo "  \"results\": ["
    local first=1 r
    for r in "${LROWS[@]}"; do
      set -- $r
      [ $first -eq 1 ] || echo ","
      first=0
      printf '    {"server": "%s", "case": "large", "round": %s, "mib_per_s": %s, "rps": %s, "requests": %s, "origin_bytes": %s, "origin_requests": %s, "peak_rss_kib": %s, "cpu_s_per_gib": %s, "body": "%s"}' \
        "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" "${10}"
    done
    echo ""
    echo "  ]"
    echo "}"
  } >"$OUT_LARGE"

  local s f m="" n="" v=""
  for f in 3 4 6 7 8 9; do
    m+="$(large_med meridian $f) "; n+="$(large_med nginx $f) "; v+="$(large_med varnish $f) "
  done
  echo >&2
  echo "medians over $LARGE_ROUNDS rounds" >&2
  awk -v m="$m" -v n="$n" -v v="$v" -v size="$LARGE_SIZE" 'BEGIN {
    split(m, M, " "); split(n, N, " "); split(v, V, " ")
    printf "%-22s %12s %12s %12s %9s %9s\n", "large object", "meridian", "nginx", "varnish", "M/nginx", "M/varnish"
    q = "%-22s %12.1f %12.1f %12.1f %9.2f %9.2f\n"
    printf q, "throughput MiB/s", M[1], N[1], V[1], (N[1] ? M[1]/N[1] : 0), (V[1] ? M[1]/V[1] : 0)
    printf q, "requests/s", M[2], N[2], V[2], (N[2] ? M[2]/N[2] : 0), (V[2] ? M[2]/V[2] : 0)
    printf q, "origin MiB", M[3]/1048576, N[3]/1048576, V[3]/1048576, (N[3] ? M[3]/N[3] : 0), (V[3] ? M[3]/V[3] : 0)
    printf "%-22s %12.3f %12.3f %12.3f\n", "origin / object size", M[3]/size, N[3]/size, V[3]/size
    printf q, "origin requests", M[4], N[4], V[4], (N[4] ? M[4]/N[4] : 0), (V[4] ? M[4]/V[4] : 0)
    printf q, "peak RSS MiB", M[5]/1024, N[5]/1024, V[5]/1024, (N[5] ? M[5]/N[5] : 0), (V[5] ? M[5]/V[5] : 0)
    printf "%-22s %12.3f %12.3f %12.3f %9.2f %9.2f\n", "CPU s per GiB", M[6], N[6], V[6], (N[6] ? M[6]/N[6] : 0), (V[6] ? M[6]/V[6] : 0)
  }' >&2
  # Throughput ratios per round (the three runs of a round are closest in time).
  for round in $(seq 1 "$LARGE_ROUNDS"); do
    printf '%s\n' "${LROWS[@]}" | awk -v r="$round" '$2==r {t[$1]=$3; b = b " " $1 ":" $NF}
      END {printf "round %d: throughput M/nginx %.2f, M/varnish %.2f; bodies%s\n", r, (t["nginx"] ? t["meridian"]/t["nginx"] : 0), (t["varnish"] ? t["meridian"]/t["varnish"] : 0), b}' >&2
  done
  echo "wrote $OUT_LARGE" >&2
}

if [[ $MODE == large ]]; then
  large_case
  exit 0
fi

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

for a in $EDGE $NGINX $VARNISH; do wait_up $a; done

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

if [[ $MODE == all ]]; then
  echo >&2
  large_case
fi
