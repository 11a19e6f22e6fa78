// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Unit tests of Locasock (userspace/locasock/): fragmentation onto a fake
// Bus that records every message, and reassembly of what it recorded (or of
// hand-made fragments) by another Service: boundaries, all-or-nothing
// sends, broadcast, reordering, duplicates, malformed input, the timeout,
// the memory bound and ident wrap-around. Last, EngineBus: datagrams through
// real engines on the simulated network.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <locabus/wire.hpp>

#include "common/error.hpp"
#include "engine/clock.hpp"
#include "engine/engine.hpp"
#include "locasock/engine_bus.hpp"
#include "locasock/locasock.hpp"
#include "sim/sim_cluster.hpp"

namespace locabus::locasock {
namespace {

using namespace std::chrono_literals;
using engine::SendResult;
using engine::SendStatus;
using Bytes = std::vector<std::byte>;

constexpr std::uint16_t kBroadcast = LOCABUS_NODE_BROADCAST;

/// `n` bytes that differ between positions and between seeds, so that a
/// fragment copied to the wrong offset or from the wrong datagram shows.
Bytes pattern(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes out(n);
  for (std::byte& b : out) b = static_cast<std::byte>(rng());
  return out;
}

Bytes to_vector(std::span<const std::byte> s) { return Bytes(s.begin(), s.end()); }

/// One message handed to the bus.
struct Sent {
  std::uint16_t node = 0;  // kBroadcast for bus.broadcast()
  std::uint8_t proto = 0;
  Bytes payload;
  bool broadcast() const { return node == kBroadcast; }
  wire::LocasockHeader header() const { return wire::LocasockHeader::read(payload); }
};

/// Records what is sent; `room` messages are accepted, then would_block;
/// `refuse` makes every call fail with that status; `break_after` makes
/// send() refuse after that many accepted messages although can_send() said
/// ok (a bus breaking its promise).
class FakeBus final : public Bus {
 public:
  SendStatus can_send(std::uint16_t, std::size_t messages) const override {
    asked_unicast.push_back(messages);
    return can(messages);
  }
  SendStatus can_broadcast(std::size_t messages) const override {
    asked_broadcast.push_back(messages);
    return can(messages);
  }
  SendResult send(std::uint16_t node, std::uint8_t proto, std::span<const std::byte> payload) override {
    return take(node, proto, payload);
  }
  SendResult broadcast(std::uint8_t proto, std::span<const std::byte> payload) override {
    return take(kBroadcast, proto, payload);
  }

  std::vector<Sent> sent;
  std::size_t room = std::numeric_limits<std::size_t>::max();
  SendStatus refuse = SendStatus::ok;
  std::size_t break_after = std::numeric_limits<std::size_t>::max();
  mutable std::vector<std::size_t> asked_unicast;
  mutable std::vector<std::size_t> asked_broadcast;

 private:
  SendStatus can(std::size_t messages) const {
    if (refuse != SendStatus::ok) return refuse;
    return messages <= room ? SendStatus::ok : SendStatus::would_block;
  }
  SendResult take(std::uint16_t node, std::uint8_t proto, std::span<const std::byte> payload) {
    if (refuse != SendStatus::ok) return {refuse, 0};
    if (room == 0 || sent.size() >= break_after) return {SendStatus::would_block, 0};
    --room;
    sent.push_back({node, proto, to_vector(payload)});
    return {SendStatus::ok, sent.size()};
  }
};

struct Received {
  std::uint16_t node = 0;
  std::uint16_t sport = 0;
  std::uint16_t dport = 0;
  bool broadcast = false;
  Bytes data;
  friend bool operator==(const Received&, const Received&) = default;
};

/// A receiving Service and what it delivered.
struct Receiver {
  explicit Receiver(const engine::Clock& clock, ServiceConfig config = {})
      : service(unused_bus, clock, config) {}

  /// Hands one message from `from` to the service, as the engine would.
  void message(std::uint16_t from, std::span<const std::byte> payload, bool broadcast = false,
               std::uint8_t proto = LOCABUS_P_LOCASOCK) {
    const engine::Message m{from, proto, payload, broadcast};
    service.on_message(m, [&](const Datagram& d) {
      got.push_back({d.node, d.sport, d.dport, d.broadcast, to_vector(d.data)});
    });
    EXPECT_LE(service.reassembly_bytes(), service.config().reassembly_memory);
  }
  /// Loops back what `from`'s bus recorded (broadcasts on the broadcast stream).
  void message(std::uint16_t from, const Sent& s) { message(from, s.payload, s.broadcast(), s.proto); }
  void all(std::uint16_t from, const std::vector<Sent>& sent) {
    for (const Sent& s : sent) message(from, s);
  }

