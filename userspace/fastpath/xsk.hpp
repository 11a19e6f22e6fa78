// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// AF_XDP sockets (libxdp's xsk API) behind RAII: one UMEM per socket, half of
// its frames for receiving, half for sending.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/counters.hpp"
#include "common/function_ref.hpp"

namespace locabus::fastpath {
class Maps;
}

namespace locabus::xsk {

enum class BindMode {
  automatic,  // zero-copy, else copy mode (veth and many drivers)
  zero_copy,
  copy,
};
std::string_view to_string(BindMode m) noexcept;

struct Options {
  std::uint32_t queue = 0;
  std::uint32_t frame_count = 4096;  // UMEM frames; a power of two
  std::uint32_t frame_size = 2048;   // bytes per frame; 2048 or 4096
  std::uint32_t ring_size = 2048;    // RX/TX/fill/completion entries; power of two
  BindMode mode = BindMode::automatic;
  /// XDP_USE_NEED_WAKEUP: the kernel tells us when it needs a syscall, so
  /// nothing spins. Only turn off to measure what it saves.
  bool need_wakeup = true;
};

/// Kernel counters of one socket (XDP_STATISTICS).
/// The kernel's counters of one socket (struct xdp_statistics, same
/// names): X(name, description). Append only.
#define LOCABUS_XSK_COUNTERS(X)                                                                    \
  X(rx_dropped, "frames dropped for other reasons than an invalid descriptor (e.g. no RX buffer)") \
  X(rx_invalid_descs, "frames dropped: invalid RX descriptor")                                     \
  X(tx_invalid_descs, "invalid TX descriptors")                                                    \
  X(rx_ring_full, "frames dropped: the RX ring was full")                                          \
  X(rx_fill_ring_empty_descs, "times the fill ring was empty when the kernel needed a buffer")     \
  X(tx_ring_empty_descs, "times the TX ring was empty when the kernel looked for frames")

struct Stats {
  LOCABUS_COUNTER_FIELDS(Stats, LOCABUS_XSK_COUNTERS, ::locabus::CounterKind::counter)
};

class Socket {
 public:
  /// Creates the UMEM and binds an AF_XDP socket to (iface, opts.queue) in
  /// the calling thread's namespace. It receives only what an XDP program
  /// redirects to it: register it in the fast path's XSKMAP. Throws Error.
  Socket(const std::string& iface, const Options& opts = {});
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  /// The socket fd: poll it for POLLIN, or register it in an XSKMAP.
  int fd() const noexcept;
  std::uint32_t queue() const noexcept;
  bool zero_copy() const noexcept;

  /// Hands up to `max` received frames to `on_frame` (the span is valid
  /// only during the call) and recycles their buffers. Never blocks.
  std::size_t receive(std::size_t max, FunctionRef<void(std::span<const std::byte>)> on_frame);
  /// Asks the kernel to look at the RX side now (recvfrom, MSG_DONTWAIT):
  /// with busy polling enabled on the socket this polls the driver.
  void wakeup_rx();

  /// Blocks until a frame can be received or `timeout` passes; true if one can.
  bool wait_readable(std::chrono::milliseconds timeout);

  /// Queues a copy of `frame` for transmission. False when every TX buffer
  /// or ring slot is in use (back-pressure: flush(), reclaim(), retry).
  /// Throws Error when the frame can never fit a buffer.
  bool send(std::span<const std::byte> frame);
  /// Queues copies of a prefix of `frames` with one ring reservation and
  /// returns its length: all of them unless TX buffers or ring slots run
  /// out. Throws Error for a frame that can never fit a buffer.
  std::size_t send_batch(std::span<const std::span<const std::byte>> frames);
  /// Makes the kernel transmit what is queued (a syscall only when needed).
  /// Returns 0 or the errno; never throws. Transient: EAGAIN (it stopped
  /// after a batch, or is out of socket buffer), EBUSY (the device dropped
  /// one frame, e.g. without carrier), ENOBUFS, ENETDOWN (the link is down:
  /// it takes nothing); the frames it did not take stay queued. ENXIO: the
  /// socket lost its device (the interface was deleted).
  int flush() noexcept;
  /// Descriptors on the TX ring that the kernel has not taken yet.
  std::size_t tx_unsent() const noexcept;
  /// The kernel asks for a syscall to process the TX ring (always so in
  /// copy mode, where only sendto() or poll() transmit).
  bool tx_needs_wakeup() const noexcept;
  /// Takes back the buffers of completed transmissions; returns how many.
  std::size_t reclaim();
  /// Frames queued or in transmission, not yet completed.
  std::size_t tx_in_flight() const noexcept;

  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Registers a socket in the fast path's XSKMAP for (its queue, slot) and
/// removes it again on destruction. `maps` must outlive the registration.
class Registration {
 public:
  Registration(fastpath::Maps& maps, const Socket& socket, std::uint32_t slot);
  ~Registration();
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;

 private:
  fastpath::Maps& maps_;
  std::uint32_t queue_;
  std::uint32_t slot_;
};

}  // namespace locabus::xsk
