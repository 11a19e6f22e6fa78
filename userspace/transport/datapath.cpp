// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "transport/datapath.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/error.hpp"
#include "fastpath/netdev.hpp"

namespace locabus::transport {
namespace {

// What to say when an attempt failed: the message and, if any, the hint.
std::string reason(const Error& e) {
  return e.hint().empty() ? e.what() : fmt::format("{} ({})", e.what(), e.hint());
}

// AF_PACKET sees Locabus frames only if no XDP program of ours takes them
// first. A live owner's fast path means another daemon runs there; a
// crashed owner's is removed; an administrative one (locabusctl xdp attach)
// is left alone, but refused unless it passes unclaimed frames on.
void make_room_for_packet(const DatapathOptions& o) {
  const fastpath::Status st = fastpath::status(o.iface, o.pin_dir, o.bpffs_root);
  if (st.program_ids.empty() && !st.pinned && !st.config) return;
  if (st.owner == fastpath::OwnerState::alive)
    throw fastpath::InterfaceInUse(
        fmt::format("interface {} is in use: the Locabus fast path there belongs to process {}", o.iface,
                    st.config->owner_pid),
        "stop that process first (a clean exit detaches it)", static_cast<pid_t>(st.config->owner_pid));
  if (st.owner == fastpath::OwnerState::gone) {
    spdlog::warn("{}: removing the Locabus fast path left by process {}, which is gone", o.iface,
                 st.config->owner_pid);
    fastpath::detach(o.iface, o.pin_dir, false, o.bpffs_root);
    return;
  }
  if (st.program_ids.empty()) return;  // pins without a program drop nothing
  if (st.config && (st.config->flags & LOCABUS_CFG_F_PASS_UNCLAIMED)) return;
  throw Error(
      fmt::format("the Locabus XDP program attached to {} (program id {}) would drop the frames the "
                  "AF_PACKET datapath needs",
                  o.iface, st.program_ids.front()),
      0, fmt::format("detach it (`locabusctl xdp detach --iface {}`), or use the xdp datapath", o.iface));
}

OpenedDatapath open_packet(const DatapathOptions& o, std::string why) {
  make_room_for_packet(o);
  OpenedDatapath d;
  d.transport = std::make_unique<PacketTransport>(o.iface, o.packet);
  d.got = Datapath::packet;
  d.why = std::move(why);
  return d;
}

}  // namespace

const LinkFaults* OpenedDatapath::faults() const noexcept {
  if (const auto* x = dynamic_cast<const XdpTransport*>(transport.get())) return &x->faults();
  if (const auto* p = dynamic_cast<const PacketTransport*>(transport.get())) return &p->faults();
  return nullptr;
}

void check_mtu(const std::string& iface) {
  const net::Interface info = net::lookup_interface(iface);
  if (info.mtu < LOCABUS_MTU)
    throw Error(fmt::format("interface {} has MTU {}: Locabus frames carry up to {} bytes after the Ethernet "
                            "header ({} in all), so the longest would be refused",
                            iface, info.mtu, LOCABUS_MTU, LOCABUS_MAX_FRAME),
                0, fmt::format("raise it: `ip link set {} mtu {}`", iface, LOCABUS_MTU));
}

OpenedDatapath& OpenedDatapath::operator=(OpenedDatapath&& other) noexcept {
  if (this != &other) {
    transport.reset();
    fastpath.reset();
    fastpath = std::move(other.fastpath);
    transport = std::move(other.transport);
    got = other.got;
    why = std::move(other.why);
  }
  return *this;
}

std::string_view to_string(Datapath d) noexcept {
  switch (d) {
    case Datapath::automatic: return "auto";
    case Datapath::xdp: return "xdp";
    case Datapath::packet: return "packet";
  }
  return "unknown";
}

std::optional<Datapath> parse_datapath(std::string_view text) noexcept {
  if (text == "auto" || text == "automatic") return Datapath::automatic;
  if (text == "xdp" || text == "af_xdp") return Datapath::xdp;
  if (text == "packet" || text == "af_packet") return Datapath::packet;
  return std::nullopt;
}

OpenedDatapath open_datapath(const DatapathOptions& o) {
  check_mtu(o.iface);  // for every datapath, before anything is attached
  if (o.want == Datapath::packet) return open_packet(o, "AF_PACKET (asked for)");

  fastpath::Options fo;
  fo.iface = o.iface;
  fo.node_id = o.node_id;
  fo.flags = o.xdp_flags;
  fo.mode = o.attach_mode;
  fo.max_peers = o.max_peers;
  fo.nak_dedup_us = o.nak_dedup_us;
  fo.pin_dir = o.pin_dir;
  fo.bpffs_root = o.bpffs_root;
  fo.own = true;
  XdpOptions xo = o.xdp;
  xo.busy_poll = o.busy_poll;

  std::string failed;
  std::unique_ptr<fastpath::FastPath> fp;
  try {
    fp = fastpath::FastPath::attach(fo);
  } catch (const fastpath::InterfaceInUse&) {
    throw;  // another daemon's interface: never fall back behind its back
  } catch (const Error& e) {
    if (o.want == Datapath::xdp) throw;
    failed = "XDP attach failed: " + reason(e);
  }
  if (fp) {
    try {
      auto t = std::make_unique<XdpTransport>(*fp, xo);
      OpenedDatapath d;
      d.why = fmt::format("AF_XDP ({} XDP, {})", fastpath::to_string(fp->mode()), t->describe());
      d.transport = std::move(t);
      d.fastpath = std::move(fp);
      d.got = Datapath::xdp;
      return d;
    } catch (const Error& e) {
      if (o.want == Datapath::xdp) throw;  // fp detaches on the way out
      failed = "AF_XDP sockets failed: " + reason(e);
      fp.reset();  // detach before AF_PACKET needs the frames
    }
  }
  spdlog::warn("{}: falling back to AF_PACKET: {}", o.iface, failed);
  try {
    return open_packet(o, "AF_PACKET: " + failed);
  } catch (const fastpath::InterfaceInUse&) {
    throw;
  } catch (const Error& e) {
    throw Error(fmt::format("open a datapath on {}: {}; AF_PACKET failed too: {}", o.iface, failed, e.what()),
                0, e.hint());
  }
}

}  // namespace locabus::transport
