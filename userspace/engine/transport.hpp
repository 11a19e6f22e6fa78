// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The transport seam: the engine sends and receives whole Ethernet frames
// through this interface and knows nothing else about the link. AF_XDP,
// AF_PACKET and the simulated network are implementations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "common/counters.hpp"
#include "common/function_ref.hpp"
#include "locabus/ack_rule.h"
#include "locabus/wire.hpp"

namespace locabus::engine {

/// One Ethernet frame: destination MAC, source MAC, EtherType 0x88B5, the
/// Locabus header, data. No FCS.
using FrameBytes = std::span<const std::byte>;

class Transport {
 public:
  virtual ~Transport() = default;

  /// The MAC address this transport sends from.
  virtual wire::MacAddress mac() const noexcept = 0;

  /// Queues frames for transmission, in order. Returns how many (a prefix of
  /// `frames`) were accepted; the rest could not be queued now (the TX ring
  /// is full) and should be offered again later. The bytes are copied before
  /// send() returns.
  virtual std::size_t send(std::span<const FrameBytes> frames) = 0;

  /// Calls `on_frame` once for each received frame, at most `max` times, and
  /// returns how many it delivered. The bytes are valid only during the
  /// call. Frames may be invalid: the engine validates every one.
  virtual std::size_t receive(std::size_t max, FunctionRef<void(FrameBytes)> on_frame) = 0;

  /// A file descriptor that becomes readable when frames arrive, for a
  /// blocking idle strategy; -1 if there is none (the simulation).
  virtual int wait_fd() const noexcept { return -1; }

  /// After send() accepted fewer frames than offered: true if wait_fd()
  /// becomes readable by itself once offering them again is worthwhile
  /// (the AF_XDP transport arms a short retry timer in its epoll set). The
  /// engine then lets its idle strategy sleep instead of retrying at once,
  /// so a full TX ring costs no busy loop. Default false: the engine
  /// retries on its next duty cycle.
  virtual bool signals_tx_space() const noexcept { return false; }

  /// Every frame receive() hands over has already passed the fast path's
  /// validation in the kernel (lengths and checksum: the XDP program drops
  /// anything else before it reaches an AF_XDP socket), so the engine may
  /// skip verifying the checksum again. Default false.
  virtual bool frames_validated() const noexcept { return false; }

  /// The engine established (track) or closed (forget) a connection to
  /// `node`. The AF_XDP transport uses this to let the kernel consume that
  /// peer's pure ACKs (see docs/FASTPATH.md); others ignore it.
  virtual void track_peer(std::uint16_t node) { (void)node; }
  virtual void forget_peer(std::uint16_t node) { (void)node; }

  /// What the engine knows about its connection to a tracked `node`, for the
  /// fast path's ACK rule (locabus/ack_rule.h): the unacknowledged range and
  /// whether it must see every ACK. The engine calls it whenever that
  /// changes, before any frame beyond the previously published `max` is
  /// handed to send(). Must be cheap (the AF_XDP transport stores one word
  /// into a memory-mapped BPF array). A transport without a fast path
  /// ignores it.
  virtual void publish_conn(std::uint16_t node, const locabus_conn_pub& pub) {
    (void)node;
    (void)pub;
  }

  /// The other half of track_peer(): pure ACKs from tracked peers that were
  /// consumed below the engine (the XDP program keeps the latest ack_num and
  /// window per peer in a BPF map). Calls `on_ack` with the latest
  /// acknowledgment and window of each peer whose record changed since the
  /// last call; returns how many. The engine calls it every duty cycle. A
  /// transport that delivers every frame reports nothing.
  virtual std::size_t poll_acks(
      FunctionRef<void(std::uint16_t node, std::uint16_t ack, std::uint16_t window)> on_ack) {
    (void)on_ack;
    return 0;
  }

  /// Appends this transport's counter groups (common/counters.hpp): a
  /// "transport" group, and any below it ("transport.xsk"). The daemon
  /// renders them without knowing which transport it has. Default: none.
  virtual void counters(CounterGroups& out) const { (void)out; }
};

}  // namespace locabus::engine
