// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Unit tests of KCCM's node side (userspace/kccm/node.*) against a fake
// host that records every datagram sent, record delivered, tag refused or
// consumed: the receive and waiting queues (matching, order, hand-off,
// cancel), handler registration, calls (handlers, built-ins, missing
// handlers, the reference table: routing, expiry, a handler that exits, an
// origin that dies, the instance check), refusals, the local window, the
// memory bounds and malformed frames.
#include <gtest/gtest.h>

#include <endian.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/control.hpp"
#include "common/version.hpp"
#include "engine/clock.hpp"
#include "kccm/node.hpp"

namespace locabus::kccm {
namespace {

using namespace std::chrono_literals;
using engine::SendStatus;
using Bytes = std::vector<std::byte>;

constexpr std::uint16_t kSelf = 1;
constexpr std::uint16_t kSpace = 42;
constexpr std::uint32_t kInstance = 0xA1B2C3D4;

Bytes bytes(std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return {p, p + s.size()};
}
std::string text(std::span<const std::byte> b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }
Bytes pattern(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes out(n);
  for (std::byte& b : out) b = static_cast<std::byte>(rng());
  return out;
}
template <typename T>
Bytes raw(const T& v, std::span<const std::byte> more = {}) {
  Bytes out(sizeof v);
  std::memcpy(out.data(), &v, sizeof v);
  out.insert(out.end(), more.begin(), more.end());
  return out;
}
template <typename T>
T head_of(const Bytes& b) {
  T v;
  EXPECT_GE(b.size(), sizeof v);
  std::memcpy(&v, b.data(), sizeof v);
  return v;
}

struct SentFrame {
  std::uint16_t node = 0;  // LOCABUS_NODE_BROADCAST for broadcast()
  std::uint16_t space = 0;
  Bytes frame;
  Origin origin;
  Frame parsed() const {
    auto f = parse_frame(frame);
    EXPECT_TRUE(f.has_value());
    return f.value_or(Frame{});
  }
};
struct Record {
  ClientId client = 0;
  std::uint16_t type = 0;
  std::uint16_t aux = 0;
  Bytes bytes;  // head + body
  StreamTag tag;
  template <typename T>
  T head() const {
    return head_of<T>(bytes);
  }
  Bytes body(std::size_t head_len) const { return Bytes(bytes.begin() + head_len, bytes.end()); }
};

class FakeHost final : public Host {
 public:
  engine::Nanos now() const noexcept override { return clock.now(); }
  SendStatus send(std::uint16_t node, std::uint16_t space, std::span<const std::byte> frame,
                  Origin origin) override {
    if (status != SendStatus::ok) return status;
    sent.push_back(SentFrame{node, space, {frame.begin(), frame.end()}, origin});
    return SendStatus::ok;
  }
  SendStatus broadcast(std::uint16_t space, std::span<const std::byte> frame) override {
    if (status != SendStatus::ok) return status;
    sent.push_back(SentFrame{LOCABUS_NODE_BROADCAST, space, {frame.begin(), frame.end()}, {}});
    return SendStatus::ok;
  }
  void deliver(ClientId client, std::uint16_t type, std::uint16_t aux, std::span<const std::byte> head,
               std::span<const std::byte> body, const StreamTag& tag) override {
    Record r{client, type, aux, {head.begin(), head.end()}, tag};
    r.bytes.insert(r.bytes.end(), body.begin(), body.end());
    records.push_back(std::move(r));
  }
  void refuse(const StreamTag& tag, std::uint8_t reason) override { refused.push_back({tag, reason}); }
  void consume(const StreamTag& tag) override { consumed.push_back(tag); }
  std::string who(ClientId client) const override {
    return "pid " + std::to_string(1000 + client) + " (uid " + std::to_string(client) + ")";
  }
  std::size_t backlog(ClientId client) const override {
    std::size_t n = 0;
    for (const Record& r : records) n += r.client == client ? 1 : 0;
    return unread ? n : 0;
  }

  /// The records of `type`, taken out of `records`.
  std::vector<Record> take(std::uint16_t type) {
    std::vector<Record> out;
    std::erase_if(records, [&](const Record& r) {
      if (r.type != type) return false;
      out.push_back(r);
      return true;
    });
    return out;
  }

  engine::ManualClock clock{std::chrono::seconds(100)};
  SendStatus status = SendStatus::ok;
  bool unread = false;  // the records delivered stay in the clients' backlogs
  std::vector<SentFrame> sent;
  std::vector<Record> records;
  std::vector<std::pair<StreamTag, std::uint8_t>> refused;
  std::vector<StreamTag> consumed;
};

StreamTag flow(std::uint16_t node, std::uint64_t first, std::uint32_t count = 1) {
  return StreamTag{node, daemon::stream_key(LOCABUS_P_KCCM, kSpace), 7, first, count};
}

Bytes data_frame(std::uint32_t tag, std::span<const std::byte> body) {
  Frame f;
  f.type = KCCM_T_DATA;
  f.tag = tag;
  f.body = body;
  Bytes out;
  write_frame(f, out);
  return out;
}
Bytes call_frame(std::string_view name, std::span<const std::byte> arg, std::uint64_t call_id,
                 std::uint8_t flags = 0, std::uint32_t deadline_ms = 1000, std::uint64_t caller = 9,
                 std::uint32_t instance = 0x5555) {
  Frame f;
  f.type = KCCM_T_CALL;
  f.flags = flags;
  f.instance = instance;
  f.deadline_ms = deadline_ms;
  f.caller = caller;
  f.call_id = call_id;
  f.name = name;
  f.body = arg;
  Bytes out;
  write_frame(f, out);
  return out;
}
Bytes reply_frame(std::uint32_t instance, std::uint64_t caller, std::uint64_t call_id, std::uint8_t status,
                  std::span<const std::byte> body) {
  Frame f;
  f.type = KCCM_T_REPLY;
  f.status = status;
  f.instance = instance;
  f.caller = caller;
  f.call_id = call_id;
  f.body = body;
  Bytes out;
  write_frame(f, out);
  return out;
}

class KccmNodeTest : public ::testing::Test {
 protected:
  KccmNodeTest() { make(NodeConfig{}); }
  void make(NodeConfig c) {
    c.node = kSelf;
    c.instance = kInstance;
    node.emplace(host, c);
  }
  Outcome rec(ClientId c, std::uint16_t type, std::uint16_t aux, const Bytes& payload) {
    return node->on_record(c, type, aux, payload, next_no[c]++);
  }
  Outcome send(ClientId c, std::uint16_t to, std::uint32_t tag, std::span<const std::byte> data) {
    return rec(c, api::kRecordKccmSend, to, raw(api::KccmTagHeader{tag, 0}, data));
  }
  Outcome recv(ClientId c, std::uint64_t waiter, std::uint16_t from = kAnyNode,
               std::optional<std::uint32_t> tag = std::nullopt) {
    api::KccmRecvRequest r{waiter, from, static_cast<std::uint16_t>(tag ? 0 : api::kKccmAnyTag),
                           tag.value_or(0)};
    return rec(c, api::kRecordKccmRecv, 0, raw(r));
  }
  Outcome cancel(ClientId c, std::uint64_t waiter) {
    return rec(c, api::kRecordKccmCancel, 0, raw(api::KccmWaiter{waiter}));
  }
  Outcome reg(ClientId c, std::string_view name, bool unregister = false) {
    return rec(c, unregister ? api::kRecordKccmUnregister : api::kRecordKccmRegister, LOCABUS_KCCM_LONG,
               bytes(name));
  }
  Outcome call(ClientId c, std::uint16_t to, std::string_view name, std::span<const std::byte> arg,
               std::uint64_t call_id, std::uint8_t flags = 0, std::uint32_t deadline_ms = 1000) {
    const Bytes n = bytes(name);
    api::KccmCallHeader h{call_id, deadline_ms, flags, static_cast<std::uint8_t>(name.size()), 0};
    Bytes p = raw(h, n);
    p.insert(p.end(), arg.begin(), arg.end());
    return rec(c, api::kRecordKccmCall, to, p);
  }
  Outcome reply(ClientId c, std::uint64_t ref, std::uint8_t status, std::span<const std::byte> body) {
    api::KccmReplyHeader h{ref, status, {}};
    return rec(c, api::kRecordKccmReply, 0, raw(h, body));
  }
  /// A DATA frame from `from` at `first` in its stream.
  void data_in(std::uint16_t from, std::uint32_t tag, std::string_view body, std::uint64_t first,
               std::uint16_t space = kSpace) {
    node->on_frame(from, space, false, data_frame(tag, bytes(body)), flow(from, first));
  }
  /// The (node, tag, text) of each kRecordKccmMessage to `c`, taken.
  std::vector<std::tuple<std::uint64_t, std::uint16_t, std::uint32_t, std::string>> messages() {
    std::vector<std::tuple<std::uint64_t, std::uint16_t, std::uint32_t, std::string>> out;
    for (const Record& r : host.take(api::kRecordKccmMessage)) {
      const auto h = r.head<api::KccmMessageHeader>();
      out.emplace_back(h.waiter, r.aux, h.tag, text(r.body(sizeof h)));
    }
    return out;
  }

