// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus events as an application sees them: names (C) and one-line
// renderings (C++), without a daemon.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include <locabus/client.hpp>

namespace {

locabus::Event broadcast_lost(std::uint16_t node, std::uint64_t first, std::uint64_t count, int failure) {
  locabus::Event e;
  std::memset(static_cast<locabus_event*>(&e), 0, sizeof(locabus_event));
  e.kind = LOCABUS_EV_BROADCAST_LOST;
  e.failure = static_cast<std::uint8_t>(failure);
  e.node = node;
  e.epoch = 1700;
  e.first_message = first;
  e.count = count;
  return e;
}

TEST(ClientEvents, EveryKindAndFailureHasAName) {
  EXPECT_STREQ(locabus_event_kind_name(LOCABUS_EV_SEND_FAILED), "send_failed");
  EXPECT_STREQ(locabus_event_kind_name(LOCABUS_EV_OVERRUN), "overrun");
  EXPECT_STREQ(locabus_event_kind_name(LOCABUS_EV_BROADCAST_LOST), "broadcast_lost");
  EXPECT_STREQ(locabus_event_kind_name(LOCABUS_EV_BROADCAST_LOST + 1), "unknown");
  EXPECT_STREQ(locabus_event_kind_name(-1), "unknown");
  EXPECT_STREQ(locabus_failure_name(LOCABUS_FAIL_RELEASED), "released");
  EXPECT_STREQ(locabus_failure_name(LOCABUS_FAIL_PEER_LEFT), "peer_left");
  EXPECT_STREQ(locabus_failure_name(LOCABUS_FAIL_UNKNOWN_NODE), "unknown_node");
}

TEST(ClientEvents, BroadcastLostNamesTheSenderTheRangeAndWhy) {
  const auto e = broadcast_lost(3, 100, 37, LOCABUS_FAIL_RELEASED);
  EXPECT_EQ(e.kind_name(), "broadcast_lost");
  EXPECT_EQ(e.to_string(),
            "37 broadcast message(s) from node 3 lost (stream sequences 100..136, epoch 1700): released");
  // One message: first == last.
  EXPECT_EQ(broadcast_lost(3, 7, 1, LOCABUS_FAIL_PEER_LEFT).to_string(),
            "1 broadcast message(s) from node 3 lost (stream sequences 7..7, epoch 1700): peer_left");
  // Stream sequences are 16 bits: a range may wrap past 65535.
  EXPECT_EQ(
      broadcast_lost(3, 65530, 10, LOCABUS_FAIL_PEER_RESTARTED).to_string(),
      "10 broadcast message(s) from node 3 lost (stream sequences 65530..3, epoch 1700): peer_restarted");
}

}  // namespace
