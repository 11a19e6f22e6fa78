#!/usr/bin/env bash
# End-to-end test of tools/cluster/locabus-cluster without the real daemon:
# the network (--no-daemon), exec, status, list, chaos, two clusters at once,
# teardown (also after failed and interrupted `up`s and with a lost state
# file), and the daemon life cycle with stand-in daemons.
#
#   cluster_tool_test.sh <locabus-cluster> <build dir>
#
# Needs root. Exit status 77 (skip) where root or a tool is missing, except
# under CI (CI=true or LOCABUS_TEST_STRICT=1), where that fails.
# shellcheck disable=SC2015 # `cond && ok ... || bad ...`: ok never fails
set -euo pipefail
tool=$1
build=$2
ctl=$build/tools/locabusctl/locabusctl

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
for t in ip nsenter jq ping flock setsid; do command -v "$t" >/dev/null || skip "$t is not installed"; done
[[ -x $ctl ]] || { echo "FAIL: $ctl is not built"; exit 1; }

export LOCABUS_BIN_DIR=$build
unset LOCABUS_CLUSTER NOTIFY_SOCKET

tag=$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
A=lt${tag}a B=lt${tag}b C=lt${tag}c D=lt${tag}d E=lt${tag}e F=lt${tag}f G=lt${tag}g H=lt${tag}h I=lt${tag}i
J=lt${tag}j
work=$(mktemp -d)

cleanup() {
  set +e
  local p n
  for p in $(jobs -pr); do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for n in "$A" "$B" "$C" "$D" "$E" "$F" "$G" "$H" "$I" "$J"; do "$tool" down -q "$n" >/dev/null 2>&1; done
  rm -rf "$work" "${TMPDIR:-/tmp}"/locabus-cluster-lt"$tag"?.*
}
trap cleanup EXIT

failures=0
ok() { echo "ok:   $*"; }
bad() { echo "FAIL: $*"; failures=$((failures + 1)); }
check() { # what expected actual
  if [[ $2 == "$3" ]]; then ok "$1"; else bad "$1: expected '$2', got '$3'"; fi
}
section() { printf '\n== %s\n' "$*"; }

# Nothing of cluster $1 may remain: namespaces, links here, state, pins, processes.
check_gone() { # name what
  local n=$1 left=""
  left+=$(ip netns list | awk '{print $1}' | grep -E "^$n-" | tr '\n' ' ' || true)
  left+=$(ip -o link show | awk -F': ' '{print $2}' | grep -E "^$n-" | tr '\n' ' ' || true)
  [[ -e /run/locabus-cluster/$n ]] && left+="/run/locabus-cluster/$n "
  left+=$(find /sys/fs/bpf/locabus -name "*@$n-*" 2>/dev/null | tr '\n' ' ' || true)
  # [n]: grep's own command line does not match.
  left+=$(grep -ls "/run/locabus-cluster/$n/[n]ode" /proc/[0-9]*/cmdline 2>/dev/null | tr '\n' ' ' || true)
  if [[ -z $left ]]; then ok "$2: nothing of $n is left"; else bad "$2: left behind: $left"; fi
}

# Has process $1 ended? (A zombie has: its new parent reaps it when it likes.)
ended() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [[ -z $st || $st == Z ]]
}

octet() { jq -r .subnet_octet "/run/locabus-cluster/$1/state.json"; }

# ------------------------------------------------------------------ the network
section "up 3 --no-daemon"
if ! "$tool" up 3 --no-daemon --name "$A" --json >"$work/a.json" 2>"$work/a.err"; then
  cat "$work/a.err"
  bad "up 3 --no-daemon failed"
  exit 1
fi
check "up --json is valid and lists 3 nodes" 3 "$(jq '.nodes | length' "$work/a.json")"
check "up --json names the cluster" "$A" "$(jq -r .name "$work/a.json")"
grep -q "node 3 of 3" "$work/a.err" && ok "progress on stderr" || bad "no progress lines on stderr"
xa=$(octet "$A")
check "node 2's address" "198.18.$xa.2" "$(jq -r '.nodes[1].ip' "$work/a.json")"

for pair in "1 2" "1 3" "2 3" "3 1"; do
  read -r s d <<<"$pair"
  if "$tool" exec --name "$A" "$s" ping -c 1 -W 2 "198.18.$xa.$d" >/dev/null; then
    ok "node $s pings node $d"
  else
    bad "node $s cannot ping node $d"
  fi
done

