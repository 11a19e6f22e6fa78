// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "locasock/locasock.hpp"

#include <algorithm>
#include <cstring>

#include <locabus/wire.hpp>

#include "common/error.hpp"

namespace locabus::locasock {
namespace {

using engine::SendStatus;

/// A partial whose ident its stream has moved this far past can only be
/// met again by a new datagram (the ident wrapped): half the ident space.
constexpr std::uint64_t kStaleDistance = 0x8000;

constexpr std::uint64_t make_key(std::uint16_t node, bool broadcast, std::uint16_t sport,
                                 std::uint16_t ident) noexcept {
  return (std::uint64_t{node} << 33) | (std::uint64_t{broadcast} << 32) | (std::uint64_t{sport} << 16) |
         ident;
}
constexpr std::uint32_t source_key(std::uint16_t node, bool broadcast) noexcept {
  return (std::uint32_t{node} << 1) | std::uint32_t{broadcast};
}
constexpr std::uint16_t key_node(std::uint64_t key) noexcept { return static_cast<std::uint16_t>(key >> 33); }
constexpr bool key_broadcast(std::uint64_t key) noexcept { return ((key >> 32) & 1) != 0; }
constexpr std::uint32_t key_source(std::uint64_t key) noexcept {
  return static_cast<std::uint32_t>(key >> 32);
}

}  // namespace

std::size_t fragments_for(std::size_t bytes) noexcept {
  if (bytes == 0) return 1;
  return bytes / kFragPayload + (bytes % kFragPayload != 0 ? 1 : 0);
}

void ServiceConfig::validate() const {
  auto bad = [](const std::string& what) {
    throw Error("invalid Locasock configuration: " + what, 0, "fix the setting and start again");
  };
  if (reassembly_timeout.count() <= 0) bad("reassembly_timeout must be positive");
  if (reassembly_memory < kMaxDatagram) {
    bad("reassembly_memory is " + std::to_string(reassembly_memory) +
        " bytes; it must hold one largest datagram (" + std::to_string(kMaxDatagram) + " bytes)");
  }
}

Service::Service(Bus& bus, const engine::Clock& clock, const ServiceConfig& config)
    : bus_(bus), clock_(clock), config_(config) {
  config_.validate();
}

SendStatus Service::send(std::uint16_t node, std::uint16_t sport, std::uint16_t dport,
                         std::span<const std::byte> data) {
  if (data.size() > kMaxDatagram) {
    ++stats_.send_refused;
    return SendStatus::too_large;
  }
  const std::size_t n = fragments_for(data.size());
  const bool broadcast = node == LOCABUS_NODE_BROADCAST;
  // All or nothing: the engine takes each message or refuses it, so ask
  // first whether it would take every fragment.
  const SendStatus can = broadcast ? bus_.can_broadcast(n) : bus_.can_send(node, n);
  if (can != SendStatus::ok) {
    ++stats_.send_refused;
    return can;
  }

  wire::LocasockHeader h;
  h.set_sport(sport).set_dport(dport).set_ident(next_ident_++).set_nfrags(static_cast<std::uint8_t>(n));
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t offset = i * kFragPayload;
    const std::size_t len = std::min(kFragPayload, data.size() - offset);
    h.set_frag(static_cast<std::uint8_t>(i));
    h.write(frame_);
    if (len != 0) std::memcpy(frame_.data() + kHeaderLen, data.data() + offset, len);
    const std::span<const std::byte> payload(frame_.data(), kHeaderLen + len);
    const engine::SendResult r =
        broadcast ? bus_.broadcast(config_.proto, payload) : bus_.send(node, config_.proto, payload);
    if (!r) {
      // can_send() promised room; a bus that breaks the promise leaves a
      // partial datagram at the receivers, which they time out.
      if (i == 0) {
        ++stats_.send_refused;
      } else {
        ++stats_.send_incomplete;
      }
      return r.status;
    }
    ++stats_.fragments_sent;
  }
  ++stats_.datagrams_sent;
  return SendStatus::ok;
}

