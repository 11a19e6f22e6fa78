#!/usr/bin/env bash
# Debian's Prometheus against a 4-node locabus-cluster (docs/METRICS.md):
# every locabusd serves /metrics on 0.0.0.0:9477; locabusctl status reports
# it; each node's local scope and one node's cluster scope pass
# `promtool check metrics`; the Grafana dashboard's expressions use only
# names that are served; a real prometheus (in node 1's namespace, scraping
# every 1 s) sees every target up and answers a CPU query and a load query
# for each of the 4 nodes.
#
#   prometheus_e2e_test.sh <build dir>
#
# Needs root. Exit status 77 (skip) without root or without prometheus,
# promtool, jq or python3, except under CI (CI=true or LOCABUS_TEST_STRICT=1),
# where that fails. Bounded: it gives up after 115 s, and always removes the
# cluster, prometheus and its files.
# shellcheck disable=SC2015 # `cond && ok ... || bad ...`: ok never fails
set -euo pipefail
build=${1:?usage: prometheus_e2e_test.sh BUILD_DIR}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tool=$build/tools/cluster/locabus-cluster
dashboard=$src/dist/grafana/locabus-dashboard.json
nodes=4
mport=9477
budget=115 # seconds, the whole test

strict() { [[ ${CI:-} == true || ${LOCABUS_TEST_STRICT:-} == 1 ]]; }
skip() {
  if strict; then
    echo "FAIL: prerequisite missing under CI: $*"
    exit 1
  fi
  echo "SKIP: $*"
  exit 77
}
[[ $(id -u) -eq 0 ]] || skip "needs root (namespaces, veths, XDP)"
for t in prometheus promtool; do
  command -v "$t" >/dev/null || skip "$t is not installed (Debian: apt-get install prometheus)"
done
for t in ip jq python3; do command -v "$t" >/dev/null || skip "$t is not installed"; done
[[ -x $tool ]] || {
  echo "FAIL: $tool is missing (configure the build tree)"
  exit 1
}
for b in userspace/daemon/locabusd tools/locabusctl/locabusctl; do
  [[ -x $build/$b ]] || {
    echo "FAIL: $build/$b is not built"
    exit 1
  }
done
export LOCABUS_BIN_DIR=$build
unset LOCABUS_CLUSTER NOTIFY_SOCKET

name=pm$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
work=$(mktemp -d "${TMPDIR:-/tmp}/locabus-prometheus-e2e.XXXXXX")
prom_pid=""
watchdog=""
started=$SECONDS

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [[ -n $prom_pid ]] && kill -0 "$prom_pid" 2>/dev/null; then
    kill -TERM "$prom_pid"
    for _ in $(seq 50); do kill -0 "$prom_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$prom_pid" 2>/dev/null && { echo "prometheus (pid $prom_pid) ignored SIGTERM: SIGKILL"; kill -KILL "$prom_pid"; }
    wait "$prom_pid" 2>/dev/null
  fi
  if ((rc != 0)) && [[ -s $work/prometheus.log ]]; then
    echo "--- the end of prometheus's log"
    tail -n 20 "$work/prometheus.log"
  fi
  "$tool" down -q "$name" >/dev/null 2>&1
  rm -rf "$work" "${TMPDIR:-/tmp}"/locabus-cluster-"$name".*
  [[ -n $watchdog ]] && kill "$watchdog" 2>/dev/null
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "FAIL: interrupted"; exit 1' INT
trap 'echo "FAIL: the test ran out of its ${budget} s"; exit 1' TERM
# The whole test is bounded: a SIGTERM after the budget runs the cleanup.
# Its output goes nowhere: a sleep holding the test's stdout would keep
# ctest waiting; killed, it takes its sleep with it.
(
  trap 'kill "$sp" 2>/dev/null; exit 0' TERM
  sleep "$budget" &
  sp=$!
  wait "$sp"
  kill -TERM $$
) >/dev/null 2>&1 &
watchdog=$!

failures=0
ok() { echo "ok:   $*"; }
bad() { echo "FAIL: $*"; failures=$((failures + 1)); }
check() { # what expected actual
  if [[ $2 == "$3" ]]; then ok "$1"; else bad "$1: expected '$2', got '$3'"; fi
}
section() { printf '\n== [%3d s] %s\n' $((SECONDS - started)) "$*"; }
fatal() {
  bad "$*"
  echo "FAILED: $failures check(s)"
  exit 1
}

