// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus's KCCM process side without a daemon: the bookkeeping
// (client/kccm_core.hpp: pending calls, deadlines, failure mapping,
// call_all() gathering, waiters, acks, events), then a real Space against a
// fake daemon in this process that plays the record protocol of
// docs/KCCM.md on the rings (calls, results, receives and cancels,
// handlers short and long, overload, the daemon going away, a full ring).
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <future>
#include <latch>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <locabus/locabus.h>
#include <locabus/wire.h>
#include <locabus/kccm.hpp>
#include <nlohmann/json.hpp>

#include "api/control.hpp"
#include "api/shm.hpp"
#include "client/kccm_core.hpp"
#include "common/unique_fd.hpp"
#include "fake_daemon.hpp"

namespace {

using namespace std::chrono_literals;
using locabus::kccm::BroadcastReply;
using locabus::kccm::kAnyNode;
using locabus::kccm::Reply;
using locabus::kccm::Status;
using locabus::kccm_internal::CallKind;
using locabus::kccm_internal::CallSink;
using locabus::kccm_internal::Clock;
using locabus::kccm_internal::Completion;
using locabus::kccm_internal::PendingCalls;

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}
std::string text_of(std::span<const std::byte> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// Sinks that keep what they were given.
struct Collected {
  std::vector<Reply> replies;
  std::vector<BroadcastReply> broadcasts;
  CallSink single() {
    return {[this](Reply r) { replies.push_back(std::move(r)); }, {}};
  }
  CallSink all() {
    return {{}, [this](BroadcastReply r) { broadcasts.push_back(std::move(r)); }};
  }
};

void run(std::vector<Completion> done) {
  for (auto& c : done) c.run();
}

locabus_event event(int kind, std::uint16_t node, int failure = 0, std::uint64_t first = 0,
                    std::uint64_t count = 0) {
  locabus_event e{};
  e.kind = static_cast<std::uint8_t>(kind);
  e.node = node;
  e.failure = static_cast<std::uint8_t>(failure);
  e.first_message = first;
  e.count = count;
  return e;
}

// ---- the bookkeeping ---------------------------------------------------------------------

TEST(KccmPendingCalls, DeadlinesExpireInOrderWithTheTimeoutInTheMessage) {
  PendingCalls p;
  Collected got;
  const auto t0 = Clock::now();
  const auto a = p.add(CallKind::single, 2, "a", t0, 1000ms, got.single());
  const auto b = p.add(CallKind::single, 3, "b", t0, 300ms, got.single());
  p.add(CallKind::oneway, 4, "c", t0, 200ms, got.single());
  EXPECT_EQ(a, 1U);
  EXPECT_EQ(b, 2U);
  ASSERT_TRUE(p.next_deadline());
  EXPECT_EQ(*p.next_deadline(), t0 + 200ms);
  EXPECT_TRUE(p.expire(t0 + 199ms).empty());
  // The post goes silently (nothing to report), then b.
  run(p.expire(t0 + 300ms));
  ASSERT_EQ(got.replies.size(), 1U);
  EXPECT_EQ(got.replies[0].node, 3);
  EXPECT_EQ(got.replies[0].status, Status::deadline_exceeded);
  EXPECT_EQ(got.replies[0].error(), "node 3: deadline_exceeded: no result within 300 ms");
  EXPECT_EQ(p.size(), 1U);
  run(p.expire(t0 + 10s));
  ASSERT_EQ(got.replies.size(), 2U);
  EXPECT_EQ(got.replies[1].node, 2);
  EXPECT_EQ(p.size(), 0U);
  EXPECT_FALSE(p.next_deadline());
}

TEST(KccmPendingCalls, AResultEndsItsCallAndALateOneIsCounted) {
  PendingCalls p;
  Collected got;
  const auto id = p.add(CallKind::single, 2, "sum", Clock::now(), 1s, got.single());
  p.set_record(id, 7);
  EXPECT_EQ(p.records(), 1U);
  run(p.on_result(id, 2, Status::ok, bytes_of("6")));
  ASSERT_EQ(got.replies.size(), 1U);
  EXPECT_TRUE(got.replies[0]);
  EXPECT_EQ(got.replies[0].text(), "6");
  EXPECT_EQ(p.records(), 0U) << "the record number is forgotten with the call";
  EXPECT_TRUE(p.on_result(id, 2, Status::ok, bytes_of("6")).empty());
  EXPECT_EQ(p.unmatched(), 1U);
  // An error's body is its sentence (a trailing NUL is not part of it).
  const auto id2 = p.add(CallKind::single, 2, "sum", Clock::now(), 1s, got.single());
  run(p.on_result(id2, 2, Status::handler_failed,
                  bytes_of(std::string_view("handler sum threw: bad\0", 23))));
  ASSERT_EQ(got.replies.size(), 2U);
  EXPECT_FALSE(got.replies[1]);
  EXPECT_TRUE(got.replies[1].data.empty());
  EXPECT_EQ(got.replies[1].message, "handler sum threw: bad");
}

TEST(KccmPendingCalls, MembershipEventsFailTheCallsToTheirNodeOnly) {
  PendingCalls p;
  Collected got;
  const auto t0 = Clock::now();
  p.add(CallKind::single, 2, "a", t0, 1s, got.single());
  p.add(CallKind::single, 2, "b", t0, 1s, got.single());
  p.add(CallKind::single, 3, "c", t0, 1s, got.single());
  p.add(CallKind::oneway, 2, "d", t0, 1s, got.single());
  EXPECT_TRUE(p.on_membership(event(LOCABUS_EV_JOINED, 2)).empty());
  EXPECT_TRUE(p.on_membership(event(LOCABUS_EV_SUSPECT, 2)).empty());
  run(p.on_membership(event(LOCABUS_EV_DEAD, 2)));
  ASSERT_EQ(got.replies.size(), 2U);
  for (const auto& r : got.replies) {
    EXPECT_EQ(r.node, 2);
    EXPECT_EQ(r.status, Status::node_dead);
    EXPECT_EQ(r.message, "node 2 was declared dead during the call");
  }
  EXPECT_EQ(p.size(), 2U) << "the call to 3 and the post remain";
  run(p.on_membership(event(LOCABUS_EV_RESTARTED, 3)));
  ASSERT_EQ(got.replies.size(), 3U);
  EXPECT_EQ(got.replies[2].status, Status::node_restarted);
  run(p.on_membership(event(LOCABUS_EV_DISCONNECTED, 2, LOCABUS_FAIL_UNREACHABLE)));
  EXPECT_EQ(got.replies.size(), 3U) << "a post fails only by what the daemon reports";
  EXPECT_EQ(p.size(), 1U);
}

TEST(KccmPendingCalls, AConnectionClosedByARestartFailsCallsWithNodeRestarted) {
  PendingCalls p;
  Collected got;
  const auto t0 = Clock::now();
  p.add(CallKind::single, 2, "a", t0, 1s, got.single());
  p.add(CallKind::single, 3, "b", t0, 1s, got.single());
  run(p.on_membership(event(LOCABUS_EV_DISCONNECTED, 2, LOCABUS_FAIL_PEER_RESTARTED)));
  run(p.on_membership(event(LOCABUS_EV_DISCONNECTED, 3, LOCABUS_FAIL_PEER_DEAD)));
  ASSERT_EQ(got.replies.size(), 2U);
  EXPECT_EQ(got.replies[0].status, Status::node_restarted);
  EXPECT_EQ(got.replies[0].message, "node 2 restarted during the call");
  EXPECT_EQ(got.replies[1].status, Status::node_dead);
}

TEST(KccmPendingCalls, SendFailedMapsRecordNumbersToCalls) {
  PendingCalls p;
  Collected got;
  const auto t0 = Clock::now();
  const auto a = p.add(CallKind::single, 9, "a", t0, 1s, got.single());
  const auto b = p.add(CallKind::single, 9, "b", t0, 1s, got.single());
  const auto c = p.add(CallKind::oneway, 9, "c", t0, 1s, got.single());
  p.set_record(a, 3);
  p.set_record(b, 5);
  p.set_record(c, 6);
  bool only_calls = true;
  // Records 4..5: 4 was a message (not a call), 5 is b.
  run(p.on_send_failed(event(LOCABUS_EV_SEND_FAILED, 9, LOCABUS_FAIL_UNKNOWN_NODE, 4, 2), &only_calls));
  EXPECT_FALSE(only_calls) << "record 4 is the application's";
  ASSERT_EQ(got.replies.size(), 1U);
  EXPECT_EQ(got.replies[0].status, Status::no_such_node);
  EXPECT_EQ(got.replies[0].message, "the call to node 9 could not be delivered: unknown_node");
  run(p.on_send_failed(event(LOCABUS_EV_SEND_FAILED, 9, LOCABUS_FAIL_ENDPOINT_CLOSED, 6, 1), &only_calls));
  EXPECT_TRUE(only_calls);
  ASSERT_EQ(got.replies.size(), 2U) << "a post's failure is reported";
  EXPECT_EQ(got.replies[1].status, Status::handler_exited);
  run(p.on_send_failed(event(LOCABUS_EV_SEND_FAILED, 9, LOCABUS_FAIL_PEER_RESTARTED, 3, 1), &only_calls));
  EXPECT_TRUE(only_calls);
  ASSERT_EQ(got.replies.size(), 3U);
  EXPECT_EQ(got.replies[2].status, Status::node_restarted);
  EXPECT_EQ(p.size(), 0U);
  EXPECT_EQ(p.records(), 0U);
}

TEST(KccmPendingCalls, SendFailuresMapAsDocumented) {
  using locabus::kccm_internal::status_of_send_failure;
  EXPECT_EQ(status_of_send_failure(LOCABUS_FAIL_PEER_RESTARTED), Status::node_restarted);
  EXPECT_EQ(status_of_send_failure(LOCABUS_FAIL_UNKNOWN_NODE), Status::no_such_node);
  EXPECT_EQ(status_of_send_failure(LOCABUS_FAIL_INVALID_NODE), Status::no_such_node);
  EXPECT_EQ(status_of_send_failure(LOCABUS_FAIL_ENDPOINT_CLOSED), Status::handler_exited);
  for (int f :
       {LOCABUS_FAIL_UNREACHABLE, LOCABUS_FAIL_PEER_DEAD, LOCABUS_FAIL_PEER_LEFT, LOCABUS_FAIL_PEER_RESET,
        LOCABUS_FAIL_NO_ENDPOINT, LOCABUS_FAIL_DROPPED, LOCABUS_FAIL_CONNECTION_CLOSED})
    EXPECT_EQ(status_of_send_failure(f), Status::node_dead) << f;
}

TEST(KccmPendingCalls, CallAllGathersOneReplyPerNodeAndNamesTheMissing) {
  PendingCalls p;
  Collected got;
  const auto t0 = Clock::now();
  const auto id = p.add(CallKind::broadcast, kAnyNode, "echo", t0, 500ms, got.all());
  const std::uint16_t nodes[] = {3, 1, 2, 4};
  EXPECT_TRUE(p.on_started(id, nodes).empty());
  run(p.on_result(id, 1, Status::ok, bytes_of("one")));
  run(p.on_result(id, 3, Status::no_such_handler, bytes_of("no echo here")));
  run(p.on_membership(event(LOCABUS_EV_DEAD, 4)));
  EXPECT_TRUE(got.broadcasts.empty()) << "node 2 has not answered";
  run(p.expire(t0 + 500ms));
  ASSERT_EQ(got.broadcasts.size(), 1U);
  const auto& b = got.broadcasts[0];
  ASSERT_EQ(b.replies.size(), 3U);
  EXPECT_EQ(b.replies[0].node, 1);  // ordered by node
  EXPECT_EQ(b.replies[0].text(), "one");
  EXPECT_EQ(b.replies[1].node, 3);
  EXPECT_EQ(b.replies[1].status, Status::no_such_handler);
  EXPECT_EQ(b.replies[2].node, 4);
  EXPECT_EQ(b.replies[2].status, Status::node_dead);
  EXPECT_EQ(b.missing, std::vector<std::uint16_t>{2});
  EXPECT_FALSE(b.all_ok());
  EXPECT_EQ(p.size(), 0U);

  // Complete before the deadline: at the last answer.
  const auto id2 = p.add(CallKind::broadcast, kAnyNode, "echo", t0, 500ms, got.all());
  const std::uint16_t two[] = {1, 2};
  run(p.on_started(id2, two));
  run(p.on_result(id2, 2, Status::ok, bytes_of("b")));
  EXPECT_EQ(got.broadcasts.size(), 1U);
  run(p.on_result(id2, 2, Status::ok, bytes_of("again")));
  EXPECT_EQ(p.unmatched(), 1U) << "a second answer from one node";
  run(p.on_result(id2, 1, Status::ok, bytes_of("a")));
  ASSERT_EQ(got.broadcasts.size(), 2U);
  EXPECT_TRUE(got.broadcasts[1].all_ok());
  EXPECT_EQ(got.broadcasts[1].replies.size(), 2U);
  EXPECT_TRUE(got.broadcasts[1].missing.empty());
}

TEST(KccmPendingCalls, ABroadcastTheDaemonNeverStartedFailsAsAWhole) {
  PendingCalls p;
  Collected got;
  const auto t0 = Clock::now();
  p.add(CallKind::broadcast, kAnyNode, "echo", t0, 100ms, got.all());
  run(p.expire(t0 + 100ms));
  ASSERT_EQ(got.broadcasts.size(), 1U);
  ASSERT_EQ(got.broadcasts[0].replies.size(), 1U);
  EXPECT_EQ(got.broadcasts[0].replies[0].node, kAnyNode);
  EXPECT_EQ(got.broadcasts[0].replies[0].status, Status::deadline_exceeded);
  EXPECT_FALSE(got.broadcasts[0].all_ok());
  // A CallStarted for it now is late.
  const std::uint16_t n[] = {1};
  EXPECT_TRUE(p.on_started(1, n).empty());
  EXPECT_EQ(p.unmatched(), 1U);
}

TEST(KccmPendingCalls, FailAllEndsEveryCallAndDropsPosts) {
  PendingCalls p;
  Collected got;
  const auto t0 = Clock::now();
  p.add(CallKind::single, 2, "a", t0, 1s, got.single());
  p.add(CallKind::oneway, 2, "b", t0, 1s, got.single());
  const auto all = p.add(CallKind::broadcast, kAnyNode, "c", t0, 1s, got.all());
  const std::uint16_t nodes[] = {1, 2};
  run(p.on_started(all, nodes));
  run(p.on_result(all, 1, Status::ok, {}));
  run(p.fail_all(Status::disconnected, "gone"));
  ASSERT_EQ(got.replies.size(), 1U);
  EXPECT_EQ(got.replies[0].status, Status::disconnected);
  ASSERT_EQ(got.broadcasts.size(), 1U);
  ASSERT_EQ(got.broadcasts[0].replies.size(), 2U);
  EXPECT_EQ(got.broadcasts[0].replies[1].status, Status::disconnected);
  EXPECT_TRUE(got.broadcasts[0].missing.empty());
  EXPECT_EQ(p.size(), 0U);
  EXPECT_FALSE(p.next_deadline());
}

TEST(KccmWaiters, AMessageBeforeTheCancelWinsAndTheCancelIsIgnored) {
  locabus::kccm_internal::Waiters w;
  auto a = w.add();
  auto b = w.add();
  EXPECT_EQ(a->id, 1U);
  EXPECT_EQ(b->id, 2U);
  locabus::kccm::Received m;
  m.node = 2;
  m.tag = 7;
  EXPECT_TRUE(w.on_message(1, m));
  EXPECT_FALSE(w.on_cancelled(1));
  EXPECT_EQ(a->state, locabus::kccm_internal::WaiterSlot::State::message);
  EXPECT_TRUE(w.on_cancelled(2));
  EXPECT_FALSE(w.on_message(2, m)) << "after Cancelled nothing may come";
  EXPECT_EQ(w.orphans(), 1U);
  auto c = w.add();
  w.disconnect_all();
  EXPECT_EQ(c->state, locabus::kccm_internal::WaiterSlot::State::disconnected);
  EXPECT_EQ(a->state, locabus::kccm_internal::WaiterSlot::State::message)
      << "an answered one keeps its answer";
  w.remove(1);
  w.remove(2);
  w.remove(3);
  EXPECT_EQ(w.size(), 0U);
}

TEST(KccmWaiters, AnAbandonedReceivesLateMessageIsKeptForTheNextMatchingReceive) {
  locabus::kccm_internal::Waiters w;
  auto a = w.add();
  auto b = w.add();
  w.abandon(a->id);
  w.abandon(b->id);
  EXPECT_EQ(w.size(), 0U);
  EXPECT_EQ(w.abandoned(), 2U);
  locabus::kccm::Received m;
  m.node = 3;
  m.tag = 9;
  EXPECT_TRUE(w.on_message(a->id, m));  // handed over before the cancel arrived
  EXPECT_TRUE(w.on_cancelled(a->id));
  EXPECT_TRUE(w.on_cancelled(b->id));  // b got nothing
  EXPECT_EQ(w.abandoned(), 0U);
  EXPECT_EQ(w.kept(), 1U);
  EXPECT_EQ(w.orphans(), 0U) << "nothing was lost";
  EXPECT_FALSE(w.take_kept(2, std::nullopt)) << "another node's filter";
  EXPECT_FALSE(w.take_kept(LOCABUS_KCCM_ANY_NODE, 8)) << "another tag";
  auto got = w.take_kept(LOCABUS_KCCM_ANY_NODE, 9);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->node, 3);
  EXPECT_EQ(w.kept(), 0U);
  // After its Cancelled, an abandoned receive's id is forgotten: a message
  // for it now is a daemon bug, counted, not kept.
  EXPECT_FALSE(w.on_message(b->id, m));
  EXPECT_EQ(w.orphans(), 1U);
  EXPECT_EQ(w.kept(), 0U);
}

