// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The per-connection protocol state: what the paper bounds at 160 bytes
// ("TCP needs 360"). Buffers (the peer's send and receive queues),
// membership and counters live in the peer record beside it; this is only
// what the go-back-N state machine needs. docs/ARCHITECTURE.md lists every
// field.
#pragma once

#include <cstdint>

#include "engine/clock.hpp"
#include "engine/events.hpp"

namespace locabus::engine {

struct Connection {
  // Timers: the authoritative deadline (0 = not armed) and the deadline of
  // the one live timer-wheel entry for it (entries that do not match are
  // stale and ignored).
  Nanos rto_at{0};
  Nanos rto_wheel{0};
  Nanos ack_at{0};
  Nanos ack_wheel{0};

  // Round-trip estimate (RFC 6298) and the current timeout with back-off.
  Nanos srtt{0};
  Nanos rttvar{0};
  Nanos rto{0};
  Nanos rtt_sent_at{0};  // when rtt_seq was first sent (Karn: never a retransmission)

  Nanos nak_sent_at{0};  // receiver: last NAK or immediate ACK (holdoff)
  Nanos rtt_min{0};      // smallest RTT sample

  std::uint64_t peer_epoch = 0;  // the incarnation this connection is with

  // Transmission order (serial, 32-bit): every DATA frame sent is stamped
  // with ++tx_order (MessageRing::Slot::sent_order); held_order is the
  // latest stamp of a frame the peer reported holding. Frames keep their
  // order on the way, so a frame still missing that went out before it is lost.
  std::uint32_t tx_order = 0;
  std::uint32_t held_order = 0;
  std::uint32_t cut_order = 0;  // tx_order at the last congestion window reduction
  std::uint32_t held_rtt = 0;   // ns from sending the frame that set held_order to the NAK saying so

  // Sequence numbers: 16-bit, serial arithmetic (wire::seq_before).
  std::uint16_t iss = 0;       // our initial sequence number (the SYN's)
  std::uint16_t irs = 0;       // the peer's initial sequence number
  std::uint16_t snd_una = 0;   // oldest unacknowledged
  std::uint16_t snd_max = 0;   // next new sequence to transmit (everything before it was sent)
  std::uint16_t snd_edge = 0;  // peer's right window edge: its ack + window
  std::uint16_t rtt_seq = 0;   // the packet being timed
  std::uint16_t sacked = 0;    // sent packets the peer's NAKs say it holds (in [snd_una, snd_max))
  std::uint16_t rcv_nxt = 0;   // next expected from the peer
  std::uint16_t rcv_high =
      0;  // one past the highest sequence held (> rcv_nxt while frames wait behind a gap)
  std::uint16_t rcv_edge = 0;    // right edge we last advertised
  std::uint16_t rx_unacked = 0;  // packets accepted since our last ACK
  std::uint16_t fin_seq = 0;     // fin_wait: our FIN's seq; close_wait: the peer's

  // Congestion control (docs/ARCHITECTURE.md, "Congestion control"): packets.
  std::uint16_t cwnd = 0;      // congestion window: packets in flight (sent, not acked or held) at most
  std::uint16_t cwnd_acc = 0;  // congestion avoidance: packets acked towards the next +1
  std::uint16_t ssthresh = 0;  // slow start below it
  std::uint16_t recover = 0;   // snd_max at the last reduction: one reduction per round
  std::uint16_t rtx_nxt = 0;   // after a timeout: next sequence to send again (up to `recover`)

  ConnState state = ConnState::closed;
  std::uint8_t retries = 0;        // consecutive timeouts without progress
  std::uint8_t flags = 0;          // kTiming | kCloseAfterDrain | ...
  std::uint8_t flags2 = 0;         // kTlpArmed | kRecovery | kRtoRecovery | kAckReqOut
  std::uint8_t persist_shift = 0;  // window probes since the peer last gave credit (the persist back-off)

  static constexpr std::uint8_t kTiming = 1 << 0;           // rtt_seq is being timed
  static constexpr std::uint8_t kCloseAfterDrain = 1 << 1;  // close() called: FIN once drained
  static constexpr std::uint8_t kAckNow = 1 << 2;           // send an ACK in this duty cycle
  static constexpr std::uint8_t kNakNow = 1 << 3;           // send a NAK in this duty cycle
  static constexpr std::uint8_t kProbe = 1 << 4;            // one packet may go past the peer's edge
  static constexpr std::uint8_t kTracked = 1 << 5;          // Transport::track_peer() was called
  static constexpr std::uint8_t kNakPending = 1 << 6;       // NAK held back by the holdoff (ack timer)
  static constexpr std::uint8_t kAckPending = 1 << 7;       // ACK held back by the holdoff (ack timer)

  static constexpr std::uint8_t kTlpArmed = 1 << 0;     // the retransmission timer is at the tail-loss probe
  static constexpr std::uint8_t kRecovery = 1 << 2;     // cwnd was reduced; until snd_una passes `recover`
  static constexpr std::uint8_t kRtoRecovery = 1 << 3;  // a timeout: resend [rtx_nxt, recover) within cwnd
  static constexpr std::uint8_t kAckReqOut = 1 << 4;    // the newest DATA sent asked for an ACK at once
  // Bits 5-6: tail-loss probes sent since the peer last answered (0..3).
  static constexpr int kTlpCountShift = 5;
  static constexpr std::uint8_t kTlpCountMask = 3 << kTlpCountShift;
  static constexpr std::uint8_t kMaxTailProbes = 3;
  std::uint8_t tail_probes() const noexcept { return (flags2 & kTlpCountMask) >> kTlpCountShift; }

  bool open() const noexcept { return state != ConnState::closed; }
  /// Data may flow (ACKs, piggy-backing, our data).
  bool synchronized() const noexcept {
    return state == ConnState::established || state == ConnState::fin_wait || state == ConnState::close_wait;
  }
};

/// The paper's bound on per-connection state, enforced at compile time.
inline constexpr std::size_t kConnectionStateLimit = 160;
static_assert(sizeof(Connection) <= kConnectionStateLimit,
              "per-connection state must stay within the paper's 160 bytes (docs/ARCHITECTURE.md)");

}  // namespace locabus::engine
