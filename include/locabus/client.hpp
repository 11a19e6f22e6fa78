// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus: the C++ API of the Locabus client library.
//
//   auto ep = locabus::Endpoint::open(17);          // protocol 17 on the local locabusd
//   ep.send(2, "hello");                            // to node 2
//   if (auto m = ep.receive(std::chrono::seconds(1)))
//     std::cout << "node " << m->node << ": " << m->text() << "\n";
//
// Messages are reliable, in order and exactly once per peer connection;
// failures come back as events (Endpoint::next_event). An Endpoint belongs
// to one thread at a time. docs/API.md has the details; locabus/locabus.h is
// the same API in C.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <locabus/locabus.h>

namespace locabus {

/// What went wrong talking to the daemon; what() says what to do.
class ClientError : public std::runtime_error {
 public:
  ClientError(const std::string& what, int code) : std::runtime_error(what), code_(code) {}
  /// An errno value: ENOENT/ECONNREFUSED no daemon, EACCES not allowed,
  /// EADDRINUSE protocol taken, ENOTCONN the daemon went away...
  int code() const noexcept { return code_; }

 private:
  int code_;
};

struct EndpointOptions {
  /// Empty: $LOCABUS_SOCKET, else /run/locabus/locabusd.sock.
  std::string socket_path;
  /// Application protocol id, 16..255; one endpoint per id per node.
  /// LOCABUS_PROTO_NONE (0): events only, any number per node.
  std::uint8_t protocol = LOCABUS_PROTO_DEFAULT;
  /// Deliver membership events (joined, dead, restarted...).
  bool events = true;
};

/// A received message.
struct Message {
  std::uint16_t node = 0;  // the sender
  std::vector<std::byte> data;
  std::string_view text() const noexcept { return {reinterpret_cast<const char*>(data.data()), data.size()}; }
};

/// A membership or delivery event (locabus_event in C).
struct Event : locabus_event {
  std::string_view kind_name() const noexcept { return locabus_event_kind_name(kind); }
  std::string_view failure_name() const noexcept { return locabus_failure_name(failure); }
  /// "node 3 joined", "2 messages to node 4 failed: peer_dead"...
  std::string to_string() const;
};

/// A peer as the daemon sees it.
struct Peer {
  std::uint16_t node = 0;
  std::string mac;
  std::string state;       // alive, suspect, dead, left, joining
  std::string connection;  // established, closed...
  std::uint64_t epoch = 0;
  std::chrono::microseconds rtt{0};
  std::uint64_t retransmits = 0;
  std::uint32_t in_flight = 0;
  std::uint32_t window = 0;
};

enum class SendStatus {
  ok,            // queued; a delivery failure comes later as a send_failed event
  would_block,   // the send ring stayed full for the whole timeout
  too_large,     // over LOCABUS_MAX_MESSAGE bytes
  invalid_node,  // 0xFFFF
};

inline constexpr std::chrono::milliseconds kForever{-1};

class Endpoint {
 public:
  /// Connects to the daemon and opens an endpoint. Throws ClientError.
  static Endpoint open(const EndpointOptions& options = {});
  /// The local daemon, protocol `protocol`, with events.
  static Endpoint open(std::uint8_t protocol) {
    EndpointOptions o;
    o.protocol = protocol;
    return open(o);
  }

  Endpoint(Endpoint&&) noexcept;
  Endpoint& operator=(Endpoint&&) noexcept;
  ~Endpoint();

  std::uint16_t node_id() const noexcept;
  std::uint8_t protocol() const noexcept;

  /// Queues a message for `node`, waiting up to `timeout` while the ring to
  /// the daemon is full. Throws ClientError(ENOTCONN) when the daemon went
  /// away: open a new Endpoint (it may have restarted).
  SendStatus send(std::uint16_t node, std::span<const std::byte> data,
                  std::chrono::milliseconds timeout = kForever);
  SendStatus send(std::uint16_t node, std::string_view text, std::chrono::milliseconds timeout = kForever) {
    return send(node, std::as_bytes(std::span(text.data(), text.size())), timeout);
  }

  /// The next message, waiting up to `timeout` (0: only what is there);
  /// nullopt when none came. Throws ClientError(ENOTCONN) as send() does.
  std::optional<Message> receive(std::chrono::milliseconds timeout = kForever);
  /// Like receive(), into `buffer`: the length, or nullopt. Throws
  /// ClientError(EMSGSIZE) when the buffer is too small (the message stays).
  std::optional<std::size_t> receive_into(std::span<std::byte> buffer, std::uint16_t& from,
                                          std::chrono::milliseconds timeout = kForever);

  /// The next event, if there is one now; never blocks.
  std::optional<Event> next_event();
  /// The next event, waiting up to `timeout`.
  std::optional<Event> wait_event(std::chrono::milliseconds timeout);

  /// For poll/epoll: readable when receive() or next_event() may have
  /// something, or the daemon went away. Call them until they have nothing
  /// before waiting again (like an edge-triggered fd).
  int fd() const noexcept;

  /// The daemon's peers (a round trip on the control socket).
  std::vector<Peer> peers();

  /// False once the daemon has gone away.
  bool connected() const noexcept;

  struct Impl;

 private:
  explicit Endpoint(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace locabus