TEST(KccmAcks, AcksAnswerRequestsInOrder) {
  locabus::kccm_internal::Acks acks;
  auto a = std::make_shared<locabus::kccm_internal::AckSlot>();
  auto b = std::make_shared<locabus::kccm_internal::AckSlot>();
  auto c = std::make_shared<locabus::kccm_internal::AckSlot>();
  acks.push(a);
  acks.push(b);
  acks.push(c);
  EXPECT_TRUE(acks.on_ack(0, ""));
  EXPECT_TRUE(acks.on_ack(EEXIST, "handler x is already registered"));
  EXPECT_TRUE(a->done);
  EXPECT_EQ(a->err, 0);
  EXPECT_EQ(b->err, EEXIST);
  EXPECT_EQ(b->text, "handler x is already registered");
  EXPECT_FALSE(c->done);
  acks.disconnect_all();
  EXPECT_TRUE(c->done);
  EXPECT_EQ(c->err, ENOTCONN);
  EXPECT_FALSE(acks.on_ack(0, "")) << "nothing waits";
}

TEST(KccmEventQueue, KeepsTheNewestUpToItsCapacity) {
  locabus::kccm_internal::EventQueue q(3);
  for (std::uint16_t n = 1; n <= 5; ++n) {
    locabus::Event e;
    static_cast<locabus_event&>(e) = event(LOCABUS_EV_JOINED, n);
    q.push(e);
  }
  EXPECT_EQ(q.size(), 3U);
  EXPECT_EQ(q.dropped(), 2U);
  EXPECT_EQ(q.pop()->node, 3);
  EXPECT_EQ(q.pop()->node, 4);
  EXPECT_EQ(q.pop()->node, 5);
  EXPECT_FALSE(q.pop());
}

