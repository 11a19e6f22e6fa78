// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The XDP program, run in the kernel with BPF_PROG_TEST_RUN on crafted
// frames: verdicts, counters and map side effects.
#include <gtest/gtest.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <locabus/xdp_maps.h>

#include "locabus_xdp.skel.h"

#include "ack_rule_vectors.hpp"
#include "common/error.hpp"
#include "fastpath/fastpath.hpp"
#include "fastpath/skeleton.hpp"
#include "fastpath/xsk.hpp"
#include "frame_builder.hpp"
#include "netns.hpp"
#include "privileges.hpp"
#include "prog_test_run.hpp"

namespace locabus {
namespace {

using test::FrameBuilder;
using wire::PacketType;
using wire::Protocol;
using XdpSkeleton =
    bpf::Skeleton<locabus_xdp, &locabus_xdp__open_opts, &locabus_xdp__load, &locabus_xdp__destroy>;

constexpr std::uint16_t kUs = 2;
constexpr std::uint16_t kPeer = 1;

std::uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}

// AF_XDP sockets must be bound to a device to enter an XSKMAP, and one
// (device, queue) takes one UMEM. The suite moves itself into a private
// network namespace and binds each socket to a veth device of its own there;
// BPF_PROG_TEST_RUN never delivers into them.
class PrivateNetns {
 public:
  static bool enter() {
    static const bool ok = [] {
      if (::unshare(CLONE_NEWNET) != 0) return false;
      return test::run("ip link set lo up") == 0;
    }();
    return ok;
  }
};

class XdpProgram : public ::testing::Test {
 protected:
  void SetUp() override {
    LOCABUS_REQUIRE_ROOT();
    fastpath::install_library_logging();
    load();
  }

  void load(std::uint32_t flags = 0, std::uint32_t max_peers = LOCABUS_MAX_PEERS_DEFAULT,
            std::uint32_t ack_ring_bytes = LOCABUS_ACK_RING_BYTES) {
    ring_.reset();
    sockets_.clear();
    maps_.reset();
    skel_.reset();
    skel_.emplace("locabus_xdp");
    (*skel_)->bss->locabus_cfg.node_id = kUs;
    (*skel_)->bss->locabus_cfg.flags = flags;
    ASSERT_EQ(bpf_map__set_max_entries((*skel_)->maps.locabus_peers, max_peers), 0);
    ASSERT_EQ(bpf_map__set_max_entries((*skel_)->maps.locabus_acks, ack_ring_bytes), 0);
    skel_->load();
    maps_.emplace(fastpath::Maps::from_object(skel_->object()));
    prog_fd_ = bpf_program__fd((*skel_)->progs.locabus_xdp);
  }

  // Everything the program wrote to the ACK ring since the last call (the
  // test is its only reader).
  std::vector<locabus_ack_record> drain_acks() {
    if (!ring_) {
      auto on_record = [](void* ctx, void* data, std::size_t size) -> int {
        EXPECT_EQ(size, sizeof(locabus_ack_record));
        locabus_ack_record r{};
        std::memcpy(&r, data, std::min(size, sizeof r));
        static_cast<std::vector<locabus_ack_record>*>(ctx)->push_back(r);
        return 0;
      };
      ring_.reset(ring_buffer__new(maps_->acks_fd(), on_record, &records_, nullptr));
      if (!ring_) {
        ADD_FAILURE() << "ring_buffer__new: " << error_text(errno);
      }
    }
    records_.clear();
    if (ring_) {
      EXPECT_GE(ring_buffer__consume(ring_.get()), 0);
    }
    return records_;
  }

  // Tracks `node` and publishes [una, max] as its unacknowledged range.
  void track(std::uint16_t node, std::uint16_t una, std::uint16_t max,
             std::uint16_t flags = LOCABUS_CONN_F_PUBLISHED) {
    maps_->track_peer(node);
    maps_->publish(node, locabus_conn_pub{una, max, flags, 1});
  }

  test::ProgRun ack(std::uint16_t ack_num, std::uint16_t window) {
    return run(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).ack(ack_num).window(window).build());
  }

  test::ProgRun run(const std::vector<std::byte>& frame) { return test::prog_test_run(prog_fd_, frame); }

  fastpath::CounterValues counters() const { return maps_->counters(); }

  // Runs `frame` and expects `verdict` and that of all counters exactly
  // `bumped` went up by one (rx_locabus too, for Locabus frames).
  void expect(const std::vector<std::byte>& frame, int verdict,
              std::initializer_list<locabus_counter_id> bumped) {
    const auto before = counters();
    const auto r = run(frame);
    EXPECT_EQ(r.verdict, verdict);
    const auto after = counters();
    for (std::size_t i = 0; i < after.size(); ++i) {
      std::uint64_t want = before[i];
      for (auto id : bumped)
        if (static_cast<std::size_t>(id) == i) ++want;
      EXPECT_EQ(after[i], want) << "counter " << fastpath::kCounters[i].name;
    }
  }

  // Sets locabus_cfg.nak_dedup_us at run time, as the loader and operators can.
  void set_nak_dedup_us(std::uint32_t us) {
    auto cfg = maps_->config();
    cfg.nak_dedup_us = us;
    maps_->set_config(cfg);
  }

