#!/usr/bin/env bash
# bench/dns.sh: Meridian's routing DNS beside gdnsd's geoip plugin, same PoPs, same generated
# MMDB, same machine, same run. Writes bench/results/dns.json.
#
# The MMDB is City-sized: the test cities plus NETWORKS /24s at 5,000 places, names in eight
# languages (bench/testdata/dnsbench writes it; it is built here, never checked in). Meridian
# routes a live fleet: FLEET_NODES nodes register in an embedded NATS and heartbeat once a
# second all through the runs, with load that moves but changes no answer, so the answer
# cache must survive them (the rebuild counts are in the results).
#
# Noise: the machine is shared, so each round runs every case back to back (the order
# alternates between rounds) and the headline ratio is the median of the per-round ratios,
# Meridian over gdnsd measured seconds apart. Each server's CPU time per query is measured too
# (from /proc): it moves much less with background load than queries/s does.
#
# Usage: bench/dns.sh            (from the repository root; root privileges to apt-get install)
# Env:   DURATION=6 (seconds per dnsperf run)  ROUNDS=5 (runs per case; medians are kept)
#        CLIENTS=8 (dnsperf -c)  THREADS=2 (dnsperf -T)
#        NETWORKS=3000000 (MMDB networks besides the test cities)  FLEET_NODES=20
#        MMDB_FILE (reuse a database dnsbench wrote with NETWORKS)  OUT (the results file)
#        BASELINE (another Meridian DNS binary, e.g. built from an older commit, taking the same
#        arguments as `meridian dns`: run beside the others on the same fleet, interleaved, for
#        a before/after comparison in one run)
set -euo pipefail

DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-5}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
NETWORKS=${NETWORKS:-3000000}
FLEET_NODES=${FLEET_NODES:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/bench/results/dns.json}
MERIDIAN_ADDR=127.0.0.81
GDNSD_ADDR=127.0.0.82
BASELINE_ADDR=127.0.0.83
PORT=5300

