// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus: the C++ API of the Locabus client library.
//
//   auto ep = locabus::Endpoint::open(17);          // protocol 17 on the local locabusd
//   ep.send(2, "hello");                            // to node 2
//   if (auto m = ep.receive(std::chrono::seconds(1)))
//     std::cout << "node " << m->node << ": " << m->text() << "\n";
//
//   auto sock = locabus::Socket::bind(7000);        // a Locasock datagram socket
//   sock.send_to(2, 7000, big_buffer);              // up to 64 KB, to port 7000 on node 2
//   if (auto d = sock.receive(std::chrono::seconds(1)))
//     std::cout << d->node << ":" << d->port << " sent " << d->data.size() << " bytes\n";
//
// Messages are reliable, in order and exactly once per peer connection;
// failures come back as events (Endpoint::next_event). An Endpoint or a
// Socket belongs to one thread at a time. docs/API.md has the details;
// locabus/locabus.h is the same API in C.
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
  /// EADDRINUSE protocol or port taken, ENOTCONN the daemon went away...
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
  bool broadcast = false;  // sent to every node (send to LOCABUS_NODE_BROADCAST), not to us alone
  std::vector<std::byte> data;
  std::string_view text() const noexcept { return {reinterpret_cast<const char*>(data.data()), data.size()}; }
};

/// A received message lent by the library (Endpoint::receive_view()): `data`
/// points into the endpoint's receive ring, nothing was copied.
struct MessageView {
  std::uint16_t node = 0;  // the sender
  bool broadcast = false;  // sent to every node
  std::span<const std::byte> data;
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
  too_large,     // over LOCABUS_MAX_MESSAGE bytes (a Socket: LOCABUS_MAX_DATAGRAM)
  invalid_node,  // no longer returned: 0xFFFF (LOCABUS_NODE_BROADCAST) now sends to every node
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
  ///
  /// `node` LOCABUS_NODE_BROADCAST (0xFFFF) sends to the endpoints of this
  /// protocol on every other node (not to this node), reliably and in order
  /// among this node's broadcasts; they receive it with Message::broadcast set.
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
  /// The same; `broadcast` tells whether the message was a broadcast.
  std::optional<std::size_t> receive_into(std::span<std::byte> buffer, std::uint16_t& from, bool& broadcast,
                                          std::chrono::milliseconds timeout = kForever);
  /// Like receive(), without copying: the message stays in the receive ring
  /// and the view points at it. The view is valid until the next
  /// receive(), receive_into(), receive_view(), next_event(), wait_event()
  /// or release_view() on this endpoint, or its destruction; while it is
  /// held the daemon cannot reuse the message's space (hold it briefly).
  std::optional<MessageView> receive_view(std::chrono::milliseconds timeout = kForever);
  /// Ends the view receive_view() returned (its space goes back to the
  /// daemon now, not at the next receive). Optional; never throws.
  void release_view() noexcept;

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

struct SocketOptions {
  /// Empty: $LOCABUS_SOCKET, else /run/locabus/locabusd.sock.
  std::string socket_path;
  /// Deliver membership events (next_event / wait_event). Send failures
  /// (send_failed) come as events either way.
  bool events = false;
};

/// Where a datagram came from.
struct DatagramInfo {
  std::uint16_t node = 0;  // the sender's node
  std::uint16_t port = 0;  // the sender's port (its Socket::local_port())
  bool broadcast = false;  // sent with broadcast(), to every node
};

/// A received Locasock datagram.
struct Datagram : DatagramInfo {
  std::vector<std::byte> data;
  std::string_view text() const noexcept { return {reinterpret_cast<const char*>(data.data()), data.size()}; }
};

/// A received datagram lent by the library (Socket::receive_view()): `data`
/// points into the socket's receive ring, nothing was copied.
struct DatagramView : DatagramInfo {
  std::span<const std::byte> data;
  std::string_view text() const noexcept { return {reinterpret_cast<const char*>(data.data()), data.size()}; }
};

/// A Locasock datagram socket (docs/API.md, "Sockets"): datagrams of up to
/// LOCABUS_MAX_DATAGRAM (65,536) bytes between ports on any nodes, reliable,
/// in order per sending socket and destination, each delivered whole or not
/// at all. One socket per port per node.
class Socket {
 public:
  /// Connects to the daemon and binds `port` (1..65535); 0 lets the daemon
  /// pick a free ephemeral port (49152..65535, see local_port()). Throws
  /// ClientError: EADDRINUSE when the port is taken (the message names the
  /// holder), EMSGSIZE when the daemon's ring_bytes is too small for 64 KB
  /// datagrams, and as Endpoint::open.
  static Socket bind(std::uint16_t port = 0, const SocketOptions& options = {});

