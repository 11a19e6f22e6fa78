#!/usr/bin/env bash
# LocaMonitor end to end on a 4-node virtual cluster (tools/cluster/
# locabus-cluster): every node's table converges to 4 alive rows; the table,
# --json, --least-loaded (against the rule computed here from the rows) and
# --watch of `locabusctl monitor`; the run-dir files <run_dir>/monitor/<node>
# read by a shell; the C API (monitor_api_check); a daemon killed with
# SIGKILL turns stale on the others within stale_ms + slack and is never
# least loaded after; a daemon with --no-monitor refuses with what to do.
#
#   tests/e2e/monitor_e2e_test.sh BUILD_DIR
#
# Needs root. Under CI (CI=true) a missing privilege fails instead of skipping.
# Takes about 30 s; fails if it takes 90.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$here/tests/e2e/lib.sh"
bin_dir=${1:?usage: monitor_e2e_test.sh BUILD_DIR}

if [[ $(id -u) -ne 0 ]]; then
  if [[ ${CI:-} == true ]]; then echo "monitor_e2e_test: needs root (CI=true: failing)" >&2; exit 1; fi
  echo "monitor_e2e_test: needs root: skipped" >&2
  exit 77
fi

cluster="$here/tools/cluster/locabus-cluster"
ctl="$bin_dir/tools/locabusctl/locabusctl"
check_bin="$bin_dir/tests/monitor_api_check"
for b in "$ctl" "$check_bin" "$bin_dir/userspace/daemon/locabusd"; do
  [[ -x $b ]] || { echo "monitor_e2e_test: $b is not built (ninja locabusd locabusctl monitor_api_check)" >&2; exit 1; }
done
export LOCABUS_BIN_DIR=$bin_dir
name="m$(printf '%06x' $(((RANDOM << 9 ^ RANDOM ^ $$) & 0xffffff)))"
off_name="${name}x" # a one-node cluster without the monitor
work=$(mktemp -d)

# The monitor's times for this test (dist/locabusd.toml documents them):
# quick sampling and spreading, stale after 3 s, never removed during it.
sample_ms=200 broadcast_ms=1000 stale_ms=3000 remove_ms=60000
slack_ms=3000 # beyond stale_ms, for a kill to show as stale everywhere
cat >"$work/monitor.toml" <<EOF
[monitor]
sample_ms = $sample_ms
broadcast_ms = $broadcast_ms
stale_ms = $stale_ms
remove_ms = $remove_ms
EOF