TEST(KccmNames, StatusNamesAndErrors) {
  EXPECT_EQ(locabus::kccm::to_string(Status::deadline_exceeded), "deadline_exceeded");
  EXPECT_STREQ(locabus_kccm_status_name(LOCABUS_KCCM_HANDLER_EXITED), "handler_exited");
  EXPECT_STREQ(locabus_kccm_status_name(99), "unknown");
  Reply r;
  r.node = 2;
  r.status = Status::overloaded;
  EXPECT_EQ(r.error(), "node 2: overloaded");
  BroadcastReply empty;
  EXPECT_FALSE(empty.all_ok()) << "no answer is not success";
}

// ---- a Space against a fake daemon -------------------------------------------------------

using locabus::UniqueFd;
using locabus::api::Doorbell;
using locabus::api::RingProducer;
using locabus::api::SharedRegion;

struct Rec {
  std::uint16_t type = 0;
  std::uint16_t aux = 0;
  std::vector<std::byte> payload;
  template <typename T>
  T header() const {
    T h{};
    EXPECT_GE(payload.size(), sizeof h);
    std::memcpy(&h, payload.data(), std::min(sizeof h, payload.size()));
    return h;
  }
  std::string tail(std::size_t from) const {
    return from >= payload.size() ? std::string() : text_of(std::span(payload).subspan(from));
  }
};

