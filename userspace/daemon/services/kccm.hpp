// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// KCCM behind the service seam (docs/KCCM.md, docs/PROTOCOL.md "KCCM"): a
// client opens {"kccm": space}; the node side (userspace/kccm/node.*: the
// receive and waiting queues, handlers, calls) runs behind a small host,
// and its datagrams of up to 64 KB travel as LOCABUS_P_KCCM messages cut
// and reassembled the Locasock way (locasock::Service with proto
// LOCABUS_P_KCCM, sport = dport = the space). Flow control is per space.
#pragma once

#include "common/counters.hpp"

#include "daemon/service.hpp"
#include "daemon/services/port_bus.hpp"
#include "kccm/node.hpp"
#include "locasock/locasock.hpp"

namespace locabus::daemon {

#define LOCABUS_KCCM_SERVICE_COUNTERS(X)                              \
  X(incomplete, "partial KCCM datagrams dropped, their senders told") \
  X(own_failures, "the daemon's own KCCM messages (REPLYs) the network failed")

struct KccmServiceCounters {
  LOCABUS_COUNTER_FIELDS(KccmServiceCounters, LOCABUS_KCCM_SERVICE_COUNTERS, ::locabus::CounterKind::counter)
};

class KccmService final : public Service {
 public:
  /// `instance` 0: a random instance number (tests may fix it).
  explicit KccmService(ServiceHost& host, std::uint32_t instance = 0);

  std::string_view name() const noexcept override { return "kccm"; }
  std::vector<std::uint8_t> protocols() const override { return {LOCABUS_P_KCCM}; }
  std::uint16_t port_of(std::span<const std::byte> payload) const override;
  bool wants(const nlohmann::json& open) const override { return open.contains("kccm"); }
  OpenResult open(ClientId client, const nlohmann::json& request) override;
  void unbind(ClientId client) override { node_.leave(client); }
  void close(ClientId client) override { node_.detach(client); }
  nlohmann::json describe(ClientId client) const override;
  RecordResult on_record(ClientId client, std::uint16_t type, std::uint16_t aux,
                         std::span<const std::byte> payload, std::uint64_t message) override;
  std::optional<ClientId> reader_of(StreamKey key) const override {
    return node_.client_of(stream_port(key));
  }
  void on_message(const Inbound& m) override;
  void on_failure(const ClientFailure& f) override;
  void on_event(const engine::Event& e) override;
  int do_work() override;
  std::optional<engine::Nanos> next_deadline() const override;
  void counters(CounterGroups& out) const override;

  const kccm::Node& node() const noexcept { return node_; }

 private:
  /// kccm::Host over the router and the fragmenter.
  class NodeHost final : public kccm::Host {
   public:
    explicit NodeHost(KccmService& s) : s_(s) {}
    engine::Nanos now() const noexcept override { return s_.host_.clock().now(); }
    engine::SendStatus send(std::uint16_t node, std::uint16_t space, std::span<const std::byte> frame,
                            Origin origin) override;
    engine::SendStatus broadcast(std::uint16_t space, std::span<const std::byte> frame) override;
    void deliver(kccm::ClientId client, std::uint16_t type, std::uint16_t aux,
                 std::span<const std::byte> head, std::span<const std::byte> body,
                 const StreamTag& tag) override {
      s_.host_.deliver(client, type, aux, head, body, tag);
    }
    void refuse(const StreamTag& tag, std::uint8_t reason) override { s_.host_.refuse(tag, reason); }
    void consume(const StreamTag& tag) override { s_.host_.consume(tag); }
    std::string who(kccm::ClientId client) const override { return s_.host_.who(client); }
    std::size_t backlog(kccm::ClientId client) const override { return s_.host_.backlog(client); }

   private:
    KccmService& s_;
  };

  static kccm::NodeConfig node_config(const ServiceHost& host, std::uint32_t instance);

  ServiceHost& host_;
  PortBus bus_;
  locasock::Service sock_;
  NodeHost node_host_;
  kccm::Node node_;
  KccmServiceCounters counters_;
};

}  // namespace locabus::daemon