  FakeBus unused_bus;
  Service service;
  std::vector<Received> got;
};

/// A hand-made fragment: the Table 2 header, then `body`.
Bytes fragment(std::uint16_t sport, std::uint16_t dport, std::uint16_t ident, std::uint8_t frag,
               std::uint8_t nfrags, std::span<const std::byte> body) {
  Bytes out(kHeaderLen + body.size());
  wire::LocasockHeader()
      .set_sport(sport)
      .set_dport(dport)
      .set_ident(ident)
      .set_frag(frag)
      .set_nfrags(nfrags)
      .write(out);
  if (!body.empty()) std::memcpy(out.data() + kHeaderLen, body.data(), body.size());
  return out;
}

/// Fragment `frag` of `data` as a sender would cut it.
Bytes fragment_of(std::span<const std::byte> data, std::uint16_t sport, std::uint16_t dport,
                  std::uint16_t ident, std::uint8_t frag) {
  const std::size_t off = std::size_t{frag} * kFragPayload;
  const std::size_t len = std::min(kFragPayload, data.size() - off);
  return fragment(sport, dport, ident, frag, static_cast<std::uint8_t>(fragments_for(data.size())),
                  data.subspan(off, len));
}

// ---- fragmentation ------------------------------------------------------------

TEST(Locasock, FragmentsFor) {
  EXPECT_EQ(fragments_for(0), 1u);
  EXPECT_EQ(fragments_for(1), 1u);
  EXPECT_EQ(fragments_for(1476), 1u);
  EXPECT_EQ(fragments_for(1477), 2u);
  EXPECT_EQ(fragments_for(2952), 2u);
  EXPECT_EQ(fragments_for(2953), 3u);
  EXPECT_EQ(fragments_for(65536), 45u);
  EXPECT_EQ(fragments_for(65536), kMaxFrags);
  EXPECT_EQ(fragments_for(65537), 45u);  // 45 * 1476 = 66420: the limit is in bytes, not fragments
  EXPECT_EQ(fragments_for(45 * 1476 + 1), 46u);
  EXPECT_GT(fragments_for(std::numeric_limits<std::size_t>::max()), kMaxFrags);  // no overflow to 0
  EXPECT_EQ(kFragPayload, 1476u);
  EXPECT_EQ(kMaxDatagram, 65536u);
}

TEST(LocasockSend, FragmentBoundariesRoundTripByteExact) {
  const std::vector<std::pair<std::size_t, std::size_t>> cases = {
      {0, 1},    {1, 1},    {1475, 1},   {1476, 1},   {1477, 2},
      {2952, 2}, {2953, 3}, {64944, 44}, {64945, 45}, {65536, 45}};
  for (const auto& [size, frags] : cases) {
    SCOPED_TRACE("datagram of " + std::to_string(size) + " bytes");
    engine::ManualClock clock;
    FakeBus bus;
    Service tx(bus, clock);
    const Bytes data = pattern(size, static_cast<std::uint32_t>(size));
    ASSERT_EQ(tx.send(7, 1000, 2000, data), SendStatus::ok);
    EXPECT_EQ(bus.asked_unicast, std::vector<std::size_t>{frags});

    ASSERT_EQ(bus.sent.size(), frags);
    Bytes joined;
    for (std::size_t i = 0; i < frags; ++i) {
      const Sent& s = bus.sent[i];
      EXPECT_EQ(s.node, 7);
      EXPECT_EQ(s.proto, LOCABUS_P_LOCASOCK);
      ASSERT_GE(s.payload.size(), kHeaderLen);
      ASSERT_LE(s.payload.size(), std::size_t{LOCABUS_MAX_PAYLOAD});
      const wire::LocasockHeader h = s.header();
      EXPECT_EQ(h.sport(), 1000);
      EXPECT_EQ(h.dport(), 2000);
      EXPECT_EQ(h.ident(), 0);
      EXPECT_EQ(h.frag(), i);
      EXPECT_EQ(h.nfrags(), frags);
      const std::size_t expect_len = i + 1 < frags ? kFragPayload : size - i * kFragPayload;
      EXPECT_EQ(s.payload.size() - kHeaderLen, expect_len) << "fragment " << i;
      joined.insert(joined.end(), s.payload.begin() + kHeaderLen, s.payload.end());
    }
    EXPECT_EQ(joined, data);
    // The wire bytes of the header are in network order.
    EXPECT_EQ(bus.sent[0].payload[0], std::byte{1000 >> 8});
    EXPECT_EQ(bus.sent[0].payload[1], std::byte{1000 & 0xff});
    EXPECT_EQ(tx.stats().datagrams_sent, 1u);
    EXPECT_EQ(tx.stats().fragments_sent, frags);

    Receiver rx(clock);
    rx.all(3, bus.sent);
    ASSERT_EQ(rx.got.size(), 1u);
    EXPECT_EQ(rx.got[0], (Received{3, 1000, 2000, false, data}));
    EXPECT_EQ(rx.service.partial_datagrams(), 0u);
    EXPECT_EQ(rx.service.reassembly_bytes(), 0u);
    EXPECT_EQ(rx.service.stats().datagrams_delivered, 1u);
    EXPECT_EQ(rx.service.stats().fragments_received, frags);
    EXPECT_EQ(rx.service.stats().malformed, 0u);
  }
}

TEST(LocasockSend, OverMaxIsTooLargeAndSendsNothing) {
  engine::ManualClock clock;
  FakeBus bus;
  Service tx(bus, clock);
  const Bytes data(kMaxDatagram + 1);
  EXPECT_EQ(tx.send(7, 1, 2, data), SendStatus::too_large);
  EXPECT_EQ(tx.send(kBroadcast, 1, 2, data), SendStatus::too_large);
  EXPECT_TRUE(bus.sent.empty());
  EXPECT_EQ(tx.stats().send_refused, 2u);
  EXPECT_EQ(tx.stats().datagrams_sent, 0u);
  EXPECT_NE(describe(SendStatus::too_large, 7).find("65536"), std::string::npos);
}

TEST(LocasockSend, AllOrNothingWhenTheBusCannotTakeEveryFragment) {
  engine::ManualClock clock;
  FakeBus bus;
  Service tx(bus, clock);
  const Bytes data = pattern(kMaxDatagram, 1);
  bus.room = 44;  // one short of the 45 fragments
  EXPECT_EQ(tx.send(7, 1, 2, data), SendStatus::would_block);
  EXPECT_TRUE(bus.sent.empty()) << "a refused datagram must queue no fragment";
  EXPECT_EQ(bus.asked_unicast, std::vector<std::size_t>{45});
  EXPECT_EQ(tx.stats().send_refused, 1u);
  EXPECT_EQ(tx.stats().fragments_sent, 0u);

  bus.refuse = SendStatus::unknown_node;
  bus.room = 1000;
  EXPECT_EQ(tx.send(7, 1, 2, data), SendStatus::unknown_node);
  EXPECT_EQ(tx.send(kBroadcast, 1, 2, data), SendStatus::unknown_node);
  EXPECT_TRUE(bus.sent.empty());
  EXPECT_EQ(tx.stats().send_refused, 3u);

  // Once there is room, the datagram goes out whole, and a refused send did
  // not use up an ident.
  bus.refuse = SendStatus::ok;
  bus.room = 45;
  EXPECT_EQ(tx.send(7, 1, 2, data), SendStatus::ok);
  ASSERT_EQ(bus.sent.size(), 45u);
  EXPECT_EQ(bus.sent.front().header().ident(), 0);
  EXPECT_EQ(tx.stats().datagrams_sent, 1u);
}

TEST(LocasockSend, BusBreakingItsPromiseIsCountedAsIncomplete) {
  engine::ManualClock clock;
  FakeBus bus;
  Service tx(bus, clock);
  bus.break_after = 2;
  EXPECT_EQ(tx.send(7, 1, 2, pattern(3 * kFragPayload, 1)), SendStatus::would_block);
  EXPECT_EQ(bus.sent.size(), 2u);
  EXPECT_EQ(tx.stats().send_incomplete, 1u);
  EXPECT_EQ(tx.stats().fragments_sent, 2u);
  EXPECT_EQ(tx.stats().datagrams_sent, 0u);
}

// ---- broadcast ------------------------------------------------------------------

TEST(LocasockBroadcast, UsesBusBroadcastAndTheReceiverSeesBroadcast) {
  engine::ManualClock clock;
  FakeBus bus;
  Service tx(bus, clock);
  const Bytes data = pattern(3000, 5);
  ASSERT_EQ(tx.send(kBroadcast, 10, 20, data), SendStatus::ok);
  EXPECT_EQ(bus.asked_broadcast, std::vector<std::size_t>{3});
  EXPECT_TRUE(bus.asked_unicast.empty());
  ASSERT_EQ(bus.sent.size(), 3u);
  for (const Sent& s : bus.sent) EXPECT_TRUE(s.broadcast()) << "sent with bus.send(), not bus.broadcast()";

  Receiver rx(clock);
  rx.all(4, bus.sent);
  ASSERT_EQ(rx.got.size(), 1u);
  EXPECT_EQ(rx.got[0], (Received{4, 10, 20, true, data}));

  // Unicast and broadcast share the ident counter.
  ASSERT_EQ(tx.send(9, 10, 20, data), SendStatus::ok);
  EXPECT_EQ(bus.sent.back().header().ident(), 1);
  EXPECT_FALSE(bus.sent.back().broadcast());
}

TEST(LocasockBroadcast, TheStreamsOfOneSenderAreReassembledApart) {
  engine::ManualClock clock;
  Receiver rx(clock);
  const Bytes uni = pattern(2000, 1);
  const Bytes bc = pattern(2000, 2);
  // Same node, sport and ident on both streams, interleaved.
  rx.message(5, fragment_of(uni, 1, 2, 9, 0), false);
  rx.message(5, fragment_of(bc, 1, 2, 9, 0), true);
  EXPECT_EQ(rx.service.partial_datagrams(), 2u);
  rx.message(5, fragment_of(bc, 1, 2, 9, 1), true);
  rx.message(5, fragment_of(uni, 1, 2, 9, 1), false);
  ASSERT_EQ(rx.got.size(), 2u);
  EXPECT_EQ(rx.got[0], (Received{5, 1, 2, true, bc}));
  EXPECT_EQ(rx.got[1], (Received{5, 1, 2, false, uni}));
  EXPECT_EQ(rx.service.stats().reassembly_replaced, 0u);
}

// ---- reassembly ----------------------------------------------------------------

TEST(LocasockReassembly, ReorderedAndInterleavedFragmentsOfSeveralNodes) {
  engine::ManualClock clock;
  const std::vector<std::size_t> sizes = {0, 1, 1476, 1477, 5000, 20000, 65536, 65535, 2953};
  struct Tagged {
    std::uint16_t node;
    Sent sent;
  };
  std::vector<Tagged> wire;
  std::vector<Received> expected;
  std::uint32_t seed = 1;
  for (std::uint16_t node : {1, 2, 3}) {
    FakeBus bus;
    Service tx(bus, clock);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      // The same ports for several datagrams: only the ident tells them apart.
      const auto sport = static_cast<std::uint16_t>(100 + i % 2);
      const Bytes data = pattern(sizes[i], seed++);
      const std::uint16_t to = i % 3 == 0 ? kBroadcast : 50;
      ASSERT_EQ(tx.send(to, sport, 7, data), SendStatus::ok);
      expected.push_back({node, sport, 7, to == kBroadcast, data});
    }
    for (Sent& s : bus.sent) wire.push_back({node, std::move(s)});
  }
  std::mt19937 rng(42);
  std::shuffle(wire.begin(), wire.end(), rng);

