#!/usr/bin/env bash
# bench/http.sh: Meridian's edge side by side with nginx proxy_cache, Varnish and Apache Traffic
# Server (ATS), in one run.
#
# It installs nginx, varnish, trafficserver, wrk and h2load (nghttp2-client) from Debian packages
# if they are missing, starts one reference origin and, in front of it, the Meridian edge, nginx,
# Varnish and ATS on their own 127.0.0.x addresses, then loads each with wrk on cache hits (1 KiB,
# 16 KiB, 1 MiB) and on a miss-heavy mix. Then the unique-URL miss cases (issue 15): an nginx
# serving two static files (1 KiB, 16 KiB) on its own address is a second origin, reached through
# every cache by a second Host (static.local), and wrk asks for a new URL on every request
# (/u/<run>-<thread>-<counter>/1k), so every request is a miss in every cache. Then HTTP/2 over
# TLS with h2load for Meridian and nginx (Varnish has no TLS; ATS is not set up for it), and
# HTTP/3 for Meridian with bench/h3load (quic-go). It prints requests/s and latency side by side
# with the Meridian/nginx, Meridian/Varnish and Meridian/ATS ratios from this run, then the
# "issue 15 goals" block (each goal's ratio from this run, PASS or MISS), and writes
# bench/results/http.json. On the unique-URL miss cases it also prints the CPU time per request
# of the cache and of the origin behind it, and the cache's page faults per request. If ATS
# cannot be installed or started, the script says so and runs the others.
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
# ATS=off leaves ATS out.
# ROUNDS (default 1) runs the small-object, miss and HTTP/2 cases that many times, the servers'
# order reversed every other round, and reports for each case the median over the rounds:
# of requests/s and latency per server, and of the round's own ratios (the runs of one round
# are closest in time, so a noisy neighbour spoils one ratio, not the verdict). An even number
# balances the order; with an odd one Meridian runs first once more than last.
# NGINX_CACHE_DIR puts nginx's cache in a fresh directory inside the one named (e.g. /dev/shm,
# tmpfs, so that a slow disk cannot slow nginx's misses); the default is the work directory.
# Large case knobs: LARGE_DUR, LARGE_CONNS, LARGE_SIZE (bytes, default 67108864), LARGE_ROUNDS
# (default 3: each round runs the three servers in turn, each cold; medians are reported).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/nginx-lib.sh
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
ROUNDS=${ROUNDS:-1}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer" >&2; exit 2; }
THREADS=${THREADS:-1}
OUT=${OUT:-bench/results/http.json}
OUT_LARGE=${OUT_LARGE:-bench/results/http-large.json}
WORK=$(mktemp -d /tmp/meridian-bench-http.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in nginx nginx-large nginx-static; do
    [ -f "$WORK/$f.pid" ] && kill "$(cat "$WORK/$f.pid")" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK" ${NGINX_CACHE_RM:+"$NGINX_CACHE_RM"}
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
# ATS is optional: if it cannot be installed (or, below, started) the run goes on without it.
ATS_WHY="" # why ATS is not in this run, if it is not
if [[ $MODE == large ]]; then
  ATS_WHY="not used by the large-object case"
elif [[ ${ATS:-on} == off ]]; then
  ATS_WHY="ATS=off"
elif ! command -v traffic_server >/dev/null; then
  echo "installing trafficserver from Debian packages" >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq trafficserver >/dev/null; } ||
    ! command -v traffic_server >/dev/null; then
    ATS_WHY="the Debian package trafficserver could not be installed"
  fi
fi
[[ -z $ATS_WHY || $MODE == large ]] || echo "ATS: $ATS_WHY; running without it" >&2

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
ATS_ADDR=127.0.0.5:18084
STATIC=127.0.0.6:18086 # the nginx static-file origin of the unique-URL miss cases
STATIC_HOST=static.local
LARGE_EDGE=127.0.0.2:18091
LARGE_NGINX=127.0.0.3:18092
LARGE_VARNISH=127.0.0.4:18093

