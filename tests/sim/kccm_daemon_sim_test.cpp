// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// KCCM inside daemons in simulation (daemon_harness.hpp), driven by raw
// records over the real local API (the client library is tested on its
// own): messages across nodes, calls to a handler, the built-ins over
// fragmentation, a call to every node, no_such_handler, and a send to a
// space nobody attached (no_endpoint, named by the record's number).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <locabus/locabus.h>
#include <nlohmann/json.hpp>

#include "api/control.hpp"
#include "api/shm.hpp"
#include "daemon_harness.hpp"
#include "sim_test_util.hpp"

namespace locabus::sim {
namespace {

using namespace std::chrono_literals;
using testing::DaemonSim;
using testing::DaemonSimOptions;
using Bytes = std::vector<std::byte>;

constexpr std::uint16_t kSpace = 42;

Bytes bytes(std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return {p, p + s.size()};
}
std::string text(std::span<const std::byte> b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }
template <typename T>
Bytes raw(const T& v, std::span<const std::byte> more = {}) {
  Bytes out(sizeof v);
  std::memcpy(out.data(), &v, sizeof v);
  out.insert(out.end(), more.begin(), more.end());
  return out;
}

struct Rec {
  std::uint16_t type = 0;
  std::uint16_t aux = 0;
  Bytes payload;
  template <typename T>
  T head() const {
    T v{};
    if (payload.size() >= sizeof v) std::memcpy(&v, payload.data(), sizeof v);
    return v;
  }
  Bytes body(std::size_t head) const {
    return Bytes(payload.begin() + static_cast<long>(head), payload.end());
  }
};

/// A client that speaks KCCM records itself.
class RawSpace {
 public:
  RawSpace(const std::string& socket, std::uint16_t space) {
    ctl_ = api::connect_control(socket);
    std::vector<UniqueFd> fds;
    reply = api::request(
        ctl_.get(), {{"op", "open"}, {"version", api::kProtocolVersion}, {"kccm", space}, {"events", true}},
        &fds);
    region_.emplace(api::SharedRegion::attach(std::move(fds.at(0))));
    bell_ = api::Doorbell::adopt(std::move(fds.at(1)));
  }
  /// Writes a record; returns its number.
  std::uint64_t write(std::uint16_t type, std::uint16_t aux, const Bytes& payload) {
    for (;;) {
      const auto st = region_->producer().try_write(type, aux, payload);
      if (st == api::RingProducer::Status::kWritten) break;
      EXPECT_EQ(st, api::RingProducer::Status::kFull);
      if (st != api::RingProducer::Status::kFull) return ~0ULL;
      (void)region_->producer().publish();
      bell_.ring();
      std::this_thread::sleep_for(1ms);
    }
    (void)region_->producer().publish();
    bell_.ring();
    return written_++;
  }
  /// The next record of `type` (others are kept), within `timeout` of real time.
  std::optional<Rec> next(std::uint16_t type, std::chrono::milliseconds timeout = 20s) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      for (auto it = kept_.begin(); it != kept_.end(); ++it)
        if (it->type == type) {
          Rec r = std::move(*it);
          kept_.erase(it);
          return r;
        }
      const auto r =
          region_->consumer().read(64, [&](std::uint16_t t, std::uint16_t a, std::span<const std::byte> p) {
            kept_.push_back(Rec{t, a, {p.begin(), p.end()}});
          });
      EXPECT_TRUE(r);
      if (r.wake_producer) bell_.ring();
      if (r.records) continue;
      if (std::chrono::steady_clock::now() > until) return std::nullopt;
      bell_.drain();
      std::this_thread::sleep_for(200us);
    }
  }
  /// Every record of `type` kept so far (after next() calls).
  std::size_t kept(std::uint16_t type) const {
    std::size_t n = 0;
    for (const Rec& r : kept_) n += r.type == type;
    return n;
  }

  std::uint64_t call(std::uint16_t node, std::string_view name, const Bytes& arg, std::uint64_t call_id,
                     std::uint8_t flags = 0) {
    api::KccmCallHeader h{call_id, 10000, flags, static_cast<std::uint8_t>(name.size()), 0};
    Bytes p = raw(h, bytes(name));
    p.insert(p.end(), arg.begin(), arg.end());
    return write(api::kRecordKccmCall, node, p);
  }

  nlohmann::json reply;

 private:
  UniqueFd ctl_;
  std::optional<api::SharedRegion> region_;
  api::Doorbell bell_;
  std::uint64_t written_ = 0;
  std::vector<Rec> kept_;
};

