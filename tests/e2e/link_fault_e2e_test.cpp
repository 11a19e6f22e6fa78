// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Link faults under the transports, on a veth pair between two namespaces:
// the link going down and up again, a lowered MTU, the interface deleted.
// Neither transport throws out of send() or receive(); frames the kernel
// refuses are accepted and dropped (counted by class), an error the socket
// reports is consumed (poll() sleeps again), and only a deleted interface is
// fatal(). Also: every datapath refuses an interface whose MTU is below 1500.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "fastpath/fastpath.hpp"
#include "fastpath/netdev.hpp"
#include "fastpath/packet_socket.hpp"
#include "frame_builder.hpp"
#include "netns.hpp"
#include "privileges.hpp"
#include "transport/datapath.hpp"
#include "transport/packet_transport.hpp"
#include "transport/xdp_transport.hpp"

namespace locabus {
namespace {

using namespace std::chrono_literals;
using test::FrameBuilder;
using wire::PacketType;

constexpr std::uint16_t kA = 1;
constexpr std::uint16_t kB = 2;

// revents of one poll() on `fd` (0: it timed out).
short poll_once(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 ? p.revents : 0;
}

// The transport under test sends from node A; B reads its kernel stack with
// an AF_PACKET socket (no XDP program on B).
class LinkFaultE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    LOCABUS_REQUIRE_ROOT();
    fastpath::install_library_logging();
    net_ = std::make_unique<test::VethPair>();
    {
      net::NetnsScope in(net_->netns_b());
      mac_b_ = net::lookup_interface(net_->if_b()).mac;
      raw_b_ = std::make_unique<net::PacketSocket>(net_->if_b());
      const int rcvbuf = 8 << 20;
      ASSERT_EQ(::setsockopt(raw_b_->fd(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf), 0);
    }
  }
  void TearDown() override {
    raw_b_.reset();
    net_.reset();
  }

  void ip_a(const std::string& args) {
    ASSERT_EQ(test::run("ip -n " + net_->ns_a() + " " + args), 0) << args;
  }

  // Frames from A to B with sequence numbers first..first+n-1, `payload` bytes each.
  std::vector<std::vector<std::byte>> frames(const wire::MacAddress& src, std::uint16_t first,
                                             std::uint16_t n, std::size_t payload = 100) {
    std::vector<std::vector<std::byte>> out;
    for (std::uint16_t i = 0; i < n; ++i)
      out.push_back(FrameBuilder()
                        .type(PacketType::data)
                        .from(kA)
                        .to(kB)
                        .seq(static_cast<std::uint16_t>(first + i))
                        .src(src)
                        .dst(mac_b_)
                        .payload_size(payload)
                        .build());
    return out;
  }
  static std::vector<engine::FrameBytes> spans(const std::vector<std::vector<std::byte>>& f) {
    return {f.begin(), f.end()};
  }

  // The sequence numbers of what reaches B within `timeout` of silence.
  std::vector<std::uint16_t> received_by_b(std::chrono::milliseconds timeout = 500ms) {
    std::vector<std::uint16_t> seqs;
    std::vector<std::byte> buf(2048);
    while (auto n = raw_b_->receive(buf, timeout)) {
      const auto d = wire::decode_frame(std::span(buf).first(*n));
      if (d) seqs.push_back(d->header.seq());
    }
    return seqs;
  }

  std::unique_ptr<test::VethPair> net_;
  wire::MacAddress mac_b_{};
  std::unique_ptr<net::PacketSocket> raw_b_;
};

// ---- AF_PACKET ------------------------------------------------------------------------

class PacketLinkFaults : public LinkFaultE2E {
 protected:
  void SetUp() override {
    LinkFaultE2E::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    net::NetnsScope in(net_->netns_a());
    tr_ = std::make_unique<transport::PacketTransport>(net_->if_a());
  }
  void TearDown() override {
    tr_.reset();
    LinkFaultE2E::TearDown();
  }
  std::size_t receive() {
    return tr_->receive(64, [](engine::FrameBytes) {});
  }

