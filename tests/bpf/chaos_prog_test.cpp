// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The chaos program in the kernel (BPF_PROG_TEST_RUN): what it drops and
// corrupts, at what rates, and that a seed gives the same decisions again.
#include <gtest/gtest.h>
#include <sched.h>

#include <bpf/bpf.h>
#include <locabus/xdp_maps.h>

#include "locabus_chaos.skel.h"

#include "common/error.hpp"
#include "fastpath/bpf_map.hpp"
#include "fastpath/chaos.hpp"
#include "fastpath/fastpath.hpp"
#include "fastpath/skeleton.hpp"
#include "frame_builder.hpp"
#include "privileges.hpp"
#include "prog_test_run.hpp"

namespace locabus {
namespace {

using test::FrameBuilder;
using wire::PacketType;
using ChaosSkeleton =
    bpf::Skeleton<locabus_chaos, &locabus_chaos__open_opts, &locabus_chaos__load, &locabus_chaos__destroy>;

class ChaosProgram : public ::testing::Test {
 protected:
  void SetUp() override {
    LOCABUS_REQUIRE_ROOT();
    fastpath::install_library_logging();
    // One CPU: the random sequence is per CPU, and the test checks it repeats.
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    ASSERT_EQ(sched_setaffinity(0, sizeof set, &set), 0);
    skel_.emplace("locabus_chaos");
    skel_->load();
    prog_fd_ = bpf_program__fd((*skel_)->progs.locabus_chaos);
  }

  void configure(const chaos::Settings& s) {
    const locabus_chaos_config c = s.to_config();
    const std::uint32_t key = 0;
    ASSERT_EQ(bpf_map_update_elem(bpf_map__fd((*skel_)->maps.locabus_chaos_cfg), &key, &c, BPF_ANY), 0);
  }

  chaos::Stats stats() {
    bpf::PerCpuMap<std::uint32_t, locabus_chaos_stats> map(
        UniqueFd(::dup(bpf_map__fd((*skel_)->maps.locabus_chaos_stats))), "stats");
    return chaos::sum(map.lookup(0));
  }

  test::ProgRun run(const std::vector<std::byte>& frame) { return test::prog_test_run(prog_fd_, frame); }

  static std::vector<std::byte> data_frame() {
    return FrameBuilder().type(PacketType::data).from(1).to(2).seq(7).payload_size(1000).build();
  }

