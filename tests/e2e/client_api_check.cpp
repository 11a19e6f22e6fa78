// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Checks liblocabus against a running daemon (tests/e2e/daemon_e2e.sh,
// scenario client-api): the epoll fd is edge-like and goes quiet once drained,
// a protocol can be open only once, events arrive, the C API reports errors.
//
//   client_api_check PEER_NODE   (LOCABUS_SOCKET names the local daemon)
// It waits for 3 messages on protocol 20 that the test sends from PEER_NODE.
//
// Scenario bcast-lost (a receiver cut off from a broadcasting node):
//   client_api_check bcast-send COUNT [TEXT]        broadcasts COUNT messages on protocol 21
//   client_api_check bcast-lost PEER BEFORE LOST    on the receiving node: BEFORE broadcasts
//     from PEER arrive; then an endpoint and a socket, both opened without events, each get
//     one broadcast_lost naming PEER and LOST messages; then a broadcast "after" arrives.
#include <sys/epoll.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include <locabus/locabus.h>
#include <locabus/client.hpp>

namespace {
int failures = 0;
void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

// Broadcasts `count` messages ("TEXT" or "bcast N") on protocol 21.
int bcast_send(std::uint64_t count, const char* text) {
  locabus::EndpointOptions o;
  o.protocol = 21;
  o.events = false;
  auto ep = locabus::Endpoint::open(o);
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::string m = text ? text : "bcast " + std::to_string(i);
    if (ep.send(LOCABUS_NODE_BROADCAST, m, std::chrono::seconds(10)) != locabus::SendStatus::ok) {
      std::printf("FAIL broadcast %llu not queued\n", static_cast<unsigned long long>(i));
      return 1;
    }
  }
  return 0;  // the daemon queues what the ring holds even after we close
}

// The next broadcast_lost, skipping other kinds.
std::optional<locabus::Event> next_loss(auto& ep, std::chrono::seconds wait) {
  const auto until = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < until) {
    auto e = ep.wait_event(std::chrono::milliseconds(200));
    if (e && e->kind == LOCABUS_EV_BROADCAST_LOST) return e;
    if (e) std::printf("     (event: %s)\n", e->to_string().c_str());
  }
  return std::nullopt;
}

