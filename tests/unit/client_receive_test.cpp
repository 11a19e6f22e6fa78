// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus's receive path against a fake daemon in this process (the
// daemon side of the shared region): receive_into() straight from the ring,
// receive_view() lending the ring record and its lifetime, space released in
// batches but at once for a daemon that waits, records read ahead by
// next_event() coming first, and the C API's views.
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <locabus/locabus.h>
#include <locabus/client.hpp>
#include <nlohmann/json.hpp>

#include "api/control.hpp"
#include "api/shm.hpp"
#include "common/unique_fd.hpp"
#include "fake_daemon.hpp"

namespace {

using locabus::UniqueFd;
using locabus::api::Doorbell;
using locabus::api::RingProducer;
using locabus::api::SharedRegion;
using namespace std::chrono_literals;

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}
std::string text_of(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

/// Answers one "open" on a private socket with a region and a doorbell,
/// then writes what the test asks into the client's ring.
class FakeDaemon : public locabus::testing::FakeDaemon {
 public:
  using locabus::testing::FakeDaemon::FakeDaemon;

  locabus::Endpoint open_endpoint() {
    std::thread t([&] { serve({{"ok", true}, {"node_id", 1}, {"proto", LOCABUS_PROTO_DEFAULT}}); });
    locabus::EndpointOptions o;
    o.socket_path = path();
    auto ep = locabus::Endpoint::open(o);
    t.join();
    return ep;
  }
  locabus::Socket open_socket() {
    std::thread t([&] { serve({{"ok", true}, {"node_id", 1}, {"port", 7000}}); });
    locabus::SocketOptions o;
    o.socket_path = path();
    auto s = locabus::Socket::bind(7000, o);
    t.join();
    return s;
  }
  locabus_endpoint* open_c_endpoint() {
    std::thread t([&] { serve({{"ok", true}, {"node_id", 1}, {"proto", LOCABUS_PROTO_DEFAULT}}); });
    locabus_endpoint* ep = nullptr;
    EXPECT_EQ(locabus_open(path().c_str(), LOCABUS_PROTO_DEFAULT, 0, &ep), 0) << locabus_last_error();
    t.join();
    return ep;
  }

  bool message(std::uint16_t from, std::string_view text, bool broadcast = false) {
    return write(broadcast ? locabus::api::kRecordBroadcastMessage : locabus::api::kRecordMessage, from,
                 bytes_of(text));
  }
  bool datagram(std::uint16_t node, std::uint16_t port, std::string_view text) {
    const locabus::api::DatagramHeader h{node, port, 0, 0};
    return write(locabus::api::kRecordDatagram, 0, std::as_bytes(std::span(&h, 1)), bytes_of(text));
  }
  bool event(std::uint16_t node, int kind) {
    locabus_event e{};
    e.kind = static_cast<std::uint8_t>(kind);
    e.node = node;
    return write(locabus::api::kRecordEvent, node, std::as_bytes(std::span(&e, 1)));
  }
  /// Free bytes in the client's ring as the daemon sees them (what the
  /// client released).
  std::size_t free_bytes() { return producer().free_bytes(); }
};

TEST(ClientReceive, ReceiveIntoCopiesFromTheRingAndKeepsAMessageThatDoesNotFit) {
  FakeDaemon d;
  auto ep = d.open_endpoint();
  ASSERT_TRUE(d.message(2, "hello"));
  ASSERT_TRUE(d.message(3, "a broadcast", true));
  std::array<std::byte, 64> buf{};
  std::uint16_t from = 0;
  bool broadcast = true;
  auto n = ep.receive_into(buf, from, broadcast, 0ms);
  ASSERT_TRUE(n);
  EXPECT_EQ(text_of(std::span(buf).first(*n)), "hello");
  EXPECT_EQ(from, 2);
  EXPECT_FALSE(broadcast);
  // Too small: EMSGSIZE, and the message stays for a larger buffer.
  std::array<std::byte, 4> tiny{};
  try {
    (void)ep.receive_into(tiny, from, broadcast, 0ms);
    ADD_FAILURE() << "a 11-byte message went into 4 bytes";
  } catch (const locabus::ClientError& e) {
    EXPECT_EQ(e.code(), EMSGSIZE);
  }
  n = ep.receive_into(buf, from, broadcast, 0ms);
  ASSERT_TRUE(n);
  EXPECT_EQ(text_of(std::span(buf).first(*n)), "a broadcast");
  EXPECT_EQ(from, 3);
  EXPECT_TRUE(broadcast);
  EXPECT_FALSE(ep.receive_into(buf, from, broadcast, 0ms));
  EXPECT_EQ(d.free_bytes(), d.ring_bytes()) << "all space back once the ring is read";
}

TEST(ClientReceive, AViewLendsTheRecordUntilTheNextCall) {
  FakeDaemon d;
  auto ep = d.open_endpoint();
  ASSERT_TRUE(d.message(2, "one"));
  ASSERT_TRUE(d.message(2, "two"));
  auto v = ep.receive_view(0ms);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->text(), "one");
  EXPECT_EQ(v->node, 2);
  EXPECT_FALSE(v->broadcast);
  EXPECT_EQ(d.free_bytes(), d.ring_bytes() - 2 * locabus::api::record_bytes(3)) << "both still held";
  auto w = ep.receive_view(0ms);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->text(), "two");
  // "one" is done with but not released yet (batched: the daemon does not
  // wait, the client has not read all it saw), "two" is lent out.
  EXPECT_EQ(d.free_bytes(), d.ring_bytes() - 2 * locabus::api::record_bytes(3));
  EXPECT_EQ(w->text(), "two") << "still valid: the daemon cannot write over it";
  EXPECT_FALSE(ep.receive_view(0ms));
  EXPECT_EQ(d.free_bytes(), d.ring_bytes());
}