cleanup() {
  local rc=$?
  set +e
  if ((rc != 0)) && [[ -d /run/locabus-cluster/$name ]]; then
    for log in /run/locabus-cluster/"$name"/node*/locabusd.log; do
      echo "---- $log (tail)" >&2
      tail -n 20 "$log" >&2
    done
  fi
  "$cluster" down "$name" -q >/dev/null 2>&1 || "$cluster" down "$name"
  "$cluster" down "$off_name" -q >/dev/null 2>&1 || "$cluster" down "$off_name"
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

fail() { echo "FAIL [monitor_e2e]: $*" >&2; exit 1; }
note() { echo "[monitor_e2e] $(printf '%5.1fs' "$(elapsed)") $*" >&2; }
start_ns=$(date +%s%N)
elapsed_ms() { echo $((($(date +%s%N) - start_ns) / 1000000)); }
elapsed() { awk -v ms="$(elapsed_ms)" 'BEGIN { printf "%.1f", ms / 1000 }'; }
sock() { jq -r --argjson k "$1" '.nodes[] | select(.node == $k) | .socket' "/run/locabus-cluster/$name/state.json"; }
run_dir() { jq -r --argjson k "$1" '.nodes[] | select(.node == $k) | .run_dir' "/run/locabus-cluster/$name/state.json"; }
# locabusctl monitor on node $1 (its API socket is a path: no need to enter the namespace).
mon() { local k=$1; shift; "$ctl" monitor --socket "$(sock "$k")" "$@"; }

# The least-loaded rule (docs/MONITOR.md), from the rows: among alive nodes,
# the lowest floor(load1 per CPU / 0.05), then the most available memory,
# then the lowest node id; null when none is alive.
rule='[.nodes[] | select(.state == "alive")
       | {node, bucket: (((.load[0] * 1000 | round) / (50 * ([.cpus, 1] | max))) | floor),
          available: .memory.available}]
      | sort_by(.bucket, -.available, .node) | (.[0].node // null)'

note "cluster $name: 4 nodes, monitor sampling every ${sample_ms} ms, stale after ${stale_ms} ms"
"$cluster" up 4 --name "$name" -q -- --config "$work/monitor.toml" >/dev/null

note "waiting until every node's table lists 4 alive rows"
deadline=$((SECONDS + 30))
for k in 1 2 3 4; do
  while :; do
    rows=$(mon "$k" --json 2>"$work/err" | jq -c '[.nodes[] | select(.state == "alive") | .node]' 2>/dev/null) ||
      rows="(no answer: $(head -c 300 "$work/err"))"
    [[ $rows == "[1,2,3,4]" ]] && break
    ((SECONDS < deadline)) || fail "node $k's table has alive rows $rows, expected [1,2,3,4] within 30 s"
    sleep 0.2
  done
  note "  node $k: 4 alive rows"
done

note "the JSON object: the daemon's settings and every row's fields"
for k in 1 2 3 4; do
  mon "$k" --json >"$work/m$k.json"
  jqe --argjson k "$k" --argjson s "$sample_ms" --argjson b "$broadcast_ms" --argjson st "$stale_ms" \
    --argjson r "$remove_ms" '.node == $k and .enabled == true and .sample_ms == $s and .broadcast_ms == $b
      and .stale_ms == $st and .remove_ms == $r and (.rule | type == "string" and length > 10)
      and ([.nodes[].node] == [1, 2, 3, 4]) and ([.nodes[] | select(.self) | .node] == [$k])
      and all(.nodes[]; .cpus >= 1 and .memory.total > 0 and .memory.available <= .memory.total
        and (.load | length) == 3 and .cpu_busy_percent >= 0 and .cpu_busy_percent <= 100
        and .age_ms >= 0 and .age_ms < $st and (.hostname | type == "string")
        and (.rates | has("net_rx_bytes_per_s")) and .processes > 0)' "$work/m$k.json" >/dev/null ||
    fail "node $k's monitor --json is not as expected: $(jq -c 'del(.nodes[] | .disks, .filesystems, .nets, .locabus, .cpu_percent, .cpu_seconds)' "$work/m$k.json")"
  got=$(jq -c .least_loaded "$work/m$k.json")
  want=$(jq -c "$rule" "$work/m$k.json")
  [[ $got == "$want" ]] || fail "node $k says least_loaded $got, the rule over its rows gives $want"
done

note "the table: 4 node lines, this node marked *, the least-loaded one >"
for k in 1 2 3 4; do
  mon "$k" >"$work/table$k.txt"
  n=$(grep -cE '^[* ][> ] +[0-9]+  ' "$work/table$k.txt" || true)
  [[ $n == 4 ]] || fail "node $k's table has $n node lines, expected 4:"$'\n'"$(cat "$work/table$k.txt")"
  self=$(sed -nE 's/^\*. +([0-9]+) .*/\1/p' "$work/table$k.txt")
  [[ $self == "$k" ]] || fail "node $k's table marks node '$self' as itself"
  marked=$(sed -nE 's/^.> +([0-9]+) .*/\1/p' "$work/table$k.txt")
  footer=$(sed -nE 's/.*least loaded: node ([0-9]+).*/\1/p' "$work/table$k.txt")
  [[ -n $marked && $marked == "$footer" ]] || fail "node $k's table marks '$marked', its footer says '$footer'"
  grep -qE 'NODE +HOST +STATE +AGE +CPU%' "$work/table$k.txt" ||
    fail "node $k's table has no header:"$'\n'"$(cat "$work/table$k.txt")"
done
sed 's/^/    /' "$work/table1.txt" >&2

# The table changes between two requests (node 1's own row every sample):
# --least-loaded must equal the least_loaded of a snapshot taken just
# before or just after it, on some of a few tries.
least_agrees() { # node -> prints the node id it agreed on
  local k=$1 i before after ll
  for ((i = 0; i < 20; i++)); do
    before=$(mon "$k" --json | jq -c .least_loaded)
    ll=$(mon "$k" --least-loaded)
    after=$(mon "$k" --json | jq -c .least_loaded)
    if [[ $ll == "$before" || $ll == "$after" ]]; then
      echo "$ll"
      return 0
    fi
  done
  fail "node $k: --least-loaded says $ll, the JSON before and after says $before and $after (20 tries)"
}
note "--least-loaded agrees with the JSON's least_loaded"
for k in 1 2 3 4; do
  ll=$(least_agrees "$k")
  [[ $ll =~ ^[1-4]$ ]] || fail "node $k: --least-loaded printed '$ll'"
  j=$(mon "$k" --least-loaded --json | jq -c 'keys')
  [[ $j == '["least_loaded"]' ]] || fail "node $k: --least-loaded --json has keys $j"
done

note "run-dir files: <run_dir>/monitor/<node> for the 4 nodes on every node, read by a shell"
for k in 1 2 3 4; do
  dir="$(run_dir "$k")/monitor"
  files=$(find "$dir" -maxdepth 1 -type f -name '[0-9]*' -printf '%f\n' | sort -n | tr '\n' ' ')
  [[ $files == "1 2 3 4 " ]] || fail "node $k's $dir has node files $files, expected 1 2 3 4"
  # As docs/MONITOR.md shows: grep over every node's file.
  alive_files=$(grep -lx 'state=alive' "$dir"/* | wc -l)
  ((alive_files == 4)) || fail "grep finds state=alive in $alive_files of node $k's files, expected 4"
  now_ms=$(($(date +%s%N) / 1000000))
  for j in 1 2 3 4; do
    f="$dir/$j"
    bad=$(grep -vnE '^[a-z0-9_]+=' "$f" || true)
    [[ -z $bad ]] || fail "$f has lines that are not key=value: $bad"
    # Read into variables the way a script would (without evaluating the
    # values: a hostname comes from another node).
    declare -A kv=()
    while IFS='=' read -r key value; do kv[$key]=$value; done <"$f"
    [[ ${kv[node]:-} == "$j" && ${kv[state]:-} == alive && ${kv[cpus]:-} =~ ^[1-9][0-9]*$ ]] ||
      fail "$f says node=${kv[node]:-} state=${kv[state]:-} cpus=${kv[cpus]:-}, expected node=$j state=alive cpus>=1"
    want_self=0
    ((j == k)) && want_self=1
    [[ ${kv[self]:-} == "$want_self" ]] || fail "$f says self=${kv[self]:-} on node $k, expected $want_self"
    for key in hostname epoch seq load5 load15 mem_total_bytes mem_available_bytes processes net_rx_bytes_per_s; do
      [[ -n ${kv[$key]:-} ]] || fail "$f has no $key="
    done
    [[ ${kv[load1]:-} =~ ^[0-9]+\.[0-9]{3}$ ]] || fail "$f: load1=${kv[load1]:-} is not a load with three decimals"
    age=$((now_ms - ${kv[updated_at_ms]:-0}))
    ((age >= -1000 && age <= 5000)) || fail "$f was written ${age} ms ago (updated_at_ms=${kv[updated_at_ms]:-}), expected within 5 s"
    unset kv
  done
done
note "  e.g. $(run_dir 1)/monitor/2: $(grep -E '^(node|state|cpus|load1)=' "$(run_dir 1)/monitor/2" | tr '\n' ' ')"

note "--watch --count 2, piped: two frames, then it stops"
t0=$(elapsed_ms)
mon 1 --watch --count 2 --interval 0.5 | cat >"$work/watch.txt"
t1=$(elapsed_ms)
frames=$(grep -c '^locabusctl monitor ' "$work/watch.txt" || true)
rowlines=$(grep -cE '^[* ][> ] +[0-9]+  ' "$work/watch.txt" || true)
[[ $frames == 2 && $rowlines == 8 ]] ||
  fail "--watch --count 2 printed $frames frame(s) with $rowlines node line(s), expected 2 and 8:"$'\n'"$(cat "$work/watch.txt")"
grep -q $'\e' "$work/watch.txt" && fail "--watch into a pipe wrote escape sequences"
((t1 - t0 >= 400 && t1 - t0 < 5000)) || fail "--watch --count 2 --interval 0.5 took $((t1 - t0)) ms (expected 0.5..5 s)"
[[ $(mon 1 --watch --count 2 --interval 0.2 --json | jq -s 'map(.nodes | length)' -c) == "[4,4]" ]] ||
  fail "--watch --json: not one JSON object with 4 nodes per frame"

note "the C API (monitor_api_check on node 1): 4 rows, the same least-loaded node"
for ((i = 0; ; i++)); do
  before=$(mon 1 --json | jq -c .least_loaded)
  LOCABUS_SOCKET=$(sock 1) "$check_bin" 4 >"$work/capi.txt" 2>&1 || fail "monitor_api_check:"$'\n'"$(cat "$work/capi.txt")"
  after=$(mon 1 --json | jq -c .least_loaded)
  summary=$(tail -n 1 "$work/capi.txt")
  c_least=${summary##*least_loaded=}
  [[ $summary == "rows=4 alive=4 self=1 least_loaded="* ]] || fail "monitor_api_check says: $summary"
  [[ $c_least == "$before" || $c_least == "$after" ]] && break
  ((i < 20)) || fail "the C API says least_loaded=$c_least, the JSON before and after $before and $after"
done
note "  $summary"

note "node 4's daemon killed (SIGKILL): stale on nodes 1-3 within ${stale_ms} + ${slack_ms} ms"
pid4=$(jq -r '.nodes[] | select(.node == 4) | .pid' "/run/locabus-cluster/$name/state.json")
[[ $pid4 =~ ^[0-9]+$ && $(tr '\0' ' ' <"/proc/$pid4/cmdline") == *locabusd* ]] ||
  fail "state.json's pid for node 4 ($pid4) is not a locabusd"
killed=$(elapsed_ms)
kill -KILL "$pid4"
bound=$((stale_ms + slack_ms))
declare -A stale_after=()
while ((${#stale_after[@]} < 3)); do
  for k in 1 2 3; do
    [[ -n ${stale_after[$k]:-} ]] && continue
    st=$(mon "$k" --json | jq -r '.nodes[] | select(.node == 4) | .state')
    if [[ $st == stale ]]; then stale_after[$k]=$(($(elapsed_ms) - killed)); fi
  done
  (($(elapsed_ms) - killed <= bound)) || fail "node 4 is not stale everywhere ${bound} ms after the kill (stale on: ${!stale_after[*]})"
  sleep 0.1
done
note "  stale after: node 1 ${stale_after[1]} ms, node 2 ${stale_after[2]} ms, node 3 ${stale_after[3]} ms (bound ${bound} ms)"

note "node 4 is never least loaded now (20 looks on each of nodes 1-3)"
for ((i = 0; i < 20; i++)); do
  for k in 1 2 3; do
    ll=$(mon "$k" --least-loaded)
    [[ $ll =~ ^[1-3]$ ]] || fail "node $k: --least-loaded says '$ll' with node 4 dead"
  done
done
for k in 1 2 3; do
  mon "$k" --json >"$work/after$k.json"
  jqe '([.nodes[].node] == [1, 2, 3, 4]) and ([.nodes[] | select(.state == "alive") | .node] == [1, 2, 3])' \
    "$work/after$k.json" >/dev/null || fail "node $k's table after the kill: $(jq -c '[.nodes[] | {node, state}]' "$work/after$k.json")"
  [[ $(jq -c .least_loaded "$work/after$k.json") == $(jq -c "$rule" "$work/after$k.json") ]] ||
    fail "node $k: least_loaded after the kill is not the rule's"
  # The dead node's file says so too.
  grep -qx 'state=stale' "$(run_dir "$k")/monitor/4" || fail "node $k's monitor/4 does not say state=stale"
done
mon 1 | grep -E '^.. +4  ' | grep -q stale || fail "node 1's table does not show node 4 stale"
LOCABUS_SOCKET=$(sock 1) "$check_bin" 4 >"$work/capi2.txt" 2>&1 || fail "monitor_api_check:"$'\n'"$(cat "$work/capi2.txt")"
[[ $(tail -n 1 "$work/capi2.txt") =~ ^rows=4\ alive=3\ self=1\ least_loaded=[123]$ ]] ||
  fail "the C API after the kill: $(tail -n 1 "$work/capi2.txt")"

note "errors: no daemon, and a daemon with --no-monitor"
if out=$("$ctl" monitor --socket "$work/none.sock" 2>&1); then fail "monitor without a daemon succeeded"; fi
grep -q "is locabusd running" <<<"$out" || fail "monitor without a daemon says: $out"
"$cluster" up 1 --name "$off_name" -q -- --no-monitor >/dev/null
off_sock=$(jq -r '.nodes[0].socket' "/run/locabus-cluster/$off_name/state.json")
for args in "" "--least-loaded" "--watch --count 1"; do
  # shellcheck disable=SC2086 # the options split on purpose
  if out=$("$ctl" monitor --socket "$off_sock" $args 2>&1); then fail "monitor $args with the monitor off succeeded"; fi
  [[ $out == *"LocaMonitor is off"* && $out == *--no-monitor* ]] ||
    fail "monitor $args with the monitor off says: $out"
done
if out=$(LOCABUS_SOCKET=$off_sock "$check_bin" 2>&1); then fail "the C API with the monitor off succeeded"; fi
grep -q "LocaMonitor is off" <<<"$out" || fail "the C API with the monitor off says: $out"

total=$(elapsed_ms)
((total < 90000)) || fail "took ${total} ms (bound 90 s)"
note "passed in $(elapsed) s"
