// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#pragma once

#include <cstdint>

#include "engine/clock.hpp"

namespace locabus::engine {

/// Every tunable of the engine. The defaults follow the Locabus paper
/// (window 1024, ACK timer 0.2 s, discovery for a minute) where it gives a
/// number; docs/ARCHITECTURE.md explains the others.
struct EngineConfig {
  /// This node's id (never 0xFFFF). See fastpath/netdev.hpp default_node_id().
  std::uint16_t node_id = 1;

  // ---- reliable unicast ----------------------------------------------------
  /// Go-back-N window: packets in flight per connection (<= 32767).
  std::uint16_t window = 1024;
  /// Messages a caller may queue per peer, in flight included. send()
  /// returns would_block beyond it. Below `window` it also caps the packets
  /// in flight.
  std::uint16_t send_buffer = 2048;
  /// Delivered messages held per peer until the application reads them; the
  /// free space is the credit window advertised to the peer.
  std::uint16_t receive_buffer = 1024;
  /// Delayed-ACK timer (the paper's 0.2 s).
  Nanos ack_delay = std::chrono::milliseconds(200);
  /// Acknowledge at once after this many unacknowledged packets.
  std::uint16_t ack_every = 64;
  /// Retransmission timeout before any RTT sample, and its bounds. The floor
  /// must exceed ack_delay, or a lone message would always be retransmitted
  /// before its delayed ACK could arrive.
  Nanos rto_initial = std::chrono::milliseconds(400);
  Nanos rto_min = std::chrono::milliseconds(250);
  Nanos rto_max = std::chrono::seconds(4);
  /// Consecutive retransmission timeouts without progress after which the
  /// peer is declared unreachable and every pending send to it fails.
  std::uint8_t max_retransmits = 8;
  /// Least time between two NAKs (receiver) or two go-backs for the same
  /// sequence number (sender) on one connection.
  Nanos nak_holdoff = std::chrono::milliseconds(2);

  // ---- membership ----------------------------------------------------------
  /// DISCOVER is broadcast every discover_interval for discover_duration
  /// after start (the paper: "for up to one minute").
  Nanos discover_interval = std::chrono::seconds(1);
  Nanos discover_duration = std::chrono::seconds(60);
  /// Broadcast heartbeat period.
  Nanos heartbeat_interval = std::chrono::milliseconds(500);
  /// Silence after which a member is suspect (and probed), then dead.
  Nanos suspect_after = std::chrono::milliseconds(2000);
  Nanos dead_after = std::chrono::milliseconds(4000);
  /// PROBE period while a member is suspect.
  Nanos probe_interval = std::chrono::milliseconds(500);

  // ---- batching --------------------------------------------------------------
  /// Frames taken from the transport per do_work().
  std::uint16_t rx_batch = 64;
  /// Frames built before they are handed to the transport.
  std::uint16_t tx_batch = 64;

  /// Throws locabus::Error naming the first bad setting and its valid range.
  void validate() const;
};

}  // namespace locabus::engine
