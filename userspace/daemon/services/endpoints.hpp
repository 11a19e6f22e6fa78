// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Application endpoints (docs/API.md): a client opens protocol 16..255 and
// sends and receives whole messages of that protocol, unicast or
// broadcast; or opens no protocol, for events only (a monitor). The
// service behind liblocabus's Endpoint.
#pragma once

#include "common/counters.hpp"

#include <array>
#include <unordered_map>

#include "daemon/service.hpp"

namespace locabus::daemon {

#define LOCABUS_ENDPOINT_COUNTERS(X)                                        \
  X(messages_in, "messages clients sent (accepted by the engine)")          \
  X(messages_out, "messages delivered to endpoints")                        \
  X(no_endpoint, "unicast messages for a protocol nobody opened (refused)") \
  X(broadcast_unheard, "broadcasts for a protocol nobody opened here (ignored)")

struct EndpointCounters {
  LOCABUS_COUNTER_FIELDS(EndpointCounters, LOCABUS_ENDPOINT_COUNTERS, ::locabus::CounterKind::counter)
};

class EndpointService final : public Service {
 public:
  explicit EndpointService(ServiceHost& host) : host_(host) {}

  std::string_view name() const noexcept override { return "endpoints"; }
  std::vector<std::uint8_t> protocols() const override;
  bool wants(const nlohmann::json& open) const override;
  OpenResult open(ClientId client, const nlohmann::json& request) override;
  void unbind(ClientId client) override;
  void close(ClientId client) override;
  RecordResult on_record(ClientId client, std::uint16_t type, std::uint16_t aux,
                         std::span<const std::byte> payload, std::uint64_t message) override;
  std::optional<ClientId> reader_of(StreamKey key) const override;
  void on_message(const Inbound& m) override;
  void counters(CounterGroups& out) const override;

 private:
  struct Endpoint {
    std::uint8_t proto = LOCABUS_PROTO_NONE;  // NONE: a monitor (events only)
    bool broadcast_records = false;           // understands kRecordBroadcastMessage
  };

  ServiceHost& host_;
  std::unordered_map<ClientId, Endpoint> endpoints_;
  std::array<ClientId, 256> by_proto_{};  // 0: nobody
  EndpointCounters counters_;
};

}  // namespace locabus::daemon