  FakeHost host;
  std::optional<Node> node;
  std::map<ClientId, std::uint64_t> next_no;
};

using M = std::tuple<std::uint64_t, std::uint16_t, std::uint32_t, std::string>;

// ---- the frame ----------------------------------------------------------------------

TEST(KccmFrame, RoundTripInNetworkByteOrder) {
  const Bytes arg = bytes("argument");
  Bytes f = call_frame("sum", arg, 0x0102030405060708ULL, KCCM_F_ONEWAY, 0x11223344, 0x99, 0xCAFEBABE);
  ASSERT_EQ(f.size(), kHeaderLen + 3 + arg.size());
  EXPECT_EQ(f[0], std::byte{KCCM_T_CALL});
  EXPECT_EQ(f[1], std::byte{KCCM_F_ONEWAY});
  EXPECT_EQ(f[3], std::byte{3});
  // instance at 8, deadline at 12, call_id at 24: big-endian.
  EXPECT_EQ(f[8], std::byte{0xCA});
  EXPECT_EQ(f[11], std::byte{0xBE});
  EXPECT_EQ(f[12], std::byte{0x11});
  EXPECT_EQ(f[24], std::byte{0x01});
  EXPECT_EQ(f[31], std::byte{0x08});
  const auto p = parse_frame(f);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->name, "sum");
  EXPECT_EQ(text(p->body), "argument");
  EXPECT_EQ(p->instance, 0xCAFEBABEu);
  EXPECT_EQ(p->deadline_ms, 0x11223344u);
  EXPECT_EQ(p->caller, 0x99u);
  EXPECT_EQ(p->call_id, 0x0102030405060708ULL);

  Bytes d = data_frame(0xDEADBEEF, bytes("x"));
  EXPECT_EQ(d[4], std::byte{0xDE});
  EXPECT_EQ(d[7], std::byte{0xEF});
  EXPECT_EQ(parse_frame(d)->tag, 0xDEADBEEFu);
}

TEST(KccmFrame, MalformedFramesAreRefusedWithAReason) {
  std::string why;
  const Bytes good = call_frame("f", {}, 1);
  // Short.
  for (std::size_t n = 0; n < kHeaderLen; ++n) {
    EXPECT_FALSE(parse_frame(std::span(good).first(n), &why)) << n;
    EXPECT_NE(why.find("shorter"), std::string::npos);
  }
  // Bad type.
  for (int t : {0, 4, 255}) {
    Bytes b = good;
    b[0] = static_cast<std::byte>(t);
    EXPECT_FALSE(parse_frame(b, &why)) << t;
    EXPECT_NE(why.find("unknown type"), std::string::npos);
  }
  // name_len 0, 64, beyond the body.
  for (int len : {0, 64, 255, 2}) {
    Bytes b = good;  // 1 name byte present
    b[3] = static_cast<std::byte>(len);
    EXPECT_FALSE(parse_frame(b, &why)) << len;
  }
  // A deadline of 0.
  Bytes b = call_frame("f", {}, 1, 0, 0);
  EXPECT_FALSE(parse_frame(b, &why));
  // A name on a DATA.
  b = data_frame(1, bytes("abc"));
  b[3] = std::byte{1};
  EXPECT_FALSE(parse_frame(b, &why));
  // A body over KCCM_MAX_DATA.
  EXPECT_FALSE(parse_frame(data_frame(1, Bytes(kMaxData + 1)), &why));
  EXPECT_TRUE(parse_frame(data_frame(1, Bytes(kMaxData)), &why));
  // The longest name and the largest argument fit a datagram.
  const std::string name63(kMaxName, 'n');
  EXPECT_TRUE(parse_frame(call_frame(name63, Bytes(kMaxData), 1)));
}

TEST_F(KccmNodeTest, MalformedFramesAreRefusedWithoutACrash) {
  node->attach(1, kSpace);
  const Bytes good = call_frame("echo", bytes("x"), 1);
  std::vector<Bytes> bad;
  bad.push_back(Bytes(good.begin(), good.begin() + 31));  // short
  bad.push_back({});
  Bytes b = good;
  b[0] = std::byte{9};  // bad type
  bad.push_back(b);
  for (int len : {0, 64, 200}) {  // name_len 0, > 63, beyond the body
    b = good;
    b[3] = static_cast<std::byte>(len);
    bad.push_back(b);
  }
  for (std::size_t i = 0; i < bad.size(); ++i) node->on_frame(2, kSpace, false, bad[i], flow(2, i));
  ASSERT_EQ(host.refused.size(), bad.size());
  for (std::size_t i = 0; i < bad.size(); ++i) {
    EXPECT_EQ(host.refused[i].first.first, i);
    EXPECT_EQ(host.refused[i].second, LOCABUS_REFUSE_INCOMPLETE);
  }
  EXPECT_EQ(node->stats().bad_frames, bad.size());
  EXPECT_TRUE(host.sent.empty());
  EXPECT_TRUE(host.records.empty());

  // Random bytes, and random mutations of good frames: never a crash, and
  // every frame is either handled or refused.
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    Bytes f = (i % 2) ? pattern(rng() % 200, static_cast<std::uint32_t>(i)) : good;
    if (i % 2 == 0)
      for (int k = 0; k < 3; ++k) f[rng() % f.size()] = static_cast<std::byte>(rng());
    node->on_frame(2, kSpace, (i % 7) == 0, f, flow(2, 100 + i));
  }
  // Whatever was queued is bounded by what arrived (every DATA at most once).
  EXPECT_LE(node->queued_messages(), 20000u);
}

