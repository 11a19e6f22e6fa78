// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon/services/locasock.hpp"

#include <bit>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <locabus/wire.h>

#include "api/control.hpp"
#include "api/shm.hpp"
#include "daemon/request_fields.hpp"
#include "locabus/wire.hpp"

namespace locabus::daemon {

namespace {
StreamTag tag_of(std::uint16_t node, std::uint16_t dport, const locasock::Position& pos) {
  return StreamTag{node, stream_key(LOCABUS_P_LOCASOCK, dport), pos.gen, pos.first, pos.count};
}
}  // namespace

// ---- the service --------------------------------------------------------------------

LocasockService::LocasockService(ServiceHost& host, const locasock::ServiceConfig& config)
    : host_(host), bus_(host, LOCABUS_P_LOCASOCK), sock_(bus_, host.clock(), config) {
  // Fragments that will never make a datagram: their sender hears of it.
  sock_.set_on_drop([this](const locasock::Dropped& d) {
    if (d.broadcast || d.pos.count == 0) return;
    ++counters_.incomplete;
    host_.refuse(tag_of(d.node, d.dport, d.pos), LOCABUS_REFUSE_INCOMPLETE);
  });
}

std::uint16_t LocasockService::port_of(std::span<const std::byte> payload) const {
  if (payload.size() < LOCASOCK_HDR_LEN) return 0;
  return wire::LocasockHeader::read(payload).dport();
}

// "open" with a "port": a Locasock socket (docs/API.md, "Sockets").
OpenResult LocasockService::open(ClientId client, const nlohmann::json& req) {
  OpenResult r;
  auto refuse = [&](int err, std::string what, std::string hint) {
    r.refused = OpenRefused{err, std::move(what), std::move(hint)};
    return r;
  };
  if (req.contains("proto") && int_field(req, "proto", -1) != LOCABUS_P_LOCASOCK)
    return refuse(EINVAL, "a socket is opened with a port and no protocol (or protocol 1, Locasock)",
                  "see docs/API.md for the open request");
  const std::int64_t asked = int_field(req, "port", -1);
  if (asked < 0 || asked > 65535)
    return refuse(EINVAL, fmt::format("port {} is not a port", asked),
                  "use 1..65535, or 0 for an ephemeral port");
  if (api::SharedRegion::max_payload_for(host_.ring_bytes()) < api::kMaxDatagramRecord)
    return refuse(EMSGSIZE,
                  fmt::format("this daemon's rings ({} bytes) are too small for {}-byte datagrams",
                              host_.ring_bytes(), api::kMaxDatagram),
                  fmt::format("set ring_bytes to at least {} in locabusd's configuration",
                              std::bit_ceil(4 * (api::kMaxDatagramRecord + sizeof(api::RecordHeader)))));
  auto port = static_cast<std::uint16_t>(asked);
  if (port == 0) {
    // The next free one after the last one given, so that a port just
    // closed is not handed out again at once.
    constexpr unsigned range = api::kEphemeralPortLast - api::kEphemeralPortFirst + 1;
    for (unsigned i = 0; i < range && port == 0; ++i) {
      const auto candidate =
          static_cast<std::uint16_t>(api::kEphemeralPortFirst + (next_ephemeral_ + i) % range);
      if (!by_port_.contains(candidate)) {
        port = candidate;
        next_ephemeral_ = (next_ephemeral_ + i + 1) % range;
      }
    }
    if (port == 0)
      return refuse(EADDRINUSE,
                    fmt::format("no free ephemeral port: all of {}..{} are bound", api::kEphemeralPortFirst,
                                api::kEphemeralPortLast),
                    "close sockets, or bind an explicit port");
  } else if (auto it = by_port_.find(port); it != by_port_.end()) {
    return refuse(EADDRINUSE, fmt::format("port {} is already bound by {}", port, host_.who(it->second)),
                  "close that socket, use another port, or 0 for an ephemeral one");
  }
  ports_[client] = port;
  by_port_[port] = client;
  r.reply = {{"port", port}, {"max_datagram", api::kMaxDatagram}};
  r.what = fmt::format("socket port {}", port);
  return r;
}

void LocasockService::unbind(ClientId client) {
  auto it = ports_.find(client);
  if (it == ports_.end()) return;
  if (auto b = by_port_.find(it->second); b != by_port_.end() && b->second == client) by_port_.erase(b);
}

void LocasockService::close(ClientId client) {
  unbind(client);
  ports_.erase(client);
}

nlohmann::json LocasockService::describe(ClientId client) const {
  auto it = ports_.find(client);
  return it == ports_.end() ? nlohmann::json::object() : nlohmann::json{{"port", it->second}};
}

RecordResult LocasockService::on_record(ClientId client, std::uint16_t type, std::uint16_t,
                                        std::span<const std::byte> payload, std::uint64_t message) {
  auto it = ports_.find(client);
  if (it == ports_.end() || type != api::kRecordDatagramSend ||
      payload.size() < sizeof(api::DatagramHeader) || payload.size() > api::kMaxDatagramRecord)
    return RecordResult::broken("a record that is not a datagram of at most 65536 bytes");
  api::DatagramHeader h;
  std::memcpy(&h, payload.data(), sizeof h);  // read once: the client can still write it
  bus_.port = h.port;
  bus_.origin = Origin{client, message};
  // Locasock copies each fragment before it goes to the engine.
  const engine::SendStatus st = sock_.send(h.node, it->second, h.port, payload.subspan(sizeof h));
  if (st == engine::SendStatus::would_block) return RecordResult::blocked();
  if (st != engine::SendStatus::ok) return RecordResult::refusal(h.node, st);
  ++counters_.datagrams_in;
  return RecordResult::ok();
}

std::optional<ClientId> LocasockService::reader_of(StreamKey key) const {
  auto it = by_port_.find(stream_port(key));
  return it == by_port_.end() ? std::nullopt : std::optional<ClientId>(it->second);
}

void LocasockService::on_message(const Inbound& m) {
  const engine::Message em{m.node, m.proto, m.payload, m.broadcast};
  sock_.on_message(
      em, locasock::Position{m.tag.gen, m.tag.first, m.tag.count}, [&](const locasock::Datagram& d) {
        const StreamTag tag = tag_of(d.node, d.dport, d.pos);
        auto it = by_port_.find(d.dport);
        if (it == by_port_.end()) {
          if (d.broadcast) {
            ++counters_.broadcast_unheard;  // a broadcast reaches whoever listens
          } else {
            ++counters_.no_port;
            host_.refuse(tag, LOCABUS_REFUSE_NO_ENDPOINT);
          }
          return;
        }
        ++counters_.datagrams_out;
        const api::DatagramHeader h{d.node, d.sport, d.broadcast ? api::kDatagramBroadcast : std::uint16_t{0},
                                    0};
        host_.deliver(it->second, api::kRecordDatagram, 0, std::as_bytes(std::span(&h, 1)), d.data, tag);
      });
}

void LocasockService::on_event(const engine::Event& e) {
  // What a node that died, left or restarted had sent of a datagram will
  // never be completed.
  if (e.kind == engine::EventKind::dead || e.kind == engine::EventKind::left ||
      e.kind == engine::EventKind::restarted)
    sock_.drop_node(e.node);
}

int LocasockService::do_work() {
  // Reassembly timeouts: the daemon's idle strategy wakes up for them (next_deadline()).
  if (const auto d = sock_.next_deadline(); d && host_.clock().now() >= *d)
    return static_cast<int>(sock_.expire());
  return 0;
}

void LocasockService::counters(CounterGroups& out) const {
  static constexpr CounterField kSockets{"sockets", "sockets bound", CounterKind::gauge};
  static constexpr CounterField kBytes{"reassembly_bytes", "bytes held by partial datagrams",
                                       CounterKind::gauge};
  static constexpr CounterField kPartials{"partial_datagrams", "datagrams being reassembled",
                                          CounterKind::gauge};
  out.emplace_back("locasock", "the Locasock service: sockets, datagrams, fragments, reassembly")
      .add(kSockets, by_port_.size())
      .add(sock_.stats())
      .add(counters_)
      .add(kBytes, sock_.reassembly_bytes())
      .add(kPartials, sock_.partial_datagrams());
}

}  // namespace locabus::daemon