/// Answers one "open" of a KCCM space with a region and a doorbell, then
/// reads what the client writes and writes what the test says.
class FakeDaemon : public locabus::testing::FakeDaemon {
 public:
  using locabus::testing::FakeDaemon::FakeDaemon;
  using locabus::testing::FakeDaemon::write;

  /// Answers the next "open" (a client connecting in another thread).
  void serve_once(nlohmann::json reply = {{"ok", true}, {"node_id", 1}, {"space", 42}, {"max_data", 65440}}) {
    serve(reply);
  }

  locabus::kccm::Space open(locabus::kccm::SpaceOptions o = {},
                            nlohmann::json reply = {
                                {"ok", true}, {"node_id", 1}, {"space", 42}, {"max_data", 65440}}) {
    std::thread t([&] { serve(reply); });
    o.socket_path = path();
    struct Join {
      std::thread& t;
      ~Join() { t.join(); }
    } join{t};
    return locabus::kccm::Space::open(42, o);
  }

  /// The next record the client wrote, waiting up to `timeout`.
  std::optional<Rec> next(std::chrono::milliseconds timeout = 2000ms) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto& in = consumer();
    for (;;) {
      std::optional<Rec> got;
      auto r = in.read(1, [&](std::uint16_t type, std::uint16_t aux, std::span<const std::byte> p) {
        got = Rec{type, aux, {p.begin(), p.end()}};
      });
      EXPECT_TRUE(r);
      if (r.wake_producer) bell().ring();
      if (got) return got;
      if (in.release()) bell().ring();
      if (!in.prepare_sleep()) continue;
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{bell().fd(), POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
      bell().drain();
    }
  }

  template <typename T>
  bool write(std::uint16_t type, std::uint16_t aux, const T& h, std::string_view body = {}) {
    return write(type, aux, std::as_bytes(std::span(&h, 1)), bytes_of(body));
  }
  void ack(int err, std::string_view text = {}) {
    locabus::api::KccmAck a{err, 0};
    ASSERT_TRUE(write(locabus::api::kRecordKccmAck, 0, a, text));
  }
  void result(std::uint64_t call_id, std::uint16_t node, Status st, std::string_view body) {
    locabus::api::KccmResultHeader h{};
    h.call_id = call_id;
    h.status = static_cast<std::uint8_t>(st);
    ASSERT_TRUE(write(locabus::api::kRecordKccmResult, node, h, body));
  }
  void event(const locabus_event& e) { ASSERT_TRUE(write(locabus::api::kRecordEvent, e.node, e)); }
  void invoke(std::uint64_t ref, std::string_view name, std::string_view arg,
              std::uint32_t deadline_ms = 1000, std::uint8_t flags = 0, std::uint16_t from = 2) {
    locabus::api::KccmInvokeHeader h{};
    h.ref = ref;
    h.deadline_ms = deadline_ms;
    h.flags = flags;
    h.name_len = static_cast<std::uint8_t>(name.size());
    std::string body = std::string(name) + std::string(arg);
    ASSERT_TRUE(write(locabus::api::kRecordKccmInvoke, from, h, body));
  }
};

// Collects the library's log lines.
struct Log {
  std::mutex mu;
  std::vector<std::string> lines;
  std::function<void(std::string_view)> sink() {
    return [this](std::string_view s) {
      std::lock_guard lk(mu);
      lines.emplace_back(s);
    };
  }
  std::size_t count(std::string_view needle) {
    std::lock_guard lk(mu);
    return std::count_if(lines.begin(), lines.end(),
                         [&](const std::string& l) { return l.find(needle) != l.npos; });
  }
};

TEST(KccmSpace, OpensWithTheKccmRequestAndRefusesSmallRingsAndOldDaemons) {
  {
    FakeDaemon d;
    auto s = d.open();
    EXPECT_EQ(d.request()["kccm"], 42);
    EXPECT_EQ(d.request()["events"], true);
    EXPECT_EQ(d.request()["op"], "open");
    EXPECT_EQ(s.node_id(), 1);
    EXPECT_EQ(s.space(), 42);
    EXPECT_TRUE(s.connected());
  }
  {
    FakeDaemon d(65536);  // max payload 16,376 < a 64 KB call
    try {
      d.open();
      ADD_FAILURE() << "opened over rings too small for KCCM";
    } catch (const locabus::ClientError& e) {
      EXPECT_EQ(e.code(), EMSGSIZE);
      EXPECT_NE(std::string(e.what()).find("ring_bytes"), std::string::npos) << e.what();
    }
  }
  {
    FakeDaemon d;
    try {
      d.open({}, {{"ok", true}, {"node_id", 1}, {"proto", 16}});
      ADD_FAILURE() << "a reply without \"space\" was taken";
    } catch (const locabus::ClientError& e) {
      EXPECT_EQ(e.code(), EPROTO);
    }
  }
}

TEST(KccmSpace, ACallTravelsAsARecordAndItsResultFulfilsTheFuture) {
  FakeDaemon d;
  auto s = d.open();
  std::uint64_t no = 99;
  ASSERT_EQ(s.send(3, 7, bytes_of("hello"), locabus::kForever, &no), locabus::SendStatus::ok);
  EXPECT_EQ(no, 0U) << "records are numbered from 0";
  auto send = d.next();
  ASSERT_TRUE(send);
  EXPECT_EQ(send->type, locabus::api::kRecordKccmSend);
  EXPECT_EQ(send->aux, 3);
  EXPECT_EQ(send->header<locabus::api::KccmTagHeader>().tag, 7U);
  EXPECT_EQ(send->tail(8), "hello");

  auto f = s.call(2, "sum", "1 2 3", {1500ms});
  auto call = d.next();
  ASSERT_TRUE(call);
  EXPECT_EQ(call->type, locabus::api::kRecordKccmCall);
  EXPECT_EQ(call->aux, 2);
  const auto h = call->header<locabus::api::KccmCallHeader>();
  EXPECT_EQ(h.deadline_ms, 1500U);
  EXPECT_EQ(h.flags, 0);
  EXPECT_EQ(h.name_len, 3);
  EXPECT_EQ(call->tail(sizeof h), "sum1 2 3");
  d.result(h.call_id, 2, Status::ok, "6");
  ASSERT_EQ(f.wait_for(2s), std::future_status::ready);
  auto r = f.get();
  EXPECT_TRUE(r) << r.error();
  EXPECT_EQ(r.node, 2);
  EXPECT_EQ(r.text(), "6");

  // Record 2 (this call) fails as unknown_node: no_such_node, and the event
  // is the call's alone (next_event() does not show it); record 0's does.
  auto g = s.call(9, "sum", "");
  ASSERT_TRUE(d.next());
  d.event(event(LOCABUS_EV_SEND_FAILED, 9, LOCABUS_FAIL_UNKNOWN_NODE, 2, 1));
  d.event(event(LOCABUS_EV_SEND_FAILED, 3, LOCABUS_FAIL_NO_ENDPOINT, 0, 1));
  ASSERT_EQ(g.wait_for(2s), std::future_status::ready);
  EXPECT_EQ(g.get().status, Status::no_such_node);
  std::optional<locabus::Event> e;
  for (int i = 0; i < 200 && !(e = s.next_event()); ++i) std::this_thread::sleep_for(5ms);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->first_message, 0U);
  EXPECT_EQ(e->node, 3);
  EXPECT_FALSE(s.next_event());
}

