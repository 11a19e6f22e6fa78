// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The client host: the local API's Unix SOCK_SEQPACKET socket (JSON control
// requests, checked with SO_PEERCRED) and, per open endpoint or socket, two
// shared-memory rings (api/shm.hpp) and a doorbell. It accepts clients,
// answers status/peers/counters, hands "open" requests and send records to
// the service that owns them (through the router) and queues what services
// deliver: into the client's ring, or its backlog while the ring is full.
// It knows nothing protocol-specific. A client that crashes, stalls or
// scribbles over its rings only loses its own endpoint; a client that
// reads slowly only slows the traffic addressed to it (flow control).
// docs/API.md describes the protocol.
#pragma once

#include "common/counters.hpp"

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <locabus/locabus.h>
#include <nlohmann/json.hpp>

#include "api/shm.hpp"
#include "common/unique_fd.hpp"
#include "daemon/config.hpp"
#include "daemon/loop.hpp"
#include "daemon/service.hpp"

namespace locabus::daemon {

class Introspection;
class Router;

/// A client broke the ring protocol (api/shm.hpp ProtocolError) or sent a
/// record it must not: its endpoint is closed.
struct ClientFault : std::runtime_error {
  using std::runtime_error::runtime_error;
};

#define LOCABUS_API_COUNTERS(X)                                                     \
  X(accepted, "client connections accepted")                                        \
  X(refused, "client connections refused (SO_PEERCRED check, too many clients)")    \
  X(protocol_errors, "clients dropped for corrupt rings or bad requests")           \
  X(records_in, "send records taken from clients' rings")                           \
  X(records_out, "records written to clients' rings (messages, datagrams, events)") \
  X(send_refused, "sends refused at once (unknown node...): told by an event")      \
  X(send_failures, "send_failed events for messages that were not delivered")       \
  X(events_out, "events queued for clients")                                        \
  X(events_dropped, "events dropped for clients too slow to read them (overrun)")   \
  X(backlogged, "records queued behind a full ring")                                \
  X(refused_on_close, "messages refused because their endpoint closed unread")      \
  X(drain_abandoned, "closed clients whose last sends were discarded: not taken within 60 s")

struct ApiCounters {
  LOCABUS_COUNTER_FIELDS(ApiCounters, LOCABUS_API_COUNTERS, ::locabus::CounterKind::counter)
};

/// One record the client's ring had no room for; delivered in order later.
struct Pending {
  std::uint16_t type = 0;
  std::uint16_t aux = 0;
  bool broadcast = false;  // a broadcast message or datagram (parks its stream when many wait)
  StreamTag tag;           // the stream messages it consumes once in the ring
  std::vector<std::byte> bytes;
};

struct Client {
  ClientId id = 0;
  UniqueFd sock;
  ucred cred{};
  std::string who;  // "pid 123 (uid 1000)"

  // the endpoint, once opened
  Service* owner = nullptr;
  std::string what;      // "endpoint protocol 20", "socket port 7000"
  nlohmann::json info;   // the service's reply fields (proto, port, ...)
  bool receives = true;  // gets messages (and broadcast_lost), not only events
  bool events = false;
  /// The highest event kind it understands ("max_event_kind" in "open"; a
  /// client that does not say knows up to LOCABUS_EV_OVERRUN).
  int max_event_kind = LOCABUS_EV_OVERRUN;
  std::optional<api::SharedRegion> region;
  api::Doorbell bell;           // our end: readable when the client rings; ring() wakes the client
  bool send_blocked = false;    // the service said would_block for the first record of the ring
  std::deque<Pending> backlog;  // records the ring had no room for
  std::size_t broadcast_backlog = 0;
  std::size_t events_in_backlog = 0;
  std::uint64_t events_dropped_unreported = 0;
  nlohmann::json refusal;                      // not authorized: the answer to every request
  std::optional<engine::Nanos> refused_until;  // ... until the connection is closed
  bool draining = false;                       // hung up; its ring still holds sends
  engine::Nanos draining_until{};              // ... which are discarded then (kDrainLimit)
  std::uint64_t sent = 0, received = 0, refused = 0, failed = 0;
  bool open() const noexcept { return owner != nullptr; }
};

class ClientHost {
 public:
  /// Creates and listens on cfg.socket_path(), watched in `loop`. Refuses
  /// (Error) when a live daemon answers on that path; replaces a stale
  /// socket file.
  ClientHost(const Config& cfg, EventLoop& loop, const engine::Clock& clock,
             const Introspection& introspection, Router& router);
  ~ClientHost();
  ClientHost(const ClientHost&) = delete;
  ClientHost& operator=(const ClientHost&) = delete;

