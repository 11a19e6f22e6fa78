#!/usr/bin/env bash
# Installs Locabus into a temporary prefix and builds the client examples
# against it twice, as an application would: with pkg-config and with CMake's
# find_package(locabus). Then checks the programs link to the installed library.
#
#   tests/install/install_test.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:?usage: install_test.sh BUILD_DIR}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; exit 1; }
libdir=$(find "$prefix" -name liblocabus.so -printf '%h\n' | head -1)
[[ -n $libdir ]] || { echo "install_test: liblocabus.so was not installed" >&2; exit 1; }
for f in include/locabus/locabus.h include/locabus/client.hpp include/locabus/kccm.hpp sbin/locabusd sbin/locabusctl \
  bin/locabus-cat bin/locabus-call \
  lib/systemd/system/locabusd@.service; do
  [[ -e $prefix/$f ]] || { echo "install_test: $f was not installed" >&2; exit 1; }
done

# pkg-config
export PKG_CONFIG_PATH=$libdir/pkgconfig
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror -o "$work/hello_c" "$here/examples/hello_c.c" $(pkg-config --cflags --libs locabus)
# (ldd's output taken whole, not piped into grep -q: with pipefail, grep quitting early made ldd's
# SIGPIPE fail the test now and then)
deps=$(ldd "$work/hello_c")
grep -q "$libdir/liblocabus.so" <<<"$deps" || { deps=$(LD_LIBRARY_PATH=$libdir ldd "$work/hello_c") && grep -q liblocabus <<<"$deps"; }
# Without a daemon it must fail with a clear message, not crash.
if out=$(LOCABUS_SOCKET=$work/none.sock LD_LIBRARY_PATH=$libdir "$work/hello_c" 2 2>&1); then
  echo "install_test: hello_c succeeded without a daemon" >&2
  exit 1
fi
grep -q "is locabusd running" <<<"$out" || { echo "install_test: unclear error: $out" >&2; exit 1; }

# LocaMonitor in C (examples/least_loaded_c.c): without a daemon, a clear error.
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror -pedantic -o "$work/least_loaded_c" "$here/examples/least_loaded_c.c" $(pkg-config --cflags --libs locabus)
if out=$(LOCABUS_SOCKET=$work/none.sock LD_LIBRARY_PATH=$libdir "$work/least_loaded_c" 2>&1); then
  echo "install_test: least_loaded_c succeeded without a daemon" >&2
  exit 1
fi
grep -q "is locabusd running" <<<"$out" || { echo "install_test: unclear LocaMonitor error: $out" >&2; exit 1; }

# KCCM in C (C11 against the installed header): without a daemon, a clear error.
cat >"$work/kccm_c.c" <<'C'
#include <locabus/locabus.h>
#include <stdio.h>
int main(void) {
  locabus_kccm* k = NULL;
  if (locabus_kccm_open(NULL, 42, NULL, &k) < 0) {
    fprintf(stderr, "%s\n", locabus_last_error());
    return 1;
  }
  struct locabus_kccm_result r;
  locabus_kccm_call(k, 2, "echo", "hi", 2, 1000, &r);
  locabus_kccm_result_free(&r);
  locabus_kccm_close(k);
  return 0;
}
C
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror -pedantic -o "$work/kccm_c" "$work/kccm_c.c" $(pkg-config --cflags --libs locabus)
if out=$(LOCABUS_SOCKET=$work/none.sock LD_LIBRARY_PATH=$libdir "$work/kccm_c" 2>&1); then
  echo "install_test: kccm_c succeeded without a daemon" >&2
  exit 1
fi
grep -q "is locabusd running" <<<"$out" || { echo "install_test: unclear KCCM error: $out" >&2; exit 1; }

