// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon/router.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <locabus/wire.h>

#include "common/error.hpp"
#include "daemon/client_host.hpp"

namespace locabus::daemon {

namespace {

constexpr std::size_t kEngineBatch = 256;  // messages taken from the engine per cycle
// Broadcasts a reader may get beyond its window: what a sender may have
// queued before our HOLD reached it (the engine's default broadcast_buffer).
constexpr std::size_t kBroadcastSlack = 4096;

FlowConfig flow_config(const Config& cfg) {
  FlowConfig f;
  f.window = cfg.endpoint_window;
  return f;
}

// What a connection's end means for the messages its peer's daemon had not
// confirmed yet (locabus_failure).
std::uint8_t reset_failure(engine::Failure f) {
  return f == engine::Failure::none ? std::uint8_t{LOCABUS_FAIL_CONNECTION_CLOSED}
                                    : static_cast<std::uint8_t>(f);
}

}  // namespace

Router::Router(const Config& cfg, engine::Engine& engine, const engine::Clock& clock, EventLoop& loop)
    : cfg_(cfg), engine_(engine), clock_(clock), loop_(loop), flow_(clock, flow_config(cfg)) {}

Router::~Router() = default;

void Router::add(std::unique_ptr<Service> service) {
  for (const std::uint8_t p : service->protocols()) {
    if (p == LOCABUS_P_CONTROL || p == LOCABUS_P_FLOW)
      throw Error(fmt::format("service {} claims protocol {}, which the daemon keeps", service->name(), p),
                  EINVAL);
    if (by_proto_[p])
      throw Error(
          fmt::format("services {} and {} both claim protocol {}", by_proto_[p]->name(), service->name(), p),
          EADDRINUSE);
  }
  for (const std::uint8_t p : service->protocols()) by_proto_[p] = service.get();
  services_.push_back(std::move(service));
}

Service* Router::service_for(const nlohmann::json& open) const {
  for (const auto& s : services_)
    if (s->wants(open)) return s.get();
  return nullptr;
}

// ---- sending ------------------------------------------------------------------------

engine::SendStatus Router::send_flow(std::uint16_t node, std::span<const std::byte> payload) {
  return engine_.send(node, LOCABUS_P_FLOW, payload).status;
}

engine::SendStatus Router::can_send(std::uint16_t node, StreamKey key, std::size_t messages) {
  // One more for the OPEN a new generation starts with (harmless if not needed).
  const auto st = engine_.can_send(node, messages + 1);
  if (st != engine::SendStatus::ok) return st;
  if (!flow_.has_credit(node, key, messages)) {
    flow_.blocked();
    return engine::SendStatus::would_block;
  }
  return st;
}

engine::SendResult Router::send(std::uint16_t node, StreamKey key, std::span<const std::byte> payload,
                                Origin origin) {
  if (node == engine_.node_id() || node == LOCABUS_NODE_BROADCAST)
    return {engine::SendStatus::invalid_node, 0};
  if (!flow_.has_credit(node, key, 1)) {
    flow_.blocked();
    return {engine::SendStatus::would_block, 0};
  }
  const auto opened =
      flow_.ensure_open(node, [&](std::uint16_t n, std::span<const std::byte> p) { return send_flow(n, p); });
  if (opened != engine::SendStatus::ok) return {opened, 0};
  const engine::SendResult r = engine_.send(node, stream_proto(key), payload);
  if (r) flow_.sent(node, key, origin, r.message_id);
  return r;
}

engine::SendStatus Router::can_broadcast(StreamKey key, std::size_t messages) {
  if (flow_.broadcast_held(key)) {
    flow_.broadcast_blocked();
    return engine::SendStatus::would_block;
  }
  return engine_.can_broadcast(messages);
}

engine::SendResult Router::broadcast(StreamKey key, std::span<const std::byte> payload) {
  if (flow_.broadcast_held(key)) {
    flow_.broadcast_blocked();
    return {engine::SendStatus::would_block, 0};
  }
  return engine_.broadcast(stream_proto(key), payload);
}

void Router::fail(const ClientFailure& f) {
  if (f.client != 0) {
    if (clients_) clients_->failed(f);
    return;
  }
  for (const auto& s : services_) s->on_failure(f);
}

// ---- receiving ----------------------------------------------------------------------

void Router::deliver(ClientId client, std::uint16_t type, std::uint16_t aux, std::span<const std::byte> head,
                     std::span<const std::byte> body, const StreamTag& tag) {
  if (!clients_) {
    refuse(tag, LOCABUS_REFUSE_CLOSED);
    return;
  }
  clients_->deliver(client, type, aux, head, body, tag, delivering_broadcast_);
}

std::size_t Router::broadcast_backlog(ClientId client) const {
  return clients_ ? clients_->broadcast_backlog(client) : 0;
}

std::size_t Router::backlog(ClientId client) const { return clients_ ? clients_->backlog(client) : 0; }

std::string Router::who(ClientId client) const {
  return clients_ ? clients_->who(client) : fmt::format("client {}", client);
}

void Router::unpark() {
  if (engine_.parked()) engine_.unpark();
  // A reader back under half its window: its broadcasters may go on.
  for (const auto& [node, key] : flow_.holding()) {
    Service* s = by_proto_[stream_proto(key)];
    const auto reader = s ? s->reader_of(key) : std::nullopt;
    if (!reader || broadcast_backlog(*reader) <= window() / 2) flow_.release(node, key);
  }
}

int Router::do_work() {
  auto on_fail = [&](const ClientFailure& f) { fail(f); };
  // Always drain the engine: a reader that does not keep up holds only its
  // own streams (flow control), never the connection.
  const std::size_t n = engine_.receive_or_park(kEngineBatch, [&](const engine::Message& m) -> bool {
    if (m.proto == LOCABUS_P_FLOW) {
      ++counters_.flow_messages;
      if (!m.broadcast) flow_.on_message(m.node, m.payload, on_fail);
      return true;
    }
    Service* s = by_proto_[m.proto];
    if (s && m.broadcast) {
      // Broadcasts have no credit: a reader whose backlog reached its window
      // asks the sender to hold that key (its other broadcasts go on). What
      // the sender had queued before the HOLD still comes (at most its
      // broadcast queue); beyond that (a sender that does not hold) the
      // sender's whole stream is parked here: back-pressure, never loss.
      const StreamKey key = stream_key(m.proto, s->port_of(m.payload));
      if (const auto reader = s->reader_of(key)) {
        const std::size_t backlog = broadcast_backlog(*reader);
        if (backlog >= window() + kBroadcastSlack) {
          ++counters_.parked;
          return false;
        }
        if (backlog >= window()) flow_.hold(m.node, key);
      }
    }
    ++counters_.messages_in;
    Inbound in{m.node, m.proto, m.broadcast, m.payload, {}};
    if (!m.broadcast) {
      bool over = false;
      in.tag = flow_.arrived(m.node, stream_key(m.proto, s ? s->port_of(m.payload) : 0), over);
      if (over) {
        flow_.refuse(in.tag, LOCABUS_REFUSE_OVER_CREDIT);
        return true;
      }
    }
    if (!s) {
      ++counters_.no_service;
      flow_.refuse(in.tag, LOCABUS_REFUSE_NO_ENDPOINT);
      return true;
    }
    delivering_broadcast_ = m.broadcast;
    s->on_message(in);
    delivering_broadcast_ = false;
    return true;
  });
  int work = static_cast<int>(n);
  work += flow_.flush([&](std::uint16_t node, std::span<const std::byte> p) { return send_flow(node, p); });
  for (const auto& s : services_) work += s->do_work();
  return work;
}

std::optional<engine::Nanos> Router::next_deadline() const {
  std::optional<engine::Nanos> next = flow_.next_deadline();
  for (const auto& s : services_)
    if (auto d = s->next_deadline(); d && (!next || *d < *next)) next = d;
  return next;
}

// ---- events -------------------------------------------------------------------------

void Router::on_event(const engine::Event& e) {
  using engine::EventKind;
  switch (e.kind) {
    case EventKind::send_failed:
      flow_.on_send_failed(e.node, e.first_message, e.count, static_cast<std::uint8_t>(e.failure),
                           [&](const ClientFailure& f) { fail(f); });
      break;
    case EventKind::disconnected:
    case EventKind::dead:
    case EventKind::left:
    case EventKind::restarted: {
      // The first reason seen in the batch is the most precise one (the
      // connection's own, then the member's).
      const std::uint8_t why = e.kind == EventKind::disconnected ? reset_failure(e.failure)
                               : e.kind == EventKind::dead       ? std::uint8_t{LOCABUS_FAIL_PEER_DEAD}
                               : e.kind == EventKind::left       ? std::uint8_t{LOCABUS_FAIL_PEER_LEFT}
                                                                 : std::uint8_t{LOCABUS_FAIL_PEER_RESTARTED};
      resets_.try_emplace(e.node, why);
      break;
    }
    default: break;
  }
  for (const auto& s : services_) s->on_event(e);
  if (clients_) clients_->on_event(e);
}

void Router::after_events() {
  for (const auto& [node, why] : resets_) flow_.on_reset(node, why, [&](const ClientFailure& f) { fail(f); });
  resets_.clear();
}

// ---- counters -----------------------------------------------------------------------

std::size_t Router::client_count() const noexcept { return clients_ ? clients_->client_count() : 0; }

std::optional<nlohmann::json> Router::control(const std::string& op, const nlohmann::json& request,
                                              ClientId client) {
  for (const auto& s : services_)
    if (auto reply = s->control(op, request, client)) return reply;
  return std::nullopt;
}

void Router::status(nlohmann::json& out) const {
  for (const auto& s : services_) s->status(out);
}

void Router::exposition(bool cluster, std::string& out) const {
  for (const auto& s : services_) s->exposition(cluster, out);
}

void Router::counters(CounterGroups& out) const {
  static constexpr CounterField kParked{"parked_streams", "broadcast streams parked now", CounterKind::gauge};
  out.emplace_back("api.router", "the router: engine messages to services by protocol id")
      .add(counters_)
      .add(kParked, engine_.parked());
  static constexpr CounterField kWindow{"window", "endpoint_window: credit per (peer, endpoint) stream",
                                        CounterKind::gauge};
  static constexpr CounterField kStreams{"streams", "flow-controlled streams with state, both ways",
                                         CounterKind::gauge};
  static constexpr CounterField kUnconfirmed{
      "unconfirmed", "messages sent and not yet confirmed by their receiver", CounterKind::gauge};
  static constexpr CounterField kReceiverEntries{
      "receiver_entries",
      "entries the receiving side keeps (streams, ranges consumed out of order, refusals)",
      CounterKind::gauge};
  out.emplace_back("api.router.flow", "endpoint flow control (docs/PROTOCOL.md)")
      .add(flow_.counters())
      .add(kWindow, flow_.config().window)
      .add(kStreams, flow_.streams())
      .add(kUnconfirmed, flow_.unconfirmed())
      .add(kReceiverEntries, flow_.receiver_entries());
  for (const auto& s : services_) s->counters(out);
}

}  // namespace locabus::daemon