  // An AF_XDP socket registered for (queue 0, slot).
  void register_socket(std::uint32_t slot) {
    LOCABUS_REQUIRE(PrivateNetns::enter(), "cannot create a private network namespace for AF_XDP sockets");
    xsk::Options o;
    o.mode = xsk::BindMode::copy;
    o.frame_count = 64;
    o.ring_size = 64;
    const std::string dev = "lbx" + std::to_string(next_dev_++);
    if (test::run("ip link show " + dev + " >/dev/null 2>&1") != 0) {
      ASSERT_EQ(
          test::run("ip link add " + dev + " type veth peer name " + dev + "p && ip link set " + dev + " up"),
          0);
    }
    sockets_.push_back(std::make_unique<xsk::Socket>(dev, o));
    maps_->register_socket(0, slot, sockets_.back()->fd());
  }

  struct RingDeleter {
    void operator()(ring_buffer* r) const noexcept { ring_buffer__free(r); }
  };

  std::optional<XdpSkeleton> skel_;
  std::optional<fastpath::Maps> maps_;
  std::vector<locabus_ack_record> records_;
  std::unique_ptr<ring_buffer, RingDeleter> ring_;  // declared after maps_: freed first
  std::vector<std::unique_ptr<xsk::Socket>> sockets_;
  int prog_fd_ = -1;
  int next_dev_ = 0;
};

FrameBuilder data_to_us() {
  return FrameBuilder().type(PacketType::data).from(kPeer).to(kUs).payload("payload");
}

// ---- frames that are not ours pass untouched ----

TEST_F(XdpProgram, PassesArpIpv4AndIpv6Untouched) {
  for (std::uint16_t et : {0x0806, 0x0800, 0x86DD}) {
    SCOPED_TRACE(et);
    const auto f = test::other_frame(et, 98);
    const auto before = counters();
    const auto r = run(f);
    EXPECT_EQ(r.verdict, XDP_PASS);
    EXPECT_EQ(r.out, f) << "the frame must not be modified";
    const auto after = counters();
    EXPECT_EQ(after[LOCABUS_CTR_pass_other], before[LOCABUS_CTR_pass_other] + 1);
    EXPECT_EQ(after[LOCABUS_CTR_rx_locabus], before[LOCABUS_CTR_rx_locabus]);
  }
}

// ---- one test per drop reason ----

TEST_F(XdpProgram, DropsFrameShorterThanTheHeader) {
  expect(data_to_us().truncate(wire::kMinFrame - 1).build(), XDP_DROP,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_short});
}

TEST_F(XdpProgram, DropsLenSmallerThanTheHeader) {
  expect(data_to_us().len(15).build(), XDP_DROP, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_len_small});
  expect(data_to_us().len(0).build(), XDP_DROP, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_len_small});
}

TEST_F(XdpProgram, DropsLenLargerThanTheMaximum) {
  // A jumbo frame that really holds 1501 bytes: only the maximum is broken.
  expect(data_to_us().payload_size(wire::kMaxPayload + 1).build(), XDP_DROP,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_len_max});
  expect(data_to_us().len(0xffff).build(), XDP_DROP, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_len_max});
}

TEST_F(XdpProgram, DropsLenLargerThanTheFrame) {
  expect(data_to_us().payload("abc").len(16 + 4).build(), XDP_DROP,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_len_frame});
}

TEST_F(XdpProgram, DropsBadChecksum) {
  expect(data_to_us().corrupt_csum().build(), XDP_DROP, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_csum});
  expect(data_to_us().flip_payload_bit(0).build(), XDP_DROP, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_csum});
}

TEST_F(XdpProgram, DropsUnknownTypes) {
  expect(data_to_us().type_raw(0).build(), XDP_DROP, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_type});
  expect(data_to_us().type_raw(LOCABUS_T_MAX + 1).build(), XDP_DROP,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_type});
  expect(data_to_us().type_raw(0xff).build(), XDP_DROP, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_type});
}

TEST_F(XdpProgram, DropsBroadcastSource) {
  expect(data_to_us().from(wire::kBroadcast).build(), XDP_DROP,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_src});
}

TEST_F(XdpProgram, DropsFramesForOtherNodes) {
  expect(data_to_us().to(7).build(), XDP_DROP, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_not_ours});
}

TEST_F(XdpProgram, DropsOurOwnFramesLoopedBack) {
  expect(data_to_us().from(kUs).to(wire::kBroadcast).build(), XDP_DROP,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_own});
}

TEST_F(XdpProgram, DropsValidFramesNoSocketClaims) {
  expect(data_to_us().build(), XDP_DROP, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_no_socket});
  EXPECT_EQ(maps_->proto_stats(LOCABUS_P_CONTROL).no_socket, 1u);
}

TEST_F(XdpProgram, PassesUnclaimedFramesWhenConfigured) {
  load(LOCABUS_CFG_F_PASS_UNCLAIMED);
  expect(data_to_us().build(), XDP_PASS, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_passed_unclaimed});
}