section "exec"
rc=0
"$tool" exec --name "$A" 2 sh -c 'exit 7' || rc=$?
check "exec returns the command's exit status" 7 "$rc"
check "exec runs in node 2's namespace" "198.18.$xa.2/24" \
  "$("$tool" exec --name "$A" 2 ip -o -4 addr show dev eth0 | awk '{print $4}')"
check "exec sets LOCABUS_NODE" 3 "$("$tool" exec --name "$A" 3 printenv LOCABUS_NODE)"
check "exec sets LOCABUS_SOCKET" "/run/locabus-cluster/$A/node3/locabusd.sock" \
  "$("$tool" exec --name "$A" 3 printenv LOCABUS_SOCKET)"
check "exec accepts the namespace name" "198.18.$xa.1/24" \
  "$("$tool" exec --name "$A" "$A-n1" ip -o -4 addr show dev eth0 | awk '{print $4}')"
check "exec: locabusctl is in PATH" "$(readlink -f "$ctl")" \
  "$(readlink -f "$("$tool" exec --name "$A" 1 sh -c 'command -v locabusctl')")"
rc=0
"$tool" exec --name "$A" 4 true 2>/dev/null || rc=$?
check "exec on a node that does not exist is a usage error" 2 "$rc"

section "status"
"$tool" status --name "$A" --json >"$work/status.json"
check "status --json lists 3 nodes" 3 "$(jq '.nodes | length' "$work/status.json")"
check "status: node namespaces" "$A-n1 $A-n2 $A-n3" "$(jq -r '[.nodes[].netns] | join(" ")' "$work/status.json")"
check "status: MAC read from eth0" "$(ip -n "$A-n2" -j link show dev eth0 | jq -r '.[0].address')" \
  "$(jq -r '.nodes[1].mac' "$work/status.json")"
check "status: no daemons" "false null" "$(jq -r '"\(.daemons) \(.nodes[0].pid)"' "$work/status.json")"
check "status: the switch-side end is a bridge port" "$A-v1" \
  "$(ip -n "$A-sw" -o link show master br0 | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | sort | head -1)"
check "status: eth0 has MTU 1500 and is up" "1500 UP" \
  "$(ip -n "$A-n1" -j link show dev eth0 | jq -r '.[0] | "\(.mtu) \(.operstate)"')"
"$tool" status --name "$A" | grep -q "$A-n3" && ok "status (text)" || bad "status (text) lacks $A-n3"

section "two more clusters, created at the same time"
"$tool" up 2 --no-daemon --name "$B" -q >/dev/null &
upb=$!
"$tool" up 1 --no-daemon --name "$I" -q >/dev/null
wait "$upb"
xb=$(octet "$B")
xi=$(octet "$I")
check "three clusters, three subnets" 3 "$(printf '%s\n' "$xa" "$xb" "$xi" | sort -u | wc -l)"
"$tool" down "$I" -q
"$tool" exec --name "$B" 2 ping -c 1 -W 2 "198.18.$xb.1" >/dev/null && ok "node 2 of $B pings node 1" ||
  bad "node 2 of $B cannot ping node 1"
"$tool" exec --name "$A" 1 ping -c 1 -W 2 "198.18.$xa.2" >/dev/null && ok "$A still works" || bad "$A broke"
check "list --json shows both" "$A $B" \
  "$("$tool" list --json | jq -r --arg a "$A" --arg b "$B" '[.[].name | select(. == $a or . == $b)] | join(" ")')"
rc=0
"$tool" up 1 --no-daemon --name "$A" -q >/dev/null 2>&1 || rc=$?
check "up refuses a name in use" 1 "$rc"

section "the fast path natively on the nodes, chaos on what node 1 sends"
# Native XDP on the node ends works with no XDP program on the switch side:
# the fast path redirects only into AF_XDP sockets.
in_sw=(nsenter --net="/run/netns/$A-sw" "$ctl")
"$tool" exec --name "$A" 1 locabusctl xdp attach --iface eth0 --node-id 1 --mode native >/dev/null
"$tool" exec --name "$A" 2 locabusctl xdp attach --iface eth0 --node-id 2 --mode native >/dev/null
# Starts a receiver of N frames on node 2; sets rpid.
recv() { # count timeout
  rm -f "$work/recv.out" "$work/recv.err"
  "$tool" exec --name "$A" 2 locabusctl frame recv --iface eth0 --count "$1" --timeout "$2" \
    >"$work/recv.out" 2>"$work/recv.err" &
  rpid=$!
  for _ in $(seq 100); do grep -q listening "$work/recv.err" 2>/dev/null && break; sleep 0.05; done
}
send() { "$tool" exec --name "$A" 1 locabusctl frame send --iface eth0 --to 2 --payload x --count "$1" >/dev/null; }
recv 3 10
send 3
rc=0
wait "$rpid" || rc=$?
check "3 frames node 1 -> node 2 through the bridge (native XDP, AF_XDP)" "0 3" "$rc $(grep -c . "$work/recv.out")"

