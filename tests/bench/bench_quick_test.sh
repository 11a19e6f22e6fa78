#!/usr/bin/env bash
# locabus-bench's quick mode as a smoke test (issue 14): every scenario runs end
# to end on real virtual clusters (Locabus and every peer: TCP, UDP, Open MPI,
# gRPC), the JSON parses and holds every scenario, side and target, and the
# plots are PNG files. It never checks that a number is reached: speed is
# judged by full runs side by side (docs/PERFORMANCE.md), not in CI.
#
#   bench_quick_test.sh BUILD_DIR            (root; skipped without it unless CI=true)
#   bench_quick_test.sh --cli BUILD_DIR      (no root: --help and usage errors)
set -euo pipefail

cli=0
if [[ ${1:-} == --cli ]]; then
  cli=1
  shift
fi
build=${1:?usage: bench_quick_test.sh [--cli] BUILD_DIR}
bench=$build/tools/bench/locabus-bench
py=/usr/bin/python3

fail() {
  echo "bench_quick_test: FAIL: $*" >&2
  exit 1
}

if ((cli)); then
  "$bench" --help | grep -q "unicast-latency" || fail "--help does not list the scenarios"
  "$bench" --help | grep -q -- "--quick" || fail "--help does not describe --quick"
  set +e
  "$bench" --scenario nope > /dev/null 2> "${TMPDIR:-/tmp}/bench_cli.$$"
  rc=$?
  set -e
  grep -q "unknown scenario nope" "${TMPDIR:-/tmp}/bench_cli.$$" || fail "an unknown scenario is not named"
  rm -f "${TMPDIR:-/tmp}/bench_cli.$$"
  [[ $rc -eq 2 ]] || fail "bad usage exits $rc, not 2"
  set +e
  "$bench" --runs 0 > /dev/null 2>&1
  rc=$?
  set -e
  [[ $rc -eq 2 ]] || fail "--runs 0 exits $rc, not 2"
  echo "bench_quick_test: CLI ok"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  [[ ${CI:-} == true ]] && fail "needs root (namespaces) and CI=true"
  echo "bench_quick_test: skipped (needs root)"
  exit 77
fi
for tool in mpirun gnuplot; do
  command -v "$tool" > /dev/null || fail "$tool missing: run scripts/setup.sh"
done

out=$(mktemp -d /tmp/bench_quick.XXXXXX)
trap 'rm -rf "$out"' EXIT
start=$SECONDS
"$bench" --quick --bin-dir "$build" --json "$out/results.json" --plots "$out/plots" \
  || fail "locabus-bench --quick failed (exit $?)"
echo "bench_quick_test: the quick run took $((SECONDS - start)) s"

"$py" - "$out/results.json" << 'PY'
import json, sys

doc = json.load(open(sys.argv[1]))
errors = []

def need(cond, what):
    if not cond:
        errors.append(what)

def num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v >= 0

r = doc["results"]
need(doc["mode"] == "quick", "mode is not quick")
for s in ["unicast-latency", "unicast-throughput", "broadcast", "rpc", "cost", "idle"]:
    need(s in r, f"scenario {s} missing")
for size in ("s64", "s1024"):
    row = r["unicast-latency"][size]
    for side in ("locabus", "tcp", "udp"):
        for q in ("p50", "p99", "p999"):
            need(num(row[side][q]["median"]), f"unicast-latency {size} {side} {q} is not a number")
    need(num(row["p50_ratio_vs_tcp"]), f"unicast-latency {size} has no ratio")
for size in ("s1024", "s65536"):
    row = r["unicast-throughput"][size]
    for side in ("locabus", "tcp"):
        need(num(row[side]["rate"]["median"]) and row[side]["rate"]["median"] > 0,
             f"unicast-throughput {size} {side}: no rate")
        need(num(row[side]["cpu_s_per_million"]["median"]), f"unicast-throughput {size} {side}: no cpu")
need(len(r["broadcast"]) >= 2, "broadcast: fewer than two cluster sizes")
for key, row in r["broadcast"].items():
    for side in ("locabus", "openmpi", "openmpi-yield"):
        need(num(row[side]["seconds"]["median"]) and row[side]["seconds"]["median"] > 0,
             f"broadcast {key} {side}: no time")
        # A receiver's CPU can not be 0: the daemons' and clients' time is read.
        need(num(row[side]["receiver_cpu_us_per_message"]["median"])
             and row[side]["receiver_cpu_us_per_message"]["median"] > 0, f"broadcast {key} {side}: no cpu")
    need(num(row["speedup_vs_mpi"]), f"broadcast {key}: no speedup")
for k in ("k1", "k64"):
    row = r["rpc"][k]
    for side in ("locabus", "tcp", "grpc"):
        need(num(row[side]["calls_per_s"]["median"]) and row[side]["calls_per_s"]["median"] > 0,
             f"rpc {k} {side}: no calls/s")
        need(num(row[side]["p50"]["median"]), f"rpc {k} {side}: no p50")
need(len(r["cost"]["rows"]) >= 7, "cost: rows missing")
need(len(r["unicast-latency"]["s1024"]["udp"]["p50"]["runs"]) == 1, "quick mode is not one run per side")
need(num(r["idle"]["daemons_cpu_s"]), "idle: no CPU figure")
need(len(doc["targets"]) >= 9, "targets missing")
for t in doc["targets"]:
    # The quick mode stops at 4 nodes: the 16-node targets are not measured.
    if not t["id"].startswith("bcast16"):
        need(t["met"] in (True, False), f"target {t['id']} was not measured")
need(len(doc.get("plots", [])) == 2, "plots missing")
for p in doc.get("plots", []):
    with open(p, "rb") as f:
        need(f.read(8) == b"\x89PNG\r\n\x1a\n", f"{p} is not a PNG")
if errors:
    print("bench_quick_test: FAIL:\n  " + "\n  ".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"bench_quick_test: JSON ok: {len(r)} scenarios, {len(doc['targets'])} targets")
PY