  std::unique_ptr<transport::PacketTransport> tr_;
};

TEST_F(PacketLinkFaults, ALinkDownIsReportedOnceDropsFramesWithoutThrowingAndFramesFlowWhenItIsBack) {
  const auto f = frames(tr_->mac(), 0, 10);
  ASSERT_EQ(tr_->send(spans(f)), 10u);
  EXPECT_EQ(received_by_b().size(), 10u);

  ip_a("link set " + net_->if_a() + " down");
  // The socket reports the link going down once (POLLERR, then ENETDOWN from
  // a receive, which consumes it): after that the fd must let a sleeper sleep.
  EXPECT_TRUE(poll_once(tr_->wait_fd(), 1000ms) & POLLERR);
  EXPECT_NO_THROW(EXPECT_EQ(receive(), 0u));
  EXPECT_EQ(tr_->faults().stats().rx_link_down, 1u);
  EXPECT_TRUE(tr_->faults().link_down());
  EXPECT_EQ(poll_once(tr_->wait_fd(), 200ms), 0) << "the error must be consumed, or an idle daemon spins";

  // Frames offered while the link is down are accepted and dropped (never a
  // refusal the engine would retry in a loop), all of them with one call.
  const auto lost = frames(tr_->mac(), 100, 150);
  std::size_t sent = 0;
  EXPECT_NO_THROW(sent = tr_->send(spans(lost)));
  EXPECT_EQ(sent, lost.size());
  EXPECT_EQ(tr_->faults().stats().tx_link_down_drops, 150u);
  EXPECT_EQ(tr_->faults().stats().link_downs, 1u);
  EXPECT_EQ(tr_->stats().tx_busy, 0u);
  EXPECT_EQ(tr_->stats().tx_frames, 10u);
  EXPECT_TRUE(tr_->faults().fatal().empty()) << "a link that is down is not fatal";

  ip_a("link set " + net_->if_a() + " up");
  const auto again = frames(tr_->mac(), 200, 5);
  ASSERT_EQ(tr_->send(spans(again)), 5u);
  EXPECT_FALSE(tr_->faults().link_down());
  EXPECT_EQ(received_by_b(), (std::vector<std::uint16_t>{200, 201, 202, 203, 204}));
  EXPECT_EQ(tr_->faults().stats().tx_link_down_drops, 150u);
}

TEST_F(PacketLinkFaults, AFrameLongerThanALoweredMtuIsDroppedAloneAndTheOthersGo) {
  ip_a("link set " + net_->if_a() + " mtu 1000");
  std::vector<std::vector<std::byte>> f = frames(tr_->mac(), 0, 6, 100);
  f[2] = frames(tr_->mac(), 2, 1, wire::kMaxPayload).front();  // 1514 bytes
  f[4] = frames(tr_->mac(), 4, 1, wire::kMaxPayload).front();
  std::size_t sent = 0;
  EXPECT_NO_THROW(sent = tr_->send(spans(f)));
  EXPECT_EQ(sent, f.size());
  EXPECT_EQ(tr_->faults().stats().tx_oversize_drops, 2u);
  EXPECT_FALSE(tr_->faults().link_down()) << "EMSGSIZE says nothing about the link";
  EXPECT_EQ(received_by_b(), (std::vector<std::uint16_t>{0, 1, 3, 5}));
  ip_a("link set " + net_->if_a() + " mtu 1500");
  ASSERT_EQ(tr_->send(spans(f)), f.size());
  EXPECT_EQ(received_by_b().size(), f.size());
  EXPECT_EQ(tr_->faults().stats().tx_oversize_drops, 2u);
}

TEST_F(PacketLinkFaults, ADeletedInterfaceIsFatalButNeverThrows) {
  ip_a("link del " + net_->if_a());
  EXPECT_TRUE(poll_once(tr_->wait_fd(), 1000ms) & POLLERR);
  EXPECT_NO_THROW(receive());
  const auto f = frames(tr_->mac(), 0, 3);
  std::size_t sent = 0;
  EXPECT_NO_THROW(sent = tr_->send(spans(f)));
  EXPECT_EQ(sent, 3u);
  EXPECT_NE(tr_->faults().fatal().find("is gone"), std::string::npos) << tr_->faults().fatal();
  EXPECT_NO_THROW(EXPECT_EQ(tr_->send(spans(f)), 3u));
  EXPECT_NO_THROW(EXPECT_EQ(receive(), 0u));
}

// ---- AF_XDP ---------------------------------------------------------------------------

class XdpLinkFaults : public LinkFaultE2E {
 protected:
  void SetUp() override {
    LinkFaultE2E::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    net::NetnsScope in(net_->netns_a());
    fastpath::Options o;
    o.iface = net_->if_a();
    o.node_id = kA;
    o.mode = fastpath::AttachMode::native;
    fp_ = fastpath::FastPath::attach(o);
    tr_ = std::make_unique<transport::XdpTransport>(*fp_);
  }
  void TearDown() override {
    tr_.reset();
    fp_.reset();
    LinkFaultE2E::TearDown();
  }
  // One duty cycle's worth: a receive (which services the TX retry).
  std::size_t receive() {
    return tr_->receive(64, [](engine::FrameBytes) {});
  }

