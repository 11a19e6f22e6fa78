// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The seam between the daemon and its services (docs/ARCHITECTURE.md,
// "The daemon's rooms"). A service (application endpoints, Locasock, and
// next KCCM, the monitor, SPS, MPI) owns engine protocol ids and the
// clients that open it; the daemon knows it only through this interface:
//
//   client host (client_host.*): accepts clients, checks credentials,
//     answers control requests, owns their rings and back-pressure;
//   router (router.*): hands engine messages to the service that owns
//     their protocol, keeps per-endpoint flow control (flow.*) and tells
//     senders about what was not delivered;
//   services: everything protocol-specific.
//
// Everything runs in the daemon's one thread; no call may block.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <locabus/locabus.h>
#include <nlohmann/json.hpp>

#include "common/counters.hpp"
#include "daemon/flow.hpp"
#include "engine/clock.hpp"
#include "engine/engine.hpp"

namespace locabus::daemon {

/// A client of the daemon: one connection to the API socket.
using ClientId = std::uint64_t;

/// An "open" request a service refuses: the client gets errno, error, hint.
struct OpenRefused {
  int err = 0;
  std::string error;
  std::string hint;
};

/// The answer to an "open" request: reply fields for the client (the host
/// adds ok, node_id, ring_bytes) or a refusal.
struct OpenResult {
  nlohmann::json reply = nlohmann::json::object();
  std::optional<OpenRefused> refused;
  /// For logs: "endpoint protocol 20", "socket port 7000".
  std::string what;
  /// Receives messages (gets broadcast_lost), not only events.
  bool receives = true;
};

/// What a service did with a record from a client's send ring.
struct RecordResult {
  enum Kind { accepted, would_block, refused, fault } kind = accepted;
  std::uint16_t node = 0;                              // refused: for which node
  engine::SendStatus status = engine::SendStatus::ok;  // refused: why
  std::string error;                                   // fault: what the client broke

  static RecordResult ok() { return {}; }
  static RecordResult blocked() {
    RecordResult r;
    r.kind = would_block;
    return r;
  }
  static RecordResult refusal(std::uint16_t node, engine::SendStatus status) {
    RecordResult r;
    r.kind = refused;
    r.node = node;
    r.status = status;
    return r;
  }
  static RecordResult broken(std::string what) {
    RecordResult r;
    r.kind = fault;
    r.error = std::move(what);
    return r;
  }
};

/// A message handed to a service, with its place in its stream.
struct Inbound {
  std::uint16_t node = 0;
  std::uint8_t proto = 0;
  bool broadcast = false;
  std::span<const std::byte> payload;
  StreamTag tag;  // consume (deliver) or refuse it through the host
};

/// What the daemon offers a service.
class ServiceHost {
 public:
  virtual ~ServiceHost() = default;
  virtual const engine::Clock& clock() const noexcept = 0;
  virtual std::uint16_t node_id() const noexcept = 0;
  /// The engine, read-only: its counters and members, for services that
  /// report on the node (the monitor).
  virtual const engine::Engine& engine() const noexcept = 0;
  /// Applications attached to the daemon now.
  virtual std::size_t client_count() const noexcept = 0;
  virtual std::uint32_t ring_bytes() const noexcept = 0;

  // ---- to other nodes
  /// ok when `messages` unicast sends on `key` to `node` would be accepted
  /// now (engine window and the endpoint's credit), else why not.
  virtual engine::SendStatus can_send(std::uint16_t node, StreamKey key, std::size_t messages) = 0;
  /// Sends one message of protocol stream_proto(key) on the stream. Its
  /// failure, if any, reaches `origin.client` (a ClientFailure), or the
  /// service (Service::on_failure) for origin.client 0.
  virtual engine::SendResult send(std::uint16_t node, StreamKey key, std::span<const std::byte> payload,
                                  Origin origin) = 0;
  /// ok when `messages` broadcasts on `key` would be accepted now: the
  /// broadcast stream has room and no node asked to hold `key` (its reader
  /// there is full), else would_block.
  virtual engine::SendStatus can_broadcast(StreamKey key, std::size_t messages) = 0;
  /// One message of protocol stream_proto(key) to every other node.
  virtual engine::SendResult broadcast(StreamKey key, std::span<const std::byte> payload) = 0;

