// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The engine on AF_XDP: two engines in two network namespaces over a veth
// pair, each behind its own XDP fast path (which also gives each veth end
// the XDP program a redirect into it needs), each on its own thread with the
// blocking idle strategy. Besides exactly-once in-order delivery, the
// counters prove the point of the fast path: the sender's pure ACKs are
// consumed in the kernel, it learns of them from the ACK ring, and it sleeps
// in between instead of polling. Also: the transport's ring and retry
// mechanics on their own, and open_datapath()'s choices.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>

#include "engine/engine.hpp"
#include "engine/idle.hpp"
#include "fastpath/fastpath.hpp"
#include "fastpath/netdev.hpp"
#include "fastpath/packet_socket.hpp"
#include "frame_builder.hpp"
#include "netns.hpp"
#include "privileges.hpp"
#include "transport/datapath.hpp"
#include "transport/packet_transport.hpp"
#include "transport/xdp_transport.hpp"

namespace locabus {
namespace {

using namespace std::chrono_literals;
using test::FrameBuilder;
using wire::PacketType;

constexpr std::uint16_t kA = 1;
constexpr std::uint16_t kB = 2;

enum class Link { xdp, packet };

// What one node saw, recorded on its thread before it tears down.
struct NodeResult {
  std::uint64_t idle_sleeps = 0;
  engine::PeerCounters peer;  // its counters for the other node
  engine::EngineStats engine;
  transport::XdpStats xdp;
  std::optional<fastpath::CounterValues> kernel;  // the XDP program's counters
  std::string describe;
};

struct Shared {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> order_errors{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::int64_t> first_send_ns{0};
  std::atomic<std::int64_t> done_ns{0};
  std::string error;
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// One node: engine + transport + blocking idle, in `netns`. The sender
// queues `count` 1 KB messages to the other node as the window allows; the
// receiver checks their order.
void run_node(int netns, std::string iface, std::uint16_t id, bool sender, std::uint64_t count, Link link,
              engine::EngineConfig cfg, Shared& sh, NodeResult& out) {
  try {
    net::NetnsScope in(netns);
    std::unique_ptr<fastpath::FastPath> fp;
    std::unique_ptr<engine::Transport> tr;
    transport::XdpTransport* xdp = nullptr;
    if (link == Link::xdp) {
      fastpath::Options o;
      o.iface = iface;
      o.node_id = id;
      o.mode = fastpath::AttachMode::native;  // veth has it: anything else is a failure
      fp = fastpath::FastPath::attach(o);
      auto t = std::make_unique<transport::XdpTransport>(*fp);
      xdp = t.get();
      out.describe = t->describe();
      tr = std::move(t);
    } else {
      tr = std::make_unique<transport::PacketTransport>(iface);
      out.describe = "AF_PACKET";
    }
    engine::SystemClock clock;
    cfg.node_id = id;
    cfg.discover_interval = 100ms;  // quick discovery on a fresh link
    engine::Engine e(cfg, *tr, clock, id * 7919ULL);
    engine::BlockingIdle idle(clock, {tr->wait_fd()});
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
          if (next == 0) sh.first_send_ns = now_ns();
          ++next;
          sh.sent = next;
        }
      } else {
        e.receive(1024, [&](const engine::Message& m) {
          std::uint64_t index;
          std::memcpy(&index, m.payload.data(), sizeof index);
          if (index != sh.received.load()) ++sh.order_errors;
          sh.received = index + 1;
          if (index + 1 == count) sh.done_ns = now_ns();
        });
      }
      e.poll_events([&](const engine::Event& ev) {
        if (ev.kind == engine::EventKind::send_failed) sh.failed += ev.count;
      });
    }
    out.idle_sleeps = idle.sleeps();
    out.engine = e.stats();
    if (auto p = e.peer(peer)) out.peer = p->counters;
    if (xdp) out.xdp = xdp->stats();
    if (fp) out.kernel = fp->maps().counters();
  } catch (const std::exception& ex) {
    sh.error = ex.what();
    sh.stop = true;
  }
}

class XdpTransportE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    LOCABUS_REQUIRE_ROOT();
    fastpath::install_library_logging();
    net_ = std::make_unique<test::VethPair>();
  }
  void TearDown() override { net_.reset(); }

  struct Outcome {
    NodeResult a, b;  // a sends, b receives
    double seconds = 0;
  };

  Outcome transfer(std::uint64_t count, std::chrono::seconds limit, Link link,
                   const engine::EngineConfig& cfg = {}) {
    Shared sh;
    Outcome o;
    std::thread b(run_node, net_->netns_b(), net_->if_b(), kB, false, count, link, cfg, std::ref(sh),
                  std::ref(o.b));
    std::thread a(run_node, net_->netns_a(), net_->if_a(), kA, true, count, link, cfg, std::ref(sh),
                  std::ref(o.a));
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (sh.received.load() < count && !sh.stop.load() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    sh.stop = true;
    a.join();
    b.join();
    EXPECT_TRUE(sh.error.empty()) << sh.error;
    EXPECT_EQ(sh.received.load(), count) << "sent " << sh.sent.load();
    EXPECT_EQ(sh.order_errors.load(), 0u);
    EXPECT_EQ(sh.failed.load(), 0u);
    if (sh.done_ns.load() > sh.first_send_ns.load() && sh.first_send_ns.load() > 0)
      o.seconds = static_cast<double>(sh.done_ns.load() - sh.first_send_ns.load()) / 1e9;
    return o;
  }

  static void report(const char* what, std::uint64_t count, const Outcome& o) {
    std::printf("%s: %llu x 1 KB in %.3f s = %.0f messages/s (%s)\n", what,
                static_cast<unsigned long long>(count), o.seconds,
                o.seconds > 0 ? static_cast<double>(count) / o.seconds : 0.0, o.a.describe.c_str());
    std::printf("  sender:   sleeps %llu, retransmits %llu, timeouts %llu, NAKs received %llu\n",
                static_cast<unsigned long long>(o.a.idle_sleeps),
                static_cast<unsigned long long>(o.a.peer.retransmits),
                static_cast<unsigned long long>(o.a.peer.timeouts),
                static_cast<unsigned long long>(o.a.peer.naks_received));
    std::printf("  receiver: sleeps %llu, pure ACKs sent %llu, NAKs sent %llu\n",
                static_cast<unsigned long long>(o.b.idle_sleeps),
                static_cast<unsigned long long>(o.b.peer.acks_sent),
                static_cast<unsigned long long>(o.b.peer.naks_sent));
    if (o.a.kernel) {
      const auto& k = *o.a.kernel;
      const auto& x = o.a.xdp;
      std::printf(
          "  sender XDP: ack_consumed %llu, ack_pass_behind %llu, ack_ring_out %llu, ack_ring_full %llu, "
          "ack_untracked %llu\n",
          static_cast<unsigned long long>(k[LOCABUS_CTR_ack_consumed]),
          static_cast<unsigned long long>(k[LOCABUS_CTR_ack_pass_behind]),
          static_cast<unsigned long long>(k[LOCABUS_CTR_ack_ring_out]),
          static_cast<unsigned long long>(k[LOCABUS_CTR_ack_ring_full]),
          static_cast<unsigned long long>(k[LOCABUS_CTR_ack_untracked]));
      std::printf(
          "  sender transport: rx_frames %llu, rx_pure_acks %llu, acks_from_ring %llu, acks_applied %llu, "
          "ring_drains %llu, ring_wakeups %llu, tx_frames %llu, tx_kicks %llu, tx_kick_busy %llu, tx_busy "
          "%llu, "
          "tx_retries %llu\n",
          static_cast<unsigned long long>(x.rx_frames), static_cast<unsigned long long>(x.rx_pure_acks),
          static_cast<unsigned long long>(x.acks_from_ring), static_cast<unsigned long long>(x.acks_applied),
          static_cast<unsigned long long>(x.ring_drains), static_cast<unsigned long long>(x.ring_wakeups),
          static_cast<unsigned long long>(x.tx_frames), static_cast<unsigned long long>(x.tx_kicks),
          static_cast<unsigned long long>(x.tx_kick_busy), static_cast<unsigned long long>(x.tx_busy),
          static_cast<unsigned long long>(x.tx_retries));
    }
  }

  std::unique_ptr<test::VethPair> net_;
};

