// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "transport/packet_transport.hpp"

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.hpp"
#include "fastpath/netdev.hpp"

namespace locabus::transport {

PacketTransport::PacketTransport(const std::string& iface, const PacketOptions& options)
    : iface_(iface), rx_bufs_(kBatch), faults_(iface, 0) {
  const net::Interface info = net::lookup_interface(iface);
  ifindex_ = info.ifindex;
  faults_ = LinkFaults(iface, ifindex_);
  mac_ = info.mac;
  fd_.reset(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(wire::kEtherType)));
  if (!fd_) throw Error("open an AF_PACKET socket on " + iface, errno);
  // Our own transmissions must not come back to us through the tap.
  const int one = 1;
  if (::setsockopt(fd_.get(), SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) != 0) {
    throw Error("set PACKET_IGNORE_OUTGOING on " + iface, errno, "needs Linux 4.20 or later");
  }
  // Best effort: without CAP_NET_ADMIN the kernel caps these at rmem_max/wmem_max.
  if (::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &options.rcvbuf_bytes, sizeof(int)) != 0) {
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &options.rcvbuf_bytes, sizeof(int));
  }
  if (::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDBUFFORCE, &options.sndbuf_bytes, sizeof(int)) != 0) {
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDBUF, &options.sndbuf_bytes, sizeof(int));
  }
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(wire::kEtherType);
  sll.sll_ifindex = ifindex_;
  if (::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&sll), sizeof sll) != 0) {
    throw Error("bind the AF_PACKET socket to " + iface, errno);
  }
}

std::size_t PacketTransport::send(std::span<const engine::FrameBytes> frames) {
  std::size_t done = 0;
  std::array<mmsghdr, kBatch> msgs{};
  std::array<iovec, kBatch> iov{};
  std::array<sockaddr_ll, kBatch> to{};
  while (done < frames.size()) {
    if (!faults_.fatal().empty()) {  // gone for good: the daemon is stopping
      faults_.tx_failed(ENODEV, frames.size() - done);
      return frames.size();
    }
    const std::size_t n = std::min(kBatch, frames.size() - done);
    for (std::size_t i = 0; i < n; ++i) {
      const engine::FrameBytes f = frames[done + i];
      iov[i] = {const_cast<std::byte*>(f.data()), f.size()};
      to[i] = sockaddr_ll{};
      to[i].sll_family = AF_PACKET;
      to[i].sll_ifindex = ifindex_;
      to[i].sll_halen = LOCABUS_ETH_ALEN;
      std::memcpy(to[i].sll_addr, f.data(), LOCABUS_ETH_ALEN);
      msgs[i] = mmsghdr{};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &to[i];
      msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_ll);
    }
    // A frame the kernel refuses ends the batch there; the next call starts
    // with it and reports why.
    const int sent = ::sendmmsg(fd_.get(), msgs.data(), static_cast<unsigned>(n), MSG_DONTWAIT);
    if (sent > 0) {
      done += static_cast<std::size_t>(sent);
      stats_.tx_frames += static_cast<std::uint64_t>(sent);
      faults_.tx_ok();
      continue;
    }
    const int err = sent < 0 ? errno : EAGAIN;
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) {
      ++stats_.tx_busy;  // the socket's buffer is full: the engine offers the rest again
      break;
    }
    const FaultKind kind = classify(err);
    // The link is down or gone: so is every frame after this one. Otherwise
    // only this frame was refused (too long for the MTU, dropped by the
    // device, ...): the others may go.
    const std::size_t dropped =
        kind == FaultKind::link_down || kind == FaultKind::no_device || kind == FaultKind::bad_socket
            ? frames.size() - done
            : 1;
    faults_.tx_failed(err, dropped);
    done += dropped;
  }
  return done;
}

std::size_t PacketTransport::receive(std::size_t max, FunctionRef<void(engine::FrameBytes)> on_frame) {
  std::array<mmsghdr, kBatch> msgs{};
  std::array<iovec, kBatch> iov{};
  const std::size_t n = std::min(max, kBatch);
  for (std::size_t i = 0; i < n; ++i) {
    iov[i] = {rx_bufs_[i].data(), kBufSize};
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  int got = -1;
  // An error pending on the socket (ENETDOWN when the link went down) is
  // reported by one call, which consumes it, so poll() stops signalling
  // POLLERR; frames queued behind it come with the second call.
  for (int attempt = 0; attempt < 2 && got < 0; ++attempt) {
    got = ::recvmmsg(fd_.get(), msgs.data(), static_cast<unsigned>(n), MSG_DONTWAIT, nullptr);
    if (got >= 0) break;
    const int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) return 0;
    faults_.rx_failed(err);
    if (!faults_.fatal().empty()) return 0;
  }
  if (got <= 0) return 0;
  for (int i = 0; i < got; ++i) {
    // Truncated frames (MSG_TRUNC) fail the engine's length checks.
    on_frame(engine::FrameBytes(rx_bufs_[i].data(), std::min<std::size_t>(msgs[i].msg_len, kBufSize)));
  }
  stats_.rx_frames += static_cast<std::uint64_t>(got);
  return static_cast<std::size_t>(got);
}

void PacketTransport::counters(CounterGroups& out) const {
  CounterGroup& g = out.emplace_back("transport", "the AF_PACKET transport (" + iface_ + ")");
  g.add(stats_);
  faults_.add_counters(g);
  g.info.emplace_back("mode", "AF_PACKET");
}

}  // namespace locabus::transport