TEST(KccmSpace, ACallWithoutAnswerFailsAtItsDeadline) {
  FakeDaemon d;
  auto s = d.open();
  const auto t0 = std::chrono::steady_clock::now();
  auto f = s.call(2, "slow", "", {80ms});
  ASSERT_TRUE(d.next());
  ASSERT_EQ(f.wait_for(3s), std::future_status::ready);
  const auto took = std::chrono::steady_clock::now() - t0;
  const auto r = f.get();
  EXPECT_EQ(r.status, Status::deadline_exceeded);
  EXPECT_EQ(r.error(), "node 2: deadline_exceeded: no result within 80 ms");
  EXPECT_GE(took, 80ms);
  EXPECT_LT(took, 80ms + 500ms) << "the listener sleeps until the nearest deadline";
}

TEST(KccmSpace, ARecvThatTimesOutCancelsAndTakesAMessageHandedOverMeanwhile) {
  FakeDaemon d;
  auto s = d.open();
  const auto t0 = std::chrono::steady_clock::now();
  auto got = std::async(std::launch::async, [&] { return s.recv(kAnyNode, 7, 100ms); });
  auto rec = d.next();
  ASSERT_TRUE(rec);
  ASSERT_EQ(rec->type, locabus::api::kRecordKccmRecv);
  const auto req = rec->header<locabus::api::KccmRecvRequest>();
  EXPECT_EQ(req.node, kAnyNode);
  EXPECT_EQ(req.tag, 7U);
  EXPECT_EQ(req.flags, 0);
  auto cancel = d.next();
  ASSERT_TRUE(cancel);
  ASSERT_EQ(cancel->type, locabus::api::kRecordKccmCancel);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 100ms);
  EXPECT_EQ(cancel->header<locabus::api::KccmWaiter>().waiter, req.waiter);
  // The daemon had handed a message over: it comes before the Cancelled.
  locabus::api::KccmMessageHeader m{req.waiter, 7, 0};
  ASSERT_TRUE(d.write(locabus::api::kRecordKccmMessage, 5, m, "late"));
  locabus::api::KccmWaiter w{req.waiter};
  ASSERT_TRUE(d.write(locabus::api::kRecordKccmCancelled, 0, w));
  ASSERT_EQ(got.wait_for(2s), std::future_status::ready);
  auto msg = got.get();
  ASSERT_TRUE(msg);
  EXPECT_EQ(msg->node, 5);
  EXPECT_EQ(msg->tag, 7U);
  EXPECT_EQ(msg->text(), "late");

  // Nothing handed over: Cancelled, nullopt; any tag has the flag.
  auto none = std::async(std::launch::async, [&] { return s.recv(4, std::nullopt, 0ms); });
  rec = d.next();
  ASSERT_TRUE(rec);
  const auto req2 = rec->header<locabus::api::KccmRecvRequest>();
  EXPECT_EQ(req2.node, 4);
  EXPECT_EQ(req2.flags, locabus::api::kKccmAnyTag);
  EXPECT_NE(req2.waiter, req.waiter);
  ASSERT_TRUE(d.next());  // the cancel
  locabus::api::KccmWaiter w2{req2.waiter};
  ASSERT_TRUE(d.write(locabus::api::kRecordKccmCancelled, 0, w2));
  ASSERT_EQ(none.wait_for(2s), std::future_status::ready);
  EXPECT_FALSE(none.get());
}

// A receive's cancel can sit behind a send that waits for credit (a send
// to this node's own full queue): the receive still returns on time, and a
// message the daemon had handed it goes to the next matching receive.
TEST(KccmSpace, ARecvWhoseCancelIsNotAnsweredReturnsOnTimeAndKeepsALateMessage) {
  FakeDaemon d;
  auto s = d.open();
  const auto t0 = std::chrono::steady_clock::now();
  auto got = std::async(std::launch::async, [&] { return s.recv(kAnyNode, 7, 100ms); });
  auto rec = d.next();
  ASSERT_TRUE(rec);
  const auto req = rec->header<locabus::api::KccmRecvRequest>();
  auto cancel = d.next();
  ASSERT_TRUE(cancel);
  ASSERT_EQ(cancel->type, locabus::api::kRecordKccmCancel);
  // The daemon does not answer (yet).
  ASSERT_EQ(got.wait_for(2s), std::future_status::ready);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(got.get());
  EXPECT_GE(took, 100ms);
  EXPECT_LT(took, 100ms + 100ms + 400ms)
      << "the timeout plus the cancel's grace, with room for a slow machine";
  // Later the daemon's answers arrive: the message it had handed over, then Cancelled.
  locabus::api::KccmMessageHeader m{req.waiter, 7, 0};
  ASSERT_TRUE(d.write(locabus::api::kRecordKccmMessage, 5, m, "kept"));
  locabus::api::KccmWaiter w{req.waiter};
  ASSERT_TRUE(d.write(locabus::api::kRecordKccmCancelled, 0, w));
  std::this_thread::sleep_for(200ms);  // the listener takes them
  auto again = s.recv(kAnyNode, 7, 0ms);
  ASSERT_TRUE(again) << "the late message was lost";
  EXPECT_EQ(again->text(), "kept");
  EXPECT_EQ(again->node, 5);
  EXPECT_FALSE(d.next(100ms)) << "a kept message needs no receive request";
}