TEST(ClientReceive, ReleaseViewGivesTheSpaceBackAtOnce) {
  FakeDaemon d;
  auto ep = d.open_endpoint();
  ASSERT_TRUE(d.message(2, "payload"));
  auto v = ep.receive_view(0ms);
  ASSERT_TRUE(v);
  EXPECT_LT(d.free_bytes(), d.ring_bytes());
  ep.release_view();
  EXPECT_EQ(d.free_bytes(), d.ring_bytes());
  ep.release_view();  // twice is harmless
  EXPECT_FALSE(ep.receive_view(0ms));
}

TEST(ClientReceive, SpaceGoesBackInBatchesButAtOnceForADaemonThatWaits) {
  FakeDaemon d(64 * 1024);
  auto ep = d.open_endpoint();
  const std::string msg(1000, 'm');
  std::size_t written = 0;
  while (d.message(2, msg)) ++written;
  ASSERT_GT(written, 40U);
  (void)d.producer().publish();  // the padding the refused write staged
  std::array<std::byte, LOCABUS_MAX_MESSAGE> buf{};
  std::uint16_t from = 0;
  ASSERT_TRUE(ep.receive_into(buf, from, 0ms));
  const std::size_t free_after_one = d.free_bytes();
  EXPECT_LT(free_after_one, locabus::api::record_bytes(msg.size()))
      << "one message of many read: not released yet (batched)";
  // The daemon finds the ring full and says it will sleep.
  ASSERT_TRUE(d.producer().prepare_sleep(msg.size()));
  ASSERT_TRUE(ep.receive_into(buf, from, 0ms));
  EXPECT_GE(d.free_bytes(), 2 * locabus::api::record_bytes(msg.size()))
      << "a waiting daemon gets the space with the next receive";
  EXPECT_TRUE(d.rung()) << "and its doorbell rung";
  // Reading on never holds more than an eighth of the ring.
  for (std::size_t i = 2; i < written; ++i) {
    ASSERT_TRUE(ep.receive_into(buf, from, 0ms)) << i;
    EXPECT_LE(d.ring_bytes() - d.free_bytes() - (written - i - 1) * locabus::api::record_bytes(msg.size()),
              d.ring_bytes() / 8 + locabus::api::record_bytes(msg.size()));
  }
  EXPECT_FALSE(ep.receive_into(buf, from, 0ms));  // (also skips the padding at the end)
  EXPECT_EQ(d.free_bytes(), d.ring_bytes()) << "everything read: everything released";
}