# GET $2 from inside namespace $1 into file $3; prints "HTTP_CODE CONTENT_TYPE".
# curl when installed, else python3's urllib (both in Debian).
fetch() { # netns url file
  if command -v curl >/dev/null; then
    ip netns exec "$1" curl -sS --max-time 5 -o "$3" -w '%{http_code} %{content_type}' "$2" || echo "000 -"
  else
    ip netns exec "$1" python3 - "$2" "$3" <<'EOF' || echo "000 -"
import sys, urllib.request, urllib.error
url, out = sys.argv[1], sys.argv[2]
try:
    r = urllib.request.urlopen(url, timeout=5)
    code, ctype, body = r.status, r.headers.get("Content-Type", "-"), r.read()
except urllib.error.HTTPError as e:
    code, ctype, body = e.code, e.headers.get("Content-Type", "-"), e.read()
open(out, "wb").write(body)
print(code, ctype, end="")
EOF
  fi
}

# ------------------------------------------------------------------ the cluster
section "up $nodes --name $name -- --metrics-address 0.0.0.0:$mport"
if ! "$tool" up "$nodes" --name "$name" -q -- --metrics-address "0.0.0.0:$mport" >"$work/up.out" 2>"$work/up.err"; then
  cat "$work/up.out" "$work/up.err"
  fatal "locabus-cluster up failed"
fi
state=/run/locabus-cluster/$name/state.json
mapfile -t ips < <(jq -r '.nodes[].ip' "$state")
check "state.json lists $nodes nodes" "$nodes" "${#ips[@]}"
ns1=$name-n1
echo "nodes: ${ips[*]}"

section "locabusctl status --json reports the exporter"
for k in $(seq "$nodes"); do
  st=$("$tool" exec --name "$name" "$k" locabusctl status --json)
  check "node $k: metrics enabled, bound address, URL" \
    "true 0.0.0.0:$mport http://0.0.0.0:$mport/metrics" \
    "$(jq -r '.metrics | "\(.enabled) \(.address) \(.url)"' <<<"$st")"
  check "node $k: the services' parts of the status (monitor enabled)" true "$(jq -r '.monitor.enabled' <<<"$st")"
done

section "LocaMonitor's table complete on node 1 (bounded: 30 s)"
deadline=$((SECONDS + 30))
while :; do
  fetch "$ns1" "http://${ips[0]}:$mport/metrics?scope=cluster" "$work/cluster.txt" >/dev/null
  seen=$(grep -cE '^locabus_node_up\{[^}]*\} 1$' "$work/cluster.txt" || true)
  ((seen == nodes)) && break
  ((SECONDS >= deadline)) && {
    grep '^locabus_node_up' "$work/cluster.txt" || true
    fatal "node 1's cluster scope shows $seen of $nodes nodes up after 30 s"
  }
  echo "  $seen of $nodes nodes in node 1's table"
  sleep 1
done
ok "node 1's cluster scope shows all $nodes nodes up"

# ------------------------------------------------------------------ the text
section "each node's /metrics (from node 1's namespace) and promtool check metrics"
for k in $(seq "$nodes"); do
  ip=${ips[$((k - 1))]}
  got=$(fetch "$ns1" "http://$ip:$mport/metrics" "$work/local-$k.txt")
  check "node $k: 200 with the exposition's content type" "200 text/plain; version=0.0.4; charset=utf-8" "$got"
  if promtool check metrics <"$work/local-$k.txt" >"$work/promtool-$k.txt" 2>&1; then
    ok "node $k: promtool check metrics passes on the local scope"
  else
    bad "node $k: promtool check metrics: $(head -c 600 "$work/promtool-$k.txt")"
  fi
  grep -q "^locabus_build_info{node=\"$k\",version=" "$work/local-$k.txt" && ok "node $k: locabus_build_info" ||
    bad "node $k: no locabus_build_info{node=\"$k\"}"
  grep -q "^locabus_engine_tx_frames_total{node=\"$k\"} " "$work/local-$k.txt" &&
    ok "node $k: the counter registry (locabus_engine_tx_frames_total)" || bad "node $k: no registry counters"
  grep -q "^node_cpu_seconds_total{node=\"$k\"," "$work/local-$k.txt" && ok "node $k: its CPU (node_cpu_seconds_total)" ||
    bad "node $k: no node_cpu_seconds_total{node=\"$k\"}"
  others=$(grep -E '^node_[a-z0-9_]+\{' "$work/local-$k.txt" | grep -vc "node=\"$k\"" || true)
  check "node $k: the local scope has no other node's node_* series" 0 "$others"
done

got=$(fetch "$ns1" "http://${ips[0]}:$mport/metrics?scope=cluster" "$work/cluster.txt")
check "cluster scope: 200 with the exposition's content type" "200 text/plain; version=0.0.4; charset=utf-8" "$got"
if promtool check metrics <"$work/cluster.txt" >"$work/promtool-cluster.txt" 2>&1; then
  ok "promtool check metrics passes on the cluster scope"
