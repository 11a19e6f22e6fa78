#!/usr/bin/env bash
# The fast path driven by locabusctl alone (no daemon): two nodes in network
# namespaces joined by a veth pair, the XDP fast path attached natively on
# both, crafted frames through AF_XDP. It checks what it shows and exits
# non-zero if the fast path misbehaves.
#
#   tests/e2e/fastpath_cli_test.sh                 # as root: installs packages, builds, runs
#   tests/e2e/fastpath_cli_test.sh --no-build --bin build/tools/locabusctl/locabusctl
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=1
ctl="$here/build/tools/locabusctl/locabusctl"
while (($#)); do
  case "$1" in
    --no-build) build=0 ;;
    --bin) ctl="$2"; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "fastpath_cli_test.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ $(id -u) -ne 0 ]]; then
  echo "fastpath_cli_test.sh: needs root (network namespaces, XDP, bpffs); run it as root" >&2
  exit 1
fi

bold=$'\e[1m'; dim=$'\e[2m'; green=$'\e[32m'; red=$'\e[31m'; reset=$'\e[0m'
[[ -t 1 ]] || { bold=; dim=; green=; red=; reset=; }
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }
run() { printf '%s$ %s%s\n' "$dim" "$*" "$reset"; "$@"; }

if ((build)); then
  step "Installing dependencies and building"
  "$here/scripts/setup.sh"
  cmake -S "$here" -B "$here/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$here/build" --target locabusctl
fi
[[ -x "$ctl" ]] || { echo "fastpath_cli_test.sh: $ctl is not built (drop --no-build)" >&2; exit 1; }

# Unique names for this run; torn down on any exit.
tag=$(printf '%06x' $(( (RANDOM << 9 ^ RANDOM ^ $$) & 0xffffff )))
ns_a="lbd${tag}a"; ns_b="lbd${tag}b"
if_a="ld${tag}a0"; if_b="ld${tag}b0"
subnet=$(( 16#${tag:0:2} % 250 + 1 ))
ip_a="198.18.$subnet.1"; ip_b="198.18.$subnet.2"
work=$(mktemp -d)
recv_pid=""

cleanup() {
  set +e
  [[ -n "$recv_pid" ]] && kill "$recv_pid" 2>/dev/null && wait "$recv_pid" 2>/dev/null
  nsenter --net="/run/netns/$ns_a" "$ctl" xdp detach --iface "$if_a" >/dev/null 2>&1
  nsenter --net="/run/netns/$ns_b" "$ctl" xdp detach --iface "$if_b" >/dev/null 2>&1
  ip netns del "$ns_a" 2>/dev/null
  ip netns del "$ns_b" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# nsenter (unlike `ip netns exec`) keeps the host's /sys/fs/bpf, so the pins
# outlive each command and bpftool can read them.
in_a() { nsenter --net="/run/netns/$ns_a" "$@"; }
in_b() { nsenter --net="/run/netns/$ns_b" "$@"; }

step "1. Two nodes: namespaces $ns_a and $ns_b, veth $if_a <-> $if_b"
ip netns add "$ns_a"
ip netns add "$ns_b"
ip link add "$if_a" netns "$ns_a" type veth peer name "$if_b" netns "$ns_b"
ip -n "$ns_a" addr add "$ip_a/24" dev "$if_a"
ip -n "$ns_b" addr add "$ip_b/24" dev "$if_b"
ip -n "$ns_a" link set "$if_a" up
ip -n "$ns_b" link set "$if_b" up
echo "node 1 = $ip_a, node 2 = $ip_b"

step "2. Attach the XDP fast path on both ends"
in_a "$ctl" xdp attach --iface "$if_a" --node-id 1 --mode native
in_b "$ctl" xdp attach --iface "$if_b" --node-id 2 --mode native
run in_b "$ctl" xdp status --iface "$if_b"

step "3. Node 2 listens on an AF_XDP socket (the default socket of queue 0)"
in_b "$ctl" frame recv --iface "$if_b" --count 4 --timeout 15 >"$work/recv.txt" 2>"$work/recv.err" &
recv_pid=$!
for _ in $(seq 50); do grep -q listening "$work/recv.err" 2>/dev/null && break; sleep 0.1; done
cat "$work/recv.err"

step "4. Node 2 tracks node 1 (as the engine will once a connection is up), node 1 sends frames"
run in_b "$ctl" xdp track-peer --iface "$if_b" --node 1 --una 900 --max 1100
send() { run in_a "$ctl" frame send --iface "$if_a" "$@"; }
send --to 2 --proto kccm --seq 1 --payload "hello from node 1"
send --to broadcast --proto monitor --seq 2 --payload "to every node"
send --to 2 --type nak --ack 7 --seq 9
send --to 2 --type ack --ack 1000 --window 1024
send --to 2 --payload "corrupted on the way" --bad-csum
send --to 9 --payload "for node 9, not us"
send --to 2 --payload "len says more than there is" --len 200
send --to 2 --type 99 --payload "unknown type"
send --to 2 --from 2 --payload "pretends to be node 2"
send --to 2 --proto locasock --seq 3 --size 1484

step "5. What arrived at node 2 (only valid frames; the pure ACK stayed in the kernel)"
set +e
wait "$recv_pid"; recv_rc=$?
set -e
recv_pid=""
cat "$work/recv.txt"

step "6. Fast path counters on node 2"
run in_b "$ctl" stats --iface "$if_b"
in_b "$ctl" stats --iface "$if_b" --json >"$work/stats.json"

step "7. The kernel's per-peer ACK state, as bpftool shows it"
pins=$(in_b "$ctl" xdp status --iface "$if_b" --json | jq -r .pin_dir)
run bpftool map dump pinned "$pins/peers"

step "8. IP traffic on the same interfaces still works"
run ip netns exec "$ns_a" ping -c 2 -i 0.2 -W 2 "$ip_b"

step "Checking"
fail=0
check() { # name expected actual
  if [[ "$2" == "$3" ]]; then printf '%sok%s   %s = %s\n' "$green" "$reset" "$1" "$3"
  else printf '%sFAIL%s %s: expected %s, got %s\n' "$red" "$reset" "$1" "$2" "$3"; fail=1; fi
}
c() { jq -r ".counters.$1" "$work/stats.json"; }
check "frames received by node 2" 4 "$(grep -c . "$work/recv.txt")"
check "receiver exit status" 0 "$recv_rc"
check redirected 4 "$(c redirected)"
check ack_consumed 1 "$(c ack_consumed)"
check nak_recorded 1 "$(c nak_recorded)"
check drop_csum 1 "$(c drop_csum)"
check drop_not_ours 1 "$(c drop_not_ours)"
check drop_len_frame 1 "$(c drop_len_frame)"
check drop_type 1 "$(c drop_type)"
check drop_own 1 "$(c drop_own)"
check "peer 1 ack_num" 1000 "$(jq -r '.peers[] | select(.node_id == 1) | .ack_num' "$work/stats.json")"
if ((fail)); then
  echo "${red}${bold}demo FAILED${reset}" >&2
  exit 1
fi
echo "${green}${bold}demo passed${reset}: tearing down $ns_a and $ns_b"
