// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Locasock: reliable datagrams of up to 64 KB with ports (the paper's
// Table 2), cut into fragments that each travel as one engine message of
// LOCABUS_P_LOCASOCK. The engine already makes every message reliable,
// in order and exactly once per stream; this layer fragments on the way
// out and reassembles on the way in, with bounded memory and time.
// Single-threaded, like the engine. docs/LOCASOCK.md has the rules.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>

#include <locabus/wire.h>

#include "common/counters.hpp"
#include "common/function_ref.hpp"
#include "engine/clock.hpp"
#include "engine/engine.hpp"

namespace locabus::locasock {

inline constexpr std::size_t kMaxDatagram = LOCASOCK_MAX_DATAGRAM;  // 65536
inline constexpr std::size_t kFragPayload = LOCASOCK_FRAG_PAYLOAD;  // 1476
inline constexpr std::size_t kHeaderLen = LOCASOCK_HDR_LEN;         // 8
inline constexpr std::size_t kMaxFrags = LOCASOCK_MAX_FRAGS;        // 45

/// Fragments a datagram of `bytes` takes (a 0-byte datagram is 1 fragment).
std::size_t fragments_for(std::size_t bytes) noexcept;

/// Where fragments lie in the stream they came on, for whoever flow-controls
/// that stream (the daemon's router): opaque to Locasock, which only adds
/// up the fragments a datagram took. A datagram's fragments travel
/// back to back on one stream, so they are `count` messages from `first`.
struct Position {
  std::uint32_t gen = 0;
  std::uint64_t first = 0;
  std::uint32_t count = 0;
};

/// A received datagram; `data` is valid only during the deliver callback.
struct Datagram {
  std::uint16_t node = 0;  // the sender
  std::uint16_t sport = 0;
  std::uint16_t dport = 0;
  bool broadcast = false;  // came on the sender's broadcast stream
  std::span<const std::byte> data;
  Position pos;  // its fragments (and duplicates of them) in their stream
};

/// Fragments that will never make a datagram (malformed, or a partial
/// datagram dropped: replaced, evicted, timed out, its sender gone).
struct Dropped {
  std::uint16_t node = 0;
  std::uint16_t dport = 0;  // 0 when unknown (a malformed fragment)
  bool broadcast = false;
  Position pos;
};

/// What Locasock needs from the engine (EngineBus adapts engine::Engine;
/// tests use a fake).
class Bus {
 public:
  virtual ~Bus() = default;
  /// ok if `messages` sends to `node` would all be accepted now, else the
  /// status send() would give.
  virtual engine::SendStatus can_send(std::uint16_t node, std::size_t messages) const = 0;
  virtual engine::SendStatus can_broadcast(std::size_t messages) const = 0;
  virtual engine::SendResult send(std::uint16_t node, std::uint8_t proto,
                                  std::span<const std::byte> payload) = 0;
  virtual engine::SendResult broadcast(std::uint8_t proto, std::span<const std::byte> payload) = 0;
};

struct ServiceConfig {
  /// The engine protocol its fragments travel as: Locasock's own, or a
  /// service that frames its messages the Locasock way (KCCM).
  std::uint8_t proto = LOCABUS_P_LOCASOCK;
  /// A partial datagram is dropped this long after its first fragment arrived.
  engine::Nanos reassembly_timeout = std::chrono::seconds(5);
  /// Bytes held by partial datagrams, at most (>= kMaxDatagram). When a new
  /// partial would not fit, the oldest partials are evicted.
  std::size_t reassembly_memory = 32u << 20;
  /// Throws locabus::Error naming the bad setting.
  void validate() const;
};

/// Counters, each only ever increasing.
#define LOCABUS_LOCASOCK_STATS(X)                                                                            \
  X(datagrams_sent, "send() calls that queued every fragment")                                               \
  X(fragments_sent, "fragments the bus accepted")                                                            \
  X(send_refused, "send() calls that queued nothing (too large, would block, unknown node, ...)")            \
  X(send_incomplete, "datagrams cut short: the bus refused a fragment after can_send() said ok (a bus bug)") \
  X(fragments_received, "messages given to on_message(), malformed ones included")                           \
  X(datagrams_delivered, "datagrams handed to the deliver callback")                                         \
  X(malformed, "fragments dropped by validation (docs/LOCASOCK.md)")                                         \
  X(duplicates, "fragments identical to one already held (ignored)")                                         \
  X(reassembly_replaced, "partials replaced by a new datagram with their key")                               \
  X(reassembly_timeouts, "partials dropped by expire()")                                                     \
  X(reassembly_evicted, "partials dropped to stay within reassembly_memory")                                 \
  X(reassembly_dropped, "partials dropped by drop_node() (their sender died, left or restarted)")

struct ServiceStats {
  LOCABUS_COUNTER_FIELDS(ServiceStats, LOCABUS_LOCASOCK_STATS, ::locabus::CounterKind::counter)
};

/// The Locasock service of one node: fragments outgoing datagrams onto a
/// Bus and reassembles incoming ones.
class Service {
 public:
  /// The bus and clock must outlive the service. Throws locabus::Error if
  /// the config is invalid.
  Service(Bus& bus, const engine::Clock& clock, const ServiceConfig& config = {});
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  /// Sends one datagram to `node`, or to port `dport` on every node when
  /// node == LOCABUS_NODE_BROADCAST. All fragments are queued or none: when
  /// the bus cannot take them all now (can_send/can_broadcast), returns its
  /// status (would_block, unknown_node, ...) and queues nothing. Over
  /// kMaxDatagram: too_large.
  engine::SendStatus send(std::uint16_t node, std::uint16_t sport, std::uint16_t dport,
                          std::span<const std::byte> data);

