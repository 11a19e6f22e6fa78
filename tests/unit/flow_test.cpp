// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Endpoint flow control (daemon/flow.hpp): two FlowControl instances back to
// back over a fake in-order reliable link (a queue of P_FLOW payloads and
// data messages each way), with a manual clock. Node A (1) sends, node B (2)
// receives and reads through a fake reader per stream.
#include <gtest/gtest.h>

#include <endian.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <tuple>
#include <vector>

#include <locabus/locabus.h>
#include <locabus/wire.h>

#include "daemon/flow.hpp"
#include "engine/clock.hpp"

namespace locabus::daemon {

// For EXPECT_EQ on failures (found by argument-dependent lookup).
bool operator==(const ClientFailure& a, const ClientFailure& b) {
  return std::tie(a.client, a.node, a.first, a.count, a.failure) ==
         std::tie(b.client, b.node, b.first, b.count, b.failure);
}
void PrintTo(const ClientFailure& f, std::ostream* os) {
  *os << "{client " << f.client << ", node " << f.node << ", messages " << f.first << "+" << f.count
      << ", failure " << int{f.failure} << "}";
}

namespace {

using engine::SendStatus;
using namespace std::chrono_literals;

constexpr std::uint16_t kA = 1;
constexpr std::uint16_t kB = 2;
constexpr StreamKey kK1 = stream_key(LOCABUS_P_KCCM);
constexpr StreamKey kK2 = stream_key(LOCABUS_P_LOCASOCK, 7);
constexpr std::uint64_t kInitial = LOCABUS_FLOW_INITIAL_WINDOW;

struct Packet {
  bool flow = false;
  std::vector<std::byte> payload;  // flow: the P_FLOW message
  StreamKey key = 0;               // data: its stream and sender
  Origin origin;
  std::uint64_t engine_id = 0;
};

std::uint8_t kind_of(const Packet& p) { return static_cast<std::uint8_t>(p.payload.at(0)); }
std::uint32_t gen_of(const Packet& p) {
  locabus_flow_hdr h;
  std::memcpy(&h, p.payload.data(), sizeof h);
  return be32toh(h.gen);
}

// A P_FLOW message as a peer would build it (for stale and malformed ones).
std::vector<std::byte> flow_message(std::uint8_t kind, std::uint32_t gen, std::uint8_t count,
                                    std::size_t entry_bytes) {
  std::vector<std::byte> m(sizeof(locabus_flow_hdr) + entry_bytes);
  locabus_flow_hdr h{};
  h.kind = kind;
  h.count = count;
  h.gen = htobe32(gen);
  std::memcpy(m.data(), &h, sizeof h);
  return m;
}
std::vector<std::byte> refuse_message(std::uint32_t gen, StreamKey key, std::uint8_t reason,
                                      std::uint64_t first, std::uint64_t count) {
  auto m = flow_message(LOCABUS_FLOW_REFUSE, gen, 1, sizeof(locabus_flow_refuse));
  locabus_flow_refuse e{};
  e.key = htobe32(key);
  e.reason = reason;
  e.first = htobe64(first);
  e.count = htobe64(count);
  std::memcpy(m.data() + sizeof(locabus_flow_hdr), &e, sizeof e);
  return m;
}

struct Side {
  Side(std::uint16_t node, const engine::Clock& clock, const FlowConfig& config)
      : id(node), fc(clock, config) {}
  std::uint16_t id;
  FlowControl fc;
  std::deque<Packet> out;              // sent to the other side, in order
  std::vector<Packet> sent_flow;       // every P_FLOW message that went out
  SendStatus answer = SendStatus::ok;  // what the link says to P_FLOW sends
  int flow_attempts = 0;
  std::uint64_t next_engine_id = 1;
  std::vector<ClientFailure> failures;
  std::map<StreamKey, std::deque<StreamTag>> held;  // received, not read yet

  int count_sent(std::uint8_t kind) const {
    return static_cast<int>(std::count_if(sent_flow.begin(), sent_flow.end(),
                                          [&](const Packet& p) { return kind_of(p) == kind; }));
  }
  std::uint64_t reported_messages() const {
    std::uint64_t n = 0;
    for (const auto& f : failures) n += f.count;
    return n;
  }
};

class Flow : public ::testing::Test {
 protected:
  void make(std::uint32_t window = 256) {
    FlowConfig cfg;
    cfg.window = window;
    a_ = std::make_unique<Side>(kA, clock_, cfg);
    b_ = std::make_unique<Side>(kB, clock_, cfg);
  }
  void SetUp() override { make(); }

  Side& A() { return *a_; }
  Side& B() { return *b_; }
  Side& other(Side& s) { return &s == a_.get() ? *b_ : *a_; }

  SendStatus link(Side& s, std::uint16_t to, std::span<const std::byte> payload) {
    ++s.flow_attempts;
    EXPECT_EQ(to, other(s).id);
    if (s.answer != SendStatus::ok) return s.answer;
    Packet p{true, {payload.begin(), payload.end()}, 0, {}, s.next_engine_id++};
    s.sent_flow.push_back(p);
    s.out.push_back(std::move(p));
    return SendStatus::ok;
  }

