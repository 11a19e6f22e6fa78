#!/usr/bin/env bash
# locabus-call without a daemon: usage errors, a missing daemon, --help.
# Needs no privileges. Usage: locabus_call_cli.sh <locabus-call>
set -uo pipefail
call=$1
fail=0
nosock=/nonexistent/locabusd.sock

expect() { # description, expected exit status, pattern in stderr, command...
  local what=$1 want=$2 pattern=$3 err rc=0
  shift 3
  err=$("$@" 2>&1 >/dev/null) || rc=$?
  err=$(tr '\n' ' ' <<<"$err")
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

expect "no daemon" 1 "connect to locabusd at $nosock.*is locabusd running" "$call" --socket "$nosock" echo hi
expect "no daemon (LOCABUS_SOCKET)" 1 "is locabusd running" env LOCABUS_SOCKET="$nosock" "$call" --node all node.info
expect "--serve without a daemon" 1 "is locabusd running" "$call" --socket "$nosock" --serve upper
expect "a handler is required" 105 "handler to call is required" "$call" --socket "$nosock"
expect "node id out of range" 105 "not a node id" "$call" --socket "$nosock" --node 70000 echo
expect "0xffff is not a node id" 105 "not a node id" "$call" --socket "$nosock" --node 0xffff echo
expect "a bad --node before connecting" 105 "not a node id" "$call" --socket "$nosock" --node two echo
expect "--inflight needs --count or --duration" 105 "needs --count or --duration" "$call" --inflight 4 echo
expect "--size needs --count or --duration" 105 "needs --count or --duration" "$call" --size 64 echo
expect "--size and ARG" 108 "excludes" "$call" --count 1 --size 64 echo hi
expect "--size over the limit" 105 "not in range" "$call" --count 1 --size 65441 echo
expect "--serve with --node" 108 "excludes" "$call" --serve upper --node 2
expect "--serve and a handler" 108 "excludes" "$call" --serve upper echo
expect "--timeout with --serve" 105 "applies to calls" "$call" --serve upper --timeout 2
expect "--short needs --serve" 107 "requires" "$call" --short echo
expect "an unknown --serve behaviour" 1 "no behaviour 'juggle'" "$call" --socket "$nosock" --serve x=juggle
expect "a --serve name over 63 bytes" 1 "not a handler name" "$call" --socket "$nosock" \
  --serve "$(printf 'n%.0s' {1..64})=upper"
expect "an argument over 65,440 bytes" 1 "over the limit of 65440" \
  "$call" --socket "$nosock" echo "$(head -c 65441 /dev/zero | tr '\0' x)"
expect "--pause needs --keep-going" 107 "requires" "$call" --count 1 --pause 1 echo
expect "--timeout must be positive" 105 "" "$call" --timeout 0 echo

out=$("$call" --help) || { echo "FAIL: --help exit status"; fail=1; }
for want in --node --count --inflight --serve "Exit status" "11 no_such_handler" "13 node_dead"; do
  grep -q -- "$want" <<<"$out" || { echo "FAIL: --help lacks $want"; fail=1; }
done
exit $fail
