// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Faults of the link under a transport: the interface going down, going
// away, a lowered MTU, a device dropping frames. The transports never throw
// for them out of send() or receive() (that would end the daemon): a frame
// the kernel refuses is dropped, as if lost on the wire, and the engine's
// retransmission repairs it. LinkFaults classifies the errno, counts the
// frames by class, logs at most one line per class every 10 s (with how many
// it held back), logs when frames flow again, and decides when the interface
// is gone for good (deleted, moved to another namespace) or the socket is no
// longer usable: fatal(), on which the daemon shuts down cleanly.
// See docs/ARCHITECTURE.md ("Link faults").
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/counters.hpp"
#include "common/unique_fd.hpp"
#include "fastpath/netdev.hpp"

namespace locabus::transport {

/// What an errno from a send, receive or kick means for the link.
enum class FaultKind : std::uint8_t {
  link_down,    // ENETDOWN: the interface is down
  no_device,    // ENODEV, ENXIO: no such interface (now)
  too_big,      // EMSGSIZE: the frame is longer than the MTU
  device_drop,  // ENOBUFS (AF_PACKET), EBUSY (AF_XDP): the device or its queue dropped the frame
  bad_socket,   // EBADF, ENOTSOCK, EFAULT: the socket is unusable (fatal)
  other,
};
inline constexpr std::size_t kFaultKinds = 6;
std::string_view to_string(FaultKind k) noexcept;
FaultKind classify(int err) noexcept;

/// Counted by every transport, reported with its other counters:
/// X(name, description). Append only.
#define LOCABUS_FAULT_COUNTERS(X)                                                                       \
  X(tx_link_down_drops, "frames dropped: the kernel said the link is down (ENETDOWN)")                  \
  X(tx_no_device_drops, "frames dropped: the kernel said there is no such device (ENODEV, ENXIO)")      \
  X(tx_oversize_drops, "frames dropped: longer than the MTU (EMSGSIZE)")                                \
  X(tx_device_drops, "frames dropped by the device or its queue (ENOBUFS, EBUSY)")                      \
  X(tx_error_drops, "frames dropped for any other send error")                                          \
  X(rx_link_down, "receive calls that failed with ENETDOWN (AF_PACKET reports a link going down once)") \
  X(rx_errors, "receive calls that failed otherwise")                                                   \
  X(link_downs, "outages: times frames stopped flowing (the link went down or away)")

struct FaultStats {
  LOCABUS_COUNTER_FIELDS(FaultStats, LOCABUS_FAULT_COUNTERS, ::locabus::CounterKind::counter)
};

class LinkFaults {
 public:
  /// `ifindex` is the interface's index in the calling thread's network
  /// namespace, which is remembered: later calls may come from any thread.
  LinkFaults(std::string iface, int ifindex, std::chrono::milliseconds log_every = std::chrono::seconds(10));

  /// A send (or a kick, with `frames` 0) failed with `err`; `frames` frames
  /// were dropped for it. `op` names the call for the log ("send").
  void tx_failed(int err, std::uint64_t frames, std::string_view op = "send");
  /// A receive call failed with `err`.
  void rx_failed(int err, std::string_view op = "receive");
  /// The kernel took frames: after the link was down or gone, logs that
  /// frames flow again. Cheap when nothing was wrong.
  void tx_ok() {
    if (down_since_) link_back();
  }
  /// While the link is known to be down (a send or receive said so, and no
  /// send went through since).
  bool link_down() const noexcept { return down_since_.has_value(); }

  /// Empty, or why this transport can never work again (the interface was
  /// deleted, the socket is unusable); it then drops whatever it is given.
  const std::string& fatal() const noexcept { return fatal_; }
  const FaultStats& stats() const noexcept { return stats_; }
  /// Adds the counters, and the flag link_down, to a transport's group.
  void add_counters(CounterGroup& g) const;

 private:
  using Clock = std::chrono::steady_clock;
  struct LogSlot {
    std::optional<Clock::time_point> last;
    std::uint64_t held_back = 0;  // faults not logged since `last`
  };

  void note(FaultKind kind, int err, std::uint64_t frames, std::string_view op);
  void went_down(FaultKind kind, int err);
  void check_gone(FaultKind kind, int err);
  void link_back();
  /// The interface now, looked up in its namespace.
  net::LinkState link_state() const noexcept;
  /// Rate limit: true (and `held` says how many were held back) if slot
  /// `index` may log now.
  bool may_log(std::size_t index, std::string& held);

  std::string iface_;
  int ifindex_;
  UniqueFd netns_;
  Clock::duration log_every_;
  std::array<LogSlot, kFaultKinds + 1> log_{};  // one per kind, then "frames flow again"
  std::optional<Clock::time_point> down_since_;
  std::uint64_t drops_at_down_ = 0;  // tx drops counted when the link went down
  std::string fatal_;
  FaultStats stats_;
};

}  // namespace locabus::transport