// ---- send / receive -----------------------------------------------------------------

TEST_F(KccmNodeTest, ReceivesMatchByNodeAndTagOldestFirst) {
  node->attach(1, kSpace);
  data_in(2, 5, "a", 0);
  data_in(3, 5, "b", 1);
  data_in(2, 6, "c", 2);
  data_in(2, 5, "d", 3);
  recv(1, 10, 2, 6);
  recv(1, 11, kAnyNode, 5);
  recv(1, 12, 3);
  recv(1, 13);
  EXPECT_EQ(messages(), (std::vector<M>{{10, 2, 6, "c"}, {11, 2, 5, "a"}, {12, 3, 5, "b"}, {13, 2, 5, "d"}}));
  EXPECT_EQ(node->queued_messages(), 0u);
  EXPECT_EQ(node->queued_bytes(), 0u);
  EXPECT_EQ(node->waiters(), 0u);
  // Each message travels with its own stream tag (credit when it reaches the ring).
  EXPECT_EQ(node->stats().taken, 4u);
}

TEST_F(KccmNodeTest, MessagesOfOneSenderAndTagComeInOrder) {
  node->attach(1, kSpace);
  for (int i = 0; i < 100; ++i)
    data_in(static_cast<std::uint16_t>(2 + i % 3), static_cast<std::uint32_t>(i % 2), std::to_string(i),
            static_cast<std::uint64_t>(i));
  for (int i = 0; i < 50; ++i)
    recv(1, static_cast<std::uint64_t>(i), 3, 1);  // the senders' interleaving aside
  for (int i = 0; i < 50; ++i) recv(1, static_cast<std::uint64_t>(100 + i));
  std::map<std::pair<std::uint16_t, std::uint32_t>, int> last;
  std::size_t n = 0;
  for (const auto& [w, from, tag, body] : messages()) {
    const int v = std::stoi(body);
    auto [it, fresh] = last.try_emplace({from, tag}, v);
    if (!fresh) {
      EXPECT_GT(v, it->second) << "node " << from << " tag " << tag;
    }
    it->second = v;
    ++n;
  }
  // 100 messages; node 3 with tag 1 sent 17 of them.
  EXPECT_EQ(n, 67u);
  EXPECT_EQ(node->queued_messages() + n, 100u);
  EXPECT_EQ(node->waiters(), 50u - 17u);
}

TEST_F(KccmNodeTest, AMessageGoesStraightToTheOldestMatchingWaiter) {
  node->attach(1, kSpace);
  node->attach(2, kSpace);
  recv(1, 100, 3, 7);         // node 3, tag 7
  recv(2, 200, kAnyNode, 7);  // any node, tag 7
  recv(1, 101, 4);            // node 4, any tag
  recv(2, 201);               // anything
  EXPECT_EQ(node->waiters(), 4u);
  data_in(4, 7, "x", 0);  // 200 (older than 101 and 201)
  data_in(4, 8, "y", 1);  // 101
  data_in(5, 1, "z", 2);  // 201
  data_in(3, 7, "w", 3);  // 100
  data_in(3, 7, "v", 4);  // nobody waits: queued
  const auto got = host.take(api::kRecordKccmMessage);
  ASSERT_EQ(got.size(), 4u);
  std::vector<std::pair<ClientId, std::uint64_t>> who;
  for (const Record& r : got) who.emplace_back(r.client, r.head<api::KccmMessageHeader>().waiter);
  EXPECT_EQ(who, (std::vector<std::pair<ClientId, std::uint64_t>>{{2, 200}, {1, 101}, {2, 201}, {1, 100}}));
  // A handed-over message carries its stream tag: consumed once in the ring.
  EXPECT_EQ(got[0].tag.first, 0u);
  EXPECT_EQ(got[0].tag.count, 1u);
  EXPECT_EQ(node->stats().handed_over, 4u);
  EXPECT_EQ(node->queued_messages(), 1u);
  EXPECT_EQ(node->waiters(), 0u);
  EXPECT_TRUE(host.refused.empty());
  EXPECT_TRUE(host.consumed.empty());
}

TEST_F(KccmNodeTest, CancelAlwaysAnswersCancelledAfterAHandedOverMessage) {
  node->attach(1, kSpace);
  recv(1, 5, kAnyNode, 9);
  cancel(1, 5);  // still waiting: removed
  ASSERT_EQ(host.records.size(), 1u);
  EXPECT_EQ(host.records[0].type, api::kRecordKccmCancelled);
  EXPECT_EQ(host.records[0].head<api::KccmWaiter>().waiter, 5u);
  host.records.clear();
  data_in(2, 9, "late", 0);  // nobody waits any more
  EXPECT_TRUE(host.records.empty());
  EXPECT_EQ(node->queued_messages(), 1u);

  recv(1, 6, kAnyNode, 9);  // takes it at once
  cancel(1, 6);             // too late: the message is before the Cancelled
  ASSERT_EQ(host.records.size(), 2u);
  EXPECT_EQ(host.records[0].type, api::kRecordKccmMessage);
  EXPECT_EQ(host.records[1].type, api::kRecordKccmCancelled);
  EXPECT_EQ(host.records[1].head<api::KccmWaiter>().waiter, 6u);
  host.records.clear();
  cancel(1, 77);  // never heard of: answered all the same
  ASSERT_EQ(host.records.size(), 1u);
  EXPECT_EQ(host.records[0].type, api::kRecordKccmCancelled);
  EXPECT_EQ(node->stats().cancels, 3u);
  EXPECT_EQ(node->waiters(), 0u);
}

TEST_F(KccmNodeTest, DataToASpaceNobodyAttachedIsRefusedNoEndpoint) {
  node->attach(1, kSpace);
  data_in(2, 1, "x", 0, kSpace + 1);
  ASSERT_EQ(host.refused.size(), 1u);
  EXPECT_EQ(host.refused[0].second, LOCABUS_REFUSE_NO_ENDPOINT);
  EXPECT_EQ(node->stats().no_endpoint, 1u);
  EXPECT_EQ(node->queued_messages(), 0u);
}