  Receiver rx(clock);
  for (const Tagged& t : wire) rx.message(t.node, t.sent);
  auto order = [](const Received& a, const Received& b) {
    return std::tie(a.node, a.broadcast, a.sport, a.data) < std::tie(b.node, b.broadcast, b.sport, b.data);
  };
  std::sort(expected.begin(), expected.end(), order);
  std::sort(rx.got.begin(), rx.got.end(), order);
  EXPECT_EQ(rx.got.size(), expected.size());
  EXPECT_TRUE(rx.got == expected) << "a datagram was lost, changed or mixed with another";
  EXPECT_EQ(rx.service.partial_datagrams(), 0u);
  EXPECT_EQ(rx.service.reassembly_bytes(), 0u);
  const ServiceStats& st = rx.service.stats();
  EXPECT_EQ(st.datagrams_delivered, expected.size());
  EXPECT_EQ(st.fragments_received, wire.size());
  EXPECT_EQ(st.malformed + st.duplicates + st.reassembly_replaced + st.reassembly_evicted, 0u);
}

TEST(LocasockReassembly, SingleFragmentIsDeliveredFromTheMessageWithoutACopy) {
  engine::ManualClock clock;
  FakeBus bus;
  Service rx(bus, clock);
  const Bytes msg = fragment(1, 2, 3, 0, 1, pattern(100, 1));
  const std::byte* seen = nullptr;
  rx.on_message(engine::Message{4, LOCABUS_P_LOCASOCK, msg, false}, [&](const Datagram& d) {
    seen = d.data.data();
    EXPECT_EQ(d.data.size(), 100u);
  });
  EXPECT_EQ(seen, msg.data() + kHeaderLen);
  EXPECT_EQ(rx.reassembly_bytes(), 0u);
  EXPECT_EQ(rx.partial_datagrams(), 0u);
}

TEST(LocasockReassembly, DuplicateFragmentIsIgnoredAndCounted) {
  engine::ManualClock clock;
  Receiver rx(clock);
  const Bytes data = pattern(4000, 3);
  rx.message(1, fragment_of(data, 5, 6, 77, 0));
  rx.message(1, fragment_of(data, 5, 6, 77, 0));
  rx.message(1, fragment_of(data, 5, 6, 77, 2));
  rx.message(1, fragment_of(data, 5, 6, 77, 2));  // the last one, repeated
  EXPECT_TRUE(rx.got.empty());
  EXPECT_EQ(rx.service.partial_datagrams(), 1u);
  rx.message(1, fragment_of(data, 5, 6, 77, 1));
  ASSERT_EQ(rx.got.size(), 1u);
  EXPECT_EQ(rx.got[0].data, data);
  EXPECT_EQ(rx.service.stats().duplicates, 2u);
  EXPECT_EQ(rx.service.stats().reassembly_replaced, 0u);
  EXPECT_EQ(rx.service.stats().datagrams_delivered, 1u);
}

TEST(LocasockReassembly, MalformedFragmentsAreCountedAndDropped) {
  const Bytes full = pattern(kFragPayload, 1);
  const Bytes body = pattern(100, 2);
  const std::vector<std::pair<std::string, Bytes>> cases = {
      {"empty message", {}},
      {"7 bytes, shorter than the header", Bytes(7)},
      {"nfrags 0", fragment(1, 2, 3, 0, 0, body)},
      {"nfrags 46", fragment(1, 2, 3, 0, 46, full)},
      {"nfrags 255", fragment(1, 2, 3, 254, 255, body)},
      {"frag == nfrags", fragment(1, 2, 3, 2, 2, body)},
      {"frag > nfrags", fragment(1, 2, 3, 9, 2, body)},
      {"short non-last fragment", fragment(1, 2, 3, 0, 2, pattern(kFragPayload - 1, 3))},
      {"long non-last fragment", fragment(1, 2, 3, 0, 2, pattern(kFragPayload + 1, 3))},
      {"long last fragment", fragment(1, 2, 3, 1, 2, pattern(kFragPayload + 1, 3))},
      {"long single fragment", fragment(1, 2, 3, 0, 1, pattern(kFragPayload + 1, 3))},
      {"empty last fragment of two", fragment(1, 2, 3, 1, 2, {})},
      {"last fragment past 64 KB", fragment(1, 2, 3, 44, 45, pattern(65536 - 44 * kFragPayload + 1, 3))},
  };
  engine::ManualClock clock;
  Receiver rx(clock);
  std::uint64_t expect = 0;
  for (const auto& [what, msg] : cases) {
    SCOPED_TRACE(what);
    rx.message(1, msg);
    EXPECT_EQ(rx.service.stats().malformed, ++expect);
    EXPECT_EQ(rx.service.partial_datagrams(), 0u);
  }
  // Not a Locasock message at all.
  rx.message(1, fragment(1, 2, 3, 0, 1, body), false, LOCABUS_P_KCCM);
  EXPECT_EQ(rx.service.stats().malformed, ++expect);
  EXPECT_TRUE(rx.got.empty());
  EXPECT_EQ(rx.service.reassembly_bytes(), 0u);
  EXPECT_EQ(rx.service.stats().fragments_received, expect);

  // The largest valid last fragment of 45 is accepted.
  rx.message(1, fragment(1, 2, 3, 44, 45, pattern(65536 - 44 * kFragPayload, 3)));
  EXPECT_EQ(rx.service.stats().malformed, expect);
  EXPECT_EQ(rx.service.partial_datagrams(), 1u);
}

TEST(LocasockReassembly, GarbageNeverCrashesOrBreaksTheBounds) {
  engine::ManualClock clock;
  ServiceConfig config;
  config.reassembly_memory = 4 * kMaxDatagram;
  Receiver rx(clock, config);
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    Bytes msg;
    if (rng() % 4 == 0) {
      msg = pattern(rng() % (LOCABUS_MAX_PAYLOAD + 1), static_cast<std::uint32_t>(i));
    } else {
      // Plausible headers: few nodes, ports and idents, so keys collide.
      const auto nfrags = static_cast<std::uint8_t>(rng() % 47);
      const auto frag = static_cast<std::uint8_t>(rng() % 47);
      const std::size_t len = rng() % 2 ? kFragPayload : rng() % (kFragPayload + 2);
      msg = fragment(static_cast<std::uint16_t>(rng() % 2), 1, static_cast<std::uint16_t>(rng() % 8), frag,
                     nfrags, pattern(len, static_cast<std::uint32_t>(rng() % 3)));
    }
    rx.message(static_cast<std::uint16_t>(rng() % 3), msg, rng() % 2 == 0);
    if (i % 1000 == 0) {
      clock.advance_by(1s);
      rx.service.expire();
    }
  }
  const ServiceStats& st = rx.service.stats();
  EXPECT_GT(st.malformed, 0u);
  EXPECT_EQ(st.fragments_received, 20000u);
  clock.advance_by(1h);
  rx.service.expire();
  EXPECT_EQ(rx.service.reassembly_bytes(), 0u);
  EXPECT_EQ(rx.service.partial_datagrams(), 0u);
}

