# shellcheck shell=bash
# Helpers sourced by the end-to-end shell tests.

# jq -e that also fails when there is no JSON at all. jq 1.6 (Debian 12)
# exits 0 on an empty file or string, so a check of a result that was never
# written (a receiver that crashed, a command that printed nothing) would
# pass. Prints what jq printed, like jq -e.
jqe() {
  local out
  out=$(jq -e "$@") || return
  if [[ -z $out ]]; then
    echo "jqe: no JSON input (jq -e $*)" >&2
    return 4
  fi
  printf '%s\n' "$out"
}