TEST_F(KccmNodeTest, QueuedMessagesAreRefusedWhenTheLastClientDetaches) {
  node->attach(1, kSpace);
  node->attach(2, kSpace);
  data_in(2, 1, "a", 0);
  data_in(3, 1, "b", 1);
  ASSERT_EQ(send(1, kSelf, 1, bytes("local")).kind, Outcome::ok);
  node->detach(1);  // one client is left: the queue stays
  EXPECT_TRUE(host.refused.empty());
  EXPECT_EQ(node->queued_messages(), 3u);
  node->leave(2);  // hung up: data still queues for nobody
  node->detach(2);
  ASSERT_EQ(host.refused.size(), 2u);
  EXPECT_EQ(host.refused[0].first.node, 2u);
  EXPECT_EQ(host.refused[1].first.node, 3u);
  for (const auto& [tag, reason] : host.refused) EXPECT_EQ(reason, LOCABUS_REFUSE_CLOSED);
  EXPECT_EQ(node->stats().refused_on_close, 2u);
  EXPECT_EQ(node->stats().dropped_on_close, 1u);
  EXPECT_EQ(node->queued_messages(), 0u);
  EXPECT_EQ(node->queued_bytes(), 0u);
  EXPECT_EQ(node->spaces(), 0u);
  // And the space is gone: the next message is refused no_endpoint.
  data_in(2, 1, "c", 2);
  EXPECT_EQ(host.refused.back().second, LOCABUS_REFUSE_NO_ENDPOINT);
}

TEST_F(KccmNodeTest, SendsToOtherNodesCarryTheClientsNumbers) {
  node->attach(1, kSpace);
  const Bytes big = pattern(kMaxData, 1);
  ASSERT_EQ(send(1, 2, 77, bytes("hello")).kind, Outcome::ok);
  ASSERT_EQ(send(1, 3, 78, big).kind, Outcome::ok);
  ASSERT_EQ(host.sent.size(), 2u);
  EXPECT_EQ(host.sent[0].node, 2u);
  EXPECT_EQ(host.sent[0].space, kSpace);
  EXPECT_EQ(host.sent[0].origin.client, 1u);
  EXPECT_EQ(host.sent[0].origin.message, 0u);
  EXPECT_EQ(host.sent[1].origin.message, 1u);
  const Frame f = host.sent[1].parsed();
  EXPECT_EQ(f.type, KCCM_T_DATA);
  EXPECT_EQ(f.tag, 78u);
  EXPECT_EQ(Bytes(f.body.begin(), f.body.end()), big);
  // Broadcast is not a destination; unknown nodes and a full window are the host's answer.
  const Outcome o = send(1, LOCABUS_NODE_BROADCAST, 1, bytes("x"));
  EXPECT_EQ(o.kind, Outcome::refused);
  EXPECT_EQ(o.status, SendStatus::invalid_node);
  host.status = SendStatus::unknown_node;
  EXPECT_EQ(send(1, 9, 1, bytes("x")).kind, Outcome::refused);
  host.status = SendStatus::would_block;
  EXPECT_EQ(send(1, 9, 1, bytes("x")).kind, Outcome::blocked);
  // Larger than a KCCM message: the client broke the protocol.
  EXPECT_EQ(send(1, 2, 1, Bytes(kMaxData + 1)).kind, Outcome::broken);
  EXPECT_EQ(node->stats().sends, 2u);
}

TEST_F(KccmNodeTest, LocalSendsWaitWhenTheWindowIsQueued) {
  NodeConfig c;
  c.window = 8;
  make(c);
  node->attach(1, kSpace);
  for (int i = 0; i < 8; ++i) ASSERT_EQ(send(1, kSelf, 1, bytes("m" + std::to_string(i))).kind, Outcome::ok);
  EXPECT_EQ(send(1, kSelf, 1, bytes("more")).kind, Outcome::blocked);
  EXPECT_EQ(node->queued_messages(), 8u);
  // Remote messages do not count against the local window (their credit bounds them).
  data_in(2, 1, "remote", 0);
  EXPECT_EQ(node->queued_messages(), 9u);
  recv(1, 1, kSelf);
  EXPECT_EQ(messages(), (std::vector<M>{{1, kSelf, 1, "m0"}}));
  EXPECT_EQ(send(1, kSelf, 1, bytes("more")).kind, Outcome::ok);
  EXPECT_EQ(send(1, kSelf, 1, bytes("again")).kind, Outcome::blocked);
  // Handed straight to a waiter, a local message is not queued at all.
  for (int i = 0; i < 9; ++i) recv(1, 10 + static_cast<std::uint64_t>(i));
  EXPECT_EQ(node->queued_messages(), 0u);
  recv(1, 50);
  EXPECT_EQ(send(1, kSelf, 1, bytes("direct")).kind, Outcome::ok);
  EXPECT_EQ(node->queued_messages(), 0u);
  EXPECT_TRUE(host.sent.empty());  // never the network
}

// ---- handlers -----------------------------------------------------------------------

TEST_F(KccmNodeTest, RegistrationsAreAckedInOrderWithErrnoAndText) {
  node->attach(1, kSpace);
  node->attach(2, kSpace);
  node->attach(3, kSpace + 1);
  reg(1, "sum");
  reg(2, "sum");
  reg(3, "sum");  // another space: its own names
  reg(1, "");
  reg(1, std::string(64, 'x'));
  reg(1, std::string(63, 'x'));
  reg(2, "sum", true);  // not its own
  reg(1, "sum", true);
  reg(1, "sum", true);
  reg(2, "sum");  // free again
  std::vector<std::pair<ClientId, std::int32_t>> acks;
  std::vector<std::string> texts;
  for (const Record& r : host.take(api::kRecordKccmAck)) {
    acks.emplace_back(r.client, r.head<api::KccmAck>().err);
    texts.push_back(text(r.body(sizeof(api::KccmAck))));
  }
  EXPECT_EQ(acks, (std::vector<std::pair<ClientId, std::int32_t>>{{1, 0},
                                                                  {2, EEXIST},
                                                                  {3, 0},
                                                                  {1, EINVAL},
                                                                  {1, EINVAL},
                                                                  {1, 0},
                                                                  {2, ENOENT},
                                                                  {1, 0},
                                                                  {1, ENOENT},
                                                                  {2, 0}}));
  EXPECT_EQ(texts[1], "handler sum is already registered in space 42 by pid 1001 (uid 1)");
  EXPECT_EQ(texts[0], "");
  EXPECT_NE(texts[3].find("1..63"), std::string::npos);
  EXPECT_NE(texts[6].find("not registered"), std::string::npos);
  EXPECT_EQ(node->handlers(), 3u);
  // Detaching unregisters.
  node->detach(2);
  EXPECT_EQ(node->handlers(), 2u);
  reg(1, "sum");
  EXPECT_EQ(host.take(api::kRecordKccmAck).at(0).head<api::KccmAck>().err, 0);
}

