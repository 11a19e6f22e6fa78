// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// End to end on a veth pair between two network namespaces: the fast path
// attached natively on both ends, frames sent over AF_XDP and AF_PACKET.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <locabus/wire.hpp>

#include "common/error.hpp"
#include "fastpath/fastpath.hpp"
#include "fastpath/netdev.hpp"
#include "fastpath/packet_socket.hpp"
#include "fastpath/xsk.hpp"
#include "frame_builder.hpp"
#include "netns.hpp"
#include "privileges.hpp"

namespace locabus {
namespace {

using namespace std::chrono_literals;
using test::FrameBuilder;
using wire::PacketType;

constexpr std::uint16_t kNodeA = 1;
constexpr std::uint16_t kNodeB = 2;

class FastPathE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    LOCABUS_REQUIRE_ROOT();
    fastpath::install_library_logging();
    net_ = std::make_unique<test::VethPair>();
  }

  void TearDown() override {
    // Fast paths detach inside their own namespace, before it disappears.
    fp_a_.reset();
    fp_b_.reset();
    net_.reset();
  }

  std::unique_ptr<fastpath::FastPath> attach(int netns, const std::string& iface, std::uint16_t node,
                                             bool own = true) {
    net::NetnsScope in(netns);
    fastpath::Options o;
    o.iface = iface;
    o.node_id = node;
    o.mode = fastpath::AttachMode::native;  // veth supports it: anything else is a failure
    o.own = own;
    return fastpath::FastPath::attach(o);
  }

  // Receives on `sock` until `want` frames arrived or `timeout` passed.
  static std::vector<std::vector<std::byte>> receive(xsk::Socket& sock, std::size_t want,
                                                     std::chrono::milliseconds timeout) {
    std::vector<std::vector<std::byte>> got;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (got.size() < want) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left <= 0ms) break;
      if (!sock.wait_readable(left)) continue;
      sock.receive(64, [&](std::span<const std::byte> f) { got.emplace_back(f.begin(), f.end()); });
    }
    return got;
  }

  std::unique_ptr<test::VethPair> net_;
  std::unique_ptr<fastpath::FastPath> fp_a_, fp_b_;
};

TEST_F(FastPathE2E, AfXdpDeliversValidFramesAndTheKernelDropsBadOnes) {
  fp_a_ = attach(net_->netns_a(), net_->if_a(), kNodeA);
  fp_b_ = attach(net_->netns_b(), net_->if_b(), kNodeB);
  ASSERT_EQ(fp_a_->mode(), fastpath::AttachMode::native);
  ASSERT_EQ(fp_b_->mode(), fastpath::AttachMode::native);

  // B: an AF_XDP socket as the default socket of queue 0.
  std::unique_ptr<xsk::Socket> rx;
  {
    net::NetnsScope in(net_->netns_b());
    rx = std::make_unique<xsk::Socket>(net_->if_b());
  }
  xsk::Registration reg(fp_b_->maps(), *rx, LOCABUS_XSK_DEFAULT_SLOT);

  // A: send through AF_XDP (TX) and inject junk through AF_PACKET.
  net::Interface if_a, if_b;
  {
    net::NetnsScope in(net_->netns_b());
    if_b = net::lookup_interface(net_->if_b());
  }
  {
    net::NetnsScope in(net_->netns_a());
    if_a = net::lookup_interface(net_->if_a());
    xsk::Socket tx(net_->if_a());
    net::PacketSocket raw(net_->if_a());
    const auto good = FrameBuilder()
                          .type(PacketType::data)
                          .proto(wire::Protocol::kccm)
                          .from(kNodeA)
                          .to(kNodeB)
                          .seq(41)
                          .src(if_a.mac)
                          .dst(if_b.mac)
                          .payload("hello over AF_XDP")
                          .build();
    raw.send(FrameBuilder().from(kNodeA).to(kNodeB).payload("corrupted").corrupt_csum().build());
    raw.send(FrameBuilder().from(kNodeA).to(99).payload("for someone else").build());
    ASSERT_TRUE(tx.send(good));
    tx.flush();
    // Wait for the completion so the frame has really left.
    for (int i = 0; i < 100 && tx.tx_in_flight(); ++i) {
      std::this_thread::sleep_for(10ms);
      tx.flush();
      tx.reclaim();
    }
    EXPECT_EQ(tx.tx_in_flight(), 0u) << "AF_XDP transmission did not complete";
  }

  auto frames = receive(*rx, 1, 3s);
  ASSERT_EQ(frames.size(), 1u) << "the valid frame must arrive";
  // Nothing else may follow: the bad frames were dropped in the kernel.
  auto more = receive(*rx, 1, 300ms);
  EXPECT_TRUE(more.empty()) << "a dropped frame reached user space";

  const auto d = wire::decode_frame(frames[0]);
  ASSERT_TRUE(d) << wire::to_string(d.error());
  EXPECT_EQ(d->header.node_from(), kNodeA);
  EXPECT_EQ(d->header.node_to(), kNodeB);
  EXPECT_EQ(d->header.seq(), 41);
  EXPECT_EQ(d->header.proto(), LOCABUS_P_KCCM);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(d->payload.data()), d->payload.size()),
            "hello over AF_XDP");
  EXPECT_EQ(d->src, if_a.mac);

  const auto c = fp_b_->maps().counters();
  EXPECT_EQ(c[LOCABUS_CTR_redirected], 1u);
  EXPECT_EQ(c[LOCABUS_CTR_drop_csum], 1u);
  EXPECT_EQ(c[LOCABUS_CTR_drop_not_ours], 1u);
  EXPECT_EQ(c[LOCABUS_CTR_rx_locabus], 3u);
  EXPECT_EQ(fp_b_->maps().proto_stats(LOCABUS_P_KCCM).to_default_socket, 1u);
  EXPECT_EQ(rx->stats().rx_dropped, 0u);
}

