#!/usr/bin/env bash
# bench/cache-tests.sh: the http-tests cache-tests suite (https://cache-tests.fyi, RFC 9111
# behaviour of HTTP caches) against `meridian edge` with the default config and one host, side
# by side with the results the suite publishes for nginx, Varnish, Apache Traffic Server and the
# other caches it has been run on.
#
# It installs Node.js and npm from Debian if missing. The suite: a checkout given as
# CACHE_TESTS_DIR (with its npm dependencies installed: `npm i --omit=dev` in it; it is copied,
# not changed); else github.com/http-tests/cache-tests at $CACHE_TESTS_REV, cloned, with its
# dependencies from npm; else, where GitHub cannot be reached, npm's http-cache-tests@0.4.5,
# whose tests are older (Age parsing and stale-close-* have been corrected upstream since) and
# whose published results are older: its figures do not compare with docs/edge.md's. The suite's origin server
# is made to listen on a loopback address only (its own code listens on every interface), the
# edge in front of it with nothing set but its listeners and `hosts:`. It prints, by kind of test
# (required, optimal, check), how many Meridian passes beside each published cache, then every
# test Meridian does not pass with the caches that do, and writes Meridian's results to
# bench/results/cache-tests.json. The edge's breaker must stay shut through the run (the suite
# drops connections on purpose); the script says if it opened.
#
# TIERS=2 puts a shield node (PoP "ash", with the same one host) between the edge and the
# origin, both with the default config but for the shield and a shared peer key: what a
# client sees through a tiered fleet. The results then go to bench/results/cache-tests-2.json.
#
# Usage: bench/cache-tests.sh [test id]   (one test, with the suite's dump of the exchange)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/ab-lib.sh

ab_need node nodejs npm npm
ADDR=127.0.0.86
ORIGIN_PORT=18200
EDGE_PORT=18201
ADMIN_PORT=18202
SHIELD_PORT=18203
TIERS=${TIERS:-1}
case $TIERS in 1|2) ;; *) echo "TIERS must be 1 or 2" >&2; exit 2 ;; esac

CACHE_TESTS_REV=${CACHE_TESTS_REV:-b55b8bd} # 2026-11, the run in docs/edge.md
if [ -n "${CACHE_TESTS_DIR:-}" ]; then
  cp -r "$CACHE_TESTS_DIR" "$W/suite"
  SUITE=$W/suite
  VERSION="checkout $(git -C "$CACHE_TESTS_DIR" rev-parse --short HEAD 2>/dev/null || echo "of $CACHE_TESTS_DIR")"
elif timeout 120 git clone -q https://github.com/http-tests/cache-tests "$W/suite" 2>/dev/null &&
  git -C "$W/suite" checkout -q "$CACHE_TESTS_REV" &&
  (cd "$W/suite" && npm install --silent --omit=dev --no-audit --no-fund >/dev/null); then
  SUITE=$W/suite
  VERSION="github.com/http-tests/cache-tests $CACHE_TESTS_REV"
else
  echo "github.com/http-tests/cache-tests cannot be cloned: using npm's older http-cache-tests@0.4.5" >&2
  (cd "$W" && npm install --silent --omit=dev --no-audit --no-fund http-cache-tests@0.4.5 >/dev/null)
  SUITE=$W/node_modules/http-cache-tests
  VERSION="npm http-cache-tests@0.4.5"
fi
SERVER=$(find "$SUITE" -path "$SUITE/node_modules" -prune -o -name server.mjs -path '*server/*' -print | head -1)
CLI=$(find "$SUITE" -path "$SUITE/node_modules" -prune -o -name cli.mjs -print | head -1)
[ -n "$SERVER" ] && [ -n "$CLI" ] || { echo "no server.mjs or cli.mjs in $SUITE" >&2; exit 1; }
sed -i "s/server\.listen(port)/server.listen(port, '$ADDR')/" "$SERVER"
grep -q "server.listen(port, '$ADDR')" "$SERVER" || { echo "could not bind the suite's server to $ADDR" >&2; exit 1; }

go build -o "$W/meridian" .
npm_config_protocol=http npm_config_port=$ORIGIN_PORT npm_config_pidfile="$W/suite.pid" \
  node "$SERVER" >"$W/suite-server.log" 2>&1 &
SUITE_PID=$!
PIDS+=($SUITE_PID)
if [ "$TIERS" = 2 ]; then
  head -c 48 /dev/urandom | base64 >"$W/peer.key"
  printf '%s\n' "pop: ash" "node: ash-1" "listen: $ADDR:$SHIELD_PORT" 'admin_listen: "off"' "peer_key_file: $W/peer.key" \
    "hosts:" "  - host: $ADDR" "    origin: http://$ADDR:$ORIGIN_PORT" >"$W/shield.yaml"
  "$W/meridian" edge --config "$W/shield.yaml" 2>"$W/shield.log" &
  SHIELD_PID=$!
  PIDS+=($SHIELD_PID)