TEST_F(KccmNodeTest, ACallForAMissingHandlerIsAnsweredNoSuchHandler) {
  node->attach(1, kSpace);
  // From another node: a REPLY back, its CALL consumed once it is out.
  node->on_frame(2, kSpace, false, call_frame("nope", bytes("a"), 31), flow(2, 5));
  ASSERT_EQ(host.sent.size(), 1u);
  Frame f = host.sent[0].parsed();
  EXPECT_EQ(host.sent[0].node, 2u);
  EXPECT_EQ(host.sent[0].space, kSpace);
  EXPECT_EQ(host.sent[0].origin.client, 0u);  // the daemon's own
  EXPECT_EQ(f.type, KCCM_T_REPLY);
  EXPECT_EQ(f.status, LOCABUS_KCCM_NO_SUCH_HANDLER);
  EXPECT_EQ(f.instance, 0x5555u);
  EXPECT_EQ(f.caller, 9u);
  EXPECT_EQ(f.call_id, 31u);
  EXPECT_EQ(text(f.body), "no handler nope in space 42 on node 1");
  ASSERT_EQ(host.consumed.size(), 1u);
  EXPECT_EQ(host.consumed[0].first, 5u);
  // One-way: answered too, so the caller hears of it.
  node->on_frame(2, kSpace, false, call_frame("nope", {}, 32, KCCM_F_ONEWAY), flow(2, 6));
  ASSERT_EQ(host.sent.size(), 2u);
  EXPECT_EQ(host.sent[1].parsed().status, LOCABUS_KCCM_NO_SUCH_HANDLER);
  EXPECT_EQ(host.sent[1].parsed().call_id, 32u);
  // A space nobody attached answers the same way (and its built-ins).
  node->on_frame(2, kSpace + 5, false, call_frame("nope", {}, 33), flow(2, 7));
  EXPECT_EQ(host.sent.back().parsed().status, LOCABUS_KCCM_NO_SUCH_HANDLER);
  EXPECT_EQ(host.sent.back().space, kSpace + 5);
  // A local call: the result straight to the client.
  ASSERT_EQ(call(1, kSelf, "nope", {}, 34).kind, Outcome::ok);
  const auto res = host.take(api::kRecordKccmResult);
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].client, 1u);
  EXPECT_EQ(res[0].aux, kSelf);
  EXPECT_EQ(res[0].head<api::KccmResultHeader>().call_id, 34u);
  EXPECT_EQ(res[0].head<api::KccmResultHeader>().status, LOCABUS_KCCM_NO_SUCH_HANDLER);
  EXPECT_EQ(node->stats().no_such_handler, 4u);
  EXPECT_TRUE(host.refused.empty());
}

TEST_F(KccmNodeTest, EchoReturnsItsArgumentByteExact) {
  node->attach(1, kSpace);
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1476}, std::size_t{60000}, kMaxData}) {
    host.sent.clear();
    const Bytes arg = pattern(n, static_cast<std::uint32_t>(n));
    node->on_frame(2, kSpace, false, call_frame("echo", arg, n), flow(2, n));
    ASSERT_EQ(host.sent.size(), 1u);
    const Frame f = host.sent[0].parsed();
    EXPECT_EQ(f.status, LOCABUS_KCCM_OK);
    EXPECT_EQ(f.call_id, n);
    EXPECT_EQ(Bytes(f.body.begin(), f.body.end()), arg) << n;
    // Locally too.
    ASSERT_EQ(call(1, kSelf, "echo", arg, 1000 + n).kind, Outcome::ok);
    const auto res = host.take(api::kRecordKccmResult);
    ASSERT_EQ(res.size(), 1u);
    EXPECT_EQ(res[0].body(sizeof(api::KccmResultHeader)), arg);
  }
  // One-way to a built-in: it runs, nothing comes back, the CALL is consumed.
  host.sent.clear();
  node->on_frame(2, kSpace, false, call_frame("echo", bytes("x"), 1, KCCM_F_ONEWAY), flow(2, 99));
  EXPECT_TRUE(host.sent.empty());
  EXPECT_EQ(host.consumed.back().first, 99u);
}

TEST_F(KccmNodeTest, NodeInfoIsJsonWithItsFields) {
  node->attach(1, kSpace);
  host.clock.advance_by(2500ms);
  ASSERT_EQ(call(1, kSelf, "node.info", {}, 1).kind, Outcome::ok);
  const auto res = host.take(api::kRecordKccmResult);
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].head<api::KccmResultHeader>().status, LOCABUS_KCCM_OK);
  const auto j = nlohmann::json::parse(text(res[0].body(sizeof(api::KccmResultHeader))));
  EXPECT_EQ(j.at("node").get<int>(), kSelf);
  EXPECT_TRUE(j.at("hostname").is_string());
  EXPECT_GT(j.at("uptime_s").get<double>(), 0.0);
  ASSERT_TRUE(j.at("load").is_array());
  EXPECT_EQ(j.at("load").size(), 3u);
  EXPECT_GE(j.at("cpus").get<int>(), 1);
  EXPECT_EQ(j.at("version").get<std::string>(), kVersion);
  EXPECT_EQ(j.at("version").get<std::string>(), "0.1.0");
  EXPECT_DOUBLE_EQ(j.at("daemon_uptime_s").get<double>(), 2.5);
}

TEST_F(KccmNodeTest, ARegisteredNameOverridesTheBuiltIn) {
  node->attach(1, kSpace);
  node->attach(2, kSpace + 1);
  reg(1, "echo");
  host.records.clear();
  node->on_frame(2, kSpace, false, call_frame("echo", bytes("x"), 1), flow(2, 0));
  EXPECT_TRUE(host.sent.empty());
  ASSERT_EQ(host.take(api::kRecordKccmInvoke).size(), 1u);
  // Only in that space.
  node->on_frame(2, kSpace + 1, false, call_frame("echo", bytes("x"), 2), flow(2, 1));
  ASSERT_EQ(host.sent.size(), 1u);
  EXPECT_EQ(text(host.sent[0].parsed().body), "x");
}

// ---- the reference table ------------------------------------------------------------