TEST_F(XdpTransportE2E, HundredThousandMessagesExactlyOnceInOrderWithAcksConsumedInTheKernel) {
  constexpr std::uint64_t kCount = 100'000;
  const Outcome o = transfer(kCount, 240s, Link::xdp);
  report("AF_XDP", kCount, o);
  ASSERT_TRUE(o.a.kernel && o.b.kernel);
  const auto& k = *o.a.kernel;
  const auto& x = o.a.xdp;

  // The receiver acknowledged at least every 64 packets: over 1500 pure
  // ACKs, and the sender's XDP program consumed them.
  EXPECT_GT(o.b.peer.acks_sent, kCount / 100);
  EXPECT_GT(k[LOCABUS_CTR_ack_consumed], kCount / 100);
  EXPECT_GT(k[LOCABUS_CTR_ack_ring_out], kCount / 100);
  // Almost none reached the sender's engine as frames: only those before
  // the connection was tracked, and any the ring had no room for.
  EXPECT_LE(x.rx_pure_acks, 5u + k[LOCABUS_CTR_ack_ring_full]);
  EXPECT_LT(x.rx_pure_acks * 100, k[LOCABUS_CTR_ack_consumed]);
  // It learnt of every one from the ring (coalesced: one call per peer and
  // drain). With a full-size window it is busy nearly all the time here and
  // seldom sleeps (6 to 30 times); the next test makes it wait for ACKs.
  EXPECT_EQ(x.acks_from_ring, k[LOCABUS_CTR_ack_ring_out]);
  EXPECT_GT(x.ring_drains, 0u);
  EXPECT_EQ(x.acks_applied, x.ring_drains) << "one peer: one call per drain";
  EXPECT_GT(o.b.idle_sleeps, 0u) << "the receiver never slept: busy polling";
  // Progress came from ACKs, never from waiting for the retransmission timer.
  EXPECT_LE(o.a.peer.timeouts, 2u);
  // Every frame the engines got had passed the XDP program's checks.
  for (const NodeResult* n : {&o.a, &o.b}) {
    std::uint64_t invalid = 0;
    for (auto v : n->engine.rx_invalid) invalid += v;
    EXPECT_EQ(invalid, 0u);
  }
}