TEST(LocasockReassembly, InconsistentNfragsReplacesThePartial) {
  engine::ManualClock clock;
  Receiver rx(clock);
  const Bytes three = pattern(3 * kFragPayload, 1);
  const Bytes four = pattern(4 * kFragPayload, 2);
  rx.message(1, fragment_of(three, 5, 6, 8, 0));
  rx.message(1, fragment_of(three, 5, 6, 8, 1));
  // The same key with another nfrags cannot belong to that datagram.
  rx.message(1, fragment_of(four, 5, 6, 8, 2));
  EXPECT_EQ(rx.service.stats().reassembly_replaced, 1u);
  EXPECT_EQ(rx.service.partial_datagrams(), 1u);
  EXPECT_EQ(rx.service.reassembly_bytes(), 4 * kFragPayload);
  for (std::uint8_t f : {0, 1, 3}) rx.message(1, fragment_of(four, 5, 6, 8, f));
  ASSERT_EQ(rx.got.size(), 1u);
  EXPECT_EQ(rx.got[0].data, four);

  // A single-fragment datagram with the key of a partial replaces it too.
  rx.message(1, fragment_of(three, 5, 6, 9, 0));
  const Bytes one = pattern(10, 3);
  rx.message(1, fragment_of(one, 5, 6, 9, 0));
  ASSERT_EQ(rx.got.size(), 2u);
  EXPECT_EQ(rx.got[1].data, one);
  EXPECT_EQ(rx.service.stats().reassembly_replaced, 2u);
  EXPECT_EQ(rx.service.partial_datagrams(), 0u);
  EXPECT_EQ(rx.service.reassembly_bytes(), 0u);
}