TEST_F(XdpProgram, AcceptsEthernetPaddingAfterLen) {
  expect(data_to_us().payload("x").pad_to(60).build(), XDP_DROP,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_no_socket});
}

// Every payload length takes its own path through the chunked checksum.
TEST_F(XdpProgram, ChecksumVerifiedAtEveryPayloadLength) {
  std::uint64_t valid = 0, corrupt = 0;
  for (std::size_t n = 0; n <= wire::kMaxPayload; ++n) {
    // Padding after len must not enter the checksum.
    auto b = data_to_us().payload_size(n).pad_to(wire::kEthHeaderLen + wire::kHeaderLen + n + 3);
    ASSERT_EQ(run(b.build()).verdict, XDP_DROP);  // no socket: it passed validation
    ++valid;
    ASSERT_EQ(run(FrameBuilder(b).corrupt_csum().build()).verdict, XDP_DROP);
    ++corrupt;
    if (n > 0) {  // a flipped bit in the last byte (the checksum's tail)
      ASSERT_EQ(run(FrameBuilder(b).flip_payload_bit(n - 1).build()).verdict, XDP_DROP);
      ++corrupt;
    }
  }
  const auto c = counters();
  EXPECT_EQ(c[LOCABUS_CTR_drop_no_socket], valid);
  EXPECT_EQ(c[LOCABUS_CTR_drop_csum], corrupt);
  EXPECT_EQ(c[LOCABUS_CTR_drop_len_max] + c[LOCABUS_CTR_drop_len_frame] + c[LOCABUS_CTR_drop_short], 0u);
}

// ---- ACK and NAK fast path ----

TEST_F(XdpProgram, AckFromAnUntrackedPeerGoesToUserSpace) {
  // E.g. the third step of a handshake: the engine has not tracked the peer yet.
  register_socket(LOCABUS_XSK_DEFAULT_SLOT);
  expect(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).ack(1).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_ack_untracked, LOCABUS_CTR_redirected});
  EXPECT_FALSE(maps_->peer(kPeer)) << "the program must never create peer entries";
}

TEST_F(XdpProgram, ConsumesPureAckFromATrackedPeer) {
  track(kPeer, 50, 150);
  const auto t0 = monotonic_ns();
  expect(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).ack(100).window(512).build(), XDP_DROP,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_ack_consumed, LOCABUS_CTR_ack_ring_out});
  const auto t1 = monotonic_ns();
  const auto p = maps_->peer(kPeer);
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->flags & LOCABUS_PEER_F_ACK_VALID);
  EXPECT_EQ(p->ack_num, 100);
  EXPECT_EQ(p->ack_window, 512);
  EXPECT_EQ(p->acks, 1u);
  EXPECT_GE(p->last_heard_ns, t0);
  EXPECT_LE(p->last_heard_ns, t1);
  EXPECT_FALSE(p->flags & LOCABUS_PEER_F_NAK_VALID);
  // The sender is told through the ring: one record with what the ACK said.
  const auto recs = drain_acks();
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].node_id, kPeer);
  EXPECT_EQ(recs[0].ack_num, 100);
  EXPECT_EQ(recs[0].window, 512);
  EXPECT_EQ(recs[0].reserved, 0);
}

// The consume-or-pass decision, run in the kernel on the same vectors as the
// function itself and the simulator (tests/support/ack_rule_vectors.hpp).
TEST_F(XdpProgram, AckRuleVectors) {
  register_socket(LOCABUS_XSK_DEFAULT_SLOT);
  for (const test::AckRuleVector& v : test::kAckRuleVectors) {
    SCOPED_TRACE(v.what);
    maps_->track_peer(kPeer);
    if (v.rec_valid) {
      // Make the kernel's record say rec_ack: consume that ACK first.
      maps_->publish(kPeer, locabus_conn_pub{static_cast<std::uint16_t>(v.rec_ack - 1), v.rec_ack,
                                             LOCABUS_CONN_F_PUBLISHED, 1});
      ASSERT_EQ(ack(v.rec_ack, 7).verdict, XDP_DROP);
      ASSERT_EQ(maps_->peer(kPeer)->ack_num, v.rec_ack);
    }
    drain_acks();
    maps_->publish(kPeer, v.pub);
    const auto before = counters();
    const auto r = ack(v.ack, 33);
    const auto after = counters();
    auto bumped = [&](locabus_counter_id id) { return after[id] - before[id]; };
    const auto recs = drain_acks();
    if (v.verdict == LOCABUS_ACK_CONSUME) {
      EXPECT_EQ(r.verdict, XDP_DROP);
      EXPECT_EQ(bumped(LOCABUS_CTR_ack_consumed), 1u);
      ASSERT_EQ(recs.size(), 1u) << "a consumed ACK is always announced";
      EXPECT_EQ(recs[0].ack_num, v.ack);
      EXPECT_EQ(recs[0].window, 33);
      EXPECT_EQ(maps_->peer(kPeer)->ack_num, v.ack);
    } else {
      EXPECT_EQ(r.verdict, XDP_REDIRECT) << "a passed ACK reaches user space";
      EXPECT_TRUE(recs.empty());
      EXPECT_EQ(bumped(LOCABUS_CTR_ack_consumed), 0u);
      const locabus_counter_id why = v.verdict == LOCABUS_ACK_PASS_UNPUBLISHED
                                         ? LOCABUS_CTR_ack_pass_unpublished
                                     : v.verdict == LOCABUS_ACK_PASS_ALL   ? LOCABUS_CTR_ack_pass_all
                                     : v.verdict == LOCABUS_ACK_PASS_RANGE ? LOCABUS_CTR_ack_pass_range
                                                                           : LOCABUS_CTR_ack_pass_behind;
      EXPECT_EQ(bumped(why), 1u);
      if (v.rec_valid) {
        EXPECT_EQ(maps_->peer(kPeer)->ack_num, v.rec_ack) << "a passed ACK changes no record";
      }
    }
  }
}