  Socket(Socket&&) noexcept;
  Socket& operator=(Socket&&) noexcept;
  /// Datagrams send_to()/broadcast() accepted are still sent.
  ~Socket();

  std::uint16_t local_port() const noexcept;
  std::uint16_t node_id() const noexcept;

  /// Queues a datagram for port `port` on `node`, waiting up to `timeout`
  /// while the ring to the daemon is full. too_large over LOCABUS_MAX_DATAGRAM
  /// bytes. A datagram for a port nobody bound is dropped there (like UDP);
  /// an unknown or unreachable node comes back as a send_failed event.
  /// Throws ClientError(EINVAL) for port 0, ClientError(ENOTCONN) when the
  /// daemon went away.
  SendStatus send_to(std::uint16_t node, std::uint16_t port, std::span<const std::byte> data,
                     std::chrono::milliseconds timeout = kForever);
  SendStatus send_to(std::uint16_t node, std::uint16_t port, std::string_view text,
                     std::chrono::milliseconds timeout = kForever) {
    return send_to(node, port, std::as_bytes(std::span(text.data(), text.size())), timeout);
  }
  /// Queues a datagram for port `port` on every other node (not this one:
  /// Locabus broadcast does not loop back); they receive it with
  /// DatagramInfo::broadcast set. The same as send_to(LOCABUS_NODE_BROADCAST, ...).
  SendStatus broadcast(std::uint16_t port, std::span<const std::byte> data,
                       std::chrono::milliseconds timeout = kForever);
  SendStatus broadcast(std::uint16_t port, std::string_view text,
                       std::chrono::milliseconds timeout = kForever) {
    return broadcast(port, std::as_bytes(std::span(text.data(), text.size())), timeout);
  }

  /// The next datagram, waiting up to `timeout` (0: only what is there);
  /// nullopt when none came. Throws ClientError(ENOTCONN) as send_to() does.
  std::optional<Datagram> receive(std::chrono::milliseconds timeout = kForever);
  /// Like receive(), into `buffer`: the length, or nullopt. Throws
  /// ClientError(EMSGSIZE) when the buffer is too small (the datagram stays).
  std::optional<std::size_t> receive_into(std::span<std::byte> buffer, DatagramInfo& from,
                                          std::chrono::milliseconds timeout = kForever);
  /// Like receive(), without copying, with the lifetime rules of
  /// Endpoint::receive_view().
  std::optional<DatagramView> receive_view(std::chrono::milliseconds timeout = kForever);
  /// Ends the view receive_view() returned. Optional; never throws.
  void release_view() noexcept;

  /// Events: send_failed always, membership events when bound with events.
  std::optional<Event> next_event();
  std::optional<Event> wait_event(std::chrono::milliseconds timeout);

  /// For poll/epoll, with the contract of Endpoint::fd(): call receive(0) /
  /// next_event() until they have nothing before waiting again.
  int fd() const noexcept;

  /// The daemon's peers (a round trip on the control socket).
  std::vector<Peer> peers();
  /// False once the daemon has gone away.
  bool connected() const noexcept;

  struct Impl;

 private:
  explicit Socket(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

/// LocaMonitor (docs/API.md, "LocaMonitor"): every daemon keeps the whole
/// cluster's load table; these read the local daemon's copy with one request
/// on its control socket (no network round trip). `socket_path` empty:
/// $LOCABUS_SOCKET, else /run/locabus/locabusd.sock. They throw ClientError
/// with the daemon's error and what to do: ENOTSUP when the daemon runs
/// without the monitor (--no-monitor), ENOENT/ECONNREFUSED when no daemon
/// answers, EPROTO when a reply lacks a field (the message names it).
using NodeLoad = locabus_node_load;

/// Every row of the table, by node id (a summary of each node; the full rows
/// are in monitor_json()).
std::vector<NodeLoad> monitor_nodes(const std::string& socket_path = {});

/// The least-loaded alive node by the documented rule (lowest load1 per CPU
/// in steps of 0.05, then most available memory, then lowest node id);
/// nullopt when no node is alive.
std::optional<std::uint16_t> least_loaded(const std::string& socket_path = {});

/// The daemon's "monitor" object (JSON text): self node, times,
/// least_loaded, the rule, and "nodes" with every field of each row. Read in
/// pages (docs/API.md, "LocaMonitor"): the rows of every page joined, the
/// other fields from the last one.
std::string monitor_json(const std::string& socket_path = {});

}  // namespace locabus