TEST_F(KccmNodeTest, AHandlersReplyIsRoutedToItsOrigin) {
  node->attach(1, kSpace);
  reg(1, "sum");
  host.records.clear();
  node->on_frame(3, kSpace, false, call_frame("sum", bytes("1 2"), 444, 0, 5000, 17, 0x7777), flow(3, 0));
  auto inv = host.take(api::kRecordKccmInvoke);
  ASSERT_EQ(inv.size(), 1u);
  EXPECT_EQ(inv[0].client, 1u);
  EXPECT_EQ(inv[0].aux, 3u);
  const auto ih = inv[0].head<api::KccmInvokeHeader>();
  EXPECT_NE(ih.ref, 0u);
  EXPECT_EQ(ih.deadline_ms, 5000u);
  EXPECT_EQ(ih.name_len, 3u);
  EXPECT_EQ(text(inv[0].body(sizeof ih)), "sum1 2");
  EXPECT_EQ(inv[0].tag.first, 0u);  // the CALL is consumed when the invoke reaches the ring
  EXPECT_EQ(inv[0].tag.count, 1u);
  EXPECT_EQ(node->refs(), 1u);

  ASSERT_EQ(reply(1, ih.ref, LOCABUS_KCCM_OK, bytes("3")).kind, Outcome::ok);
  ASSERT_EQ(host.sent.size(), 1u);
  EXPECT_EQ(host.sent[0].node, 3u);
  const Frame f = host.sent[0].parsed();
  EXPECT_EQ(f.type, KCCM_T_REPLY);
  EXPECT_EQ(f.status, LOCABUS_KCCM_OK);
  EXPECT_EQ(f.instance, 0x7777u);
  EXPECT_EQ(f.caller, 17u);
  EXPECT_EQ(f.call_id, 444u);
  EXPECT_EQ(text(f.body), "3");
  EXPECT_EQ(node->refs(), 0u);
  // A second reply to the same ref: late, dropped.
  ASSERT_EQ(reply(1, ih.ref, LOCABUS_KCCM_OK, bytes("3")).kind, Outcome::ok);
  EXPECT_EQ(host.sent.size(), 1u);
  EXPECT_EQ(node->stats().late_replies, 1u);

  // A one-way call: ref 0, nothing kept.
  node->on_frame(3, kSpace, false, call_frame("sum", {}, 445, KCCM_F_ONEWAY), flow(3, 1));
  inv = host.take(api::kRecordKccmInvoke);
  ASSERT_EQ(inv.size(), 1u);
  EXPECT_EQ(inv[0].head<api::KccmInvokeHeader>().ref, 0u);
  EXPECT_EQ(node->refs(), 0u);

  // A local call: the result to the calling client.
  node->attach(2, kSpace);
  ASSERT_EQ(call(2, kSelf, "sum", bytes("4"), 9).kind, Outcome::ok);
  inv = host.take(api::kRecordKccmInvoke);
  ASSERT_EQ(inv.size(), 1u);
  EXPECT_EQ(inv[0].aux, kSelf);
  reply(1, inv[0].head<api::KccmInvokeHeader>().ref, LOCABUS_KCCM_HANDLER_FAILED, bytes("bad input"));
  const auto res = host.take(api::kRecordKccmResult);
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].client, 2u);
  EXPECT_EQ(res[0].head<api::KccmResultHeader>().call_id, 9u);
  EXPECT_EQ(res[0].head<api::KccmResultHeader>().status, LOCABUS_KCCM_HANDLER_FAILED);
  EXPECT_EQ(text(res[0].body(sizeof(api::KccmResultHeader))), "bad input");
  EXPECT_EQ(host.sent.size(), 1u);
}

TEST_F(KccmNodeTest, AReplyThatCannotGoYetBlocksTheHandlersRing) {
  node->attach(1, kSpace);
  reg(1, "f");
  node->on_frame(3, kSpace, false, call_frame("f", {}, 1), flow(3, 0));
  const auto ref = host.take(api::kRecordKccmInvoke).at(0).head<api::KccmInvokeHeader>().ref;
  host.status = SendStatus::would_block;
  EXPECT_EQ(reply(1, ref, 0, bytes("r")).kind, Outcome::blocked);
  EXPECT_EQ(node->refs(), 1u);
  host.status = SendStatus::ok;
  EXPECT_EQ(reply(1, ref, 0, bytes("r")).kind, Outcome::ok);
  EXPECT_EQ(host.sent.size(), 1u);
  EXPECT_EQ(node->refs(), 0u);
  // Another client cannot answer someone else's call.
  node->attach(2, kSpace);
  node->on_frame(3, kSpace, false, call_frame("f", {}, 2), flow(3, 1));
  const auto ref2 = host.take(api::kRecordKccmInvoke).at(0).head<api::KccmInvokeHeader>().ref;
  EXPECT_EQ(reply(2, ref2, 0, bytes("r")).kind, Outcome::ok);
  EXPECT_EQ(host.sent.size(), 1u);
  EXPECT_EQ(node->refs(), 1u);
  EXPECT_EQ(node->stats().late_replies, 1u);
}

TEST_F(KccmNodeTest, ExpiryForgetsACallAndDropsItsLateReply) {
  node->attach(1, kSpace);
  reg(1, "slow");
  node->on_frame(3, kSpace, false, call_frame("slow", {}, 1, 0, 200), flow(3, 0));
  node->on_frame(3, kSpace, false, call_frame("slow", {}, 2, 0, 5000), flow(3, 1));
  const auto inv = host.take(api::kRecordKccmInvoke);
  ASSERT_EQ(inv.size(), 2u);
  const auto ref1 = inv[0].head<api::KccmInvokeHeader>().ref;
  const auto ref2 = inv[1].head<api::KccmInvokeHeader>().ref;
  // Deadline + the 1 s grace.
  ASSERT_TRUE(node->next_deadline());
  EXPECT_EQ(*node->next_deadline(), std::chrono::seconds(100) + 200ms + 1s);
  host.clock.advance_by(1199ms);
  node->do_work();
  EXPECT_EQ(node->refs(), 2u);
  host.clock.advance_by(1ms);
  node->do_work();
  EXPECT_EQ(node->refs(), 1u);
  EXPECT_EQ(node->stats().refs_expired, 1u);
  EXPECT_EQ(*node->next_deadline(), std::chrono::seconds(100) + 5000ms + 1s);
  reply(1, ref1, 0, bytes("too late"));
  EXPECT_TRUE(host.sent.empty());
  EXPECT_EQ(node->stats().late_replies, 1u);
  reply(1, ref2, 0, bytes("in time"));
  EXPECT_EQ(host.sent.size(), 1u);
  EXPECT_FALSE(node->next_deadline());
}

TEST_F(KccmNodeTest, AHandlerThatDetachesAnswersHandlerExited) {
  node->attach(1, kSpace);
  node->attach(2, kSpace);
  reg(1, "f");
  node->on_frame(3, kSpace, false, call_frame("f", {}, 1), flow(3, 0));
  node->on_frame(4, kSpace, false, call_frame("f", {}, 2), flow(4, 0));
  call(2, kSelf, "f", {}, 3);
  EXPECT_EQ(node->refs(), 3u);
  node->leave(1);  // hung up: no new calls reach it...
  node->on_frame(3, kSpace, false, call_frame("f", {}, 4), flow(3, 1));
  EXPECT_EQ(host.sent.back().parsed().status, LOCABUS_KCCM_NO_SUCH_HANDLER);
  host.sent.clear();
  node->detach(1);  // ... and when it is gone, its calls are answered
  ASSERT_EQ(host.sent.size(), 2u);
  EXPECT_EQ(host.sent[0].node, 3u);
  EXPECT_EQ(host.sent[0].parsed().status, LOCABUS_KCCM_HANDLER_EXITED);
  EXPECT_EQ(host.sent[0].parsed().call_id, 1u);
  EXPECT_NE(text(host.sent[0].parsed().body).find("pid 1001"), std::string::npos);
  EXPECT_EQ(host.sent[1].node, 4u);
  const auto res = host.take(api::kRecordKccmResult);
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].client, 2u);
  EXPECT_EQ(res[0].head<api::KccmResultHeader>().status, LOCABUS_KCCM_HANDLER_EXITED);
  EXPECT_EQ(node->refs(), 0u);
  EXPECT_EQ(node->stats().handler_exited, 3u);
}

