// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The local API server: a Unix SOCK_SEQPACKET socket for control (JSON
// requests, checked with SO_PEERCRED), and per endpoint or Locasock socket
// two shared-memory rings for data (api/shm.hpp). It owns the Locasock
// service (ports, fragmentation, reassembly) on top of the engine. Runs inside the daemon's one thread: it
// never blocks, and a client that crashes, stalls or scribbles over its rings only loses its own endpoint.
// docs/API.md describes the protocol.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <locabus/locabus.h>
#include <nlohmann/json.hpp>

#include "common/unique_fd.hpp"
#include "daemon/config.hpp"
#include "engine/engine.hpp"
#include "locasock/engine_bus.hpp"
#include "locasock/locasock.hpp"

namespace locabus::daemon {

class Introspection;
struct Client;

/// A client broke the ring protocol (api/shm.hpp ProtocolError) or sent a
/// record it must not: its endpoint is closed.
struct ClientFault : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ApiCounters {
  std::uint64_t accepted = 0;
  std::uint64_t refused = 0;          // SO_PEERCRED check failed
  std::uint64_t protocol_errors = 0;  // clients dropped for corrupt rings or bad requests
  std::uint64_t rx_no_endpoint = 0;   // messages for a protocol nobody opened
  std::uint64_t messages_in = 0;      // client -> engine
  std::uint64_t messages_out = 0;     // engine -> client
  std::uint64_t send_refused = 0;     // engine refused at once (unknown node...)
  std::uint64_t events_out = 0;
  std::uint64_t events_dropped = 0;    // a client too slow to read its events
  std::uint64_t stalled = 0;           // clients disconnected for not reading
  std::uint64_t datagrams_in = 0;      // socket -> Locasock service
  std::uint64_t datagrams_out = 0;     // Locasock service -> socket
  std::uint64_t locasock_no_port = 0;  // datagrams for a port nobody bound (dropped, like UDP)
};

class ApiServer {
 public:
  /// Creates and listens on cfg.socket_path(). Refuses (Error) when a live
  /// daemon answers on that path; replaces a stale socket file.
  ApiServer(const Config& cfg, engine::Engine& engine, const engine::Clock& clock,
            const Introspection& introspection);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  /// Readable when a client connects, sends a request, hangs up or rings
  /// the daemon's doorbell. For the daemon's idle strategy.
  int wait_fd() const noexcept { return epoll_.get(); }

  /// Accepts clients, answers requests, moves messages between the rings
  /// and the engine. Never blocks. Returns the work done.
  int do_work();
  /// When a stalled client must be checked again (engine clock).
  std::optional<engine::Nanos> next_deadline() const;

  /// The Locasock service's statistics (locabusctl counters).
  nlohmann::json locasock_counters() const;

  /// An engine event: membership events go to subscribed endpoints,
  /// send failures to the endpoints that sent to that node.
  void on_event(const engine::Event& e);

  /// Closes the listening socket and removes its file (clients stay).
  void stop_accepting();

  std::size_t client_count() const noexcept;
  nlohmann::json counters() const;

 private:
  void accept_clients();
  void on_client_readable(std::uint64_t id);
  void handle_request(Client& c, const nlohmann::json& req);
  void open_socket(Client& c, const nlohmann::json& req);
  static std::string what(const Client& c);
  void unbind(Client& c);
  void refused(Client& c, std::uint16_t node, engine::SendStatus status);
  void deliver(Client& c, std::uint16_t type, std::uint16_t aux, std::span<const std::byte> head,
               std::span<const std::byte> body = {});
  void reply(Client& c, const nlohmann::json& msg, std::span<const int> fds = {});
  void drop(std::uint64_t id, const std::string& why);  // at the end of this pass
  void forget(std::uint64_t id);                        // now
  void hangup(Client& c);
  int pump_to_engine(Client& c);
  bool write_record(Client& c, std::uint16_t type, std::uint16_t aux, std::span<const std::byte> bytes,
                    std::span<const std::byte> more = {});
  void publish(Client& c);
  void fault(Client& c, const ClientFault& f);
  int pump_to_client(Client& c);
  int receive_from_engine();
  bool authorized(const Client& c, std::string& why) const;
  void drop_stalled();
  void deliver_event(Client& c, const ::locabus_event& ev);

  const Config& cfg_;
  engine::Engine& engine_;
  const engine::Clock& clock_;
  const Introspection& introspection_;
  std::filesystem::path path_;
  std::optional<gid_t> api_gid_;
  UniqueFd listen_;
  UniqueFd epoll_;
  std::map<std::uint64_t, std::unique_ptr<Client>> clients_;
  std::vector<std::uint64_t> doomed_;  // dropped during a pass, erased after it
  std::array<Client*, 256> by_proto_{};
  std::unordered_map<std::uint16_t, Client*> by_port_;  // bound Locasock sockets
  unsigned next_ephemeral_ = 0;                         // offset of the next ephemeral port to try
  std::unique_ptr<locasock::EngineBus> bus_;            // the Locasock service's view of engine_
  std::unique_ptr<locasock::Service> service_;          // fragmentation and reassembly of datagrams
  std::uint64_t next_id_ = 1;
  std::size_t refused_count_ = 0;
  std::optional<engine::Nanos> accept_paused_until_;  // out of fds: listening again then
  ApiCounters counters_;
};

}  // namespace locabus::daemon