// A window of 16 packets: the sender fills it at once and, unless the
// receiver's ACK (every 8 packets) is back already, sleeps until it comes.
// Each of those ACKs is consumed in the kernel; if nothing woke the sender,
// every such wait would end with the retransmission timer (>= 250 ms) and
// count as a timeout. The ring wakes it instead. (How often the sender
// finds the ACK there already depends on how the two threads and the
// softirqs share the 2 CPUs: it slept for 0.7 % to 60 % of the ACKs here;
// since the last frame of a full window asks for an ACK at once, the sender
// often finds it back already.) What must hold: it did sleep, the ring woke
// most of those sleeps (the rest: its own timers, heartbeats), and no wait
// ended with the retransmission timer.
TEST_F(XdpTransportE2E, ASenderWaitingForAcksSleepsAndTheAckRingWakesIt) {
  constexpr std::uint64_t kCount = 100'000;
  engine::EngineConfig cfg;
  cfg.window = 16;
  cfg.ack_every = 8;
  const Outcome o = transfer(kCount, 120s, Link::xdp, cfg);
  report("AF_XDP, window 16", kCount, o);
  ASSERT_TRUE(o.a.kernel);
  const auto& x = o.a.xdp;
  EXPECT_GE(o.a.idle_sleeps, 20u) << "the sender should sleep while its window is full";
  EXPECT_GE(2 * x.ring_wakeups, o.a.idle_sleeps) << "and the ACK ring should be what wakes it";
  EXPECT_GT((*o.a.kernel)[LOCABUS_CTR_ack_consumed], kCount / 100);
  // Pure ACKs reach user space only when the kernel must pass them: an ACK
  // behind what the engine published answers a repair (CI's sanitizer
  // build saw 5 frames resent and their 5 ACKs passed). Never the stream's
  // ordinary ACKs, and repairs stay rare.
  EXPECT_LE(x.rx_pure_acks, o.a.peer.retransmits + 2);
  EXPECT_LE(o.a.peer.retransmits, kCount / 1000);
  EXPECT_LE(o.a.peer.timeouts, 2u) << "progress must not wait for the retransmission timer";
  EXPECT_GT(o.seconds, 0.0);
  EXPECT_LT(o.seconds, 60.0);
}

