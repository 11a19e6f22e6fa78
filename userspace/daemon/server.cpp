// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon/server.hpp"

#include "daemon/services/endpoints.hpp"
#include "daemon/services/kccm.hpp"
#include "daemon/services/locasock.hpp"
#include "daemon/services/monitor.hpp"

namespace locabus::daemon {

ApiServer::ApiServer(const Config& cfg, engine::Engine& engine, const engine::Clock& clock,
                     const Introspection& introspection, ServerHooks hooks)
    : router_(std::make_unique<Router>(cfg, engine, clock, loop_)) {
  // The services: each owns its protocol ids and the clients that open it.
  router_->add(std::make_unique<LocasockService>(*router_));
  router_->add(std::make_unique<KccmService>(*router_));
  router_->add(std::make_unique<EndpointService>(*router_));
  // Registered also when off: it answers "monitor" with ENOTSUP and takes
  // the records other nodes broadcast.
  auto monitor =
      std::make_unique<MonitorService>(*router_, cfg.monitor, cfg.run_dir, std::move(hooks.monitor_sample));
  monitor_ = monitor.get();
  router_->add(std::move(monitor));
  clients_ = std::make_unique<ClientHost>(cfg, loop_, clock, introspection, *router_);
  router_->attach(*clients_);
}

// Clients go first: closing them refuses what waited for them through the router.
ApiServer::~ApiServer() { clients_.reset(); }

int ApiServer::do_work(bool arm_sleep) {
  int work = loop_.dispatch();
  work += clients_->do_work(arm_sleep);
  work += router_->do_work();
  work += clients_->finish_pass();
  return work;
}

std::optional<engine::Nanos> ApiServer::next_deadline() const {
  auto a = clients_->next_deadline();
  auto b = router_->next_deadline();
  if (!a) return b;
  if (!b) return a;
  return std::min(*a, *b);
}

}  // namespace locabus::daemon