fi
{
  printf '%s\n' "listen: $ADDR:$EDGE_PORT" "admin_listen: $ADDR:$ADMIN_PORT"
  [ "$TIERS" = 1 ] || printf '%s\n' "peer_key_file: $W/peer.key" "shields:" "  ash: [{id: ash-1, addr: \"$ADDR:$SHIELD_PORT\"}]"
  printf '%s\n' "hosts:" "  - host: $ADDR" "    origin: http://$ADDR:$ORIGIN_PORT"
  [ "$TIERS" = 1 ] || echo "    shield: ash"
} >"$W/edge.yaml"
"$W/meridian" edge --config "$W/edge.yaml" 2>"$W/edge.log" &
EDGE_PID=$!
PIDS+=($EDGE_PID)
for _ in $(seq 100); do
  curl -s -o /dev/null "http://$ADDR:$EDGE_PORT/" && curl -s -o /dev/null "http://$ADDR:$ORIGIN_PORT/" && break
  sleep 0.1
done
# Both must be the ones started here (a leftover on the same address would answer instead).
for p in "suite server:$SUITE_PID:$W/suite-server.log" "edge:$EDGE_PID:$W/edge.log" ${SHIELD_PID:+"shield:$SHIELD_PID:$W/shield.log"}; do
  IFS=: read -r what pid log <<<"$p"
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "the $what did not start:" >&2
    cat "$log" >&2
    exit 1
  fi
done

run_cli() { npm_config_base="http://$ADDR:$EDGE_PORT" npm_config_id="$1" npm_package_config_id="$1" node --no-warnings "$CLI"; }
if [ -n "${1:-}" ]; then
  run_cli "$1"
  exit
fi
echo "cache-tests ($VERSION) against meridian edge at $ADDR:$EDGE_PORT, origin $ADDR:$ORIGIN_PORT, tiers $TIERS" >&2
run_cli "" >"$W/meridian.json"

# Each test's kind and name, from the suite itself.
cat >"$W/meta.mjs" <<'JS'
import { pathToFileURL } from 'url'
const suite = process.argv[2]
const { default: index } = await import(pathToFileURL(suite + '/tests/index.mjs'))
const { default: caches } = await import(pathToFileURL(suite + '/results/index.mjs'))
const tests = {}
for (const s of index) for (const t of s.tests) tests[t.id] = { kind: t.kind || 'required', name: t.name }
console.log(JSON.stringify({ tests, caches }))
JS
node "$W/meta.mjs" "$SUITE" >"$W/meta.json"

rejections=$(curl -s "http://$ADDR:$ADMIN_PORT/metrics" | awk '/^meridian_edge_upstream_breaker_rejections_total/ {s += $NF} END {print s + 0}')
mkdir -p bench/results
python3 - "$W" "$SUITE" "$VERSION" "$rejections" "$TIERS" <<'PY'
import datetime, json, os, platform, sys
w, suite, version, rejections, tiers = sys.argv[1], sys.argv[2], sys.argv[3], int(float(sys.argv[4])), int(sys.argv[5])
meta = json.load(open(os.path.join(w, 'meta.json')))
tests = meta['tests']
ours = json.load(open(os.path.join(w, 'meridian.json')))
others = {}
for c in meta['caches']:
    if c.get('type') not in ('rev-proxy', 'cdn'):
        continue
    p = os.path.join(suite, 'results', c['file'])
    if os.path.exists(p):
        others[c['name']] = json.load(open(p))
passed = lambda r, k: r.get(k) is True
kinds = ['required', 'optimal', 'check']
names = ['Meridian'] + list(others)
print(f"{'kind':10} {'tests':>5} " + ' '.join(f'{n[:9]:>9}' for n in names))
for kind in kinds:
    ids = [k for k in ours if tests.get(k, {}).get('kind') == kind]
    row = [sum(passed(ours, k) for k in ids)] + [sum(passed(r, k) for k in ids) for r in others.values()]
    print(f"{kind:10} {len(ids):5} " + ' '.join(f'{n:9}' for n in row))
print('\nNot passed by Meridian (the published caches that pass it in brackets):')
for kind in kinds:
    for k in sorted(ours):
        if tests.get(k, {}).get('kind') != kind or passed(ours, k):
            continue
        who = [n for n, r in others.items() if passed(r, k)]
        why = ours[k][1] if isinstance(ours[k], list) and len(ours[k]) > 1 else ours[k]
        print(f"  {kind:8} {k} [{', '.join(who)}]: {why}")
print(f"\nbreaker rejections during the run: {rejections}" + ('' if rejections == 0 else '  <- the breaker opened'))
out = {
    'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    'suite': version, 'machine': f"{os.cpu_count()} cores, {platform.system()} {platform.release()}",
    'breaker_rejections': rejections, 'tiers': tiers,
    'passed': {kind: sum(passed(ours, k) for k in ours if tests.get(k, {}).get('kind') == kind) for kind in kinds},
    'results': ours,
}
name = 'bench/results/cache-tests.json' if tiers == 1 else f'bench/results/cache-tests-{tiers}.json'
json.dump(out, open(name, 'w'), indent=1, sort_keys=True)
PY