else
  bad "promtool check metrics (cluster): $(head -c 600 "$work/promtool-cluster.txt")"
fi
check "cluster scope: node_load1 for nodes 1..$nodes" "$(seq -s ' ' "$nodes")" \
  "$(grep -oE '^node_load1\{node="[0-9]+"' "$work/cluster.txt" | grep -oE '"[0-9]+"' | tr -d '"' | sort -n | tr '\n' ' ' |
    sed 's/ $//')"
grep -q '^locabus_engine_' "$work/cluster.txt" && bad "the cluster scope has this node's registry counters" ||
  ok "the cluster scope has no registry counters (those are per node)"
check "unknown scope: 400" 400 "$(fetch "$ns1" "http://${ips[0]}:$mport/metrics?scope=all" "$work/400.txt" | cut -d' ' -f1)"
check "unknown path: 404" 404 "$(fetch "$ns1" "http://${ips[0]}:$mport/nope" "$work/404.txt" | cut -d' ' -f1)"

section "the Grafana dashboard uses only served names"
if [[ -f $dashboard ]]; then
  if missing=$(python3 - "$dashboard" "$work/local-1.txt" "$work/cluster.txt" <<'EOF'
import json, re, sys
dash = json.load(open(sys.argv[1]))
served = set()
for f in sys.argv[2:]:
    for line in open(f):
        m = re.match(r"(?:# TYPE )?([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
        if m and not line.startswith("# HELP"):
            served.add(m.group(1))
exprs = []
def walk(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k in ("expr", "query") and isinstance(v, str):
                exprs.append(v)
            elif k == "definition" and isinstance(v, str):
                exprs.append(v)
            else:
                walk(v)
    elif isinstance(o, list):
        for v in o:
            walk(v)
walk(dash)
names = set()
for e in exprs:
    for n in re.findall(r"\b((?:node|locabus)_[a-zA-Z0-9_:]*)", e):
        names.add(n)
if not names:
    print("no metric names in the dashboard's expressions")
    sys.exit(1)
gone = sorted(n for n in names if n not in served)
print(" ".join(gone) if gone else f"{len(names)} names in {len(exprs)} expressions", end="")
sys.exit(1 if gone else 0)
EOF
  ); then
    ok "dashboard: $missing, all served"
  else
    bad "dashboard uses names not served: $missing"
  fi
else
  bad "$dashboard is missing"
fi

# ------------------------------------------------------------------ prometheus
section "prometheus in node 1's namespace, scraping every 1 s"
pport=$(ip netns exec "$ns1" python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
{
  printf 'global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n'
  printf 'scrape_configs:\n'
  printf '  - job_name: locabus\n    metrics_path: /metrics\n    static_configs:\n      - targets:\n'
  for ip in "${ips[@]}"; do printf "          - '%s:%s'\n" "$ip" "$mport"; done
  printf '  - job_name: locabus_cluster\n    metrics_path: /metrics\n    params:\n      scope: [cluster]\n'
  printf "    static_configs:\n      - targets: ['%s:%s']\n" "${ips[0]}" "$mport"
} >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null 2>&1 && ok "promtool check config" ||
  bad "promtool check config: $(promtool check config "$work/prometheus.yml" 2>&1 | tail -3)"
ip netns exec "$ns1" prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$pport" --log.level=warn >"$work/prometheus.log" 2>&1 &
prom_pid=$!
api=http://127.0.0.1:$pport/api/v1
echo "prometheus pid $prom_pid, $api"

section "every target up (bounded: 40 s)"
want=$((nodes + 1))
deadline=$((SECONDS + 40))
while :; do
  kill -0 "$prom_pid" 2>/dev/null || fatal "prometheus exited: $(tail -n 5 "$work/prometheus.log")"
  up=0
  if [[ $(fetch "$ns1" "$api/targets?state=active" "$work/targets.json" 2>/dev/null | cut -d' ' -f1) == 200 ]]; then
    up=$(jq '[.data.activeTargets[] | select(.health == "up")] | length' "$work/targets.json")
  fi
  ((up == want)) && break
  if ((SECONDS >= deadline)); then
    jq -r '.data.activeTargets[]? | "  \(.scrapeUrl) \(.health) \(.lastError)"' "$work/targets.json" 2>/dev/null || true
    fatal "$up of $want targets up after 40 s"
  fi
  echo "  $up of $want targets up"
  sleep 1
done
ok "all $want targets up"
jq -r '.data.activeTargets[] | "  \(.labels.job) \(.scrapeUrl) \(.health) \(.lastScrapeDuration) s"' "$work/targets.json"

# Each node's value, from the query's answer: "1 2 3 4".
query_nodes() { # promql file
  local enc
  enc=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1")
  [[ $(fetch "$ns1" "$api/query?query=$enc" "$2" | cut -d' ' -f1) == 200 ]] || return 0
  jq -r '[.data.result[] | select(.value[1] != "NaN") | .metric.node | tonumber] | sort | map(tostring) | join(" ")' "$2"
}

section "queries answer for each node (bounded: 30 s)"
expect=$(seq -s ' ' "$nodes")
q_cpu='sum by (node) (rate(node_cpu_seconds_total{job="locabus",mode="idle"}[10s]))'
q_load='max by (node) (node_load1{job="locabus_cluster"})'
deadline=$((SECONDS + 30))
while :; do
  cpu=$(query_nodes "$q_cpu" "$work/q-cpu.json")
  load=$(query_nodes "$q_load" "$work/q-load.json")
  [[ $cpu == "$expect" && $load == "$expect" ]] && break
  if ((SECONDS >= deadline)); then
    check "$q_cpu: nodes" "$expect" "$cpu"
    check "$q_load: nodes" "$expect" "$load"
    fatal "queries incomplete after 30 s"
  fi
  echo "  idle CPU rate for nodes [$cpu], load1 (cluster scope) for nodes [$load]"
  sleep 1
done
check "$q_cpu: one value per node" "$expect" "$cpu"
check "$q_load: one value per node" "$expect" "$load"
jq -r '.data.result[] | "  node \(.metric.node): idle CPU \(.value[1]) s/s"' "$work/q-cpu.json"
# All modes together: about the machine's CPU count per second (every node
# here is this machine); jitter between sampling and scraping stays well
# within 3 times that.
q_all='sum by (node) (rate(node_cpu_seconds_total{job="locabus"}[10s]))'
check "$q_all: one value per node" "$expect" "$(query_nodes "$q_all" "$work/q-all.json")"
cpus=$(getconf _NPROCESSORS_ONLN)
check "$q_all: each node's CPU seconds per second within (0, 3 x $cpus]" "$nodes" \
  "$(jq --argjson c "$cpus" '[.data.result[] | .value[1] | tonumber | select(. > 0 and . <= 3 * $c)] | length' \
    "$work/q-all.json")"
jq -r '.data.result[] | "  node \(.metric.node): all modes \(.value[1]) s/s"' "$work/q-all.json"
check "rates of a locabus counter per node (locabus_engine_tx_frames_total)" "$expect" \
  "$(query_nodes 'sum by (node) (rate(locabus_engine_tx_frames_total{job="locabus"}[10s]))' "$work/q-tx.json")"

section "every dashboard expression evaluates, with a value, in prometheus"
if [[ -f $dashboard ]]; then
  if out=$(ip netns exec "$ns1" python3 - "$dashboard" "$api" <<'EOF'
import json, sys, urllib.parse, urllib.request
dash, api = json.load(open(sys.argv[1])), sys.argv[2]
exprs = []
def walk(o):
    if isinstance(o, dict):
        if isinstance(o.get("expr"), str):
            exprs.append(o["expr"])
        for v in o.values():
            walk(v)
    elif isinstance(o, list):
        for v in o:
            walk(v)
walk(dash)
bad = []
for e in exprs:
    q = e.replace("$__rate_interval", "10s").replace("$node", ".+")
    try:
        r = json.load(urllib.request.urlopen(api + "/query?query=" + urllib.parse.quote(q), timeout=5))
        if r.get("status") != "success" or not r["data"]["result"]:
            bad.append(f"{e} -> {r.get('status')}, {len(r.get('data', {}).get('result', []))} series")
    except Exception as x:
        bad.append(f"{e} -> {x}")
print("\n".join(bad) if bad else f"{len(exprs)} expressions", end="")
sys.exit(1 if bad or not exprs else 0)
EOF
  ); then
    ok "dashboard: $out evaluate with a value"
  else
    bad "dashboard expressions without a value or with an error:"
    echo "$out"
  fi
fi

section "the cost of a scrape on node 1 (rendered on the daemon's thread)"
"$tool" exec --name "$name" 1 locabusctl status --json | jq -c '.metrics.last_render_us' |
  sed 's/^/  last render, microseconds: /'
ip netns exec "$ns1" bash -c "for _ in 1 2 3; do curl -s --max-time 5 -o /dev/null -w '  local:   %{size_download} bytes in %{time_total} s\n' http://${ips[0]}:$mport/metrics;
  curl -s --max-time 5 -o /dev/null -w '  cluster: %{size_download} bytes in %{time_total} s\n' 'http://${ips[0]}:$mport/metrics?scope=cluster'; done" 2>/dev/null || true

section "result ($((SECONDS - started)) s)"
if ((failures)); then
  echo "FAILED: $failures check(s)"
  exit 1
fi
echo "PASS"