  /// A LOCABUS_P_LOCASOCK message from the engine (m.broadcast tells the
  /// stream). Calls `deliver` for the datagram it completes, if any (the
  /// span is valid only during the call; the callback may call send()).
  void on_message(const engine::Message& m, FunctionRef<void(const Datagram&)> deliver) {
    on_message(m, Position{}, deliver);
  }
  /// The same, for a message at `pos` in its stream.
  void on_message(const engine::Message& m, Position pos, FunctionRef<void(const Datagram&)> deliver);
  /// Called for fragments that will never make a datagram, so that their
  /// sender can be told (Locasock is reliable: delivered or told).
  void set_on_drop(std::function<void(const Dropped&)> on_drop) { on_drop_ = std::move(on_drop); }

  /// Frees partial datagrams whose deadline (first fragment + timeout) has
  /// come; returns how many.
  std::size_t expire();
  /// When the oldest partial expires; nullopt if there is none.
  std::optional<engine::Nanos> next_deadline() const;
  /// Frees every partial datagram from `node` (call it when the engine
  /// reports the node dead, left or restarted); returns how many.
  std::size_t drop_node(std::uint16_t node);

  /// Bytes held by partial datagrams (<= config().reassembly_memory).
  std::size_t reassembly_bytes() const noexcept { return held_; }
  std::size_t partial_datagrams() const noexcept { return partials_.size(); }
  const ServiceStats& stats() const noexcept { return stats_; }
  const ServiceConfig& config() const noexcept { return config_; }

 private:
  using Key = std::uint64_t;        // node, stream, sport, ident
  using SourceKey = std::uint32_t;  // node, stream

  /// A sender's stream that has partials: how far its idents have moved
  /// forward, to tell a wrapped ident from the partial it collides with.
  struct Source {
    std::uint16_t newest = 0;    // the most advanced ident seen (serial order)
    std::uint64_t travel = 0;    // total forward distance of `newest`
    std::uint32_t partials = 0;  // partials of this stream (erased at 0)
  };

  /// A datagram with some of its fragments.
  struct Partial {
    std::unique_ptr<std::byte[]> data;  // `capacity` bytes, accounted in held_
    std::size_t capacity = 0;           // exact once the last fragment is held, else nfrags * 1476
    engine::Nanos first_at{0};
    std::uint64_t have = 0;      // bit i: fragment i held
    std::uint64_t position = 0;  // where the ident lies on its source's travel
    Source* source = nullptr;
    std::list<Key>::iterator age;
    std::uint16_t dport = 0;
    std::uint16_t last_len = 0;  // bytes of the last fragment, once held
    std::uint8_t nfrags = 0;
    std::uint8_t count = 0;  // fragments held
    Position pos;            // the fragments' place in their stream
  };

  static void advance(Source& s, std::uint16_t ident) noexcept;
  std::unordered_map<Key, Partial>::iterator remove(std::unordered_map<Key, Partial>::iterator it);
  /// remove(), telling on_drop_ that its fragments are lost.
  std::unordered_map<Key, Partial>::iterator drop(std::unordered_map<Key, Partial>::iterator it);
  void make_room(std::size_t bytes);

  Bus& bus_;
  const engine::Clock& clock_;
  ServiceConfig config_;
  std::uint16_t next_ident_ = 0;
  std::array<std::byte, LOCABUS_MAX_PAYLOAD> frame_{};  // the fragment being sent (header + data)

  std::unordered_map<Key, Partial> partials_;
  std::list<Key> age_;  // partials, oldest first (creation order = first-fragment order)
  std::unordered_map<SourceKey, Source> sources_;  // streams with partials: ident tracking
  std::size_t held_ = 0;
  ServiceStats stats_;
  std::function<void(const Dropped&)> on_drop_;
};

/// SendResult::describe() for a Locasock send: names the 64 KB datagram
/// limit for too_large and broadcast for node 0xFFFF.
std::string describe(engine::SendStatus status, std::uint16_t node);

}  // namespace locabus::locasock
