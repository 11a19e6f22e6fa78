// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The fast path's ACK rule (locabus/ack_rule.h) on the shared vectors: the
// function itself, and the simulator's model of the fast path, which runs
// the same function (tests/bpf/xdp_prog_test.cpp runs them in the kernel).
#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "ack_rule_vectors.hpp"
#include "frame_builder.hpp"
#include "sim/sim_network.hpp"

namespace locabus {
namespace {

using namespace std::chrono_literals;

TEST(AckRule, Vectors) {
  for (const test::AckRuleVector& v : test::kAckRuleVectors) {
    EXPECT_EQ(locabus_ack_decide(&v.pub, v.rec_valid, v.rec_ack, v.ack), v.verdict) << v.what;
  }
}

// Port 0 (node 1) sends pure ACKs to port 1 (node 2), whose transport plays
// the fast path: consumed ACKs come out of poll_acks(), passed ones as frames.
class SimFastPath : public ::testing::Test {
 protected:
  static constexpr std::uint16_t kSender = 1;
  static constexpr std::uint16_t kUs = 2;
  const wire::MacAddress mac_a{{0x02, 0, 0, 0, 0, 1}};
  const wire::MacAddress mac_b{{0x02, 0, 0, 0, 0, 2}};
  sim::SimNetwork net{7};
  sim::SimNetwork::Port a = net.add_port(mac_a);
  sim::SimNetwork::Port b = net.add_port(mac_b);

  struct Outcome {
    std::vector<std::uint16_t> consumed;  // poll_acks()
    std::size_t frames = 0;               // receive()
  };

  Outcome deliver_ack(std::uint16_t ack, std::uint16_t window) {
    const auto frame = test::FrameBuilder()
                           .type(wire::PacketType::ack)
                           .from(kSender)
                           .to(kUs)
                           .ack(ack)
                           .window(window)
                           .src(mac_a)
                           .dst(mac_b)
                           .build();
    const engine::FrameBytes f(frame.data(), frame.size());
    EXPECT_EQ(net.transport(a).send(std::span(&f, 1)), 1u);
    net.deliver_until(net.now() + 1ms);
    Outcome o;
    net.transport(b).poll_acks([&](std::uint16_t node, std::uint16_t got, std::uint16_t) {
      EXPECT_EQ(node, kSender);
      o.consumed.push_back(got);
    });
    o.frames = net.transport(b).receive(64, [](engine::FrameBytes) {});
    return o;
  }
};

TEST_F(SimFastPath, Vectors) {
  for (const test::AckRuleVector& v : test::kAckRuleVectors) {
    SCOPED_TRACE(v.what);
    auto& t = net.transport(b);
    t.track_peer(kSender);
    if (v.rec_valid) {
      t.publish_conn(kSender, locabus_conn_pub{static_cast<std::uint16_t>(v.rec_ack - 1), v.rec_ack,
                                               LOCABUS_CONN_F_PUBLISHED, 1});
      ASSERT_EQ(deliver_ack(v.rec_ack, 7).consumed.size(), 1u);
    }
    t.publish_conn(kSender, v.pub);
    const std::uint64_t before = t.ack_verdicts(v.verdict);
    const Outcome o = deliver_ack(v.ack, 33);
    EXPECT_EQ(t.ack_verdicts(v.verdict), before + 1);
    if (v.verdict == LOCABUS_ACK_CONSUME) {
      ASSERT_EQ(o.consumed.size(), 1u);
      EXPECT_EQ(o.consumed[0], v.ack);
      EXPECT_EQ(o.frames, 0u);
    } else {
      EXPECT_TRUE(o.consumed.empty());
      EXPECT_EQ(o.frames, 1u) << "a passed ACK reaches the engine as a frame";
    }
  }
}

TEST_F(SimFastPath, UntrackedOrForgottenPeersAcksAreFrames) {
  EXPECT_EQ(deliver_ack(5, 1).frames, 1u);
  auto& t = net.transport(b);
  t.track_peer(kSender);
  t.publish_conn(kSender, locabus_conn_pub{0, 10, LOCABUS_CONN_F_PUBLISHED, 1});
  EXPECT_EQ(deliver_ack(5, 1).consumed.size(), 1u);
  t.forget_peer(kSender);
  EXPECT_EQ(t.published(kSender).flags, 0) << "forgetting unpublishes";
  EXPECT_EQ(deliver_ack(6, 1).frames, 1u);
}

}  // namespace
}  // namespace locabus
