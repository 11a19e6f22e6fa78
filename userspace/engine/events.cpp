// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "engine/events.hpp"

#include <fmt/format.h>

namespace locabus::engine {

std::string_view to_string(MemberState s) noexcept {
  switch (s) {
    case MemberState::joining: return "joining";
    case MemberState::alive: return "alive";
    case MemberState::suspect: return "suspect";
    case MemberState::dead: return "dead";
    case MemberState::left: return "left";
  }
  return "unknown";
}

std::string_view to_string(ConnState s) noexcept {
  switch (s) {
    case ConnState::closed: return "closed";
    case ConnState::syn_sent: return "syn_sent";
    case ConnState::syn_received: return "syn_received";
    case ConnState::established: return "established";
    case ConnState::fin_wait: return "fin_wait";
    case ConnState::close_wait: return "close_wait";
  }
  return "unknown";
}

std::string_view to_string(Failure f) noexcept {
  switch (f) {
    case Failure::none: return "none";
    case Failure::unreachable: return "unreachable";
    case Failure::peer_dead: return "peer_dead";
    case Failure::peer_restarted: return "peer_restarted";
    case Failure::peer_left: return "peer_left";
    case Failure::peer_reset: return "peer_reset";
    case Failure::closed: return "closed";
    case Failure::shutdown: return "shutdown";
    case Failure::released: return "released";
  }
  return "unknown";
}

std::string describe(Failure f, std::uint16_t node) {
  switch (f) {
    case Failure::none: return fmt::format("connection to node {} closed cleanly", node);
    case Failure::unreachable:
      return fmt::format(
          "node {} stopped answering (retransmission limit reached); check the link and that "
          "locabusd runs there, then send again",
          node);
    case Failure::peer_dead:
      return fmt::format(
          "node {} was declared dead by the failure detector; messages not acknowledged were "
          "not delivered or may have been, resend after it rejoins",
          node);
    case Failure::peer_restarted:
      return fmt::format("node {} restarted; messages to its previous incarnation were dropped, resend them",
                         node);
    case Failure::peer_left:
      return fmt::format("node {} left the cluster (clean shutdown); resend after it rejoins", node);
    case Failure::peer_reset:
      return fmt::format("node {} reset the connection (it lost its state); resend", node);
    case Failure::closed: return fmt::format("the connection to node {} was closed locally", node);
    case Failure::shutdown: return fmt::format("this node is shutting down; node {} was not sent to", node);
    case Failure::released:
      return fmt::format(
          "node {} had already freed them: it had stopped counting this node (cut off from it for longer "
          "than dead_after, or joined after they were sent); they cannot be recovered, resend at the "
          "application level if they matter",
          node);
  }
  return fmt::format("node {}: unknown failure", node);
}

std::string_view to_string(EventKind k) noexcept {
  switch (k) {
    case EventKind::joined: return "joined";
    case EventKind::restarted: return "restarted";
    case EventKind::suspect: return "suspect";
    case EventKind::alive: return "alive";
    case EventKind::dead: return "dead";
    case EventKind::left: return "left";
    case EventKind::id_conflict: return "id_conflict";
    case EventKind::connected: return "connected";
    case EventKind::disconnected: return "disconnected";
    case EventKind::send_failed: return "send_failed";
    case EventKind::broadcast_lost: return "broadcast_lost";
  }
  return "unknown";
}

std::string Event::to_string() const {
  switch (kind) {
    case EventKind::restarted:
      return fmt::format("node {} restarted (epoch {} -> {})", node, old_epoch, epoch);
    case EventKind::id_conflict:
      return fmt::format("node id {} is claimed by two interfaces, {} and {}: give one a different id", node,
                         mac.to_string(), other_mac.to_string());
    case EventKind::disconnected:
      return failure == Failure::none
                 ? fmt::format("connection to node {} closed", node)
                 : fmt::format("connection to node {} lost: {}", node, describe(failure, node));
    case EventKind::send_failed:
      return fmt::format("{} message(s) to node {} failed (ids {}..{}): {}", count, node, first_message,
                         first_message + count - 1, describe(failure, node));
    case EventKind::broadcast_lost: {
      const auto last = static_cast<std::uint16_t>(first_message + count - 1);
      const std::string why = failure == Failure::peer_left ? fmt::format("node {} left first", node)
                              : failure == Failure::peer_restarted
                                  ? fmt::format("node {} restarted first", node)
                                  : describe(failure, node);
      return fmt::format("{} broadcast message(s) from node {} lost (stream sequences {}..{}, epoch {}): {}",
                         count, node, first_message, last, epoch, why);
    }
    default:
      return fmt::format("node {} {} (mac {}, epoch {})", node, engine::to_string(kind), mac.to_string(),
                         epoch);
  }
}

}  // namespace locabus::engine
