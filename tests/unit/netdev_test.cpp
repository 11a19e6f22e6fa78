// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "common/error.hpp"
#include "fastpath/counters.hpp"
#include "fastpath/fastpath.hpp"
#include "fastpath/netdev.hpp"

namespace locabus {
namespace {

TEST(NodeId, LowSixteenBitsOfTheIpv4Address) {
  EXPECT_EQ(net::node_id_from_ipv4(0xC6120005), 0x0005);  // 198.18.0.5
  EXPECT_EQ(net::node_id_from_ipv4(0x0A000102), 0x0102);  // 10.0.1.2
  EXPECT_FALSE(net::node_id_from_ipv4(0x0A00FFFF));       // would be broadcast
}

TEST(NodeId, Parse) {
  EXPECT_EQ(net::parse_node_id("513"), 513);
  EXPECT_EQ(net::parse_node_id("0x201"), 0x201);
  EXPECT_EQ(net::parse_node_id("0"), 0);
  EXPECT_EQ(net::parse_node_id("65534"), 65534);
  EXPECT_FALSE(net::parse_node_id("65535"));
  EXPECT_FALSE(net::parse_node_id("0xffff"));
  EXPECT_FALSE(net::parse_node_id("70000"));
  EXPECT_FALSE(net::parse_node_id("-1"));
  EXPECT_FALSE(net::parse_node_id("12a"));
  EXPECT_FALSE(net::parse_node_id(""));
}

TEST(Interface, MissingInterfaceIsAClearError) {
  try {
    net::lookup_interface("lbnosuchif0");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no network interface named 'lbnosuchif0'"), std::string::npos);
    EXPECT_NE(e.hint().find("ip link"), std::string::npos);
  }
}

TEST(Interface, LoopbackIsNotEthernet) { EXPECT_THROW(net::lookup_interface("lo"), Error); }

TEST(Counters, NamesMatchTheStructFields) {
  EXPECT_EQ(fastpath::kCounters.size(), static_cast<std::size_t>(LOCABUS_CTR__COUNT));
  EXPECT_EQ(fastpath::kCounters[LOCABUS_CTR_drop_csum].name, "drop_csum");
  EXPECT_EQ(fastpath::kCounters[LOCABUS_CTR_rx_locabus].name, "rx_locabus");
  EXPECT_EQ(offsetof(locabus_xdp_stats, drop_csum) / sizeof(__u64),
            static_cast<std::size_t>(LOCABUS_CTR_drop_csum));
}

TEST(Counters, SummedOverCpus) {
  std::vector<locabus_xdp_stats> per_cpu(3);
  per_cpu[0].drop_csum = 1;
  per_cpu[2].drop_csum = 5;
  per_cpu[1].redirected = 7;
  const auto total = fastpath::sum_counters(per_cpu);
  EXPECT_EQ(total[LOCABUS_CTR_drop_csum], 6u);
  EXPECT_EQ(total[LOCABUS_CTR_redirected], 7u);
  EXPECT_EQ(total[LOCABUS_CTR_drop_own], 0u);
}

TEST(Process, StartTimeOfSelfAndOfNobody) {
  EXPECT_TRUE(fastpath::process_start_time(::getpid()).has_value());
  EXPECT_FALSE(fastpath::process_start_time(0x3ffffff).has_value());
}

TEST(AttachMode, Parse) {
  EXPECT_EQ(fastpath::parse_attach_mode("auto"), fastpath::AttachMode::automatic);
  EXPECT_EQ(fastpath::parse_attach_mode("skb"), fastpath::AttachMode::generic);
  EXPECT_FALSE(fastpath::parse_attach_mode("hw"));
}

}  // namespace
}  // namespace locabus
