// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Internal to the engine: the record kept for every known node.
#pragma once

#include <bit>
#include <deque>
#include <unordered_map>

#include "engine/engine.hpp"

namespace locabus::engine {

/// A peer's broadcast stream as this node receives it.
struct BroadcastRx {
  explicit BroadcastRx(std::size_t limit) : queue(limit) {}
  struct Held {
    std::uint8_t proto = 0;
    std::vector<std::byte> data;
  };
  bool started = false;       // rcv_nxt/high mean something
  bool accepted = false;      // something was accepted since it started
  bool resync = false;        // the sender was not live for a while: check the position at its next POLL
  std::uint64_t epoch = 0;    // the sender incarnation the position belongs to
  std::uint16_t rcv_nxt = 0;  // next sequence to deliver
  std::uint16_t high = 0;     // one past the highest sequence known to exist
  std::unordered_map<std::uint16_t, Held> ahead;   // received beyond a gap
  std::unordered_map<std::uint16_t, Nanos> asked;  // missing: NAKed (by anyone) until then
  MessageRing queue;                               // in order, for receive()
  Nanos nak_at{0};                                 // the NAK timer: deadline, and its wheel entry
  Nanos nak_wheel{0};
};

struct Engine::Peer {
  Peer(std::uint16_t node_id, const wire::MacAddress& addr, std::uint32_t idx, const EngineConfig& c)
      : node(node_id),
        index(idx),
        mac(addr),
        tx(c.send_buffer),
        rx(c.receive_buffer),
        ooo(std::bit_ceil(std::size_t{c.window})),
        brx(c.broadcast_receive_buffer) {}

  std::uint16_t node;
  std::uint32_t index;  // in Engine::peers_, the timer-wheel owner id
  wire::MacAddress mac;

  // membership
  MemberState member = MemberState::joining;
  std::uint64_t epoch = 0;  // 0 = not known yet (heard only frames without one)
  Nanos last_heard{0};
  Nanos next_probe{0};
  Nanos last_reply{-1};         // when we last sent it our member list
  Nanos last_list_request{-1};  // when we last asked it for its list
  std::uint8_t probes = 0;
  bool conflict_reported = false;

  // reliable unicast
  Connection conn;
  MessageRing tx;                   // queued by send(): [snd_una, snd_una + size) in sequence space
  MessageRing rx;                   // delivered in order, waiting for receive()
  ReorderBuffer ooo;                // received ahead of a gap (selective repeat), within [rcv_nxt, rcv_edge)
  std::vector<std::uint16_t> retx;  // sequences to retransmit (their tx slots carry kQueued)
  locabus_conn_pub published{};     // what the fast path was last told (Transport::publish_conn)
  std::uint16_t prev_snd_max = 0;   // where our last connection to it ended: the next starts far away
  bool prev_valid = false;
  std::uint64_t next_message = 0;
  bool tx_ready = false;  // in Engine::tx_ready_

  // reliable broadcast
  BroadcastRx brx;                // its stream
  std::uint16_t bcast_acked = 0;  // our stream: the next sequence it confirmed
  PeerCounters counters;
};

/// This node's broadcast stream. buf holds [low, low + buf.size()): the
/// messages sent but not confirmed by every live member, then the ones not
/// sent yet, from nxt on.
struct Engine::BroadcastTx {
  BroadcastTx(std::size_t limit, std::uint16_t iss)
      : buf(limit), low(iss), nxt(iss), mask(static_cast<std::uint16_t>(std::bit_ceil(limit) - 1)) {
    repaired_at.assign(std::size_t{mask} + 1, Nanos{0});
    repair_queued.assign(std::size_t{mask} + 1, 0);
  }
  MessageRing buf;
  std::uint16_t low;
  std::uint16_t nxt;
  std::uint16_t mask;                       // repaired_at/repair_queued are indexed by seq & mask
  std::vector<Nanos> repaired_at;           // last retransmission of each held sequence (0 = none)
  std::vector<std::uint8_t> repair_queued;  // in `repairs`
  std::deque<std::uint16_t> repairs;        // NAKed sequences to send again
  std::uint16_t since_poll = 0;             // new frames since the last POLL
  Nanos next_poll{0};                       // POLL timer (0 = not armed)
  Nanos poll_backoff{0};
  std::uint16_t poll_low = 0;  // low at the last timer POLL: progress since?
  std::uint32_t rotate = 0;    // next peer index the rotating acker choice looks at
  bool poll_owed = false;      // a NAK asked for freed frames: POLL even if all is confirmed
  std::uint64_t next_message = 0;
};

}  // namespace locabus::engine