// For the numbers only (PERFORMANCE.md): the same transfer over AF_PACKET
// and AF_XDP in one run. Run with --gtest_also_run_disabled_tests.
TEST_F(XdpTransportE2E, DISABLED_ThroughputAfXdpVersusAfPacket) {
  constexpr std::uint64_t kCount = 100'000;
  const Outcome p = transfer(kCount, 600s, Link::packet);
  report("AF_PACKET", kCount, p);
  net_ = std::make_unique<test::VethPair>();
  const Outcome x = transfer(kCount, 600s, Link::xdp);
  report("AF_XDP", kCount, x);
}

// ---- the transport's mechanics, with hand-made ACKs -----------------------------------

class XdpTransportRing : public XdpTransportE2E {
 protected:
  void SetUp() override {
    XdpTransportE2E::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    net::NetnsScope in(net_->netns_b());
    fastpath::Options o;
    o.iface = net_->if_b();
    o.node_id = kB;
    o.mode = fastpath::AttachMode::native;
    fp_ = fastpath::FastPath::attach(o);
    tr_ = std::make_unique<transport::XdpTransport>(*fp_);
    {
      net::NetnsScope in_a(net_->netns_a());
      raw_a_ = std::make_unique<net::PacketSocket>(net_->if_a());
    }
  }
  void TearDown() override {
    tr_.reset();
    fp_.reset();
    raw_a_.reset();
    XdpTransportE2E::TearDown();
  }

  void ack_from_a(std::uint16_t ack, std::uint16_t window) {
    raw_a_->send(FrameBuilder().type(PacketType::ack).from(kA).to(kB).ack(ack).window(window).build());
  }
  bool readable(std::chrono::milliseconds timeout) {
    pollfd p{tr_->wait_fd(), POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
  }
  struct Ack {
    std::uint16_t node, ack, window;
  };
  std::vector<Ack> poll_acks() {
    std::vector<Ack> got;
    tr_->poll_acks([&](std::uint16_t n, std::uint16_t a, std::uint16_t w) { got.push_back({n, a, w}); });
    return got;
  }
  std::size_t receive_all(std::chrono::milliseconds timeout) {
    std::size_t n = 0;
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      n += tr_->receive(64, [](engine::FrameBytes) {});
      if (n > 0) break;
      readable(10ms);
    }
    return n;
  }

  std::unique_ptr<fastpath::FastPath> fp_;
  std::unique_ptr<transport::XdpTransport> tr_;
  std::unique_ptr<net::PacketSocket> raw_a_;
};

TEST_F(XdpTransportRing, AConsumedAckWakesTheWaitFdAndPollAcksGivesTheNewest) {
  EXPECT_FALSE(readable(50ms)) << "nothing happened yet";
  tr_->track_peer(kA);
  tr_->publish_conn(kA, locabus_conn_pub{0, 100, LOCABUS_CONN_F_PUBLISHED, 1});
  EXPECT_EQ(fp_->maps().published(kA).max, 100) << "published through the mapped array";
  ack_from_a(10, 100);
  ack_from_a(12, 90);
  ack_from_a(11, 80);  // reordered: behind the consumed 12, passed
  ack_from_a(12, 95);  // a window update: passed to user space
  ASSERT_TRUE(readable(2000ms)) << "a consumed ACK must wake a poll() on wait_fd()";
  // The kernel takes the four in order: wait for the last before draining.
  for (int i = 0; i < 200 && fp_->maps().counters()[LOCABUS_CTR_ack_pass_behind] < 2; ++i)
    std::this_thread::sleep_for(10ms);
  const auto got = poll_acks();
  ASSERT_EQ(got.size(), 1u) << "one call per peer and drain";
  EXPECT_EQ(got[0].node, kA);
  EXPECT_EQ(got[0].ack, 12);
  EXPECT_EQ(got[0].window, 90);
  EXPECT_EQ(tr_->stats().acks_from_ring, 2u);
  EXPECT_EQ(tr_->stats().acks_applied, 1u);
  EXPECT_EQ(fp_->maps().counters()[LOCABUS_CTR_ack_pass_behind], 2u);
  EXPECT_EQ(receive_all(500ms), 2u) << "the two passed ACKs arrive as frames";
  // Drained: poll() sleeps again.
  EXPECT_FALSE(readable(50ms));
  EXPECT_TRUE(poll_acks().empty());
}

