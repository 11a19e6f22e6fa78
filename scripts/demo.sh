#!/usr/bin/env bash
# Locabus demo: a 4-node virtual cluster (network namespaces on one bridge,
# a real locabusd with the XDP fast path in each), membership, messages
# between nodes, LocaMonitor's cluster load table (locabusctl monitor, the
# run-dir files), a 10,000-message stream, a broadcast reaching every node
# (a line of text, then 8,192 numbered 1 KB datagrams), remote calls (KCCM:
# node.info on every node, a handler in a process on node 2), a node killed
# and restarted, then everything torn down. It checks what it shows and exits
# non-zero if anything misbehaves.
#
#   scripts/demo.sh                       # as root: installs packages, builds, runs
#   scripts/demo.sh --no-build --bin-dir build
#   scripts/demo.sh --budget 170 ...      # gives up (and cleans up) after 170 s
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=1
bin_dir="$here/build"
budget=0
while (($#)); do
  case "$1" in
    --no-build) build=0 ;;
    --bin-dir) bin_dir=$2; shift ;;
    --budget) budget=$2; shift ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: needs root (network namespaces, XDP, bpffs); run it as root" >&2
  exit 1
fi

bold=$'\e[1m'; dim=$'\e[2m'; green=$'\e[32m'; red=$'\e[31m'; reset=$'\e[0m'
[[ -t 1 ]] || { bold=; dim=; green=; red=; reset=; }
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }
run() { printf '%s$ %s%s\n' "$dim" "$*" "$reset"; "$@"; }

if ((build)); then
  step "Installing dependencies and building"
  "$here/scripts/setup.sh"
  cmake -S "$here" -B "$bin_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$bin_dir" --target locabusd locabusctl locabus-cat locabus-call
fi
export LOCABUS_BIN_DIR=$bin_dir
ctl="$bin_dir/tools/locabusctl/locabusctl"
cat_bin="$bin_dir/tools/locabus-cat/locabus-cat"
call_bin="$bin_dir/tools/locabus-call/locabus-call"
for b in "$ctl" "$cat_bin" "$call_bin" "$bin_dir/userspace/daemon/locabusd"; do
  [[ -x $b ]] || { echo "demo.sh: $b is not built (drop --no-build)" >&2; exit 1; }
done
# The demo runs as the README shows it: `locabus-cluster` and `locabusctl`.
PATH="$here/tools/cluster:$(dirname "$ctl"):$(dirname "$cat_bin"):$(dirname "$call_bin"):$PATH"

name="demo$(printf '%04x' $(((RANDOM ^ $$) & 0xffff)))"
work=$(mktemp -d)
bg=()
watchdog=""
cleanup() {
  set +e
  [[ -n $watchdog ]] && kill "$watchdog" 2>/dev/null
  trap '' TERM
  trap - EXIT
  for p in "${bg[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  locabus-cluster down "$name" -q
  rm -rf "$work"
}
trap cleanup EXIT
# With --budget (the test suite's run): after that many seconds the
# watchdog takes the cluster down itself (which also ends a command waiting
# on it: bash runs a trap only once its foreground command returns), then
# sends SIGTERM, whose trap runs the cleanup, all before a harness's SIGKILL
# would leave the cluster behind. Its output goes nowhere, so that it does
# not hold the demo's stdout open.
if ((budget > 0)); then
  trap 'echo "demo.sh: ran out of its ${budget} s" >&2; exit 1' TERM
  (
    trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$budget" &
    sp=$!
    wait "$sp"
    trap '' TERM
    locabus-cluster down "$name" -q
    kill -TERM $$
  ) >/dev/null 2>&1 &
  watchdog=$!
fi
on() { local k=$1; shift; locabus-cluster exec --name "$name" "$k" "$@"; }
# Waits (at most 10 s) until jq's filter $2 is true of node $1's counters.
wait_counters() { # node filter what
  local deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    [[ $(on "$1" locabusctl counters --json | jq "$2") == true ]] && return 0
    sleep 0.1
  done
  echo "demo.sh: node $1: $3 did not happen within 10 s" >&2
  return 1
}
# Until node $1 has an endpoint on protocol $2 (16: locabusctl msg recv's).
wait_endpoint() { wait_counters "$1" "[.api.endpoints[] | select(.proto == $2)] | length > 0" "an endpoint on protocol $2"; }
# Until node $1 has a socket bound to port $2.
wait_bound() { wait_counters "$1" "[.api.endpoints[] | select(.port == $2)] | length > 0" "a socket on port $2"; }
# Until node $1 has an event monitor (locabusctl events) connected.
wait_events() { wait_counters "$1" '[.api.endpoints[] | select(.proto == 0 and .events)] | length > 0' "an event monitor"; }

step "1. Four nodes, each a network namespace with a locabusd (XDP fast path + AF_XDP)"
run locabus-cluster up 4 --name "$name" --datapath auto
run locabus-cluster status --name "$name"

