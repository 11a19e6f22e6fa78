// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#pragma once

#include <cstdint>

#include "engine/clock.hpp"

namespace locabus::engine {

/// Every tunable of the engine. The defaults follow the Locabus paper
/// (window 1024, ACK timer 0.2 s, discovery for a minute) where it gives a
/// number; docs/ARCHITECTURE.md explains the others.
/// Largest window: the old and the new connection's windows must not meet
/// in the 16-bit sequence space (docs/PROTOCOL.md, "Initial sequence
/// numbers"): 2 * 16000 + 256 < 32768.
inline constexpr std::uint16_t kMaxWindow = 16000;

struct EngineConfig {
  /// This node's id (never 0xFFFF). See fastpath/netdev.hpp default_node_id().
  std::uint16_t node_id = 1;

  // ---- reliable unicast ----------------------------------------------------
  /// Selective-repeat window: packets from the oldest unacknowledged to the
  /// newest sent, per connection (<= kMaxWindow).
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
  /// Least time between two NAKs (or immediate ACKs answering duplicates)
  /// on one connection. A frame that asks for an ACK is answered at once.
  Nanos nak_holdoff = std::chrono::milliseconds(2);
  /// Tail-loss probe: when a frame that asked for an ACK got no answer for
  /// max(2 * srtt, tlp_min), the newest unacknowledged frame is sent again
  /// (once per round), long before the retransmission timeout.
  Nanos tlp_min = std::chrono::milliseconds(5);
  /// Payload bytes all connections together may hold ahead of gaps
  /// (selective repeat). Beyond it frames ahead of a gap are dropped and
  /// asked for again later; in-order frames are always taken.
  std::uint32_t reorder_memory = 64u << 20;

  // ---- congestion control (docs/ARCHITECTURE.md, "Congestion control") ------
  /// Congestion window at the start of a connection, and its floor (packets).
  std::uint16_t cc_initial_window = 64;
  std::uint16_t cc_min_window = 4;
  /// A run of this many consecutive first transmissions reported missing
  /// in one NAK is taken for a queue overflowing (congestion); shorter runs
  /// are random loss and only repaired.
  std::uint16_t cc_loss_run = 6;
  /// Multiplicative decrease on congestion, in 1/1024 (717 = 0.7).
  std::uint16_t cc_beta = 717;

  // ---- reliable broadcast (docs/PROTOCOL.md, "Reliable broadcast") ---------
  /// Messages this node's broadcast stream holds until every live member has
  /// them (sent or not); broadcast() returns would_block beyond it (<= 16384).
  std::uint16_t broadcast_buffer = 4096;
  /// Messages held per received stream: delivered but unread, plus frames
  /// that arrived ahead of a gap (<= 16384). Frames further ahead are dropped
  /// and asked for again later.
  std::uint16_t broadcast_receive_buffer = 4096;
  /// The sender POLLs after this many new frames...
  std::uint16_t poll_every = 32;
  /// ...and, while members have not confirmed everything, after this long
  /// without one, doubling up to poll_interval_max while nothing is confirmed.
  Nanos poll_interval = std::chrono::milliseconds(5);
  Nanos poll_interval_max = std::chrono::milliseconds(100);
  /// Members each POLL asks to acknowledge: the one furthest behind, then a
  /// rotation over all live members (1..4).
  std::uint8_t poll_ackers = 2;
  /// A receiver waits a random time in [bcast_nak_delay/2, bcast_nak_delay]
  /// after it notices a gap before it NAKs, so that one receiver's NAK can
  /// hold back the others'.
  Nanos bcast_nak_delay = std::chrono::milliseconds(2);
  /// After a NAK for a sequence, its own or another node's, a receiver waits
  /// this long for the repair before it asks again.
  Nanos bcast_repair_wait = std::chrono::milliseconds(20);
  /// The sender retransmits one frame at most once per this interval, however
  /// many NAKs ask for it.
  Nanos bcast_repair_holdoff = std::chrono::milliseconds(2);

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
