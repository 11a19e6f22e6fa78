// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The chaos program on a real veth: it drops and corrupts the configured
// share of Locabus frames, leaves IP alone, changes at run time and detaches
// cleanly.
#include <gtest/gtest.h>
#include <linux/if_link.h>
#include <net/if.h>

#include <bpf/libbpf.h>

#include <filesystem>
#include <memory>

#include "fastpath/chaos.hpp"
#include "fastpath/fastpath.hpp"
#include "fastpath/netdev.hpp"
#include "fastpath/packet_socket.hpp"
#include "frame_builder.hpp"
#include "netns.hpp"
#include "privileges.hpp"

namespace locabus {
namespace {

using namespace std::chrono_literals;
using test::FrameBuilder;

class ChaosE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    LOCABUS_REQUIRE_ROOT();
    fastpath::install_library_logging();
    net_ = std::make_unique<test::VethPair>();
  }
  void TearDown() override {
    if (net_) {
      net::NetnsScope in(net_->netns_b());
      chaos::detach(net_->if_b());
    }
    net_.reset();
  }

  struct Tally {
    std::size_t received = 0;
    std::size_t invalid = 0;
  };

  // Sends `n` DATA frames a -> b with AF_PACKET and counts what b's packet
  // socket gets (chaos runs in XDP, before it).
  Tally send_and_count(std::size_t n) {
    net::NetnsScope in_b(net_->netns_b());
    net::PacketSocket rx(net_->if_b());
    Tally t;
    std::vector<std::byte> buf(2048);
    auto drain = [&](std::chrono::milliseconds wait) {
      while (auto got = rx.receive(buf, wait)) {
        ++t.received;
        if (!wire::decode_frame(std::span<const std::byte>(buf.data(), *got))) ++t.invalid;
      }
    };
    // In batches, so that the socket's receive buffer never overflows.
    for (std::size_t sent = 0; sent < n;) {
      {
        net::NetnsScope in_a(net_->netns_a());
        net::PacketSocket tx(net_->if_a());
        for (std::size_t k = 0; k < 50 && sent < n; ++k, ++sent) {
          tx.send(FrameBuilder()
                      .type(wire::PacketType::data)
                      .from(1)
                      .to(2)
                      .seq(static_cast<std::uint16_t>(sent))
                      .payload_size(500)
                      .build());
        }
      }
      drain(20ms);
    }
    drain(300ms);
    return t;
  }

  std::unique_ptr<test::VethPair> net_;
};

TEST_F(ChaosE2E, DropsAndCorruptsTheConfiguredShare) {
  chaos::Settings s;
  s.drop_percent = 20;
  s.corrupt_percent = 10;
  s.seed = 7;
  {
    net::NetnsScope in(net_->netns_b());
    chaos::attach(net_->if_b(), s);
  }
  const std::size_t n = 2000;
  const Tally t = send_and_count(n);
  net::NetnsScope in(net_->netns_b());
  const auto st = chaos::stats(net_->if_b());
  EXPECT_EQ(st.seen, n);
  EXPECT_EQ(st.dropped + st.passed, n);
  EXPECT_EQ(t.received, st.passed) << "what passed XDP is what the socket got";
  EXPECT_NEAR(static_cast<double>(st.dropped), n * 0.20, n * 0.04);
  EXPECT_NEAR(static_cast<double>(t.invalid), st.passed * 0.10, n * 0.03);
  EXPECT_EQ(t.invalid, st.corrupted) << "every corrupted frame is caught by the checksum";

  // IP is never touched.
  EXPECT_EQ(
      test::run("ip netns exec " + net_->ns_a() + " ping -c 3 -i 0.2 -W 1 " + net_->ip_b() + " >/dev/null"),
      0);
}

TEST_F(ChaosE2E, SettingsChangeWhileItRunsAndDetachRemovesEverything) {
  chaos::Settings s;
  s.drop_percent = 100;
  {
    net::NetnsScope in(net_->netns_b());
    chaos::attach(net_->if_b(), s);
    EXPECT_THROW(chaos::attach(net_->if_b(), s), Error) << "a second attach must be refused";
  }
  EXPECT_EQ(send_and_count(50).received, 0u);
  {
    net::NetnsScope in(net_->netns_b());
    s.enabled = false;
    chaos::set(net_->if_b(), s);
    EXPECT_FALSE(chaos::settings(net_->if_b()).enabled);
  }
  EXPECT_EQ(send_and_count(50).received, 50u);
  net::NetnsScope in(net_->netns_b());
  const auto dir = chaos::pin_dir(net_->if_b());
  EXPECT_TRUE(std::filesystem::exists(dir));
  EXPECT_TRUE(chaos::detach(net_->if_b()));
  EXPECT_FALSE(std::filesystem::exists(dir));
  std::uint32_t id = 0;
  ASSERT_EQ(bpf_xdp_query_id(static_cast<int>(::if_nametoindex(net_->if_b().c_str())), 0, &id), 0);
  EXPECT_EQ(id, 0u) << "no XDP program may remain";
  EXPECT_FALSE(chaos::detach(net_->if_b()));
}

}  // namespace
}  // namespace locabus