TEST_F(XdpProgram, KeepsTheNewestConsumedAckInSerialOrder) {
  register_socket(LOCABUS_XSK_DEFAULT_SLOT);
  track(kPeer, 65520, 20);
  auto ack = [&](std::uint16_t a, std::uint16_t w) { return this->ack(a, w).verdict; };
  EXPECT_EQ(ack(65530, 10), XDP_DROP);
  EXPECT_EQ(ack(5, 20), XDP_DROP);          // after 65530 across the wrap: newer
  EXPECT_EQ(ack(65533, 30), XDP_REDIRECT);  // older: passed, the engine ignores it
  auto p = maps_->peer(kPeer);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->ack_num, 5);
  EXPECT_EQ(p->ack_window, 20);
  EXPECT_EQ(p->acks, 2u);
  EXPECT_EQ(p->passed_acks, 1u);
  EXPECT_EQ(ack(5, 64), XDP_REDIRECT);  // same ACK, new window: a window update reaches the engine
  const auto c = counters();
  EXPECT_EQ(c[LOCABUS_CTR_ack_consumed], 2u);
  EXPECT_EQ(c[LOCABUS_CTR_ack_pass_behind], 2u);
  // One ring record per consumed ACK.
  const auto recs = drain_acks();
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].ack_num, 65530);
  EXPECT_EQ(recs[1].ack_num, 5);
  EXPECT_EQ(recs[1].window, 20);
  EXPECT_EQ(c[LOCABUS_CTR_ack_ring_out], 2u);
}

TEST_F(XdpProgram, PassedAcksWriteNoRingRecord) {
  register_socket(LOCABUS_XSK_DEFAULT_SLOT);
  track(kPeer, 50, 150);
  ASSERT_EQ(ack(100, 50).verdict, XDP_DROP);
  ASSERT_EQ(drain_acks().size(), 1u);
  // Older, and the same again: both reach user space, neither is announced.
  expect(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).ack(99).window(50).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_ack_pass_behind, LOCABUS_CTR_redirected});
  expect(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).ack(100).window(50).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_ack_pass_behind, LOCABUS_CTR_redirected});
  EXPECT_TRUE(drain_acks().empty());
  // Untracked peers' ACKs never reach the ring.
  ASSERT_TRUE(maps_->forget_peer(kPeer));
  ASSERT_EQ(ack(120, 50).verdict, XDP_REDIRECT);
  EXPECT_TRUE(drain_acks().empty());
}

// Issue 11, seen 1: the record was last written before a long exchange whose
// ACKs all rode on DATA; user space's published una moved on. The fresh pure
// ACK is consumed (and announced), not dropped as "older".
TEST_F(XdpProgram, AFreshAckAfterLongPiggyBackedTrafficIsNotStale) {
  register_socket(LOCABUS_XSK_DEFAULT_SLOT);
  track(kPeer, 0, 200);
  ASSERT_EQ(ack(200, 64).verdict, XDP_DROP);
  drain_acks();
  maps_->publish(kPeer,
                 locabus_conn_pub{static_cast<std::uint16_t>(200 + 41000),
                                  static_cast<std::uint16_t>(200 + 41001), LOCABUS_CONN_F_PUBLISHED, 2});
  EXPECT_EQ(ack(static_cast<std::uint16_t>(200 + 41001), 64).verdict, XDP_DROP);
  const auto recs = drain_acks();
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].ack_num, static_cast<std::uint16_t>(200 + 41001));
}

// Issue 11, seen 2: answers to a zero-window probe are identical ACKs; while
// the engine says a probe is out, every one of them reaches it.
TEST_F(XdpProgram, ProbeAnswersReachUserSpace) {
  register_socket(LOCABUS_XSK_DEFAULT_SLOT);
  track(kPeer, 100, 101, LOCABUS_CONN_F_PUBLISHED | LOCABUS_CONN_F_PASS_ALL);
  for (int i = 0; i < 3; ++i) {
    expect(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).ack(100).window(0).build(), XDP_REDIRECT,
           {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_ack_pass_all, LOCABUS_CTR_redirected});
  }
}

