#!/usr/bin/env bash
# bench/dns-compliance.sh: ISC's DNS compliance test, genreport (the EDNS and protocol tests that
# registries run against the servers of every zone they delegate: ednscomp.isc.org), against
# `meridian dns` with the example configuration (dnsroute/testdata/dns.yaml: the zone
# cdn.example.) and a generated City database, on a loopback address. It runs the full, common
# and type tests (`genreport -t -f -c`) over UDP and TCP, prints every test with its result,
# writes the report line to bench/results/dns-compliance.txt and exits 1 if any test is not ok.
#
# Then a real resolver in front: Unbound (Debian's package) with its ECS module
# (subnetcache), the zone as a stub zone, asked with dig for www.cdn.example. by clients in
# London, Tokyo and Sydney (ECS subnets of the generated database): each must get its PoP's
# nodes with the scope the server gave (/16), a second London /24 must be answered from
# Unbound's cache (the server counts no new query), and a client without ECS (Unbound sends
# 127.0.0.0/24, which no database holds) gets the default PoP. Then NXDOMAIN and an empty
# non-terminal through it, each with the SOA. Any difference exits 1.
#
# genreport is C: the script installs gcc, make, autoconf, automake, pkg-config and libssl-dev
# from Debian if missing and builds it. Its source: a checkout given as GENREPORT_DIR (copied,
# not changed); else $GENREPORT_REPO at $GENREPORT_REV, cloned. The default is the GitHub copy
# of ISC's repository that docs/dns.md's run used; ISC's own is
# https://gitlab.isc.org/isc-projects/DNS-Compliance-Testing (set both variables to use it).
#
# Usage: bench/dns-compliance.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/ab-lib.sh

ab_need gcc gcc make make autoreconf autoconf automake automake pkg-config pkg-config \
  unbound unbound dig bind9-dnsutils curl curl
dpkg -s libssl-dev >/dev/null 2>&1 ||
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev >/dev/null; }

