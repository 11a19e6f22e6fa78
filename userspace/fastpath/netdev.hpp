// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Network interfaces, node ids and network namespaces.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <locabus/wire.hpp>

#include "common/unique_fd.hpp"

namespace locabus::net {

struct Interface {
  std::string name;
  int ifindex = 0;
  wire::MacAddress mac;
  std::optional<std::uint32_t> ipv4;  // first IPv4 address, host byte order
  std::uint32_t rx_queues = 1;        // from the driver (ethtool); at least 1
  std::uint32_t mtu = 0;              // bytes after the Ethernet header
};

/// Looks `name` up in the calling thread's network namespace.
/// Throws Error (with a hint) when there is no such interface.
Interface lookup_interface(const std::string& name);

/// What the kernel says of an interface now (for logs about link faults).
struct LinkState {
  bool exists = false;   // an interface with that index is in this namespace
  std::string name;      // its name now
  bool up = false;       // IFF_UP: administratively up
  bool running = false;  // IFF_RUNNING: up with carrier
  std::uint32_t mtu = 0;
};
/// Looks interface `ifindex` up in the calling thread's network namespace.
/// Never throws: `exists` is false when there is no such interface (deleted,
/// or moved to another namespace); the rest is left 0 when a query fails.
LinkState link_state(int ifindex) noexcept;

/// The paper's rule: the low 16 bits of the IPv4 address. nullopt when they
/// are 0xFFFF (reserved for broadcast).
std::optional<std::uint16_t> node_id_from_ipv4(std::uint32_t host_order_addr) noexcept;

/// Node id of `iface` by the paper's rule. Throws Error (hint: pass a node id)
/// when it has no IPv4 address or its low 16 bits are 0xFFFF.
std::uint16_t default_node_id(const Interface& iface);

/// Parses "513" or "0x201". nullopt for junk, > 0xFFFE, or 0xFFFF.
std::optional<std::uint16_t> parse_node_id(std::string_view text) noexcept;

/// The calling thread's network namespace, as an fd of /proc/thread-self/ns/net.
UniqueFd current_netns();

/// True when both fds refer to the same namespace.
bool same_netns(int a, int b);

/// A stable label for the calling thread's network namespace: "" in the
/// initial namespace (that of PID 1), the `ip netns` name when it has one,
/// else "ns<inode>".
std::string netns_label();

/// Moves the calling thread into the namespace `target` for its lifetime and
/// back on destruction. Does nothing when the thread is already there.
class NetnsScope {
 public:
  explicit NetnsScope(int target);
  ~NetnsScope();
  NetnsScope(const NetnsScope&) = delete;
  NetnsScope& operator=(const NetnsScope&) = delete;

 private:
  UniqueFd saved_;
};

}  // namespace locabus::net
