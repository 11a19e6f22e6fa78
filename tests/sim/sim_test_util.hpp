// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Helpers shared by the simulation tests: seeds that print how to replay
// them, and message payloads that identify (sender, index).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "sim/sim_cluster.hpp"

namespace locabus::sim::testing {

/// Runs `body(seed)` for every seed; on a failure, prints the seed, how to
/// replay it, and the end of that run's trace.
template <typename Body>
void for_each_seed(std::size_t count, Body&& body) {
  for (std::uint64_t seed : test_seeds(count)) {
    SCOPED_TRACE(::testing::Message()
                 << "seed " << seed << " (replay: LOCABUS_SIM_SEED=" << seed << " "
                 << ::testing::UnitTest::GetInstance()->current_test_info()->name() << ")");
    body(seed);
    if (::testing::Test::HasFailure()) {
      std::fprintf(stderr,
                   "\n*** simulation failed with seed %llu; replay it with\n"
                   "***   LOCABUS_SIM_SEED=%llu %s --gtest_filter='*%s*'\n",
                   static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed),
                   ::testing::internal::GetArgvs().front().c_str(),
                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
      return;
    }
  }
}

/// A payload naming its sender and index, padded to `size` bytes.
inline std::vector<std::byte> payload(std::uint16_t from, std::uint64_t index, std::size_t size = 64) {
  std::vector<std::byte> p(std::max<std::size_t>(size, 10));
  std::memcpy(p.data(), &from, 2);
  std::memcpy(p.data() + 2, &index, 8);
  for (std::size_t i = 10; i < p.size(); ++i) p[i] = static_cast<std::byte>((index + i) & 0xff);
  return p;
}

struct Parsed {
  std::uint16_t from;
  std::uint64_t index;
  bool intact;
};

inline Parsed parse(std::span<const std::byte> p) {
  Parsed r{0, 0, p.size() >= 10};
  if (!r.intact) return r;
  std::memcpy(&r.from, p.data(), 2);
  std::memcpy(&r.index, p.data() + 2, 8);
  for (std::size_t i = 10; i < p.size(); ++i) {
    if (p[i] != static_cast<std::byte>((r.index + i) & 0xff)) r.intact = false;
  }
  return r;
}

}  // namespace locabus::sim::testing