step "2. Discovery: every node finds the other three (heartbeats, no configuration)"
for k in 1 2 3 4; do
  for _ in $(seq 100); do
    [[ $(on "$k" locabusctl peers --json | jq '[.[] | select(.state == "alive")] | length') == 3 ]] && break
    sleep 0.1
  done
done
run on 1 locabusctl peers
run on 1 locabusctl status

step "3. LocaMonitor: every node samples its load, broadcasts it and keeps the whole cluster's table"
for _ in $(seq 150); do
  [[ $(on 1 locabusctl monitor --json | jq '[.nodes[] | select(.state == "alive")] | length') == 4 ]] && break
  sleep 0.2
done
run on 1 locabusctl monitor
run on 1 locabusctl monitor --least-loaded | tee "$work/least.txt" || true
run_dir1=$(jq -r '.nodes[] | select(.node == 1) | .run_dir' "/run/locabus-cluster/$name/state.json")
echo "the same table as files on every node, one per node (the paper's /proc analogue), for shell scripts:"
run head -n 12 "$run_dir1/monitor/2" || true
on 1 locabusctl monitor --json >"$work/monitor.json" || true

step "4. Messages: node 2 listens, nodes 1 and 3 send to it"
on 2 locabusctl msg recv --count 3 --timeout 10 >"$work/recv.txt" &
bg+=($!)
wait_endpoint 2 16
run on 1 locabusctl msg send --to 2 "hello from node 1"
run on 3 locabusctl msg send --to 2 "hello from node 3"
run on 1 locabusctl msg send --to 2 "and goodbye"
wait "${bg[-1]}" || true
echo "node 2 received:"
sed 's/^/  /' "$work/recv.txt"

step "5. A stream: 10,000 numbered 1 KB messages from node 3 to node 4, checked for order and duplicates"
on 4 locabusctl msg recv --sequence --count 10000 --timeout 20 --json >"$work/stream.json" &
bg+=($!)
wait_endpoint 4 16
run on 3 locabusctl msg send --to 4 --sequence --count 10000 --size 1024
wait "${bg[-1]}" || true
jq -c . "$work/stream.json"

step "6. Broadcast: one frame reaches every node (Locasock datagrams to port 7000 on all nodes)"
hello_pids=()
for k in 2 3 4; do
  on "$k" locabus-cat --port 7000 --listen --count 1 --timeout 10 >"$work/hello$k.txt" &
  bg+=($!)
  hello_pids+=($!)
done
for k in 2 3 4; do wait_bound "$k" 7000; done
printf '%s$ echo "hello, cluster" | locabus-cat --broadcast --dport 7000%s\n' "$dim" "$reset"
echo "hello, cluster" | on 1 locabus-cat --broadcast --dport 7000
for p in "${hello_pids[@]}"; do wait "$p" || true; done
for k in 2 3 4; do printf '  node %s received: %s\n' "$k" "$(cat "$work/hello$k.txt")"; done
echo "Now 8,192 numbered 1 KB datagrams (the paper's broadcast benchmark), checked for order and gaps on every node:"
stream_pids=()
for k in 2 3 4; do
  on "$k" locabus-cat --port 7001 --expect 8192 --sequence --size 1024 --timeout 60 --json -q >"$work/bcast$k.json" &
  bg+=($!)
  stream_pids+=($!)
done
for k in 2 3 4; do wait_bound "$k" 7001; done
run on 1 locabus-cat --broadcast --dport 7001 --generate 8192 --size 1024 --timeout 60 -q
for p in "${stream_pids[@]}"; do wait "$p" || true; done
for k in 2 3 4; do printf '  node %s: %s\n' "$k" "$(jq -c '{ok, received, errors, total_seconds}' "$work/bcast$k.json")"; done
on 1 locabusctl counters --json | jq -c '.engine | {bcast_sent, bcast_retransmits, bcast_polls_sent, bcast_acks_received, bcast_naks_received}'

step "7. Remote calls (KCCM): node 1 calls the built-in node.info on every node, then a handler in a process on node 2"
run on 1 locabus-call --node all node.info | tee "$work/info.txt" || true
printf '%s$ locabus-call --serve upper   %s# on node 2, in the background: a handler that upper-cases its argument\n' \
  "$dim" "$reset"
on 2 locabus-call --serve upper --json >"$work/serve.json" 2>"$work/serve.err" &
bg+=($!)
# Its JSON line says it is ready. Wait for the pid in it: jq 1.6's -e exits 0
# on a file still empty, which once let the call below overtake the handler.
serve_pid=""
for _ in $(seq 100); do
  serve_pid=$(jq -r '.pid // empty' "$work/serve.json" 2>/dev/null) || serve_pid=""
  [[ $serve_pid =~ ^[0-9]+$ ]] && break
  sleep 0.1