TEST_F(XdpProgram, WithTheAckRingFullTheAckGoesToTheSocket) {
  const auto page = static_cast<std::uint32_t>(::sysconf(_SC_PAGESIZE));
  load(0, LOCABUS_MAX_PEERS_DEFAULT, page);  // the smallest ring: page / 16 records
  register_socket(LOCABUS_XSK_DEFAULT_SLOT);
  track(kPeer, 0, 30000);
  // Nobody reads the ring: fill it with ACKs that each advance.
  std::uint16_t a = 1;
  std::size_t consumed = 0;
  for (; consumed < page; ++a) {
    const auto r = ack(a, 100);
    if (r.verdict != XDP_DROP) {
      EXPECT_EQ(r.verdict, XDP_REDIRECT);
      break;
    }
    ++consumed;
  }
  // Each record takes 8 bytes plus an 8-byte header; the kernel never fills
  // the last byte, so a ring of N bytes holds (N - 1) / 16 records.
  EXPECT_EQ(consumed, (page - 1) / (sizeof(locabus_ack_record) + 8));
  auto c = counters();
  EXPECT_EQ(c[LOCABUS_CTR_ack_ring_out], consumed);
  EXPECT_EQ(c[LOCABUS_CTR_ack_ring_full], 1u);
  EXPECT_EQ(c[LOCABUS_CTR_ack_consumed], consumed);
  // The ACK that did not fit went to the socket, and still updated the
  // record operators read.
  EXPECT_EQ(c[LOCABUS_CTR_redirected], 1u);
  EXPECT_EQ(maps_->peer(kPeer)->ack_num, a);
  expect(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).ack(++a).window(100).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_ack_ring_full, LOCABUS_CTR_redirected});
  // Once the reader catches up, ACKs are consumed again.
  EXPECT_EQ(drain_acks().size(), consumed);
  expect(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).ack(++a).window(100).build(), XDP_DROP,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_ack_consumed, LOCABUS_CTR_ack_ring_out});
  const auto recs = drain_acks();
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].ack_num, a);
}

TEST_F(XdpProgram, AckWithPayloadOrToBroadcastOrWithFlagIsNotConsumed) {
  track(kPeer, 0, 100);
  expect(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).payload("sack").build(), XDP_DROP,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_no_socket});
  expect(FrameBuilder().type(PacketType::ack).from(kPeer).to(wire::kBroadcast).build(), XDP_DROP,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_no_socket});
  EXPECT_EQ(maps_->peer(kPeer)->acks, 0u);
  load(LOCABUS_CFG_F_ACK_TO_USER);
  track(kPeer, 0, 100);
  register_socket(LOCABUS_XSK_DEFAULT_SLOT);
  expect(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).ack(9).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_redirected});
  EXPECT_EQ(maps_->peer(kPeer)->acks, 0u);
}

TEST_F(XdpProgram, RecordsNakFromATrackedPeerAndPassesItOn) {
  register_socket(LOCABUS_XSK_DEFAULT_SLOT);
  // Untracked: delivered, not recorded.
  expect(FrameBuilder().type(PacketType::nak).from(kPeer).to(kUs).ack(70).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_redirected});
  EXPECT_FALSE(maps_->peer(kPeer));

  maps_->track_peer(kPeer);
  const auto t0 = monotonic_ns();
  expect(FrameBuilder().type(PacketType::nak).from(kPeer).to(kUs).ack(77).seq(3).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_nak_recorded, LOCABUS_CTR_redirected});
  const auto p = maps_->peer(kPeer);
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->flags & LOCABUS_PEER_F_NAK_VALID);
  EXPECT_FALSE(p->flags & LOCABUS_PEER_F_ACK_VALID);
  EXPECT_EQ(p->nak_ack, 77);
  EXPECT_EQ(p->nak_seq, 3);
  EXPECT_EQ(p->naks, 1u);
  EXPECT_GE(p->last_nak_ns, t0);
}

TEST_F(XdpProgram, TrackingMorePeersThanTheTableHoldsIsAClearError) {
  load(0, 2);
  maps_->track_peer(10);
  maps_->track_peer(11);
  maps_->track_peer(11);  // re-tracking an existing peer needs no room
  try {
    maps_->track_peer(12);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(e.hint().find("--max-peers"), std::string::npos) << e.hint();
  }
}

TEST_F(XdpProgram, ForgetAndTrackAgainStartsAFreshRecord) {
  track(kPeer, 0, 200);
  run(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).ack(100).build());
  ASSERT_EQ(maps_->peer(kPeer)->ack_num, 100);
  ASSERT_TRUE(maps_->forget_peer(kPeer));
  EXPECT_FALSE(maps_->forget_peer(kPeer));
  EXPECT_FALSE(maps_->published(kPeer).flags & LOCABUS_CONN_F_PUBLISHED) << "forgetting unpublishes";
  // Forgotten: ACKs go to user space again.
  expect(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).ack(200).build(), XDP_DROP,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_ack_untracked, LOCABUS_CTR_drop_no_socket});
  // Tracked again (a new connection): an ACK "older" than 100 is consumed.
  track(kPeer, 40, 60);
  run(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).ack(50).build());
  const auto p = maps_->peer(kPeer);
  EXPECT_EQ(p->ack_num, 50);
  EXPECT_EQ(p->acks, 1u);
  EXPECT_EQ(p->passed_acks, 0u);
}