TEST_F(XdpTransportRing, UntrackedPeersAcksArriveAsFramesAndStrayRecordsAreIgnored) {
  ack_from_a(5, 10);  // not tracked: a frame
  EXPECT_EQ(receive_all(2000ms), 1u);
  EXPECT_EQ(tr_->stats().rx_pure_acks, 1u);
  // Tracked in the kernel behind the transport's back (e.g. by hand): the
  // record arrives, but the engine hears nothing of a peer it does not track.
  fp_->maps().track_peer(kA);
  fp_->maps().publish(kA, locabus_conn_pub{0, 100, LOCABUS_CONN_F_PUBLISHED, 1});
  ack_from_a(6, 10);
  ASSERT_TRUE(readable(2000ms));
  EXPECT_TRUE(poll_acks().empty());
  EXPECT_EQ(tr_->stats().acks_ignored, 1u);
  // Tracked, then forgotten: frames again, and the kernel stops consuming.
  tr_->track_peer(kA);
  tr_->forget_peer(kA);
  EXPECT_FALSE(fp_->maps().peer(kA));
  ack_from_a(7, 10);
  EXPECT_EQ(receive_all(2000ms), 1u);
}

TEST_F(XdpTransportRing, RecordsFromBeforeTrackingNeverReachTheNewConnection) {
  // An ACK the kernel consumed for an earlier connection is still on the
  // ring when the engine tracks the peer again (a new connection).
  fp_->maps().track_peer(kA);
  fp_->maps().publish(kA, locabus_conn_pub{49'000, 51'000, LOCABUS_CONN_F_PUBLISHED, 1});
  ack_from_a(50'000, 10);
  ASSERT_TRUE(readable(2000ms));
  tr_->track_peer(kA);
  EXPECT_TRUE(poll_acks().empty()) << "the old connection's ACK must not be applied";
  tr_->publish_conn(kA, locabus_conn_pub{1, 10, LOCABUS_CONN_F_PUBLISHED, 1});
  ack_from_a(3, 20);
  ASSERT_TRUE(readable(2000ms));
  const auto got = poll_acks();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].ack, 3);
  EXPECT_EQ(got[0].window, 20);
}

TEST_F(XdpTransportRing, BusyPollingIsOptIn) {
  EXPECT_FALSE(tr_->busy_poll());
  tr_->receive(64, [](engine::FrameBytes) {});
  EXPECT_EQ(tr_->stats().busy_polls, 0u) << "no system call for an empty ring without busy polling";
  tr_.reset();
  {
    net::NetnsScope in(net_->netns_b());
    transport::XdpOptions o;
    o.busy_poll = true;
    tr_ = std::make_unique<transport::XdpTransport>(*fp_, o);
  }
  EXPECT_EQ(tr_->describe(), "copy mode, 1 queue, busy polling");
  EXPECT_EQ(tr_->receive(64, [](engine::FrameBytes) {}), 0u);
  EXPECT_EQ(tr_->stats().busy_polls, 1u) << "an empty ring polls the driver";
  raw_a_->send(FrameBuilder().type(PacketType::data).from(kA).to(kB).payload("busy").build());
  EXPECT_EQ(receive_all(2000ms), 1u);
}