  // ---- to clients
  /// Queues a record for the client (into its ring, or its backlog). When
  /// it reaches the ring, `tag`'s messages count as consumed (credit for
  /// their sender); if the client goes away first, they are refused.
  virtual void deliver(ClientId client, std::uint16_t type, std::uint16_t aux,
                       std::span<const std::byte> head, std::span<const std::byte> body,
                       const StreamTag& tag) = 0;
  /// Messages that will not be delivered (LOCABUS_REFUSE_*): their sender is told.
  virtual void refuse(const StreamTag& tag, std::uint8_t reason) = 0;
  /// Messages the service used up itself, without a client (a KCCM call a
  /// built-in handler answered): credit for their sender, as deliver() gives.
  virtual void consume(const StreamTag& tag) = 0;
  /// Records waiting in the client's backlog that came by broadcast (a
  /// service parks a broadcast stream rather than let this grow).
  virtual std::size_t broadcast_backlog(ClientId client) const = 0;
  /// Records waiting in the client's backlog, of any kind (a service stops
  /// taking requests whose answers would only make it grow).
  virtual std::size_t backlog(ClientId client) const {
    (void)client;
    return 0;
  }
  /// The configured per-endpoint window (messages): how much a service may
  /// let wait for one client.
  virtual std::uint32_t window() const noexcept = 0;
  /// "pid 123 (uid 1000)", for logs.
  virtual std::string who(ClientId client) const = 0;

  // ---- the daemon loop
  /// Calls `on_ready` (in the loop) when `fd` is readable (EPOLLIN, or the
  /// events given). Until unwatch_fd().
  virtual void watch_fd(int fd, std::function<void(std::uint32_t events)> on_ready,
                        std::uint32_t events = 0) = 0;
  virtual void unwatch_fd(int fd) = 0;
  /// Calls `on_exit` with the wait status when child `pid` exits (the loop
  /// reaps it on SIGCHLD).
  virtual void watch_child(pid_t pid, std::function<void(int status)> on_exit) = 0;
};

/// A daemon service.
class Service {
 public:
  virtual ~Service() = default;
  virtual std::string_view name() const noexcept = 0;
  /// Engine protocol ids whose messages the router hands to this service.
  virtual std::vector<std::uint8_t> protocols() const = 0;
  /// The destination port of a message of its protocols, when the service
  /// has ports (flow control is per port then); 0 otherwise. The payload
  /// is the peer's: a short or odd one gives 0 and on_message() refuses it.
  virtual std::uint16_t port_of(std::span<const std::byte> payload) const {
    (void)payload;
    return 0;
  }

  // ---- clients
  /// Whether this service answers this "open" request.
  virtual bool wants(const nlohmann::json& open) const = 0;
  /// Binds the client to the service (it may refuse).
  virtual OpenResult open(ClientId client, const nlohmann::json& request) = 0;
  /// The client hung up with sends still in its ring: free what it bound
  /// (its protocol, its port) for others. on_record() still comes for the
  /// sends left, then close().
  virtual void unbind(ClientId client) { (void)client; }
  /// The client went away (or closed its endpoint): forget it. The host
  /// refuses what still waited for it.
  virtual void close(ClientId client) = 0;
  /// The client's own state for locabusctl counters ("endpoints").
  virtual nlohmann::json describe(ClientId client) const {
    (void)client;
    return nlohmann::json::object();
  }
  /// A record from the client's send ring; `message` is the client's
  /// number for it (its count of sends so far).
  virtual RecordResult on_record(ClientId client, std::uint16_t type, std::uint16_t aux,
                                 std::span<const std::byte> payload, std::uint64_t message) = 0;

  // ---- the network
  /// The client that reads the stream `key` (a protocol, or a port), if
  /// any: the router watches its backlog to hold broadcasts for it.
  virtual std::optional<ClientId> reader_of(StreamKey key) const {
    (void)key;
    return std::nullopt;
  }
  /// A message of one of its protocols. It must deliver, hold (and later
  /// deliver or refuse) or refuse `m.tag`.
  virtual void on_message(const Inbound& m) = 0;
  /// Messages the service itself sent (Origin client 0) that failed.
  virtual void on_failure(const ClientFailure& f) { (void)f; }
  /// Every engine event (membership, connections).
  virtual void on_event(const engine::Event& e) { (void)e; }

  // ---- time
  virtual int do_work() { return 0; }
  virtual std::optional<engine::Nanos> next_deadline() const { return std::nullopt; }

  /// Its counter groups (locabusctl counters, the Prometheus exposition):
  /// by convention one group named after the service.
  virtual void counters(CounterGroups& out) const = 0;

  // ---- the control socket and the exporter
  /// A control request whose "op" the client host does not answer itself
  /// (e.g. "monitor"): the whole reply ({"ok": true, ...}, or ok false with
  /// errno, error and hint), or nullopt when the op is not this service's.
  virtual std::optional<nlohmann::json> control(const std::string& op, const nlohmann::json& request,
                                                ClientId client) {
    (void)op;
    (void)request;
    (void)client;
    return std::nullopt;
  }
  /// Adds the service's part to locabusctl status (one key, its name).
  virtual void status(nlohmann::json& out) const { (void)out; }
  /// Appends Prometheus text-exposition families beyond its counters (the
  /// registry renders those): about this node (cluster false) or about every
  /// node it knows (cluster true, /metrics?scope=cluster). Family names must
  /// not collide with the registry's (locabus_<group>_...).
  virtual void exposition(bool cluster, std::string& out) const {
    (void)cluster;
    (void)out;
  }
};

}  // namespace locabus::daemon