"$tool" chaos --name "$A" 1 --drop 100 --seed 5 >/dev/null
"${in_sw[@]}" chaos status "$A-v1" --json >"$work/chaos.json"
check "chaos attached on $A-v1 in $A-sw" "true 100 5" \
  "$(jq -r '"\(.enabled) \(.drop_percent) \(.seed)"' "$work/chaos.json")"
check "status shows chaos on node 1 only" "true false false" \
  "$("$tool" status --name "$A" --json | jq -r '[.nodes[].chaos | tostring] | join(" ")')"
recv 1 2
send 5
rc=0
wait "$rpid" || rc=$?
check "with --drop 100 nothing arrives" "1 0" "$rc $(grep -c . "$work/recv.out" || true)"
check "chaos counted 5 frames dropped" "5 5" \
  "$("${in_sw[@]}" chaos status "$A-v1" --json | jq -r '"\(.seen) \(.dropped)"')"
"$tool" exec --name "$A" 1 ping -c 1 -W 2 "198.18.$xa.2" >/dev/null && ok "IP passes chaos" || bad "ping fails under chaos"
"$tool" chaos --name "$A" 1 --drop 0 --corrupt 100 --json >"$work/chaos.json"
check "a second chaos call changes the settings" "0 100 5" \
  "$(jq -r '"\(.drop_percent) \(.corrupt_percent) \(.seen)"' "$work/chaos.json")"
check "chaos --status" "100" "$("$tool" chaos --name "$A" 1 --status --json | jq -r .corrupt_percent)"
"$tool" chaos --name "$A" 1 --off >/dev/null
if "${in_sw[@]}" chaos status "$A-v1" >/dev/null 2>&1; then bad "chaos still attached after --off"; else
  ok "chaos --off detaches it"
fi
check "no XDP program left on $A-v1" "" "$(ip -n "$A-sw" -j link show dev "$A-v1" | jq -r '.[0].xdp // empty')"
recv 2 10
send 2
rc=0
wait "$rpid" || rc=$?
check "frames arrive again after --off" "0 2" "$rc $(grep -c . "$work/recv.out")"
"$tool" chaos --name "$A" 2 --drop 10 >/dev/null # left attached: down must remove it

section "down"
[[ -n $(find /sys/fs/bpf/locabus -name "*@$A-*") ]] && ok "pins exist before down" || bad "no pins before down"
"$tool" down "$A" -q
check_gone "$A" "down"
rc=0
"$tool" down "$A" -q || rc=$?
check "down is idempotent" 0 "$rc"
"$tool" exec --name "$B" 1 ping -c 1 -W 2 "198.18.$xb.2" >/dev/null && ok "$B is untouched" || bad "$B broke"
"$tool" down "$B" -q
check_gone "$B" "down"

section "no bpffs mounted (in a private mount namespace)"
if command -v unshare >/dev/null; then
  # shellcheck disable=SC2016 # expands in the inner shell
  if unshare -m --propagation private bash -c 'umount /sys/fs/bpf 2>/dev/null || true
      [[ $(stat -f -c %T /sys/fs/bpf) != bpf_fs ]] || exit 3
      "$0" up 1 --no-daemon --name "$1" -q >/dev/null || exit 4
      [[ $(stat -f -c %T /sys/fs/bpf) == bpf_fs ]] || exit 5
      "$0" chaos --name "$1" 1 --drop 1 >/dev/null || exit 6
      "$0" down "$1" -q' "$tool" "$J"; then
    ok "up mounts bpffs when it is missing"
  else
    bad "up without bpffs (status $?)"
  fi
  check_gone "$J" "down in the private mount namespace"
else
  bad "unshare is not installed"
fi

section "failed up: no locabusd"
rc=0
"$tool" up 2 --name "$C" --bin-dir /nonexistent >/dev/null 2>"$work/c.err" || rc=$?
check "up with --bin-dir /nonexistent fails" 1 "$rc"
grep -q /nonexistent "$work/c.err" && ok "the error names the directory" || bad "error: $(cat "$work/c.err")"
check_gone "$C" "failed up"
rc=0
"$tool" down "$C" -q || rc=$?
check "down after a failed up" 0 "$rc"

