// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The engine's Transport over AF_XDP, on an interface where this process has
// attached the XDP fast path (fastpath::FastPath). One AF_XDP socket per RX
// queue, each in its queue's default XSKMAP slot; TX on the first. Pure ACKs
// of tracked peers never arrive as frames: the XDP program consumes them and
// announces each useful one on its ACK ring buffer, which poll_acks() drains
// through its mmap. wait_fd() is an epoll fd holding every socket, the ACK
// ring and a TX retry timer, so one poll() wakes on frames, on ACKs consumed
// in the kernel, or when refused frames are worth offering again.
// See docs/FASTPATH.md ("The AF_XDP transport").
#pragma once

#include <bitset>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/unique_fd.hpp"
#include "engine/transport.hpp"
#include "fastpath/xsk.hpp"
#include "transport/link_faults.hpp"

struct ring_buffer;

namespace locabus::fastpath {
class FastPath;
}

namespace locabus::transport {

struct XdpOptions {
  /// Each socket's UMEM and rings, bind mode (zero-copy, else copy) and
  /// need_wakeup. `queue` is ignored: see `queues`.
  xsk::Options xsk;
  /// Busy polling (SO_PREFER_BUSY_POLL, SO_BUSY_POLL, SO_BUSY_POLL_BUDGET on
  /// every socket): receive() then polls the driver with a recvfrom() when
  /// its rings are empty instead of waiting for an interrupt. Opt-in, for
  /// latency; pair it with a spinning idle strategy.
  bool busy_poll = false;
  std::uint32_t busy_poll_usecs = 20;
  std::uint32_t busy_poll_budget = 64;
  /// RX queues to open a socket on; empty: every RX queue the driver reports
  /// (ETHTOOL_GCHANNELS), at most `max_queues`. TX uses the first.
  std::vector<std::uint32_t> queues;
  std::uint32_t max_queues = 16;
  /// How soon frames the kernel did not take (TX ring or buffers full, or
  /// it stopped after a batch) are offered again while the engine sleeps;
  /// doubled, up to 10 ms, while the kernel takes nothing, and up to 200 ms
  /// while it says the link is down.
  std::chrono::microseconds tx_retry{50};
  /// SO_SNDBUF of the TX socket: in copy mode the kernel holds an skb per
  /// frame until the device is done with it, so a full window must fit.
  int sndbuf_bytes = 8 << 20;
};

/// Counters of one XdpTransport (the kernel's own per socket, summed, are
/// the group "transport.xsk"): X(name, description). Append only.
#define LOCABUS_XDP_TRANSPORT_COUNTERS(X)                                                    \
  X(rx_frames, "frames handed to the engine")                                                \
  X(rx_pure_acks, "of those, pure ACKs (untracked peer, or the ACK ring was full)")          \
  X(tx_frames, "frames queued on the TX ring")                                               \
  X(tx_busy, "send() calls that accepted fewer frames than offered")                         \
  X(tx_kicks, "sendto() calls that made the kernel transmit")                                \
  X(tx_kick_busy, "kicks answered EAGAIN/EBUSY/ENOBUFS/ENETDOWN")                            \
  X(tx_kick_down, "kicks answered ENETDOWN: the link is down, the frames wait")              \
  X(tx_kick_fail, "kicks answered anything else (ENXIO: the device is gone)")                \
  X(tx_retries, "times the TX retry timer was armed")                                        \
  X(busy_polls, "recvfrom() calls for busy polling")                                         \
  X(acks_from_ring, "records read from the ACK ring")                                        \
  X(acks_applied, "(node, ack, window) handed to the engine: the latest per node and drain") \
  X(acks_ignored, "ACK ring records of nodes not tracked (any more)")                        \
  X(ring_drains, "poll_acks() calls that found records")                                     \
  X(ring_wakeups,                                                                            \
    "drains right after a duty cycle that saw nothing: the ring's notification woke the "    \
    "engine")

struct XdpStats {
  LOCABUS_COUNTER_FIELDS(XdpStats, LOCABUS_XDP_TRANSPORT_COUNTERS, ::locabus::CounterKind::counter)
};

class XdpTransport final : public engine::Transport {
 public:
  /// Opens and registers the sockets on `fastpath`'s interface. Call it in
  /// the network namespace the fast path was attached in; `fastpath` must
  /// outlive the transport. Throws locabus::Error with what to do (e.g. when
  /// another process's socket holds a queue's slot).
  explicit XdpTransport(fastpath::FastPath& fastpath, const XdpOptions& options = {});
  ~XdpTransport() override;
  XdpTransport(const XdpTransport&) = delete;
  XdpTransport& operator=(const XdpTransport&) = delete;