TEST_F(KccmNodeTest, ADeadOriginsCallsAreForgotten) {
  node->attach(1, kSpace);
  reg(1, "f");
  node->on_frame(3, kSpace, false, call_frame("f", {}, 1), flow(3, 0));
  node->on_frame(4, kSpace, false, call_frame("f", {}, 2), flow(4, 0));
  const auto inv = host.take(api::kRecordKccmInvoke);
  node->forget_node(3);
  EXPECT_EQ(node->refs(), 1u);
  EXPECT_EQ(node->stats().refs_forgotten, 1u);
  reply(1, inv[0].head<api::KccmInvokeHeader>().ref, 0, bytes("x"));
  EXPECT_TRUE(host.sent.empty());
  reply(1, inv[1].head<api::KccmInvokeHeader>().ref, 0, bytes("x"));
  ASSERT_EQ(host.sent.size(), 1u);
  EXPECT_EQ(host.sent[0].node, 4u);
}

TEST_F(KccmNodeTest, AReplyIsDeliveredOnlyToACallerOfThisInstance) {
  node->attach(5, kSpace);
  ASSERT_EQ(call(5, 2, "f", bytes("arg"), 99).kind, Outcome::ok);
  const Frame c = host.sent.at(0).parsed();
  EXPECT_EQ(c.instance, kInstance);
  EXPECT_EQ(c.caller, 5u);
  EXPECT_EQ(host.sent[0].origin.client, 5u);  // its failures reach the client by its number
  // The right instance and caller.
  node->on_frame(2, kSpace, false, reply_frame(kInstance, 5, 99, 0, bytes("ok!")), flow(2, 0));
  auto res = host.take(api::kRecordKccmResult);
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].aux, 2u);
  EXPECT_EQ(res[0].head<api::KccmResultHeader>().call_id, 99u);
  EXPECT_EQ(text(res[0].body(sizeof(api::KccmResultHeader))), "ok!");
  EXPECT_EQ(res[0].tag.count, 1u);
  // Another instance (a previous life), an unknown caller, another space's client: refused.
  node->on_frame(2, kSpace, false, reply_frame(kInstance + 1, 5, 99, 0, {}), flow(2, 1));
  node->on_frame(2, kSpace, false, reply_frame(kInstance, 6, 99, 0, {}), flow(2, 2));
  node->on_frame(2, kSpace + 1, false, reply_frame(kInstance, 5, 99, 0, {}), flow(2, 3));
  EXPECT_TRUE(host.take(api::kRecordKccmResult).empty());
  ASSERT_EQ(host.refused.size(), 3u);
  for (const auto& [tag, reason] : host.refused) EXPECT_EQ(reason, LOCABUS_REFUSE_CLOSED);
  EXPECT_EQ(node->stats().replies_refused, 3u);
  // Broadcast REPLYs do not exist.
  node->on_frame(2, kSpace, true, reply_frame(kInstance, 5, 99, 0, {}), StreamTag{});
  EXPECT_TRUE(host.take(api::kRecordKccmResult).empty());
  EXPECT_EQ(node->stats().bad_frames, 1u);
}

TEST_F(KccmNodeTest, ACallToEveryNodeListsTheNodesFirst) {
  node->attach(1, kSpace);
  node->set_alive(4, true);
  node->set_alive(2, true);
  node->set_alive(7, true);
  node->set_alive(7, false);
  ASSERT_EQ(call(1, LOCABUS_NODE_BROADCAST, "echo", bytes("hi"), 5).kind, Outcome::ok);
  ASSERT_EQ(host.sent.size(), 1u);
  EXPECT_EQ(host.sent[0].node, LOCABUS_NODE_BROADCAST);
  const Frame f = host.sent[0].parsed();
  EXPECT_EQ(f.flags, KCCM_F_BCAST);
  EXPECT_EQ(f.name, "echo");
  ASSERT_EQ(host.records.size(), 2u);
  EXPECT_EQ(host.records[0].type, api::kRecordKccmCallStarted);
  const auto sh = host.records[0].head<api::KccmStartedHeader>();
  EXPECT_EQ(sh.call_id, 5u);
  ASSERT_EQ(sh.count, 3u);
  std::vector<std::uint16_t> nodes(3);
  std::memcpy(nodes.data(), host.records[0].bytes.data() + sizeof sh, 6);
  EXPECT_EQ(nodes, (std::vector<std::uint16_t>{1, 2, 4}));
  EXPECT_EQ(host.records[1].type, api::kRecordKccmResult);  // then the local answer
  EXPECT_EQ(host.records[1].aux, kSelf);
  EXPECT_EQ(text(host.records[1].body(sizeof(api::KccmResultHeader))), "hi");
  // Would block: nothing started.
  host.records.clear();
  host.status = SendStatus::would_block;
  EXPECT_EQ(call(1, LOCABUS_NODE_BROADCAST, "echo", {}, 6).kind, Outcome::blocked);
  EXPECT_TRUE(host.records.empty());
  // A broadcast CALL received: handled like any.
  host.status = SendStatus::ok;
  node->on_frame(2, kSpace, true, call_frame("echo", bytes("b"), 8, KCCM_F_BCAST), StreamTag{});
  EXPECT_EQ(host.sent.back().node, 2u);
  EXPECT_EQ(text(host.sent.back().parsed().body), "b");
}

TEST_F(KccmNodeTest, CallsToUnknownNodesAreRefusedAndBadCallRecordsBreak) {
  node->attach(1, kSpace);
  host.status = SendStatus::unknown_node;
  Outcome o = call(1, 9, "f", {}, 1);
  EXPECT_EQ(o.kind, Outcome::refused);
  EXPECT_EQ(o.node, 9u);
  EXPECT_EQ(o.status, SendStatus::unknown_node);
  host.status = SendStatus::ok;
  EXPECT_EQ(call(1, 2, "", {}, 1).kind, Outcome::broken);
  EXPECT_EQ(call(1, 2, std::string(64, 'x'), {}, 1).kind, Outcome::broken);
  EXPECT_EQ(call(1, 2, "f", {}, 1, 0, 0).kind, Outcome::broken);
  EXPECT_EQ(call(1, 2, "f", Bytes(kMaxData + 1), 1).kind, Outcome::broken);
  EXPECT_EQ(call(1, 2, "f", Bytes(kMaxData), 1).kind, Outcome::ok);
  EXPECT_EQ(rec(1, 999, 0, {}).kind, Outcome::broken);
  EXPECT_EQ(rec(1, api::kRecordKccmRecv, 0, Bytes(3)).kind, Outcome::broken);
  EXPECT_EQ(node->on_record(77, api::kRecordKccmRecv, 0, {}, 0).kind, Outcome::broken);
}