done
if [[ $serve_pid =~ ^[0-9]+$ ]]; then
  run on 3 locabus-call --node 2 upper "hello from node 3" | tee "$work/upper.txt" || true
  kill "$serve_pid" 2>/dev/null || true # SIGTERM: it unregisters and exits
else
  echo "demo.sh: locabus-call --serve on node 2 did not start in 10 s: $(cat "$work/serve.err")" >&2
  kill "${bg[-1]}" 2>/dev/null || true
fi
wait "${bg[-1]}" || true
on 1 locabus-call --node 2 upper "anyone there?" 2>"$work/gone.err" && gone_rc=0 || gone_rc=$?
echo "once that process stopped, a call says why it failed (exit status $gone_rc):"
sed 's/^/  /' "$work/gone.err"

step "8. Node 4's daemon is killed (SIGKILL); node 1 notices, then sees it restart"
on 1 locabusctl events --node 4 --until restarted --timeout 30 >"$work/events.txt" &
bg+=($!)
wait_events 1
run locabus-cluster stop --name "$name" 4 --signal KILL
# Node 1's failure detector declares it dead within about 4 s (dead_after).
deadline=$((SECONDS + 10))
while ((SECONDS < deadline)); do
  [[ $(on 1 locabusctl peers --json | jq '.[] | select(.node == 4) | .state') == '"dead"' ]] && break
  sleep 0.1
done
run locabus-cluster start --name "$name" 4
wait "${bg[-1]}" || true
echo "node 1 saw:"
sed 's/^/  /' "$work/events.txt"

step "9. Delivered or told: a message for a protocol nobody opened on node 2 comes back"
on 1 locabusctl msg send --proto 30 --to 2 --settle --timeout 10 --json "anyone there?" \
  >"$work/refused.json" 2>"$work/refused.err" || true
sed 's/^/  /' "$work/refused.err"
jq -c . "$work/refused.json"

step "10. The counters behind it (node 3, the unicast stream's sender)"
on 3 locabusctl counters --json >"$work/counters.json"
jq '{engine: {tx_frames: .engine.tx_frames, data_sent: .engine.peers_total.data_sent,
      retransmits: .engine.peers_total.retransmits}, xdp: (.xdp // {} | {redirected, ack_consumed}),
      api: {records_in: .api.records_in, flow: (.api.router.flow | {opens_sent, credits_received, blocked})}}' "$work/counters.json"

step "Checking"
fail=0
check() { # name expected actual
  if [[ "$2" == "$3" ]]; then printf '%sok%s   %s = %s\n' "$green" "$reset" "$1" "$3"
  else printf '%sFAIL%s %s: expected %s, got %s\n' "$red" "$reset" "$1" "$2" "$3"; fail=1; fi
}
check "nodes alive in node 1's LocaMonitor table" "1 2 3 4" "$(jq -r '[.nodes[] | select(.state == "alive") | .node] | join(" ")' "$work/monitor.json")"
check "the least-loaded node is one of them" yes "$(grep -qx '[1-4]' "$work/least.txt" && echo yes || echo no)"
check "node 1's run-dir file for node 2" "node=2" "$(grep -sx 'node=2' "$run_dir1/monitor/2" || true)"
check "messages node 2 received" 3 "$(grep -c '^node ' "$work/recv.txt")"
check "first message" "node 1: hello from node 1" "$(head -1 "$work/recv.txt")"
check "stream complete and in order" true "$(jq -r .ok "$work/stream.json")"
for k in 2 3 4; do
  check "node $k got the broadcast line from node 1" "hello, cluster" "$(sed -n 's/^1:[0-9]*: //p' "$work/hello$k.txt" | head -1)"
  check "node $k got all 8,192 broadcasts in order" true "$(jq -r '.ok and .received == 8192' "$work/bcast$k.json")"
done
for k in 1 2 3 4; do
  check "node.info from node $k" "$k" "$(sed -n "s/^node $k: //p" "$work/info.txt" | jq -r .node 2>/dev/null)"
done
check "node 2's upper called from node 3" "HELLO FROM NODE 3" "$(tail -n 1 "$work/upper.txt")"
check "the call once the handler stopped" "11 no_such_handler" "$gone_rc $(grep -o no_such_handler "$work/gone.err" | head -1)"
check "node 1 saw node 4 die" yes "$(grep -q "node 4 dead" "$work/events.txt" && echo yes || echo no)"
check "node 1 saw node 4 restart" yes "$(grep -q "node 4 restarted" "$work/events.txt" && echo yes || echo no)"
check "the message to a protocol nobody opened was refused back" 1 "$(jq -r .failed "$work/refused.json")"
check "with the reason" yes "$(grep -q "no_endpoint" "$work/refused.err" && echo yes || echo no)"
check "datapath of node 1" "$(on 1 locabusctl status --json | jq -r .datapath)" xdp
if ((fail)); then
  echo "${red}${bold}demo FAILED${reset}" >&2
  exit 1
fi
echo "${green}${bold}demo passed${reset}: tearing the cluster down"
