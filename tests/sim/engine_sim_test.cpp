// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The engine in the deterministic simulation: reliable unicast.
#include <gtest/gtest.h>

#include "sim_test_util.hpp"

namespace locabus::sim {
namespace {

using namespace std::chrono_literals;
using engine::EventKind;
using engine::Nanos;
using testing::for_each_seed;

TEST(SimBasics, TwoNodesDiscoverAndExchange) {
  for_each_seed(3, [](std::uint64_t seed) {
    SimCluster c(seed, 2);
    ASSERT_TRUE(c.run_until([&] { return c.converged(); }, 5s));
    for (std::uint64_t i = 0; i < 100; ++i) {
      auto p = testing::payload(1, i);
      ASSERT_TRUE(c.node(0).send(2, LOCABUS_P_KCCM, p)) << i;
    }
    std::uint64_t got = 0;
    c.on_step([&](std::size_t idx) {
      if (idx != 1 || !c.up(1)) return;
      c.node(1).receive(1000, [&](const engine::Message& m) {
        auto parsed = testing::parse(m.payload);
        EXPECT_EQ(parsed.index, got);
        EXPECT_TRUE(parsed.intact);
        ++got;
      });
    });
    ASSERT_TRUE(c.run_until([&] { return got == 100; }, 10s)) << got;
  });
}

}  // namespace
}  // namespace locabus::sim