"$WORK/meridian" origin --listen $ORIGIN 2>"$WORK/origin.log" & PIDS+=($!)

try_up() { # ADDR [TRIES, 0.1 s apart]: whether ADDR answers HTTP
  for _ in $(seq 1 "${2:-100}"); do
    if curl -s -m 2 -o /dev/null -H "Host: $HOST" "http://$1/_health_probe"; then return 0; fi
    sleep 0.1
  done
  return 1
}
wait_up() { # ADDR
  try_up "$1" || { echo "$1 did not come up" >&2; exit 1; }
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
$(nginx_head "$WORK" nginx-large)
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

# ---- The nginx static-file origin of the unique-URL miss cases (issue 15) ----
# Every cache reaches it through a second Host, static.local, next to bench.local (the
# reference origin).
nginx_static_origin "$WORK" "$STATIC"

# ---- The caches ----
# Meridian: the defaults, plus the two hosts.
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
  - host: $STATIC_HOST
    origin: http://$STATIC
YAML
"$WORK/meridian" edge --config "$WORK/edge.yaml" 2>"$WORK/edge.log" & PIDS+=($!)
EDGE_PID=$!

# nginx: one proxy_cache zone; the static origin is a second server block (by server_name) with
# the same cache settings.
NGINX_CACHE=$WORK/nginx-cache
if [[ -n ${NGINX_CACHE_DIR:-} ]]; then
  NGINX_CACHE=$(mktemp -d -p "$NGINX_CACHE_DIR" meridian-bench-nginx-cache.XXXXXX)
  NGINX_CACHE_RM=$NGINX_CACHE # removed by cleanup
fi
mkdir -p "$NGINX_CACHE"
chown -R "$(id -un www-data 2>/dev/null || echo nobody)" "$NGINX_CACHE" 2>/dev/null || true
cat >"$WORK/nginx.conf" <<NGINX
$(nginx_head "$WORK" nginx)
  proxy_cache_path $NGINX_CACHE levels=1:2 keys_zone=bench:64m max_size=1g inactive=1h use_temp_path=off;
  upstream origin { server $ORIGIN; keepalive 64; }
  upstream static { server $STATIC; keepalive 64; }
  server {
    listen $NGINX;
    listen $NGINX_TLS ssl http2;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
$(nginx_cache_location origin)
  }
  server {
    listen $NGINX;
    server_name $STATIC_HOST;
$(nginx_cache_location static)
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK"

# Varnish: the built-in VCL with two backends, the static origin chosen by Host.
cat >"$WORK/varnish.vcl" <<VCL
vcl 4.1;
backend reference { .host = "${ORIGIN%:*}"; .port = "${ORIGIN##*:}"; }
backend static { .host = "${STATIC%:*}"; .port = "${STATIC##*:}"; }
sub vcl_recv {
  if (req.http.host == "$STATIC_HOST") { set req.backend_hint = static; }
}
VCL
varnishd -F -n "$WORK/varnish" -a $VARNISH -f "$WORK/varnish.vcl" -s malloc,1G -p thread_pool_min=50 >"$WORK/varnish.log" 2>&1 & PIDS+=($!)
VARNISH_PID=$!

# ATS: a reverse proxy cache, traffic_server in the foreground as the current user, with its
# own runroot (configuration, cache, logs, sockets) under $WORK/ats: the packaged configuration
# files as the base, then records.config, remap.config (one rule per Host), storage.config (a
# 2 GiB cache file) and a 1 GiB RAM cache. Access logging is off, as for nginx.
start_ats() {
  local d=$WORK/ats
  mkdir -p "$d/etc" "$d/run" "$d/log" "$d/cache" "$d/var"
  cp -r /etc/trafficserver/. "$d/etc/" 2>/dev/null || true
  cat >"$d/runroot.yaml" <<YAML
prefix: /usr
exec_prefix: /usr
bindir: /usr/bin
sbindir: /usr/sbin
sysconfdir: $d/etc
datadir: $d/var
includedir: /usr/include
libdir: /usr/lib/trafficserver
libexecdir: /usr/lib/trafficserver/modules
localstatedir: $d/var
runtimedir: $d/run
logdir: $d/log
cachedir: $d/cache
YAML
  # ATS 9 (bookworm) reads records.config; ATS 10 reads records.yaml.
  cat >"$d/etc/records.config" <<RECORDS
CONFIG proxy.config.admin.user_id STRING #-1
CONFIG proxy.config.http.server_ports STRING ${ATS_ADDR##*:}:ip-in=${ATS_ADDR%:*}
CONFIG proxy.config.exec_thread.autoconfig INT 1
CONFIG proxy.config.exec_thread.autoconfig.scale FLOAT 1.0
CONFIG proxy.config.accept_threads INT 1
CONFIG proxy.config.http.wait_for_cache INT 1
CONFIG proxy.config.reverse_proxy.enabled INT 1
CONFIG proxy.config.url_remap.remap_required INT 1
CONFIG proxy.config.url_remap.pristine_host_hdr INT 1
CONFIG proxy.config.http.cache.http INT 1
CONFIG proxy.config.http.cache.required_headers INT 2
CONFIG proxy.config.http.cache.cache_urls_that_look_dynamic INT 1
CONFIG proxy.config.http.keep_alive_no_activity_timeout_in INT 120
CONFIG proxy.config.http.keep_alive_no_activity_timeout_out INT 120
CONFIG proxy.config.cache.ram_cache.size INT 1073741824
CONFIG proxy.config.cache.ram_cache_cutoff INT 4194304
CONFIG proxy.config.net.connections_throttle INT 10000
CONFIG proxy.config.log.logging_enabled INT 0
CONFIG proxy.config.diags.debug.enabled INT 0
RECORDS
  cat >"$d/etc/remap.config" <<REMAP
map http://$HOST/ http://$ORIGIN/
map http://$STATIC_HOST/ http://$STATIC/
REMAP
  echo "$d/cache 2G" >"$d/etc/storage.config"
  cat >"$d/etc/ip_allow.yaml" <<YAML
ip_allow:
  - apply: in
    ip_addrs: 0/0
    action: allow
    methods: ALL
YAML
  traffic_server --run-root="$d/runroot.yaml" >"$d/traffic_server.log" 2>&1 &
  ATS_PID=$!
  PIDS+=("$ATS_PID")
  if ! try_up $ATS_ADDR 300 || [[ $(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" \
    "http://$ATS_ADDR/hit/1k?size=1024&cc=max-age%3D3600") != 200 ]]; then
    local err
    err=$(cat "$d/traffic_server.log" "$d/log/diags.log" 2>/dev/null | grep -E 'FATAL|ALERT|EMERGENCY|ERROR|Fatal' |
      grep -v traffic_crashlo | head -n 1 | tr -d '"\\' || true)
    ATS_WHY="traffic_server did not start or does not proxy${err:+: $err}"
    {
      echo "ATS: $ATS_WHY; running without it (its logs follow)"
      tail -n 20 "$d/traffic_server.log" "$d/log/diags.log" 2>/dev/null | sed 's/^/  ats: /'
    } >&2
    kill "$ATS_PID" 2>/dev/null || true
  fi
}
[[ -n $ATS_WHY ]] || start_ats

for a in $EDGE $NGINX $VARNISH $STATIC; do wait_up $a; done
SERVERS=("meridian $EDGE" "nginx $NGINX" "varnish $VARNISH")
[[ -n $ATS_WHY ]] || SERVERS+=("ats $ATS_ADDR")

VERSIONS="nginx $(nginx -v 2>&1 | sed 's|.*nginx/||'), varnish $(varnishd -V 2>&1 | sed -nE 's/.*varnish-([0-9.]+).*/\1/p' | head -n1)"
if [[ -z $ATS_WHY ]]; then
  VERSIONS+=", trafficserver $(traffic_server --version 2>/dev/null | awk '/^Traffic Server/ {print $3; exit}')"
else
  VERSIONS+=", trafficserver: $ATS_WHY"
fi
echo "servers: ${SERVERS[*]%% *}; $VERSIONS; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# tree_use PID...: the CPU time (clock ticks) and minor page faults of these processes and of
# their children and grandchildren (nginx's workers, Varnish's cache process), summed. A process
# that ended since pgrep saw it (nginx's cache loader) is skipped: under pipefail its failed cat
# would otherwise end the whole script.
TICKS=$(getconf CLK_TCK)
tree_use() {
  local all p
  all="$*"
  for p in "$@"; do all+=" $(pgrep -P "$p" | tr '\n' ' ')"; done
  for p in $all; do all+=" $(pgrep -P "$p" | tr '\n' ' ')"; done
  for p in $(tr ' ' '\n' <<<"$all" | sort -u); do cat "/proc/$p/stat" 2>/dev/null || true; done |
    awk '{sub(/^.*\) /, ""); t += $12 + $13; f += $8} END {printf "%d %d\n", t, f}'
}
# server_pid NAME: the process that is the cache NAME (nginx: its master).
server_pid() {
  case $1 in
    meridian) echo "$EDGE_PID" ;;
    nginx) cat "$WORK/nginx.pid" ;;
    varnish) echo "$VARNISH_PID" ;;
    ats) echo "$ATS_PID" ;;
  esac
}

# The static origin's request count (stub_status; the status request itself is not counted).
static_requests() { curl -s "http://$STATIC/_status" | awk 'NR == 3 {print $3 - 1}'; }
# Every cache must store what the static origin sends: two requests for one new URL through
# each cache must reach the origin once.
check=""
for p in "${SERVERS[@]}"; do
  set -- $p
  n0=$(static_requests)
  for _ in 1 2; do curl -s -o /dev/null -H "Host: $STATIC_HOST" "http://$2/u/store-check-$1/1k"; done
  n1=$(static_requests)
  check+=" $1 $((n1 - n0 - 1))"
  [[ $((n1 - n0 - 1)) -eq 1 ]] || echo "WARNING: $1 does not store the static origin's responses ($((n1 - n0 - 1)) origin requests for 2)" >&2
done
echo "static origin requests for 2 requests of one URL:$check" >&2

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

cat >"$WORK/unique.lua" <<'LUA'
-- Every request a URL never asked before: /u/<run>-<thread>-<counter>/<file>, where <run> is
-- new for every wrk run (an argument: server, case and a random number) and the counter
-- belongs to the thread, so every request is a miss in every cache.
local nthreads = 0
function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end
function init(args)
  run = args[1] or tostring(os.time())
  file = args[2] or "1k"
  host = args[3] or "static.local"
  counter = 0
end
function request()
  counter = counter + 1
  return wrk.format("GET", "/u/" .. run .. "-" .. tid .. "-" .. counter .. "/" .. file, {["Host"] = host})
end
LUA

# run NAME ADDR CASE PATH|lua|unique:FILE
# On the unique-URL miss cases it also measures, over the wrk run, the CPU time per request of
# the cache (all its processes) and of the static origin behind it, and the cache's minor page
# faults per request: on this 2-core machine the three share the cores, so requests/s follow
# from these (bench/results/http.json: cpu_us, origin_cpu_us, faults).
declare -a ROWS
run() {
  local name=$1 addr=$2 case=$3 target=$4 out n0 n1 reqs per="" use0 use1 ouse0 ouse1 cpu=""
  case $target in
    lua) out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DUR" --latency -s "$WORK/miss.lua" "http://$addr/") ;;
    unique:*)
      # The static origin's count before and after (a second later, for fetches still running)
      # gives origin requests per client request: 1.00 if every request was a miss.
      n0=$(static_requests)
      use0=$(tree_use "$(server_pid "$name")")
      ouse0=$(tree_use "$(cat "$WORK/nginx-static.pid")")
      out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DUR" --latency -s "$WORK/unique.lua" "http://$addr/" \
        -- "$name-$case-$RANDOM$RANDOM" "${target#unique:}" "$STATIC_HOST")
      use1=$(tree_use "$(server_pid "$name")")
      ouse1=$(tree_use "$(cat "$WORK/nginx-static.pid")")
      reqs=$(awk '/requests in/ {print $1}' <<<"$out")
      # "cpu_us origin_cpu_us faults" per request
      cpu=$(awk -v a="$use0" -v b="$use1" -v oa="$ouse0" -v ob="$ouse1" -v tk="$TICKS" -v r="$reqs" 'BEGIN {
          split(a, A, " "); split(b, B, " "); split(oa, OA, " "); split(ob, OB, " ")
          if (r > 0) printf "%.1f %.1f %.2f", (B[1] - A[1]) / tk * 1e6 / r, (OB[1] - OA[1]) / tk * 1e6 / r, (B[2] - A[2]) / r }')
      sleep 1
      n1=$(static_requests)
      per=$(awk -v o=$((n1 - n0 - 1)) -v r="$reqs" 'BEGIN {printf "%.3f", (r > 0 ? o / r : 0)}') ;;
    *)
      # Warm: stored, then hits. A warm request cut short (Varnish under the previous run's
      # load once closed a 1 MiB miss early: curl exit 18) must not end the whole run; a
      # server that really fails shows in wrk's errors.
      for _ in 1 2 3; do curl -s -o /dev/null -H "Host: $HOST" "http://$addr$target" || true; done
      out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DUR" --latency -H "Host: $HOST" "http://$addr$target") ;;
  esac
  local rps p99 errs
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' <<<"$out")
  errs=$(awk '/Non-2xx or 3xx responses:/ {print $NF} /Socket errors/ {print "socket:" $0}' <<<"$out" | tr '\n' ' ')
  local cpuline=""
  [[ -z $cpu ]] || cpuline=$(awk '{printf "CPU per request %s us, origin %s us, faults %s ", $1, $2, $3}' <<<"$cpu")
  printf '%-9s %-8s %12s req/s  p99 %8s ms  %s%s%s\n' "$name" "$case" "$rps" "$p99" "${per:+origin requests per request $per }" "$cpuline" "$errs" >&2
  ROWS+=("$ROUND $name $case ${rps:-0} ${p99:-0}${per:+ $per}${cpu:+ $cpu}")
}

