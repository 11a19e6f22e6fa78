// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Checks liblocabus's Locasock sockets and endpoint broadcast against
// running daemons (tests/e2e/daemon_e2e.sh, scenario locasock).
//
//   socket_api_check serve          on each peer node: a socket on port 7000 and
//                                   an endpoint on protocol 21 that answer
//   socket_api_check client PEER... on the node under test; LOCABUS_SOCKET
//                                   names the local daemon in both roles
//
// The servers echo datagrams to their sender unchanged; a datagram or a
// message starting with '?' is answered with "B:" or "U:" (broadcast or
// not, as the server saw it) followed by the text. A datagram "quit" ends a
// server (exit 0 when it saw no error).
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <locabus/locabus.h>
#include <locabus/client.hpp>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
constexpr std::uint16_t kServerPort = 7000;
constexpr std::uint8_t kProto = 21;

int failures = 0;
void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  std::fflush(stdout);
  if (!ok) ++failures;
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 31 + seed + (i >> 9)) & 0xff);
  return v;
}

// ---- serve ------------------------------------------------------------------------------

int serve() {
  auto sock = locabus::Socket::bind(kServerPort);
  // The endpoint through the C API, so that locabus_recv_ex's flag is checked too.
  locabus_endpoint* ep = nullptr;
  if (locabus_open(nullptr, kProto, 0, &ep) != 0) {
    std::printf("FAIL open protocol %d: %s\n", kProto, locabus_last_error());
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  const auto until = Clock::now() + 120s;
  std::vector<char> buf(LOCABUS_MAX_MESSAGE);
  while (Clock::now() < until) {
    pollfd p[2] = {{sock.fd(), POLLIN, 0}, {locabus_fd(ep), POLLIN, 0}};
    ::poll(p, 2, 1000);
    while (auto d = sock.receive(0ms)) {
      if (d->text() == "quit") {
        locabus_close(ep);
        return failures ? 1 : 0;
      }
      if (!d->data.empty() && d->text()[0] == '?') {
        const std::string reply = std::string(d->broadcast ? "B:" : "U:") + std::string(d->text());
        check(sock.send_to(d->node, d->port, reply) == locabus::SendStatus::ok, "reply " + reply);
      } else {
        check(sock.send_to(d->node, d->port, d->data) == locabus::SendStatus::ok,
              "echo " + std::to_string(d->data.size()) + " bytes");
      }
    }
    for (;;) {
      std::uint16_t from = 0;
      unsigned flags = 99;
      const long n = locabus_recv_ex(ep, &from, buf.data(), buf.size(), &flags, 0);
      if (n == -EAGAIN) break;
      if (n < 0) {
        std::printf("FAIL locabus_recv_ex: %s\n", locabus_last_error());
        return 1;
      }
      const std::string text(buf.data(), static_cast<std::size_t>(n));
      check(flags == 0 || flags == LOCABUS_MSG_BROADCAST, "flags are 0 or LOCABUS_MSG_BROADCAST");
      const std::string reply = std::string(flags & LOCABUS_MSG_BROADCAST ? "B:" : "U:") + text;
      check(locabus_send(ep, from, reply.data(), reply.size(), -1) == 0, "message reply " + reply);
    }
  }
  std::printf("FAIL no quit within 120 s\n");
  locabus_close(ep);
  return 1;
}

// ---- client -----------------------------------------------------------------------------

template <typename F>
int error_code(F&& f) {
  try {
    f();
  } catch (const locabus::ClientError& e) {
    std::printf("     (%s)\n", e.what());
    return e.code();
  }
  return 0;
}

// The next datagram from `node`, skipping none: anything else is a failure.
std::optional<locabus::Datagram> reply_from(locabus::Socket& s, std::uint16_t node) {
  auto d = s.receive(10s);
  if (d && d->node != node)
    check(false, "a reply from node " + std::to_string(node) + ", not " + std::to_string(d->node));
  return d;
}

int client(const std::vector<std::uint16_t>& peers) {
  const std::uint16_t peer = peers.front();

  // Binding: a fixed port, the same port again, ephemeral ports.
  auto sock = locabus::Socket::bind(7100);
  check(sock.local_port() == 7100, "bound port 7100");
  const int dup = error_code([] { locabus::Socket::bind(7100); });
  check(dup == EADDRINUSE, "port 7100 twice: EADDRINUSE");
  locabus_socket* cdup = nullptr;
  check(locabus_socket_open(nullptr, 7100, 0, &cdup) == -EADDRINUSE &&
            std::strstr(locabus_last_error(), "already bound") && !cdup,
        std::string("C: port 7100 twice: ") + locabus_last_error());
  auto eph1 = locabus::Socket::bind(0);
  auto eph2 = locabus::Socket::bind(0);
  check(eph1.local_port() >= 49152 && eph2.local_port() >= 49152 && eph1.local_port() != eph2.local_port(),
        "ephemeral ports " + std::to_string(eph1.local_port()) + " and " + std::to_string(eph2.local_port()));

  // Round trips of every fragment boundary through the peer's echo.
  for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1476}, std::size_t{1477},
                              std::size_t{2952}, std::size_t{2953}, std::size_t{65536}}) {
    const auto data = pattern(n, static_cast<unsigned>(n));
    check(sock.send_to(peer, kServerPort, data, 5s) == locabus::SendStatus::ok, "send " + std::to_string(n));
    auto d = reply_from(sock, peer);
    check(d && d->port == kServerPort && !d->broadcast && d->data == data,
          std::to_string(n) + "-byte datagram round trip" +
              (d ? " (" + std::to_string(d->data.size()) + " bytes back)" : " (nothing back)"));
  }
  // 65537 bytes: refused here, in both APIs, with the limit named.
  const auto big = pattern(LOCABUS_MAX_DATAGRAM + 1, 1);
  check(sock.send_to(peer, kServerPort, big) == locabus::SendStatus::too_large, "65537 bytes: too_large");
  locabus_socket* cs = nullptr;
  check(locabus_socket_open(nullptr, 0, 0, &cs) == 0 && cs, "C: ephemeral socket");
  check(locabus_sendto(cs, peer, kServerPort, big.data(), big.size(), -1) == -EMSGSIZE &&
            std::strstr(locabus_last_error(), "65536"),
        std::string("C: 65537 bytes: ") + locabus_last_error());
  check(error_code([&] { sock.send_to(peer, 0, "x"); }) == EINVAL, "port 0: EINVAL");

  // The C API round trip.
  const char hello[] = "hello from C";
  check(locabus_sendto(cs, peer, kServerPort, hello, std::strlen(hello), -1) == 0, "C: sendto");
  char buf[256];
  std::uint16_t node = 0, port = 0;
  unsigned flags = 99;
  long n = locabus_recvfrom(cs, buf, sizeof buf, &node, &port, &flags, 10000);
  check(n == static_cast<long>(std::strlen(hello)) && std::memcmp(buf, hello, std::strlen(hello)) == 0 &&
            node == peer && port == kServerPort && flags == 0,
        "C: recvfrom the echo");
  check(locabus_socket_port(cs) >= 49152 && locabus_socket_node_id(cs) == sock.node_id(),
        "C: port and node id");
  // A buffer too small keeps the datagram.
  check(locabus_sendto(cs, peer, kServerPort, hello, std::strlen(hello), -1) == 0, "C: sendto again");
  n = locabus_recvfrom(cs, buf, 4, &node, &port, &flags, 10000);
  check(n == -EMSGSIZE, "C: a 4-byte buffer: -EMSGSIZE");
  n = locabus_recvfrom(cs, buf, sizeof buf, nullptr, nullptr, nullptr, 1000);
  check(n == static_cast<long>(std::strlen(hello)), "C: the datagram was kept");

  // A receive with a timeout that expires.
  auto t0 = Clock::now();
  check(!sock.receive(300ms), "nothing to receive");
  const auto waited = Clock::now() - t0;
  check(waited >= 280ms && waited < 3s,
        "receive(300 ms) waited " +
            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()) + " ms");
  check(locabus_recvfrom(cs, buf, sizeof buf, &node, &port, &flags, 0) == -EAGAIN, "C: recvfrom(0): -EAGAIN");
  locabus_socket_close(cs);

  // Non-blocking: the fd with epoll, edge-like.
  const int epfd = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ::epoll_ctl(epfd, EPOLL_CTL_ADD, sock.fd(), &ev);
  for (int i = 0; i < 3; ++i)
    check(sock.send_to(peer, kServerPort, "epoll " + std::to_string(i), 0ms) == locabus::SendStatus::ok,
          "send(0 ms)");
  int got = 0, wakeups = 0;
  while (got < 3 && wakeups < 100) {
    epoll_event out;
    if (::epoll_wait(epfd, &out, 1, 10000) <= 0) break;
    ++wakeups;
    while (auto d = sock.receive(0ms)) {
      check(d->text() == "epoll " + std::to_string(got), "epoll datagram " + std::to_string(got));
      ++got;
    }
  }
  check(got == 3, "3 datagrams through epoll, " + std::to_string(wakeups) + " wakeup(s)");
  epoll_event out;
  check(::epoll_wait(epfd, &out, 1, 300) == 0, "the fd is quiet once drained");
  ::close(epfd);

  // Socket broadcast: every peer's server sees the flag; we do not get our own.
  auto local = locabus::Socket::bind(kServerPort);  // a server port here too: broadcast must not loop back
  check(sock.broadcast(kServerPort, "?everyone") == locabus::SendStatus::ok, "broadcast queued");
  std::set<std::uint16_t> answered;
  for (std::size_t i = 0; i < peers.size(); ++i) {
    auto d = sock.receive(10s);
    if (!d) break;
    check(d->text() == "B:?everyone" && !d->broadcast,
          "node " + std::to_string(d->node) + " saw the broadcast: " + std::string(d->text()));
    answered.insert(d->node);
  }
  check(answered == std::set<std::uint16_t>(peers.begin(), peers.end()), "every peer answered the broadcast");
  check(!local.receive(500ms), "the broadcast did not loop back to this node");
  check(sock.send_to(peer, kServerPort, "?direct") == locabus::SendStatus::ok, "unicast queued");
  auto d = reply_from(sock, peer);
  check(d && d->text() == "U:?direct", "a unicast is not flagged broadcast");

  // Raw protocol broadcast: endpoints of protocol 21 on every other node.
  auto ep = locabus::Endpoint::open(kProto);
  check(ep.send(LOCABUS_NODE_BROADCAST, "?raw") == locabus::SendStatus::ok, "endpoint broadcast queued");
  answered.clear();
  for (std::size_t i = 0; i < peers.size(); ++i) {
    auto m = ep.receive(10s);
    if (!m) break;
    check(m->text() == "B:?raw" && !m->broadcast,
          "node " + std::to_string(m->node) + " got the raw broadcast flagged: " + std::string(m->text()));
    answered.insert(m->node);
  }
  check(answered == std::set<std::uint16_t>(peers.begin(), peers.end()), "every peer got the raw broadcast");
  check(ep.send(peer, "?raw unicast") == locabus::SendStatus::ok, "endpoint unicast queued");
  auto m = ep.receive(10s);
  check(m && m->text() == "U:?raw unicast", "a raw unicast is not flagged broadcast");

  // A port nobody bound, a protocol nobody opened: refused there, and the
  // sender is told which of its own messages (numbered from 0 per socket or
  // endpoint) with the reason, like an ICMP port unreachable.
  {
    auto lone = locabus::Socket::bind(0);
    check(lone.send_to(peer, 7999, "nobody 0") == locabus::SendStatus::ok, "send to an unbound port");
    check(lone.send_to(peer, 7999, std::string(5000, 'x')) == locabus::SendStatus::ok,
          "a 4-fragment datagram to an unbound port");
    std::uint64_t told = 0, next = 0;
    while (told < 2) {
      auto e = lone.wait_event(5s);
      if (!e) break;
      check(e->kind == LOCABUS_EV_SEND_FAILED && e->failure == LOCABUS_FAIL_NO_ENDPOINT && e->node == peer &&
                e->first_message == next,
            "refusal names datagrams " + std::to_string(e->first_message) + "+" + std::to_string(e->count) +
                ": " + e->to_string());
      told += e->count;
      next = e->first_message + e->count;
    }
    check(told == 2, "both datagrams to the unbound port were refused back (" + std::to_string(told) + ")");
    check(!lone.wait_event(300ms), "no other failure for the socket");
    // The main socket, which sent to that node too, hears nothing of it.
    check(!sock.next_event(), "failures go only to the socket that sent");
    auto none = locabus::Endpoint::open(kProto + 9);
    check(none.send(peer, "nobody") == locabus::SendStatus::ok, "send to a protocol nobody opened there");
    auto e = none.wait_event(5s);
    check(e && e->kind == LOCABUS_EV_SEND_FAILED && e->failure == LOCABUS_FAIL_NO_ENDPOINT &&
              e->first_message == 0 && e->count == 1,
          "the endpoint's message 0 was refused back: " + (e ? e->to_string() : std::string("no event")));
  }
  for (const auto p : peers)
    check(sock.send_to(p, kServerPort, "quit") == locabus::SendStatus::ok, "quit sent");
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string role = argc > 1 ? argv[1] : "";
  try {
    if (role == "serve") return serve();
    if (role == "client" && argc > 2) {
      std::vector<std::uint16_t> peers;
      for (int i = 2; i < argc; ++i) peers.push_back(static_cast<std::uint16_t>(std::atoi(argv[i])));
      return client(peers);
    }
  } catch (const locabus::ClientError& e) {
    std::printf("FAIL %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: socket_api_check serve | client PEER...\n");
  return 2;
}