void messages_calls_and_builtins(std::uint64_t seed) {
  DaemonSimOptions o;
  o.nodes = 3;
  o.ring_bytes = 1u << 20;
  // Loss, reordering and duplication (by seed): the 60 KB echo's fragments are repaired below KCCM.
  o.link.loss = 0.01 * static_cast<double>(seed % 4);
  o.link.reorder = 0.02;
  o.link.duplicate = 0.01;
  DaemonSim sim(seed, o);
  ASSERT_TRUE(sim.wait_until([&] { return sim.converged(); }));

  RawSpace a(sim.socket(0), kSpace);  // node 1
  RawSpace b(sim.socket(1), kSpace);  // node 2
  EXPECT_EQ(a.reply.at("space").get<int>(), kSpace);
  EXPECT_EQ(a.reply.at("max_data").get<int>(), LOCABUS_KCCM_MAX_DATA);

  // A tagged message from node 2 to node 1, received by a waiting receive.
  a.write(api::kRecordKccmRecv, 0, raw(api::KccmRecvRequest{1, LOCABUS_KCCM_ANY_NODE, 0, 7}));
  b.write(api::kRecordKccmSend, 1, raw(api::KccmTagHeader{7, 0}, bytes("hello")));
  auto m = a.next(api::kRecordKccmMessage);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->aux, 2u);
  EXPECT_EQ(m->head<api::KccmMessageHeader>().waiter, 1u);
  EXPECT_EQ(m->head<api::KccmMessageHeader>().tag, 7u);
  EXPECT_EQ(text(m->body(sizeof(api::KccmMessageHeader))), "hello");

  // echo on node 1 with 60 KB (41 fragments each way), byte exact.
  Bytes big(60000);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::byte>(i * 7 + i / 251);
  b.call(1, "echo", big, 100);
  auto r = b.next(api::kRecordKccmResult);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->aux, 1u);
  EXPECT_EQ(r->head<api::KccmResultHeader>().call_id, 100u);
  EXPECT_EQ(r->head<api::KccmResultHeader>().status, LOCABUS_KCCM_OK);
  EXPECT_EQ(r->body(sizeof(api::KccmResultHeader)), big);

  // A registered handler on node 1, called from node 2.
  a.write(api::kRecordKccmRegister, LOCABUS_KCCM_LONG, bytes("double"));
  auto ack = a.next(api::kRecordKccmAck);
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->head<api::KccmAck>().err, 0);
  b.call(1, "double", bytes("ab"), 101);
  auto inv = a.next(api::kRecordKccmInvoke);
  ASSERT_TRUE(inv);
  EXPECT_EQ(inv->aux, 2u);
  const auto ih = inv->head<api::KccmInvokeHeader>();
  EXPECT_NE(ih.ref, 0u);
  EXPECT_EQ(text(inv->body(sizeof ih)), "doubleab");
  a.write(api::kRecordKccmReply, 0, raw(api::KccmReplyHeader{ih.ref, LOCABUS_KCCM_OK, {}}, bytes("abab")));
  r = b.next(api::kRecordKccmResult);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->head<api::KccmResultHeader>().call_id, 101u);
  EXPECT_EQ(text(r->body(sizeof(api::KccmResultHeader))), "abab");

  // Node 3 has nobody in the space: no_such_handler for a name, the built-ins still answer.
  b.call(3, "double", {}, 102);
  r = b.next(api::kRecordKccmResult);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->aux, 3u);
  EXPECT_EQ(r->head<api::KccmResultHeader>().status, LOCABUS_KCCM_NO_SUCH_HANDLER);
  EXPECT_EQ(text(r->body(sizeof(api::KccmResultHeader))), "no handler double in space 42 on node 3");

  // node.info on every node: the nodes first, then one answer from each.
  b.call(LOCABUS_NODE_BROADCAST, "node.info", {}, 103);
  auto started = b.next(api::kRecordKccmCallStarted);
  ASSERT_TRUE(started);
  const auto sh = started->head<api::KccmStartedHeader>();
  EXPECT_EQ(sh.call_id, 103u);
  ASSERT_EQ(sh.count, 3u);
  std::vector<std::uint16_t> nodes(3);
  std::memcpy(nodes.data(), started->payload.data() + sizeof sh, 6);
  EXPECT_EQ(nodes, (std::vector<std::uint16_t>{1, 2, 3}));
  std::set<std::uint16_t> answered;
  for (int i = 0; i < 3; ++i) {
    r = b.next(api::kRecordKccmResult);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->head<api::KccmResultHeader>().call_id, 103u);
    const auto j = nlohmann::json::parse(text(r->body(sizeof(api::KccmResultHeader))));
    EXPECT_EQ(j.at("node").get<std::uint16_t>(), r->aux);
    EXPECT_EQ(j.at("version").get<std::string>(), "0.1.0");
    answered.insert(r->aux);
  }
  EXPECT_EQ(answered, (std::set<std::uint16_t>{1, 2, 3}));

  // A message for a space nobody attached on node 3: send_failed, no_endpoint,
  // naming the record's number.
  const std::uint64_t no = b.write(api::kRecordKccmSend, 3, raw(api::KccmTagHeader{1, 0}, bytes("lost")));
  auto ev = b.next(api::kRecordEvent);
  while (ev && ev->head<locabus_event>().kind != LOCABUS_EV_SEND_FAILED) ev = b.next(api::kRecordEvent);
  ASSERT_TRUE(ev);
  const auto e = ev->head<locabus_event>();
  EXPECT_EQ(e.failure, LOCABUS_FAIL_NO_ENDPOINT);
  EXPECT_EQ(e.node, 3u);
  EXPECT_EQ(e.first_message, no);
  EXPECT_EQ(e.count, 1u);

  // The daemons' counters agree, and nothing is left behind.
  EXPECT_TRUE(sim.wait_until([&] {
    const auto c = sim.server(0).counters_json().at("kccm");
    return c.at("refs").get<int>() == 0 && c.at("queued_messages").get<int>() == 0;
  }));
  const auto c1 = sim.call([&] { return sim.server(0).counters_json(); });
  EXPECT_EQ(c1.at("kccm").at("invokes").get<int>(), 1);
  EXPECT_EQ(c1.at("kccm").at("handed_over").get<int>(), 1);
  EXPECT_EQ(c1.at("kccm").at("bad_frames").get<int>(), 0);
  const auto c3 = sim.call([&] { return sim.server(2).counters_json(); });
  EXPECT_EQ(c3.at("kccm").at("no_endpoint").get<int>(), 1);
  EXPECT_EQ(c3.at("kccm").at("no_such_handler").get<int>(), 1);
}

TEST(KccmDaemonSim, MessagesCallsAndBuiltInsAcrossDaemons) {
  testing::for_each_seed(4, [](std::uint64_t seed) { messages_calls_and_builtins(seed); });
}

}  // namespace
}  // namespace locabus::sim
