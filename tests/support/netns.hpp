// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Test networks: two network namespaces joined by a veth pair, with unique
// names per run and teardown on destruction (also when a test fails).
#pragma once

#include <string>

#include "common/unique_fd.hpp"

namespace locabus::test {

/// Runs a command through /bin/sh; returns its exit status (-1 if it could not run).
int run(const std::string& cmd, std::string* output = nullptr);

class VethPair {
 public:
  /// Creates namespaces <prefix>a / <prefix>b and a veth pair a0 <-> b0 between
  /// them, with 198.18.<n>.1/24 and .2/24 (n from the run id), links up.
  /// Throws std::runtime_error with the failing command on failure.
  VethPair();
  ~VethPair();
  VethPair(const VethPair&) = delete;
  VethPair& operator=(const VethPair&) = delete;

  const std::string& ns_a() const { return ns_a_; }
  const std::string& ns_b() const { return ns_b_; }
  const std::string& if_a() const { return if_a_; }
  const std::string& if_b() const { return if_b_; }
  const std::string& ip_a() const { return ip_a_; }
  const std::string& ip_b() const { return ip_b_; }
  /// fds of the namespaces (for net::NetnsScope).
  int netns_a() const { return fd_a_.get(); }
  int netns_b() const { return fd_b_.get(); }

 private:
  void teardown() noexcept;
  std::string ns_a_, ns_b_, if_a_, if_b_, ip_a_, ip_b_;
  UniqueFd fd_a_, fd_b_;
};

}  // namespace locabus::test
