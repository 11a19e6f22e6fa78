// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The engine's Transport over an AF_PACKET socket: the same protocol on any
// NIC or kernel, without XDP. Batched with sendmmsg/recvmmsg, non-blocking;
// wait_fd() is the socket, for BlockingIdle. Link faults (the interface down
// or gone, a lowered MTU, a device dropping frames) never throw: see
// link_faults.hpp.
#pragma once

#include <array>
#include <string>
#include <vector>

#include <sys/socket.h>

#include "common/unique_fd.hpp"
#include "engine/transport.hpp"
#include "transport/link_faults.hpp"

namespace locabus::transport {

struct PacketOptions {
  int rcvbuf_bytes = 8 << 20;  // absorbs bursts of a full window (1024 x 1.5 KB)
  int sndbuf_bytes = 4 << 20;
};

/// X(name, description). Append only.
#define LOCABUS_PACKET_COUNTERS(X)            \
  X(rx_frames, "frames handed to the engine") \
  X(tx_frames, "frames the kernel took")      \
  X(tx_busy, "send() calls that stopped early: the socket's buffer was full")

struct PacketStats {
  LOCABUS_COUNTER_FIELDS(PacketStats, LOCABUS_PACKET_COUNTERS, ::locabus::CounterKind::counter)
};

class PacketTransport final : public engine::Transport {
 public:
  /// Opens and binds to `iface` (calling thread's network namespace). Throws
  /// locabus::Error with what to do.
  explicit PacketTransport(const std::string& iface, const PacketOptions& options = {});

  wire::MacAddress mac() const noexcept override { return mac_; }
  /// Refuses the rest (a prefix is accepted) only while the socket's buffer
  /// is full. A frame the kernel refuses for a link fault is accepted and
  /// dropped, counted in faults(): larger than the MTU (EMSGSIZE) or dropped
  /// by the device (ENOBUFS), that frame; the link down (ENETDOWN) or gone
  /// (ENODEV, ENXIO), the whole rest, so a link that is down costs no loop.
  std::size_t send(std::span<const engine::FrameBytes> frames) override;
  /// An error (the socket reports the link going down once, as ENETDOWN) is
  /// counted and consumed, so poll() on wait_fd() sleeps again.
  std::size_t receive(std::size_t max, FunctionRef<void(engine::FrameBytes)> on_frame) override;
  int wait_fd() const noexcept override { return fd_.get(); }
  /// "transport": stats() and faults().
  void counters(CounterGroups& out) const override;

  const PacketStats& stats() const noexcept { return stats_; }
  const LinkFaults& faults() const noexcept { return faults_; }
  const std::string& iface() const noexcept { return iface_; }

 private:
  static constexpr std::size_t kBatch = 64;
  static constexpr std::size_t kBufSize = 2048;

  UniqueFd fd_;
  std::string iface_;
  int ifindex_ = 0;
  wire::MacAddress mac_{};
  std::vector<std::array<std::byte, kBufSize>> rx_bufs_;
  PacketStats stats_;
  LinkFaults faults_;
};

}  // namespace locabus::transport