TEST_F(XdpProgram, TrackPeerResetsAnExistingRecordAndUnpublishes) {
  track(kPeer, 0, 200);
  run(FrameBuilder().type(PacketType::ack).from(kPeer).to(kUs).ack(100).build());
  maps_->track_peer(kPeer);
  const auto p = maps_->peer(kPeer);
  EXPECT_EQ(p->acks, 0u);
  EXPECT_FALSE(p->flags & LOCABUS_PEER_F_ACK_VALID);
  EXPECT_EQ(maps_->published(kPeer).flags, 0) << "a new connection is unpublished until the engine says";
}

// ---- demultiplexing into AF_XDP sockets ----

TEST_F(XdpProgram, RedirectsByProtocolThenToTheDefaultSocket) {
  register_socket(LOCABUS_P_KCCM);
  register_socket(LOCABUS_XSK_DEFAULT_SLOT);

  expect(data_to_us().proto(Protocol::kccm).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_redirected});
  expect(data_to_us().proto(Protocol::monitor).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_redirected});
  expect(data_to_us().proto_raw(200).build(), XDP_REDIRECT, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_redirected});
  // Control frames (a SYN here) take the same path as data.
  expect(FrameBuilder().type(PacketType::syn).from(kPeer).to(kUs).proto(Protocol::kccm).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_redirected});

  EXPECT_EQ(maps_->proto_stats(LOCABUS_P_KCCM).to_proto_socket, 2u);
  EXPECT_EQ(maps_->proto_stats(LOCABUS_P_KCCM).to_default_socket, 0u);
  EXPECT_EQ(maps_->proto_stats(LOCABUS_P_MONITOR).to_default_socket, 1u);
  EXPECT_EQ(maps_->proto_stats(LOCABUS_P_MONITOR).to_proto_socket, 0u);
  EXPECT_EQ(maps_->proto_stats(200).to_default_socket, 1u);

  // Without a default socket only KCCM still has somewhere to go.
  ASSERT_TRUE(maps_->unregister_socket(0, LOCABUS_XSK_DEFAULT_SLOT));
  expect(data_to_us().proto(Protocol::monitor).build(), XDP_DROP,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_no_socket});
  expect(data_to_us().proto(Protocol::kccm).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_redirected});
  EXPECT_EQ(maps_->proto_stats(LOCABUS_P_MONITOR).no_socket, 1u);
}

TEST_F(XdpProgram, ASlotHeldByAnotherSocketIsNotTakenOver) {
  register_socket(LOCABUS_XSK_DEFAULT_SLOT);
  EXPECT_THROW(register_socket(LOCABUS_XSK_DEFAULT_SLOT), Error);
}

TEST_F(XdpProgram, BroadcastDataIsDelivered) {
  register_socket(LOCABUS_XSK_DEFAULT_SLOT);
  expect(data_to_us().to(wire::kBroadcast).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_redirected});
}

TEST_F(XdpProgram, ConfigChangesTakeEffectWithoutReload) {
  auto cfg = maps_->config();
  EXPECT_EQ(cfg.node_id, kUs);
  cfg.node_id = 7;
  maps_->set_config(cfg);
  expect(data_to_us().build(), XDP_DROP, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_not_ours});
  expect(data_to_us().to(7).build(), XDP_DROP, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_no_socket});
}

// ---- duplicate broadcast NAK suppression ----

constexpr std::uint64_t kEpoch = 0x1122334455667788ULL;
constexpr std::uint16_t kOtherReceiver = 3;
constexpr std::uint32_t kLongInterval = 10'000'000;  // 10 s: nothing in a test outlives it

// The data of a broadcast NAK (struct locabus_bcast_ctl, network order).
struct NakCtl {
  std::uint16_t stream = kUs;
  std::uint16_t first = 100;
  std::uint16_t count = 1;
  std::uint64_t epoch = kEpoch;
  std::uint8_t version = LOCABUS_CTRL_VERSION;
  std::size_t size = sizeof(locabus_bcast_ctl);  // bytes of data actually sent

  std::string bytes() const {
    locabus_bcast_ctl c{};
    c.version = version;
    c.stream = wire::hton16(stream);
    c.first = wire::hton16(first);
    c.count = wire::hton16(count);
    for (int i = 0; i < 8; ++i)  // big-endian, whatever the host
      reinterpret_cast<std::uint8_t*>(&c.epoch)[i] = static_cast<std::uint8_t>(epoch >> (56 - 8 * i));
    std::string out(reinterpret_cast<const char*>(&c), sizeof c);
    out.resize(size, '\x5a');
    return out;
  }
};

FrameBuilder bcast_nak(const NakCtl& ctl, std::uint16_t from = kPeer) {
  return FrameBuilder()
      .type(PacketType::nak)
      .from(from)
      .to(wire::kBroadcast)
      .ack(ctl.first)
      .window(64)
      .payload(ctl.bytes());
}
FrameBuilder bcast_nak(std::uint16_t first, std::uint16_t count, std::uint16_t from = kPeer) {
  NakCtl c;
  c.first = first;
  c.count = count;
  return bcast_nak(c, from);
}

