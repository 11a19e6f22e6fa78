// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Review of issue 12's daemon (flow control between daemons): defects
// found by reading, each pinned by a test.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include <locabus/wire.h>

#include "daemon/flow.hpp"
#include "engine/clock.hpp"

namespace locabus::daemon {
namespace {

using engine::SendStatus;

struct Packet {
  std::uint16_t to = 0;
  std::vector<std::byte> bytes;
};

// Captures what a FlowControl sends.
struct Wire {
  std::vector<Packet> out;
  SendStatus operator()(std::uint16_t node, std::span<const std::byte> p) {
    out.push_back(Packet{node, {p.begin(), p.end()}});
    return SendStatus::ok;
  }
};

constexpr std::uint16_t kA = 1, kB = 2;
constexpr StreamKey kKey = stream_key(20);

// Delivers everything `from` sent to `to`.
void carry(Wire& w, FlowControl& to, std::uint16_t from, std::vector<ClientFailure>& failures) {
  for (const Packet& p : w.out)
    to.on_message(from, p.bytes, [&](const ClientFailure& f) { failures.push_back(f); });
  w.out.clear();
}

// A sending daemon restarts while the receiving daemon still holds messages
// of its previous life for a slow endpoint. When that endpoint closes, the
// receiver refuses them (CLOSED) with the old life's generation. The new
// life must not take that refusal for its own messages: they were neither
// refused nor lost.
TEST(FlowReview, RefusalForAPreviousLifeIsNotAppliedAfterRestart) {
  engine::ManualClock clock;
  FlowControl b(clock);
  std::vector<ClientFailure> failures;

  std::uint64_t engine_id = 0;
  auto send_messages = [&](FlowControl& a, Wire& w, std::uint64_t client, std::uint64_t n) {
    ASSERT_EQ(a.ensure_open(kB, [&](std::uint16_t node, std::span<const std::byte> p) { return w(node, p); }),
              SendStatus::ok);
    for (std::uint64_t i = 0; i < n; ++i) a.sent(kB, kKey, Origin{client, i}, engine_id++);
  };

  // Life 1 of A: 64 messages; B's reader takes none of them.
  std::vector<StreamTag> held;
  {
    FlowControl a1(clock);
    Wire w;
    send_messages(a1, w, 7, 64);
    carry(w, b, kA, failures);  // the OPEN
    for (int i = 0; i < 64; ++i) {
      bool over = false;
      held.push_back(b.arrived(kA, kKey, over));
      ASSERT_FALSE(over);
    }
  }  // A's daemon dies; it comes back with no memory of life 1.

  FlowControl a2(clock);
  Wire w2;
  send_messages(a2, w2, 9, 10);  // a client of the new life sends 10 messages
  carry(w2, b, kA, failures);    // B hears the new OPEN
  for (int i = 0; i < 10; ++i) {
    bool over = false;
    (void)b.arrived(kA, kKey, over);
  }

  // B's slow endpoint closes: what it still held of life 1 is refused.
  for (const StreamTag& t : held) b.refuse(t, LOCABUS_REFUSE_CLOSED);
  Wire back;
  b.flush([&](std::uint16_t node, std::span<const std::byte> p) { return back(node, p); });
  carry(back, a2, kB, failures);

  // None of the new life's messages was refused.
  EXPECT_TRUE(failures.empty()) << "client " << failures.front().client << " told that messages "
                                << failures.front().first << ".."
                                << failures.front().first + failures.front().count << " failed";
}

// A datagram's fragments share one number, and a datagram is named once
// (docs/API.md). When a connection ends, the engine fails the fragments it
// had not had acknowledged (send_failed) and the reset fails the rest that
// the peer's daemon had not confirmed: a datagram that straddles the two
// must still be named once.
TEST(FlowReview, DatagramSplitByAckIsReportedOnce) {
  engine::ManualClock clock;
  FlowControl a(clock);
  Wire w;
  ASSERT_EQ(a.ensure_open(kB, [&](std::uint16_t node, std::span<const std::byte> p) { return w(node, p); }),
            SendStatus::ok);
  const StreamKey key = stream_key(LOCABUS_P_LOCASOCK, 7000);
  for (std::uint64_t frag = 0; frag < 3; ++frag) a.sent(kB, key, Origin{7, 5}, 10 + frag);  // datagram 5

  std::vector<ClientFailure> failures;
  auto fail = [&](const ClientFailure& f) { failures.push_back(f); };
  a.on_send_failed(kB, 11, 2, LOCABUS_FAIL_PEER_DEAD, fail);  // fragments 1 and 2 were not acknowledged
  a.on_reset(kB, LOCABUS_FAIL_PEER_DEAD, fail);               // fragment 0 was, but not confirmed
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].client, 7u);
  EXPECT_EQ(failures[0].first, 5u);
  EXPECT_EQ(failures[0].count, 1u);
}

}  // namespace
}  // namespace locabus::daemon
