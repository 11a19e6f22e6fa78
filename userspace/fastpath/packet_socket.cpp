// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "fastpath/packet_socket.hpp"

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <locabus/wire.hpp>

#include "common/error.hpp"

namespace locabus::net {

PacketSocket::PacketSocket(const std::string& iface) : iface_(iface) {
  ifindex_ = static_cast<int>(::if_nametoindex(iface.c_str()));
  if (ifindex_ == 0)
    throw Error("no network interface named '" + iface + "' in this network namespace", errno,
                "list interfaces with `ip link`");
  fd_.reset(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(wire::kEtherType)));
  if (!fd_) throw Error("open an AF_PACKET socket on " + iface, errno);
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(wire::kEtherType);
  sll.sll_ifindex = ifindex_;
  if (::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&sll), sizeof sll) != 0)
    throw Error("bind the AF_PACKET socket to " + iface, errno);
}

void PacketSocket::send(std::span<const std::byte> frame) {
  if (frame.size() < LOCABUS_ETH_HLEN) throw Error("send a frame shorter than an Ethernet header");
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_ifindex = ifindex_;
  to.sll_halen = LOCABUS_ETH_ALEN;
  std::memcpy(to.sll_addr, frame.data(), LOCABUS_ETH_ALEN);
  if (::sendto(fd_.get(), frame.data(), frame.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to) <
      0)
    throw Error("send a frame on " + iface_, errno);
}

std::optional<std::size_t> PacketSocket::receive(std::span<std::byte> buf,
                                                 std::chrono::milliseconds timeout) {
  pollfd p{fd_.get(), POLLIN, 0};
  const int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
  if (r < 0 && errno != EINTR) throw Error("poll the AF_PACKET socket on " + iface_, errno);
  if (r <= 0) return std::nullopt;
  const ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN) return std::nullopt;
    throw Error("receive on the AF_PACKET socket on " + iface_, errno);
  }
  return static_cast<std::size_t>(n);
}

}  // namespace locabus::net