TEST(ClientReceive, MessagesReadAheadForAnEventComeFirst) {
  FakeDaemon d;
  auto ep = d.open_endpoint();
  ASSERT_TRUE(d.message(2, "before"));
  ASSERT_TRUE(d.event(4, LOCABUS_EV_JOINED));
  ASSERT_TRUE(d.message(2, "after"));
  auto e = ep.next_event();  // reads "before" (and "after") ahead
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, LOCABUS_EV_JOINED);
  EXPECT_EQ(e->node, 4);
  ASSERT_TRUE(d.message(2, "later"));
  auto v = ep.receive_view(0ms);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->text(), "before");
  std::array<std::byte, 16> buf{};
  std::uint16_t from = 0;
  auto n = ep.receive_into(buf, from, 0ms);
  ASSERT_TRUE(n);
  EXPECT_EQ(text_of(std::span(buf).first(*n)), "after");
  auto m = ep.receive(0ms);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "later");
  EXPECT_FALSE(ep.receive(0ms));
}

TEST(ClientReceive, EventsMetOnTheWayToAMessageAreKept) {
  FakeDaemon d;
  auto ep = d.open_endpoint();
  ASSERT_TRUE(d.event(5, LOCABUS_EV_DEAD));
  ASSERT_TRUE(d.message(2, "x"));
  auto v = ep.receive_view(0ms);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->text(), "x");
  auto e = ep.next_event();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, LOCABUS_EV_DEAD);
  EXPECT_EQ(e->node, 5);
}

TEST(ClientReceive, SocketReceivesDatagramsFromTheRing) {
  FakeDaemon d;
  auto s = d.open_socket();
  ASSERT_TRUE(d.datagram(2, 6000, "first"));
  ASSERT_TRUE(d.datagram(3, 6001, "second"));
  ASSERT_TRUE(d.datagram(4, 6002, "third"));
  std::array<std::byte, 32> buf{};
  locabus::DatagramInfo from;
  auto n = s.receive_into(buf, from, 0ms);
  ASSERT_TRUE(n);
  EXPECT_EQ(text_of(std::span(buf).first(*n)), "first");
  EXPECT_EQ(from.node, 2);
  EXPECT_EQ(from.port, 6000);
  auto v = s.receive_view(0ms);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->text(), "second");
  EXPECT_EQ(v->node, 3);
  EXPECT_EQ(v->port, 6001);
  auto g = s.receive(0ms);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->text(), "third");
  EXPECT_EQ(g->port, 6002);
  EXPECT_FALSE(s.receive_view(0ms));
  EXPECT_EQ(d.free_bytes(), d.ring_bytes());
}

TEST(ClientReceive, CApiViews) {
  FakeDaemon d;
  locabus_endpoint* ep = d.open_c_endpoint();
  ASSERT_NE(ep, nullptr);
  ASSERT_TRUE(d.message(9, "c view", true));
  const void* data = nullptr;
  std::uint16_t from = 0;
  unsigned flags = 0;
  const long n = locabus_recv_view(ep, &from, &data, &flags, 0);
  ASSERT_EQ(n, 6) << locabus_last_error();
  EXPECT_EQ(std::string(static_cast<const char*>(data), static_cast<std::size_t>(n)), "c view");
  EXPECT_EQ(from, 9);
  EXPECT_EQ(flags, LOCABUS_MSG_BROADCAST);
  locabus_recv_release(ep);
  EXPECT_EQ(d.free_bytes(), d.ring_bytes());
  EXPECT_EQ(locabus_recv_view(ep, &from, &data, nullptr, 0), -EAGAIN);
  EXPECT_EQ(locabus_recv_view(ep, &from, nullptr, nullptr, 0), -EINVAL);
  locabus_recv_release(nullptr);
  locabus_close(ep);
}

}  // namespace
