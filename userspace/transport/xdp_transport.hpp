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

#include <nlohmann/json_fwd.hpp>

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

/// Counters of one XdpTransport (the kernel's own per socket are in
/// stats_json() as "xsk").
struct XdpStats {
  std::uint64_t rx_frames = 0;       // frames handed to the engine
  std::uint64_t rx_pure_acks = 0;    // of them pure ACKs (untracked peer, or the ACK ring was full)
  std::uint64_t tx_frames = 0;       // frames queued on the TX ring
  std::uint64_t tx_busy = 0;         // send() calls that accepted fewer frames than offered
  std::uint64_t tx_kicks = 0;        // sendto() calls that made the kernel transmit
  std::uint64_t tx_kick_busy = 0;    // of them answered EAGAIN/EBUSY/ENOBUFS/ENETDOWN
  std::uint64_t tx_kick_down = 0;    // of them ENETDOWN: the link is down, the frames wait
  std::uint64_t tx_kick_fail = 0;    // answered anything else (ENXIO: the device is gone)
  std::uint64_t tx_retries = 0;      // times the TX retry timer was armed
  std::uint64_t busy_polls = 0;      // recvfrom() calls for busy polling
  std::uint64_t acks_from_ring = 0;  // records read from the ACK ring
  std::uint64_t acks_applied = 0;  // (node, ack, window) handed to the engine: the latest per node and drain
  std::uint64_t acks_ignored = 0;  // records of nodes not tracked (any more)
  std::uint64_t ring_drains = 0;   // poll_acks() calls that found records
  /// Drains right after a duty cycle in which the transport saw nothing (no
  /// frame in or out, no record): with a blocking idle strategy the engine
  /// slept in between, and the ring's notification is what woke it.
  std::uint64_t ring_wakeups = 0;
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
  /// stats() plus the kernel's counters of every socket, for status output.
  nlohmann::json stats_json() const;
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