need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v gdnsd >/dev/null || need+=(gdnsd)
if ((${#need[@]})); then
	echo "installing ${need[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

LOAD_START=$(cut -d" " -f1-3 /proc/loadavg)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

# The Meridian binary: `meridian dns` once main.go wires it, else a two-line wrapper around
# dnsroute.NewCommand built from outside the tree.
cd "$ROOT"
if go build -o "$WORK/meridian" . 2>/dev/null && "$WORK/meridian" dns --help >/dev/null 2>&1; then
	DNS=("$WORK/meridian" dns)
else
	cat >"$WORK/main.go" <<'GO'
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/meridian-cdn/meridian/dnsroute"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dnsroute.NewCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
GO
	go build -o "$WORK/meridian-dns" "$WORK/main.go"
	DNS=("$WORK/meridian-dns")
fi

go build -o "$WORK/dnsbench" ./bench/testdata/dnsbench

# One City-sized MMDB for both servers.
mkdir -p "$WORK/gdnsd/geoip" "$WORK/gdnsd/zones" "$WORK/gdnsd/run" "$WORK/gdnsd/state"
if [[ -n ${MMDB_FILE:-} ]]; then
	cp "$MMDB_FILE" "$WORK/city.mmdb"
else
	"$WORK/dnsbench" gen-mmdb "$WORK/city.mmdb" "$NETWORKS"
fi
MMDB_BYTES=$(stat -c %s "$WORK/city.mmdb")
cp "$WORK/city.mmdb" "$WORK/gdnsd/geoip/city.mmdb"

# The live fleet: an embedded NATS with FLEET_NODES nodes over the example config's PoPs.
"$WORK/dnsbench" fleet "$ROOT/dnsroute/testdata/dns.yaml" "$FLEET_NODES" >"$WORK/nats.url" 2>"$WORK/fleet.log" &
PIDS+=($!)
for i in $(seq 100); do
	[[ -s $WORK/nats.url ]] && break
	if ((i == 100)); then
		echo "fleet did not come up" >&2
		cat "$WORK/fleet.log" >&2
		exit 1
	fi
	sleep 0.2
done
NATS_URL=$(head -1 "$WORK/nats.url")

# Meridian: the example config with the bench's address and MMDB, routing the live fleet.
ADMIN=$MERIDIAN_ADDR:9153
sed -e "s|^listen: .*|listen: $MERIDIAN_ADDR:$PORT|" -e "s|^mmdb: .*|mmdb: $WORK/city.mmdb|" \
	"$ROOT/dnsroute/testdata/dns.yaml" >"$WORK/dns.yaml"
printf 'admin_listen: %s\nnats: %s\n' "$ADMIN" "$NATS_URL" >>"$WORK/dns.yaml"

# gdnsd: the same PoPs (ids, coordinates, node addresses) from the same file.
awk -v addr="$GDNSD_ADDR:$PORT" -v run="$WORK/gdnsd/run" -v state="$WORK/gdnsd/state" '
/^  - id: / { id = $3; ids[++n] = id }
/^    lat: / { lat[id] = $2 }
/^    lon: / { lon[id] = $2 }
/ipv4: 192/ { split($0, a, "ipv4: "); split(a[2], b, ","); ips[id] = ips[id] (ips[id] ? ", " : "") b[1] }
/^default_pop: / { def = $2 }
END {
	printf "options => {\n  listen => [ %s ]\n  udp_threads => 2\n  tcp_threads => 1\n  run_dir => %s\n  state_dir => %s\n}\n", addr, run, state
	printf "plugins => {\n geoip => {\n  maps => {\n   cdn => {\n    geoip2_db => city.mmdb\n    datacenters => [%s", def
	for (i = 1; i <= n; i++) if (ids[i] != def) printf ", %s", ids[i]
	printf "]\n    auto_dc_coords => {\n"
	for (i = 1; i <= n; i++) printf "     %s => [ %s, %s ]\n", ids[i], lat[ids[i]], lon[ids[i]]
	printf "    }\n   }\n  }\n  resources => {\n   www => {\n    map => cdn\n    service_types => up\n    dcmap => {\n"
	for (i = 1; i <= n; i++) printf "     %s => [ %s ]\n", ids[i], ips[ids[i]]
	printf "    }\n   }\n  }\n }\n}\n"
}' "$ROOT/dnsroute/testdata/dns.yaml" >"$WORK/gdnsd/config"
cat >"$WORK/gdnsd/zones/cdn.example" <<'ZONE'
$TTL 3600
@     SOA ns1 hostmaster 1 3600 600 604800 60
@     NS  ns1
ns1   A   127.0.0.53
www   30  DYNA geoip!www
ZONE

"${DNS[@]}" --config "$WORK/dns.yaml" 2>"$WORK/meridian.log" &
PIDS+=($!)
declare -A PID
PID[meridian]=$!
gdnsd -c "$WORK/gdnsd" start 2>"$WORK/gdnsd.log" &
PIDS+=($!)
PID[gdnsd]=$!
SERVERS=(meridian gdnsd)
declare -A ADDR=([meridian]=$MERIDIAN_ADDR [gdnsd]=$GDNSD_ADDR [baseline]=$BASELINE_ADDR)
if [[ -n ${BASELINE:-} ]]; then
	sed -e "s|$MERIDIAN_ADDR|$BASELINE_ADDR|g" "$WORK/dns.yaml" >"$WORK/baseline.yaml"
	"$BASELINE" --config "$WORK/baseline.yaml" 2>"$WORK/baseline.log" &
	PIDS+=($!)
	PID[baseline]=$!
	SERVERS+=(baseline)
fi

# Wait until all answer.
for name in "${SERVERS[@]}"; do
	server=${ADDR[$name]}
	for i in $(seq 100); do
		echo "www.cdn.example. A" >"$WORK/probe.txt"
		if dnsperf -s "$server" -p $PORT -d "$WORK/probe.txt" -n 1 -t 1 2>/dev/null | grep -q "Queries completed: *1 "; then
			break
		fi
		if ((i == 100)); then
			echo "$server did not come up" >&2
			cat "$WORK"/*.log >&2
			exit 1
		fi
		sleep 0.2
	done
done

# Check that all send a London ECS client to lhr (192.0.2.11/12) before measuring; Meridian
# only once the live fleet is loaded.
for name in "${SERVERS[@]}"; do
	server=${ADDR[$name]}
	for i in $(seq 100); do
		got=$("$WORK/dnsbench" ask "$server:$PORT" 100.64.1.0/24 2>/dev/null || true)
		[[ $got == *192.0.2.1[12]* ]] && break
		if ((i == 100)); then
			echo "$server sends London to '$got', not lhr" >&2
			cat "$WORK"/*.log >&2
			exit 1
		fi
		sleep 0.2
	done
	echo "$server London ECS -> $got" >&2
done
metric() { # name [label value]: the sum of a metric's samples on Meridian's /metrics
	curl -s "http://$ADMIN/metrics" | awk -v n="$1" -v l="${2:-}" '{ split($1, a, "{") } a[1] == n && index($1, l) { s += $2 } END { printf "%d", s }'
}
KEPT0=$(metric meridian_dns_state_rebuilds_total 'cache="kept"')
DROPPED0=$(metric meridian_dns_state_rebuilds_total 'cache="dropped"')

echo "www.cdn.example. A" >"$WORK/queries.txt"
ECS=8:00011800644001 # EDNS option 8 (ECS): family 1, /24, 100.64.1.0 (London)

cputicks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # user + system, all threads

run() { # case server ecs(0|1) pid: prints qps, latency, lost, queries, server CPU ticks
	local extra=()
	if [[ $3 == 1 ]]; then extra=(-e -E "$ECS"); fi
	local c0 c1
	c0=$(cputicks "$4")
	dnsperf -s "$2" -p $PORT -d "$WORK/queries.txt" -c "$CLIENTS" -T "$THREADS" -l "$DURATION" "${extra[@]}" >"$WORK/$1.out" 2>&1
	c1=$(cputicks "$4")
	awk -v cpu=$((c1 - c0)) '
		/Queries completed:/ { q = $3 }
		/Queries lost:/ { lost = $3 }
		/Queries per second:/ { qps = $4 }
		/Average Latency/ { lat = $4 }
		END { print qps, lat, lost, q, cpu }' "$WORK/$1.out"
}

median() { sort -g | awk '{ r[NR] = $1 } END { if (NR) print r[int((NR + 1) / 2)]; else print "null" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "null" }'; }
# us_per_query CPU_TICKS QUERIES: server CPU microseconds per answered query
us_per_query() { awk -v t="$1" -v q="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (q > 0) printf "%.2f", t * 1e6 / hz / q; else print "null" }'; }

declare -A QPS LAT LOST CPUQ ROUNDQ ROUNDCPU RATIOS
CASES=()
for name in "${SERVERS[@]}"; do CASES+=("${name}_ecs" "${name}_noecs"); done
# Every round runs every case back to back, so that background load hits all servers alike;
# odd rounds go in one order and even rounds in the reverse, so that no server always runs
# right after another.
for round in $(seq "$ROUNDS"); do
	order=()
	for ecs in ecs noecs; do for name in "${SERVERS[@]}"; do order+=("${name}_$ecs"); done; done
	if ((round % 2 == 0)); then
		for ((i = ${#order[@]} - 1; i >= 0; i--)); do rev+=("${order[i]}"); done
		order=("${rev[@]}")
		rev=()
	fi
	for case in "${order[@]}"; do
		name=${case%_*}
		ecs=1
		[[ $case == *_noecs ]] && ecs=0
		read -r qps lat lost queries cpu < <(run "$case" "${ADDR[$name]}" "$ecs" "${PID[$name]}")
		ROUNDQ[$case,$round]=$qps
		ROUNDCPU[$case,$round]=$(us_per_query "$cpu" "$queries")
		LAT[$case]+="$lat "
		LOST[$case]+="$lost "
		printf "round %d %-16s %10.0f q/s  avg latency %ss  lost %s  server CPU %s us/query\n" \
			"$round" "$case" "$qps" "$lat" "$lost" "${ROUNDCPU[$case,$round]}"
	done
	for ecs in ecs noecs; do
		for name in meridian baseline; do
			[[ -n ${ROUNDQ[${name}_$ecs,$round]:-} ]] || continue
			RATIOS[${name}_$ecs]+="$(ratio "${ROUNDQ[${name}_$ecs,$round]}" "${ROUNDQ[gdnsd_$ecs,$round]}") "
		done
	done
done
for case in "${CASES[@]}"; do
	QPS[$case]=$(for r in $(seq "$ROUNDS"); do echo "${ROUNDQ[$case,$r]}"; done | median)
	CPUQ[$case]=$(for r in $(seq "$ROUNDS"); do echo "${ROUNDCPU[$case,$r]}"; done | median)
	LAT[$case]=$(tr ' ' '\n' <<<"${LAT[$case]}" | grep . | median)
	LOST[$case]=$(tr ' ' '\n' <<<"${LOST[$case]}" | grep . | median)
done
R_ECS=$(tr ' ' '\n' <<<"${RATIOS[meridian_ecs]}" | grep . | median)
R_NOECS=$(tr ' ' '\n' <<<"${RATIOS[meridian_noecs]}" | grep . | median)
list() { tr ' ' '\n' <<<"$1" | grep . | paste -sd, -; } # "a b c " -> a,b,c

KEPT=$(($(metric meridian_dns_state_rebuilds_total 'cache="kept"') - KEPT0))
DROPPED=$(($(metric meridian_dns_state_rebuilds_total 'cache="dropped"') - DROPPED0))
HITS=$(metric meridian_dns_cache_hits_total)
MISSES=$(metric meridian_dns_cache_misses_total)
echo "during the runs: $KEPT fleet-driven state rebuilds kept the answer cache, $DROPPED dropped it; $HITS hits, $MISSES misses"

echo
echo "== summary: median of $ROUNDS rounds (load average $LOAD_START at start, $(cut -d" " -f1-3 /proc/loadavg) at end) =="
printf "%-10s %16s %16s %22s %22s\n" "" "q/s with ECS" "q/s without ECS" "CPU us/query with ECS" "CPU us/query without"
for name in "${SERVERS[@]}"; do
	printf "%-10s %16.0f %16.0f %22s %22s\n" "$name" "${QPS[${name}_ecs]}" "${QPS[${name}_noecs]}" "${CPUQ[${name}_ecs]}" "${CPUQ[${name}_noecs]}"
done
echo "Meridian/gdnsd queries/s, median of the per-round ratios (target >= 1.0):"
echo "  with ECS:    $R_ECS   (rounds: $(list "${RATIOS[meridian_ecs]}"))"
echo "  without ECS: $R_NOECS   (rounds: $(list "${RATIOS[meridian_noecs]}"))"
if [[ -n ${BASELINE:-} ]]; then
	echo "baseline/gdnsd: with ECS $(tr ' ' '\n' <<<"${RATIOS[baseline_ecs]}" | grep . | median) (rounds: $(list "${RATIOS[baseline_ecs]}")), without ECS $(tr ' ' '\n' <<<"${RATIOS[baseline_noecs]}" | grep . | median) (rounds: $(list "${RATIOS[baseline_noecs]}"))"
fi

mkdir -p "$(dirname "$OUT")"
results() { # name ecs: one JSON object
	local c=$1_$2 rounds
	rounds=$(for r in $(seq "$ROUNDS"); do echo "${ROUNDQ[$c,$r]}"; done | paste -sd, -)
	printf '{"qps": %s, "qps_rounds": [%s], "avg_latency_s": %s, "lost": %s, "cpu_us_per_query": %s}' \
		"${QPS[$c]}" "$rounds" "${LAT[$c]}" "${LOST[$c]}" "${CPUQ[$c]}"
}
{
	cat <<JSON
{
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "machine": {"cpus": $(nproc), "kernel": "$(uname -r)", "load_average_at_start": "$LOAD_START", "load_average_at_end": "$(cut -d" " -f1-3 /proc/loadavg)"},
  "command": "bench/dns.sh (dnsperf -c $CLIENTS -T $THREADS -l $DURATION, $ROUNDS interleaved rounds, medians, one name, London ECS 100.64.1.0/24)",
  "mmdb": {"networks": $((NETWORKS + 76)), "bytes": $MMDB_BYTES},
  "meridian_fleet": {"nodes": $FLEET_NODES, "heartbeat_s": 1, "state_rebuilds_kept": $KEPT, "state_rebuilds_dropped": $DROPPED, "cache_hits": $HITS, "cache_misses": $MISSES},
  "dnsperf": "$(dpkg-query -W -f='${Version}' dnsperf 2>/dev/null)",
  "gdnsd": "$(dpkg-query -W -f='${Version}' gdnsd 2>/dev/null)",
  "results": {
JSON
	sep=""
	for name in "${SERVERS[@]}"; do
		printf '%s    "%s": {"ecs": %s,\n      "no_ecs": %s}' "$sep" "$name" "$(results "$name" ecs)" "$(results "$name" noecs)"
		sep=$',\n'
	done
	cat <<JSON

  },
  "ratio_meridian_over_gdnsd": {"ecs": $R_ECS, "no_ecs": $R_NOECS, "ecs_rounds": [$(list "${RATIOS[meridian_ecs]}")], "no_ecs_rounds": [$(list "${RATIOS[meridian_noecs]}")],
    "how": "median of the per-round ratios"},
  "target_ratio": 1.0
}
JSON
} >"$OUT"
echo "wrote $OUT"
