// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// An AF_PACKET socket bound to one interface and the Locabus EtherType:
// injects raw frames (diagnostics, tests) and receives what the kernel stack
// sees of our EtherType.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <string>

#include "common/unique_fd.hpp"

namespace locabus::net {

class PacketSocket {
 public:
  /// Opens and binds to `iface` in the calling thread's namespace. Throws Error.
  explicit PacketSocket(const std::string& iface);

  /// Sends one complete Ethernet frame (no FCS). Throws Error.
  void send(std::span<const std::byte> frame);

  /// Receives one frame into `buf` within `timeout`; its size, or nullopt on timeout.
  std::optional<std::size_t> receive(std::span<std::byte> buf, std::chrono::milliseconds timeout);

  int fd() const noexcept { return fd_.get(); }

 private:
  UniqueFd fd_;
  int ifindex_ = 0;
  std::string iface_;
};

}  // namespace locabus::net
