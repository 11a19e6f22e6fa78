// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The daemon in simulation (issue 12, item 6): several daemons' cores over
// the simulated network with loss and reordering, real liblocabus clients
// over real Unix sockets (daemon_harness.hpp explains the clock and its
// limits). Every test runs over several seeds; LOCABUS_SIM_SEED=S replays
// the network's draws of one seed (not the thread interleaving),
// LOCABUS_SIM_SEEDS=N soaks.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <locabus/client.hpp>

#include "daemon_harness.hpp"
#include "sim_test_util.hpp"

namespace locabus::sim {
namespace {

using namespace std::chrono_literals;
using testing::ClientThread;
using testing::DaemonSim;
using testing::DaemonSimOptions;
using testing::for_each_seed;
using testing::lossy;

/// Sets `flag` when the scope ends, so that client threads declared before
/// it stop even when an assertion returns early.
struct StopOnExit {
  std::atomic<bool>& flag;
  ~StopOnExit() { flag = true; }
};

double sim_ms(engine::Nanos n) { return std::chrono::duration<double, std::milli>(n).count(); }

// ---- Locasock ---------------------------------------------------------------------

constexpr std::array<std::size_t, 4> kSizes{1, 1476, 1477, LOCABUS_MAX_DATAGRAM};
constexpr std::uint16_t kUnbound = 9;  // nobody binds it

/// The `k`-th datagram from (src node, src port) to (dst node, dst port):
/// its size cycles through kSizes, the first 12 bytes name it, the rest is
/// a pattern of all of it. A receiver rebuilds it and compares.
std::vector<std::byte> datagram(std::uint16_t sn, std::uint16_t sp, std::uint16_t dn, std::uint16_t dp,
                                std::uint32_t k) {
  std::vector<std::byte> d(kSizes[k % kSizes.size()]);
  for (std::size_t i = 0; i < d.size(); ++i)
    d[i] = static_cast<std::byte>((k * 31u + i * 7u + sn * 13u + sp + dp * 3u) & 0xff);
  if (d.size() >= 12) {
    const std::uint16_t head[4] = {sn, sp, dn, dp};
    std::memcpy(d.data(), head, 8);
    std::memcpy(d.data() + 8, &k, 4);
  }
  return d;
}

struct SocketResult {
  std::uint64_t sent = 0;                      // datagrams send_to() accepted (its numbers: 0..sent-1)
  std::vector<std::uint64_t> unbound_numbers;  // the numbers of those to the unbound port
  std::map<std::pair<std::uint16_t, std::uint16_t>, std::uint32_t> received;  // per sender: count
  std::vector<std::string> errors;
  std::vector<locabus::Event> events;
};

TEST(DaemonSim, LocasockDatagramsArriveWholeInOrderOnceAndUnboundPortIsRefusedToItsSenderOnly) {
  constexpr std::uint32_t kPerDest = 8;  // datagrams each socket sends each other socket
  constexpr std::array<std::uint16_t, 2> kPorts{7000, 7001};
  for_each_seed(6, [&](std::uint64_t seed) {
    DaemonSimOptions o;
    o.nodes = 3;
    o.link = lossy(seed);
    DaemonSim sim(seed, o);
    ASSERT_TRUE(sim.wait_until([&] { return sim.converged(); }, 20s)) << "the nodes never met";

    struct Sock {
      std::size_t node;
      std::uint16_t port;
      locabus::Socket socket;
      SocketResult r;
      std::atomic<bool> done{false};
    };
    std::vector<std::unique_ptr<Sock>> socks;
    for (std::size_t n = 0; n < sim.size(); ++n)
      for (std::uint16_t p : kPorts) {
        locabus::SocketOptions so;
        so.socket_path = sim.socket(n);
        socks.push_back(std::unique_ptr<Sock>(new Sock{n, p, locabus::Socket::bind(p, so), {}, {}}));
      }
    const std::uint32_t expected_in = static_cast<std::uint32_t>((sim.size() - 1) * kPorts.size() * kPerDest);

    std::atomic<bool> stop{false};
    std::vector<std::unique_ptr<ClientThread>> threads;
    for (auto& sp : socks) {
      Sock& s = *sp;
      threads.push_back(std::make_unique<ClientThread>([&] {
        const std::uint16_t me = DaemonSim::id_of(s.node);
        // Destinations round robin; node 1's port 7000 also sends two
        // datagrams (1 B, 64 KB) to a port nobody bound on node 2.
        std::vector<std::pair<std::uint16_t, std::uint16_t>> plan;
        for (std::uint32_t k = 0; k < kPerDest; ++k)
          for (std::size_t n = 0; n < sim.size(); ++n)
            for (std::uint16_t p : kPorts)
              if (n != s.node) plan.emplace_back(DaemonSim::id_of(n), p);
        const bool refused_one = s.node == 0 && s.port == 7000;
        if (refused_one) {
          plan.insert(plan.begin() + 3, {2, kUnbound});
          plan.insert(plan.begin() + 12, {2, kUnbound});
        }
        std::map<std::pair<std::uint16_t, std::uint16_t>, std::uint32_t> next_to;
        std::uint32_t unbound_sent = 0;
        std::uint32_t in = 0;
        std::size_t i = 0;
        auto take = [&](const locabus::Datagram& d) {
          std::uint32_t& k = s.r.received[{d.node, d.port}];
          const auto want = datagram(d.node, d.port, me, s.port, k);
          if (d.data != want && s.r.errors.size() < 5)
            s.r.errors.push_back("datagram " + std::to_string(k) + " from " + std::to_string(d.node) + ":" +
                                 std::to_string(d.port) + " is not the one expected (" +
                                 std::to_string(d.data.size()) + " bytes, expected " +
                                 std::to_string(want.size()) + ")");
          ++k;
          ++in;
        };
        while (!stop) {
          bool progress = false;
          if (i < plan.size()) {
            const auto [dn, dp] = plan[i];
            const bool to_unbound = dp == kUnbound;
            const auto data = to_unbound ? datagram(me, s.port, dn, dp, unbound_sent == 0 ? 0 : 3)
                                         : datagram(me, s.port, dn, dp, next_to[{dn, dp}]);
            if (s.socket.send_to(dn, dp, data, 0ms) == locabus::SendStatus::ok) {
              if (to_unbound) {
                s.r.unbound_numbers.push_back(s.r.sent);
                ++unbound_sent;
              } else {
                ++next_to[{dn, dp}];
              }
              ++s.r.sent;
              ++i;
              progress = true;
            }
          }
          while (auto d = s.socket.receive(0ms)) {
            take(*d);
            progress = true;
          }
          while (auto e = s.socket.next_event()) s.r.events.push_back(*e);
          if (i == plan.size() && in >= expected_in) s.done = true;
          if (!progress) {
            if (auto d = s.socket.receive(i < plan.size() ? 1ms : 5ms)) take(*d);
          }
        }
      }));
    }
    StopOnExit stopper{stop};

    Sock& refused = *socks[0];
    auto finished = [&] {
      for (auto& s : socks)
        if (!s->done) return false;
      return true;
    };
    const auto t0 = sim.call([&] { return sim.now(); });
    const bool all_done = sim.wait_until(finished, 60s);
    const auto t1 = sim.call([&] { return sim.now(); });
    // Time for refusals, duplicates or strays to show up.
    ASSERT_TRUE(sim.wait_for_sim(500ms));
    stop = true;
    for (auto& t : threads) EXPECT_EQ(t->join(), "");
    ASSERT_TRUE(all_done) << "not every datagram arrived in 60 s of real time; driver: "
                          << sim.driver_error();
    RecordProperty("sim_ms", std::to_string(sim_ms(t1 - t0)));

    for (auto& sp : socks) {
      Sock& s = *sp;
      SCOPED_TRACE("socket " + std::to_string(DaemonSim::id_of(s.node)) + ":" + std::to_string(s.port));
      for (const auto& e : s.r.errors) ADD_FAILURE() << e;
      // Exactly once: every other socket's datagrams, no more.
      for (std::size_t n = 0; n < sim.size(); ++n)
        for (std::uint16_t p : kPorts) {
          if (n == s.node) continue;
          auto it = s.r.received.find({DaemonSim::id_of(n), p});
          EXPECT_EQ(it == s.r.received.end() ? 0u : it->second, kPerDest)
              << "from " << DaemonSim::id_of(n) << ":" << p;
        }
      EXPECT_EQ(s.r.received.size(), (sim.size() - 1) * kPorts.size()) << "datagrams from unexpected senders";
      if (&s == &refused) {
        // Its two datagrams to the unbound port, by its own numbers, once each.
        ASSERT_EQ(s.r.unbound_numbers.size(), 2u);
        std::multiset<std::uint64_t> failed;
        for (const auto& e : s.r.events) {
          EXPECT_EQ(e.kind, LOCABUS_EV_SEND_FAILED) << e.to_string();
          EXPECT_EQ(e.failure, LOCABUS_FAIL_NO_ENDPOINT) << e.to_string();
          EXPECT_EQ(e.node, 2) << e.to_string();
          for (std::uint64_t m = e.first_message; m < e.first_message + e.count; ++m) failed.insert(m);
        }
        EXPECT_EQ(failed,
                  std::multiset<std::uint64_t>(s.r.unbound_numbers.begin(), s.r.unbound_numbers.end()))
            << "the refused datagrams are its numbers " << s.r.unbound_numbers[0] << " and "
            << s.r.unbound_numbers[1];
      } else {
        // Sockets that sent to node 2 (and the others) hear nothing.
        for (const auto& e : s.r.events) ADD_FAILURE() << "unexpected event: " << e.to_string();
      }
    }
    sim.call([&] {
      for (std::size_t n = 0; n < sim.size(); ++n) {
        SCOPED_TRACE("node " + std::to_string(DaemonSim::id_of(n)));
        const auto ls = sim.server(n).counters_json()["locasock"];
        EXPECT_EQ(ls["no_port"].get<std::uint64_t>(), n == 1 ? 2u : 0u) << ls.dump();
        EXPECT_EQ(ls["incomplete"].get<std::uint64_t>(), 0u) << ls.dump();
        EXPECT_EQ(ls["reassembly_timeouts"].get<std::uint64_t>(), 0u) << ls.dump();
        const auto api = sim.server(n).counters_json()["api"];
        EXPECT_EQ(api["send_failures"].get<std::uint64_t>(), n == 0 ? 2u : 0u) << api.dump();
      }
    });
  });
}

// ---- the slow reader -------------------------------------------------------------

constexpr std::size_t kMessage = 1000;

/// Streams `count` messages from `ep` to `node`, blocking (in real time) on
/// back-pressure; keeps the events. Returns when done or stopped.
struct Sender {
  std::uint64_t sent = 0;
  std::vector<locabus::Event> events;
  void run(locabus::Endpoint& ep, std::uint16_t node, std::uint64_t count, const std::atomic<bool>& stop) {
    while (sent < count && !stop) {
      const auto p = sim::testing::payload(ep.node_id(), sent, kMessage);
      if (ep.send(node, p, 50ms) == locabus::SendStatus::ok) ++sent;
      while (auto e = ep.next_event()) events.push_back(*e);
    }
    while (auto e = ep.next_event()) events.push_back(*e);
  }
};

/// Reads `count` messages from `ep` checking order and contents; returns a
/// description of the first problem, or empty.
std::string read_in_order(locabus::Endpoint& ep, std::uint16_t from, std::uint64_t count,
                          std::atomic<std::uint64_t>& got, const std::atomic<bool>& stop) {
  std::string error;
  while (got < count && !stop) {
    auto m = ep.receive(20ms);
    if (!m) continue;
    const auto p = sim::testing::parse(m->data);
    if (error.empty() &&
        (m->node != from || !p.intact || p.from != from || p.index != got || m->data.size() != kMessage))
      error = "message " + std::to_string(got) + " from node " + std::to_string(from) + " came as index " +
              std::to_string(p.index) + " from " + std::to_string(m->node) + (p.intact ? "" : ", damaged");
    ++got;
  }
  return error;
}

struct StreamTimes {
  engine::Nanos start{0}, end{0};
  std::chrono::steady_clock::time_point real_start, real_end;
  double real_ms() const { return std::chrono::duration<double, std::milli>(real_end - real_start).count(); }
  engine::Nanos took() const { return end - start; }
};

// Node 1 streams to protocol 21 on node 2 while (if `stuck`) node 2's
// protocol 20 reader does not read what node 1 streams to it.
void slow_reader(std::uint64_t seed, bool stuck, StreamTimes& fast) {
  constexpr std::uint64_t kStuckCount = 600;  // to the reader that stops
  constexpr std::uint64_t kFastCount = 1500;  // to the one that reads
  constexpr std::uint32_t kWindow = 64;
  DaemonSimOptions o;
  o.nodes = 2;
  o.link = lossy(seed);
  o.ring_bytes = 64u << 10;  // about 60 messages of 1 KB
  o.endpoint_window = kWindow;
  DaemonSim sim(seed, o);
  ASSERT_TRUE(sim.wait_until([&] { return sim.converged(); }, 20s)) << "the nodes never met";

  auto open = [&](std::size_t node, std::uint8_t proto) {
    locabus::EndpointOptions eo;
    eo.socket_path = sim.socket(node);
    eo.protocol = proto;
    eo.events = false;
    return locabus::Endpoint::open(eo);
  };
  auto tx20 = open(0, 20), tx21 = open(0, 21);
  auto rx20 = open(1, 20), rx21 = open(1, 21);

  std::atomic<bool> stop{false};
  Sender s20, s21;
  std::atomic<std::uint64_t> got20{0}, got21{0};
  std::string err21;
  std::unique_ptr<ClientThread> t20;
  if (stuck) t20 = std::make_unique<ClientThread>([&] { s20.run(tx20, 2, kStuckCount, stop); });
  StopOnExit stopper20{stop};

  auto flow = [&](std::size_t node) { return sim.server(node).counters_json()["api"]["router"]["flow"]; };
  std::size_t peak_backlog = 0;
  auto backlog20 = [&] {
    const auto ep = sim.endpoint_counters(1, "proto", 20);
    return ep.is_null() ? std::size_t{0} : ep["backlog"].get<std::size_t>();
  };
  if (stuck) {
    // The sender runs into the stopped reader's credit: blocked, and node 2
    // holds what it was granted.
    ASSERT_TRUE(sim.wait_until([&] {
      peak_backlog = std::max(peak_backlog, backlog20());
      return flow(0)["blocked"].get<std::uint64_t>() > 0 && backlog20() >= kWindow / 2;
    })) << "node 1's sender never ran out of credit; backlog "
        << peak_backlog;
  }

  {
    ClientThread r21([&] { err21 = read_in_order(rx21, 1, kFastCount, got21, stop); });
    ClientThread t21([&] {
      fast.start = sim.call([&] { return sim.now(); });
      fast.real_start = std::chrono::steady_clock::now();
      s21.run(tx21, 2, kFastCount, stop);
    });
    const bool done = sim.wait_until(
        [&] {
          if (stuck) peak_backlog = std::max(peak_backlog, backlog20());
          return got21 == kFastCount;
        },
        60s);
    fast.end = sim.call([&] { return sim.now(); });
    fast.real_end = std::chrono::steady_clock::now();
    ASSERT_TRUE(done) << "the stream to protocol 21 did not complete: " << got21 << " of " << kFastCount
                      << (stuck ? " while protocol 20's reader was stopped" : "");
  }
  EXPECT_EQ(err21, "");
  EXPECT_EQ(s21.sent, kFastCount);
  for (const auto& e : s21.events) ADD_FAILURE() << "protocol 21's sender: " << e.to_string();
  if (!stuck) return;

  // Still stopped: node 2 holds at most the window for it, keeps it
  // connected, and node 1's sender is held back.
  ASSERT_TRUE(sim.wait_for_sim(200ms));
  sim.call([&] {
    peak_backlog = std::max(peak_backlog, backlog20());
    const auto ep = sim.endpoint_counters(1, "proto", 20);
    ASSERT_FALSE(ep.is_null()) << "the stopped reader was disconnected: "
                               << sim.server(1).counters_json()["api"].dump();
    EXPECT_GT(flow(0)["blocked"].get<std::uint64_t>(), 0u);
    EXPECT_EQ(sim.server(1).counters_json()["api"]["refused_on_close"].get<std::uint64_t>(), 0u);
  });
  EXPECT_LE(peak_backlog, kWindow) << "node 2 held more than the endpoint window for the stopped reader";
  EXPECT_GE(peak_backlog, kWindow / 2)
      << "the stopped reader's backlog never filled: the test did not stall it";
  EXPECT_TRUE(rx20.connected());
  EXPECT_LT(s20.sent, kStuckCount) << "the sender to the stopped reader was never held back";

  // The reader resumes: every message, in order, none failed.
  std::string err20 = read_in_order(rx20, 1, kStuckCount, got20, stop);
  EXPECT_EQ(got20, kStuckCount) << "the resumed reader got " << got20 << " of " << kStuckCount;
  EXPECT_EQ(err20, "");
  EXPECT_EQ(t20->join(), "");
  EXPECT_EQ(s20.sent, kStuckCount);
  for (const auto& e : s20.events) ADD_FAILURE() << "protocol 20's sender: " << e.to_string();
}

TEST(DaemonSim, SlowReaderHoldsUpOnlyItsOwnTraffic) {
  for_each_seed(6, [&](std::uint64_t seed) {
    StreamTimes base, with_stuck;
    slow_reader(seed, false, base);
    if (::testing::Test::HasFatalFailure()) return;
    slow_reader(seed, true, with_stuck);
    if (::testing::Test::HasFatalFailure()) return;
    std::fprintf(
        stderr,
        "seed %llu: protocol 21's stream took %.1f ms (simulated; %.1f ms real) alone, %.1f ms (%.1f ms "
        "real) beside a stopped reader\n",
        static_cast<unsigned long long>(seed), sim_ms(base.took()), base.real_ms(), sim_ms(with_stuck.took()),
        with_stuck.real_ms());
    // The stream to protocol 21 does not wait for the stopped reader (before
    // per-endpoint flow control it never completed while the reader was
    // stopped). The margin is wide: simulated durations include the clients'
    // real-time pace (daemon_harness.hpp), and either run may end with a
    // lost CREDIT or data frame recovered only by a retransmission timeout
    // (250 ms, backing off), which 1 KB x 1500 at 1-5 % loss meets in about
    // one run in three.
    EXPECT_LE(with_stuck.took(), 2 * base.took() + engine::Nanos(2s))
        << "alone " << sim_ms(base.took()) << " ms, beside the stopped reader " << sim_ms(with_stuck.took())
        << " ms";
  });
}

// ---- a stopped broadcast reader ---------------------------------------------------

// Node 1 broadcasts protocols 20 and 21 to nodes 2 and 3; node 2's protocol
// 20 reader stops. Node 2 asks node 1 to hold protocol 20 (HOLD): node 1's
// broadcasts of protocol 21 keep reaching both nodes, its protocol 20
// sender waits (back-pressure), node 2 holds a bounded backlog, and when
// the reader resumes every broadcast arrives at both nodes, none lost.
TEST(DaemonSim, AStoppedBroadcastReaderHoldsOnlyItsOwnProtocol) {
  for_each_seed(4, [&](std::uint64_t seed) {
    constexpr std::uint64_t kHeld = 5000;  // protocol 20: node 2 stops reading it (more than gets queued)
    constexpr std::uint64_t kFree = 1500;  // protocol 21: read everywhere
    constexpr std::uint32_t kWindow = 64;
    DaemonSimOptions o;
    o.nodes = 3;
    o.link = lossy(seed);
    o.ring_bytes = 64u << 10;  // about 60 messages of 1 KB
    o.endpoint_window = kWindow;
    DaemonSim sim(seed, o);
    ASSERT_TRUE(sim.wait_until([&] { return sim.converged(); }, 20s)) << "the nodes never met";
    auto open = [&](std::size_t node, std::uint8_t proto) {
      locabus::EndpointOptions eo;
      eo.socket_path = sim.socket(node);
      eo.protocol = proto;
      eo.events = false;
      return locabus::Endpoint::open(eo);
    };
    auto tx20 = open(0, 20), tx21 = open(0, 21);
    auto n2_20 = open(1, 20), n2_21 = open(1, 21), n3_20 = open(2, 20), n3_21 = open(2, 21);
    // A HOLD travels on the receiver's connection to the broadcaster: set
    // those up first, and keep the way back to node 1 lossless. A HOLD lost
    // waits for its repair (up to a retransmission timeout) while the
    // broadcaster sends on at full speed; past window + 4096 records the
    // receiver parks the broadcaster's stream, the bounded, lossless
    // fallback this test is not about (node 1's broadcasts keep their loss).
    sim.call([&] {
      for (std::size_t n = 1; n < 3; ++n)
        sim.net().set_link(sim.cluster().port_of(n), sim.cluster().port_of(0), LinkParams{});
    });
    {
      auto in = open(0, 22);
      for (std::size_t n = 1; n < 3; ++n) {
        auto out = open(n, 22);
        ASSERT_EQ(out.send(1, "hello"), locabus::SendStatus::ok);
        const auto m = in.receive(10s);
        ASSERT_TRUE(m && m->node == DaemonSim::id_of(n))
            << "node " << DaemonSim::id_of(n) << " never reached node 1";
      }
    }
    auto flow = [&](std::size_t node) { return sim.server(node).counters_json()["api"]["router"]["flow"]; };
    auto backlog = [&] {
      const auto ep = sim.endpoint_counters(1, "proto", 20);
      return ep.is_null() ? std::size_t{0} : ep["backlog"].get<std::size_t>();
    };

    std::atomic<bool> stop{false};
    Sender s20, s21;
    std::atomic<std::uint64_t> n3_got20{0}, n2_got21{0}, n3_got21{0}, n2_got20{0};
    std::string e3_20, e2_21, e3_21;
    ClientThread t20([&] { s20.run(tx20, LOCABUS_NODE_BROADCAST, kHeld, stop); });
    ClientThread r3_20([&] { e3_20 = read_in_order(n3_20, 1, kHeld, n3_got20, stop); });
    StopOnExit stopper{stop};
    std::size_t peak = 0;
    ASSERT_TRUE(sim.wait_until([&] {
      peak = std::max(peak, backlog());
      return flow(0)["broadcast_blocked"].get<std::uint64_t>() > 0;
    })) << "node 1 was never asked to hold protocol 20; node 2's backlog "
        << backlog() << "; node 1's flow " << sim.call([&] { return flow(0).dump(); }) << "; node 2's flow "
        << sim.call([&] { return flow(1).dump(); });

    // Protocol 21's broadcasts flow to both nodes meanwhile.
    {
      ClientThread r2([&] { e2_21 = read_in_order(n2_21, 1, kFree, n2_got21, stop); });
      ClientThread r3([&] { e3_21 = read_in_order(n3_21, 1, kFree, n3_got21, stop); });
      ClientThread t21([&] { s21.run(tx21, LOCABUS_NODE_BROADCAST, kFree, stop); });
      ASSERT_TRUE(sim.wait_until(
          [&] {
            peak = std::max(peak, backlog());
            return n2_got21 == kFree && n3_got21 == kFree;
          },
          60s))
          << "protocol 21's broadcasts were held up by protocol 20's stopped reader: node 2 got " << n2_got21
          << ", node 3 " << n3_got21 << " of " << kFree << "; sent " << s21.sent << "; node 1 "
          << sim.call([&] { return sim.server(0).counters_json()["api"]["router"].dump(); }) << "; node 2 "
          << sim.call([&] { return sim.server(1).counters_json()["api"]["router"].dump(); }) << "; node 3 "
          << sim.call([&] { return sim.server(2).counters_json()["api"]["router"].dump(); });
    }
    EXPECT_EQ(e2_21, "");
    EXPECT_EQ(e3_21, "");
    for (const auto& e : s21.events) ADD_FAILURE() << "protocol 21's sender: " << e.to_string();
    sim.call([&] {
      EXPECT_GT(flow(1)["holds_sent"].get<std::uint64_t>(), 0u);
      EXPECT_GT(flow(0)["holds_received"].get<std::uint64_t>(), 0u);
      EXPECT_EQ(sim.server(1).counters_json()["api"]["router"]["parked"].get<std::uint64_t>(), 0u)
          << "node 2 parked node 1's broadcast stream although node 1 holds protocol 20";
    });
    // Bounded: the window plus what node 1 had queued before the HOLD came.
    EXPECT_LE(peak, std::size_t{kWindow} + 4096u);
    EXPECT_GE(peak, std::size_t{kWindow}) << "the stopped reader's backlog never filled";
    EXPECT_LT(s20.sent, kHeld) << "protocol 20's broadcaster was never held back";

    // The reader resumes: every broadcast of protocol 20 reaches both nodes, in order.
    const std::string e2_20 = read_in_order(n2_20, 1, kHeld, n2_got20, stop);
    EXPECT_EQ(n2_got20, kHeld);
    EXPECT_EQ(e2_20, "");
    EXPECT_EQ(t20.join(), "");
    EXPECT_EQ(s20.sent, kHeld);
    ASSERT_TRUE(sim.wait_until([&] { return n3_got20 == kHeld; }, 30s)) << "node 3 got " << n3_got20;
    EXPECT_EQ(e3_20, "");
    for (const auto& e : s20.events) ADD_FAILURE() << "protocol 20's sender: " << e.to_string();
  });
}

// A held broadcaster goes on when the full reader closes instead of reading.
TEST(DaemonSim, AHoldEndsWhenTheFullReaderCloses) {
  for_each_seed(3, [&](std::uint64_t seed) {
    constexpr std::uint64_t kCount = 5000;
    constexpr std::uint32_t kWindow = 64;
    DaemonSimOptions o;
    o.nodes = 2;
    o.link = lossy(seed);
    o.ring_bytes = 64u << 10;
    o.endpoint_window = kWindow;
    DaemonSim sim(seed, o);
    ASSERT_TRUE(sim.wait_until([&] { return sim.converged(); }, 20s)) << "the nodes never met";
    auto open = [&](std::size_t node, std::uint8_t proto) {
      locabus::EndpointOptions eo;
      eo.socket_path = sim.socket(node);
      eo.protocol = proto;
      eo.events = false;
      return locabus::Endpoint::open(eo);
    };
    auto tx = open(0, 20);
    sim.call([&] { sim.net().set_link(sim.cluster().port_of(1), sim.cluster().port_of(0), LinkParams{}); });
    {  // node 2 -> node 1 connection first, lossless (see above)
      auto in = open(0, 22);
      auto out = open(1, 22);
      ASSERT_EQ(out.send(1, "hello"), locabus::SendStatus::ok);
      ASSERT_TRUE(in.receive(10s));
    }
    auto rx = std::make_unique<locabus::Endpoint>(open(1, 20));
    auto flow = [&](std::size_t node) { return sim.server(node).counters_json()["api"]["router"]["flow"]; };
    std::atomic<bool> stop{false};
    Sender s20;
    ClientThread t([&] { s20.run(tx, LOCABUS_NODE_BROADCAST, kCount, stop); });
    StopOnExit stopper{stop};
    ASSERT_TRUE(sim.wait_until([&] { return flow(0)["broadcast_blocked"].get<std::uint64_t>() > 0; }))
        << "node 1 was never held";
    rx.reset();  // the full reader goes away without reading
    ASSERT_TRUE(sim.wait_until([&] { return s20.sent == kCount; }, 30s))
        << "node 1 stayed held after the reader closed: sent " << s20.sent << " of " << kCount;
    EXPECT_EQ(t.join(), "");
    sim.call([&] { EXPECT_GT(flow(1)["resumes_sent"].get<std::uint64_t>(), 0u); });
    for (const auto& e : s20.events) ADD_FAILURE() << "the broadcaster: " << e.to_string();
  });
}

// ---- failure attribution ---------------------------------------------------------

/// What one sending endpoint learnt: its failures by its own numbers.
struct Attribution {
  std::uint64_t sent = 0;
  std::map<std::uint64_t, int> failed;  // message number -> times reported
  std::vector<locabus::Event> other_events;
  std::vector<locabus::Event> failure_events;
  std::uint64_t failed_count() const { return failed.size(); }
};

TEST(DaemonSim, FailuresGoToTheEndpointThatSentThemByItsOwnNumbers) {
  for_each_seed(6, [&](std::uint64_t seed) {
    DaemonSimOptions o;
    o.nodes = 3;
    o.link = lossy(seed);
    DaemonSim sim(seed, o);
    ASSERT_TRUE(sim.wait_until([&] { return sim.converged(); }, 20s)) << "the nodes never met";

    auto open = [&](std::size_t node, std::uint8_t proto) {
      locabus::EndpointOptions eo;
      eo.socket_path = sim.socket(node);
      eo.protocol = proto;
      eo.events = false;  // send_failed comes either way
      return locabus::Endpoint::open(eo);
    };
    // Node 1: protocols 20 and 21 send to node 2 (which will die), 22 to node 3.
    struct Flow {
      std::uint8_t proto;
      std::size_t to;       // node index
      std::uint64_t count;  // to node 3: in all; to node 2: after it was cut off
    };
    const std::array<Flow, 3> flows{Flow{20, 1, 300}, Flow{21, 1, 500}, Flow{22, 2, 600}};
    std::vector<locabus::Endpoint> tx, rx;
    for (const auto& f : flows) {
      tx.push_back(open(0, f.proto));
      rx.push_back(open(f.to, f.proto));
    }

    std::atomic<bool> stop{false}, cut{false};
    std::array<Attribution, 3> at;
    std::array<std::atomic<std::uint64_t>, 3> got{};
    std::array<std::atomic<bool>, 3> sender_done{};
    std::array<std::string, 3> rx_error;
    std::vector<std::unique_ptr<ClientThread>> threads;
    for (std::size_t i = 0; i < flows.size(); ++i) {
      threads.push_back(std::make_unique<ClientThread>([&, i] {
        auto& ep = tx[i];
        Attribution& a = at[i];
        const std::uint16_t to = DaemonSim::id_of(flows[i].to);
        auto events = [&] {
          while (auto e = ep.next_event()) {
            if (e->kind != LOCABUS_EV_SEND_FAILED) {
              a.other_events.push_back(*e);
              continue;
            }
            a.failure_events.push_back(*e);
            for (std::uint64_t m = e->first_message; m < e->first_message + e->count; ++m) ++a.failed[m];
          }
        };
        // To node 2: streams until it is cut off, then `count` more (all
        // of which fail), so that it dies mid-stream however the threads run.
        std::optional<std::uint64_t> limit;
        if (flows[i].to != 1) limit = flows[i].count;
        while (!stop && (!limit || a.sent < *limit)) {
          if (!limit && cut) limit = a.sent + flows[i].count;
          const auto p = sim::testing::payload(1, a.sent, 200);
          if (ep.send(to, p, 20ms) == locabus::SendStatus::ok) ++a.sent;
          events();
        }
        sender_done[i] = true;
        while (!stop) {
          events();
          std::this_thread::sleep_for(1ms);
        }
        events();
      }));
      threads.push_back(std::make_unique<ClientThread>([&, i] {
        auto& ep = rx[i];
        while (!stop) {
          auto m = ep.receive(20ms);
          if (!m) continue;
          const auto p = sim::testing::parse(m->data);
          if (rx_error[i].empty() && (m->node != 1 || !p.intact || p.index != got[i]))
            rx_error[i] = "message " + std::to_string(got[i]) + " came as index " + std::to_string(p.index);
          ++got[i];
        }
      }));
    }
    StopOnExit stopper{stop};

    // Mid-stream, node 2 goes: first node 1 -> node 2 is cut and node 2 ->
    // node 1 made clean, so that what node 2 delivered is confirmed to node 1
    // (otherwise a message could be both delivered and reported failed: its
    // confirmation lost with the node, which the daemon cannot tell from a
    // loss); then node 2 is cut off entirely until node 1 declares it dead.
    ASSERT_TRUE(sim.wait_until([&] { return got[0] >= 100 && got[1] >= 100; }, 30s))
        << "the streams to node 2 did not start";
    sim.call([&] {
      LinkParams off = lossy(seed);
      off.loss = 1;
      sim.net().set_link(sim.cluster().port_of(0), sim.cluster().port_of(1), off);
      sim.net().set_link(sim.cluster().port_of(1), sim.cluster().port_of(0), LinkParams{});
    });
    cut = true;
    // Node 2's readers have read everything its daemon took, and its
    // confirmations had time to reach node 1.
    auto taken = [&](std::size_t i) {
      const auto ep = sim.endpoint_counters(1, "proto", flows[i].proto);
      return ep.is_null() ? ~std::uint64_t{0} : ep["received"].get<std::uint64_t>();
    };
    ASSERT_TRUE(sim.wait_for_sim(300ms));
    ASSERT_TRUE(sim.wait_until([&] { return taken(0) == got[0] && taken(1) == got[1]; }, 30s))
        << "node 2's readers did not read what their daemon took";
    ASSERT_TRUE(sim.wait_for_sim(500ms));
    sim.call([&] {
      sim.net().partition({{sim.cluster().port_of(0), sim.cluster().port_of(2)}, {sim.cluster().port_of(1)}});
    });
    const std::uint64_t delivered_at_cut[2] = {got[0], got[1]};

    auto dead = [&] {
      for (const auto& e : sim.events(0))
        if (e.event.kind == engine::EventKind::dead && e.event.node == 2) return true;
      return false;
    };
    ASSERT_TRUE(sim.wait_until(dead, 30s)) << "node 1 never declared node 2 dead";
    // Every message to node 2 is now delivered or reported.
    auto settled = [&] {
      for (std::size_t i = 0; i < 2; ++i)
        if (!sender_done[i]) return false;
      return sender_done[2] && got[2] == flows[2].count;
    };
    const bool all_settled = sim.wait_until(settled, 30s);
    ASSERT_TRUE(sim.wait_for_sim(1s));  // late or repeated reports would show now
    stop = true;
    for (auto& t : threads) EXPECT_EQ(t->join(), "");
    ASSERT_TRUE(all_settled) << "senders did not finish; driver: " << sim.driver_error();

    for (std::size_t i = 0; i < 2; ++i) {
      const Attribution& a = at[i];
      SCOPED_TRACE("protocol " + std::to_string(flows[i].proto));
      EXPECT_EQ(rx_error[i], "");
      EXPECT_EQ(got[i].load(), delivered_at_cut[i]) << "node 2 received messages after it was cut off";
      EXPECT_GE(a.sent, got[i] + flows[i].count);
      for (const auto& e : a.failure_events) EXPECT_EQ(e.node, 2) << e.to_string();
      for (const auto& e : a.other_events) ADD_FAILURE() << "unexpected event " << e.to_string();
      // Its own numbers: within what it sent, each once, never one that
      // was delivered, and together with the delivered ones all of them.
      std::uint64_t twice = 0, delivered_and_failed = 0;
      for (const auto& [m, times] : a.failed) {
        if (times > 1) ++twice;
        if (m < got[i]) ++delivered_and_failed;
        EXPECT_LT(m, a.sent) << "a failure names a number this endpoint never used";
      }
      EXPECT_EQ(twice, 0u) << "messages reported failed more than once";
      EXPECT_EQ(delivered_and_failed, 0u) << "delivered messages reported failed";
      EXPECT_EQ(got[i] + a.failed_count(), a.sent)
          << got[i] << " delivered + " << a.failed_count() << " failed != " << a.sent << " sent";
      EXPECT_GE(a.failed_count(), flows[i].count) << "what was sent after node 2 was cut off must fail";
    }
    // The endpoint sending to node 3 hears nothing, and its stream is whole.
    EXPECT_EQ(rx_error[2], "");
    EXPECT_EQ(got[2].load(), flows[2].count);
    for (const auto& e : at[2].failure_events) ADD_FAILURE() << "protocol 22: " << e.to_string();
  });
}

}  // namespace
}  // namespace locabus::sim