  // One message from s to the other side, as the router sends it: false
  // (nothing sent) without credit.
  bool send(Side& s, StreamKey key, Origin origin) {
    const std::uint16_t to = other(s).id;
    if (!s.fc.has_credit(to, key, 1)) return false;
    if (s.fc.ensure_open(to, [&](std::uint16_t n, std::span<const std::byte> p) { return link(s, n, p); }) !=
        SendStatus::ok)
      return false;
    send_unchecked(s, key, origin);
    return true;
  }
  // The same without asking for credit (a sender with a bug).
  std::uint64_t send_unchecked(Side& s, StreamKey key, Origin origin) {
    const std::uint64_t id = s.next_engine_id++;
    s.out.push_back(Packet{false, {}, key, origin, id});
    s.fc.sent(other(s).id, key, origin, id);
    return id;
  }
  // Sends up to n messages of client `client` numbered from *message on.
  int send_n(Side& s, StreamKey key, std::uint64_t client, std::uint64_t& message, int n) {
    int i = 0;
    for (; i < n && send(s, key, Origin{client, message}); ++i) ++message;
    return i;
  }

  // Everything s sent arrives at the other side, in order.
  void deliver(Side& s) {
    Side& r = other(s);
    auto on_fail = [&r](const ClientFailure& f) { r.failures.push_back(f); };
    while (!s.out.empty()) {
      Packet p = std::move(s.out.front());
      s.out.pop_front();
      if (p.flow) {
        r.fc.on_message(s.id, p.payload, on_fail);
        continue;
      }
      bool over = false;
      const StreamTag t = r.fc.arrived(s.id, p.key, over);
      if (over)
        r.fc.refuse(t, LOCABUS_REFUSE_OVER_CREDIT);
      else
        r.held[p.key].push_back(t);
    }
  }
  // The reader of `key` at s reads up to n messages.
  std::size_t read(Side& s, StreamKey key, std::size_t n = std::numeric_limits<std::size_t>::max()) {
    auto& q = s.held[key];
    std::size_t i = 0;
    for (; i < n && !q.empty(); ++i) {
      s.fc.consumed(q.front());
      q.pop_front();
    }
    return i;
  }
  std::size_t refuse(Side& s, StreamKey key, std::size_t n, std::uint8_t reason) {
    auto& q = s.held[key];
    std::size_t i = 0;
    for (; i < n && !q.empty(); ++i) {
      s.fc.refuse(q.front(), reason);
      q.pop_front();
    }
    return i;
  }
  int flush(Side& s) {
    return s.fc.flush([&](std::uint16_t n, std::span<const std::byte> p) { return link(s, n, p); });
  }
  // A's messages reach B; B's control goes back to A.
  void exchange() {
    deliver(A());
    flush(B());
    deliver(B());
  }
  std::vector<ClientFailure> sorted(std::vector<ClientFailure> v) {
    std::sort(v.begin(), v.end(), [](const ClientFailure& x, const ClientFailure& y) {
      return std::tie(x.client, x.first) < std::tie(y.client, y.first);
    });
    return v;
  }