class XdpNakDedup : public XdpProgram {
 protected:
  void SetUp() override {
    XdpProgram::SetUp();
    register_socket(LOCABUS_XSK_DEFAULT_SLOT);
    set_nak_dedup_us(kLongInterval);
  }

  // A NAK that gets through: delivered, counted and recorded.
  void expect_passed(const std::vector<std::byte>& frame) {
    expect(frame, XDP_REDIRECT,
           {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_redirected, LOCABUS_CTR_nak_bcast_passed});
  }
  // A NAK that is dropped as a duplicate.
  void expect_dropped(const std::vector<std::byte>& frame) {
    expect(frame, XDP_DROP, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_nak_dup_dropped});
  }
  // A NAK the dedup does not touch: delivered like any frame, not recorded.
  void expect_untouched(const std::vector<std::byte>& frame) {
    expect(frame, XDP_REDIRECT, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_redirected});
  }
};

TEST_F(XdpNakDedup, TheFirstNakPassesAndIsRecorded) {
  EXPECT_FALSE(maps_->nak(100));
  const auto t0 = monotonic_ns();
  expect_passed(bcast_nak(100, 5).build());
  const auto t1 = monotonic_ns();
  const auto e = maps_->nak(100);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->count, 5);
  EXPECT_EQ(e->epoch, kEpoch);
  EXPECT_GE(e->passed_ns, t0);
  EXPECT_LE(e->passed_ns, t1);
  EXPECT_EQ(e->reserved0, 0);
  EXPECT_EQ(e->reserved1, 0u);
  EXPECT_EQ(maps_->naks().size(), 1u);
}

TEST_F(XdpNakDedup, TheSameNakWithinTheIntervalIsDropped) {
  expect_passed(bcast_nak(100, 5).build());
  const auto passed_at = maps_->nak(100)->passed_ns;
  // From the same receiver or another one: the sender repairs once.
  expect_dropped(bcast_nak(100, 5).build());
  expect_dropped(bcast_nak(100, 5, kOtherReceiver).build());
  // Drops never refresh the record: duplicates cannot extend the suppression.
  EXPECT_EQ(maps_->nak(100)->passed_ns, passed_at);
  EXPECT_EQ(maps_->nak(100)->count, 5);
}

TEST_F(XdpNakDedup, ASubRangeWithTheSameFirstIsDropped) {
  expect_passed(bcast_nak(100, 5).build());
  expect_dropped(bcast_nak(100, 4).build());
  expect_dropped(bcast_nak(100, 1).build());
  EXPECT_EQ(maps_->nak(100)->count, 5);
}

TEST_F(XdpNakDedup, AWiderRangePassesAndReplacesTheRecord) {
  expect_passed(bcast_nak(100, 3).build());
  const auto first_pass = maps_->nak(100)->passed_ns;
  expect_passed(bcast_nak(100, 4).build());
  const auto e = maps_->nak(100);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->count, 4);
  EXPECT_GE(e->passed_ns, first_pass);
  // The wider range is now what covers: 4 is dropped, 5 passes.
  expect_dropped(bcast_nak(100, 4).build());
  expect_dropped(bcast_nak(100, 3).build());
  expect_passed(bcast_nak(100, 5).build());
}

TEST_F(XdpNakDedup, ADifferentFirstPassesEvenInsideAnEarlierRange) {
  expect_passed(bcast_nak(100, 10).build());
  // The match is exact on first: [101, 102) lies inside [100, 110) but passes.
  expect_passed(bcast_nak(101, 1).build());
  expect_passed(bcast_nak(99, 1).build());
  expect_passed(bcast_nak(65535, 3).build());  // a range across the wrap
  EXPECT_EQ(maps_->naks().size(), 4u);
  EXPECT_EQ(maps_->nak(100)->count, 10);
  EXPECT_EQ(maps_->nak(101)->count, 1);
  // Each first has its own record.
  expect_dropped(bcast_nak(101, 1).build());
  expect_dropped(bcast_nak(65535, 2).build());
}

