# bench/ab-lib.sh: what the A/B scripts (http2-ab.sh, fullstore-ab.sh, miss-ab.sh, far-ab.sh) share,
# sourced by them: tools from Debian, a work directory cleaned up on exit, the binaries of two
# revisions, a reference origin, edges each on its own loopback address in front of it, and
# the CPU ticks of a process.

# ab_need TOOL PACKAGE ...: installs from Debian the packages of the tools missing.
ab_need() {
  local need=()
  while (($#)); do
    command -v "$1" >/dev/null || need+=("$2")
    shift 2
  done
  if ((${#need[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

W=$(mktemp -d)
PIDS=()
AB_CLEANUP=() # more commands for the exit
ab_cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  local c
  for c in "${AB_CLEANUP[@]}"; do eval "$c"; done
  rm -rf "$W"
}
trap ab_cleanup EXIT

# ab_build REV NAME: $W/meridian.NAME, the binary of a git revision (built in a worktree the
# exit removes), or of the work tree if REV is empty.
ab_build() {
  if [ -z "$1" ]; then
    go build -o "$W/meridian.$2" .
  else
    AB_CLEANUP+=("git worktree remove --force \"\$W/src-$2\" 2>/dev/null || true")
    git worktree add -q --detach "$W/src-$2" "$1"
    (cd "$W/src-$2" && go build -o "$W/meridian.$2" .)
  fi
}

ORIGIN=127.0.0.70:18170
# ab_origin BINARY: the reference origin at $ORIGIN.
ab_origin() {
  "$1" origin --listen $ORIGIN 2>"$W/origin.log" &
  PIDS+=($!)
}

declare -A PID=()
# ab_edge NAME BINARY ADDRESS [YAML LINE ...]: an edge with the default config but for
# max_bytes 1 GiB, HTTPS with the development certificate, no HTTP/3 and no admin listener,
# one host (bench.local) at $ORIGIN, and the extra lines; its PID in PID[NAME]. It returns once
# the edge answers. EDGE_ENV (e.g. GODEBUG=gctrace=1) is its environment; its log is
# $W/edge-NAME.log.
ab_edge() {
  local name=$1 bin=$2 addr=$3
  shift 3
  {
    printf '%s\n' "pop: bench" "node: e-$name" "listen: $addr:18080" "https_listen: $addr:18443" \
      "tls: {dev: true, disable_http3: true}" 'admin_listen: "off"' "cache: {max_bytes: 1073741824}" "$@" \
      "hosts:" "  - host: bench.local" "    origin: http://$ORIGIN"
  } >"$W/edge-$name.yaml"
  env ${EDGE_ENV:-} "$bin" edge --config "$W/edge-$name.yaml" 2>"$W/edge-$name.log" &
  PID[$name]=$!
  PIDS+=($!)
  for _ in $(seq 50); do curl -s -o /dev/null "http://$addr:18080/" && break; sleep 0.1; done
}

# ab_cpu PID: the process's CPU ticks so far (user + system).
ab_cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
# ab_sys PID: the part of it spent in the kernel (system time).
ab_sys() { awk '{print $15}' "/proc/$1/stat"; }
CLK=$(getconf CLK_TCK)

# ab_us_per TICKS REQUESTS: CPU microseconds per request.
ab_us_per() { awk -v t="$1" -v c="$CLK" -v r="$2" 'BEGIN {printf "%.1f", r ? t/c*1e6/r : 0}'; }