  engine::ManualClock clock_{engine::Nanos{1'000'000'000}};
  std::unique_ptr<Side> a_, b_;
};

// ---- credit ---------------------------------------------------------------------------

TEST_F(Flow, SenderStopsAtTheInitialWindowThenAtTheGrantedWindow) {
  std::uint64_t m = 0;
  EXPECT_EQ(send_n(A(), kK1, 7, m, 1000), static_cast<int>(kInitial));
  EXPECT_FALSE(A().fc.has_credit(kB, kK1, 1));
  ASSERT_EQ(A().count_sent(LOCABUS_FLOW_OPEN), 1);
  EXPECT_EQ(kind_of(A().out.front()), LOCABUS_FLOW_OPEN);  // before the first data message

  deliver(A());
  EXPECT_EQ(read(B(), kK1), kInitial);
  flush(B());
  deliver(B());
  // consumed 64 + window 256: exactly 256 more.
  EXPECT_TRUE(A().fc.has_credit(kB, kK1, 256));
  EXPECT_FALSE(A().fc.has_credit(kB, kK1, 257));
  EXPECT_EQ(send_n(A(), kK1, 7, m, 1000), 256);
  EXPECT_EQ(A().count_sent(LOCABUS_FLOW_OPEN), 1);  // one generation
  EXPECT_EQ(A().fc.unconfirmed(), 256u);            // the first 64 were confirmed by the credit
}

TEST_F(Flow, AReaderThatKeepsUpKeepsItFlowingWithAboutFourCreditsPerWindow) {
  constexpr int kWindows = 20, kPerRound = 32;
  std::uint64_t m = 0;
  int short_rounds = 0;
  std::size_t max_unconfirmed = 0;
  while (m < kWindows * 256) {
    if (send_n(A(), kK1, 7, m, kPerRound) != kPerRound) ++short_rounds;
    max_unconfirmed = std::max(max_unconfirmed, A().fc.unconfirmed());
    deliver(A());
    read(B(), kK1);
    flush(B());
    deliver(B());
  }
  EXPECT_EQ(short_rounds, 0);
  EXPECT_LE(max_unconfirmed, 256u);
  // A credit when a quarter window (64) came back: 32 a round, one every
  // other round, 80 in all; never more than 4 per window.
  EXPECT_LE(B().count_sent(LOCABUS_FLOW_CREDIT), 4 * kWindows + 1);
  EXPECT_GE(B().count_sent(LOCABUS_FLOW_CREDIT), 3 * kWindows);
  EXPECT_EQ(B().count_sent(LOCABUS_FLOW_REFUSE), 0);
  EXPECT_EQ(B().fc.counters().over_credit, 0u);
}

TEST_F(Flow, AStoppedReaderHoldsAtMostAWindowAndOtherStreamsFlow) {
  std::uint64_t m1 = 0, m2 = 0;
  std::size_t read1 = 0, read2 = 0, max_held = 0;
  for (int round = 0; round < 200; ++round) {
    send_n(A(), kK1, 7, m1, 32);
    EXPECT_EQ(send_n(A(), kK2, 8, m2, 32), 32) << "round " << round;
    deliver(A());
    if (read1 < 1000) read1 += read(B(), kK1, 1000 - read1);  // then it stops reading
    read2 += read(B(), kK2);
    max_held = std::max(max_held, B().held[kK1].size());
    flush(B());
    deliver(B());
  }
  EXPECT_EQ(read1, 1000u);
  EXPECT_EQ(read2, 200u * 32);
  EXPECT_LE(max_held, 256u);
  EXPECT_GE(B().held[kK1].size(), 256u - 64);  // it filled what it was granted
  EXPECT_FALSE(A().fc.has_credit(kB, kK1, 1));
  // Reading again lets it go on.
  read(B(), kK1);
  flush(B());
  deliver(B());
  EXPECT_EQ(send_n(A(), kK1, 7, m1, 32), 32);
}

TEST_F(Flow, AQuietStreamIsConfirmedAfterTheDelayAndNotBefore) {
  std::uint64_t m = 0;
  send_n(A(), kK1, 7, m, 64);
  deliver(A());
  read(B(), kK1);
  flush(B());
  deliver(B());
  ASSERT_EQ(A().fc.unconfirmed(), 0u);

  // Ten more: less than a quarter window, no credit due; a confirmation.
  EXPECT_EQ(send_n(A(), kK1, 7, m, 10), 10);
  deliver(A());
  const engine::Nanos t0 = clock_.now();
  read(B(), kK1);
  EXPECT_EQ(flush(B()), 0);
  ASSERT_TRUE(B().fc.next_deadline().has_value());
  EXPECT_EQ(*B().fc.next_deadline(), t0 + B().fc.config().confirm_delay);
  clock_.advance_to(t0 + B().fc.config().confirm_delay - 1ns);
  EXPECT_EQ(flush(B()), 0);
  deliver(B());
  EXPECT_EQ(A().fc.unconfirmed(), 10u);
  clock_.advance_by(1ns);
  EXPECT_EQ(flush(B()), 1);
  deliver(B());
  EXPECT_EQ(A().fc.unconfirmed(), 0u);
  EXPECT_FALSE(B().fc.next_deadline().has_value());
  EXPECT_EQ(flush(B()), 0);  // once
}

TEST_F(Flow, OutOfOrderConsumptionDoesNotConfirmTheEarlierMessage) {
  std::uint64_t m = 0;
  send_n(A(), kK1, 7, m, 2);
  deliver(A());
  auto& q = B().held[kK1];
  ASSERT_EQ(q.size(), 2u);
  B().fc.consumed(q[1]);  // the later one first
  flush(B());             // (more credit: the window is larger than the initial one)
  deliver(B());
  EXPECT_EQ(A().fc.unconfirmed(), 2u);
  clock_.advance_by(10ms);
  flush(B());
  deliver(B());
  EXPECT_EQ(A().fc.unconfirmed(), 2u);
  B().fc.consumed(q[0]);  // now both: the stream is quiet, confirmed a moment later
  q.clear();
  clock_.advance_by(B().fc.config().confirm_delay);
  EXPECT_EQ(flush(B()), 1);
  deliver(B());
  EXPECT_EQ(A().fc.unconfirmed(), 0u);
}

TEST_F(Flow, ASenderOverCreditIsDetectedAndRefused) {
  std::uint64_t m = 0;
  ASSERT_EQ(send_n(A(), kK1, 7, m, 100), static_cast<int>(kInitial));
  for (int i = 0; i < 3; ++i) send_unchecked(A(), kK1, Origin{7, m++});
  deliver(A());
  EXPECT_EQ(B().fc.counters().over_credit, 3u);
  EXPECT_EQ(B().held[kK1].size(), kInitial);  // the rest was refused
  flush(B());
  deliver(B());
  EXPECT_EQ(A().failures, (std::vector<ClientFailure>{{7, kB, 64, 3, LOCABUS_FAIL_DROPPED}}));
}

// A sender that ignores its credit while the reader is stopped: what the
// receiver keeps stays bounded (held messages by the window, the refused
// run by one entry), and every refused message is reported.
TEST_F(Flow, AnOverCreditFloodKeepsTheReceiverBounded) {
  std::uint64_t m = 0;
  ASSERT_EQ(send_n(A(), kK1, 7, m, 100), static_cast<int>(kInitial));
  std::size_t max_entries = 0;
  for (int i = 0; i < 5000; ++i) {
    send_unchecked(A(), kK1, Origin{7, m++});
    if (i % 100 == 99) {
      deliver(A());
      max_entries = std::max(max_entries, B().fc.receiver_entries());
      flush(B());
      deliver(B());
    }
  }
  EXPECT_LE(B().held[kK1].size(), 256u);
  EXPECT_GE(B().fc.counters().over_credit, 5064u - 256);
  EXPECT_LE(max_entries, 3u);
  EXPECT_GE(max_entries, 1u);
  EXPECT_EQ(A().reported_messages(), B().fc.counters().over_credit);
  // The reader comes back: the stream is whole again.
  read(B(), kK1);
  clock_.advance_by(B().fc.config().confirm_delay);
  flush(B());
  deliver(B());
  EXPECT_EQ(B().fc.receiver_entries(), 0u);
  EXPECT_EQ(A().fc.unconfirmed(), 0u);
}

// ---- refusals -------------------------------------------------------------------------

TEST_F(Flow, RefuseNamesExactlyTheRefusedMessagesCoalesced) {
  std::uint64_t m7 = 100, m8 = 1;
  send_n(A(), kK1, 7, m7, 5);  // stream 0..4
  send_n(A(), kK1, 8, m8, 3);  // 5..7
  send_n(A(), kK1, 7, m7, 3);  // 8..10
  deliver(A());
  refuse(B(), kK1, 5, LOCABUS_REFUSE_CLOSED);
  read(B(), kK1, 1);
  refuse(B(), kK1, 2, LOCABUS_REFUSE_NO_ENDPOINT);
  read(B(), kK1);
  flush(B());
  EXPECT_EQ(B().count_sent(LOCABUS_FLOW_REFUSE), 1);
  EXPECT_EQ(B().fc.counters().refusals_sent, 2u);  // coalesced per run
  EXPECT_EQ(B().fc.counters().refused_messages, 7u);
  deliver(B());
  EXPECT_EQ(A().failures, (std::vector<ClientFailure>{{7, kB, 100, 5, LOCABUS_FAIL_ENDPOINT_CLOSED},
                                                      {8, kB, 2, 2, LOCABUS_FAIL_NO_ENDPOINT}}));
  EXPECT_EQ(A().fc.counters().failures_reported, 2u);
  EXPECT_EQ(A().fc.unconfirmed(), 0u);
}

TEST_F(Flow, RefusalsGoOutBeforeCredits) {
  std::uint64_t m = 0;
  send_n(A(), kK1, 7, m, 64);
  deliver(A());
  read(B(), kK1, 10);
  refuse(B(), kK1, 1, LOCABUS_REFUSE_CLOSED);  // message 10
  read(B(), kK1);
  EXPECT_EQ(flush(B()), 2);
  ASSERT_EQ(B().sent_flow.size(), 2u);
  EXPECT_EQ(kind_of(B().sent_flow[0]), LOCABUS_FLOW_REFUSE);
  EXPECT_EQ(kind_of(B().sent_flow[1]), LOCABUS_FLOW_CREDIT);
  deliver(B());
  // Had the credit come first, A would have forgotten message 10.
  EXPECT_EQ(A().failures, (std::vector<ClientFailure>{{7, kB, 10, 1, LOCABUS_FAIL_ENDPOINT_CLOSED}}));
  EXPECT_EQ(A().fc.unconfirmed(), 0u);
}

TEST_F(Flow, ARefusedDatagramIsReportedOnce) {
  // Datagram 42 in 5 fragments, 43 in 3: fragments share their number.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(send(A(), kK2, Origin{7, 42}));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(send(A(), kK2, Origin{7, 43}));
  deliver(A());
  auto& q = B().held[kK2];
  ASSERT_EQ(q.size(), 8u);
  StreamTag d42 = q[0];
  d42.count = 5;  // reassembly hands back one tag for the datagram
  B().fc.refuse(d42, LOCABUS_REFUSE_INCOMPLETE);
  q.erase(q.begin(), q.begin() + 5);
  refuse(B(), kK2, 3, LOCABUS_REFUSE_CLOSED);  // fragment by fragment
  flush(B());
  deliver(B());
  EXPECT_EQ(A().failures, (std::vector<ClientFailure>{{7, kB, 42, 1, LOCABUS_FAIL_DROPPED},
                                                      {7, kB, 43, 1, LOCABUS_FAIL_ENDPOINT_CLOSED}}));
}

// A datagram whose fragments are refused in two REFUSE messages (its first
// fragments as one partial, the rest as another) is still one datagram.
TEST_F(Flow, ADatagramRefusedInTwoPartsIsReportedOnce) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(send(A(), kK2, Origin{7, 42}));
  ASSERT_TRUE(send(A(), kK2, Origin{7, 43}));
  deliver(A());
  refuse(B(), kK2, 2, LOCABUS_REFUSE_INCOMPLETE);
  flush(B());
  deliver(B());
  refuse(B(), kK2, 3, LOCABUS_REFUSE_INCOMPLETE);
  read(B(), kK2);
  clock_.advance_by(B().fc.config().confirm_delay);
  flush(B());
  deliver(B());
  EXPECT_EQ(A().failures, (std::vector<ClientFailure>{{7, kB, 42, 1, LOCABUS_FAIL_DROPPED}}));
  EXPECT_EQ(A().fc.unconfirmed(), 0u);
}

// More entries than one P_FLOW message holds (its count is 8 bits): split,
// every one arrives.
TEST_F(Flow, ManyRefusalsAndCreditsAreSplitOverSeveralMessages) {
  constexpr int kStreams = 70;
  std::uint64_t m = 0;
  for (int s = 0; s < kStreams; ++s) ASSERT_EQ(send_n(A(), stream_key(LOCABUS_P_MPI, 100 + s), 7, m, 2), 2);
  deliver(A());
  for (int s = 0; s < kStreams; ++s) {
    const StreamKey k = stream_key(LOCABUS_P_MPI, 100 + s);
    refuse(B(), k, 1, s % 2 ? LOCABUS_REFUSE_CLOSED : LOCABUS_REFUSE_NO_ENDPOINT);
    read(B(), k);  // credit due for every stream
  }
  flush(B());
  EXPECT_EQ(B().fc.counters().refusals_sent, std::uint64_t{kStreams});
  EXPECT_EQ(B().count_sent(LOCABUS_FLOW_REFUSE), 2);  // 61 + 9
  EXPECT_EQ(B().fc.counters().credits_sent, std::uint64_t{kStreams});
  EXPECT_EQ(B().count_sent(LOCABUS_FLOW_CREDIT), 2);
  deliver(B());
  EXPECT_EQ(A().fc.counters().malformed, 0u);
  EXPECT_EQ(A().fc.counters().refusals_received, std::uint64_t{kStreams});
  EXPECT_EQ(A().fc.counters().credits_received, std::uint64_t{kStreams});
  EXPECT_EQ(A().failures.size(), std::size_t{kStreams});
  EXPECT_EQ(A().reported_messages(), std::uint64_t{kStreams});
  EXPECT_EQ(A().fc.unconfirmed(), 0u);
}

// A REFUSE whose count runs past the top of the 64-bit range (a receiver's
// bug) still names what it covers: everything from `first` on.
TEST_F(Flow, ARefusalWithAHugeCountIsNotLost) {
  std::uint64_t m = 0;
  send_n(A(), kK1, 7, m, 4);
  const std::uint32_t gen = gen_of(A().out.front());
  auto on_fail = [&](const ClientFailure& f) { A().failures.push_back(f); };
  A().fc.on_message(kB, refuse_message(gen, kK1, LOCABUS_REFUSE_CLOSED, 1, ~std::uint64_t{0}), on_fail);
  EXPECT_EQ(A().failures, (std::vector<ClientFailure>{{7, kB, 1, 3, LOCABUS_FAIL_ENDPOINT_CLOSED}}));
}

// ---- engine failures, resets, generations ---------------------------------------------

TEST_F(Flow, SendFailedNamesTheClientMessagesOfThoseEngineIdsAndResetTheRestOnce) {
  // Engine id 1 is the OPEN; then 2..8 alternate between the streams.
  ASSERT_TRUE(send(A(), kK1, Origin{7, 1}));   // 2
  ASSERT_TRUE(send(A(), kK2, Origin{8, 10}));  // 3
  ASSERT_TRUE(send(A(), kK1, Origin{7, 2}));   // 4
  ASSERT_TRUE(send(A(), kK2, Origin{8, 11}));  // 5
  ASSERT_TRUE(send(A(), kK1, Origin{7, 3}));   // 6
  ASSERT_TRUE(send(A(), kK2, Origin{8, 12}));  // 7
  ASSERT_TRUE(send(A(), kK1, Origin{7, 4}));   // 8
  ASSERT_EQ(A().next_engine_id, 9u);
  const std::uint32_t gen1 = gen_of(A().out.front());
  A().out.clear();  // lost with the connection
  auto on_fail = [&](const ClientFailure& f) { A().failures.push_back(f); };

  A().fc.on_send_failed(kB, 4, 3, LOCABUS_FAIL_UNREACHABLE, on_fail);
  EXPECT_EQ(sorted(A().failures), (std::vector<ClientFailure>{{7, kB, 2, 2, LOCABUS_FAIL_UNREACHABLE},
                                                              {8, kB, 11, 1, LOCABUS_FAIL_UNREACHABLE}}));
  A().failures.clear();
  A().fc.on_reset(kB, LOCABUS_FAIL_PEER_DEAD, on_fail);
  EXPECT_EQ(sorted(A().failures), (std::vector<ClientFailure>{{7, kB, 1, 1, LOCABUS_FAIL_PEER_DEAD},
                                                              {7, kB, 4, 1, LOCABUS_FAIL_PEER_DEAD},
                                                              {8, kB, 10, 1, LOCABUS_FAIL_PEER_DEAD},
                                                              {8, kB, 12, 1, LOCABUS_FAIL_PEER_DEAD}}));
  EXPECT_EQ(A().fc.counters().failures_reported, 6u);
  EXPECT_EQ(A().fc.unconfirmed(), 0u);
  A().failures.clear();
  A().fc.on_reset(kB, LOCABUS_FAIL_PEER_DEAD, on_fail);
  A().fc.on_send_failed(kB, 2, 7, LOCABUS_FAIL_UNREACHABLE, on_fail);
  EXPECT_TRUE(A().failures.empty());

  // The next send starts a new generation, with fresh credit.
  std::uint64_t m = 5;
  EXPECT_EQ(send_n(A(), kK1, 7, m, 1000), static_cast<int>(kInitial));
  ASSERT_FALSE(A().out.empty());
  EXPECT_EQ(kind_of(A().out.front()), LOCABUS_FLOW_OPEN);
  EXPECT_NE(gen_of(A().out.front()), gen1);
  EXPECT_EQ(A().count_sent(LOCABUS_FLOW_OPEN), 2);
}

// A datagram whose last fragments the engine failed and whose first ones
// were waiting for the peer's reader when the connection ended: one report.
TEST_F(Flow, ADatagramSplitBetweenSendFailedAndResetIsReportedOnce) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(send(A(), kK2, Origin{7, 42}));  // engine ids 2..6
  ASSERT_TRUE(send(A(), kK2, Origin{7, 43}));                              // 7
  auto on_fail = [&](const ClientFailure& f) { A().failures.push_back(f); };
  A().fc.on_send_failed(kB, 4, 4, LOCABUS_FAIL_PEER_RESET, on_fail);
  A().fc.on_reset(kB, LOCABUS_FAIL_PEER_RESET, on_fail);
  EXPECT_EQ(A().failures, (std::vector<ClientFailure>{{7, kB, 42, 2, LOCABUS_FAIL_PEER_RESET}}));
  EXPECT_EQ(A().fc.counters().failures_reported, 1u);
}

TEST_F(Flow, CreditAndRefusalsOfAnOldGenerationAreIgnored) {
  std::uint64_t m = 0;
  send_n(A(), kK1, 7, m, 64);
  deliver(A());
  read(B(), kK1, 60);
  refuse(B(), kK1, 4, LOCABUS_REFUSE_CLOSED);
  flush(B());
  std::deque<Packet> stale = std::move(B().out);  // not delivered yet
  B().out.clear();
  ASSERT_EQ(stale.size(), 2u);

  auto on_fail = [&](const ClientFailure& f) { A().failures.push_back(f); };
  A().fc.on_reset(kB, LOCABUS_FAIL_PEER_RESTARTED, on_fail);
  EXPECT_EQ(A().failures, (std::vector<ClientFailure>{{7, kB, 0, 64, LOCABUS_FAIL_PEER_RESTARTED}}));
  A().failures.clear();
  ASSERT_TRUE(send(A(), kK1, Origin{7, m++}));  // generation 2

  B().out = std::move(stale);
  deliver(B());
  EXPECT_TRUE(A().failures.empty());
  EXPECT_EQ(A().fc.counters().refusals_received, 1u);
  EXPECT_EQ(A().fc.counters().credits_received, 1u);
  EXPECT_EQ(A().fc.unconfirmed(), 1u);  // the stale credit confirmed nothing
  EXPECT_TRUE(A().fc.has_credit(kB, kK1, kInitial - 1));
  EXPECT_FALSE(A().fc.has_credit(kB, kK1, kInitial));  // nor granted anything

  // The new generation works: B starts counting again from the OPEN.
  deliver(A());
  read(B(), kK1);
  EXPECT_EQ(flush(B()), 1);
  deliver(B());
  EXPECT_EQ(A().fc.unconfirmed(), 0u);
  EXPECT_TRUE(A().fc.has_credit(kB, kK1, 256));
}

// What B still holds from an old generation does not credit the new one.
// A service that keeps messages until its reader asks (KCCM's receive
// queue) consumes nothing for a while: the sender must still get the
// whole window, not stall at the initial 64, and no more than the window.
TEST_F(Flow, ANewStreamsFirstMessageOpensTheWholeWindowWhileNothingIsRead) {
  std::uint64_t m = 0;
  ASSERT_TRUE(send(A(), kK1, Origin{7, m++}));
  deliver(A());
  EXPECT_EQ(flush(B()), 1);
  deliver(B());
  while (m < 10 * kInitial && send(A(), kK1, Origin{7, m})) ++m;
  EXPECT_EQ(m, 256u);  // the window (make()), none of it read
  deliver(A());
  EXPECT_EQ(B().held[kK1].size(), 256u);
  EXPECT_EQ(B().fc.counters().over_credit, 0u);
  EXPECT_EQ(flush(B()), 0);  // nothing more to grant until something is read
}

TEST_F(Flow, ReadingAnOldGenerationsMessagesDoesNotCreditTheNewOne) {
  std::uint64_t m = 0;
  send_n(A(), kK1, 7, m, 64);
  deliver(A());
  auto on_fail = [&](const ClientFailure& f) { A().failures.push_back(f); };
  A().fc.on_reset(kB, LOCABUS_FAIL_PEER_RESET, on_fail);
  ASSERT_TRUE(send(A(), kK1, Origin{7, m++}));
  deliver(A());  // OPEN of generation 2, then its message 0
  auto& q = B().held[kK1];
  ASSERT_EQ(q.size(), 65u);
  const StreamTag fresh = q.back();
  q.pop_back();
  EXPECT_EQ(flush(B()), 1);  // the new stream's first message opens its whole window
  deliver(B());
  read(B(), kK1);  // the 64 of generation 1
  EXPECT_EQ(flush(B()), 0);
  clock_.advance_by(10ms);
  EXPECT_EQ(flush(B()), 0);
  EXPECT_EQ(A().fc.unconfirmed(), 1u);
  B().fc.consumed(fresh);
  clock_.advance_by(10ms);  // confirm_delay
  EXPECT_EQ(flush(B()), 1);
  deliver(B());
  EXPECT_EQ(A().fc.unconfirmed(), 0u);
}

TEST_F(Flow, AResetForgetsWhatTheReceiverKeptForThatPeer) {
  std::uint64_t m1 = 0, m2 = 0;
  send_n(A(), kK1, 7, m1, 10);
  send_n(A(), kK2, 7, m2, 10);
  deliver(A());
  refuse(B(), kK1, 10, LOCABUS_REFUSE_CLOSED);
  read(B(), kK2, 5);
  ASSERT_EQ(B().fc.streams(), 2u);
  auto on_fail = [&](const ClientFailure& f) { B().failures.push_back(f); };
  B().fc.on_reset(kA, LOCABUS_FAIL_PEER_DEAD, on_fail);
  EXPECT_EQ(B().fc.streams(), 0u);
  EXPECT_EQ(flush(B()), 0);  // refusals for a generation nobody remembers
  EXPECT_EQ(B().flow_attempts, 0);
  read(B(), kK2);  // leftovers of the old connection
  clock_.advance_by(10ms);
  EXPECT_EQ(flush(B()), 0);
  EXPECT_EQ(B().flow_attempts, 0);
  EXPECT_EQ(B().fc.streams(), 0u);
}

// ---- P_FLOW messages that make no sense -----------------------------------------------

TEST_F(Flow, MalformedFlowMessagesAreCountedAndIgnored) {
  std::uint64_t m = 0;
  send_n(A(), kK1, 7, m, 10);
  const std::uint32_t gen = gen_of(A().out.front());
  auto on_fail = [&](const ClientFailure& f) { A().failures.push_back(f); };
  const std::vector<std::vector<std::byte>> bad = {
      {},
      std::vector<std::byte>(sizeof(locabus_flow_hdr) - 1),
      flow_message(9, gen, 0, 0),                                                  // unknown kind
      flow_message(LOCABUS_FLOW_CREDIT, gen, 1, 0),                                // entry missing
      flow_message(LOCABUS_FLOW_CREDIT, gen, 0, sizeof(locabus_flow_credit)),      // entry too many
      flow_message(LOCABUS_FLOW_REFUSE, gen, 2, sizeof(locabus_flow_refuse)),      // one of two
      flow_message(LOCABUS_FLOW_REFUSE, gen, 1, sizeof(locabus_flow_refuse) + 1),  // a byte more
  };
  for (const auto& b : bad) A().fc.on_message(kB, b, on_fail);
  EXPECT_EQ(A().fc.counters().malformed, 7u);
  EXPECT_TRUE(A().failures.empty());
  EXPECT_EQ(A().fc.unconfirmed(), 10u);
  EXPECT_TRUE(A().fc.has_credit(kB, kK1, kInitial - 10));
  EXPECT_FALSE(A().fc.has_credit(kB, kK1, kInitial - 9));
  // B ignores them too, and still works.
  for (const auto& b : bad) B().fc.on_message(kA, b, on_fail);
  EXPECT_EQ(B().fc.counters().malformed, 7u);
  deliver(A());
  read(B(), kK1);
  EXPECT_EQ(flush(B()), 1);
  deliver(B());
  EXPECT_EQ(A().fc.unconfirmed(), 0u);
}

// ---- the link refuses control messages ------------------------------------------------

TEST_F(Flow, FlushKeepsWhatIsDueWhileTheLinkWouldBlockAndSendsItLater) {
  std::uint64_t m = 0;
  send_n(A(), kK1, 7, m, 64);
  deliver(A());
  refuse(B(), kK1, 1, LOCABUS_REFUSE_NO_ENDPOINT);
  read(B(), kK1);
  B().answer = SendStatus::would_block;
  EXPECT_EQ(flush(B()), 0);
  EXPECT_EQ(flush(B()), 0);
  EXPECT_GE(B().flow_attempts, 2);
  EXPECT_TRUE(B().out.empty());
  B().answer = SendStatus::ok;
  EXPECT_EQ(flush(B()), 2);
  ASSERT_EQ(B().sent_flow.size(), 2u);
  EXPECT_EQ(kind_of(B().sent_flow[0]), LOCABUS_FLOW_REFUSE);
  EXPECT_EQ(kind_of(B().sent_flow[1]), LOCABUS_FLOW_CREDIT);
  deliver(B());
  EXPECT_EQ(A().failures, (std::vector<ClientFailure>{{7, kB, 0, 1, LOCABUS_FAIL_NO_ENDPOINT}}));
  EXPECT_EQ(A().fc.unconfirmed(), 0u);
  EXPECT_TRUE(A().fc.has_credit(kB, kK1, 256));
  EXPECT_EQ(flush(B()), 0);
}

// The peer cannot be reached (dead, gone, unknown): what was due for it is
// dropped and counted, not tried again on every pass for ever. Its own
// reset starts its streams again.
TEST_F(Flow, FlushDropsWhatIsDueForAPeerThatCannotBeReached) {
  for (const SendStatus st : {SendStatus::unreachable, SendStatus::unknown_node, SendStatus::closing}) {
    SCOPED_TRACE(static_cast<int>(st));
    make();
    std::uint64_t m = 0;
    send_n(A(), kK1, 7, m, 64);
    deliver(A());
    refuse(B(), kK1, 1, LOCABUS_REFUSE_NO_ENDPOINT);
    read(B(), kK1, 30);
    B().answer = st;
    EXPECT_EQ(flush(B()), 0);
    EXPECT_EQ(B().flow_attempts, 1);
    for (int i = 0; i < 5; ++i) {
      clock_.advance_by(1ms);
      EXPECT_EQ(flush(B()), 0);
    }
    EXPECT_EQ(B().flow_attempts, 1);
    EXPECT_GE(B().fc.counters().dropped, 2u);  // the refusal and the credit
    EXPECT_LE(B().fc.counters().dropped, 2u);
    EXPECT_FALSE(B().fc.next_deadline().has_value());
    B().answer = SendStatus::ok;
    EXPECT_EQ(flush(B()), 0);
  }
}

// A quiet stream's confirmation for a peer that cannot be reached does not
// wake the daemon up every confirm_delay for ever.
TEST_F(Flow, AConfirmationForAnUnreachablePeerIsDroppedOnce) {
  std::uint64_t m = 0;
  send_n(A(), kK1, 7, m, 64);
  deliver(A());
  read(B(), kK1);
  flush(B());
  deliver(B());
  ASSERT_EQ(send_n(A(), kK1, 7, m, 5), 5);
  deliver(A());
  read(B(), kK1);
  B().answer = SendStatus::unreachable;
  const int before = B().flow_attempts;
  for (int i = 0; i < 10; ++i) {
    clock_.advance_by(B().fc.config().confirm_delay);
    flush(B());
  }
  EXPECT_EQ(B().flow_attempts, before + 1);
  EXPECT_EQ(B().fc.counters().dropped, 1u);
  EXPECT_FALSE(B().fc.next_deadline().has_value());
}

// ---- broadcast holds (XON/XOFF per receiving node and key) ---------------------------

TEST_F(Flow, AHoldStopsOnlyThatKeyUntilResumeAndIsNotRepeatedWithinItsInterval) {
  B().fc.hold(kA, kK1);
  B().fc.hold(kA, kK1);  // more broadcasts for the full reader: said once
  EXPECT_EQ(flush(B()), 1);
  EXPECT_EQ(B().count_sent(LOCABUS_FLOW_HOLD), 1);
  deliver(B());
  EXPECT_TRUE(A().fc.broadcast_held(kK1));
  EXPECT_FALSE(A().fc.broadcast_held(kK2)) << "only the full reader's key waits";
  B().fc.hold(kA, kK1);
  EXPECT_EQ(flush(B()), 0) << "a HOLD is not repeated within 50 ms";
  clock_.advance_by(60ms);
  B().fc.hold(kA, kK1);
  EXPECT_EQ(flush(B()), 1) << "said again after 50 ms (a HOLD lost with a connection)";
  EXPECT_EQ(B().fc.holding().size(), 1u);
  B().fc.release(kA, kK1);
  B().fc.release(kA, kK1);
  EXPECT_EQ(flush(B()), 1);
  EXPECT_EQ(B().count_sent(LOCABUS_FLOW_RESUME), 1);
  EXPECT_TRUE(B().fc.holding().empty());
  deliver(B());
  EXPECT_FALSE(A().fc.broadcast_held(kK1));
  EXPECT_EQ(A().fc.counters().holds_received, 2u);
  EXPECT_EQ(B().fc.counters().holds_sent, 2u);
  EXPECT_EQ(B().fc.counters().resumes_sent, 1u);
}

TEST_F(Flow, AHoldWaitsWhileTheLinkWouldBlockAndEndsWithItsNode) {
  B().answer = SendStatus::would_block;
  B().fc.hold(kA, kK2);
  EXPECT_EQ(flush(B()), 0);
  EXPECT_TRUE(B().fc.hold_pending());
  B().answer = SendStatus::ok;
  EXPECT_EQ(flush(B()), 1);
  EXPECT_FALSE(B().fc.hold_pending());
  deliver(B());
  ASSERT_TRUE(A().fc.broadcast_held(kK2));
  // The node that asked goes away (dead, left, restarted, connection reset):
  // its hold ends at the sender, and the receiver forgets it asked.
  A().fc.on_reset(kB, LOCABUS_FAIL_PEER_DEAD, [](const ClientFailure&) {});
  EXPECT_FALSE(A().fc.broadcast_held(kK2));
  B().fc.on_reset(kA, LOCABUS_FAIL_PEER_DEAD, [](const ClientFailure&) {});
  EXPECT_TRUE(B().fc.holding().empty());
  B().fc.hold(kA, kK2);  // still full: asked again at once
  EXPECT_EQ(flush(B()), 1);
}

TEST_F(Flow, MalformedHoldsAreCountedAndIgnored) {
  auto m = flow_message(LOCABUS_FLOW_HOLD, 0, 2, sizeof(locabus_flow_key));  // says 2, carries 1
  A().fc.on_message(kB, m, [](const ClientFailure&) {});
  EXPECT_EQ(A().fc.counters().malformed, 1u);
  EXPECT_FALSE(A().fc.broadcast_held(0));
}

}  // namespace
}  // namespace locabus::daemon
