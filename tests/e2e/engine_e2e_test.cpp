// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The engine on a real link: two engines in two network namespaces over a
// veth pair, on the AF_PACKET transport, each on its own thread with the
// blocking idle strategy. Messages arrive exactly once and in order, also
// with the chaos program dropping and corrupting frames.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "engine/engine.hpp"
#include "engine/idle.hpp"
#include "fastpath/chaos.hpp"
#include "fastpath/fastpath.hpp"
#include "fastpath/netdev.hpp"
#include "netns.hpp"
#include "privileges.hpp"
#include "transport/packet_transport.hpp"

namespace locabus {
namespace {

using namespace std::chrono_literals;

constexpr std::uint16_t kA = 1;
constexpr std::uint16_t kB = 2;

struct Shared {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> order_errors{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint64_t> idle_sleeps{0};
  std::string error;
};

// One node: engine + AF_PACKET transport + blocking idle, in `netns`.
// The sender queues `count` 1 KB messages to the other node as the window
// allows; the receiver checks their order.
void run_node(int netns, std::string iface, std::uint16_t id, bool sender, std::uint64_t count, Shared& sh) {
  try {
    net::NetnsScope in(netns);
    transport::PacketTransport tr(iface);
    engine::SystemClock clock;
    engine::EngineConfig cfg;
    cfg.node_id = id;
    cfg.discover_interval = 100ms;  // quick discovery on a fresh link
    engine::Engine e(cfg, tr, clock, id * 7919ULL);
    engine::BlockingIdle idle(clock, {tr.wait_fd()});
    engine::AgentRunner runner(e, idle);
    const std::uint16_t peer = id == kA ? kB : kA;
    std::uint64_t next = 0;
    std::vector<std::byte> msg(1024);
    while (!sh.stop.load()) {
      runner.run_once();
      if (sender) {
        while (next < count) {
          std::memcpy(msg.data(), &next, sizeof next);
          if (!e.send(peer, LOCABUS_P_KCCM, msg)) break;  // would_block, or not discovered yet
          ++next;
          sh.sent = next;
        }
      } else {
        e.receive(1024, [&](const engine::Message& m) {
          std::uint64_t index;
          std::memcpy(&index, m.payload.data(), sizeof index);
          if (index != sh.received.load()) ++sh.order_errors;
          sh.received = index + 1;
        });
      }
      e.poll_events([&](const engine::Event& ev) {
        if (ev.kind == engine::EventKind::send_failed) sh.failed += ev.count;
      });
    }
    if (!sender) sh.idle_sleeps = idle.sleeps();
  } catch (const std::exception& ex) {
    sh.error = ex.what();
    sh.stop = true;
  }
}

class EngineE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    LOCABUS_REQUIRE_ROOT();
    fastpath::install_library_logging();
    net_ = std::make_unique<test::VethPair>();
  }
  void TearDown() override {
    if (net_) {
      for (auto [fd, iface] :
           {std::pair{net_->netns_a(), net_->if_a()}, std::pair{net_->netns_b(), net_->if_b()}}) {
        net::NetnsScope in(fd);
        chaos::detach(iface);
      }
    }
    net_.reset();
  }

  void transfer(std::uint64_t count, std::chrono::seconds limit) {
    Shared sh;
    std::thread b(run_node, net_->netns_b(), net_->if_b(), kB, false, count, std::ref(sh));
    std::thread a(run_node, net_->netns_a(), net_->if_a(), kA, true, count, std::ref(sh));
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (sh.received.load() < count && !sh.stop.load() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    sh.stop = true;
    a.join();
    b.join();
    ASSERT_TRUE(sh.error.empty()) << sh.error;
    EXPECT_EQ(sh.received.load(), count) << "sent " << sh.sent.load();
    EXPECT_EQ(sh.order_errors.load(), 0u);
    EXPECT_EQ(sh.failed.load(), 0u);
    EXPECT_GT(sh.idle_sleeps.load(), 0u) << "the receiver never slept: busy polling";
  }

  std::unique_ptr<test::VethPair> net_;
};

TEST_F(EngineE2E, ExactlyOnceInOrderOverAfPacket) { transfer(20000, 120s); }

TEST_F(EngineE2E, ExactlyOnceInOrderThroughChaos) {
  chaos::Settings s;
  s.drop_percent = 10;
  s.corrupt_percent = 1;
  s.seed = 11;
  for (auto [fd, iface] :
       {std::pair{net_->netns_a(), net_->if_a()}, std::pair{net_->netns_b(), net_->if_b()}}) {
    net::NetnsScope in(fd);
    chaos::attach(iface, s);  // both directions: data and ACKs
  }
  transfer(5000, 240s);
  net::NetnsScope in(net_->netns_b());
  const auto st = chaos::stats(net_->if_b());
  EXPECT_GT(st.dropped, 0u);
  EXPECT_GT(st.corrupted, 0u);
}

}  // namespace
}  // namespace locabus