// ---- bounds -------------------------------------------------------------------------

TEST_F(KccmNodeTest, TheReferenceTableIsBounded) {
  NodeConfig c;
  c.max_refs = 16;
  make(c);
  node->attach(1, kSpace);
  reg(1, "f");
  for (std::uint64_t i = 0; i < 40; ++i) node->on_frame(3, kSpace, false, call_frame("f", {}, i), flow(3, i));
  EXPECT_EQ(node->refs(), 16u);
  EXPECT_EQ(host.take(api::kRecordKccmInvoke).size(), 16u);
  ASSERT_EQ(host.sent.size(), 24u);
  for (const SentFrame& s : host.sent) EXPECT_EQ(s.parsed().status, LOCABUS_KCCM_OVERLOADED);
  EXPECT_EQ(node->stats().overloaded, 24u);
  // One-way calls keep no reference: they still reach the handler.
  node->on_frame(3, kSpace, false, call_frame("f", {}, 100, KCCM_F_ONEWAY), flow(3, 100));
  EXPECT_EQ(host.take(api::kRecordKccmInvoke).size(), 1u);
}

TEST_F(KccmNodeTest, RepliesWaitingForRoomAreBoundedAndHoldTheirCall) {
  NodeConfig c;
  c.max_pending_replies = 8;
  make(c);
  host.status = SendStatus::would_block;
  for (std::uint64_t i = 0; i < 12; ++i)
    node->on_frame(3, kSpace, false, call_frame("echo", pattern(1000, 1), i), flow(3, i));
  EXPECT_EQ(node->pending_replies(), 8u);
  EXPECT_EQ(node->stats().replies_dropped, 4u);
  // The dropped ones are consumed; those waiting hold their CALL's credit.
  EXPECT_EQ(host.consumed.size(), 4u);
  node->do_work();
  EXPECT_EQ(node->pending_replies(), 8u);
  host.status = SendStatus::ok;
  EXPECT_EQ(node->do_work(), 8);
  EXPECT_EQ(node->pending_replies(), 0u);
  ASSERT_EQ(host.sent.size(), 8u);
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(host.sent[i].parsed().call_id, i);
  EXPECT_EQ(host.consumed.size(), 12u);
  // Waiting replies to a node that died are dropped.
  host.status = SendStatus::would_block;
  node->on_frame(3, kSpace, false, call_frame("echo", {}, 50), flow(3, 50));
  node->forget_node(3);
  EXPECT_EQ(node->pending_replies(), 0u);
}

TEST_F(KccmNodeTest, QueueMemoryIsAccountedExactly) {
  node->attach(1, kSpace);
  std::size_t bytes_in = 0;
  for (std::uint64_t i = 0; i < 50; ++i) {
    const Bytes b = pattern(i * 1000, static_cast<std::uint32_t>(i));
    node->on_frame(2, kSpace, false, data_frame(1, b), flow(2, i));
    bytes_in += b.size();
  }
  EXPECT_EQ(node->queued_messages(), 50u);
  EXPECT_EQ(node->queued_bytes(), bytes_in);
  for (std::uint64_t i = 0; i < 50; ++i) recv(1, i);
  EXPECT_EQ(node->queued_bytes(), 0u);
  const auto got = host.take(api::kRecordKccmMessage);
  ASSERT_EQ(got.size(), 50u);
  for (std::uint64_t i = 0; i < 50; ++i) {
    EXPECT_EQ(got[i].body(sizeof(api::KccmMessageHeader)), pattern(i * 1000, static_cast<std::uint32_t>(i)));
    EXPECT_EQ(got[i].tag.first, i);
  }
}

TEST_F(KccmNodeTest, AClientThatDoesNotReadItsRingCannotGrowItsBacklogWithoutBound) {
  NodeConfig c;
  c.max_backlog = 16;
  make(c);
  node->attach(1, kSpace);
  host.unread = true;
  // Cancels, acks and local echo calls all answer into the client's ring: a
  // client that writes them and never reads gets at most max_backlog
  // answers; its further records wait (blocked), none is lost or broken.
  std::size_t accepted = 0, blocked = 0;
  for (std::uint64_t i = 0; i < 1000; ++i) {
    Outcome o;
    switch (i % 3) {
      case 0: o = cancel(1, i); break;
      case 1: o = reg(1, "h" + std::to_string(i)); break;
      default: o = call(1, kSelf, "echo", pattern(1000, 1), i); break;
    }
    ASSERT_NE(o.kind, Outcome::broken) << o.error;
    ASSERT_NE(o.kind, Outcome::refused);
    (o.kind == Outcome::ok ? accepted : blocked) += 1;
  }
  EXPECT_EQ(accepted, 16u);
  EXPECT_EQ(blocked, 1000u - 16u);
  EXPECT_LE(host.records.size(), 16u) << "the backlog stays within max_backlog";
  EXPECT_EQ(node->stats().backlog_blocked, blocked);
  // Once it reads, its records are taken again.
  host.records.clear();
  EXPECT_EQ(cancel(1, 5000).kind, Outcome::ok);
  EXPECT_EQ(host.records.size(), 1u);
}

TEST_F(KccmNodeTest, AFloodOfReceivesIsBoundedPerClient) {
  NodeConfig c;
  c.max_waiters = 100;
  make(c);
  node->attach(1, kSpace);
  node->attach(2, kSpace);
  for (std::uint64_t i = 0; i < 100; ++i) ASSERT_EQ(recv(1, i, kAnyNode, 5).kind, Outcome::ok);
  EXPECT_EQ(node->waiters(), 100u);
  // Another client's receives are its own.
  ASSERT_EQ(recv(2, 1, kAnyNode, 5).kind, Outcome::ok);
  const Outcome o = recv(1, 100, kAnyNode, 5);
  EXPECT_EQ(o.kind, Outcome::broken);
  EXPECT_NE(o.error.find("more than 100 receives"), std::string::npos) << o.error;
  EXPECT_EQ(node->waiters(), 101u) << "at most max_waiters per client";
  // Answered and cancelled receives make room again.
  data_in(2, 5, "x", 0);
  EXPECT_EQ(cancel(1, 1).kind, Outcome::ok);
  EXPECT_EQ(recv(1, 200, kAnyNode, 5).kind, Outcome::ok);
  EXPECT_EQ(recv(1, 201, kAnyNode, 5).kind, Outcome::ok);
  EXPECT_EQ(recv(1, 202, kAnyNode, 5).kind, Outcome::broken);
  node->detach(1);
  EXPECT_EQ(node->waiters(), 1u) << "client 2's receive remains";
}

}  // namespace
}  // namespace locabus::kccm