ADDR=127.0.0.87
PORT=18253
ADMIN=127.0.0.87:18254
RESOLVER=127.0.0.89
RESOLVER_PORT=18353
GENREPORT_REPO=${GENREPORT_REPO:-https://github.com/damaestro/DNS-Compliance-Testing}
GENREPORT_REV=${GENREPORT_REV:-2c47450c61bb919169b9d8949f3bffa88eebecca} # 2019-01, ISC's genreport with a Dockerfile
if [ -n "${GENREPORT_DIR:-}" ]; then
  cp -r "$GENREPORT_DIR" "$W/gr"
  VERSION="checkout $(git -C "$GENREPORT_DIR" rev-parse --short HEAD 2>/dev/null || echo "of $GENREPORT_DIR")"
else
  timeout 300 git clone -q "$GENREPORT_REPO" "$W/gr"
  git -C "$W/gr" checkout -q "$GENREPORT_REV"
  VERSION="$GENREPORT_REPO $GENREPORT_REV"
fi
# genreport calls libresolv's ns_* functions, which configure does not find in glibc's libc.
(cd "$W/gr" && autoreconf -fi >/dev/null 2>&1 && ./configure -q >/dev/null && make -s LIBS="-lresolv -lssl -lcrypto" >/dev/null 2>&1) ||
  { echo "genreport did not build in $W/gr" >&2; exit 1; }

go build -o "$W/meridian" .
"$W/meridian" dns gen-mmdb "$W/city.mmdb" >/dev/null
sed -e "s|^mmdb: .*|mmdb: $W/city.mmdb|" -e "s|^listen: .*|listen: $ADDR:$PORT\nadmin_listen: $ADMIN|" dnsroute/testdata/dns.yaml >"$W/dns.yaml"
"$W/meridian" dns --config "$W/dns.yaml" 2>"$W/dns.log" &
DNS_PID=$!
PIDS+=($DNS_PID)
for _ in $(seq 50); do grep -q "dns serving" "$W/dns.log" && break; sleep 0.1; done
grep -q "dns serving" "$W/dns.log" || { echo "meridian dns did not start:" >&2; cat "$W/dns.log" >&2; exit 1; }

# One line: "zone. @address (server): test=result test=result ...".
REPORT=$(echo "cdn.example ns1.cdn.example $ADDR" | timeout 300 "$W/gr/genreport" -P "$PORT" -t -f -c -s)
kill -0 "$DNS_PID" 2>/dev/null || { echo "meridian dns exited during the run:" >&2; cat "$W/dns.log" >&2; exit 1; }
[[ $REPORT == *"="* ]] || { echo "genreport reported nothing: $REPORT" >&2; exit 1; }
echo "genreport ($VERSION) against meridian dns at $ADDR:$PORT:"
# A result is "ok", or the tags of what was wrong (e.g. "rd": RD set where it is not defined),
# with the EDNS options the reply carried after a comma (e.g. "ok,subnet").
tr ' ' '\n' <<<"$REPORT" | grep '=' | awk -F= '{split($2, r, ","); printf "  %-14s %s\n", $1, $2; n++; if (r[1] != "ok") bad++}
  END {printf "%d tests, %d not ok\n", n, bad}'
{
  echo "# genreport -t -f -c -s against meridian dns ($(git rev-parse --short HEAD)$(git diff --quiet || echo ', modified')), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "# $VERSION"
  echo "$REPORT"
} >bench/results/dns-compliance.txt
FAILED=0
if tr ' ' '\n' <<<"$REPORT" | grep '=' | grep -qv '=ok'; then
  FAILED=1
fi

# ---- Unbound in front ----
cat >"$W/unbound.conf" <<UNBOUND
server:
  interface: $RESOLVER
  port: $RESOLVER_PORT
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$W"
  pidfile: "$W/unbound.pid"
  use-syslog: no
  logfile: "$W/unbound.log"
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  do-ip6: no
  module-config: "subnetcache iterator"
  send-client-subnet: $ADDR
  client-subnet-always-forward: yes
  max-client-subnet-ipv4: 24
  domain-insecure: "cdn.example"
stub-zone:
  name: "cdn.example"
  stub-addr: $ADDR@$PORT
UNBOUND
unbound -c "$W/unbound.conf" &
PIDS+=($!)
ask() { dig @$RESOLVER -p $RESOLVER_PORT +tries=1 +time=3 "$@"; }
for _ in $(seq 50); do ask +short cdn.example SOA >/dev/null 2>&1 && break; sleep 0.1; done
queries() { # the server's queries answered so far
  curl -s "http://$ADMIN/metrics" | awk '/^meridian_dns_queries_total/ {n += $NF} END {print n + 0}'
}
echo "Unbound $(unbound -V | awk 'NR == 1 {print $2}') in front, with ECS:"
check() { # check NAME WANT GOT
  if [ "$2" = "$3" ]; then
    printf '  %-40s ok (%s)\n' "$1" "$3"
  else
    printf '  %-40s NOT OK: %s, want %s\n' "$1" "$3" "$2"
    FAILED=1
  fi
}
answer() { ask +subnet="$1" www.cdn.example A +short | sort | tr '\n' ' ' | sed 's/ $//'; }
scope() { ask +subnet="$1" www.cdn.example A | awk '/CLIENT-SUBNET/ {print $3}'; }
check "London client (100.64.1.0/24)" "192.0.2.11 192.0.2.12" "$(answer 100.64.1.0/24)"
check "its ECS scope" "100.64.1.0/24/16" "$(scope 100.64.1.0/24)"
check "Tokyo client (100.72.5.0/24)" "192.0.2.31 192.0.2.32" "$(answer 100.72.5.0/24)"
check "Sydney client (100.98.7.0/24)" "192.0.2.61 192.0.2.62" "$(answer 100.98.7.0/24)"
before=$(queries)
[ "$before" -gt 0 ] || { echo "  the server's metrics at $ADMIN count no query" >&2; FAILED=1; }
check "another London /24 (100.64.200.0/24)" "192.0.2.11 192.0.2.12" "$(answer 100.64.200.0/24)"
check "  from Unbound's cache (server queries)" "$before" "$(queries)"
check "no ECS (Unbound sends 127.0.0.0/24)" "192.0.2.71 192.0.2.72" "$(ask www.cdn.example A +short | sort | tr '\n' ' ' | sed 's/ $//')"
check "NXDOMAIN, with the SOA" "NXDOMAIN SOA" "$(ask nope.cdn.example A | awk '/status:/ {gsub(",", "", $6); s = $6} $4 == "SOA" && /^cdn/ {a = " SOA"} END {print s a}')"
check "empty non-terminal: NODATA, with the SOA" "NOERROR SOA" "$(ask assets.cdn.example A | awk '/status:/ {gsub(",", "", $6); s = $6} /ANSWER: [1-9]/ {s = s " answer"} $4 == "SOA" && /^cdn/ {a = " SOA"} END {print s a}')"
kill -0 "$DNS_PID" 2>/dev/null || { echo "meridian dns exited during the run" >&2; exit 1; }
exit $FAILED