  /// Moves records between the rings and the services. Never blocks.
  /// `arm_sleep` false: the daemon will not sleep after this cycle (it
  /// spins), so empty rings are not marked as watched by a sleeper and
  /// clients write without ringing the doorbell.
  int do_work(bool arm_sleep = true);
  /// After the router's pass: publishes the rings that got records, closes
  /// the clients dropped during the pass.
  int finish_pass();
  std::optional<engine::Nanos> next_deadline() const;
  /// Closes the listening socket and removes its file (clients stay).
  void stop_accepting();

  // ---- for the router and the services
  void deliver(ClientId id, std::uint16_t type, std::uint16_t aux, std::span<const std::byte> head,
               std::span<const std::byte> body, const StreamTag& tag, bool broadcast);
  /// A failure of the client's own messages (send_failed, its numbers).
  void failed(const ClientFailure& f);
  /// An engine event for the clients that want it: membership and
  /// connection events to those opened with events, broadcast_lost to
  /// every client that receives messages.
  void on_event(const engine::Event& e);
  std::size_t broadcast_backlog(ClientId id) const;
  std::size_t backlog(ClientId id) const;
  std::string who(ClientId id) const;

  std::size_t client_count() const noexcept { return clients_.size(); }
  /// The "api" group: its counters, and the open endpoints as JSON.
  void counters(CounterGroups& out) const;
  const ApiCounters& stats() const noexcept { return counters_; }

 private:
  void accept_clients();
  void on_client_readable(ClientId id);
  void handle_request(Client& c, const nlohmann::json& req);
  void reply(Client& c, const nlohmann::json& msg, std::span<const int> fds = {});
  void drop(ClientId id, const std::string& why);  // at the end of this pass
  void forget(ClientId id);                        // now
  void close_endpoint(Client& c);                  // its service forgets it; its backlog is refused
  void hangup(Client& c);
  int pump_to_engine(Client& c);
  bool write_record(Client& c, std::uint16_t type, std::uint16_t aux, std::span<const std::byte> bytes,
                    std::span<const std::byte> more = {});
  void publish(Client& c);
  void fault(Client& c, const ClientFault& f);
  int pump_to_client(Client& c);
  bool authorized(const Client& c, std::string& why) const;
  void expire_refused();
  void deliver_event(Client& c, const ::locabus_event& ev);
  bool doomed(ClientId id) const;
  void listen_again();
  void watch_socket(Client& c);
  void watch_bell(Client& c);

  const Config& cfg_;
  EventLoop& loop_;
  const engine::Clock& clock_;
  const Introspection& introspection_;
  Router& router_;
  std::filesystem::path path_;
  std::optional<gid_t> api_gid_;
  UniqueFd listen_;
  std::map<ClientId, std::unique_ptr<Client>> clients_;
  std::vector<ClientId> doomed_;   // dropped during a pass, erased after it
  std::vector<ClientId> touched_;  // got records this pass: publish them
  ClientId next_id_ = 1;
  std::size_t refused_count_ = 0;
  std::optional<engine::Nanos> accept_paused_until_;  // out of fds: listening again then
  ApiCounters counters_;
  bool arm_sleep_ = true;  // do_work()'s argument
};

}  // namespace locabus::daemon
