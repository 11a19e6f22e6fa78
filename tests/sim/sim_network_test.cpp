// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <locabus/wire.hpp>

#include "sim/sim_network.hpp"

namespace locabus::sim {
namespace {

using namespace std::chrono_literals;
using Bytes = std::vector<std::byte>;
using Port = SimNetwork::Port;

wire::MacAddress mac_of(unsigned i) {
  return wire::MacAddress{
      {0x02, 0x00, 0x00, 0x00, static_cast<std::uint8_t>(i >> 8), static_cast<std::uint8_t>(i)}};
}

Bytes make_frame(const wire::MacAddress& dst, const wire::MacAddress& src, std::uint16_t seq,
                 std::size_t payload_len = 8, wire::PacketType type = wire::PacketType::data) {
  Bytes payload(payload_len);
  for (std::size_t i = 0; i < payload_len; ++i) payload[i] = static_cast<std::byte>((i * 13 + seq) & 0xff);
  const auto hdr = wire::Header()
                       .set_type(type)
                       .set_proto(wire::Protocol::kccm)
                       .set_node_from(src.bytes[5])
                       .set_node_to(dst == wire::MacAddress::broadcast() ? wire::kBroadcast : dst.bytes[5])
                       .set_seq(seq)
                       .set_ack(7)
                       .set_window(32);
  Bytes out(wire::kEthHeaderLen + wire::kHeaderLen + payload_len);
  EXPECT_EQ(wire::encode_frame(out, dst, src, hdr, payload), out.size());
  return out;
}

std::size_t send(SimNetwork& net, Port from, const Bytes& frame) {
  const engine::FrameBytes f = frame;
  return net.transport(from).send(std::span(&f, 1));
}

std::vector<Bytes> drain(SimNetwork& net, Port port) {
  std::vector<Bytes> out;
  net.transport(port).receive(1'000'000, [&](engine::FrameBytes f) { out.emplace_back(f.begin(), f.end()); });
  return out;
}

std::uint16_t seq_of(const Bytes& f) {
  return wire::Header::read(std::span(f).subspan(wire::kEthHeaderLen)).seq();
}

/// A network of `n` ports with MACs mac_of(0..n-1).
std::unique_ptr<SimNetwork> make_net(unsigned n, std::uint64_t seed = 1) {
  auto net = std::make_unique<SimNetwork>(seed);
  for (unsigned i = 0; i < n; ++i) EXPECT_EQ(net->add_port(mac_of(i)), i);
  return net;
}

TEST(SimNetwork, UnicastReachesOnlyTheDestinationAfterTheDelay) {
  auto net = make_net(3);
  const Bytes f = make_frame(mac_of(1), mac_of(0), 5);
  EXPECT_EQ(send(*net, 0, f), 1u);
  ASSERT_EQ(net->next_delivery(), 50us);
  EXPECT_EQ(net->deliver_until(49us), 0u);
  EXPECT_FALSE(net->rx_pending(1));
  EXPECT_EQ(net->deliver_until(1ms), 1u);
  EXPECT_EQ(net->now(), 1ms);
  EXPECT_EQ(drain(*net, 1), std::vector<Bytes>{f});
  EXPECT_TRUE(drain(*net, 0).empty());
  EXPECT_TRUE(drain(*net, 2).empty());
  EXPECT_EQ(net->stats().sent, 1u);
  EXPECT_EQ(net->stats().delivered, 1u);
  EXPECT_FALSE(net->next_delivery());
}

TEST(SimNetwork, BroadcastReachesEveryOtherPortButNotTheSender) {
  auto net = make_net(5);
  const Bytes f = make_frame(wire::MacAddress::broadcast(), mac_of(2), 1, 0, wire::PacketType::heartbeat);
  send(*net, 2, f);
  EXPECT_EQ(net->deliver_until(1ms), 4u);
  for (Port p = 0; p < 5; ++p) EXPECT_EQ(drain(*net, p).size(), p == 2 ? 0u : 1u) << "port " << p;
}

TEST(SimNetwork, UnknownAndOwnMacAreDroppedAndCounted) {
  auto net = make_net(2);
  send(*net, 0, make_frame(mac_of(9), mac_of(0), 1));
  send(*net, 0, make_frame(mac_of(0), mac_of(0), 2));  // to itself: never delivered
  EXPECT_EQ(net->deliver_until(1s), 0u);
  EXPECT_EQ(net->stats().unknown_dst, 2u);
  EXPECT_FALSE(net->rx_pending(0));
  EXPECT_FALSE(net->rx_pending(1));
}

TEST(SimNetwork, PortsSharingAMacAllReceive) {
  auto net = make_net(2);
  EXPECT_EQ(net->add_port(mac_of(1)), 2u);
  send(*net, 0, make_frame(mac_of(1), mac_of(0), 1));
  EXPECT_EQ(net->deliver_until(1ms), 2u);
}

TEST(SimNetwork, DeliveryFollowsDelayThenSendOrder) {
  auto net = make_net(3);
  net->set_link(0, 1, LinkParams{.delay = 100us});
  net->set_link(0, 2, LinkParams{.delay = 10us});
  EXPECT_EQ(net->link(0, 1).delay, 100us);
  EXPECT_EQ(net->link(1, 0).delay, 50us);  // the default, other direction
  std::vector<std::pair<Port, engine::Nanos>> seen;
  net->set_tap([&](Port, Port to, engine::FrameBytes, engine::Nanos at) {
    EXPECT_EQ(at, net->now()) << "the clock is at each event's time";
    seen.emplace_back(to, at);
  });
  for (std::uint16_t s = 0; s < 3; ++s) {
    send(*net, 0, make_frame(mac_of(1), mac_of(0), s));
    send(*net, 0, make_frame(mac_of(2), mac_of(0), s));
  }
  EXPECT_EQ(net->next_delivery(), 10us);
  EXPECT_EQ(net->deliver_until(1ms), 6u);
  const std::vector<std::pair<Port, engine::Nanos>> expected{{2, 10us},  {2, 10us},  {2, 10us},
                                                             {1, 100us}, {1, 100us}, {1, 100us}};
  EXPECT_EQ(seen, expected);
  for (Port p : {1u, 2u}) {
    auto got = drain(*net, p);
    ASSERT_EQ(got.size(), 3u);
    for (std::uint16_t s = 0; s < 3; ++s) EXPECT_EQ(seq_of(got[s]), s) << "ties keep send order";
  }
}

TEST(SimNetwork, JitterStaysWithinItsBounds) {
  auto net = make_net(2, 7);
  net->set_default_link(LinkParams{.delay = 20us, .jitter = 30us});
  engine::Nanos lo = 1h, hi = 0ns;
  net->set_tap([&](Port, Port, engine::FrameBytes, engine::Nanos at) {
    lo = std::min(lo, at);
    hi = std::max(hi, at);
  });
  for (std::uint16_t s = 0; s < 2000; ++s) send(*net, 0, make_frame(mac_of(1), mac_of(0), s));
  EXPECT_EQ(net->deliver_until(1s), 2000u);
  EXPECT_GE(lo, 20us);
  EXPECT_LE(hi, 50us);
  EXPECT_LT(lo, 22us);  // the whole range is used
  EXPECT_GT(hi, 48us);
}

TEST(SimNetwork, ReorderHoldsCopiesBack) {
  auto net = make_net(2, 3);
  net->set_default_link(LinkParams{.reorder = 0.25, .delay = 10us, .reorder_delay = 1ms});
  for (std::uint16_t s = 0; s < 1000; ++s) {
    send(*net, 0, make_frame(mac_of(1), mac_of(0), s));
    net->deliver_until(net->now() + 1us);  // one frame per µs
  }
  net->deliver_until(net->now() + 10ms);
  const auto got = drain(*net, 1);
  ASSERT_EQ(got.size(), 1000u);
  std::vector<std::uint16_t> seqs;
  for (const auto& f : got) seqs.push_back(seq_of(f));
  EXPECT_FALSE(std::is_sorted(seqs.begin(), seqs.end()));
  std::sort(seqs.begin(), seqs.end());
  for (std::uint16_t s = 0; s < 1000; ++s) EXPECT_EQ(seqs[s], s);
  EXPECT_NEAR(static_cast<double>(net->stats().reordered), 250.0, 60.0);
}

TEST(SimNetwork, LossRateIsWithinStatisticalBounds) {
  auto net = make_net(2, 11);
  net->set_default_link(LinkParams{.loss = 0.3});
  const Bytes f = make_frame(mac_of(1), mac_of(0), 1);
  for (int i = 0; i < 10'000; ++i) send(*net, 0, f);
  const std::size_t delivered = net->deliver_until(1s);
  EXPECT_EQ(delivered + net->stats().lost, 10'000u);
  // 0.3 +- 0.03 is about 6.5 standard deviations.
  EXPECT_NEAR(static_cast<double>(net->stats().lost) / 10'000.0, 0.3, 0.03);
  EXPECT_EQ(drain(*net, 1).size(), delivered);
}

TEST(SimNetwork, DuplicationDeliversTwoCopies) {
  auto net = make_net(2, 5);
  net->set_default_link(LinkParams{.duplicate = 1.0, .jitter = 20us});
  for (std::uint16_t s = 0; s < 100; ++s) send(*net, 0, make_frame(mac_of(1), mac_of(0), s));
  EXPECT_EQ(net->deliver_until(1s), 200u);
  EXPECT_EQ(net->stats().duplicated, 100u);
  std::vector<int> count(100);
  for (const auto& f : drain(*net, 1)) ++count[seq_of(f)];
  for (int c : count) EXPECT_EQ(c, 2);

  auto net2 = make_net(2, 5);
  net2->set_default_link(LinkParams{.duplicate = 0.2});
  const Bytes f = make_frame(mac_of(1), mac_of(0), 1);
  for (int i = 0; i < 10'000; ++i) send(*net2, 0, f);
  EXPECT_EQ(net2->deliver_until(1s), 10'000u + net2->stats().duplicated);
  EXPECT_NEAR(static_cast<double>(net2->stats().duplicated) / 10'000.0, 0.2, 0.03);
}

TEST(SimNetwork, CorruptionFlipsOneHeaderOrDataBitThatValidationCatches) {
  auto net = make_net(2, 13);
  net->set_default_link(LinkParams{.corrupt = 1.0});
  std::vector<Bytes> sent;
  for (std::uint16_t s = 0; s < 3000; ++s) {
    sent.push_back(make_frame(mac_of(1), mac_of(0), s, s % 200));
    sent.back().resize(std::max<std::size_t>(sent.back().size(), 60));  // Ethernet padding, never corrupted
    send(*net, 0, sent.back());
  }
  EXPECT_EQ(net->deliver_until(1s), 3000u);
  EXPECT_EQ(net->stats().corrupted, 3000u);
  const auto got = drain(*net, 1);
  ASSERT_EQ(got.size(), 3000u);
  bool len_flipped = false;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const Bytes& orig = sent[i];  // no jitter: arrival order is send order
    ASSERT_EQ(got[i].size(), orig.size());
    std::size_t flipped_bits = 0, at = 0;
    for (std::size_t b = 0; b < orig.size(); ++b) {
      const auto diff = static_cast<unsigned>(orig[b] ^ got[i][b]);
      if (diff) at = b;
      flipped_bits += static_cast<std::size_t>(__builtin_popcount(diff));
    }
    ASSERT_EQ(flipped_bits, 1u) << "frame " << i;
    const std::size_t len = wire::Header::read(std::span(orig).subspan(wire::kEthHeaderLen)).len();
    EXPECT_GE(at, wire::kEthHeaderLen);
    EXPECT_LT(at, wire::kEthHeaderLen + len);
    len_flipped |= at == wire::kEthHeaderLen + 10 || at == wire::kEthHeaderLen + 11;
    const auto r = wire::decode_frame(got[i]);
    ASSERT_FALSE(r) << "frame " << i << " byte " << at;
    EXPECT_TRUE(r.error() == wire::FrameError::bad_csum || r.error() == wire::FrameError::len_small ||
                r.error() == wire::FrameError::len_max || r.error() == wire::FrameError::len_frame)
        << wire::to_string(r.error());
  }
  EXPECT_TRUE(len_flipped) << "the len field is fair game too";
}

TEST(SimNetwork, TapsSeeWhatWasSentAndWhatArrived) {
  auto net = make_net(3, 2);
  net->set_link(0, 2, LinkParams{.corrupt = 1.0});
  std::vector<Bytes> on_send;
  std::vector<std::pair<Port, Bytes>> on_deliver;
  net->set_send_tap([&](Port from, engine::FrameBytes f, engine::Nanos at) {
    EXPECT_EQ(from, 0u);
    EXPECT_EQ(at, 0ns);
    on_send.emplace_back(f.begin(), f.end());
  });
  net->set_tap([&](Port, Port to, engine::FrameBytes f, engine::Nanos) {
    on_deliver.emplace_back(to, Bytes(f.begin(), f.end()));
  });
  const Bytes f = make_frame(wire::MacAddress::broadcast(), mac_of(0), 1);
  send(*net, 0, f);
  net->deliver_until(1ms);
  EXPECT_EQ(on_send, std::vector<Bytes>{f});
  ASSERT_EQ(on_deliver.size(), 2u);
  EXPECT_EQ(on_deliver[0].first, 1u);
  EXPECT_EQ(on_deliver[0].second, f);
  EXPECT_EQ(on_deliver[1].first, 2u);
  EXPECT_NE(on_deliver[1].second, f);
  EXPECT_FALSE(wire::decode_frame(on_deliver[1].second));
}

TEST(SimNetwork, PartitionSplitsTheSegmentUntilHealed) {
  auto net = make_net(5);
  const Bytes from0 = make_frame(wire::MacAddress::broadcast(), mac_of(0), 1);
  const Bytes from2 = make_frame(wire::MacAddress::broadcast(), mac_of(2), 1);
  const Bytes from4 = make_frame(wire::MacAddress::broadcast(), mac_of(4), 1);
  net->partition({{0, 1}, {2, 3}});  // 4 is in no group: isolated
  send(*net, 0, from0);
  send(*net, 2, from2);
  send(*net, 4, from4);
  EXPECT_EQ(net->deliver_until(1ms), 2u);
  EXPECT_EQ(drain(*net, 1).size(), 1u);
  EXPECT_EQ(drain(*net, 3).size(), 1u);
  for (Port p : {0u, 2u, 4u}) EXPECT_FALSE(net->rx_pending(p));
  EXPECT_EQ(net->stats().partitioned, 3u + 3u + 4u);

  net->heal();
  send(*net, 4, from4);
  EXPECT_EQ(net->deliver_until(2ms), 4u);
  for (Port p = 0; p < 4; ++p) EXPECT_EQ(drain(*net, p).size(), 1u);

  // A partition that starts while a frame is in flight drops it on arrival.
  send(*net, 0, make_frame(mac_of(2), mac_of(0), 2));
  net->partition({{0, 1}, {2, 3, 4}});
  EXPECT_EQ(net->deliver_until(3ms), 0u);
  EXPECT_FALSE(net->rx_pending(2));
  EXPECT_THROW(net->partition({{0, 1}, {1, 2}}), std::invalid_argument);
  EXPECT_THROW(net->partition({{0, 9}}), std::out_of_range);
}

TEST(SimNetwork, DownPortNeitherSendsNorReceives) {
  auto net = make_net(3);
  const Bytes to1 = make_frame(mac_of(1), mac_of(0), 1);
  const Bytes from1 = make_frame(wire::MacAddress::broadcast(), mac_of(1), 1);

  send(*net, 0, to1);
  net->deliver_until(1ms);
  EXPECT_TRUE(net->rx_pending(1));
  net->set_up(1, false);
  EXPECT_FALSE(net->is_up(1));
  EXPECT_FALSE(net->rx_pending(1)) << "going down empties the receive queue";

  EXPECT_EQ(send(*net, 1, from1), 1u) << "a down port swallows what it is given";
  send(*net, 0, to1);
  EXPECT_EQ(net->deliver_until(2ms), 0u);
  EXPECT_EQ(net->stats().port_down, 2u);
  EXPECT_TRUE(drain(*net, 1).empty());
  EXPECT_FALSE(net->rx_pending(0));
  EXPECT_FALSE(net->rx_pending(2));

  // Only the moments of sending and arrival count: down on arrival is lost,
  // down and back up in between is not (a new incarnation may see old frames).
  net->set_up(1, true);
  send(*net, 0, to1);
  net->set_up(1, false);
  net->deliver_until(3ms);
  EXPECT_EQ(net->stats().port_down, 3u);
  net->set_up(1, true);
  send(*net, 0, to1);
  net->set_up(1, false);
  net->set_up(1, true);
  EXPECT_EQ(net->deliver_until(3500us), 1u);
  EXPECT_EQ(drain(*net, 1).size(), 1u);

  send(*net, 1, from1);
  send(*net, 0, to1);
  EXPECT_EQ(net->deliver_until(4ms), 3u);
  EXPECT_EQ(drain(*net, 1).size(), 1u);
}

TEST(SimNetwork, TxBudgetRefusesTheRestUntilReset) {
  auto net = make_net(2);
  const Bytes f = make_frame(mac_of(1), mac_of(0), 1);
  const std::vector<engine::FrameBytes> five(5, engine::FrameBytes(f));
  net->set_tx_budget(0, 3);
  EXPECT_EQ(net->transport(0).send(five), 3u);
  EXPECT_EQ(net->transport(0).send(five), 0u);
  EXPECT_EQ(net->stats().tx_refused, 7u);
  net->reset_tx_budgets();
  EXPECT_EQ(net->transport(0).send(std::span(five).first(2)), 2u);
  EXPECT_EQ(net->transport(0).send(five), 1u);
  EXPECT_EQ(net->transport(1).send(std::vector<engine::FrameBytes>(5, make_frame(mac_of(0), mac_of(1), 1))),
            5u)
      << "other ports are unlimited";
  net->set_tx_budget(0, std::nullopt);
  EXPECT_EQ(net->transport(0).send(five), 5u);
  EXPECT_EQ(net->deliver_until(1ms), 3u + 3u + 5u + 5u);
}

TEST(SimNetwork, TransportRecordsTrackedPeers) {
  auto net = make_net(2);
  auto& t = net->transport(0);
  EXPECT_EQ(t.mac(), mac_of(0));
  EXPECT_EQ(t.wait_fd(), -1);
  t.track_peer(5);
  t.track_peer(7);
  t.forget_peer(5);
  EXPECT_EQ(t.tracked(), (std::set<std::uint16_t>{7}));
  EXPECT_EQ(t.track_calls(), 2u);
  EXPECT_EQ(t.forget_calls(), 1u);
  EXPECT_TRUE(net->transport(1).tracked().empty());
  net->set_up(0, false);
  EXPECT_TRUE(t.tracked().empty());
}

TEST(SimNetwork, ReceiveHonoursMaxAndArrivalOrder) {
  auto net = make_net(2);
  for (std::uint16_t s = 0; s < 10; ++s) send(*net, 0, make_frame(mac_of(1), mac_of(0), s));
  net->deliver_until(1ms);
  std::vector<std::uint16_t> seqs;
  auto collect = [&](engine::FrameBytes f) { seqs.push_back(seq_of(Bytes(f.begin(), f.end()))); };
  EXPECT_EQ(net->transport(1).receive(4, collect), 4u);
  EXPECT_EQ(net->rx_queued(1), 6u);
  EXPECT_EQ(net->transport(1).receive(100, collect), 6u);
  EXPECT_EQ(net->transport(1).receive(100, collect), 0u);
  for (std::uint16_t s = 0; s < 10; ++s) EXPECT_EQ(seqs[s], s);
}

TEST(SimNetwork, RejectsBadParametersAndPorts) {
  auto net = make_net(2);
  EXPECT_THROW(net->set_default_link(LinkParams{.loss = 1.5}), std::invalid_argument);
  EXPECT_THROW(net->set_link(0, 1, LinkParams{.corrupt = -0.1}), std::invalid_argument);
  EXPECT_THROW(net->set_link(0, 1, LinkParams{.delay = -1ns}), std::invalid_argument);
  EXPECT_THROW(net->set_link(0, 2, LinkParams{}), std::out_of_range);
  EXPECT_THROW(net->transport(2), std::out_of_range);
  EXPECT_THROW(net->set_up(2, false), std::out_of_range);
}

/// A workload touching every impairment, for the determinism checks.
std::pair<std::uint64_t, std::vector<std::string>> run_workload(std::uint64_t seed) {
  auto net = make_net(6, seed);
  net->set_default_link(LinkParams{
      .loss = 0.1, .duplicate = 0.05, .corrupt = 0.05, .reorder = 0.1, .delay = 30us, .jitter = 40us});
  net->set_link(0, 1, LinkParams{.loss = 0.5, .delay = 5us});
  net->set_tx_budget(3, 4);
  std::vector<std::string> received;
  for (int step = 0; step < 200; ++step) {
    for (Port p = 0; p < 6; ++p) {
      const auto dst = step % 5 == 0 ? wire::MacAddress::broadcast() : mac_of((p + 1 + step) % 6);
      const auto f = make_frame(dst, mac_of(p), static_cast<std::uint16_t>(step), (step * 7 + p) % 100);
      send(*net, p, f);
      send(*net, p, f);
    }
    if (step == 50) net->partition({{0, 1, 2}, {3, 4}});
    if (step == 80) net->heal();
    if (step == 100) net->set_up(4, false);
    if (step == 120) net->set_up(4, true);
    net->deliver_until(net->now() + 20us);
    net->reset_tx_budgets();
    for (Port p = 0; p < 6; ++p)
      for (const auto& f : drain(*net, p))
        received.push_back(std::to_string(p) + ":" + std::to_string(seq_of(f)));
  }
  net->deliver_until(net->now() + 10ms);
  return {net->trace_digest(), received};
}

TEST(SimNetwork, SameSeedSameRunOtherSeedOtherRun) {
  const auto a = run_workload(42);
  const auto b = run_workload(42);
  const auto c = run_workload(43);
  EXPECT_EQ(a.first, b.first);
  EXPECT_EQ(a.second, b.second);
  EXPECT_NE(a.first, c.first);
  EXPECT_NE(a.second, c.second);
}

TEST(SimNetwork, TraceKeepsRecentEventsReadable) {
  auto net = make_net(3);
  std::vector<std::string> streamed;
  net->set_trace_sink([&](std::string_view line) { streamed.emplace_back(line); });
  Bytes bad = make_frame(mac_of(1), mac_of(0), 3);
  bad.back() ^= std::byte{1};
  send(*net, 0, make_frame(mac_of(1), mac_of(0), 9, 4));
  send(*net, 0, bad);
  net->set_link(0, 2, LinkParams{.loss = 1.0});
  send(*net, 0, make_frame(mac_of(2), mac_of(0), 10));
  net->deliver_until(1ms);

  const auto lines = net->recent_trace();
  EXPECT_EQ(lines, streamed);
  ASSERT_EQ(lines.size(), 3u + 1u + 2u);  // 3 sends, 1 loss, 2 deliveries
  EXPECT_NE(lines[0].find("0.000us"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("send"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("data 0->1 seq=9 ack=7 len=20 win=32 proto=kccm"), std::string::npos) << lines[0];
  EXPECT_NE(lines[3].find("drop:loss"), std::string::npos) << lines[3];
  EXPECT_NE(lines[3].find("0->2"), std::string::npos) << lines[3];
  EXPECT_NE(lines[4].find("50.000us deliver"), std::string::npos) << lines[4];
  EXPECT_NE(lines[5].find("invalid: bad checksum"), std::string::npos) << lines[5];

  const std::string last2 = net->format_recent_trace(2);
  EXPECT_EQ(last2, lines[4] + "\n" + lines[5] + "\n");

  net->set_trace_capacity(4);
  EXPECT_EQ(net->recent_trace(), std::vector<std::string>(lines.end() - 4, lines.end()));
  send(*net, 0, make_frame(mac_of(1), mac_of(0), 11));
  const auto after = net->recent_trace();
  ASSERT_EQ(after.size(), 4u);
  EXPECT_EQ(after[2], lines[5]);
  EXPECT_NE(after[3].find("seq=11"), std::string::npos);
}

TEST(SimNetwork, DigestCoversEveryEvent) {
  auto a = make_net(2, 1);
  auto b = make_net(2, 1);
  EXPECT_EQ(a->trace_digest(), b->trace_digest());
  send(*a, 0, make_frame(mac_of(1), mac_of(0), 1));
  send(*b, 0, make_frame(mac_of(1), mac_of(0), 2));
  EXPECT_NE(a->trace_digest(), b->trace_digest()) << "frame bytes";
  auto c = make_net(2, 1);
  c->clock().advance_by(1ns);
  send(*c, 0, make_frame(mac_of(1), mac_of(0), 1));
  EXPECT_NE(a->trace_digest(), c->trace_digest()) << "time";
}

TEST(SimNetwork, TwoHundredFiftySixPortsBroadcasting) {
  constexpr unsigned kPorts = 256;
  auto net = make_net(kPorts, 99);
  net->set_default_link(LinkParams{.loss = 0.01, .jitter = 10us});
  std::vector<Bytes> beats;
  for (unsigned p = 0; p < kPorts; ++p)
    beats.push_back(make_frame(wire::MacAddress::broadcast(), mac_of(p), 0, 16, wire::PacketType::heartbeat));
  std::uint64_t received = 0;
  for (int round = 0; round < 20; ++round) {
    for (unsigned p = 0; p < kPorts; ++p) send(*net, p, beats[p]);
    net->deliver_until(net->now() + 1ms);
    for (unsigned p = 0; p < kPorts; ++p)
      received += net->transport(p).receive(1'000'000, [](engine::FrameBytes) {});
  }
  EXPECT_EQ(received + net->stats().lost, 20ull * kPorts * (kPorts - 1));
  EXPECT_EQ(net->stats().delivered, received);
  EXPECT_EQ(net->in_flight(), 0u);
}

}  // namespace
}  // namespace locabus::sim