TEST(KccmSpace, ShortHandlersRunInTheListenerAndAnswerByRef) {
  FakeDaemon d;
  Log log;
  locabus::kccm::SpaceOptions o;
  o.log = log.sink();
  o.short_warn = 30ms;
  auto s = d.open(o);
  std::atomic<int> calls{0};
  EXPECT_FALSE(s.in_listener());
  auto reg = std::async(std::launch::async, [&] {
    return s.register_handler(
        "sum",
        [&](const locabus::kccm::CallInfo& info, std::span<const std::byte> arg) {
          ++calls;
          EXPECT_TRUE(s.in_listener()) << "a short handler runs in the listener";
          EXPECT_EQ(info.handler, "sum");
          EXPECT_EQ(info.space, 42);
          if (text_of(arg) == "bad") throw std::invalid_argument("bad input");
          if (text_of(arg) == "slow") std::this_thread::sleep_for(100ms);
          return locabus::kccm::bytes("got " + text_of(arg));
        },
        locabus::kccm::HandlerKind::short_inline);
  });
  auto r = d.next();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->type, locabus::api::kRecordKccmRegister);
  EXPECT_EQ(r->aux, LOCABUS_KCCM_SHORT);
  EXPECT_EQ(r->tail(0), "sum");
  d.ack(0);
  ASSERT_EQ(reg.wait_for(2s), std::future_status::ready);
  auto registration = reg.get();
  EXPECT_EQ(registration.name(), "sum");

  d.invoke(11, "sum", "x");
  auto rep = d.next();
  ASSERT_TRUE(rep);
  ASSERT_EQ(rep->type, locabus::api::kRecordKccmReply);
  auto rh = rep->header<locabus::api::KccmReplyHeader>();
  EXPECT_EQ(rh.ref, 11U);
  EXPECT_EQ(rh.status, LOCABUS_KCCM_OK);
  EXPECT_EQ(rep->tail(sizeof rh), "got x");

  d.invoke(12, "sum", "bad");
  rep = d.next();
  ASSERT_TRUE(rep);
  rh = rep->header<locabus::api::KccmReplyHeader>();
  EXPECT_EQ(rh.ref, 12U);
  EXPECT_EQ(rh.status, LOCABUS_KCCM_HANDLER_FAILED);
  EXPECT_EQ(rep->tail(sizeof rh), "handler sum threw: bad input");

  // One-way (ref 0): it runs, nothing is answered.
  d.invoke(0, "sum", "y", 1000, KCCM_F_ONEWAY);
  d.invoke(0, "nobody", "y", 1000, KCCM_F_ONEWAY);
  d.invoke(13, "nobody", "");
  rep = d.next();
  ASSERT_TRUE(rep);
  rh = rep->header<locabus::api::KccmReplyHeader>();
  EXPECT_EQ(rh.ref, 13U) << "no reply to the one-way calls";
  EXPECT_EQ(rh.status, LOCABUS_KCCM_NO_SUCH_HANDLER);
  EXPECT_EQ(calls.load(), 3);

  // The watchdog: once per slow call.
  d.invoke(14, "sum", "slow");
  rep = d.next();
  ASSERT_TRUE(rep);
  EXPECT_EQ(log.count("short handler sum has run for"), 1U);

  // A slow call that starts while the watchdog still times an earlier, fast
  // one (it is not woken per call): it is timed when that wait ends, and
  // warned about once.
  d.invoke(15, "sum", "x");
  d.invoke(16, "sum", "slow");
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(d.next());
  EXPECT_EQ(log.count("short handler sum has run for"), 2U);

  // reset(): Unregister, waits for the ack.
  auto done = std::async(std::launch::async, [&] { registration.reset(); });
  auto un = d.next();
  ASSERT_TRUE(un);
  EXPECT_EQ(un->type, locabus::api::kRecordKccmUnregister);
  EXPECT_EQ(un->tail(0), "sum");
  EXPECT_EQ(done.wait_for(100ms), std::future_status::timeout) << "reset() waits for the ack";
  d.ack(0);
  ASSERT_EQ(done.wait_for(2s), std::future_status::ready);
}

TEST(KccmSpace, TheDaemonRefusingARegistrationThrowsItsSentence) {
  FakeDaemon d;
  auto s = d.open();
  auto reg = std::async(std::launch::async, [&] {
    return s.register_handler("x", [](auto&, auto) { return std::vector<std::byte>(); });
  });
  ASSERT_TRUE(d.next());
  d.ack(EEXIST, "handler x is already registered in space 42 by pid 7 (uid 0)");
  try {
    reg.get();
    ADD_FAILURE() << "registered over another process's handler";
  } catch (const locabus::ClientError& e) {
    EXPECT_EQ(e.code(), EEXIST);
    EXPECT_STREQ(e.what(), "handler x is already registered in space 42 by pid 7 (uid 0)");
  }
  EXPECT_THROW(s.register_handler(std::string(64, 'n'), [](auto&, auto) { return std::vector<std::byte>(); }),
               locabus::ClientError);
}

TEST(KccmSpace, LongHandlersRunOnWorkersAndAFullQueueAnswersOverloaded) {
  FakeDaemon d;
  locabus::kccm::SpaceOptions o;
  o.workers = 1;
  o.queue = 1;
  auto s = d.open(o);
  std::latch release(1);
  std::latch hold(1);
  std::atomic<int> started{0};
  auto reg = std::async(std::launch::async, [&] {
    return s.register_handler("work", [&](const locabus::kccm::CallInfo&, std::span<const std::byte> arg) {
      ++started;
      release.wait();
      if (text_of(arg) == "block") hold.wait();
      return locabus::kccm::bytes(text_of(arg));
    });
  });
  auto r = d.next();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->aux, LOCABUS_KCCM_LONG);
  d.ack(0);
  auto registration = reg.get();
  d.invoke(1, "work", "a");
  for (int i = 0; i < 400 && started.load() == 0; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(started.load(), 1);
  d.invoke(2, "work", "b");  // waits in the queue (1)
  d.invoke(3, "work", "c");  // the queue is full
  auto rep = d.next();
  ASSERT_TRUE(rep);
  auto rh = rep->header<locabus::api::KccmReplyHeader>();
  EXPECT_EQ(rh.ref, 3U) << "answered at once, before the running call";
  EXPECT_EQ(rh.status, LOCABUS_KCCM_OVERLOADED);
  EXPECT_EQ(rep->tail(sizeof rh), "handler work on node 1: 1 calls already wait for its 1 worker(s)");
  release.count_down();
  for (std::uint64_t ref : {1, 2}) {
    rep = d.next();
    ASSERT_TRUE(rep);
    rh = rep->header<locabus::api::KccmReplyHeader>();
    EXPECT_EQ(rh.ref, ref);
    EXPECT_EQ(rh.status, LOCABUS_KCCM_OK);
  }
  // A call whose deadline passed while it waited is skipped.
  d.invoke(4, "work", "block", 5000);
  for (int i = 0; i < 400 && started.load() < 3; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(started.load(), 3) << "the worker runs the blocking call";
  d.invoke(5, "work", "e", 1);  // 1 ms: over before the worker is free
  std::this_thread::sleep_for(50ms);
  hold.count_down();
  rep = d.next();
  ASSERT_TRUE(rep);
  EXPECT_EQ(rep->header<locabus::api::KccmReplyHeader>().ref, 4U);
  rep = d.next();
  ASSERT_TRUE(rep);
  rh = rep->header<locabus::api::KccmReplyHeader>();
  EXPECT_EQ(rh.ref, 5U);
  EXPECT_EQ(rh.status, LOCABUS_KCCM_DEADLINE_EXCEEDED);
  EXPECT_EQ(started.load(), 3) << "a, b and block ran; the skipped call did not";
  registration.release();  // unregistering would wait for an ack this fake does not send
}

TEST(KccmSpace, CallAllGathersThroughCallStarted) {
  FakeDaemon d;
  auto s = d.open();
  auto f = s.call_all("echo", "hi", {200ms});
  auto call = d.next();
  ASSERT_TRUE(call);
  EXPECT_EQ(call->aux, kAnyNode);
  const auto id = call->header<locabus::api::KccmCallHeader>().call_id;
  struct {
    locabus::api::KccmStartedHeader h;
    std::uint16_t nodes[4];
  } started{{id, 3, 0}, {1, 2, 3, 0}};
  ASSERT_TRUE(d.write(
      locabus::api::kRecordKccmCallStarted, 0,
      std::as_bytes(std::span(reinterpret_cast<const std::byte*>(&started), sizeof started.h + 3 * 2))));
  d.result(id, 1, Status::ok, "hi");
  d.result(id, 3, Status::ok, "hi");
  ASSERT_EQ(f.wait_for(3s), std::future_status::ready);
  const auto b = f.get();
  ASSERT_EQ(b.replies.size(), 2U);
  EXPECT_EQ(b.replies[0].node, 1);
  EXPECT_EQ(b.replies[1].node, 3);
  EXPECT_EQ(b.missing, std::vector<std::uint16_t>{2});
}

TEST(KccmSpace, MembershipEventsFailCallsAndAreQueued) {
  FakeDaemon d;
  auto s = d.open();
  auto f = s.call(2, "x", "");
  ASSERT_TRUE(d.next());
  d.event(event(LOCABUS_EV_DEAD, 2));
  ASSERT_EQ(f.wait_for(2s), std::future_status::ready);
  const auto r = f.get();
  EXPECT_EQ(r.status, Status::node_dead);
  EXPECT_EQ(r.node, 2);
  auto e = s.next_event();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, LOCABUS_EV_DEAD);
}

