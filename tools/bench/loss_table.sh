#!/usr/bin/env bash
# loss_table.sh: unicast under loss on a 2-node virtual cluster. For each drop
# rate, the chaos XDP program drops that share of what each node sends (both
# directions), and node 1 streams N sequenced 1 KB messages to node 2
# (locabusctl msg send/recv --sequence, checked for order). Reports the time,
# messages/s and the sender's data frames (first transmissions +
# retransmissions) per delivered message. See docs/PERFORMANCE.md, "Unicast
# under loss".
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
prog=loss_table.sh

usage() {
  cat <<EOF
Usage: $prog [--count N] [--drops "0 1 5 10 20"] [--corrupt P] [--time-limit SEC]
             [--datapath xdp|packet|auto] [--bin-dir DIR] [--name NAME] [--json]

Brings up a 2-node cluster with tools/cluster/locabus-cluster (from this source
tree), then for each drop rate P (percent) attaches the chaos program to both
nodes (--drop P, also for P = 0, so every row has the same path) and streams N
numbered 1 KB messages from node 1 to node 2. One row per rate:

  drop %, time (s, the receiver's first message to its last), messages/s,
  data frames per delivered message (node 1's data_sent +
  retransmits for node 2 over the row, divided by the messages node 2
  delivered), retransmits, timeouts, NAKs received

A row that does not finish within --time-limit (counted from the sender's
start) is stopped and reported as "> SEC s" with what was delivered by then
(messages/s: delivered / SEC); the cluster is then brought up afresh so that
the leftover backlog does not disturb the next row. --json rows also have
wall_seconds, from the sender's start to the receiver's exit.

Options:
  --count N         messages per row (default 20000)
  --drops LIST      drop rates in percent, space or comma separated
                    (default "0 1 5 10 20")
  --corrupt P       also corrupt P % of what each node sends (default 0)
  --time-limit SEC  stop a row after SEC seconds (default 300)
  --datapath D      passed to locabusd (default xdp)
  --bin-dir DIR     locabusd, locabusctl (a build tree or a directory with
                    both); default \$LOCABUS_BIN_DIR, else $here/build
  --name NAME       cluster name (default lt + 6 random hex digits)
  --json            one JSON array of rows on stdout instead of the table

Progress goes to stderr. Needs root. Example:
  sudo tools/bench/loss_table.sh --count 20000 --bin-dir build
EOF
}

count=20000 drops="0 1 5 10 20" corrupt=0 limit=300 datapath=xdp json=0
bin_dir=${LOCABUS_BIN_DIR:-$here/build}
name="lt$(printf '%06x' $(((RANDOM << 9 ^ RANDOM ^ $$) & 0xffffff)))"
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --count) count=${2:?--count needs a value}; shift ;;
    --drops) drops=${2:?--drops needs a value}; shift ;;
    --corrupt) corrupt=${2:?--corrupt needs a value}; shift ;;
    --time-limit) limit=${2:?--time-limit needs a value}; shift ;;
    --datapath) datapath=${2:?--datapath needs a value}; shift ;;
    --bin-dir) bin_dir=${2:?--bin-dir needs a value}; shift ;;
    --name) name=${2:?--name needs a value}; shift ;;
    --json) json=1 ;;
    *) echo "$prog: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $count =~ ^[1-9][0-9]*$ ]] || { echo "$prog: --count must be a positive number" >&2; exit 2; }
