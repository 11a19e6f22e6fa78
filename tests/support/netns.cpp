// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "netns.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <random>
#include <stdexcept>

namespace locabus::test {

int run(const std::string& cmd, std::string* output) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  std::array<char, 512> buf;
  std::string out;
  while (std::fgets(buf.data(), buf.size(), p)) out += buf.data();
  const int status = ::pclose(p);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

VethPair::VethPair() {
  // Unique per run: pid plus randomness (two runs may share a pid namespace
  // number in different containers; names are global in the kernel).
  std::random_device rd;
  const unsigned id = (static_cast<unsigned>(::getpid()) * 2654435761u ^ rd()) & 0xffffff;
  char tag[8];
  std::snprintf(tag, sizeof tag, "%06x", id);
  ns_a_ = std::string("lbt") + tag + "a";
  ns_b_ = std::string("lbt") + tag + "b";
  if_a_ = std::string("lb") + tag + "a0";  // <= 15 chars
  if_b_ = std::string("lb") + tag + "b0";
  const unsigned subnet = id % 250 + 1;
  ip_a_ = "198.18." + std::to_string(subnet) + ".1";
  ip_b_ = "198.18." + std::to_string(subnet) + ".2";

  const std::string cmds[] = {
      "ip netns add " + ns_a_,
      "ip netns add " + ns_b_,
      "ip link add " + if_a_ + " netns " + ns_a_ + " type veth peer name " + if_b_ + " netns " + ns_b_,
      "ip -n " + ns_a_ + " addr add " + ip_a_ + "/24 dev " + if_a_,
      "ip -n " + ns_b_ + " addr add " + ip_b_ + "/24 dev " + if_b_,
      "ip -n " + ns_a_ + " link set lo up",
      "ip -n " + ns_b_ + " link set lo up",
      "ip -n " + ns_a_ + " link set " + if_a_ + " up",
      "ip -n " + ns_b_ + " link set " + if_b_ + " up",
  };
  for (const auto& c : cmds) {
    std::string out;
    if (run(c, &out) != 0) {
      teardown();  // remove what exists so far
      throw std::runtime_error("test network setup failed: `" + c + "`: " + out);
    }
  }
  fd_a_.reset(::open(("/run/netns/" + ns_a_).c_str(), O_RDONLY | O_CLOEXEC));
  fd_b_.reset(::open(("/run/netns/" + ns_b_).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd_a_ || !fd_b_) {
    teardown();
    throw std::runtime_error("open /run/netns/" + ns_a_ + " or " + ns_b_);
  }
}

VethPair::~VethPair() { teardown(); }

void VethPair::teardown() noexcept {
  fd_a_.reset();
  fd_b_.reset();
  // Deleting a namespace destroys the veth ends inside it.
  run("ip netns del " + ns_a_);
  run("ip netns del " + ns_b_);
}

}  // namespace locabus::test