TEST(KccmSpace, TheDaemonGoingAwayWakesEveryoneWithDisconnected) {
  FakeDaemon d;
  auto s = d.open();
  auto f = s.call(2, "x", "", {30s});
  ASSERT_TRUE(d.next());
  auto waiting =
      std::async(std::launch::async, [&] { return s.recv(kAnyNode, std::nullopt, locabus::kForever); });
  ASSERT_TRUE(d.next());
  const auto t0 = std::chrono::steady_clock::now();
  d.go_away();
  ASSERT_EQ(f.wait_for(2s), std::future_status::ready);
  EXPECT_EQ(f.get().status, Status::disconnected);
  ASSERT_EQ(waiting.wait_for(2s), std::future_status::ready);
  try {
    waiting.get();
    ADD_FAILURE() << "recv() returned after the daemon went away";
  } catch (const locabus::ClientError& e) {
    EXPECT_EQ(e.code(), ENOTCONN);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_FALSE(s.connected());
  EXPECT_EQ(s.call(2, "x", "").get().status, Status::disconnected);
  EXPECT_THROW(s.send(2, 1, "x"), locabus::ClientError);
}

TEST(KccmSpace, AWriterWaitsForSpaceAndTheDaemonsDoorbellWakesIt) {
  FakeDaemon d(1 << 18);  // 256 KB rings: three 64 KB messages fill one
  auto s = d.open();
  const std::vector<std::byte> big(locabus::kccm::kMaxData);
  int written = 0;
  while (s.send(2, 1, big, 0ms) == locabus::SendStatus::ok) ++written;
  EXPECT_GE(written, 3);
  EXPECT_LE(written, 4);
  std::uint64_t no = 0;
  auto blocked = std::async(std::launch::async, [&] { return s.send(2, 1, big, locabus::kForever, &no); });
  EXPECT_EQ(blocked.wait_for(100ms), std::future_status::timeout);
  for (int i = 0; i < written; ++i) ASSERT_TRUE(d.next());
  ASSERT_EQ(blocked.wait_for(2s), std::future_status::ready);
  EXPECT_EQ(blocked.get(), locabus::SendStatus::ok);
  EXPECT_EQ(no, static_cast<std::uint64_t>(written)) << "numbers count only records written";
  EXPECT_EQ(s.send(2, 1, std::vector<std::byte>(locabus::kccm::kMaxData + 1)),
            locabus::SendStatus::too_large);
}

TEST(KccmCApi, CallsAndHandlersThroughTheCApi) {
  FakeDaemon d;
  locabus_kccm* k = nullptr;
  EXPECT_EQ(locabus_kccm_open(d.path().c_str(), 42, nullptr, nullptr), -EINVAL);
  {
    std::thread t([&] { d.serve_once(); });
    ASSERT_EQ(locabus_kccm_open(d.path().c_str(), 42, nullptr, &k), 0) << locabus_last_error();
    t.join();
  }
  EXPECT_EQ(locabus_kccm_node_id(k), 1);

  std::thread daemon([&] {
    auto call = d.next();
    ASSERT_TRUE(call);
    const auto h = call->header<locabus::api::KccmCallHeader>();
    EXPECT_EQ(h.deadline_ms, 700U);
    EXPECT_EQ(call->tail(sizeof h), "echohi");
    d.result(h.call_id, 2, Status::handler_failed, "handler echo failed: nope");
  });
  locabus_kccm_result r{};
  ASSERT_EQ(locabus_kccm_call(k, 2, "echo", "hi", 2, 700, &r), 0) << locabus_last_error();
  daemon.join();
  EXPECT_EQ(r.status, LOCABUS_KCCM_HANDLER_FAILED);
  EXPECT_EQ(r.node, 2);
  ASSERT_NE(r.data, nullptr);
  EXPECT_STREQ(static_cast<const char*>(r.data), "handler echo failed: nope");
  EXPECT_EQ(r.len, std::strlen("handler echo failed: nope"));
  locabus_kccm_result_free(&r);
  EXPECT_EQ(r.data, nullptr);

  // A C handler: a result, or an error with its own sentence.
  const locabus_kccm_handler handler = [](void* ctx, const locabus_kccm_call_info* info, const void* arg,
                                          size_t len, locabus_kccm_reply* reply) {
    ++*static_cast<std::atomic<int>*>(ctx);
    EXPECT_STREQ(info->handler, "h");
    if (len == 0) return locabus_kccm_reply_error(reply, "empty argument");
    locabus_kccm_reply_set(reply, arg, len);
  };
  std::atomic<int> calls{0};
  std::thread acker([&] {
    auto reg = d.next();
    ASSERT_TRUE(reg);
    EXPECT_EQ(reg->aux, LOCABUS_KCCM_SHORT);
    d.ack(0);
  });
  ASSERT_EQ(locabus_kccm_register(k, "h", LOCABUS_KCCM_SHORT, handler, &calls), 0) << locabus_last_error();
  acker.join();
  d.invoke(21, "h", "abc");
  d.invoke(22, "h", "");
  auto rep = d.next();
  ASSERT_TRUE(rep);
  EXPECT_EQ(rep->header<locabus::api::KccmReplyHeader>().status, LOCABUS_KCCM_OK);
  EXPECT_EQ(rep->tail(sizeof(locabus::api::KccmReplyHeader)), "abc");
  rep = d.next();
  ASSERT_TRUE(rep);
  EXPECT_EQ(rep->header<locabus::api::KccmReplyHeader>().status, LOCABUS_KCCM_HANDLER_FAILED);
  EXPECT_EQ(rep->tail(sizeof(locabus::api::KccmReplyHeader)), "handler h failed: empty argument");
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(locabus_kccm_unregister(k, "other"), -ENOENT);
  std::thread unacker([&] {
    auto un = d.next();
    ASSERT_TRUE(un);
    EXPECT_EQ(un->type, locabus::api::kRecordKccmUnregister);
    d.ack(0);
  });
  EXPECT_EQ(locabus_kccm_unregister(k, "h"), 0);
  unacker.join();

  locabus_event e{};
  EXPECT_EQ(locabus_kccm_next_event(k, &e), 0);
  EXPECT_EQ(locabus_kccm_call(nullptr, 2, "x", nullptr, 0, 10, &r), -EINVAL);
  EXPECT_EQ(locabus_kccm_call(k, 2, nullptr, nullptr, 0, 10, &r), -EINVAL);
  EXPECT_EQ(locabus_kccm_register(k, "h", 7, handler, nullptr), -EINVAL);
  locabus_kccm_results_free(nullptr, 0);
  locabus_kccm_close(k);
  locabus_kccm_close(nullptr);
}

}  // namespace

