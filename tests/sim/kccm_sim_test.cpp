// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// KCCM in the daemon-in-simulation tier (issue 13, item 5): daemons' cores
// with the KCCM service over the simulated network with loss, reordering
// and duplication, and real liblocabus KCCM spaces in client threads
// (daemon_harness.hpp explains the two clocks). Deadlines and handler
// sleeps are real time; the failure detector runs on simulated time.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <locabus/kccm.hpp>

#include "daemon_harness.hpp"
#include "sim_test_util.hpp"

namespace locabus::sim {
namespace {

using namespace std::chrono_literals;
namespace kc = locabus::kccm;
using testing::ClientThread;
using testing::DaemonSim;
using testing::DaemonSimOptions;
using testing::for_each_seed;
using testing::lossy;

constexpr std::uint16_t kSpace = 5;
using RealClock = std::chrono::steady_clock;

kc::Space open_space(DaemonSim& sim, std::size_t index, kc::SpaceOptions o = {}) {
  o.socket_path = sim.socket(index);
  return kc::Space::open(kSpace, o);
}

std::string text_of(std::span<const std::byte> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

std::unique_ptr<DaemonSim> cluster(std::uint64_t seed, std::size_t nodes) {
  DaemonSimOptions o;
  o.nodes = nodes;
  o.link = lossy(seed);
  auto sim = std::make_unique<DaemonSim>(seed, o);
  if (!sim->wait_until([&] { return sim->converged(); }, 20s)) return nullptr;
  return sim;
}

/// "from:tag:k" payloads, so that a receiver can check order and origin.
std::string payload(std::uint16_t from, std::uint32_t tag, unsigned k) {
  return std::to_string(from) + ":" + std::to_string(tag) + ":" + std::to_string(k);
}
unsigned index_of(std::string_view p) {
  return static_cast<unsigned>(std::stoul(std::string(p.substr(p.rfind(':') + 1))));
}

// ---- send / receive -------------------------------------------------------------------

// Figure 2 (queued): messages that arrived before any receive are taken
// oldest first among those that match, and a tag filter skips others
// without reordering them.
TEST(KccmSim, AReceiveTakesTheOldestQueuedMessageThatMatches) {
  for_each_seed(3, [&](std::uint64_t seed) {
    auto sim = cluster(seed, 3);
    ASSERT_TRUE(sim) << "the nodes never met";
    const unsigned kEach = std::getenv("KE") ? std::atoi(std::getenv("KE")) : 200;
    auto rx = open_space(*sim, 0);
    {
      auto tx = open_space(*sim, 1);
      for (unsigned k = 0; k < kEach; ++k) {
        ASSERT_EQ(tx.send(1, 1, payload(2, 1, k)), SendStatus::ok);
        ASSERT_EQ(tx.send(1, 2, payload(2, 2, k)), SendStatus::ok);
      }
      ASSERT_EQ(tx.send(1, 99, "marker"), SendStatus::ok);
      // The marker came last on node 2's connection: once it is received,
      // everything before it is queued at node 1.
      auto m = rx.recv(2, 99, 30s);
      ASSERT_TRUE(m) << "the marker never arrived";
      EXPECT_EQ(m->text(), "marker");
      // tx goes away here: queued messages stay for the space's other client.
    }
    for (unsigned k = 0; k < kEach; ++k) {
      auto m = rx.recv(kc::kAnyNode, 2, 5s);
      ASSERT_TRUE(m) << "tag 2 message " << k << " missing";
      ASSERT_EQ(m->text(), payload(2, 2, k));
      ASSERT_EQ(m->node, 2);
      ASSERT_EQ(m->tag, 2u);
    }
    for (unsigned k = 0; k < kEach; ++k) {
      auto m = rx.recv(kc::kAnyNode, std::nullopt, 5s);
      ASSERT_TRUE(m) << "tag 1 message " << k << " missing";
      ASSERT_EQ(m->text(), payload(2, 1, k));
    }
    // Nothing else: a receive with nothing to take times out on time.
    const auto t0 = RealClock::now();
    EXPECT_FALSE(rx.recv(kc::kAnyNode, std::nullopt, 200ms));
    const auto waited = RealClock::now() - t0;
    EXPECT_GE(waited, 200ms);
    EXPECT_LT(waited, 1500ms);
  });
}

// Figure 3 (hand-off) with many receivers: receivers with different
// filters wait in one process before anything is sent; every message goes
// to exactly one of them, each receiver sees each (sender, tag) in order.
TEST(KccmSim, WaitingReceiversWithDifferentFiltersGetEveryMessageOnceAndInOrder) {
  for_each_seed(3, [&](std::uint64_t seed) {
    auto sim = cluster(seed, 3);
    ASSERT_TRUE(sim) << "the nodes never met";
    constexpr unsigned kEach = 150;
    auto rx = open_space(*sim, 0);
    struct Filter {
      std::uint16_t node;
      std::optional<std::uint32_t> tag;
    };
    // Overlapping on purpose: node 3's tag 11 matches two of them.
    const std::vector<Filter> filters{{2, 10}, {3, std::nullopt}, {kc::kAnyNode, 11}, {kc::kAnyNode, 11}};
    // What node 2 sends: tags 10 and 11; node 3: tags 11, 12.
    const std::size_t total = 4 * kEach;
    std::atomic<std::size_t> got{0};
    std::mutex mu;
    std::vector<std::string> errors;
    std::map<std::pair<std::uint16_t, std::uint32_t>, std::set<unsigned>> seen;
    std::vector<std::unique_ptr<ClientThread>> receivers;
    std::atomic<int> waiting{0};
    for (const Filter& f : filters) {
      receivers.push_back(std::make_unique<ClientThread>([&, f] {
        std::map<std::pair<std::uint16_t, std::uint32_t>, int> last;
        ++waiting;
        while (got < total) {
          auto m = rx.recv(f.node, f.tag, 300ms);
          if (!m) continue;
          std::lock_guard<std::mutex> lock(mu);
          if ((f.node != kc::kAnyNode && m->node != f.node) || (f.tag && m->tag != *f.tag))
            errors.push_back("a receiver got a message its filter does not match: " + std::string(m->text()));
          const unsigned k = index_of(m->text());
          int& l = last[{m->node, m->tag}];
          if (static_cast<int>(k) < l)
            errors.push_back("out of order: " + std::string(m->text()) + " after index " + std::to_string(l));
          l = static_cast<int>(k);
          if (!seen[{m->node, m->tag}].insert(k).second) errors.push_back("twice: " + std::string(m->text()));
          ++got;
        }
      }));
    }
    while (waiting < static_cast<int>(filters.size())) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(20ms);  // let them reach the waiting queue
    {
      auto n2 = open_space(*sim, 1);
      auto n3 = open_space(*sim, 2);
      ClientThread s2([&] {
        for (unsigned k = 0; k < kEach; ++k) {
          if (n2.send(1, 10, payload(2, 10, k)) != SendStatus::ok) throw std::runtime_error("send failed");
          if (n2.send(1, 11, payload(2, 11, k)) != SendStatus::ok) throw std::runtime_error("send failed");
        }
      });
      ClientThread s3([&] {
        for (unsigned k = 0; k < kEach; ++k) {
          if (n3.send(1, 11, payload(3, 11, k)) != SendStatus::ok) throw std::runtime_error("send failed");
          if (n3.send(1, 12, payload(3, 12, k)) != SendStatus::ok) throw std::runtime_error("send failed");
        }
      });
      EXPECT_EQ(s2.join(), "");
      EXPECT_EQ(s3.join(), "");
      const auto until = RealClock::now() + 60s;
      while (got < total && RealClock::now() < until) std::this_thread::sleep_for(5ms);
      // The senders stay attached until everything arrived (no send_failed).
      while (auto e = n2.next_event())
        if (e->kind == LOCABUS_EV_SEND_FAILED) ADD_FAILURE() << "node 2: " << e->to_string();
    }
    for (auto& r : receivers) EXPECT_EQ(r->join(), "");
    for (const auto& e : errors) ADD_FAILURE() << e;
    ASSERT_EQ(got.load(), total) << "driver: " << sim->driver_error();
    for (auto key : {std::pair<std::uint16_t, std::uint32_t>{2, 10}, {2, 11}, {3, 11}, {3, 12}})
      EXPECT_EQ(seen[key].size(), kEach) << "from " << key.first << " tag " << key.second;
  });
}

// Messages to this node's own space never touch the network; beyond
// endpoint_window queued, sends wait for receives (a bounded queue, like a
// pipe). Received on another Space (connection), 2.5 windows of them go
// through in order, while the queue never holds more than the window.
TEST(KccmSim, MessagesToTheOwnNodeWaitAtTheWindowAndAllArriveInOrder) {
  auto sim = cluster(1, 2);
  ASSERT_TRUE(sim) << "the nodes never met";
  const unsigned total = sim->options().endpoint_window * 5 / 2;
  auto tx = open_space(*sim, 0);
  auto rx = open_space(*sim, 0);
  ClientThread sender([&] {
    for (unsigned k = 0; k < total; ++k)
      if (tx.send(1, 3, payload(1, 3, k), 30s) != SendStatus::ok) throw std::runtime_error("send blocked");
  });
  std::size_t max_queued = 0;
  for (unsigned k = 0; k < total; ++k) {
    if (k % 64 == 0)
      max_queued = std::max<std::size_t>(max_queued, sim->call([&] {
        return sim->server(0).counters_json()["kccm"].value("queued_messages", std::size_t{0});
      }));
    auto m = rx.recv(1, 3, 10s);
    ASSERT_TRUE(m) << "message " << k << " of " << total << " never came";
    ASSERT_EQ(m->text(), payload(1, 3, k));
  }
  EXPECT_EQ(sender.join(), "");
  EXPECT_LE(max_queued, sim->options().endpoint_window);
  EXPECT_GT(max_queued, 0u) << "the queue counter was never read";
  RecordProperty("max_queued", std::to_string(max_queued));
}

// Delivered or told: a message for a space nobody attached on the node
// comes back as a send_failed event naming the send's number.
TEST(KccmSim, AMessageToASpaceNobodyAttachedIsReportedToItsSender) {
  for_each_seed(2, [&](std::uint64_t seed) {
    auto sim = cluster(seed, 2);
    ASSERT_TRUE(sim) << "the nodes never met";
    auto tx = open_space(*sim, 0);
    std::uint64_t number = ~0ull;
    ASSERT_EQ(tx.send(2, 1, std::as_bytes(std::span("x", 1)), kForever, &number), SendStatus::ok);
    std::optional<Event> failed;
    const auto until = RealClock::now() + 20s;
    while (!failed && RealClock::now() < until) {
      while (auto e = tx.next_event())
        if (e->kind == LOCABUS_EV_SEND_FAILED) failed = *e;
      std::this_thread::sleep_for(2ms);
    }
    ASSERT_TRUE(failed) << "no send_failed event for a message nobody could receive";
    EXPECT_EQ(failed->failure, LOCABUS_FAIL_NO_ENDPOINT);
    EXPECT_EQ(failed->node, 2);
    EXPECT_EQ(failed->first_message, number);
    EXPECT_EQ(failed->count, 1u);
  });
}

// ---- calls --------------------------------------------------------------------------

// Short handlers run in the listener (one thread, never a worker) and are
// not held up by long ones; long handlers run on at most `workers` threads.
// (Handler sleeps: the daemons' clock is simulated and runs faster than
// real time, so a handler that must outlast something waits for an event,
// or for simulated time, never for a real-time sleep that a daemon's
// deadline would not see.)
TEST(KccmSim, ShortHandlersRunInTheListenerAndLongOnesOnTheBoundedPool) {
  for_each_seed(
      2, [&](std::uint64_t seed) {
        auto sim = cluster(seed, 2);
        ASSERT_TRUE(sim) << "the nodes never met";
        kc::SpaceOptions so;
        so.workers = 3;
        auto server = open_space(*sim, 1, so);
        std::mutex mu;
        std::condition_variable cv;
        bool shorts_done = false;
        std::set<std::thread::id> long_threads, short_threads;
        std::atomic<int> running{0}, max_running{0};
        auto rl = server.register_handler(
            "long",
            [&](const kc::CallInfo&, std::span<const std::byte> arg) {
              const int now = ++running;
              std::unique_lock lock(mu);
              long_threads.insert(std::this_thread::get_id());
              max_running = std::max(max_running.load(), now);
              // Held until every short call has its result: the short ones
              // must not wait behind these.
              cv.wait_for(lock, 30s, [&] { return shorts_done; });
              --running;
              return std::vector<std::byte>(arg.begin(), arg.end());
            },
            kc::HandlerKind::long_running);
        auto rs = server.register_handler(
            "short",
            [&](const kc::CallInfo& info, std::span<const std::byte>) {
              std::lock_guard<std::mutex> lock(mu);
              short_threads.insert(std::this_thread::get_id());
              return kc::bytes(std::to_string(info.node));
            },
            kc::HandlerKind::short_inline);
        auto client = open_space(*sim, 0);
        kc::CallOptions o;
        o.timeout = 120s;
        std::vector<std::future<kc::Reply>> longs, shorts;
        for (int i = 0; i < 6; ++i) longs.push_back(client.call(2, "long", std::to_string(i), o));
        const auto until = RealClock::now() + 20s;
        while (running < 3 && RealClock::now() < until) std::this_thread::sleep_for(1ms);
        EXPECT_EQ(running.load(), 3) << "three workers should be busy with long calls";
        for (int i = 0; i < 20; ++i) shorts.push_back(client.call(2, "short", "", o));
        for (auto& f : shorts) {
          ASSERT_EQ(f.wait_for(20s), std::future_status::ready) << "a short call waited behind long ones";
          auto r = f.get();
          EXPECT_TRUE(r) << r.error();
          EXPECT_EQ(r.text(), "1");  // the calling node
        }
        {
          std::lock_guard<std::mutex> lock(mu);
          shorts_done = true;
        }
        cv.notify_all();
        for (int i = 0; i < 6; ++i) {
          auto r = longs[i].get();
          ASSERT_TRUE(r) << r.error();
          EXPECT_EQ(r.text(), std::to_string(i));
        }
        EXPECT_EQ(max_running.load(), 3)
            << "long handlers ran on more threads than workers, or never in parallel";
        EXPECT_LE(long_threads.size(), 3u);
        ASSERT_EQ(short_threads.size(), 1u) << "short handlers ran on more than one thread";
        EXPECT_FALSE(long_threads.contains(*short_threads.begin())) << "a short handler ran on a worker";
      });
}

// Errors are values with causes: a missing handler, a handler that throws,
// a full worker queue, a deadline.
TEST(KccmSim, CallErrorsAreValuesWithTheirCauses) {
  for_each_seed(2, [&](std::uint64_t seed) {
    auto sim = cluster(seed, 2);
    ASSERT_TRUE(sim) << "the nodes never met";
    kc::SpaceOptions so;
    so.workers = 1;
    so.queue = 2;
    auto server = open_space(*sim, 1, so);
    auto rt = server.register_handler(
        "throws", [](const kc::CallInfo&, std::span<const std::byte>) -> std::vector<std::byte> {
          throw std::runtime_error("bad input");
        });
    std::mutex mu;
    std::condition_variable cv;
    bool release = false;
    std::atomic<int> held{0};
    auto rh = server.register_handler("held", [&](const kc::CallInfo&, std::span<const std::byte>) {
      ++held;
      std::unique_lock lock(mu);
      cv.wait_for(lock, 30s, [&] { return release; });
      return kc::bytes("done");
    });
    auto rsl = server.register_handler("sleepy", [&](const kc::CallInfo&, std::span<const std::byte>) {
      std::this_thread::sleep_for(1500ms);
      return kc::bytes("late");
    });
    auto client = open_space(*sim, 0);

    auto missing = client.call(2, "nobody", "").get();
    EXPECT_EQ(missing.status, kc::Status::no_such_handler) << missing.error();
    EXPECT_EQ(missing.node, 2);

    auto threw = client.call(2, "throws", "").get();
    EXPECT_EQ(threw.status, kc::Status::handler_failed);
    EXPECT_NE(threw.message.find("bad input"), std::string::npos) << threw.message;

    // One worker, two queued: of ten calls while the worker is held, three
    // get a worker or a place in the queue, seven are overloaded at once.
    kc::CallOptions patient;
    patient.timeout = 120s;
    std::vector<std::future<kc::Reply>> burst;
    for (int i = 0; i < 10; ++i) burst.push_back(client.call(2, "held", "", patient));
    // Seven or eight come back overloaded while the worker is held (eight
    // when the third call arrives before the worker took the first from the
    // queue); the others wait. Polled, not waited for, so that nothing
    // times out meanwhile.
    std::vector<bool> answered(burst.size(), false);
    int overloaded = 0, other = 0;
    auto poll = [&] {
      for (std::size_t i = 0; i < burst.size(); ++i)
        if (!answered[i] && burst[i].wait_for(0ms) == std::future_status::ready) {
          answered[i] = true;
          auto r = burst[i].get();
          if (r.status == kc::Status::overloaded) {
            ++overloaded;
          } else {
            ++other;
            ADD_FAILURE() << "while the worker was held: " << r.error();
          }
        }
    };
    const auto until = RealClock::now() + 20s;
    while (overloaded + other < 7 && RealClock::now() < until) {
      poll();
      std::this_thread::sleep_for(1ms);
    }
    std::this_thread::sleep_for(200ms);
    poll();
    EXPECT_GE(overloaded, 7);
    EXPECT_LE(overloaded, 8);
    EXPECT_EQ(held.load(), 1) << "one worker ran more than one call at once";
    {
      std::lock_guard<std::mutex> lock(mu);
      release = true;
    }
    cv.notify_all();
    int ok = 0;
    for (std::size_t i = 0; i < burst.size(); ++i)
      if (!answered[i]) {
        auto r = burst[i].get();
        if (r)
          ++ok;
        else
          ADD_FAILURE() << r.error();
      }
    EXPECT_EQ(ok + overloaded, 10);

    // The deadline: the result would come after 1.5 s; the call ends at 300 ms.
    kc::CallOptions hasty;
    hasty.timeout = 300ms;
    const auto t0 = RealClock::now();
    auto late = client.call(2, "sleepy", "", hasty).get();
    const auto took = RealClock::now() - t0;
    EXPECT_EQ(late.status, kc::Status::deadline_exceeded) << late.error();
    EXPECT_GE(took, 300ms);
    EXPECT_LT(took, 1300ms);
  });
}

// 10,000 calls outstanding at once, to a built-in and to a client's
// handler, over lossy links: every one completes with its own result.
TEST(KccmSim, TenThousandOutstandingCallsAllComplete) {
  for_each_seed(2, [&](std::uint64_t seed) {
    auto sim = cluster(seed, 3);
    ASSERT_TRUE(sim) << "the nodes never met";
    auto server = open_space(*sim, 2);
    auto reg = server.register_handler(
        "inc",
        [](const kc::CallInfo&, std::span<const std::byte> arg) {
          return kc::bytes(std::to_string(std::stoul(text_of(arg)) + 1));
        },
        kc::HandlerKind::short_inline);
    auto client = open_space(*sim, 0);
    constexpr int kCalls = 10000;
    kc::CallOptions o;
    o.timeout = 120s;
    std::vector<std::future<kc::Reply>> calls;
    calls.reserve(kCalls);
    const auto t0 = RealClock::now();
    for (int i = 0; i < kCalls; ++i)
      calls.push_back(i % 2 ? client.call(3, "inc", std::to_string(i), o)
                            : client.call(2, "echo", std::to_string(i), o));
    int bad = 0;
    for (int i = 0; i < kCalls; ++i) {
      auto r = calls[i].get();
      const std::string want = std::to_string(i % 2 ? i + 1 : i);
      if (!r || r.text() != want) {
        if (++bad <= 5) ADD_FAILURE() << "call " << i << ": " << (r ? std::string(r.text()) : r.error());
      }
    }
    const auto took = RealClock::now() - t0;
    EXPECT_EQ(bad, 0);
    EXPECT_LT(took, 90s) << "10,000 calls took too long";
    RecordProperty("real_ms",
                   std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  });
}

// A call to every node gathers one reply per node; a node that does not
// answer by the deadline is listed as missing.
TEST(KccmSim, ACallToEveryNodeGathersEveryReplyAndNamesTheSilentOnes) {
  for_each_seed(2, [&](std::uint64_t seed) {
    auto sim = cluster(seed, 3);
    ASSERT_TRUE(sim) << "the nodes never met";
    auto client = open_space(*sim, 0);
    auto all = client.call_all("node.info", "").get();
    ASSERT_EQ(all.replies.size(), 3u);
    EXPECT_TRUE(all.missing.empty());
    for (std::size_t i = 0; i < all.replies.size(); ++i) {
      const auto& r = all.replies[i];
      ASSERT_TRUE(r) << r.error();
      const auto j = nlohmann::json::parse(r.text());
      EXPECT_EQ(j.at("node").get<int>(), r.node);
      EXPECT_EQ(r.node, DaemonSim::id_of(i));
    }
    // A handler only node 2 has: the others answer no_such_handler.
    auto server = open_space(*sim, 1);
    auto reg = server.register_handler(
        "only2", [](const kc::CallInfo&, std::span<const std::byte>) { return kc::bytes("here"); });
    auto some = client.call_all("only2", "").get();
    ASSERT_EQ(some.replies.size(), 3u);
    for (const auto& r : some.replies)
      EXPECT_EQ(r.status, r.node == 2 ? kc::Status::ok : kc::Status::no_such_handler) << r.error();

    // Node 3 silent (crashed, not yet declared dead): it is missing or failed, the others answer.
    sim->call([&] { sim->crash(2); });
    kc::CallOptions o;
    o.timeout = 500ms;
    auto partial = client.call_all("echo", "x", o).get();
    int ok = 0;
    for (const auto& r : partial.replies) {
      if (r)
        ++ok;
      else
        EXPECT_EQ(r.node, 3) << r.error();
    }
    EXPECT_EQ(ok, 2);
    const bool node3_named = std::count(partial.missing.begin(), partial.missing.end(), 3) == 1 ||
                             std::any_of(partial.replies.begin(), partial.replies.end(),
                                         [](const kc::Reply& r) { return r.node == 3 && !r; });
    EXPECT_TRUE(node3_named) << "node 3 neither answered nor was listed";
  });
}

// A node killed mid-call fails every call pending on it with node_dead
// within the failure detector's time; once it is back (a new daemon, the
// handler's process attached again) the same caller's calls succeed.
TEST(KccmSim, ANodeKilledMidCallFailsItsCallsAndCallsSucceedAgainAfterItsRestart) {
  for_each_seed(2, [&](std::uint64_t seed) {
    auto sim = cluster(seed, 3);
    ASSERT_TRUE(sim) << "the nodes never met";
    const engine::Nanos dead_after = sim->options().engine.dead_after;
    std::atomic<int> started{0};
    auto slow = [&](const kc::CallInfo&, std::span<const std::byte>) {
      ++started;
      std::this_thread::sleep_for(2s);
      return kc::bytes("done");
    };
    std::optional<kc::Space> server(open_space(*sim, 2));
    auto reg = server->register_handler("slow", slow);
    auto client = open_space(*sim, 0);
    kc::CallOptions o;
    o.timeout = 120s;  // the detector, not the deadline, must end them
    std::vector<std::future<kc::Reply>> calls;
    for (int i = 0; i < 8; ++i) calls.push_back(client.call(3, "slow", "", o));
    const auto until = RealClock::now() + 20s;
    while (started == 0 && RealClock::now() < until) std::this_thread::sleep_for(1ms);
    ASSERT_GT(started.load(), 0) << "the handler never ran";

    const engine::Nanos crashed_at = sim->call([&] {
      sim->crash(2);
      return sim->now();
    });
    engine::Nanos last_failed{0};
    for (auto& f : calls) {
      ASSERT_EQ(f.wait_for(60s), std::future_status::ready) << "a call to a dead node hung";
      auto r = f.get();
      last_failed = std::max(last_failed, sim->call([&] { return sim->now(); }));
      EXPECT_EQ(r.status, kc::Status::node_dead) << r.error();
      EXPECT_EQ(r.node, 3);
    }
    EXPECT_LE(last_failed - crashed_at, dead_after + 1s)
        << "calls failed " << std::chrono::duration<double>(last_failed - crashed_at).count()
        << " s (simulated) after the crash; dead_after is "
        << std::chrono::duration<double>(dead_after).count() << " s";
    reg.release();
    server.reset();  // its daemon is gone; waits for the sleeping handlers

    sim->call([&] { sim->restart(2); });
    ASSERT_TRUE(sim->wait_until([&] { return sim->converged(); }, 30s)) << "node 3 never came back";
    auto server2 = open_space(*sim, 2);
    auto reg2 = server2.register_handler("fast", [](const kc::CallInfo&, std::span<const std::byte> a) {
      return std::vector<std::byte>(a.begin(), a.end());
    });
    // The same caller, without reopening anything.
    std::optional<kc::Reply> good;
    std::set<kc::Status> seen;
    const auto until2 = RealClock::now() + 30s;
    while (RealClock::now() < until2) {
      auto r = client.call(3, "fast", "again").get();
      if (r) {
        good = r;
        break;
      }
      seen.insert(r.status);
      std::this_thread::sleep_for(20ms);
    }
    ASSERT_TRUE(good) << "calls to the restarted node never succeeded";
    EXPECT_EQ(good->text(), "again");
    for (kc::Status s : seen)
      EXPECT_TRUE(s == kc::Status::node_dead || s == kc::Status::node_restarted ||
                  s == kc::Status::no_such_node || s == kc::Status::no_such_handler)
          << "while node 3 came back: " << kc::to_string(s);
  });
}

}  // namespace
}  // namespace locabus::sim
