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
# Usage: bench/dns.sh            (from the repository root; root privileges to apt-get install)
# Env:   DURATION=10 (seconds per dnsperf run)  ROUNDS=3 (runs per case; the median is kept)
#        CLIENTS=8 (dnsperf -c)  THREADS=2 (dnsperf -T)
#        NETWORKS=3000000 (MMDB networks besides the test cities)  FLEET_NODES=20
#        MMDB_FILE (reuse a database dnsbench wrote with NETWORKS)  OUT (the results file)
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
NETWORKS=${NETWORKS:-3000000}
FLEET_NODES=${FLEET_NODES:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/bench/results/dns.json}
MERIDIAN_ADDR=127.0.0.81
GDNSD_ADDR=127.0.0.82
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
gdnsd -c "$WORK/gdnsd" start 2>"$WORK/gdnsd.log" &
PIDS+=($!)

# Wait until both answer.
for server in $MERIDIAN_ADDR $GDNSD_ADDR; do
	for i in $(seq 100); do
		echo "www.cdn.example. A" >"$WORK/probe.txt"
		if dnsperf -s "$server" -p $PORT -d "$WORK/probe.txt" -n 1 -t 1 2>/dev/null | grep -q "Queries completed: *1 "; then
			break
		fi
		if ((i == 100)); then
			echo "$server did not come up" >&2
			cat "$WORK/meridian.log" "$WORK/gdnsd.log" >&2
			exit 1
		fi
		sleep 0.2
	done
done

# Check that both send a London ECS client to lhr (192.0.2.11/12) before measuring; Meridian
# only once the live fleet is loaded.
for server in $MERIDIAN_ADDR $GDNSD_ADDR; do
	for i in $(seq 100); do
		got=$("$WORK/dnsbench" ask "$server:$PORT" 100.64.1.0/24 2>/dev/null || true)
		[[ $got == *192.0.2.1[12]* ]] && break
		if ((i == 100)); then
			echo "$server sends London to '$got', not lhr" >&2
			cat "$WORK/meridian.log" "$WORK/gdnsd.log" >&2
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
ECS="-E 8:00011800644001"

run() { # name server ecs(0|1)
	local extra=()
	if [[ $3 == 1 ]]; then extra=(-e $ECS); fi
	dnsperf -s "$2" -p $PORT -d "$WORK/queries.txt" -c "$CLIENTS" -T "$THREADS" -l "$DURATION" "${extra[@]}" >"$WORK/$1.out" 2>&1
	local qps lat lost
	qps=$(awk '/Queries per second:/ {print $4}' "$WORK/$1.out")
	lat=$(awk '/Average Latency/ {print $4}' "$WORK/$1.out")
	lost=$(awk '/Queries lost:/ {print $3}' "$WORK/$1.out")
	echo "$1 $qps $lat $lost"
}

declare -A QPS LAT LOST ALL
# Interleave cases and rounds so that background load hits both servers alike; keep the
# median round of each case.
for round in $(seq "$ROUNDS"); do
	for case in meridian_ecs gdnsd_ecs gdnsd_noecs meridian_noecs; do
		server=$MERIDIAN_ADDR
		[[ $case == gdnsd_* ]] && server=$GDNSD_ADDR
		ecs=1
		[[ $case == *_noecs ]] && ecs=0
		read -r name qps lat lost < <(run "$case" "$server" "$ecs")
		ALL[$name]+="$qps $lat $lost"$'\n'
		printf "round %d %-16s %12s q/s  avg latency %ss  lost %s\n" "$round" "$name" "$qps" "$lat" "$lost"
	done
done
for name in meridian_ecs gdnsd_ecs gdnsd_noecs meridian_noecs; do
	read -r QPS[$name] LAT[$name] LOST[$name] < <(printf "%s" "${ALL[$name]}" | sort -g | awk '{ r[NR] = $0 } END { print r[int((NR + 1) / 2)] }')
	printf "median %-16s %12s q/s  avg latency %ss\n" "$name" "${QPS[$name]}" "${LAT[$name]}"
done

KEPT=$(($(metric meridian_dns_state_rebuilds_total 'cache="kept"') - KEPT0))
DROPPED=$(($(metric meridian_dns_state_rebuilds_total 'cache="dropped"') - DROPPED0))
HITS=$(metric meridian_dns_cache_hits_total)
MISSES=$(metric meridian_dns_cache_misses_total)
echo "during the runs: $KEPT fleet-driven state rebuilds kept the answer cache, $DROPPED dropped it; $HITS hits, $MISSES misses"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "null" }'; }
R_ECS=$(ratio "${QPS[meridian_ecs]}" "${QPS[gdnsd_ecs]}")
R_NOECS=$(ratio "${QPS[meridian_noecs]}" "${QPS[gdnsd_noecs]}")
echo "Meridian/gdnsd queries/s: with ECS $R_ECS, without ECS $R_NOECS (target >= 0.8 with ECS)"

mkdir -p "$(dirname "$OUT")"
cat >"$OUT" <<JSON
{
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "machine": {"cpus": $(nproc), "kernel": "$(uname -r)", "load_average_at_start": "$LOAD_START", "load_average_at_end": "$(cut -d" " -f1-3 /proc/loadavg)"},
  "command": "bench/dns.sh (dnsperf -c $CLIENTS -T $THREADS -l $DURATION, median of $ROUNDS interleaved rounds, one name, London ECS 100.64.1.0/24)",
  "mmdb": {"networks": $((NETWORKS + 76)), "bytes": $MMDB_BYTES},
  "meridian_fleet": {"nodes": $FLEET_NODES, "heartbeat_s": 1, "state_rebuilds_kept": $KEPT, "state_rebuilds_dropped": $DROPPED, "cache_hits": $HITS, "cache_misses": $MISSES},
  "dnsperf": "$(dpkg-query -W -f='${Version}' dnsperf 2>/dev/null)",
  "gdnsd": "$(dpkg-query -W -f='${Version}' gdnsd 2>/dev/null)",
  "results": {
    "meridian": {"ecs": {"qps": ${QPS[meridian_ecs]}, "avg_latency_s": ${LAT[meridian_ecs]}, "lost": ${LOST[meridian_ecs]}},
                 "no_ecs": {"qps": ${QPS[meridian_noecs]}, "avg_latency_s": ${LAT[meridian_noecs]}, "lost": ${LOST[meridian_noecs]}}},
    "gdnsd": {"ecs": {"qps": ${QPS[gdnsd_ecs]}, "avg_latency_s": ${LAT[gdnsd_ecs]}, "lost": ${LOST[gdnsd_ecs]}},
              "no_ecs": {"qps": ${QPS[gdnsd_noecs]}, "avg_latency_s": ${LAT[gdnsd_noecs]}, "lost": ${LOST[gdnsd_noecs]}}}
  },
  "ratio_meridian_over_gdnsd": {"ecs": $R_ECS, "no_ecs": $R_NOECS},
  "target_ecs_ratio": 0.8
}
JSON
echo "wrote $OUT"
