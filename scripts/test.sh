#!/usr/bin/env bash
# Builds Locabus and runs every test: unit, bpf (BPF_PROG_TEST_RUN), e2e
# (namespaces, veth, AF_XDP, the demo), a format check, then the unit, bpf and
# e2e tests again in an AddressSanitizer + UndefinedBehaviorSanitizer build.
# Needs root for the bpf and e2e tiers; under CI (CI=true) a missing
# privilege or kernel feature fails those tests instead of skipping them.
#
#   scripts/test.sh                 # as root: everything
#   scripts/test.sh -L unit         # extra arguments go to ctest
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

if [[ $(id -u) -eq 0 ]]; then
  scripts/setup.sh
else
  echo "test.sh: not root: skipping package installation; bpf and e2e tests will be skipped" >&2
fi

jobs=$(nproc)
echo "== build (RelWithDebInfo)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j "$jobs"
echo "== tests"
ctest --test-dir build --output-on-failure --timeout 600 "$@"

if (($# == 0)); then
  echo "== build (ASan + UBSan)"
  # Without locabus-bench's peers (gRPC, Open MPI): a benchmark under the
  # sanitizers measures nothing, and their libraries are not instrumented.
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DLOCABUS_SANITIZE=ON -DLOCABUS_BENCH_PEERS=OFF
  cmake --build build-asan -j "$jobs"
  echo "== tests under sanitizers"
  # Left out: the demo, formatting, and install_package (it links
  # uninstrumented programs against the instrumented library). The chaos
  # streams (unicast and broadcast) and incast run here too: 15-45 s each
  # under the sanitizers on a 2-core VM.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure --timeout 600 -E '^(demo|clang_format|install_package)$'
fi
echo "== all tests passed"
