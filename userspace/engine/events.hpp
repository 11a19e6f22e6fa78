// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// What the engine tells its owner: membership changes, connection changes
// and sends that failed. Queued during do_work() and drained with
// Engine::poll_events(), so handlers never run inside protocol processing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "locabus/wire.hpp"

namespace locabus::engine {

/// Membership state of a peer, as seen from this node.
enum class MemberState : std::uint8_t {
  joining,  // named in another node's list, not heard directly yet
  alive,
  suspect,  // silent for suspect_after; being probed
  dead,     // silent for dead_after
  left,     // announced a clean shutdown
};
std::string_view to_string(MemberState s) noexcept;

/// Connection state (docs/ARCHITECTURE.md has the diagram).
enum class ConnState : std::uint8_t {
  closed,
  syn_sent,
  syn_received,
  established,
  fin_wait,   // we sent FIN, waiting for FIN_ACK
  close_wait  // peer sent FIN; we finish our sends, then FIN_ACK
};
std::string_view to_string(ConnState s) noexcept;

/// Why sends failed or a connection ended.
enum class Failure : std::uint8_t {
  none,
  unreachable,     // max_retransmits timeouts without an answer
  peer_dead,       // the failure detector declared the peer dead
  peer_restarted,  // the peer came back with a new boot epoch
  peer_left,       // the peer announced a clean shutdown
  peer_reset,      // the peer has no such connection (lost its state)
  closed,          // the connection was closed locally before the send went out
  shutdown,        // this engine is shutting down
  released,        // broadcast_lost: the sender had already freed them (it no longer counted us)
};
std::string_view to_string(Failure f) noexcept;
/// A sentence for logs and error messages: what happened and what to do.
std::string describe(Failure f, std::uint16_t node);

enum class EventKind : std::uint8_t {
  // membership
  joined,       // first heard from a node (or from an id that was forgotten)
  restarted,    // a member's boot epoch changed
  suspect,      // silent for suspect_after
  alive,        // heard again after suspect or dead, same epoch
  dead,         // silent for dead_after
  left,         // announced a clean shutdown
  id_conflict,  // two MAC addresses claim one node id (maybe ours)
  // connections
  connected,     // handshake completed
  disconnected,  // closed by either side (failure says why, none = clean)
  // sends
  send_failed,  // messages [first_message, first_message + count) to node failed
  // 10 is the local API's overrun (locabus.h LOCABUS_EV_OVERRUN), made by the daemon
  // broadcasts
  broadcast_lost = 11,  // node's broadcast stream sequences [first_message, + count) will never be
                        // delivered here (docs/PROTOCOL.md, "Reliable broadcast": "Losses")
};
std::string_view to_string(EventKind k) noexcept;

struct Event {
  EventKind kind{};
  std::uint16_t node = 0;
  wire::MacAddress mac{};           // the member's MAC (id_conflict: the first claimant)
  wire::MacAddress other_mac{};     // id_conflict: the second claimant
  std::uint64_t epoch = 0;          // the member's boot epoch (restarted: the new one; broadcast_lost:
                                    // the incarnation whose stream lost them)
  std::uint64_t old_epoch = 0;      // restarted: the previous one
  Failure failure = Failure::none;  // broadcast_lost: released, peer_left or peer_restarted
  std::uint64_t first_message = 0;  // send_failed: id of the first failed message;
                                    // broadcast_lost: stream sequence of the first lost (0..65535)
  std::uint64_t count = 0;          // send_failed: how many, consecutive ids; broadcast_lost: how
                                    // many consecutive sequences (the range may wrap past 65535)

  /// One line for logs, e.g. "node 7 restarted (epoch 1700.. -> 1700..)".
  std::string to_string() const;
};

}  // namespace locabus::engine