TEST_F(XdpTransportRing, SendsFramesThatArriveAtThePeer) {
  // B sends to A over AF_XDP; A reads its kernel stack with AF_PACKET (no
  // XDP program on A: the frames go up the stack).
  net::Interface if_a;
  {
    net::NetnsScope in(net_->netns_a());
    if_a = net::lookup_interface(net_->if_a());
  }
  std::vector<std::vector<std::byte>> frames;
  for (std::uint16_t i = 0; i < 300; ++i)
    frames.push_back(FrameBuilder()
                         .type(PacketType::data)
                         .from(kB)
                         .to(kA)
                         .seq(i)
                         .src(tr_->mac())
                         .dst(if_a.mac)
                         .payload_size(1000)
                         .build());
  // Room for all of them in A's socket until it reads.
  const int rcvbuf = 8 << 20;
  ASSERT_EQ(::setsockopt(raw_a_->fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf), 0);
  std::vector<engine::FrameBytes> spans(frames.begin(), frames.end());
  std::size_t sent = 0;
  for (int i = 0; i < 100 && sent < spans.size(); ++i) {
    sent += tr_->send(std::span(spans).subspan(sent));
    if (sent < spans.size()) readable(10ms);
  }
  ASSERT_EQ(sent, spans.size());
  std::vector<std::byte> buf(2048);
  std::size_t got = 0;
  while (got < frames.size()) {
    auto n = raw_a_->receive(buf, 2000ms);
    if (!n) break;
    const auto d = wire::decode_frame(std::span(buf).first(*n));
    ASSERT_TRUE(d);
    EXPECT_EQ(d->header.seq(), got);
    ++got;
  }
  EXPECT_EQ(got, frames.size());
  EXPECT_EQ(tr_->stats().tx_frames, frames.size());
  EXPECT_GT(tr_->stats().tx_kicks, 0u) << "copy mode transmits only when kicked";
}

TEST_F(XdpTransportRing, ALinkDownKeepsTheRingsFramesDropsTheRestAndRetriesWithoutSpinning) {
  // 32 TX buffers, and B's device down: the kernel takes nothing
  // (ENETDOWN). What fits the ring waits there; the rest is accepted and
  // dropped (the engine retransmits), never refused: a refusal the engine
  // offered again would be a loop for as long as the link is down.
  tr_.reset();
  {
    net::NetnsScope in(net_->netns_b());
    transport::XdpOptions o;
    o.xsk.frame_count = 64;
    o.xsk.ring_size = 32;
    tr_ = std::make_unique<transport::XdpTransport>(*fp_, o);
  }
  const int rcvbuf = 8 << 20;
  ASSERT_EQ(::setsockopt(raw_a_->fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf), 0);
  ASSERT_EQ(test::run("ip -n " + net_->ns_b() + " link set " + net_->if_b() + " down"), 0);
  net::Interface if_a;
  {
    net::NetnsScope in(net_->netns_a());
    if_a = net::lookup_interface(net_->if_a());
  }
  std::vector<std::vector<std::byte>> frames;
  for (std::uint16_t i = 0; i < 100; ++i)
    frames.push_back(
        FrameBuilder().type(PacketType::data).from(kB).to(kA).seq(i).src(tr_->mac()).dst(if_a.mac).build());
  std::vector<engine::FrameBytes> spans(frames.begin(), frames.end());
  EXPECT_EQ(tr_->send(spans), spans.size()) << "32 on the ring, 68 dropped";
  EXPECT_EQ(tr_->stats().tx_frames, 32u);
  EXPECT_EQ(tr_->faults().stats().tx_link_down_drops, 68u);
  EXPECT_TRUE(tr_->faults().link_down());
  EXPECT_EQ(tr_->send(std::span(spans).first(10)), 10u);
  EXPECT_EQ(tr_->faults().stats().tx_link_down_drops, 78u);
  EXPECT_EQ(tr_->stats().tx_busy, 0u);
  // The retry timer wakes a sleeper soon, and then backs off: over 300 ms
  // an idle loop on wait_fd() wakes a few dozen times, not thousands.
  int wakeups = 0;
  const auto until = std::chrono::steady_clock::now() + 300ms;
  while (std::chrono::steady_clock::now() < until) {
    if (!readable(20ms)) continue;
    ++wakeups;
    tr_->receive(64, [](engine::FrameBytes) {});  // a duty cycle: services TX
  }
  EXPECT_GT(wakeups, 3);
  EXPECT_LT(wakeups, 150);
  // Link up: the waiting frames go (at the next retry), then new ones.
  ASSERT_EQ(test::run("ip -n " + net_->ns_b() + " link set " + net_->if_b() + " up"), 0);
  for (int i = 0; i < 50 && tr_->faults().link_down(); ++i) {
    readable(20ms);
    tr_->receive(64, [](engine::FrameBytes) {});
  }
  EXPECT_FALSE(tr_->faults().link_down());
  EXPECT_EQ(tr_->send(std::span(spans).subspan(90)), 10u);
  std::vector<std::byte> buf(2048);
  std::vector<std::uint16_t> got;
  while (auto n = raw_a_->receive(buf, 2000ms)) {
    const auto d = wire::decode_frame(std::span(buf).first(*n));
    ASSERT_TRUE(d);
    got.push_back(d->header.seq());
    if (got.size() == 42) break;
  }
  std::vector<std::uint16_t> want;
  for (std::uint16_t i = 0; i < 32; ++i) want.push_back(i);
  for (std::uint16_t i = 90; i < 100; ++i) want.push_back(i);
  EXPECT_EQ(got, want);
}