TEST_F(XdpNakDedup, AfterTheIntervalTheNakPassesAgain) {
  expect_passed(bcast_nak(100, 5).build());
  expect_dropped(bcast_nak(100, 5).build());
  const auto passed_at = maps_->nak(100)->passed_ns;
  // The interval is read on every frame: shorten it and let it run out.
  set_nak_dedup_us(20'000);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  expect_passed(bcast_nak(100, 5).build());
  const auto repassed_at = maps_->nak(100)->passed_ns;
  EXPECT_GE(repassed_at, passed_at + 20'000'000);
  // The pass started a new interval (10 s again, so no timing in the check).
  set_nak_dedup_us(kLongInterval);
  expect_dropped(bcast_nak(100, 5).build());
  EXPECT_EQ(maps_->nak(100)->passed_ns, repassed_at);
}

TEST_F(XdpNakDedup, ZeroIntervalTurnsItOff) {
  set_nak_dedup_us(0);
  expect_untouched(bcast_nak(100, 5).build());
  expect_untouched(bcast_nak(100, 5).build());
  EXPECT_TRUE(maps_->naks().empty());
  // Turned on again at run time, it suppresses from the next pass on.
  set_nak_dedup_us(kLongInterval);
  expect_passed(bcast_nak(100, 5).build());
  expect_dropped(bcast_nak(100, 5).build());
}

TEST_F(XdpNakDedup, NaksForAnotherStreamAreUntouched) {
  NakCtl c;
  c.stream = 7;  // another node's stream: we only overhear the NAK
  expect_untouched(bcast_nak(c).build());
  expect_untouched(bcast_nak(c).build());
  EXPECT_TRUE(maps_->naks().empty());
  // ... and they do not suppress NAKs for ours.
  expect_passed(bcast_nak(100, 1).build());
}

TEST_F(XdpNakDedup, UnicastNaksAreUnaffected) {
  for (int i = 0; i < 2; ++i) {
    expect_untouched(FrameBuilder().type(PacketType::nak).from(kPeer).to(kUs).ack(100).build());
    // Even with a broadcast NAK's data (unicast NAKs never carry any).
    expect_untouched(
        FrameBuilder().type(PacketType::nak).from(kPeer).to(kUs).payload(NakCtl{}.bytes()).build());
  }
  EXPECT_TRUE(maps_->naks().empty());
  // Unicast NAKs from a tracked peer are still recorded in its entry.
  maps_->track_peer(kPeer);
  expect(FrameBuilder().type(PacketType::nak).from(kPeer).to(kUs).ack(100).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_nak_recorded, LOCABUS_CTR_redirected});
}

TEST_F(XdpNakDedup, MalformedBroadcastNaksPassUntouched) {
  std::vector<NakCtl> bad(5);
  bad[0].size = sizeof(locabus_bcast_ctl) - 1;  // len 31
  bad[1].size = 0;                              // len 16
  bad[2].version = LOCABUS_CTRL_VERSION + 1;
  bad[3].version = 0;
  bad[4].count = 0;
  for (std::size_t i = 0; i < bad.size(); ++i) {
    SCOPED_TRACE(i);
    expect_untouched(bcast_nak(bad[i]).build());
    expect_untouched(bcast_nak(bad[i]).build());
  }
  // len short of the control payload, though the frame holds all of it
  // (as Ethernet padding might): len decides, not the frame's size.
  for (std::uint16_t len : {16 + 15, 16}) {
    SCOPED_TRACE(len);
    expect_untouched(bcast_nak(100, 1).len(len).build());
    expect_untouched(bcast_nak(100, 1).len(len).build());
  }
  EXPECT_TRUE(maps_->naks().empty());
  // None of them suppresses the well-formed NAK for the same range.
  expect_passed(bcast_nak(100, 1).build());
}

TEST_F(XdpNakDedup, LongerDataIsStillABroadcastNak) {
  // Later versions may append fields: receivers accept longer payloads.
  NakCtl c;
  c.size = sizeof(locabus_bcast_ctl) + 8;
  expect_passed(bcast_nak(c).build());
  expect_dropped(bcast_nak(c).build());
  expect_dropped(bcast_nak(100, 1).build());
}

TEST_F(XdpNakDedup, ANakForAnotherIncarnationPasses) {
  expect_passed(bcast_nak(100, 5).build());
  NakCtl old;
  old.count = 5;
  old.epoch = kEpoch - 1;  // a receiver still on our previous life's stream
  expect_passed(bcast_nak(old).build());
  EXPECT_EQ(maps_->nak(100)->epoch, kEpoch - 1);
  expect_passed(bcast_nak(100, 5).build());
  expect_dropped(bcast_nak(100, 5).build());
}

TEST_F(XdpNakDedup, OnlyNaksThatReachUserSpaceAreRecorded) {
  ASSERT_TRUE(maps_->unregister_socket(0, LOCABUS_XSK_DEFAULT_SLOT));
  // No socket: dropped as unclaimed, so nobody heard it and nothing is recorded.
  expect(bcast_nak(100, 5).build(), XDP_DROP, {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_drop_no_socket});
  EXPECT_FALSE(maps_->nak(100));
  // Passed to the stack (an AF_PACKET reader) counts as reaching user space.
  auto cfg = maps_->config();
  cfg.flags = LOCABUS_CFG_F_PASS_UNCLAIMED;
  maps_->set_config(cfg);
  expect(bcast_nak(100, 5).build(), XDP_PASS,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_passed_unclaimed, LOCABUS_CTR_nak_bcast_passed});
  expect_dropped(bcast_nak(100, 5).build());
}

TEST_F(XdpNakDedup, BroadcastNaksFromATrackedPeerStayOutOfItsConnectionRecord) {
  // The peers entry describes the unicast connection; a broadcast NAK names
  // a position in our broadcast stream and must not be mixed into it.
  maps_->track_peer(kPeer);
  expect(bcast_nak(100, 5).build(), XDP_REDIRECT,
         {LOCABUS_CTR_rx_locabus, LOCABUS_CTR_redirected, LOCABUS_CTR_nak_bcast_passed});
  expect_dropped(bcast_nak(100, 5).build());
  EXPECT_EQ(maps_->peer(kPeer)->naks, 0u);
  EXPECT_FALSE(maps_->peer(kPeer)->flags & LOCABUS_PEER_F_NAK_VALID);
}

}  // namespace
}  // namespace locabus