int bcast_lost(std::uint16_t peer, int before, std::uint64_t lost) {
  locabus::EndpointOptions o;
  o.protocol = 21;
  o.events = false;  // broadcast_lost comes anyway: it is about what this endpoint receives
  auto ep = locabus::Endpoint::open(o);
  auto sock = locabus::Socket::bind(7400);  // without events too
  std::printf("ready\n");
  std::fflush(stdout);
  int got = 0, wrong = 0;
  while (got < before) {
    auto m = ep.receive(std::chrono::seconds(20));
    if (!m) break;
    if (!(m->broadcast && m->node == peer && m->text() == "bcast " + std::to_string(got)) && wrong++ == 0)
      check(false, "broadcast " + std::to_string(got) + ": " + std::string(m->text()));
    ++got;
  }
  check(got == before && wrong == 0, "received " + std::to_string(got) + " in order");
  std::fflush(stdout);
  // The stream carries every protocol of the node, LocaMonitor's records
  // too: at least the `lost` messages of the application are named (the
  // script bounds the rest by what the sender's monitor sent meanwhile).
  std::uint64_t told = 0;
  auto expect = [&](const std::optional<locabus::Event>& e, const char* who) {
    check(e && e->node == peer && e->failure == LOCABUS_FAIL_RELEASED && e->count >= lost && e->epoch != 0 &&
              (told == 0 || e->count == told),
          std::string(who) + " told: " + (e ? e->to_string() : std::string("nothing within the time")));
    if (e && told == 0) told = e->count;
  };
  expect(next_loss(ep, std::chrono::seconds(60)), "the endpoint");
  expect(next_loss(sock, std::chrono::seconds(5)), "the socket");
  std::printf("lost %llu\n", static_cast<unsigned long long>(told));
  // Delivery goes on after the gap, and nothing of the gap arrives.
  auto m = ep.receive(std::chrono::seconds(30));
  check(m && m->broadcast && m->node == peer && m->text() == "after",
        "delivery resumes: " + (m ? std::string(m->text()) : std::string("nothing")));
  std::fflush(stdout);
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[1]) == "bcast-send") try {
      return bcast_send(std::strtoull(argv[2], nullptr, 10), argc >= 4 ? argv[3] : nullptr);
    } catch (const locabus::ClientError& e) {
      std::printf("FAIL %s\n", e.what());
      return 1;
    }
  if (argc >= 5 && std::string(argv[1]) == "bcast-lost") try {
      return bcast_lost(static_cast<std::uint16_t>(std::atoi(argv[2])), std::atoi(argv[3]),
                        std::strtoull(argv[4], nullptr, 10));
    } catch (const locabus::ClientError& e) {
      std::printf("FAIL %s\n", e.what());
      return 1;
    }
  if (argc < 2) return std::fprintf(stderr, "usage: client_api_check PEER_NODE\n"), 2;
  const auto peer = static_cast<std::uint16_t>(std::atoi(argv[1]));
  try {
    auto ep = locabus::Endpoint::open(20);
    std::printf("ready\n");
    std::fflush(stdout);

    // A second endpoint on the same protocol is refused, by name.
    locabus_endpoint* dup = nullptr;
    const int rc = locabus_open(nullptr, 20, 0, &dup);
    check(rc == -EADDRINUSE && std::strstr(locabus_last_error(), "already open"),
          std::string("protocol 20 twice: ") + locabus_last_error());
    check(locabus_open(nullptr, 3, 0, &dup) == -EINVAL, "a reserved protocol is refused");

    // The epoll pattern of docs/API.md.
    const int epfd = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ::epoll_ctl(epfd, EPOLL_CTL_ADD, ep.fd(), &ev);
    int got = 0, wakeups = 0;
    while (got < 3 && wakeups < 200) {
      epoll_event out;
      if (::epoll_wait(epfd, &out, 1, 10000) <= 0) break;
      ++wakeups;
      while (auto m = ep.receive(std::chrono::milliseconds(0))) {
        check(m->node == peer && m->text() == "epoll " + std::to_string(got),
              "message " + std::to_string(got));
        ++got;
      }
    }
    check(got == 3, "3 messages through epoll, " + std::to_string(wakeups) + " wakeup(s)");
    check(wakeups <= 6, "no spinning while the messages arrived");
    epoll_event out;
    check(::epoll_wait(epfd, &out, 1, 300) == 0, "the fd is quiet once drained");

    // Peers and events.
    bool listed = false;
    for (const auto& p : ep.peers()) listed |= p.node == peer && p.state == "alive";
    check(listed, "the peer is listed alive");
    locabus::Endpoint monitor = [] {
      locabus::EndpointOptions o;
      o.protocol = LOCABUS_PROTO_NONE;
      return locabus::Endpoint::open(o);
    }();
    bool refused = false;
    try {
      monitor.send(peer, "x");
    } catch (const locabus::ClientError& e) {
      refused = e.code() == EINVAL;
    }
    check(refused, "a monitor endpoint cannot send");
    // A send to a node nobody has heard of comes back as an event.
    check(ep.send(4242, "lost") == locabus::SendStatus::ok, "send to an unknown node is queued");
    bool connected = false;
    auto e = ep.wait_event(std::chrono::seconds(5));
    while (e && e->kind != LOCABUS_EV_SEND_FAILED) {
      connected |= e->kind == LOCABUS_EV_CONNECTED && e->node == peer;
      e = ep.wait_event(std::chrono::seconds(5));
    }
    check(connected, "a connected event for the peer that sent to us");
    check(e && e->node == 4242 && e->failure == LOCABUS_FAIL_UNKNOWN_NODE,
          "send_failed(unknown_node): " + (e ? e->to_string() : std::string("none")));
    ::close(epfd);
  } catch (const locabus::ClientError& e) {
    std::printf("FAIL %s\n", e.what());
    return 1;
  }
  return failures ? 1 : 0;
}