TEST_F(XdpTransportE2E, OpensASocketPerRxQueue) {
  // A veth with two queues each way, both ends in namespace A.
  ASSERT_EQ(test::run("ip -n " + net_->ns_a() +
                      " link add lbmq0 numtxqueues 2 numrxqueues 2 type veth peer name lbmq1 numtxqueues 2 "
                      "numrxqueues 2 && ip -n " +
                      net_->ns_a() + " link set lbmq0 up && ip -n " + net_->ns_a() + " link set lbmq1 up"),
            0);
  net::NetnsScope in(net_->netns_a());
  fastpath::Options o;
  o.iface = "lbmq0";
  o.node_id = kB;
  o.mode = fastpath::AttachMode::native;
  auto fp = fastpath::FastPath::attach(o);
  {
    transport::XdpTransport tr(*fp);
    EXPECT_EQ(tr.queues(), (std::vector<std::uint32_t>{0, 1}));
    EXPECT_EQ(tr.describe(), "copy mode, 2 queues");
    // Frames arrive whichever queue they come in on.
    net::PacketSocket raw("lbmq1");
    for (std::uint16_t i = 0; i < 50; ++i)
      raw.send(FrameBuilder().type(PacketType::data).from(kA).to(kB).seq(i).payload("x").build());
    std::size_t got = 0;
    const auto until = std::chrono::steady_clock::now() + 3s;
    while (got < 50 && std::chrono::steady_clock::now() < until) {
      pollfd p{tr.wait_fd(), POLLIN, 0};
      ::poll(&p, 1, 20);
      got += tr.receive(64, [](engine::FrameBytes) {});
    }
    EXPECT_EQ(got, 50u);
    // Each queue has one of its sockets (the XSKMAP cannot be read from user
    // space; a second socket on the queue is refused, after the bind's
    // EBUSY retries).
    for (std::uint32_t q : {0u, 1u}) {
      transport::XdpOptions just;
      just.queues = {q};
      EXPECT_THROW(transport::XdpTransport(*fp, just), Error) << "queue " << q << " has no socket";
    }
  }
  // A transport on queue 1 alone.
  transport::XdpOptions one;
  one.queues = {1};
  transport::XdpTransport tr1(*fp, one);
  EXPECT_EQ(tr1.queues(), (std::vector<std::uint32_t>{1}));
}

// ---- choosing the datapath -----------------------------------------------------------

class DatapathE2E : public XdpTransportE2E {
 protected:
  transport::OpenedDatapath open(transport::Datapath want) {
    net::NetnsScope in(net_->netns_a());
    transport::DatapathOptions o;
    o.iface = net_->if_a();
    o.node_id = kA;
    o.want = want;
    return transport::open_datapath(o);
  }
  fastpath::Status status_a() {
    net::NetnsScope in(net_->netns_a());
    return fastpath::status(net_->if_a());
  }
};

TEST(Datapath, NamesRoundTrip) {
  for (auto d : {transport::Datapath::automatic, transport::Datapath::xdp, transport::Datapath::packet})
    EXPECT_EQ(transport::parse_datapath(transport::to_string(d)), d);
  EXPECT_EQ(transport::parse_datapath("af_xdp"), transport::Datapath::xdp);
  EXPECT_FALSE(transport::parse_datapath("dpdk"));
  EXPECT_FALSE(transport::parse_datapath(""));
}

