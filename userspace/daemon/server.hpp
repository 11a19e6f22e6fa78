// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The daemon's rooms put together (docs/ARCHITECTURE.md, "The daemon's
// rooms"): the loop's fd set, the client host (local API: clients, rings,
// back-pressure), the router (engine <-> services, per-endpoint flow
// control) and the services (application endpoints, Locasock, KCCM, LocaMonitor). The daemon
// drives it as one duty cycle and knows services only through the seam in
// service.hpp.
#pragma once

#include <functional>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "daemon/client_host.hpp"
#include "daemon/config.hpp"
#include "daemon/loop.hpp"
#include "daemon/router.hpp"
#include "engine/engine.hpp"
#include "monitor/stats.hpp"

namespace locabus::daemon {

class Introspection;
class MonitorService;

/// What a test (the simulation) puts in place of the real thing.
struct ServerHooks {
  /// LocaMonitor's sample of this node; empty: monitor::Sampler over /proc and /sys.
  std::function<monitor::NodeStats()> monitor_sample;
};

class ApiServer {
 public:
  /// Opens the API socket (ClientHost) and starts the services. Throws Error.
  ApiServer(const Config& cfg, engine::Engine& engine, const engine::Clock& clock,
            const Introspection& introspection, ServerHooks hooks = {});
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  /// Readable when a client or a service's fd needs the loop. For the
  /// daemon's idle strategy.
  int wait_fd() const noexcept { return loop_.fd(); }

  /// One pass: ready fds, the clients' rings, the engine's messages, the
  /// services' work. Never blocks. Returns the work done.
  /// `arm_sleep`: tell clients whose rings are empty that the daemon is
  /// going to sleep (they then ring its doorbell); false while it spins.
  int do_work(bool arm_sleep = true);
  std::optional<engine::Nanos> next_deadline() const;

  /// An engine event (poll_events), then after_events() once per batch.
  void on_event(const engine::Event& e) { router_->on_event(e); }
  void after_events() { router_->after_events(); }
  /// SIGCHLD: reaps children and tells the services that watch them.
  int reap_children() { return loop_.reap_children(); }

  /// Closes the listening socket and removes its file (clients stay).
  void stop_accepting() { clients_->stop_accepting(); }

  std::size_t client_count() const noexcept { return clients_->client_count(); }
  /// Records taken from and written to clients' rings so far: what tells the
  /// idle strategy that an application is active (worth a spin).
  std::uint64_t client_records() const noexcept {
    return clients_->stats().records_in + clients_->stats().records_out;
  }
  /// The client host's, the router's and every service's counter groups.
  void counters(CounterGroups& out) const {
    clients_->counters(out);
    router_->counters(out);
  }
  /// Every service's part of locabusctl status ("monitor": {...}).
  void status(nlohmann::json& out) const { router_->status(out); }
  /// The services' Prometheus families beyond the counter registry: this
  /// node's (cluster false) or every node's the services know (cluster true).
  void exposition(bool cluster, std::string& out) const { router_->exposition(cluster, out); }
  /// LocaMonitor's service (its table, for tests and the exporter).
  const MonitorService& monitor() const noexcept { return *monitor_; }
  /// Those groups as locabusctl counters --json shows them ("api",
  /// "locasock", "endpoints", ...).
  nlohmann::json counters_json() const {
    CounterGroups g;
    counters(g);
    return ::locabus::counters_json(g);
  }

 private:
  EventLoop loop_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<ClientHost> clients_;
  MonitorService* monitor_ = nullptr;  // owned by the router
};

}  // namespace locabus::daemon