TEST_F(FastPathE2E, PureAckFromATrackedPeerIsConsumedInTheKernel) {
  fp_a_ = attach(net_->netns_a(), net_->if_a(), kNodeA);
  fp_b_ = attach(net_->netns_b(), net_->if_b(), kNodeB);
  std::unique_ptr<xsk::Socket> rx;
  {
    net::NetnsScope in(net_->netns_b());
    rx = std::make_unique<xsk::Socket>(net_->if_b());
  }
  xsk::Registration reg(fp_b_->maps(), *rx, LOCABUS_XSK_DEFAULT_SLOT);
  auto send_ack = [&](std::uint16_t ack) {
    net::NetnsScope in(net_->netns_a());
    net::PacketSocket raw(net_->if_a());
    raw.send(FrameBuilder().type(PacketType::ack).from(kNodeA).to(kNodeB).ack(ack).window(1024).build());
  };

  // Before the connection is established the ACK is the engine's business.
  send_ack(1);
  const auto first = receive(*rx, 1, 2s);
  ASSERT_EQ(first.size(), 1u) << "an untracked peer's ACK must reach user space";
  EXPECT_EQ(wire::decode_frame(first[0])->header.type(), PacketType::ack);

  fp_b_->maps().track_peer(kNodeA);
  fp_b_->maps().publish(kNodeA, locabus_conn_pub{900, 1100, LOCABUS_CONN_F_PUBLISHED, 1});
  send_ack(1000);
  EXPECT_TRUE(receive(*rx, 1, 500ms).empty()) << "a tracked peer's pure ACK woke user space";
  const auto p = fp_b_->maps().peer(kNodeA);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->ack_num, 1000);
  EXPECT_EQ(p->ack_window, 1024);
  const auto c = fp_b_->maps().counters();
  EXPECT_EQ(c[LOCABUS_CTR_ack_consumed], 1u);
  EXPECT_EQ(c[LOCABUS_CTR_ack_untracked], 1u);
}