TEST(LocasockReassembly, SenderRestartedMidDatagramDoesNotMixTheTwo) {
  engine::ManualClock clock;
  FakeBus old_bus;
  Service old_tx(old_bus, clock);
  ASSERT_EQ(old_tx.send(2, 5, 6, pattern(4 * kFragPayload, 1)), SendStatus::ok);
  Receiver rx(clock);
  rx.message(1, old_bus.sent[0]);
  rx.message(1, old_bus.sent[1]);  // then the sender died

  // Its next incarnation starts over at ident 0, with the same ports.
  FakeBus new_bus;
  Service new_tx(new_bus, clock);
  const Bytes data = pattern(4 * kFragPayload, 2);
  ASSERT_EQ(new_tx.send(2, 5, 6, data), SendStatus::ok);
  rx.all(1, new_bus.sent);
  ASSERT_EQ(rx.got.size(), 1u);
  EXPECT_EQ(rx.got[0].data, data);
  EXPECT_EQ(rx.service.stats().reassembly_replaced, 1u);
  EXPECT_EQ(rx.service.stats().duplicates, 0u);
  EXPECT_EQ(rx.service.partial_datagrams(), 0u);
}

TEST(LocasockReassembly, HoldsOnlyWhatTheDatagramNeeds) {
  engine::ManualClock clock;
  Receiver rx(clock);
  const Bytes small = pattern(kFragPayload + 1, 1);
  // The last fragment first: the size is known exactly.
  rx.message(1, fragment_of(small, 1, 1, 1, 1));
  EXPECT_EQ(rx.service.reassembly_bytes(), kFragPayload + 1);
  // Another fragment first: nfrags full fragments at most.
  rx.message(1, fragment_of(small, 1, 1, 2, 0));
  EXPECT_EQ(rx.service.reassembly_bytes(), (kFragPayload + 1) + 2 * kFragPayload);
  // 45 fragments: capped at 64 KB, not 45 * 1476.
  const Bytes big = pattern(kMaxDatagram, 2);
  rx.message(1, fragment_of(big, 1, 1, 3, 0));
  EXPECT_EQ(rx.service.reassembly_bytes(), (kFragPayload + 1) + 2 * kFragPayload + kMaxDatagram);
  EXPECT_EQ(rx.service.partial_datagrams(), 3u);

  rx.message(1, fragment_of(small, 1, 1, 1, 0));
  rx.message(1, fragment_of(small, 1, 1, 2, 1));
  ASSERT_EQ(rx.got.size(), 2u);
  EXPECT_EQ(rx.got[0].data, small);
  EXPECT_EQ(rx.got[1].data, small);
  EXPECT_EQ(rx.service.reassembly_bytes(), kMaxDatagram);
}

