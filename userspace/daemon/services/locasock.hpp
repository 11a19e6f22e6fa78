// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Locasock behind the service seam: sockets bound to ports, datagrams of
// up to 64 KB cut into LOCABUS_P_LOCASOCK fragments (userspace/locasock
// does the cutting and reassembly; this adapter binds ports, moves
// datagrams between sockets and the router, and tells senders about
// datagrams that will not be delivered). Flow control is per destination
// port. docs/API.md "Sockets", docs/LOCASOCK.md.
#pragma once

#include "common/counters.hpp"

#include <unordered_map>

#include "daemon/service.hpp"
#include "daemon/services/port_bus.hpp"
#include "locasock/locasock.hpp"

namespace locabus::daemon {

#define LOCABUS_SOCKET_COUNTERS(X)                                                   \
  X(datagrams_in, "datagrams sockets sent (all fragments accepted)")                 \
  X(datagrams_out, "datagrams delivered to sockets")                                 \
  X(no_port, "unicast datagrams for a port nobody bound (refused to the sender)")    \
  X(broadcast_unheard, "broadcast datagrams for a port nobody bound here (ignored)") \
  X(incomplete, "partial datagrams dropped, their senders told")

struct SocketCounters {
  LOCABUS_COUNTER_FIELDS(SocketCounters, LOCABUS_SOCKET_COUNTERS, ::locabus::CounterKind::counter)
};

class LocasockService final : public Service {
 public:
  LocasockService(ServiceHost& host, const locasock::ServiceConfig& config = {});

  std::string_view name() const noexcept override { return "locasock"; }
  std::vector<std::uint8_t> protocols() const override { return {LOCABUS_P_LOCASOCK}; }
  std::uint16_t port_of(std::span<const std::byte> payload) const override;
  bool wants(const nlohmann::json& open) const override { return open.contains("port"); }
  OpenResult open(ClientId client, const nlohmann::json& request) override;
  void unbind(ClientId client) override;
  void close(ClientId client) override;
  nlohmann::json describe(ClientId client) const override;
  RecordResult on_record(ClientId client, std::uint16_t type, std::uint16_t aux,
                         std::span<const std::byte> payload, std::uint64_t message) override;
  std::optional<ClientId> reader_of(StreamKey key) const override;
  void on_message(const Inbound& m) override;
  void on_event(const engine::Event& e) override;
  int do_work() override;
  std::optional<engine::Nanos> next_deadline() const override { return sock_.next_deadline(); }
  void counters(CounterGroups& out) const override;

 private:
  ServiceHost& host_;
  PortBus bus_;
  locasock::Service sock_;
  std::unordered_map<ClientId, std::uint16_t> ports_;    // client -> its port
  std::unordered_map<std::uint16_t, ClientId> by_port_;  // bound ports
  unsigned next_ephemeral_ = 0;                          // offset of the next ephemeral port to try
  SocketCounters counters_;
};

}  // namespace locabus::daemon