  std::optional<ChaosSkeleton> skel_;
  int prog_fd_ = -1;
};

TEST_F(ChaosProgram, DisabledPassesEverythingUntouched) {
  chaos::Settings s;
  s.enabled = false;
  s.drop_percent = 100;
  configure(s);
  const auto f = data_frame();
  for (int i = 0; i < 50; ++i) {
    const auto r = run(f);
    EXPECT_EQ(r.verdict, XDP_PASS);
    EXPECT_EQ(r.out, f);
  }
  EXPECT_EQ(stats().seen, 50u);
  EXPECT_EQ(stats().passed, 50u);
}

TEST_F(ChaosProgram, OtherEtherTypesAreNeverTouched) {
  chaos::Settings s;
  s.drop_percent = 100;
  configure(s);
  const auto ip = test::other_frame(0x0800, 200);
  const auto r = run(ip);
  EXPECT_EQ(r.verdict, XDP_PASS);
  EXPECT_EQ(r.out, ip);
  EXPECT_EQ(stats().seen, 0u);
}

TEST_F(ChaosProgram, DropsAll) {
  chaos::Settings s;
  s.drop_percent = 100;
  configure(s);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(run(data_frame()).verdict, XDP_DROP);
  EXPECT_EQ(stats().dropped, 20u);
  EXPECT_EQ(stats().passed, 0u);
}

TEST_F(ChaosProgram, CorruptionFlipsOneBitThatTheChecksumCatches) {
  chaos::Settings s;
  s.corrupt_percent = 100;
  configure(s);
  const auto f = data_frame();
  ASSERT_TRUE(wire::decode_frame(f));
  for (int i = 0; i < 200; ++i) {
    const auto r = run(f);
    ASSERT_EQ(r.verdict, XDP_PASS);
    ASSERT_EQ(r.out.size(), f.size());
    int bits = 0;
    std::size_t where = 0;
    for (std::size_t b = 0; b < f.size(); ++b) {
      const auto diff = static_cast<unsigned>(r.out[b] ^ f[b]);
      if (diff) where = b;
      bits += __builtin_popcount(diff);
    }
    EXPECT_EQ(bits, 1) << "exactly one bit flips";
    EXPECT_GE(where, wire::kEthHeaderLen) << "never in the Ethernet header";
    EXPECT_FALSE(wire::decode_frame(r.out)) << "a flipped bit must make the frame invalid";
  }
  EXPECT_EQ(stats().corrupted, 200u);
}

TEST_F(ChaosProgram, RatesMatchTheSettings) {
  chaos::Settings s;
  s.drop_percent = 10;
  s.corrupt_percent = 2;
  s.seed = 99;
  configure(s);
  const auto f = data_frame();
  int dropped = 0, corrupted = 0;
  constexpr int kRuns = 20000;
  for (int i = 0; i < kRuns; ++i) {
    const auto r = run(f);
    if (r.verdict == XDP_DROP) {
      ++dropped;
    } else if (r.out != f) {
      ++corrupted;
    }
  }
  // 10 % +- 1 % and 2 % of the rest +- 0.5 %: many standard deviations wide.
  EXPECT_NEAR(dropped, kRuns * 0.10, kRuns * 0.01);
  EXPECT_NEAR(corrupted, (kRuns - dropped) * 0.02, kRuns * 0.005);
  const auto st = stats();
  EXPECT_EQ(st.seen, static_cast<std::uint64_t>(kRuns));
  EXPECT_EQ(st.dropped, static_cast<std::uint64_t>(dropped));
  EXPECT_EQ(st.corrupted, static_cast<std::uint64_t>(corrupted));
}

TEST_F(ChaosProgram, TheSeedRepeatsTheSameDecisions) {
  chaos::Settings s;
  s.drop_percent = 30;
  const auto f = data_frame();
  auto pattern = [&](std::uint64_t seed) {
    s.seed = seed;
    configure(s);
    std::string p;
    for (int i = 0; i < 300; ++i) p += run(f).verdict == XDP_DROP ? 'x' : '.';
    return p;
  };
  const std::string a = pattern(42);
  const std::string b = pattern(43);
  const std::string again = pattern(42);  // a changed seed restarts the sequence
  EXPECT_EQ(a, again);
  EXPECT_NE(a, b);
}

TEST_F(ChaosProgram, TypeMaskLimitsWhatIsAffected) {
  chaos::Settings s;
  s.drop_percent = 100;
  s.type_mask = 1u << LOCABUS_T_DATA;
  configure(s);
  EXPECT_EQ(run(data_frame()).verdict, XDP_DROP);
  const auto ack = FrameBuilder().type(PacketType::ack).from(1).to(2).build();
  EXPECT_EQ(run(ack).verdict, XDP_PASS);
}

TEST(ChaosSettings, PercentagesOutsideTheRangeAreRefused) {
  chaos::Settings s;
  s.drop_percent = 101;
  EXPECT_THROW(s.to_config(), Error);
  s.drop_percent = 12.5;
  s.corrupt_percent = -1;
  EXPECT_THROW(s.to_config(), Error);
  s.corrupt_percent = 0.0001;
  const auto c = s.to_config();
  EXPECT_EQ(c.drop_ppm, 125000u);
  EXPECT_EQ(c.corrupt_ppm, 1u);
  EXPECT_DOUBLE_EQ(chaos::Settings::from_config(c).drop_percent, 12.5);
}

}  // namespace
}  // namespace locabus