section "state lost: down finds the namespaces by prefix"
"$tool" up 2 --no-daemon --name "$D" -q >/dev/null
"$tool" exec --name "$D" 1 locabusctl xdp attach --iface eth0 --node-id 1 >/dev/null
echo '{' >"/run/locabus-cluster/$D/state.json"
"$tool" down "$D" -q 2>/dev/null
check_gone "$D" "down with a broken state file"
"$tool" up 2 --no-daemon --name "$D" -q >/dev/null
rm -rf "/run/locabus-cluster/$D"
"$tool" down "$D" -q
check_gone "$D" "down without a state directory"

# ------------------------------------------------------------------ daemons
# Stand-ins for locabusd: the tool's life cycle (start in the namespace,
# readiness through `locabusctl status --socket S --json`, logs, stop) is
# tested here; the real daemon has its own tests.
fake=$work/fake
mkdir -p "$fake"
cat >"$fake/locabusd" <<'EOF'
#!/usr/bin/env bash
sock=""
args=("$@")
while (($#)); do [[ $1 == --api-socket ]] && sock=$2; shift; done
echo "fake locabusd ${args[*]}"
echo "NOTIFY_SOCKET=${NOTIFY_SOCKET:-unset}"
case ${FAKE_MODE:-ok} in
  fail) echo "fake locabusd: cannot open eth0" >&2; exit 3 ;;
  stubborn) trap '' TERM ;;
  *) trap 'rm -f "$sock"; exit 0' TERM ;;
esac
[[ ${FAKE_MODE:-ok} == ok ]] && : >"$sock"
while :; do sleep 0.1; done
EOF
cat >"$fake/locabusctl" <<EOF
#!/usr/bin/env bash
if [[ \${1:-} == status && \${2:-} == --socket ]]; then
  [[ -e \$3 ]] || { echo "fake locabusctl: no answer on \$3" >&2; exit 1; }
  echo '{"fake": true, "socket": "'"\$3"'"}'
  exit 0
fi
exec "$ctl" "\$@"
EOF
chmod +x "$fake/locabusd" "$fake/locabusctl"

section "up 2 with (stand-in) daemons"
if NOTIFY_SOCKET=/nonexistent/notify "$tool" up 2 --name "$E" --bin-dir "$fake" --timeout 10 --json -- --extra 1 \
  >"$work/e.json" 2>"$work/e.err"; then
  ok "up 2 with daemons"
else
  cat "$work/e.err"
  bad "up 2 with daemons failed"
fi
check "both daemons alive and answering" "true true true true" \
  "$(jq -r '[.nodes[] | (.alive, (.daemon_status.fake // false)) | tostring] | join(" ")' "$work/e.json")"
pid1=$(jq -r '.nodes[0].pid' "$work/e.json")
check "daemon 1 runs in namespace $E-n1" "$(stat -L -c %i "/run/netns/$E-n1")" \
  "$(stat -L -c %i "/proc/$pid1/ns/net" 2>/dev/null)"
check "daemon 1's arguments" \
  "--iface eth0 --node-id 1 --datapath auto --run-dir /run/locabus-cluster/$E/node1 --api-socket /run/locabus-cluster/$E/node1/locabusd.sock --log-level info --extra 1" \
  "$(tr '\0' ' ' <"/proc/$pid1/cmdline" | sed 's/^.*locabusd //; s/ $//')"
check "daemon 1's output in node1/locabusd.log" 1 "$(grep -c '^fake locabusd --iface eth0 --node-id 1 ' \
  "/run/locabus-cluster/$E/node1/locabusd.log")"
check "the daemons do not get our NOTIFY_SOCKET" 1 "$(grep -c '^NOTIFY_SOCKET=unset' \
  "/run/locabus-cluster/$E/node2/locabusd.log")"
check "status shows the daemons ready" "ready ready" \
  "$("$tool" status --name "$E" | awk 'NR > 2 {print $7}' | tr '\n' ' ' | sed 's/ $//')"

section "stop and start one daemon"
"$tool" stop --name "$E" 1 -q
ended "$pid1" && ok "stop ends daemon 1" || bad "stop left daemon 1 ($pid1) running"
check "status: node 1 stopped, node 2 ready" "stopped ready" \
  "$("$tool" status --name "$E" | awk 'NR > 2 {print $7}' | tr '\n' ' ' | sed 's/ $//')"
rc=0
"$tool" stop --name "$E" 1 -q || rc=$?
check "stop again is no error" 0 "$rc"
"$tool" start --name "$E" 1 -q
pid1b=$(jq -r '.nodes[0].pid' "/run/locabus-cluster/$E/state.json")
[[ $pid1b != "$pid1" && $pid1b != null ]] && kill -0 "$pid1b" && ok "start: a new daemon 1 ($pid1b)" ||
  bad "start: pid $pid1b"