TEST(LocasockReassembly, DeliverMayReenterTheService) {
  engine::ManualClock clock;
  FakeBus bus;
  Service svc(bus, clock);
  const Bytes a = pattern(2 * kFragPayload, 1);
  const Bytes b = pattern(10, 2);
  const Bytes b_msg = fragment_of(b, 1, 2, 5, 0);
  svc.on_message(engine::Message{1, LOCABUS_P_LOCASOCK, fragment_of(a, 1, 2, 4, 0), false},
                 [](const Datagram&) {});
  std::vector<Bytes> got;
  const Bytes last = fragment_of(a, 1, 2, 4, 1);
  svc.on_message(engine::Message{1, LOCABUS_P_LOCASOCK, last, false}, [&](const Datagram& d) {
    got.push_back(to_vector(d.data));
    // Answer, and take in another message, from inside the callback.
    EXPECT_EQ(svc.send(1, 2, 1, d.data), SendStatus::ok);
    svc.on_message(engine::Message{1, LOCABUS_P_LOCASOCK, b_msg, false},
                   [&](const Datagram& inner) { got.push_back(to_vector(inner.data)); });
    got.push_back(to_vector(d.data));  // still intact
  });
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], a);
  EXPECT_EQ(got[1], b);
  EXPECT_EQ(got[2], a);
  EXPECT_EQ(bus.sent.size(), 2u);
}

// ---- timeout, memory, nodes ------------------------------------------------------

TEST(LocasockTimeout, ExpireFreesPartialsAfterTheTimeout) {
  engine::ManualClock clock(100s);
  Receiver rx(clock);
  EXPECT_FALSE(rx.service.next_deadline());
  EXPECT_EQ(rx.service.expire(), 0u);

  const Bytes a = pattern(3 * kFragPayload, 1);
  const Bytes b = pattern(2 * kFragPayload, 2);
  rx.message(1, fragment_of(a, 1, 2, 1, 0));
  clock.advance_by(2s);
  rx.message(1, fragment_of(a, 1, 2, 1, 1));  // later fragments do not extend it
  rx.message(2, fragment_of(b, 1, 2, 1, 0));
  EXPECT_EQ(rx.service.partial_datagrams(), 2u);
  EXPECT_EQ(rx.service.reassembly_bytes(), 5 * kFragPayload);
  EXPECT_EQ(rx.service.next_deadline(), 105s);

  clock.advance_to(105s - 1ns);
  EXPECT_EQ(rx.service.expire(), 0u);
  EXPECT_EQ(rx.service.partial_datagrams(), 2u);
  clock.advance_to(105s);
  EXPECT_EQ(rx.service.expire(), 1u);
  EXPECT_EQ(rx.service.partial_datagrams(), 1u);
  EXPECT_EQ(rx.service.reassembly_bytes(), 2 * kFragPayload);
  EXPECT_EQ(rx.service.next_deadline(), 107s);
  EXPECT_EQ(rx.service.stats().reassembly_timeouts, 1u);

  // The rest of the expired datagram starts afresh, never completes the old one.
  rx.message(1, fragment_of(a, 1, 2, 1, 2));
  EXPECT_TRUE(rx.got.empty());
  EXPECT_EQ(rx.service.next_deadline(), 107s);

  clock.advance_to(200s);
  EXPECT_EQ(rx.service.expire(), 2u);
  EXPECT_EQ(rx.service.partial_datagrams(), 0u);
  EXPECT_EQ(rx.service.reassembly_bytes(), 0u);
  EXPECT_FALSE(rx.service.next_deadline());
  EXPECT_EQ(rx.service.stats().reassembly_timeouts, 3u);
  EXPECT_TRUE(rx.got.empty());
}

TEST(LocasockMemory, TheBoundEvictsTheOldestPartials) {
  engine::ManualClock clock;
  ServiceConfig config;
  config.reassembly_memory = 2 * kMaxDatagram + 3 * kFragPayload;
  Receiver rx(clock, config);
  const Bytes a = pattern(kMaxDatagram, 1);
  const Bytes b = pattern(kMaxDatagram, 2);
  const Bytes c = pattern(kMaxDatagram, 3);
  const Bytes d = pattern(3 * kFragPayload, 4);
  rx.message(1, fragment_of(a, 1, 2, 1, 0));
  clock.advance_by(1ms);
  rx.message(1, fragment_of(b, 1, 2, 2, 0));
  clock.advance_by(1ms);
  rx.message(2, fragment_of(d, 1, 2, 1, 0));
  EXPECT_EQ(rx.service.reassembly_bytes(), config.reassembly_memory);
  EXPECT_EQ(rx.service.stats().reassembly_evicted, 0u);

  // c does not fit: a, the oldest, goes; b and d stay.
  rx.message(3, fragment_of(c, 1, 2, 1, 0));
  EXPECT_EQ(rx.service.stats().reassembly_evicted, 1u);
  EXPECT_EQ(rx.service.partial_datagrams(), 3u);
  EXPECT_EQ(rx.service.reassembly_bytes(), config.reassembly_memory);
  EXPECT_EQ(rx.service.next_deadline(), clock.now() - 2ms + 1ms + 5s);  // b's

  for (std::uint8_t f = 1; f < 45; ++f) rx.message(1, fragment_of(b, 1, 2, 2, f));
  for (std::uint8_t f = 1; f < 45; ++f) rx.message(3, fragment_of(c, 1, 2, 1, f));
  for (std::uint8_t f = 1; f < 3; ++f) rx.message(2, fragment_of(d, 1, 2, 1, f));
  ASSERT_EQ(rx.got.size(), 3u);
  EXPECT_EQ(rx.got[0].data, b);
  EXPECT_EQ(rx.got[1].data, c);
  EXPECT_EQ(rx.got[2].data, d);
  EXPECT_EQ(rx.service.reassembly_bytes(), 0u);
  EXPECT_EQ(rx.service.stats().reassembly_evicted, 1u);

  // Many small partials make room for one large one, oldest first.
  for (std::uint16_t i = 0; i < 40; ++i) rx.message(4, fragment_of(d, 1, 2, i, 0));
  const std::size_t before = rx.service.stats().reassembly_evicted;
  rx.message(5, fragment_of(a, 1, 2, 1, 0));
  rx.message(5, fragment_of(a, 1, 2, 2, 0));
  EXPECT_LE(rx.service.reassembly_bytes(), config.reassembly_memory);
  EXPECT_GT(rx.service.stats().reassembly_evicted, before);
  // The newest small partial survived; the oldest did not.
  rx.message(4, fragment_of(d, 1, 2, 39, 1));
  rx.message(4, fragment_of(d, 1, 2, 39, 2));
  ASSERT_EQ(rx.got.size(), 4u);
  EXPECT_EQ(rx.got[3].data, d);
  const std::size_t partials = rx.service.partial_datagrams();
  rx.message(4, fragment_of(d, 1, 2, 0, 1));
  EXPECT_EQ(rx.service.partial_datagrams(), partials + 1) << "ident 0's partial should have been evicted";
}