# CMake package
mkdir -p "$work/app"
cp "$here/examples/hello.cpp" "$here/examples/locasock_echo.cpp" "$work/app/"
cat >"$work/app/kccm.cpp" <<'CPP'
#include <locabus/kccm.hpp>
#include <iostream>
int main() {
  try {
    auto space = locabus::kccm::Space::open(42);
    auto reply = space.call(space.node_id(), "echo", "hi").get();
    std::cout << (reply ? reply.text() : reply.error()) << "\n";
    return reply ? 0 : 1;
  } catch (const locabus::ClientError& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
CPP
cat >"$work/app/monitor.cpp" <<'CPP'
#include <locabus/client.hpp>
#include <iostream>
int main() {
  try {
    const auto least = locabus::least_loaded();
    for (const locabus::NodeLoad& n : locabus::monitor_nodes())
      std::cout << n.node << (least && *least == n.node ? " least loaded\n" : "\n");
    std::cout << locabus::monitor_json() << "\n";
    return 0;
  } catch (const locabus::ClientError& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
CPP
cat >"$work/app/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(app CXX)
set(CMAKE_CXX_STANDARD 20)
find_package(locabus 0.1 REQUIRED)
add_executable(hello hello.cpp)
target_link_libraries(hello PRIVATE locabus::locabus)
add_executable(locasock_echo locasock_echo.cpp)
target_link_libraries(locasock_echo PRIVATE locabus::locabus)
add_executable(kccm kccm.cpp)
target_link_libraries(kccm PRIVATE locabus::locabus)
add_executable(monitor monitor.cpp)
target_link_libraries(monitor PRIVATE locabus::locabus)
CMAKE
cmake -S "$work/app" -B "$work/app/build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >"$work/cmake.log" ||
  { cat "$work/cmake.log"; exit 1; }
cmake --build "$work/app/build" >"$work/build.log" || { cat "$work/build.log"; exit 1; }
if out=$(LOCABUS_SOCKET=$work/none.sock "$work/app/build/hello" 2 2>&1); then
  echo "install_test: hello succeeded without a daemon" >&2
  exit 1
fi
grep -q "is locabusd running" <<<"$out" || { echo "install_test: unclear error: $out" >&2; exit 1; }
if out=$(LOCABUS_SOCKET=$work/none.sock "$work/app/build/locasock_echo" serve 2>&1); then
  echo "install_test: locasock_echo succeeded without a daemon" >&2
  exit 1
fi
grep -q "is locabusd running" <<<"$out" || { echo "install_test: unclear error: $out" >&2; exit 1; }
# The new symbols carry their own version (client/liblocabus.map).
dynsyms=$(objdump -T "$libdir/liblocabus.so")  # not piped into grep -q: pipefail and SIGPIPE
grep -q "LOCABUS_0.2 *locabus_socket_open" <<<"$dynsyms" ||
  { echo "install_test: locabus_socket_open is not exported as LOCABUS_0.2" >&2; exit 1; }
for sym in locabus_recv_view locabus_recvfrom_view \
  '_ZN7locabus8Endpoint12receive_viewENSt6chrono8durationIlSt5ratioILl1ELl1000EEEE' \
  '_ZN7locabus6Socket12release_viewEv'; do
  grep -q "LOCABUS_0.3 *$sym" <<<"$dynsyms" ||
    { echo "install_test: $sym is not exported as LOCABUS_0.3" >&2; exit 1; }
done
if out=$(LOCABUS_SOCKET=$work/none.sock "$work/app/build/kccm" 2>&1); then
  echo "install_test: kccm succeeded without a daemon" >&2
  exit 1
fi
grep -q "is locabusd running" <<<"$out" || { echo "install_test: unclear KCCM error: $out" >&2; exit 1; }
if out=$(LOCABUS_SOCKET=$work/none.sock "$work/app/build/monitor" 2>&1); then
  echo "install_test: monitor succeeded without a daemon" >&2
  exit 1
fi
grep -q "is locabusd running" <<<"$out" || { echo "install_test: unclear LocaMonitor error: $out" >&2; exit 1; }
for sym in locabus_kccm_open locabus_kccm_call locabus_kccm_call_all locabus_kccm_register locabus_kccm_recv \
  locabus_kccm_status_name '_ZN7locabus4kccm5Space4openEtRKNS0_12SpaceOptionsE' \
  '_ZN7locabus4kccm12Registration5resetEv'; do
  grep -q "LOCABUS_0.4 *$sym" <<<"$dynsyms" ||
    { echo "install_test: $sym is not exported as LOCABUS_0.4" >&2; exit 1; }
done
for sym in locabus_monitor_nodes locabus_monitor_least_loaded \
  '_ZN7locabus13monitor_nodesERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE' \
  '_ZN7locabus12least_loadedERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE' \
  '_ZN7locabus12monitor_jsonERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE'; do
  grep -q "LOCABUS_0.5 *$sym" <<<"$dynsyms" ||
    { echo "install_test: $sym is not exported as LOCABUS_0.5" >&2; exit 1; }
done
# The KCCM internals stay private (the version script exports locabus::kccm::*).
if grep -q "kccm_internal\|Space4Impl" <<<"$dynsyms"; then
  echo "install_test: liblocabus exports KCCM internals" >&2
  exit 1
fi
help=$(LD_LIBRARY_PATH=$libdir "$prefix/bin/locabus-cat" --help)
grep -q -- "--generate" <<<"$help" || { echo "install_test: locabus-cat --help" >&2; exit 1; }
help=$(LD_LIBRARY_PATH=$libdir "$prefix/bin/locabus-call" --help)
grep -q -- "--inflight" <<<"$help" || { echo "install_test: locabus-call --help" >&2; exit 1; }
echo "install_test: installed package works with pkg-config and find_package"