check "start: with the same arguments" 1 "$(tr '\0' ' ' <"/proc/$pid1b/cmdline" | grep -c -- '--log-level info --extra 1 $')"
check "start: the log is appended to" 2 "$(grep -c '^fake locabusd ' "/run/locabus-cluster/$E/node1/locabusd.log")"
rc=0
"$tool" start --name "$E" 1 -q 2>/dev/null || rc=$?
check "start refuses a running daemon" 1 "$rc"
"$tool" stop --name "$E" 1 --signal KILL -q
ended "$pid1b" && ok "stop --signal KILL" || bad "stop --signal KILL left $pid1b running"
rc=0
FAKE_MODE=fail "$tool" start --name "$E" 1 -q 2>"$work/start.err" || rc=$?
check "start fails when the daemon exits" 1 "$rc"
grep -q "cannot open eth0" "$work/start.err" && ok "and shows its log" || bad "start error: $(cat "$work/start.err")"
check "the other node is left alone" "true" \
  "$("$tool" status --name "$E" --json | jq -r '.nodes[1].alive')"
"$tool" start --name "$E" 1 -q
pid1=$(jq -r '.nodes[0].pid' "/run/locabus-cluster/$E/state.json")

section "down stops only what still is that daemon"
sleep 300 &
decoy=$!
pid2=$(jq -r '.nodes[1].pid' "$work/e.json")
jq --argjson d "$decoy" '.nodes[1].pid = $d | .nodes[1].pid_start = null' "/run/locabus-cluster/$E/state.json" \
  >"$work/st.json"
cp "$work/st.json" "/run/locabus-cluster/$E/state.json"
echo "$decoy" >"/run/locabus-cluster/$E/node2/locabusd.pid"
t0=$SECONDS
"$tool" down "$E" -q
((SECONDS - t0 < 8)) && ok "down took $((SECONDS - t0)) s (SIGTERM sufficed)" || bad "down took $((SECONDS - t0)) s"
kill -0 "$decoy" 2>/dev/null && ok "an unrelated recorded pid is not killed" || bad "down killed an unrelated process"
kill "$decoy"
wait "$decoy" 2>/dev/null || true
# Daemon 2 is no longer recorded; it must not survive unnoticed in a test.
ended "$pid2" || kill "$pid2"
pid2_gone=0
for _ in $(seq 50); do ended "$pid2" && { pid2_gone=1; break; }; sleep 0.1; done
((pid2_gone)) || bad "could not stop stand-in daemon $pid2"
check_gone "$E" "down with daemons"

section "failed up: a daemon exits"
rc=0
FAKE_MODE=fail "$tool" up 2 --name "$F" --bin-dir "$fake" --timeout 10 >/dev/null 2>"$work/f.err" || rc=$?
check "up fails when a daemon exits" 1 "$rc"
grep -q "node 1: locabusd (pid [0-9]*) exited with status 3" "$work/f.err" && ok "the error names node 1 and the status" ||
  bad "error: $(cat "$work/f.err")"
grep -q "cannot open eth0" "$work/f.err" && ok "the error shows the end of its log" || bad "no log tail in the error"
check_gone "$F" "failed up"

section "failed up: daemons never ready and deaf to SIGTERM"
rc=0
FAKE_MODE=stubborn "$tool" up 1 --name "$G" --bin-dir "$fake" --timeout 1 >/dev/null 2>"$work/g.err" || rc=$?
check "up fails after --timeout" 1 "$rc"
grep -q "node 1: locabusd (pid [0-9]*) not ready after 1 s" "$work/g.err" && ok "the error says which node" ||
  bad "error: $(cat "$work/g.err")"
grep -q "SIGKILL" "$work/g.err" && ok "SIGKILL after 10 s" || bad "no SIGKILL: $(cat "$work/g.err")"
check_gone "$G" "failed up"

section "interrupted up"
FAKE_MODE=slow "$tool" up 2 --name "$H" --bin-dir "$fake" --timeout 60 >/dev/null 2>"$work/h.err" &
upid=$!
for _ in $(seq 100); do
  [[ -s /run/locabus-cluster/$H/node2/locabusd.pid ]] && break
  sleep 0.1
done
sleep 0.5
kill -TERM "$upid"
rc=0
wait "$upid" || rc=$?
check "up killed by SIGTERM" 143 "$rc"
check_gone "$H" "interrupted up"

section "result"
if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
