#!/usr/bin/env bash
# locabusctl's error paths: exit status, and messages that say what failed and
# what to do. Needs no privileges. Usage: cli_errors.sh <locabusctl>
set -uo pipefail
ctl=$1
fail=0

expect() { # description, expected exit status, pattern in stderr, command...
  local what=$1 want=$2 pattern=$3
  shift 3
  local err rc
  err=$("$@" 2>&1 >/dev/null | tr '\n' ' ')
  rc=$?
  if [[ $rc -ne $want ]]; then
    echo "FAIL: $what: exit status $rc, expected $want ($err)"
    fail=1
  elif ! grep -qE -- "$pattern" <<<"$err"; then
    echo "FAIL: $what: stderr lacks /$pattern/: $err"
    fail=1
  else
    echo "ok: $what"
  fi
}

expect "missing interface" 1 "no network interface named 'lbnosuch0'.*hint: list interfaces" \
  "$ctl" xdp status --iface lbnosuch0
expect "stats without an attached fast path" 1 "open pinned BPF map.*hint: is the fast path attached" \
  "$ctl" stats --iface lo --pin-dir /nonexistent/locabus
expect "node id out of range" 105 "not a node id" "$ctl" xdp attach --iface lo --node-id 70000
expect "broadcast is not a node id" 105 "not a node id" "$ctl" xdp attach --iface lo --node-id 0xffff
expect "unknown mode" 105 "mode" "$ctl" xdp attach --iface lo --mode turbo
expect "unknown packet type name" 105 "neither a packet type" \
  "$ctl" frame send --iface lo --to 2 --type bogus
expect "protocol id without a socket slot" 1 "protocol 16 cannot have a socket of its own" \
  "$ctl" frame recv --iface lo --proto 16
expect "iface is required" 106 "iface is required" "$ctl" stats
expect "a subcommand is required" 106 "subcommand" "$ctl"
expect "no daemon at the socket" 1 "connect to locabusd at /nonexistent/l.sock.*is locabusd running" \
  "$ctl" status --socket /nonexistent/l.sock
expect "no daemon (LOCABUS_SOCKET)" 1 "is locabusd running" env LOCABUS_SOCKET=/nonexistent/l.sock "$ctl" peers --json
expect "msg to a reserved protocol" 105 "not in range" "$ctl" msg send --to 2 --proto 3 hi
expect "msg send needs --to" 106 "to is required" "$ctl" msg send hi
expect "msg ping needs --count" 106 "count is required" "$ctl" msg ping --to 2
expect "msg ping payload below 8 bytes" 105 "not in range" "$ctl" msg ping --to 2 --count 1 --size 4
expect "msg echo without a daemon" 1 "is locabusd running" "$ctl" msg echo --socket /nonexistent/l.sock
expect "events: unknown kind" 105 "until" "$ctl" events --until exploded
expect "chaos rate over 100" 105 "not in range" "$ctl" chaos set lo --drop 101
expect "chaos unknown packet type" 105 "not a packet type" "$ctl" chaos set lo --type bogus
expect "chaos status when not attached" 1 "no chaos program on lbnosuch0.*hint: attach it first" \
  "$ctl" chaos status lbnosuch0

out=$("$ctl" --help) || { echo "FAIL: --help exit status"; fail=1; }
for cmd in xdp stats frame; do grep -q "$cmd" <<<"$out" || { echo "FAIL: --help lacks $cmd"; fail=1; }; done
for sub in "xdp attach" "xdp detach" "xdp status" "stats" "frame send" "frame recv" "chaos attach" "chaos set" \
  "chaos status" "chaos detach" "msg send" "msg recv" "msg echo" "msg ping"; do
  # shellcheck disable=SC2086
  "$ctl" $sub --help >/dev/null || { echo "FAIL: $sub --help"; fail=1; }
done
exit $fail