  std::unique_ptr<fastpath::FastPath> fp_;
  std::unique_ptr<transport::XdpTransport> tr_;
};

TEST_F(XdpLinkFaults, ALinkDownDropsNewFramesWhileTheRingsWaitAndFramesFlowWhenItIsBack) {
  ASSERT_EQ(tr_->send(spans(frames(tr_->mac(), 0, 10))), 10u);
  EXPECT_EQ(received_by_b().size(), 10u);

  ip_a("link set " + net_->if_a() + " down");
  // The first batch goes on the ring, the kick says ENETDOWN: it waits there.
  const auto first = frames(tr_->mac(), 100, 20);
  ASSERT_EQ(tr_->send(spans(first)), 20u);
  EXPECT_TRUE(tr_->faults().link_down());
  EXPECT_GE(tr_->stats().tx_kick_down, 1u);
  // Later frames are accepted and dropped, never refused.
  for (int i = 0; i < 50; ++i) {
    const auto more = frames(tr_->mac(), static_cast<std::uint16_t>(1000 + 10 * i), 10);
    std::size_t sent = 0;
    EXPECT_NO_THROW(sent = tr_->send(spans(more)));
    EXPECT_EQ(sent, 10u);
  }
  EXPECT_EQ(tr_->faults().stats().tx_link_down_drops, 500u);
  EXPECT_EQ(tr_->stats().tx_busy, 0u);
  EXPECT_TRUE(tr_->faults().fatal().empty());
  // The retry timer probes the link, backing off: a sleeper on wait_fd()
  // wakes a few times a second, not thousands.
  int wakeups = 0;
  const auto until = std::chrono::steady_clock::now() + 1000ms;
  while (std::chrono::steady_clock::now() < until) {
    if (!poll_once(tr_->wait_fd(), 50ms)) continue;
    ++wakeups;
    receive();
  }
  EXPECT_GT(wakeups, 3);
  EXPECT_LT(wakeups, 40);

  ip_a("link set " + net_->if_a() + " up");
  // The waiting frames go at the next retry (at most 200 ms later), then new ones.
  for (int i = 0; i < 50 && tr_->faults().link_down(); ++i) {
    poll_once(tr_->wait_fd(), 20ms);
    receive();
  }
  EXPECT_FALSE(tr_->faults().link_down());
  ASSERT_EQ(tr_->send(spans(frames(tr_->mac(), 200, 5))), 5u);
  std::vector<std::uint16_t> want;
  for (std::uint16_t s = 100; s < 120; ++s) want.push_back(s);
  for (std::uint16_t s = 200; s < 205; ++s) want.push_back(s);
  EXPECT_EQ(received_by_b(), want);
}

TEST_F(XdpLinkFaults, ADeletedInterfaceIsFatalButNeverThrows) {
  ip_a("link del " + net_->if_a());
  const auto f = frames(tr_->mac(), 0, 3);
  std::size_t sent = 0;
  EXPECT_NO_THROW(sent = tr_->send(spans(f)));
  EXPECT_EQ(sent, 3u);
  EXPECT_NE(tr_->faults().fatal().find("is gone"), std::string::npos) << tr_->faults().fatal();
  EXPECT_NO_THROW(EXPECT_EQ(tr_->send(spans(f)), 3u));
  EXPECT_NO_THROW(EXPECT_EQ(receive(), 0u));
  EXPECT_EQ(poll_once(tr_->wait_fd(), 100ms), 0) << "no retry timer left running";
  // The fast path goes with the interface; detaching it (after the
  // transport, as locabusd does) must still work.
  tr_.reset();
  EXPECT_NO_THROW(fp_->detach());
}

// ---- the MTU at start ---------------------------------------------------------------------

TEST_F(LinkFaultE2E, EveryDatapathRefusesAnMtuBelow1500AndTouchesNothing) {
  ip_a("link set " + net_->if_a() + " mtu 1400");
  for (auto want : {transport::Datapath::packet, transport::Datapath::xdp, transport::Datapath::automatic}) {
    net::NetnsScope in(net_->netns_a());
    transport::DatapathOptions o;
    o.iface = net_->if_a();
    o.node_id = kA;
    o.want = want;
    try {
      transport::open_datapath(o);
      ADD_FAILURE() << "opened " << transport::to_string(want) << " on an interface with MTU 1400";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("MTU 1400"), std::string::npos) << e.what();
      EXPECT_EQ(e.hint(), "raise it: `ip link set " + net_->if_a() + " mtu 1500`");
    }
    EXPECT_TRUE(fastpath::status(net_->if_a()).program_ids.empty()) << "nothing attached";
  }
  ip_a("link set " + net_->if_a() + " mtu 1500");
  net::NetnsScope in(net_->netns_a());
  transport::DatapathOptions o;
  o.iface = net_->if_a();
  o.node_id = kA;
  o.want = transport::Datapath::packet;
  EXPECT_NO_THROW(transport::open_datapath(o));
}

}  // namespace
}  // namespace locabus