  wire::MacAddress mac() const noexcept override { return mac_; }
  /// Copies the frames onto the TX ring in one reservation and makes the
  /// kernel transmit them (sendto() only when it asks). When buffers or ring
  /// slots run out, it kicks the kernel, takes back completed buffers and
  /// tries once more; what still does not fit is refused, and the retry
  /// timer makes wait_fd() readable once it is worth trying again. While
  /// the kernel says the link is down (or the device is gone), what is on
  /// the ring waits (the retry timer finds out when it is up again) and
  /// new frames are accepted and dropped, counted in faults(): the ring
  /// never fills with stale frames and the engine never retries in a loop.
  std::size_t send(std::span<const engine::FrameBytes> frames) override;
  /// Up to `max` frames from the sockets, round robin across queues.
  std::size_t receive(std::size_t max, FunctionRef<void(engine::FrameBytes)> on_frame) override;
  int wait_fd() const noexcept override { return epoll_.get(); }
  bool signals_tx_space() const noexcept override { return true; }
  /// The XDP program validates (lengths, checksum, type, node ids) every
  /// frame before redirecting it to a socket.
  bool frames_validated() const noexcept override { return true; }
  /// Tracks the peer in the kernel's table (its pure ACKs are consumed
  /// there from now on). A full table is logged and the peer stays
  /// untracked: its ACKs then arrive as frames, which is slower but correct.
  void track_peer(std::uint16_t node) override;
  void forget_peer(std::uint16_t node) override;
  /// One 64-bit store into the memory-mapped locabus_conns array, for a
  /// tracked peer (the kernel judges its pure ACKs by it: ack_rule.h).
  void publish_conn(std::uint16_t node, const locabus_conn_pub& pub) override;
  /// Drains the ACK ring (no system call) and calls `on_ack` once per
  /// tracked node with the newest (serial order) ACK and its window.
  std::size_t poll_acks(
      FunctionRef<void(std::uint16_t node, std::uint16_t ack, std::uint16_t window)> on_ack) override;

  const XdpStats& stats() const noexcept { return stats_; }
  const LinkFaults& faults() const noexcept { return faults_; }
  /// "transport" (stats(), faults(), the mode) and "transport.xsk" (the
  /// kernel's counters of every socket, summed).
  void counters(CounterGroups& out) const override;
  const std::string& iface() const noexcept { return iface_; }
  /// The RX queues with a socket.
  std::vector<std::uint32_t> queues() const;
  bool zero_copy() const noexcept;
  bool busy_poll() const noexcept { return options_.busy_poll; }
  /// E.g. "copy mode, 1 queue" (what it got, for logs).
  std::string describe() const;

 private:
  struct RingDeleter {
    void operator()(ring_buffer* r) const noexcept;
  };
  struct Pending {
    std::uint16_t node, ack, window;
  };

  static int on_ring_record(void* ctx, void* data, std::size_t size);
  void kick();
  void kick_failed(int err);
  void service_tx();
  void update_retry(bool refused);

  XdpOptions options_;
  fastpath::FastPath& fastpath_;
  std::string iface_;
  wire::MacAddress mac_{};
  // Sockets before registrations: the registrations leave the XSKMAP first.
  std::vector<std::unique_ptr<xsk::Socket>> sockets_;
  std::vector<std::unique_ptr<xsk::Registration>> registrations_;
  std::unique_ptr<ring_buffer, RingDeleter> ring_;
  UniqueFd retry_timer_;  // timerfd
  UniqueFd epoll_;
  bool retry_armed_ = false;
  std::chrono::nanoseconds retry_delay_{0};  // tx_retry, doubled while nothing moves
  std::size_t rx_next_ = 0;                  // the queue receive() starts with
  bool active_ = true;                       // the transport saw activity since the last poll_acks()

  std::bitset<65536> tracked_;
  std::vector<Pending> pending_;           // one drain's newest record per node
  std::vector<std::uint16_t> pending_at_;  // node -> index + 1 in pending_, 0: none
  XdpStats stats_;
  LinkFaults faults_;
};

}  // namespace locabus::transport
