#!/usr/bin/env bash
# locabus-cluster's command line: --help of every command, usage errors (exit
# status 2, checked before anything needs root); with --shellcheck, the tool
# and its tests are linted. Needs no privileges.
#
#   cluster_tool_cli_test.sh <locabus-cluster>
#   cluster_tool_cli_test.sh --shellcheck <locabus-cluster>   # 77 = skipped (no shellcheck)
set -uo pipefail

if [[ ${1:-} == --shellcheck ]]; then
  tool=$2
  if ! command -v shellcheck >/dev/null; then
    if [[ ${CI:-} == true || ${LOCABUS_TEST_STRICT:-} == 1 ]]; then
      echo "FAIL: shellcheck is not installed (scripts/setup.sh installs it)"
      exit 1
    fi
    echo "SKIP: shellcheck is not installed"
    exit 77
  fi
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  shellcheck "$tool" "$here"/*.sh && echo "shellcheck: clean"
  exit
fi

tool=$1
fail=0
expect() { # description, expected status, pattern in the output, command...
  local what=$1 want=$2 pattern=$3
  shift 3
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if [[ $rc -ne $want ]]; then
    echo "FAIL: $what: exit status $rc, expected $want: $out"
    fail=1
  elif ! grep -qE -- "$pattern" <<<"$out"; then
    echo "FAIL: $what: output lacks /$pattern/: $out"
    fail=1
  else
    echo "ok: $what"
  fi
}

expect "--help" 0 "Commands:" "$tool" --help
expect "no command" 2 "Usage:" "$tool"
expect "unknown command" 2 "unknown command 'bogus'" "$tool" bogus
for cmd in up down exec stop start status chaos list; do
  expect "$cmd --help" 0 "^Usage: locabus-cluster $cmd" "$tool" "$cmd" --help
  expect "help $cmd" 0 "^Usage: locabus-cluster $cmd" "$tool" help "$cmd"
done
expect "up without N" 2 "how many nodes" "$tool" up
expect "up 0" 2 "N must be 1..250" "$tool" up 0
expect "up 251" 2 "N must be 1..250" "$tool" up 251
expect "up with a bad name" 2 "not a cluster name" "$tool" up 2 --name Bad-Name
expect "up with a long name" 2 "not a cluster name" "$tool" up 2 --name abcdefghijk
expect "up with an unknown datapath" 2 "auto, xdp or packet" "$tool" up 2 --datapath turbo
expect "up with a bad timeout" 2 "whole number" "$tool" up 2 --timeout soon
expect "up --name without a value" 2 "--name needs a value" "$tool" up 2 --name
expect "up: daemon arguments with --no-daemon" 2 "no-daemon" "$tool" up 2 --no-daemon -- --x
expect "up: unknown option" 2 "unknown option --nodes" "$tool" up 2 --nodes 3
expect "down NAME and --all" 2 "not both" "$tool" down abc --all
expect "exec without a command" 2 "needs NODE and COMMAND" "$tool" exec 1
expect "stop without a node" 2 "which node" "$tool" stop
expect "stop with a bad signal" 2 "not a signal" "$tool" stop 1 --signal NOPE
expect "start with --signal" 2 "unknown option --signal" "$tool" start 1 --signal KILL
expect "chaos without settings" 2 "give settings" "$tool" chaos 1
expect "chaos with settings and --off" 2 "give settings" "$tool" chaos 1 --drop 5 --off
expect "chaos --drop without a value" 2 "needs a value" "$tool" chaos 1 --drop
exit $fail