CASES=("hit-1k /hit/1k?size=1024&cc=max-age%3D3600"
       "hit-16k /hit/16k?size=16384&cc=max-age%3D3600"
       "hit-1m /hit/1m?size=1048576&cc=max-age%3D3600"
       "miss-mix lua"
       "miss-1k unique:1k"
       "miss-16k unique:16k")
# HTTP/2 over TLS: h2load, one thread, CONNS connections, 10 streams each.
DSECS=${DUR%s}
h2run() { # NAME ADDR CASE PATH
  local out rps mean
  out=$(h2load -D "$DSECS" -c "$CONNS" -m 10 -t "$THREADS" -H ":authority: $HOST" "https://$2$4" 2>&1)
  rps=$(awk '/^finished in/ {for (i=1;i<=NF;i++) if ($i ~ /req\/s/) {v=$(i-1); gsub(",","",v); print v}}' <<<"$out")
  mean=$(awk '/time for request:/ {v=$6; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' <<<"$out")
  printf '%-9s %-8s %12s req/s  mean %8s ms\n' "$1" "$3" "$rps" "$mean" >&2
  ROWS+=("$ROUND $1 $3 ${rps:-0} ${mean:-0}")
}
# in_round_order NAME ITEM...: sets the array NAME to the items, reversed in even rounds, so
# that no server always runs first.
in_round_order() {
  local -n into=$1
  local i
  shift
  into=("$@")
  if ((ROUND % 2 == 0)); then
    into=()
    for ((i = $#; i >= 1; i--)); do into+=("${!i}"); done
  fi
}
for ROUND in $(seq 1 "$ROUNDS"); do
  in_round_order ORDER "${SERVERS[@]}"
  in_round_order H2ORDER "meridian $EDGE_TLS" "nginx $NGINX_TLS"
  ((ROUNDS == 1)) || echo "round $ROUND of $ROUNDS: ${ORDER[*]%% *}; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  for c in "${CASES[@]}"; do
    for p in "${ORDER[@]}"; do
      set -- $c $p
      run "$3" "$4" "$1" "$2"
    done
  done
  for c in "h2-1k /hit/1k?size=1024&cc=max-age%3D3600" "h2-16k /hit/16k?size=16384&cc=max-age%3D3600"; do
    for p in "${H2ORDER[@]}"; do
      set -- $c $p
      h2run "$3" "$4" "$1" "$2"
    done
  done
done
ROUND=1
# HTTP/3: Meridian only (nginx 1.22, Varnish and ATS 9 have none).
for c in "h3-1k /hit/1k?size=1024&cc=max-age%3D3600" "h3-16k /hit/16k?size=16384&cc=max-age%3D3600"; do
  set -- $c
  out=$("$WORK/h3load" -url "https://$EDGE_TLS$2" -host $HOST -c "$CONNS" -t 4 -d "$DUR")
  rps=$(sed -E 's/.*"rps":([0-9.e+]+).*/\1/' <<<"$out")
  p99=$(sed -E 's/.*"p99_ms":([0-9.e+]+).*/\1/' <<<"$out")
  printf '%-9s %-8s %12s req/s  p99 %8s ms  %s\n' meridian "$1" "$rps" "$p99" "$out" >&2
  ROWS+=("$ROUND meridian $1 $rps $p99")
done

# Report: a table with ratios, the issue 15 goals, and JSON. One awk program reads the rows
# ("round server case rps latency") and prints the part asked for (what=table|goals|json). With
# more than one round, each figure is the median over the rounds, and each ratio the median of
# the rounds' own ratios.
cat >"$WORK/report.awk" <<'AWK'
# med: the median of the n values V[1..n] (sorted in place).
function med(V, n,   i, j, t) {
  for (i = 2; i <= n; i++) for (j = i; j > 1 && V[j - 1] > V[j]; j--) { t = V[j]; V[j] = V[j - 1]; V[j - 1] = t }
  return n % 2 ? V[(n + 1) / 2] : (V[n / 2] + V[n / 2 + 1]) / 2
}
function has(s, c) { return ((s, c) in N) }
# over: the median over the rounds of X (R or L) for server s and case c, or "".
function over(X, s, c,   rd, n, V) {
  n = 0
  for (rd = 1; rd <= rounds; rd++) if ((rd, s, c) in X) V[++n] = X[rd, s, c] + 0
  return n ? med(V, n) : ""
}
function num(s, c) { return has(s, c) ? sprintf("%.0f", over(R, s, c)) : "-" }
function lat(s, c) { return has(s, c) ? over(L, s, c) : "-" }
# ratios: puts in V[1..n], in round order, Meridian's requests/s over s's in each round that
# has both, and returns n. ratio is their median; rlist lists them, for the goals.
function ratios(c, s, V,   rd, n) {
  n = 0
  for (rd = 1; rd <= rounds; rd++)
    if ((rd, "meridian", c) in R && (rd, s, c) in R && R[rd, s, c] > 0) V[++n] = R[rd, "meridian", c] / R[rd, s, c]
  return n
}
function ratio(c, s,   n, V) {
  n = ratios(c, s, V)
  return n ? med(V, n) : ""
}
function rlist(c, s, sep,   i, n, V, out) {
  n = ratios(c, s, V)
  out = ""
  for (i = 1; i <= n; i++) out = out (i > 1 ? sep : "") sprintf("%.3f", V[i])
  return out
}
function f2(x) { return x == "" ? "-" : sprintf("%.2f", x) }
function jnum(x) { return x == "" ? "null" : sprintf("%.3f", x) }
# goal NAME MEASURED TARGET RESULT RATIO VS P99M P99O [EXTRA JSON FIELDS]
function goal(name, measured, target, result, r, vs, pm, po, extra) {
  if (rounds > 1 && r != "") measured = measured " [rounds " rlist(name, vs, " ") "]"
  if (what == "goals") printf "%-9s %-52s %-26s %s\n", name, measured, target, result
  if (what == "json") {
    if (rounds > 1) extra = extra ", \"round_ratios\": [" rlist(name, vs, ", ") "]"
    printf "%s    {\"goal\": \"%s\", \"vs\": \"%s\", \"ratio\": %s, \"p99_ms\": %s, \"p99_ms_other\": %s%s, \"target\": \"%s\", \"result\": \"%s\"}", (ng++ ? ",\n" : ""), name, vs, jnum(r), jnum(pm), jnum(po), extra, target, result
  }
}
function hitgoal(c,   r, ok, pm, pn) {
  r = ratio(c, "nginx")
  if (r == "") { goal(c, "no result", ">= 1.00 of nginx, p99 <= nginx's", "N/A", "", "nginx", "", ""); return }
  pm = lat("meridian", c); pn = lat("nginx", c)
  ok = (r >= 1.0 && pm + 0 <= pn + 0)
  goal(c, sprintf("M/nginx %.2f, p99 %s ms vs nginx %s ms", r, pm, pn), ">= 1.00, p99 <= nginx's", ok ? "PASS" : "MISS", r, "nginx", pm, pn)
}
function ratiogoal(c, s, label,   r) {
  r = ratio(c, s)
  if (r == "") { goal(c, "M/" label ": no result" (s == "ats" && why != "" ? " (" why ")" : ""), ">= 1.00", "N/A", "", s, "", ""); return }
  goal(c, sprintf("M/%s %.2f", label, r), ">= 1.00", r >= 1.0 ? "PASS" : "MISS", r, s, "", "")
}
function missgoal(c,   r, b, best, s, i, n, S) {
  r = ratio(c, "nginx")
  n = split("nginx varnish ats", S, " ")
  best = ""
  for (i = 1; i <= n; i++) if (has(S[i], c) && (best == "" || over(R, S[i], c) > over(R, best, c))) best = S[i]
  if (r == "") { goal(c, "no result", ">= 1.00 of nginx", "N/A", "", "nginx", "", ""); return }
  b = ratio(c, best)
  goal(c, sprintf("M/nginx %.2f (M/best %.2f, best %s)", r, b, best), ">= 1.00 of nginx", r >= 1.0 ? "PASS" : "MISS", r, "nginx", "", "", sprintf(", \"best\": \"%s\", \"ratio_best\": %s", best, jnum(b)))
}
{ R[$1, $2, $3] = $4; L[$1, $2, $3] = $5; N[$2, $3] = 1; if ($1 > rounds) rounds = $1
  if (NF >= 9) { CP[$1, $2, $3] = $7; OC[$1, $2, $3] = $8; FL[$1, $2, $3] = $9 } }
function cpu(X, s, c, f,   v) { v = over(X, s, c); return v == "" ? "-" : sprintf(f, v) }
END {
  if (what == "table") {
    if (rounds > 1) print "medians over " rounds " rounds (ratios: the median of the rounds' ratios)"
    printf "%-9s %10s %10s %10s %10s %8s %8s %8s   %s\n", "case", "meridian", "nginx", "varnish", "ats", "M/nginx", "M/varn", "M/ats", "latency ms (M / nginx / varnish / ats; p99, h2: mean)"
    n = split("hit-1k hit-16k hit-1m miss-mix miss-1k miss-16k h2-1k h2-16k h3-1k h3-16k", C, " ")
    for (i = 1; i <= n; i++) {
      c = C[i]
      printf "%-9s %10s %10s %10s %10s %8s %8s %8s   %s / %s / %s / %s\n", c, num("meridian", c), num("nginx", c), num("varnish", c), num("ats", c), f2(ratio(c, "nginx")), f2(ratio(c, "varnish")), f2(ratio(c, "ats")), lat("meridian", c), lat("nginx", c), lat("varnish", c), lat("ats", c)
    }
  }
  if (what == "cpu") {
    print "unique-URL misses: CPU per request in microseconds, of the cache / of the origin behind it; the cache's page faults per request" (rounds > 1 ? " (medians over " rounds " rounds)" : "")
    printf "%-9s %-20s %-20s %-20s %-20s\n", "case", "meridian", "nginx", "varnish", "ats"
    n = split("miss-1k miss-16k", C, " ")
    m = split("meridian nginx varnish ats", S, " ")
    for (i = 1; i <= n; i++) {
      printf "%-9s", C[i]
      for (j = 1; j <= m; j++) printf " %-20s", cpu(CP, S[j], C[i], "%.1f") " / " cpu(OC, S[j], C[i], "%.1f") " / " cpu(FL, S[j], C[i], "%.2f")
      printf "\n"
    }
    exit
  }
  if (what == "goals") {
    print "issue 15 goals (ratios from this run" (rounds > 1 ? ", medians over " rounds " rounds" : "") ")"
    printf "%-9s %-52s %-26s %s\n", "goal", "measured", "target", "result"
  }
  hitgoal("hit-1k"); hitgoal("hit-16k")
  ratiogoal("hit-1m", "ats", "ATS")
  ratiogoal("h2-1k", "nginx", "nginx"); ratiogoal("h2-16k", "nginx", "nginx")
  missgoal("miss-1k"); missgoal("miss-16k")
  if (what == "json") print ""
}
AWK
report() { printf '%s\n' "${ROWS[@]}" | awk -v what="$1" -v why="$ATS_WHY" -f "$WORK/report.awk"; }

{
  echo "{"
  echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"machine\": \"$(nproc) cores, $(uname -m), $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)\","
  echo "  \"command\": \"$( ((ROUNDS == 1)) || echo "ROUNDS=$ROUNDS ")${NGINX_CACHE_DIR:+NGINX_CACHE_DIR=$NGINX_CACHE_DIR }bench/http.sh $DUR $CONNS (wrk -t$THREADS -c$CONNS)\","
  echo "  \"rounds\": $ROUNDS,"
  echo "  \"versions\": \"$VERSIONS\","
  echo "  \"results\": ["
  first=1
  for r in "${ROWS[@]}"; do
    set -- $r
    [ $first -eq 1 ] || echo ","
    first=0
    printf '    {"round": %s, "server": "%s", "case": "%s", "rps": %s, "latency_ms": %s%s%s}' "$1" "$2" "$3" "${4:-0}" "${5:-0}" "${6:+, \"origin_requests_per_request\": $6}" \
      "${9:+, \"cpu_us\": $7, \"origin_cpu_us\": $8, \"faults\": $9}"
  done
  echo ""
  echo "  ],"
  echo "  \"goals\": ["
  report json
  echo "  ]"
  echo "}"
} >"$OUT"

echo >&2
report table >&2
echo >&2
report cpu >&2
echo >&2
report goals >&2
echo "wrote $OUT" >&2

if [[ $MODE == all ]]; then
  echo >&2
  large_case
fi
