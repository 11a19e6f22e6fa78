// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "transport/link_faults.hpp"

#include <cerrno>

#include <fmt/format.h>
#include <locabus/wire.h>
#include <spdlog/spdlog.h>

#include "common/error.hpp"
#include "fastpath/netdev.hpp"

namespace locabus::transport {

std::string_view to_string(FaultKind k) noexcept {
  switch (k) {
    case FaultKind::link_down: return "link_down";
    case FaultKind::no_device: return "no_device";
    case FaultKind::too_big: return "too_big";
    case FaultKind::device_drop: return "device_drop";
    case FaultKind::bad_socket: return "bad_socket";
    case FaultKind::other: return "other";
  }
  return "other";
}

FaultKind classify(int err) noexcept {
  switch (err) {
    case ENETDOWN: return FaultKind::link_down;
    case ENODEV:
    case ENXIO: return FaultKind::no_device;
    case EMSGSIZE: return FaultKind::too_big;
    case ENOBUFS:
    case EBUSY: return FaultKind::device_drop;
    case EBADF:
    case ENOTSOCK:
    case EFAULT: return FaultKind::bad_socket;
    default: return FaultKind::other;
  }
}

LinkFaults::LinkFaults(std::string iface, int ifindex, std::chrono::milliseconds log_every)
    : iface_(std::move(iface)), ifindex_(ifindex), netns_(net::current_netns()), log_every_(log_every) {}

net::LinkState LinkFaults::link_state() const noexcept {
  try {
    net::NetnsScope in(netns_.get());
    return net::link_state(ifindex_);
  } catch (const std::exception& e) {
    net::LinkState unknown;
    unknown.exists = true;  // cannot tell: not a reason to give up
    spdlog::debug("{}: look the interface up in its namespace: {}", iface_, e.what());
    return unknown;
  }
}

void LinkFaults::tx_failed(int err, std::uint64_t frames, std::string_view op) {
  const FaultKind kind = classify(err);
  switch (kind) {
    case FaultKind::link_down: stats_.tx_link_down_drops += frames; break;
    case FaultKind::no_device: stats_.tx_no_device_drops += frames; break;
    case FaultKind::too_big: stats_.tx_oversize_drops += frames; break;
    case FaultKind::device_drop: stats_.tx_device_drops += frames; break;
    case FaultKind::bad_socket:
    case FaultKind::other: stats_.tx_error_drops += frames; break;
  }
  note(kind, err, frames, op);
}

void LinkFaults::rx_failed(int err, std::string_view op) {
  const FaultKind kind = classify(err);
  if (kind == FaultKind::link_down)
    ++stats_.rx_link_down;
  else
    ++stats_.rx_errors;
  note(kind, err, 0, op);
}

// The link went down or away: frames stop flowing from now on. Once per
// outage, also asks whether the interface is still there.
void LinkFaults::went_down(FaultKind kind, int err) {
  if (down_since_) return;
  down_since_ = Clock::now();
  drops_at_down_ = stats_.tx_link_down_drops + stats_.tx_no_device_drops;
  ++stats_.link_downs;
  check_gone(kind, err);
}

// Is the interface still there? An index the namespace no longer has never
// comes back (indexes are not reused), so the transport can never work
// again; nor can it with a socket the kernel says is not one.
void LinkFaults::check_gone(FaultKind kind, int err) {
  if (!fatal_.empty()) return;
  if (kind == FaultKind::bad_socket)
    fatal_ = fmt::format("the socket on {} is unusable ({})", iface_, error_text(err));
  else if (!link_state().exists)
    fatal_ = fmt::format("interface {} (index {}) is gone: deleted, or moved to another network namespace",
                         iface_, ifindex_);
  if (!fatal_.empty()) spdlog::error("{}; this transport drops everything from now on", fatal_);
}

bool LinkFaults::may_log(std::size_t slot_index, std::string& held) {
  LogSlot& slot = log_[slot_index];
  const auto now = Clock::now();
  if (slot.last && now - *slot.last < log_every_) {
    ++slot.held_back;
    return false;
  }
  held = slot.held_back ? fmt::format(" [{} more like it since the last report]", slot.held_back)
                        : std::string{};
  slot.last = now;
  slot.held_back = 0;
  return true;
}

void LinkFaults::note(FaultKind kind, int err, std::uint64_t frames, std::string_view op) {
  if (kind == FaultKind::link_down || kind == FaultKind::no_device) went_down(kind, err);
  // A system call each: only when the kernel suggests the device or the socket is gone.
  if (kind == FaultKind::no_device || kind == FaultKind::bad_socket) check_gone(kind, err);
  if (!fatal_.empty()) return;  // said once, by whoever stops the transport; counted only
  std::string held;
  if (!may_log(static_cast<std::size_t>(kind), held)) return;
  const std::string dropped = frames ? fmt::format("; {} frame(s) dropped", frames) : std::string{};
  const std::string what = fmt::format("{}: {}", op, error_text(err));
  switch (kind) {
    case FaultKind::link_down:
      spdlog::warn(
          "{}: link down ({}){}: frames are dropped until it is up again (peers mark this node suspect, then "
          "dead, if it lasts); check `ip link show {}`{}",
          iface_, what, dropped, iface_, held);
      break;
    case FaultKind::no_device:
      spdlog::warn("{}: no such device ({}){}; check `ip link show {}`{}", iface_, what, dropped, iface_,
                   held);
      break;
    case FaultKind::too_big:
      spdlog::warn(
          "{}: a frame longer than the MTU ({}) was refused ({}){}: Locabus needs MTU {}; restore it with "
          "`ip "
          "link set {} mtu {}`{}",
          iface_, link_state().mtu, what, dropped, LOCABUS_MTU, iface_, LOCABUS_MTU, held);
      break;
    case FaultKind::device_drop: {
      const auto st = link_state();
      spdlog::warn("{}: the device dropped frames ({}){}{}; the engine retransmits what matters{}", iface_,
                   what,
                   st.up && !st.running ? " without carrier (is the cable or the switch port down?)" : "",
                   dropped, held);
      break;
    }
    case FaultKind::bad_socket:
    case FaultKind::other: spdlog::warn("{}: {} failed{}{}", iface_, what, dropped, held); break;
  }
}

void LinkFaults::link_back() {
  const double secs = std::chrono::duration<double>(Clock::now() - *down_since_).count();
  const std::uint64_t dropped = stats_.tx_link_down_drops + stats_.tx_no_device_drops - drops_at_down_;
  down_since_.reset();
  std::string held;
  if (!may_log(kFaultKinds, held)) return;
  spdlog::info("{}: frames flow again after {:.1f} s without a link ({} frame(s) dropped meanwhile){}",
               iface_, secs, dropped, held);
}

void LinkFaults::add_counters(CounterGroup& g) const {
  g.add(stats_);
  g.add({"link_down", "the link is down now (a send or receive said so, and no send went through since)",
         CounterKind::flag},
        link_down() ? 1 : 0);
}

}  // namespace locabus::transport