TEST_F(FastPathE2E, IpTrafficKeepsWorkingWhileAttached) {
  fp_a_ = attach(net_->netns_a(), net_->if_a(), kNodeA);
  fp_b_ = attach(net_->netns_b(), net_->if_b(), kNodeB);
  std::string out;
  const int rc = test::run("ip netns exec " + net_->ns_a() + " ping -c 3 -i 0.2 -W 2 " + net_->ip_b(), &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_GT(fp_b_->maps().counters()[LOCABUS_CTR_pass_other], 0u) << "ARP/IPv4 must have passed through XDP";
}

TEST_F(FastPathE2E, DetachRemovesProgramAndPins) {
  fp_b_ = attach(net_->netns_b(), net_->if_b(), kNodeB);
  const auto pins = fp_b_->pin_dir();
  EXPECT_TRUE(std::filesystem::exists(pins / fastpath::kPinPeers));
  fp_b_->detach();
  net::NetnsScope in(net_->netns_b());
  const auto s = fastpath::status(net_->if_b());
  EXPECT_TRUE(s.program_ids.empty());
  EXPECT_FALSE(s.pinned);
  EXPECT_FALSE(std::filesystem::exists(pins));
}

TEST_F(FastPathE2E, NodeIdDefaultsToTheLowBitsOfTheIpv4Address) {
  net::NetnsScope in(net_->netns_b());
  fastpath::Options o;
  o.iface = net_->if_b();
  fp_b_ = fastpath::FastPath::attach(o);
  const auto ifc = net::lookup_interface(net_->if_b());
  ASSERT_TRUE(ifc.ipv4);
  EXPECT_EQ(fp_b_->node_id(), *ifc.ipv4 & 0xffff);
  EXPECT_EQ(fp_b_->maps().config().node_id, fp_b_->node_id());
}

// A process that attached and died without detaching leaves program and
// pins behind; the next attach must see them as stale and replace them.
TEST_F(FastPathE2E, StaleStateOfACrashedOwnerIsReplaced) {
  std::uint32_t crashed_prog = 0;
  {
    int pipefd[2];
    ASSERT_EQ(::pipe(pipefd), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(pipefd[0]);
      std::uint32_t id = 0;
      try {
        auto fp = attach(net_->netns_b(), net_->if_b(), kNodeB);
        id = fp->program_id();
        fp->persist();  // then "crash": no detach
      } catch (...) {
      }
      (void)!::write(pipefd[1], &id, sizeof id);
      ::_exit(0);
    }
    ::close(pipefd[1]);
    ASSERT_EQ(::read(pipefd[0], &crashed_prog, sizeof crashed_prog),
              static_cast<ssize_t>(sizeof crashed_prog));
    ::close(pipefd[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
  }
  ASSERT_NE(crashed_prog, 0u) << "the child could not attach";

  {
    net::NetnsScope in(net_->netns_b());
    const auto s = fastpath::status(net_->if_b());
    EXPECT_EQ(s.program_ids, std::vector<std::uint32_t>{crashed_prog});
    EXPECT_TRUE(s.pinned);
    EXPECT_EQ(s.owner, fastpath::OwnerState::gone);
    EXPECT_FALSE(s.healthy());
  }
  fp_b_ = attach(net_->netns_b(), net_->if_b(), kNodeB);
  EXPECT_NE(fp_b_->program_id(), crashed_prog) << "stale program reused";
  net::NetnsScope in(net_->netns_b());
  const auto s = fastpath::status(net_->if_b());
  EXPECT_EQ(s.program_ids, std::vector<std::uint32_t>{fp_b_->program_id()});
  EXPECT_EQ(s.owner, fastpath::OwnerState::alive);
  EXPECT_TRUE(s.healthy());
}

TEST_F(FastPathE2E, ALiveOwnerIsNeverReplaced) {
  int ready[2], done[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(done), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    char c = 0;
    try {
      auto fp = attach(net_->netns_b(), net_->if_b(), kNodeB);
      c = 1;
      (void)!::write(ready[1], &c, 1);
      (void)!::read(done[0], &c, 1);  // hold it until the parent is done
    } catch (...) {
      (void)!::write(ready[1], &c, 1);
    }
    ::_exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 1) << "the child could not attach";

  try {
    fp_b_ = attach(net_->netns_b(), net_->if_b(), kNodeB);
    ADD_FAILURE() << "attach replaced a live owner";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("in use"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::to_string(child)), std::string::npos) << e.what();
  }
  {
    net::NetnsScope in(net_->netns_b());
    EXPECT_THROW(fastpath::detach(net_->if_b()), Error) << "detach without --force must refuse";
  }
  (void)!::write(done[1], &c, 1);  // the child detaches cleanly and exits
  int status = 0;
  ::waitpid(child, &status, 0);
  for (int fd : {ready[0], ready[1], done[0], done[1]}) ::close(fd);

  net::NetnsScope in(net_->netns_b());
  const auto s = fastpath::status(net_->if_b());
  EXPECT_TRUE(s.program_ids.empty()) << "the owner's clean exit must detach";
  EXPECT_FALSE(s.pinned);
}

}  // namespace
}  // namespace locabus