TEST(LocasockService, DropNodeFreesItsPartials) {
  engine::ManualClock clock;
  Receiver rx(clock);
  const Bytes a = pattern(2 * kFragPayload, 1);
  rx.message(1, fragment_of(a, 1, 2, 1, 0));
  rx.message(1, fragment_of(a, 1, 2, 2, 0), true);
  rx.message(2, fragment_of(a, 1, 2, 1, 0));
  EXPECT_EQ(rx.service.drop_node(1), 2u);
  EXPECT_EQ(rx.service.partial_datagrams(), 1u);
  EXPECT_EQ(rx.service.reassembly_bytes(), 2 * kFragPayload);
  EXPECT_EQ(rx.service.stats().reassembly_dropped, 2u);
  rx.message(1, fragment_of(a, 1, 2, 1, 1));
  EXPECT_TRUE(rx.got.empty());
  rx.message(2, fragment_of(a, 1, 2, 1, 1));
  ASSERT_EQ(rx.got.size(), 1u);
  EXPECT_EQ(rx.got[0].node, 2);
}

// ---- idents ---------------------------------------------------------------------

TEST(LocasockIdent, WrapsAroundAndAWrappedIdentReplacesAStalePartial) {
  engine::ManualClock clock;
  FakeBus bus;
  Service tx(bus, clock);
  Receiver rx(clock);

  // Ident 0: the receiver joined the stream late and missed fragment 0.
  const Bytes first = pattern(3 * kFragPayload, 1);
  ASSERT_EQ(tx.send(2, 5, 6, first), SendStatus::ok);
  rx.message(1, bus.sent[1]);
  rx.message(1, bus.sent[2]);
  bus.sent.clear();

  // Idents 1 .. 65535, then 0 again.
  const std::byte one[1] = {std::byte{0x5a}};
  for (std::uint32_t i = 1; i <= 0xffff; ++i) {
    ASSERT_EQ(tx.send(2, 5, 6, one), SendStatus::ok);
    ASSERT_EQ(bus.sent.back().header().ident(), i);
    rx.message(1, bus.sent.back());
    bus.sent.clear();
  }
  EXPECT_EQ(rx.got.size(), 0xffffu);
  const Bytes again = pattern(3 * kFragPayload, 2);
  ASSERT_EQ(tx.send(2, 5, 6, again), SendStatus::ok);
  ASSERT_EQ(bus.sent.size(), 3u);
  EXPECT_EQ(bus.sent[0].header().ident(), 0);
  rx.all(1, bus.sent);
  ASSERT_EQ(rx.got.size(), 0x10000u);
  EXPECT_EQ(rx.got.back().data, again) << "the wrapped ident was merged into the stale partial";
  EXPECT_EQ(rx.service.stats().reassembly_replaced, 1u);
  EXPECT_EQ(rx.service.partial_datagrams(), 0u);
  EXPECT_EQ(rx.service.reassembly_bytes(), 0u);
  EXPECT_EQ(tx.stats().datagrams_sent, 0x10001u);
}

TEST(LocasockIdent, IdentsSentToOtherNodesCountTowardTheWrap) {
  engine::ManualClock clock;
  Receiver rx(clock);
  const Bytes old = pattern(3 * kFragPayload, 1);
  rx.message(1, fragment_of(old, 5, 6, 100, 1));
  rx.message(1, fragment_of(old, 5, 6, 100, 2));
  // The sender sends most datagrams elsewhere: this node sees every 1000th.
  const std::byte one[1] = {};
  for (std::uint32_t i = 1100; i < 100 + 0x10000; i += 1000) {
    rx.message(1, fragment(5, 6, static_cast<std::uint16_t>(i), 0, 1, one));
  }
  const Bytes again = pattern(3 * kFragPayload, 2);
  for (std::uint8_t f = 0; f < 3; ++f) rx.message(1, fragment_of(again, 5, 6, 100, f));
  ASSERT_FALSE(rx.got.empty());
  EXPECT_EQ(rx.got.back().data, again);
  EXPECT_EQ(rx.service.partial_datagrams(), 0u);
}

// ---- over the engine -------------------------------------------------------------

