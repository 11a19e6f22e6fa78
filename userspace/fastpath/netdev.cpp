// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "fastpath/netdev.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <memory>

#include "common/error.hpp"

namespace locabus::net {
namespace {

// RX queues from the driver (ETHTOOL_GCHANNELS), which answers for the
// calling thread's namespace; /sys/class/net may show another namespace's
// devices (nsenter keeps the host's /sys). 1 when the driver does not say.
std::uint32_t count_rx_queues(int sock, const std::string& name) {
  ethtool_channels ch{};
  ch.cmd = ETHTOOL_GCHANNELS;
  ifreq req{};
  std::memcpy(req.ifr_name, name.c_str(), name.size() + 1);
  req.ifr_data = reinterpret_cast<char*>(&ch);
  if (::ioctl(sock, SIOCETHTOOL, &req) != 0) return 1;
  return std::max<std::uint32_t>({1u, ch.rx_count, ch.combined_count});
}

ino_t netns_inode(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) throw Error("stat network namespace fd", errno);
  return st.st_ino;
}

}  // namespace

Interface lookup_interface(const std::string& name) {
  Interface iface;
  iface.name = name;
  if (name.empty() || name.size() >= IFNAMSIZ)
    throw Error("interface name '" + name + "' is not valid", 0,
                "interface names are 1 to 15 characters; see `ip link`");
  iface.ifindex = static_cast<int>(if_nametoindex(name.c_str()));
  if (iface.ifindex == 0)
    throw Error("no network interface named '" + name + "' in this network namespace", errno,
                "list interfaces with `ip link`; for one in a network namespace, run this inside it "
                "(`nsenter --net=/run/netns/NS ...`)");

  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) throw Error("open a socket to query interface " + name, errno);
  ifreq req{};
  std::memcpy(req.ifr_name, name.c_str(), name.size() + 1);
  if (::ioctl(sock.get(), SIOCGIFHWADDR, &req) != 0) throw Error("read the MAC address of " + name, errno);
  if (req.ifr_hwaddr.sa_family != ARPHRD_ETHER)
    throw Error("interface " + name + " is not an Ethernet device", 0,
                "Locabus runs on Ethernet (or veth) interfaces only");
  std::memcpy(iface.mac.bytes.data(), req.ifr_hwaddr.sa_data, iface.mac.bytes.size());

  ifaddrs* raw = nullptr;
  if (::getifaddrs(&raw) != 0) throw Error("list interface addresses", errno);
  std::unique_ptr<ifaddrs, decltype(&::freeifaddrs)> addrs(raw, &::freeifaddrs);
  for (const ifaddrs* a = raw; a; a = a->ifa_next) {
    if (a->ifa_addr && a->ifa_addr->sa_family == AF_INET && name == a->ifa_name) {
      sockaddr_in sin{};
      std::memcpy(&sin, a->ifa_addr, sizeof sin);
      iface.ipv4 = ntohl(sin.sin_addr.s_addr);
      break;
    }
  }
  iface.rx_queues = count_rx_queues(sock.get(), name);
  if (::ioctl(sock.get(), SIOCGIFMTU, &req) != 0) throw Error("read the MTU of " + name, errno);
  iface.mtu = static_cast<std::uint32_t>(req.ifr_mtu);
  return iface;
}

LinkState link_state(int ifindex) noexcept {
  LinkState st;
  char name[IF_NAMESIZE] = {};
  if (ifindex <= 0 || !::if_indextoname(static_cast<unsigned>(ifindex), name)) return st;
  st.exists = true;
  st.name = name;
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return st;
  ifreq req{};
  std::memcpy(req.ifr_name, name, sizeof name);
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &req) == 0) {
    st.up = (req.ifr_flags & IFF_UP) != 0;
    st.running = (req.ifr_flags & IFF_RUNNING) != 0;
  }
  if (::ioctl(sock.get(), SIOCGIFMTU, &req) == 0) st.mtu = static_cast<std::uint32_t>(req.ifr_mtu);
  return st;
}

std::optional<std::uint16_t> node_id_from_ipv4(std::uint32_t addr) noexcept {
  const auto id = static_cast<std::uint16_t>(addr & 0xFFFF);
  if (id == wire::kBroadcast) return std::nullopt;
  return id;
}

std::uint16_t default_node_id(const Interface& iface) {
  if (!iface.ipv4)
    throw Error("interface " + iface.name + " has no IPv4 address to derive a node id from", 0,
                "give the node id explicitly (--node-id N, 0..65534)");
  auto id = node_id_from_ipv4(*iface.ipv4);
  if (!id)
    throw Error("the low 16 bits of " + iface.name + "'s IPv4 address are 0xFFFF, the broadcast id", 0,
                "give the node id explicitly (--node-id N, 0..65534)");
  return *id;
}

std::optional<std::uint16_t> parse_node_id(std::string_view text) noexcept {
  int base = 10;
  if (text.starts_with("0x") || text.starts_with("0X")) {
    text.remove_prefix(2);
    base = 16;
  }
  unsigned v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, base);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || v >= wire::kBroadcast)
    return std::nullopt;
  return static_cast<std::uint16_t>(v);
}

UniqueFd current_netns() {
  UniqueFd fd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!fd) throw Error("open /proc/thread-self/ns/net", errno, "is /proc mounted?");
  return fd;
}

bool same_netns(int a, int b) { return netns_inode(a) == netns_inode(b); }

std::string netns_label() {
  UniqueFd self = current_netns();
  UniqueFd init(::open("/proc/1/ns/net", O_RDONLY | O_CLOEXEC));
  if (init && same_netns(self.get(), init.get())) return {};
  const ino_t ino = netns_inode(self.get());
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/run/netns", ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    if (::stat(it->path().c_str(), &st) == 0 && st.st_ino == ino) return it->path().filename().string();
  }
  return "ns" + std::to_string(ino);
}

NetnsScope::NetnsScope(int target) {
  UniqueFd here = current_netns();
  if (same_netns(here.get(), target)) return;
  if (::setns(target, CLONE_NEWNET) != 0) throw Error("enter network namespace", errno);
  saved_ = std::move(here);
}

NetnsScope::~NetnsScope() {
  // Failing to return would leave the thread in the wrong namespace for good;
  // there is no safe way to continue.
  if (saved_ && ::setns(saved_.get(), CLONE_NEWNET) != 0) std::terminate();
}

}  // namespace locabus::net
