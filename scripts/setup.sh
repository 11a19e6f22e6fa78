#!/usr/bin/env bash
# Installs every build and test dependency of Locabus from Debian 12's apt.
# Idempotent: packages already present are left alone. Needs root.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang llvm
  # BPF: libbpf, libxdp (AF_XDP + dispatcher), bpftool for skeletons and map dumps
  libbpf-dev libxdp-dev bpftool libelf-dev zlib1g-dev
  # C++ libraries
  libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libtomlplusplus-dev
  # readiness notification for systemd (sd_notify)
  libsystemd-dev
  # locabusd's Prometheus exporter (cpp-httplib; plain HTTP, CPPHTTPLIB_OPENSSL_SUPPORT not defined)
  libcpp-httplib-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # namespaces, veth, ping and jq for the demo and the end-to-end tests
  iproute2 iputils-ping util-linux jq
  # the Prometheus end-to-end test: a real server and promtool (check metrics, check config)
  prometheus
  # linting the shell scripts (locabus-cluster)
  shellcheck
  # formatting
  clang-format
  # benchmark peers (locabus-bench)
  openmpi-bin libopenmpi-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  gnuplot-nox python3
)

if [[ $(id -u) -ne 0 ]]; then
  echo "setup.sh: installing packages needs root; run it as root" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup.sh: all ${#packages[@]} packages present"
fi
