#!/usr/bin/env bash
# bench/hit-ab.sh: two revisions of the edge side by side on cache hits over HTTP/1.1, each
# edge on its own address in front of one reference origin (default config but for max_bytes,
# one host). For each round it runs wrk on one stored object against each edge in turn, the
# order swapped every other round, and counts the edge's CPU time, context switches and read
# system calls during the run with perf stat; each line gives requests/s and those per
# request. A hit costs a few µs, and the rate of two runs in a row differs by several per cent
# on this 2-core VM: compare the pairs, and their medians, not single runs. It installs wrk,
# perf (linux-perf) and curl from Debian if missing.
#
# Usage: bench/hit-ab.sh BASE [HEAD]   (git revisions; HEAD defaults to the work tree)
# DUR (seconds per run, default 4), ROUNDS (default 6), SIZE (bytes, default 1024) and CONNS
# (default 64) pick the case.
set -euo pipefail
export LC_ALL=C # perf stat's numbers are read with "," as the thousands separator
cd "$(dirname "$0")/.."
BASE=${1:?usage: bench/hit-ab.sh BASE [HEAD]}
HEAD=${2:-}
DUR=${DUR:-4}
ROUNDS=${ROUNDS:-6}
SIZE=${SIZE:-1024}
CONNS=${CONNS:-64}
source bench/ab-lib.sh
ab_need wrk wrk perf linux-perf curl curl
ab_build "$BASE" base
ab_build "$HEAD" head
ab_origin "$W/meridian.base"
declare -A ADDR=([base]=127.0.0.81 [head]=127.0.0.82)
for v in base head; do
  ab_edge $v "$W/meridian.$v" "${ADDR[$v]}"
done
# per REQUESTS COUNT: COUNT per request.
per() { awk -v c="$2" -v r="$1" 'BEGIN {printf "%.3f", r ? c/r : 0}'; }
# stat FILE EVENT: the count perf stat wrote for EVENT.
stat() { awk -v e="$2" 'index($0, e) {gsub(",", "", $1); print $1; exit}' "$1"; }
declare -A RPS=() CPU=()
for round in $(seq "$ROUNDS"); do
  order="base head"
  ((round % 2 == 0)) && order="head base"
  for v in $order; do
    url="http://${ADDR[$v]}:18080/hit/$SIZE?size=$SIZE&cc=max-age%3D3600"
    for _ in 1 2; do curl -s -o /dev/null -H "Host: bench.local" "$url"; done # stored, then a hit
    perf stat -e task-clock,context-switches,syscalls:sys_enter_read,syscalls:sys_enter_recvmsg -p "${PID[$v]}" \
      -o "$W/perf-$v" -- sleep "$DUR" &
    pp=$!
    out=$(wrk -t1 -c"$CONNS" -d"${DUR}s" -H "Host: bench.local" "$url")
    wait $pp
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    ms=$(stat "$W/perf-$v" task-clock)
    cpu=$(awk -v m="$ms" -v r="$reqs" 'BEGIN {printf "%.2f", r ? m*1000/r : 0}')
    RPS[$round.$v]=$rps
    CPU[$round.$v]=$cpu
    # The edge's client connections read with read(2), or recvmsg(2) (TCP_INQ) since the
    # thirty-eighth pass: both are reads.
    reads=$(( $(stat "$W/perf-$v" sys_enter_read) + $(stat "$W/perf-$v" sys_enter_recvmsg) ))
    echo "round $round $v: $rps req/s, CPU $cpu µs, reads $(per "$reqs" "$reads"), context switches $(per "$reqs" "$(stat "$W/perf-$v" context-switches)") per request"
  done
done
# The pairs' ratios of rate and differences of CPU, and their medians.
ratios=() diffs=()
for round in $(seq "$ROUNDS"); do
  ratios+=("$(awk -v h="${RPS[$round.head]}" -v b="${RPS[$round.base]}" 'BEGIN {printf "%.3f", h/b}')")
  diffs+=("$(awk -v h="${CPU[$round.head]}" -v b="${CPU[$round.base]}" 'BEGIN {printf "%+.2f", h-b}')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "rate head/base, median of $ROUNDS pairs: $(median "${ratios[@]}") (${ratios[*]})"
echo "CPU µs per hit head-base, median of $ROUNDS pairs: $(median "${diffs[@]}") (${diffs[*]})"
