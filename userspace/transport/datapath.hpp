// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Choosing the engine's datapath on an interface: AF_XDP behind our XDP fast
// path, or AF_PACKET through the kernel stack, or the first that works
// (docs/ARCHITECTURE.md, "Datapaths").
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "engine/transport.hpp"
#include "fastpath/bpffs.hpp"
#include "fastpath/fastpath.hpp"
#include "transport/packet_transport.hpp"
#include "transport/xdp_transport.hpp"

namespace locabus::transport {

enum class Datapath {
  automatic,  // AF_XDP, else AF_PACKET with the reason
  xdp,        // the XDP fast path and AF_XDP sockets, or an error
  packet,     // AF_PACKET through the kernel stack, no XDP program
};
/// "auto", "xdp", "packet".
std::string_view to_string(Datapath d) noexcept;
/// Accepts what to_string() gives (and "af_xdp", "af_packet"); nullopt otherwise.
std::optional<Datapath> parse_datapath(std::string_view text) noexcept;

struct DatapathOptions {
  std::string iface;
  std::uint16_t node_id = 0;
  Datapath want = Datapath::automatic;
  /// Busy polling on the AF_XDP sockets (XdpOptions::busy_poll).
  bool busy_poll = false;
  fastpath::AttachMode attach_mode = fastpath::AttachMode::automatic;
  std::filesystem::path bpffs_root = bpffs::kDefaultRoot;
  /// Empty: the default pin directory of the interface.
  std::filesystem::path pin_dir;
  std::uint32_t max_peers = LOCABUS_MAX_PEERS_DEFAULT;
  /// Broadcast NAK suppression in the kernel (fastpath::Options::nak_dedup_us).
  std::uint32_t nak_dedup_us = LOCABUS_NAK_DEDUP_US_DEFAULT;
  /// Fast path flags (LOCABUS_CFG_F_*).
  std::uint32_t xdp_flags = 0;
  /// Socket settings; xdp.busy_poll is overridden by busy_poll above.
  XdpOptions xdp;
  PacketOptions packet;
};

struct OpenedDatapath {
  OpenedDatapath() = default;
  OpenedDatapath(OpenedDatapath&&) noexcept = default;
  /// Drops the old transport before the old fast path, like the destructor.
  OpenedDatapath& operator=(OpenedDatapath&& other) noexcept;
  ~OpenedDatapath() = default;

  // Declared before the transport, so destroyed after it: the AF_XDP
  // transport uses the fast path's maps until it goes.
  std::unique_ptr<fastpath::FastPath> fastpath;  // null for AF_PACKET
  std::unique_ptr<engine::Transport> transport;
  Datapath got = Datapath::packet;  // xdp or packet, never automatic
  /// Which one and why, for logs and status: "AF_XDP (native XDP, copy mode,
  /// 1 queue)", "AF_PACKET: XDP attach failed: <reason>".
  std::string why;

  /// The transport's link faults (null without a transport of ours).
  const LinkFaults* faults() const noexcept;
};

/// Opens the datapath on `options.iface` in the calling thread's network
/// namespace. The fast path is attached with this process as its owner, so
/// it is detached again when `fastpath` is destroyed (after `transport`).
///
/// `automatic` tries XDP and falls back to AF_PACKET, saying why in `why`,
/// except when a live process owns the interface's fast path: that is
/// fastpath::InterfaceInUse, thrown for every mode, never a fallback (two
/// daemons must not share an interface). `packet` also refuses an XDP fast
/// path left on the interface that would drop the frames the AF_PACKET
/// socket needs; a crashed owner's is removed. Every mode first refuses an
/// interface whose MTU is below LOCABUS_MTU (1500), before touching it.
/// Throws locabus::Error.
OpenedDatapath open_datapath(const DatapathOptions& options);

/// Throws locabus::Error (hint: the `ip link` command) when `iface` in the
/// calling thread's namespace has an MTU below LOCABUS_MTU: Locabus frames
/// carry up to 1500 bytes after the Ethernet header.
void check_mtu(const std::string& iface);

}  // namespace locabus::transport