void Service::advance(Source& s, std::uint16_t ident) noexcept {
  // Idents of one sender only move forward; a jump of up to half the space
  // is forward (serial-number arithmetic), anything else is an older one.
  const auto dist = static_cast<std::uint16_t>(ident - s.newest);
  if (dist != 0 && dist <= kStaleDistance) {
    s.newest = ident;
    s.travel += dist;
  }
}

void Service::on_message(const engine::Message& m, Position pos, FunctionRef<void(const Datagram&)> deliver) {
  ++stats_.fragments_received;
  auto malformed = [&](std::uint16_t dport) {
    ++stats_.malformed;
    if (on_drop_ && pos.count) on_drop_(Dropped{m.node, dport, m.broadcast, pos});
  };
  if (m.proto != config_.proto || m.payload.size() < kHeaderLen) return malformed(0);
  const wire::LocasockHeader h = wire::LocasockHeader::read(m.payload);
  const std::span<const std::byte> body = m.payload.subspan(kHeaderLen);
  const std::size_t nfrags = h.nfrags();
  const std::size_t frag = h.frag();
  const bool last = frag + 1 == nfrags;
  // Only what a sender produces: full fragments but the last, and a last
  // one that is non-empty (unless it is the only one) and keeps the
  // datagram within 64 KB, so that nfrags == fragments_for(size).
  const bool valid =
      nfrags >= 1 && nfrags <= kMaxFrags && frag < nfrags && body.size() <= kFragPayload &&
      (last ? nfrags == 1 || (!body.empty() && (nfrags - 1) * kFragPayload + body.size() <= kMaxDatagram)
            : body.size() == kFragPayload);
  if (!valid) return malformed(h.dport());

  const std::uint16_t ident = h.ident();
  Source* source = nullptr;
  if (!sources_.empty()) {
    if (auto s = sources_.find(source_key(m.node, m.broadcast)); s != sources_.end()) {
      source = &s->second;
      advance(*source, ident);
    }
  }

  const Key key = make_key(m.node, m.broadcast, h.sport(), ident);
  auto it = source ? partials_.find(key) : partials_.end();
  if (it != partials_.end()) {
    const Partial& p = it->second;
    // The same key for another datagram: its ident wrapped, or the old one
    // will never complete (its sender restarted or died mid-datagram).
    bool stale = source->travel - p.position >= kStaleDistance || p.nfrags != nfrags || p.dport != h.dport();
    if (!stale && (p.have >> frag & 1) != 0) {
      const bool same = (!last || body.size() == p.last_len) &&
                        std::memcmp(p.data.get() + frag * kFragPayload, body.data(), body.size()) == 0;
      if (same) {
        ++stats_.duplicates;
        it->second.pos.count += pos.count;  // consumed with the datagram
        return;
      }
      stale = true;
    }
    if (stale) {
      ++stats_.reassembly_replaced;
      drop(it);
      it = partials_.end();
    }
  }

  if (it == partials_.end()) {
    if (nfrags == 1) {
      ++stats_.datagrams_delivered;
      deliver(Datagram{m.node, h.sport(), h.dport(), m.broadcast, body, pos});
      return;
    }
    // Allocate what the datagram can need: exact once the last fragment
    // tells its size, else nfrags full fragments (at most 64 KB).
    const std::size_t capacity =
        last ? (nfrags - 1) * kFragPayload + body.size() : std::min(nfrags * kFragPayload, kMaxDatagram);
    make_room(capacity);
    // Look the stream up again: make_room() or the replacement above may
    // have erased its entry along with its last partial.
    auto [s, fresh] = sources_.try_emplace(source_key(m.node, m.broadcast));
    source = &s->second;
    if (fresh) source->newest = ident;
    Partial p;
    p.data = std::make_unique_for_overwrite<std::byte[]>(capacity);
    p.capacity = capacity;
    p.first_at = clock_.now();
    p.position = source->travel - static_cast<std::uint16_t>(source->newest - ident);
    p.source = source;
    p.dport = h.dport();
    p.nfrags = static_cast<std::uint8_t>(nfrags);
    p.pos = Position{pos.gen, pos.first, 0};
    it = partials_.emplace(key, std::move(p)).first;
    it->second.age = age_.insert(age_.end(), key);
    ++source->partials;
    held_ += capacity;
  }

  Partial& p = it->second;
  std::memcpy(p.data.get() + frag * kFragPayload, body.data(), body.size());
  p.have |= std::uint64_t{1} << frag;
  ++p.count;
  p.pos.count += pos.count;
  if (last) p.last_len = static_cast<std::uint16_t>(body.size());
  if (p.count < p.nfrags) return;

  // Complete: take the buffer out first, so that the callback may re-enter.
  const std::size_t size = (nfrags - 1) * kFragPayload + p.last_len;
  const std::uint16_t dport = p.dport;
  const Position done = p.pos;
  const std::unique_ptr<std::byte[]> data = std::move(p.data);
  remove(it);
  ++stats_.datagrams_delivered;
  deliver(
      Datagram{m.node, h.sport(), dport, m.broadcast, std::span<const std::byte>(data.get(), size), done});
}