TEST_F(DatapathE2E, XdpGivesTheFastPathAndAnAfXdpTransport) {
  auto d = open(transport::Datapath::xdp);
  EXPECT_EQ(d.got, transport::Datapath::xdp);
  ASSERT_TRUE(d.fastpath);
  EXPECT_NE(dynamic_cast<transport::XdpTransport*>(d.transport.get()), nullptr);
  EXPECT_EQ(d.why, "AF_XDP (native XDP, copy mode, 1 queue)");
  EXPECT_EQ(d.fastpath->node_id(), kA);
  EXPECT_TRUE(status_a().healthy());
  d = {};  // the transport goes first, then the fast path detaches
  EXPECT_TRUE(status_a().program_ids.empty());
}

TEST_F(DatapathE2E, PacketGivesAfPacketAndNoXdpProgram) {
  auto d = open(transport::Datapath::packet);
  EXPECT_EQ(d.got, transport::Datapath::packet);
  EXPECT_FALSE(d.fastpath);
  EXPECT_NE(dynamic_cast<transport::PacketTransport*>(d.transport.get()), nullptr);
  EXPECT_EQ(d.why, "AF_PACKET (asked for)");
  EXPECT_TRUE(status_a().program_ids.empty());
}

TEST_F(DatapathE2E, AutomaticGetsXdpOnAVeth) {
  auto d = open(transport::Datapath::automatic);
  EXPECT_EQ(d.got, transport::Datapath::xdp) << d.why;
  EXPECT_TRUE(d.fastpath);
  EXPECT_EQ(d.why.rfind("AF_XDP (native XDP", 0), 0u) << d.why;
}

TEST_F(DatapathE2E, AutomaticFallsBackToAfPacketWithTheReason) {
  // Native only, on an Ethernet device without native XDP: a bridge.
  ASSERT_EQ(test::run("ip -n " + net_->ns_a() + " link add lbbr0 type bridge && ip -n " + net_->ns_a() +
                      " link set lbbr0 up"),
            0);
  net::NetnsScope in(net_->netns_a());
  transport::DatapathOptions o;
  o.iface = "lbbr0";
  o.node_id = kA;
  o.attach_mode = fastpath::AttachMode::native;
  auto d = transport::open_datapath(o);
  EXPECT_EQ(d.got, transport::Datapath::packet);
  EXPECT_FALSE(d.fastpath);
  EXPECT_EQ(d.why.rfind("AF_PACKET: XDP attach failed: ", 0), 0u) << d.why;
  o.want = transport::Datapath::xdp;
  EXPECT_THROW(transport::open_datapath(o), Error) << "xdp asked for: no fallback";
}

TEST_F(DatapathE2E, EveryModeRefusesAnInterfaceAnotherOwnerHolds) {
  std::unique_ptr<fastpath::FastPath> owner;
  {
    net::NetnsScope in(net_->netns_a());
    fastpath::Options o;
    o.iface = net_->if_a();
    o.node_id = kA;
    o.own = true;  // this process, alive: as good as another daemon
    owner = fastpath::FastPath::attach(o);
  }
  for (auto want : {transport::Datapath::automatic, transport::Datapath::xdp, transport::Datapath::packet}) {
    SCOPED_TRACE(std::string(transport::to_string(want)));
    try {
      open(want);
      ADD_FAILURE() << "expected InterfaceInUse";
    } catch (const fastpath::InterfaceInUse& e) {
      EXPECT_EQ(e.owner(), ::getpid());
      EXPECT_NE(std::string(e.what()).find("is in use"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(status_a().healthy()) << "the owner's fast path must be untouched";
}

TEST_F(DatapathE2E, PacketRefusesAnXdpProgramThatWouldDropItsFrames) {
  {
    net::NetnsScope in(net_->netns_a());
    fastpath::Options o;
    o.iface = net_->if_a();
    o.node_id = kA;
    o.own = false;  // administrative: `locabusctl xdp attach`
    fastpath::FastPath::attach(o)->persist();
  }
  try {
    open(transport::Datapath::packet);
    ADD_FAILURE() << "expected an Error";
  } catch (const fastpath::InterfaceInUse& e) {
    ADD_FAILURE() << "not in use by a process: " << e.what();
  } catch (const Error& e) {
    EXPECT_NE(e.hint().find("locabusctl xdp detach"), std::string::npos) << e.hint();
  }
  // automatic replaces an administrative attachment, as attach does.
  auto d = open(transport::Datapath::automatic);
  EXPECT_EQ(d.got, transport::Datapath::xdp) << d.why;
}

}  // namespace
}  // namespace locabus
