// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon/services/kccm.hpp"

#include <bit>

#include <fmt/format.h>

#include <locabus/wire.h>

#include "api/control.hpp"
#include "api/shm.hpp"
#include "daemon/request_fields.hpp"
#include "locabus/wire.hpp"

namespace locabus::daemon {

namespace {

StreamTag tag_of(std::uint16_t node, std::uint16_t space, const locasock::Position& pos) {
  return StreamTag{node, stream_key(LOCABUS_P_KCCM, space), pos.gen, pos.first, pos.count};
}

locasock::ServiceConfig sock_config() {
  locasock::ServiceConfig c;
  c.proto = LOCABUS_P_KCCM;
  return c;
}

}  // namespace

// ---- the node's host ------------------------------------------------------------

engine::SendStatus KccmService::NodeHost::send(std::uint16_t node, std::uint16_t space,
                                               std::span<const std::byte> frame, Origin origin) {
  s_.bus_.port = space;
  s_.bus_.origin = origin;
  return s_.sock_.send(node, space, space, frame);  // copies each fragment
}

engine::SendStatus KccmService::NodeHost::broadcast(std::uint16_t space, std::span<const std::byte> frame) {
  s_.bus_.port = space;
  s_.bus_.origin = Origin{};
  return s_.sock_.send(LOCABUS_NODE_BROADCAST, space, space, frame);
}

// ---- the service --------------------------------------------------------------------

kccm::NodeConfig KccmService::node_config(const ServiceHost& host, std::uint32_t instance) {
  kccm::NodeConfig c;
  c.node = host.node_id();
  c.instance = instance;
  c.window = host.window();
  c.max_backlog = host.window();
  return c;
}

KccmService::KccmService(ServiceHost& host, std::uint32_t instance)
    : host_(host),
      bus_(host, LOCABUS_P_KCCM),
      sock_(bus_, host.clock(), sock_config()),
      node_host_(*this),
      node_(node_host_, node_config(host, instance)) {
  // Fragments that will never make a datagram: their sender hears of it.
  sock_.set_on_drop([this](const locasock::Dropped& d) {
    if (d.broadcast || d.pos.count == 0) return;
    ++counters_.incomplete;
    host_.refuse(tag_of(d.node, d.dport, d.pos), LOCABUS_REFUSE_INCOMPLETE);
  });
}

std::uint16_t KccmService::port_of(std::span<const std::byte> payload) const {
  if (payload.size() < LOCASOCK_HDR_LEN) return 0;
  return wire::LocasockHeader::read(payload).dport();
}

// "open" with "kccm": a space (docs/API.md, "KCCM").
OpenResult KccmService::open(ClientId client, const nlohmann::json& req) {
  OpenResult r;
  auto refuse = [&](int err, std::string what, std::string hint) {
    r.refused = OpenRefused{err, std::move(what), std::move(hint)};
    return r;
  };
  if (req.contains("proto") || req.contains("port"))
    return refuse(EINVAL, "a KCCM space is opened with \"kccm\" alone (no protocol, no port)",
                  "see docs/API.md for the open request");
  const std::int64_t space = int_field(req, "kccm", -1);
  if (space < 0 || space > 65535)
    return refuse(EINVAL, fmt::format("\"kccm\": {} is not a space", req["kccm"].dump()),
                  "use a space 0..65535");
  if (api::SharedRegion::max_payload_for(host_.ring_bytes()) < api::kMaxKccmRecord)
    return refuse(EMSGSIZE,
                  fmt::format("this daemon's rings ({} bytes) are too small for {}-byte KCCM messages",
                              host_.ring_bytes(), kccm::kMaxData),
                  fmt::format("set ring_bytes to at least {} in locabusd's configuration",
                              std::bit_ceil(4 * (api::kMaxKccmRecord + sizeof(api::RecordHeader)))));
  node_.attach(client, static_cast<std::uint16_t>(space));
  r.reply = {{"space", space}, {"max_data", kccm::kMaxData}};
  r.what = fmt::format("kccm space {}", space);
  return r;
}

nlohmann::json KccmService::describe(ClientId client) const {
  const auto space = node_.space_of(client);
  return space ? nlohmann::json{{"space", *space}} : nlohmann::json::object();
}

RecordResult KccmService::on_record(ClientId client, std::uint16_t type, std::uint16_t aux,
                                    std::span<const std::byte> payload, std::uint64_t message) {
  kccm::Outcome o = node_.on_record(client, type, aux, payload, message);
  switch (o.kind) {
    case kccm::Outcome::ok: return RecordResult::ok();
    case kccm::Outcome::blocked: return RecordResult::blocked();
    case kccm::Outcome::refused: return RecordResult::refusal(o.node, o.status);
    case kccm::Outcome::broken: break;
  }
  return RecordResult::broken(std::move(o.error));
}

void KccmService::on_message(const Inbound& m) {
  const engine::Message em{m.node, m.proto, m.payload, m.broadcast};
  sock_.on_message(em, locasock::Position{m.tag.gen, m.tag.first, m.tag.count},
                   [&](const locasock::Datagram& d) {
                     node_.on_frame(d.node, d.dport, d.broadcast, d.data, tag_of(d.node, d.dport, d.pos));
                   });
}

void KccmService::on_failure(const ClientFailure& f) {
  // Only the daemon's own messages come here; the router gives every
  // service those of client 0, so they are counted, not acted on.
  ++counters_.own_failures;
  node_.reply_failed(f.count);
}

void KccmService::on_event(const engine::Event& e) {
  using engine::EventKind;
  switch (e.kind) {
    case EventKind::joined:
    case EventKind::alive:
    case EventKind::connected: node_.set_alive(e.node, true); break;
    case EventKind::restarted:
      // A new life: what it sent of a datagram, and the calls it made, are gone.
      sock_.drop_node(e.node);
      node_.forget_node(e.node);
      node_.set_alive(e.node, true);
      break;
    case EventKind::dead:
    case EventKind::left:
      sock_.drop_node(e.node);
      node_.forget_node(e.node);
      node_.set_alive(e.node, false);
      break;
    case EventKind::disconnected: node_.forget_node(e.node); break;
    default: break;
  }
}

int KccmService::do_work() {
  int work = 0;
  // Reassembly timeouts: the daemon's idle strategy wakes up for them (next_deadline()).
  if (const auto d = sock_.next_deadline(); d && host_.clock().now() >= *d)
    work += static_cast<int>(sock_.expire());
  work += node_.do_work();
  return work;
}

std::optional<engine::Nanos> KccmService::next_deadline() const {
  auto a = sock_.next_deadline();
  auto b = node_.next_deadline();
  if (!a) return b;
  if (!b) return a;
  return std::min(*a, *b);
}

void KccmService::counters(CounterGroups& out) const {
  static constexpr CounterField kSpaces{"spaces", "spaces with a client attached", CounterKind::gauge};
  static constexpr CounterField kClients{"clients", "clients attached to a space", CounterKind::gauge};
  static constexpr CounterField kQueued{"queued_messages", "messages in receive queues", CounterKind::gauge};
  static constexpr CounterField kQueuedBytes{"queued_bytes", "bytes of messages in receive queues",
                                             CounterKind::gauge};
  static constexpr CounterField kWaiters{"waiters", "receives waiting for a message", CounterKind::gauge};
  static constexpr CounterField kHandlers{"handlers", "handlers registered", CounterKind::gauge};
  static constexpr CounterField kRefs{"refs", "calls being answered by local handlers (the reference table)",
                                      CounterKind::gauge};
  static constexpr CounterField kPending{"pending_replies", "REPLYs of the daemon's own waiting for room",
                                         CounterKind::gauge};
  static constexpr CounterField kAlive{"alive_peers", "peers a call to every node goes to",
                                       CounterKind::gauge};
  out.emplace_back("kccm", "KCCM: spaces, tagged messages, handlers, calls (docs/KCCM.md)")
      .add(node_.stats())
      .add(counters_)
      .add(kSpaces, node_.spaces())
      .add(kClients, node_.clients())
      .add(kQueued, node_.queued_messages())
      .add(kQueuedBytes, node_.queued_bytes())
      .add(kWaiters, node_.waiters())
      .add(kHandlers, node_.handlers())
      .add(kRefs, node_.refs())
      .add(kPending, node_.pending_replies())
      .add(kAlive, node_.alive_peers().size());
  static constexpr CounterField kBytes{"reassembly_bytes", "bytes held by partial KCCM datagrams",
                                       CounterKind::gauge};
  static constexpr CounterField kPartials{"partial_datagrams", "KCCM datagrams being reassembled",
                                          CounterKind::gauge};
  out.emplace_back("kccm.fragments", "KCCM datagrams cut into LOCABUS_P_KCCM fragments and reassembled")
      .add(sock_.stats())
      .add(kBytes, sock_.reassembly_bytes())
      .add(kPartials, sock_.partial_datagrams());
}

}  // namespace locabus::daemon