std::unordered_map<Service::Key, Service::Partial>::iterator Service::remove(
    std::unordered_map<Key, Partial>::iterator it) {
  Partial& p = it->second;
  held_ -= p.capacity;
  age_.erase(p.age);
  if (--p.source->partials == 0) sources_.erase(key_source(it->first));
  return partials_.erase(it);
}

std::unordered_map<Service::Key, Service::Partial>::iterator Service::drop(
    std::unordered_map<Key, Partial>::iterator it) {
  const Dropped d{key_node(it->first), it->second.dport, key_broadcast(it->first), it->second.pos};
  auto next = remove(it);
  if (on_drop_ && d.pos.count) on_drop_(d);
  return next;
}

void Service::make_room(std::size_t bytes) {
  // validate() keeps reassembly_memory >= kMaxDatagram >= bytes, so this ends.
  while (held_ + bytes > config_.reassembly_memory && !age_.empty()) {
    drop(partials_.find(age_.front()));
    ++stats_.reassembly_evicted;
  }
}

std::size_t Service::expire() {
  const engine::Nanos now = clock_.now();
  std::size_t n = 0;
  while (!age_.empty()) {
    const auto it = partials_.find(age_.front());
    if (it->second.first_at + config_.reassembly_timeout > now) break;
    drop(it);
    ++n;
  }
  stats_.reassembly_timeouts += n;
  return n;
}

std::optional<engine::Nanos> Service::next_deadline() const {
  if (age_.empty()) return std::nullopt;
  return partials_.find(age_.front())->second.first_at + config_.reassembly_timeout;
}

std::size_t Service::drop_node(std::uint16_t node) {
  std::size_t n = 0;
  for (auto it = partials_.begin(); it != partials_.end();) {
    if (key_node(it->first) == node) {
      it = drop(it);
      ++n;
    } else {
      ++it;
    }
  }
  stats_.reassembly_dropped += n;
  return n;
}

std::string describe(SendStatus status, std::uint16_t node) {
  const bool broadcast = node == LOCABUS_NODE_BROADCAST;
  const std::string to = broadcast ? "broadcast datagram" : "datagram to node " + std::to_string(node);
  switch (status) {
    case SendStatus::ok: return to + " queued";
    case SendStatus::too_large:
      return to + " is too large: over " + std::to_string(kMaxDatagram) +
             " bytes (Locasock's maximum: split it), or more fragments of " + std::to_string(kFragPayload) +
             " bytes than the engine's send queue holds (raise send_buffer or broadcast_buffer)";
    case SendStatus::would_block:
      return to + " would block: " + (broadcast ? "the broadcast stream's" : "the node's") +
             " send queue cannot take all its fragments now; retry when it drains";
    default: break;
  }
  if (broadcast) return to + " refused: " + std::string(engine::to_string(status));
  return engine::SendResult{status, 0}.describe(node);
}

}  // namespace locabus::locasock
