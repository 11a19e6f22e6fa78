// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The router: between the engine and the services. It takes every message
// the engine delivers, keeps per-endpoint flow control (flow.hpp: credit,
// refusals, failures named per client) and hands each message to the
// service that owns its protocol id. Services send through it. It is the
// ServiceHost services see (service.hpp).
#pragma once

#include "common/counters.hpp"

#include <array>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/config.hpp"
#include "daemon/flow.hpp"
#include "daemon/loop.hpp"
#include "daemon/service.hpp"
#include "engine/engine.hpp"

namespace locabus::daemon {

class ClientHost;

#define LOCABUS_ROUTER_COUNTERS(X)                                                  \
  X(messages_in, "messages taken from the engine")                                  \
  X(no_service, "messages for a protocol no service owns (unicast ones refused)")   \
  X(parked, "times a broadcast stream was parked for a reader with a full backlog") \
  X(flow_messages, "P_FLOW messages received")

struct RouterCounters {
  LOCABUS_COUNTER_FIELDS(RouterCounters, LOCABUS_ROUTER_COUNTERS, ::locabus::CounterKind::counter)
};

class Router final : public ServiceHost {
 public:
  Router(const Config& cfg, engine::Engine& engine, const engine::Clock& clock, EventLoop& loop);
  ~Router() override;
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  /// The client host, once it exists (it needs the router to exist first).
  void attach(ClientHost& clients) noexcept { clients_ = &clients; }
  /// Adds a service; its protocols must be free. Throws Error.
  void add(std::unique_ptr<Service> service);
  /// The service that answers an "open" request, if any.
  Service* service_for(const nlohmann::json& open) const;

  /// Engine events: flow control and failures first, then the services.
  void on_event(const engine::Event& e);
  /// After a batch of events: connections that ended report what they
  /// still held (a reset's send_failed came in the same batch).
  void after_events();
  /// Engine -> services, flow control messages out, the services' work.
  int do_work();
  std::optional<engine::Nanos> next_deadline() const;

  /// What a client's ring took (credit) — from the client host.
  void consumed(const StreamTag& tag) { flow_.consumed(tag); }
  /// A reader's broadcast backlog shrank: streams parked for it may go
  /// again, and nodes asked to hold for it may resume.
  void unpark();

  /// Its groups ("api.router", "api.router.flow") and every service's.
  void counters(CounterGroups& out) const;
  /// A control request no one else answers: the first service's reply, or nullopt.
  std::optional<nlohmann::json> control(const std::string& op, const nlohmann::json& request,
                                        ClientId client);
  /// Every service's part of locabusctl status.
  void status(nlohmann::json& out) const;
  /// Every service's extra Prometheus families (Service::exposition).
  void exposition(bool cluster, std::string& out) const;
  const FlowControl& flow() const noexcept { return flow_; }

  // ServiceHost
  const engine::Clock& clock() const noexcept override { return clock_; }
  std::uint16_t node_id() const noexcept override { return engine_.node_id(); }
  std::uint32_t ring_bytes() const noexcept override { return static_cast<std::uint32_t>(cfg_.ring_bytes); }
  const engine::Engine& engine() const noexcept override { return engine_; }
  std::size_t client_count() const noexcept override;
  engine::SendStatus can_send(std::uint16_t node, StreamKey key, std::size_t messages) override;
  engine::SendResult send(std::uint16_t node, StreamKey key, std::span<const std::byte> payload,
                          Origin origin) override;
  engine::SendStatus can_broadcast(StreamKey key, std::size_t messages) override;
  engine::SendResult broadcast(StreamKey key, std::span<const std::byte> payload) override;
  void deliver(ClientId client, std::uint16_t type, std::uint16_t aux, std::span<const std::byte> head,
               std::span<const std::byte> body, const StreamTag& tag) override;
  void refuse(const StreamTag& tag, std::uint8_t reason) override { flow_.refuse(tag, reason); }
  void consume(const StreamTag& tag) override { flow_.consumed(tag); }
  std::size_t broadcast_backlog(ClientId client) const override;
  std::size_t backlog(ClientId client) const override;
  std::uint32_t window() const noexcept override { return flow_.config().window; }
  std::string who(ClientId client) const override;
  void watch_fd(int fd, std::function<void(std::uint32_t)> on_ready, std::uint32_t events) override {
    loop_.watch(fd, std::move(on_ready), events);
  }
  void unwatch_fd(int fd) override { loop_.unwatch(fd); }
  void watch_child(pid_t pid, std::function<void(int)> on_exit) override {
    loop_.watch_child(pid, std::move(on_exit));
  }

 private:
  void fail(const ClientFailure& f);
  engine::SendStatus send_flow(std::uint16_t node, std::span<const std::byte> payload);

  const Config& cfg_;
  engine::Engine& engine_;
  const engine::Clock& clock_;
  EventLoop& loop_;
  ClientHost* clients_ = nullptr;
  FlowControl flow_;
  std::vector<std::unique_ptr<Service>> services_;
  std::array<Service*, 256> by_proto_{};
  std::map<std::uint16_t, std::uint8_t> resets_;  // connections that ended in this batch: why
  bool delivering_broadcast_ = false;             // the message being handed over came by broadcast
  RouterCounters counters_;
};

}  // namespace locabus::daemon