namespace {

// A handler that unregisters itself (a one-shot handler) while another call
// of it waits for the only worker: reset() must not wait for that queued
// call (only this worker could run it); the queued call is answered
// no_such_handler, and reset() returns within a bound.
TEST(KccmSpace, ResetFromInsideAHandlerWithAQueuedCallOfItDoesNotDeadlock) {
  FakeDaemon d;
  locabus::kccm::SpaceOptions o;
  o.workers = 1;
  auto s = d.open(o);
  std::optional<locabus::kccm::Registration> registration;
  std::latch queued(1);
  std::atomic<int> ran{0};
  std::atomic<bool> reset_done{false};
  auto reg = std::async(std::launch::async, [&] {
    return s.register_handler("once", [&](const locabus::kccm::CallInfo&, std::span<const std::byte>) {
      if (ran++ == 0) {
        queued.wait();  // the second call is in the worker queue now
        registration->reset();
        reset_done = true;
      }
      return locabus::kccm::bytes("done");
    });
  });
  ASSERT_TRUE(d.next());
  d.ack(0);
  registration.emplace(reg.get());
  d.invoke(1, "once", "");
  d.invoke(2, "once", "");
  std::this_thread::sleep_for(50ms);  // the listener queued call 2 behind the running call 1
  queued.count_down();
  auto un = d.next();
  ASSERT_TRUE(un);
  ASSERT_EQ(un->type, locabus::api::kRecordKccmUnregister);
  d.ack(0);
  // Both calls are answered within the bound: 2 (queued, never started:
  // no_such_handler), then 1 (ok) once reset() returned.
  std::map<std::uint64_t, std::uint8_t> answered;
  for (int i = 0; i < 2; ++i) {
    auto rep = d.next(2000ms);
    ASSERT_TRUE(rep) << "call " << (answered.count(1) ? 2 : 1) << " was never answered: reset() deadlocked";
    const auto h = rep->header<locabus::api::KccmReplyHeader>();
    answered[h.ref] = h.status;
  }
  EXPECT_EQ(answered[1], LOCABUS_KCCM_OK);
  EXPECT_EQ(answered[2], LOCABUS_KCCM_NO_SUCH_HANDLER);
  EXPECT_TRUE(reset_done.load());
  EXPECT_EQ(ran.load(), 1) << "the queued call did not run after its handler was unregistered";
}

// Closing the space while a worker's reply waits for room in the send ring
// (the daemon is slow to drain it): the listener must keep carrying the
// doorbell until the workers are done, so ~Space returns soon after the
// daemon drains, and the reply is written.
TEST(KccmSpace, ClosingWhileAWorkersReplyWaitsForRingSpaceReturns) {
  FakeDaemon d(1 << 18);  // 256 KB rings
  locabus::kccm::SpaceOptions o;
  o.workers = 1;
  std::optional<locabus::kccm::Space> s(d.open(o));
  std::latch go(1);
  auto reg = std::async(std::launch::async, [&] {
    return s->register_handler("big", [&](const locabus::kccm::CallInfo&, std::span<const std::byte>) {
      go.wait();
      return std::vector<std::byte>(locabus::kccm::kMaxData);
    });
  });
  ASSERT_TRUE(d.next());
  d.ack(0);
  auto registration = reg.get();
  registration.release();
  d.invoke(1, "big", "");
  const std::vector<std::byte> big(locabus::kccm::kMaxData);
  int written = 0;
  while (s->send(2, 1, big, 0ms) == locabus::SendStatus::ok) ++written;
  ASSERT_GE(written, 2);
  go.count_down();                    // the worker's reply finds the ring full
  std::this_thread::sleep_for(50ms);  // ... and waits for room
  auto closing = std::async(std::launch::async, [&] { s.reset(); });
  std::this_thread::sleep_for(50ms);
  // The daemon writes something (the listener wakes, sees the space closing) ...
  d.event(event(LOCABUS_EV_JOINED, 3));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(closing.wait_for(0ms), std::future_status::timeout) << "close() waits for the running handler";
  // ... and only then drains the ring.
  bool replied = false;
  for (int i = 0; i < written + 1; ++i) {
    auto r = d.next(1000ms);
    if (!r) break;
    if (r->type == locabus::api::kRecordKccmReply) replied = true;
  }
  EXPECT_TRUE(replied) << "the worker's reply was written once the daemon made room";
  ASSERT_EQ(closing.wait_for(2s), std::future_status::ready) << "~Space hung: nobody woke the waiting worker";
}

// The same, but the daemon goes away instead of draining: the waiting
// worker wakes (disconnected) and ~Space returns within the bound.
TEST(KccmSpace, ClosingWhileAWorkersReplyWaitsAndTheDaemonGoesAwayReturns) {
  FakeDaemon d(1 << 18);
  locabus::kccm::SpaceOptions o;
  o.workers = 1;
  std::optional<locabus::kccm::Space> s(d.open(o));
  std::latch go(1);
  auto reg = std::async(std::launch::async, [&] {
    return s->register_handler("big", [&](const locabus::kccm::CallInfo&, std::span<const std::byte>) {
      go.wait();
      return std::vector<std::byte>(locabus::kccm::kMaxData);
    });
  });
  ASSERT_TRUE(d.next());
  d.ack(0);
  reg.get().release();
  d.invoke(1, "big", "");
  const std::vector<std::byte> big(locabus::kccm::kMaxData);
  while (s->send(2, 1, big, 0ms) == locabus::SendStatus::ok) {
  }
  go.count_down();
  std::this_thread::sleep_for(50ms);
  auto closing = std::async(std::launch::async, [&] { s.reset(); });
  std::this_thread::sleep_for(50ms);
  d.event(event(LOCABUS_EV_JOINED, 3));  // the listener wakes while closing
  std::this_thread::sleep_for(50ms);
  const auto t0 = std::chrono::steady_clock::now();
  d.go_away();
  ASSERT_EQ(closing.wait_for(2s), std::future_status::ready) << "~Space hung on a worker nobody woke";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}

}  // namespace