/// The simulation's virtual time, for the services beside its engines.
class ClusterClock final : public engine::Clock {
 public:
  explicit ClusterClock(const sim::SimCluster& cluster) : cluster_(cluster) {}
  engine::Nanos now() const noexcept override { return cluster_.now(); }
  engine::Nanos wall() const noexcept override { return cluster_.now(); }

 private:
  const sim::SimCluster& cluster_;
};

TEST(LocasockOverEngine, DatagramsCrossALossyNetworkThroughEngineBus) {
  sim::LinkParams link;
  link.loss = 0.05;
  link.reorder = 0.05;
  sim::SimCluster c(3, 3, {}, link);
  ASSERT_TRUE(c.run_until([&] { return c.converged(); }, 30s));
  ClusterClock clock(c);
  std::vector<std::unique_ptr<EngineBus>> buses;
  std::vector<std::unique_ptr<Service>> services;
  std::vector<std::vector<Received>> got(c.size());
  for (std::size_t i = 0; i < c.size(); ++i) {
    buses.push_back(std::make_unique<EngineBus>(c.node(i)));
    services.push_back(std::make_unique<Service>(*buses.back(), clock));
  }
  std::uint64_t other = 0;
  c.on_step([&](std::size_t idx) {
    c.node(idx).receive(1u << 20, [&](const engine::Message& m) {
      if (m.proto != LOCABUS_P_LOCASOCK) {
        ++other;
        return;
      }
      services[idx]->on_message(m, [&](const Datagram& d) {
        got[idx].push_back({d.node, d.sport, d.dport, d.broadcast, to_vector(d.data)});
      });
    });
  });
  auto send = [&](std::size_t from, std::uint16_t to, std::uint16_t port, const Bytes& data) {
    SendStatus st;
    while ((st = services[from]->send(to, port, port, data)) == SendStatus::would_block) c.run_for(1ms);
    ASSERT_EQ(st, SendStatus::ok) << describe(st, to);
  };

  // Node 1 to node 3: datagrams of every size class, in order.
  std::vector<Received> to3;
  for (std::size_t size : {kMaxDatagram, std::size_t{0}, std::size_t{1}, kFragPayload, kFragPayload + 1}) {
    const Bytes data = pattern(size, static_cast<std::uint32_t>(size) + 1);
    send(0, 3, 11, data);
    to3.push_back({1, 11, 11, false, data});
  }
  // Node 2 to everyone.
  const Bytes all = pattern(kMaxDatagram - 1, 99);
  send(1, kBroadcast, 22, all);
  const Received bc{2, 22, 22, true, all};

  ASSERT_TRUE(c.run_until([&] { return got[2].size() == to3.size() + 1 && got[0].size() == 1; }, 60s))
      << "node 1 got " << got[0].size() << ", node 3 got " << got[2].size();
  c.run_for(1s);
  EXPECT_EQ(got[0], std::vector<Received>{bc});
  EXPECT_TRUE(got[1].empty()) << "the broadcaster does not hear itself";
  std::vector<Received> unicast;
  for (const Received& r : got[2]) {
    if (r.broadcast) {
      EXPECT_EQ(r, bc);
    } else {
      unicast.push_back(r);
    }
  }
  EXPECT_TRUE(unicast == to3) << "unicast datagrams lost, damaged or out of order";
  EXPECT_EQ(other, 0u);
  EXPECT_GT(c.net().stats().lost, 0u) << "the link lost nothing: the test proves less than it claims";
  for (const auto& svc : services) {
    EXPECT_EQ(svc->partial_datagrams(), 0u);
    EXPECT_EQ(svc->stats().malformed + svc->stats().duplicates + svc->stats().reassembly_replaced, 0u);
  }
  EXPECT_EQ(services[0]->stats().fragments_sent, 45u + 1 + 1 + 1 + 2);
  EXPECT_EQ(services[1]->stats().fragments_sent, 45u);

  // The engine's refusals come through: no such node, or ourselves.
  EXPECT_EQ(services[0]->send(9, 1, 1, all), SendStatus::unknown_node);
  EXPECT_EQ(services[0]->send(1, 1, 1, all), SendStatus::invalid_node);
}

// ---- configuration -----------------------------------------------------------------

TEST(LocasockConfig, ValidateRejectsBadSettings) {
  ServiceConfig ok;
  EXPECT_NO_THROW(ok.validate());
  ServiceConfig zero_timeout;
  zero_timeout.reassembly_timeout = 0s;
  EXPECT_THROW(zero_timeout.validate(), Error);
  ServiceConfig small;
  small.reassembly_memory = kMaxDatagram - 1;
  try {
    small.validate();
    ADD_FAILURE() << "reassembly_memory below one datagram was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("reassembly_memory"), std::string::npos) << e.what();
  }
  engine::ManualClock clock;
  FakeBus bus;
  EXPECT_THROW((Service(bus, clock, small)), Error);
  small.reassembly_memory = kMaxDatagram;
  EXPECT_NO_THROW((Service(bus, clock, small)));
}

TEST(LocasockConfig, DescribeNamesBroadcastAndTheDatagramLimit) {
  EXPECT_NE(describe(SendStatus::would_block, kBroadcast).find("broadcast"), std::string::npos);
  EXPECT_NE(describe(SendStatus::too_large, 3).find("65536"), std::string::npos);
  EXPECT_NE(describe(SendStatus::unknown_node, 3).find("node 3"), std::string::npos);
  EXPECT_NE(describe(SendStatus::ok, 3).find("queued"), std::string::npos);
}

}  // namespace
}  // namespace locabus::locasock