[[ $limit =~ ^[1-9][0-9]*$ ]] || { echo "$prog: --time-limit must be a positive number of seconds" >&2; exit 2; }
drops=${drops//,/ }
for p in $drops $corrupt; do
  if ! [[ $p =~ ^[0-9]+$ ]] || ((p > 100)); then echo "$prog: $p is not a percentage (0-100)" >&2; exit 2; fi
done
[[ $(id -u) -eq 0 ]] || { echo "$prog: needs root (namespaces, XDP)" >&2; exit 1; }
for t in jq awk; do command -v "$t" >/dev/null || { echo "$prog: needs $t" >&2; exit 1; }; done

cluster="$here/tools/cluster/locabus-cluster"
bin_dir=$(cd "$bin_dir" && pwd)
export LOCABUS_BIN_DIR=$bin_dir
ctl=$bin_dir/tools/locabusctl/locabusctl
[[ -x $ctl ]] || ctl=$bin_dir/locabusctl
[[ -x $ctl ]] || { echo "$prog: no locabusctl in $bin_dir" >&2; exit 1; }
work=$(mktemp -d)
pids=()

log() { echo "$prog: $*" >&2; }
cleanup() {
  local rc=$?
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  "$cluster" down "$name" -q >/dev/null 2>&1 || "$cluster" down "$name"
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT

on() { local k=$1; shift; "$cluster" exec --name "$name" "$k" "$@"; }
peer_counters() { on "$1" "$ctl" counters --json | jq -c --arg p "$2" '.peers[$p] // {}'; }
now() { date +%s.%N; }

bring_up() {
  log "cluster $name: 2 nodes, datapath $datapath, binaries from $bin_dir"
  "$cluster" up 2 --name "$name" --datapath "$datapath" -q >/dev/null
  local deadline=$((SECONDS + 20))
  until on 1 "$ctl" peers --json | jq -e '.[] | select(.node == 2) | .state == "alive"' >/dev/null &&
    on 2 "$ctl" peers --json | jq -e '.[] | select(.node == 1) | .state == "alive"' >/dev/null; do
    ((SECONDS < deadline)) || { log "the two nodes did not find each other"; exit 1; }
    sleep 0.2
  done
  # Open the connection from node 1 to node 2 without loss (one message), so
  # that no row pays for a handshake through the chaos program.
  on 2 "$ctl" msg recv --proto 17 --count 1 --timeout 10 >/dev/null &
  local rp=$!
  pids+=("$rp")
  until on 2 "$ctl" counters --json | jq -e '.api.endpoints | length > 0' >/dev/null; do sleep 0.1; done
  on 1 "$ctl" msg send --proto 17 --to 2 hello >/dev/null
  wait "$rp" || { log "the first message from node 1 to node 2 did not arrive"; exit 1; }
}

# One row: streams $count messages through $1 % drop; writes a JSON row to
# $work/row.json.
row() { # drop
  local drop=$1 k
  for k in 1 2; do
    "$cluster" chaos --name "$name" "$k" --drop "$drop" --corrupt "$corrupt" --seed $((6 + k)) >/dev/null
  done
  on 2 "$ctl" msg recv --sequence --count "$count" --timeout $((limit + 30)) --json >"$work/recv.json" 2>"$work/recv.err" &
  local rp=$!
  pids+=("$rp")
  local deadline=$((SECONDS + 10))
  until on 2 "$ctl" counters --json | jq -e '.api.endpoints | length > 0' >/dev/null; do
    ((SECONDS < deadline)) || { log "the receiver did not open its endpoint"; exit 1; }
    sleep 0.1
  done
  local s0 r0 t0 t1 capped=false recv_secs=null
  s0=$(peer_counters 1 2)
  r0=$(peer_counters 2 1)
  t0=$(now)
  on 1 "$ctl" msg send --to 2 --sequence --count "$count" --size 1024 --timeout $((limit + 30)) --json \
    >"$work/send.json" 2>"$work/send.err" &
  local sp=$!
  pids+=("$sp")
  local next=$((SECONDS + 5)) stop=$((SECONDS + limit))
  while kill -0 "$rp" 2>/dev/null; do
    if ((SECONDS >= stop)); then
      capped=true
      break
    fi
    if ((SECONDS >= next)); then
      local d
      d=$(peer_counters 2 1 | jq --argjson a "$r0" '(.delivered // 0) - ($a.delivered // 0)') || d="?"
      log "  drop $drop %: $d/$count delivered after $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }') s"
      next=$((SECONDS + 5))
    fi
    sleep 0.1
  done
  t1=$(now)
  # The receiver first: for a stopped row the sender's counters, read a
  # moment later, can only have grown (frames per message errs high).
  local s1 r1
  r1=$(peer_counters 2 1)
  s1=$(peer_counters 1 2)
  if $capped; then
    kill "$rp" "$sp" 2>/dev/null || true
    wait "$rp" 2>/dev/null || true
    wait "$sp" 2>/dev/null || true
  else
    wait "$rp" || { log "drop $drop %: the receiver failed: $(cat "$work/recv.json" "$work/recv.err")"; exit 1; }
    wait "$sp" || { log "drop $drop %: the sender failed: $(cat "$work/send.json" "$work/send.err")"; exit 1; }
    jq -e '.ok and .out_of_order == 0 and .corrupt == 0' "$work/recv.json" >/dev/null ||
      { log "drop $drop %: stream incomplete: $(cat "$work/recv.json")"; exit 1; }
    recv_secs=$(jq .seconds "$work/recv.json")
  fi
  jq -nc --argjson drop "$drop" --argjson corrupt "$corrupt" --argjson n "$count" --argjson s0 "$s0" \
    --argjson s1 "$s1" --argjson r0 "$r0" --argjson r1 "$r1" --argjson t0 "$t0" --argjson t1 "$t1" \
    --argjson capped "$capped" --argjson limit "$limit" --argjson rs "$recv_secs" '
    def d($a; $b; $k): ($b[$k] // 0) - ($a[$k] // 0);
    (d($r0; $r1; "delivered")) as $delivered
    | (d($s0; $s1; "data_sent") + d($s0; $s1; "retransmits")) as $frames
    | (if $capped then $limit else $rs end) as $secs
    | {drop_percent: $drop, corrupt_percent: $corrupt, messages: $n, delivered: $delivered,
       complete: ($capped | not), seconds: $secs, wall_seconds: ($t1 - $t0),
       time_limit: (if $capped then $limit else null end),
       messages_per_second: (if $delivered > 0 and $secs > 0 then $delivered / $secs else 0 end),
       frames_per_message: (if $delivered > 0 then $frames / $delivered else null end),
       data_sent: d($s0; $s1; "data_sent"), retransmits: d($s0; $s1; "retransmits"),
       timeouts: d($s0; $s1; "timeouts"), naks_received: d($s0; $s1; "naks_received"),
       tlp_probes: (if $s1 | has("tlp_probes") then d($s0; $s1; "tlp_probes") else null end),
       congestion_events: (if $s1 | has("congestion_events") then d($s0; $s1; "congestion_events") else null end)}' \
    >"$work/row.json"
  if $capped; then
    log "drop $drop %: stopped after ${limit} s; bringing the cluster up afresh"
    "$cluster" down "$name" -q >/dev/null
    bring_up
  fi
}

bring_up
rows=()
for drop in $drops; do
  log "drop $drop % (corrupt $corrupt %) on both nodes: $count x 1 KB from node 1 to node 2"
  row "$drop"
  r=$(cat "$work/row.json")
  rows+=("$r")
  log "  $(jq -r '"\(.delivered)/\(.messages) in \(.seconds * 100 | round / 100) s, \(.messages_per_second | round) messages/s, \((.frames_per_message // 0) * 1000 | round / 1000) frames per message, \(.retransmits) retransmits, \(.timeouts) timeouts"' <<<"$r")"
done

if ((json)); then
  printf '%s\n' "${rows[@]}" | jq -s .
else
  printf '| drop %% | time (s) | messages/s | frames per message | retransmits | timeouts | NAKs received |\n'
  printf '|-------:|---------:|-----------:|-------------------:|------------:|---------:|--------------:|\n'
  printf '%s\n' "${rows[@]}" | jq -r '
    "| \(.drop_percent) | \(if .complete then (.seconds * 100 | round / 100 | tostring)
                          else "> \(.time_limit) (\(.delivered) of \(.messages) delivered)" end)"
    + " | \(.messages_per_second | round) | \(if .frames_per_message then (.frames_per_message * 1000 | round / 1000 | tostring) else "-" end)"
    + " | \(.retransmits) | \(.timeouts) | \(.naks_received) |"'
fi
