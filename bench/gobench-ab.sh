#!/usr/bin/env bash
# bench/gobench-ab.sh: one Go benchmark of two revisions, the two test binaries run in turn,
# PAIRS times, the order swapped every other pair; prints each run's figures and, per metric,
# the median of the pairs' differences (head minus base). On this 2-core VM the A/B scripts
# that drive the servers over loopback (miss-ab.sh) vary by 10-30 µs per miss from run to run;
# an in-process benchmark such as BenchmarkMiss, whose cpu-ns/op is this process's CPU time
# per operation, resolves a change of 1-2 µs (docs/benchmarks.md, "Twenty-sixth pass").
#
# Usage: bench/gobench-ab.sh BASE [HEAD]   (git revisions; HEAD defaults to the work tree)
# PKG (default ./edge/), BENCH (default 'BenchmarkMiss/size=1024/parallel'), BENCHTIME
# (default 40000x) and PAIRS (default 4) pick what runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?usage: bench/gobench-ab.sh BASE [HEAD]}
HEAD=${2:-}
PKG=${PKG:-./edge/}
BENCH=${BENCH:-BenchmarkMiss/size=1024/parallel}
BENCHTIME=${BENCHTIME:-40000x}
PAIRS=${PAIRS:-4}

W=$(mktemp -d)
cleanup() {
  git worktree remove --force "$W/src-base" 2>/dev/null || true
  git worktree remove --force "$W/src-head" 2>/dev/null || true
  git worktree prune 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

declare -A DIR=()
# build REV NAME: $W/NAME.test, PKG's test binary at REV (the work tree if REV is empty), and
# DIR[NAME], the package's directory in that tree: the benchmark runs there, as go test runs
# it, with that revision's testdata.
build() {
  local src=.
  if [ -n "$1" ]; then
    git worktree add -q --detach "$W/src-$2" "$1"
    src=$W/src-$2
  fi
  (cd "$src" && go test -c -o "$W/$2.test" "$PKG")
  DIR[$2]=$(cd "$src" && go list -f '{{.Dir}}' "$PKG")
}
build "$BASE" base
build "$HEAD" head

# Each level of the name matched whole and literally: go test splits the pattern at slashes.
pattern="^$(sed -e 's/[][\.*^$+?(){}|]/\\&/g' -e 's|/|$/^|g' <<<"$BENCH")\$"
run() { # run NAME: one run's "metric value" pairs on one line; one benchmark, or it fails
  local out lines
  if ! out=$(cd "${DIR[$1]}" && "$W/$1.test" -test.run '^$' -test.bench "$pattern" -test.benchtime "$BENCHTIME" 2>&1); then
    printf '%s: the benchmark failed:\n%s\n' "$1" "$out" >&2
    return 1
  fi
  lines=$(grep -c '^Benchmark' <<<"$out" || true)
  if [ "$lines" != 1 ]; then
    printf '%s: %s benchmarks matched %s, not one:\n%s\n' "$1" "$lines" "$BENCH" "$out" >&2
    return 1
  fi
  awk '/^Benchmark/ {for (i = 3; i < NF; i += 2) printf "%s %s ", $(i+1), $i; print ""}' <<<"$out"
}
for p in $(seq "$PAIRS"); do
  order="base head"
  ((p % 2)) || order="head base"
  for v in $order; do
    line=$(run "$v")
    printf 'pair %d %-4s %s\n' "$p" "$v" "$line"
    echo "$p $v $line" >>"$W/runs"
  done
done
# The median over the pairs of head minus base, per metric.
awk '{for (i = 3; i < NF; i += 2) { v[$1, $2, $i] = $(i+1); m[$i] = 1 }; if ($1 + 0 > n) n = $1 + 0}
  END {
    for (k in m) {
      split("", d)
      c = 0
      for (p = 1; p <= n; p++) if (((p, "head", k) in v) && ((p, "base", k) in v)) d[++c] = v[p, "head", k] - v[p, "base", k]
      if (c == 0) { printf "%-12s reported by one side only\n", k; continue }
      for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (d[j] < d[i]) { t = d[i]; d[i] = d[j]; d[j] = t }
      med = c % 2 ? d[(c + 1) / 2] : (d[c / 2] + d[c / 2 + 1]) / 2
      printf "%-12s head - base, median of %d pairs: %+.1f (", k, c, med
      for (i = 1; i <= c; i++) printf "%s%+.1f", (i > 1 ? " " : ""), d[i]
      print ")"
    }
  }' "$W/runs" | sort
