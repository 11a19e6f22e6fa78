// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon/services/endpoints.hpp"

#include <fmt/format.h>

#include <locabus/wire.h>

#include "api/control.hpp"
#include "daemon/request_fields.hpp"
#include "locabus/wire.hpp"

namespace locabus::daemon {

std::vector<std::uint8_t> EndpointService::protocols() const {
  std::vector<std::uint8_t> v;
  for (int p = LOCABUS_PROTO_USER_MIN; p <= 255; ++p) v.push_back(static_cast<std::uint8_t>(p));
  return v;
}

bool EndpointService::wants(const nlohmann::json& open) const {
  return !open.contains("port") && !open.contains("kccm");
}

OpenResult EndpointService::open(ClientId client, const nlohmann::json& req) {
  OpenResult r;
  const std::int64_t proto = int_field(req, "proto", -1);
  const bool monitor = proto == LOCABUS_PROTO_NONE;
  if (monitor && !bool_field(req, "events")) {
    r.refused = OpenRefused{EINVAL, "an endpoint without a protocol exists only for events",
                            "set events, or pick a protocol"};
    return r;
  }
  if (!monitor && (proto < LOCABUS_PROTO_USER_MIN || proto > 255)) {
    r.refused =
        OpenRefused{EINVAL, fmt::format("protocol {} is not an application protocol", proto),
                    fmt::format("use {}..255; lower ids belong to Locabus services", LOCABUS_PROTO_USER_MIN)};
    return r;
  }
  if (!monitor && by_proto_[proto]) {
    r.refused = OpenRefused{
        EADDRINUSE, fmt::format("protocol {} is already open by {}", proto, host_.who(by_proto_[proto])),
        "close that endpoint or use another protocol id"};
    return r;
  }
  Endpoint ep;
  ep.proto = static_cast<std::uint8_t>(proto);
  ep.broadcast_records = bool_field(req, "broadcast_records");
  endpoints_[client] = ep;
  if (!monitor) by_proto_[proto] = client;
  r.reply = {{"proto", proto}};
  r.what = monitor ? std::string("monitor endpoint") : fmt::format("endpoint protocol {}", proto);
  r.receives = !monitor;
  return r;
}

void EndpointService::unbind(ClientId client) {
  auto it = endpoints_.find(client);
  if (it != endpoints_.end() && it->second.proto != LOCABUS_PROTO_NONE &&
      by_proto_[it->second.proto] == client)
    by_proto_[it->second.proto] = 0;
}

void EndpointService::close(ClientId client) {
  unbind(client);
  endpoints_.erase(client);
}

RecordResult EndpointService::on_record(ClientId client, std::uint16_t type, std::uint16_t aux,
                                        std::span<const std::byte> payload, std::uint64_t message) {
  auto it = endpoints_.find(client);
  if (it == endpoints_.end() || type != api::kRecordSend || payload.size() > wire::kMaxPayload ||
      it->second.proto == LOCABUS_PROTO_NONE)
    return RecordResult::broken("a record that is not a send of at most 1484 bytes");
  const std::uint8_t proto = it->second.proto;
  const std::uint16_t node = aux;
  // The engine copies the payload before send() returns.
  const engine::SendResult res = node == LOCABUS_NODE_BROADCAST
                                     ? host_.broadcast(stream_key(proto), payload)
                                     : host_.send(node, stream_key(proto), payload, Origin{client, message});
  if (res.status == engine::SendStatus::would_block) return RecordResult::blocked();
  if (!res) return RecordResult::refusal(node, res.status);
  ++counters_.messages_in;
  return RecordResult::ok();
}

std::optional<ClientId> EndpointService::reader_of(StreamKey key) const {
  const ClientId c = by_proto_[stream_proto(key)];
  return c ? std::optional<ClientId>(c) : std::nullopt;
}

void EndpointService::on_message(const Inbound& m) {
  const ClientId c = by_proto_[m.proto];
  if (!c) {
    if (m.broadcast) {
      ++counters_.broadcast_unheard;  // a broadcast reaches whoever listens
    } else {
      ++counters_.no_endpoint;
      host_.refuse(m.tag, LOCABUS_REFUSE_NO_ENDPOINT);
    }
    return;
  }
  ++counters_.messages_out;
  const bool bcast_record = m.broadcast && endpoints_[c].broadcast_records;
  host_.deliver(c, bcast_record ? api::kRecordBroadcastMessage : api::kRecordMessage, m.node, m.payload, {},
                m.tag);
}

void EndpointService::counters(CounterGroups& out) const {
  static constexpr CounterField kOpen{"open", "endpoints open (monitors included)", CounterKind::gauge};
  out.emplace_back("endpoints", "application endpoints (protocols 16..255) and monitors")
      .add(counters_)
      .add(kOpen, endpoints_.size());
}

}  // namespace locabus::daemon
