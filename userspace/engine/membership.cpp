// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Membership (F4): discovery broadcasts for the first minute, replies that
// carry the responder's member list, boot epochs that reveal restarts, a
// heartbeat-driven failure detector (alive -> suspect -> dead, with PROBEs
// before giving up), and detection of two nodes claiming one id.
#include <algorithm>

#include "engine/control.hpp"
#include "engine/engine.hpp"
#include "engine/peer.hpp"

namespace locabus::engine {

using wire::PacketType;

namespace {
constexpr std::uint8_t kJoinProbes = 3;  // probes to a node we only heard of
constexpr double kRepliesWanted = 3.0;   // expected replies to a repeated DISCOVER
}  // namespace

void Engine::set_member(Peer& p, MemberState s) {
  const auto live = [](MemberState m) { return m == MemberState::alive || m == MemberState::suspect; };
  const bool was = live(p.member);
  if (was && !live(s)) --live_count_;
  if (!was && live(s)) ++live_count_;
  p.member = s;
  if (!was && live(s)) bcast_member_joined(p);
  if (was && !live(s)) {
    bcast_release();       // it no longer holds our broadcast buffer
    bcast_sender_lost(p);  // and we stop asking it for its stream
  }
}

Event Engine::member_event(EventKind kind, const Peer& p) const {
  Event e{kind, p.node};
  e.mac = p.mac;
  e.epoch = p.epoch;
  return e;
}

Engine::Contact Engine::observe(std::uint16_t node, const wire::MacAddress& mac,
                                std::optional<std::uint64_t> epoch, Peer*& out) {
  const Nanos now = clock_.now();
  out = find(node);
  if (!out) {
    if (!epoch) return Contact::ok;  // cannot tell who it is: the caller decides
    Peer& p = create_peer(node, mac);
    p.epoch = *epoch;
    p.last_heard = now;
    set_member(p, MemberState::alive);
    push_event(member_event(EventKind::joined, p));
    out = &p;
    return Contact::ok;
  }
  Peer& p = *out;
  if (p.member == MemberState::joining) {
    // Known only from another node's list until now.
    p.mac = mac;
    if (epoch) p.epoch = *epoch;
    p.last_heard = now;
    p.probes = 0;
    set_member(p, MemberState::alive);
    push_event(member_event(EventKind::joined, p));
    return Contact::ok;
  }
  const bool gone = p.member == MemberState::dead || p.member == MemberState::left;
  // A smaller epoch is a late frame from a previous incarnation, unless the
  // member is gone: then it is a new life whose clock was set back.
  if (epoch && *epoch < p.epoch && !gone) {
    ++stats_.rx_stale_epoch;
    return Contact::stale;
  }
  if (mac != p.mac) {
    const bool claimant_live = (p.member == MemberState::alive || p.member == MemberState::suspect) &&
                               now - p.last_heard < config_.suspect_after;
    if (claimant_live) {
      report_conflict(node, p.mac, mac);
      ++stats_.rx_conflict;
      return Contact::conflict;
    }
    // The old claimant went quiet first: the node moved to another interface.
    p.mac = mac;
    p.conflict_reported = false;
  }
  if (epoch && *epoch != p.epoch) {
    // A new incarnation: everything we had with the old one is void (and is
    // reported with the old epoch).
    const std::uint64_t old = p.epoch;
    reset_connection(p, Failure::peer_restarted);
    bcast_reset_rx(p);  // its new life has a new broadcast stream
    p.epoch = *epoch;
    p.last_heard = now;
    p.probes = 0;
    p.last_reply = Nanos{-1};
    set_member(p, MemberState::alive);
    bcast_member_joined(p);  // and starts at our stream's current position
    bcast_release();         // which may free what its old life held
    Event e = member_event(EventKind::restarted, p);
    e.old_epoch = old;
    push_event(e);
    return Contact::ok;
  }
  if (p.member == MemberState::left) {
    if (epoch) ++stats_.rx_stale_epoch;  // it said goodbye; only a new epoch brings it back
    return epoch ? Contact::stale : Contact::ok;
  }
  p.last_heard = now;
  if (p.member == MemberState::suspect || p.member == MemberState::dead) {
    p.probes = 0;
    set_member(p, MemberState::alive);
    push_event(member_event(EventKind::alive, p));
  }
  return Contact::ok;
}

void Engine::report_conflict(std::uint16_t node, const wire::MacAddress& first,
                             const wire::MacAddress& second) {
  if (node == config_.node_id) {
    if (self_conflict_reported_ && self_conflict_mac_ == second) return;
    self_conflict_reported_ = true;
    self_conflict_mac_ = second;
  } else {
    Peer* p = find(node);
    if (!p || p->conflict_reported) return;
    p->conflict_reported = true;
  }
  Event e{EventKind::id_conflict, node};
  e.mac = first;
  e.other_mac = second;
  push_event(e);
}

void Engine::on_membership_frame(const wire::FrameView& f) {
  auto hello = control::decode_hello(f.payload);
  if (!hello) {
    ++stats_.rx_malformed_control;
    return;
  }
  Peer* p = nullptr;
  if (observe(f.header.node_from(), f.src, hello->epoch, p) != Contact::ok || !p) return;
  const Nanos now = clock_.now();
  switch (*f.header.type()) {
    case PacketType::discover: {
      if (leaving_) {
        // It missed our goodbye: say it again, to it alone.
        send_hello(PacketType::heartbeat, p->node, p->mac, LOCABUS_HELLO_F_LEAVING);
        return;
      }
      // Always answer a new incarnation's first DISCOVER, and an explicit
      // (unicast) request. A repeated broadcast from a node that knows fewer
      // members than we do gets a reply from about kRepliesWanted members,
      // not from all of them.
      bool reply = p->last_reply.count() < 0 || f.header.node_to() == config_.node_id;
      if (!reply && hello->known < live_count_) {
        const double chance = std::min(1.0, kRepliesWanted / static_cast<double>(live_count_));
        reply = static_cast<double>(rng_() >> 11) * 0x1.0p-53 < chance;
      }
      if (reply) send_reply(*p);
      return;
    }
    case PacketType::discover_reply: {
      auto r = control::decode_reply(f.payload);
      if (!r) {
        ++stats_.rx_malformed_control;
        return;
      }
      for (const control::MemberEntry& m : r->entries) {
        if (m.node == config_.node_id) {
          if (m.mac != mac_) report_conflict(m.node, mac_, m.mac);
          continue;
        }
        if (m.node == wire::kBroadcast) continue;
        Peer* q = find(m.node);
        if (!q) {
          // Hearsay: confirm it with a PROBE before calling it a member.
          Peer& n = create_peer(m.node, m.mac);
          n.epoch = m.epoch;
          n.next_probe = now;
        } else if ((q->member == MemberState::dead || q->member == MemberState::left) && m.epoch > q->epoch) {
          q->next_probe = now;  // it may be back in a new life: ask it directly
          q->probes = 0;
        }
      }
      return;
    }
    case PacketType::heartbeat:
      if (hello->flags & LOCABUS_HELLO_F_LEAVING) {
        set_member(*p, MemberState::left);
        reset_connection(*p, Failure::peer_left);
        push_event(member_event(EventKind::left, *p));
        return;
      }
      // It knows members we do not (we missed their DISCOVER, or discovery
      // is over): ask it for its list.
      if (hello->known > live_count_ &&
          (p->last_list_request.count() < 0 || now - p->last_list_request >= config_.discover_interval)) {
        p->last_list_request = now;
        send_discover(p);
      }
      return;
    case PacketType::probe:
      if (leaving_) {
        send_hello(PacketType::heartbeat, p->node, p->mac, LOCABUS_HELLO_F_LEAVING);
      } else {
        send_probe(*p, true);
      }
      return;
    default: return;  // probe_reply: observe() did it all
  }
}

int Engine::membership_tick() {
  const Nanos now = clock_.now();
  int work = 0;
  // A timer that is over is set to Nanos::max(), so next_deadline() never
  // reports a deadline in the past (the runner would spin).
  if (now >= next_discover_) {
    if (!leaving_ && now < discover_until_) {
      send_discover(nullptr);
      ++work;
    }
    next_discover_ = !leaving_ && now + config_.discover_interval < discover_until_
                         ? now + config_.discover_interval
                         : Nanos::max();
  }
  if (now >= next_heartbeat_) {
    if (!leaving_) {
      send_heartbeat(false);
      ++work;
    }
    next_heartbeat_ = leaving_ ? Nanos::max() : now + config_.heartbeat_interval;
  }
  if (now < next_sweep_) return work;
  next_sweep_ = now + sweep_period();
  for (auto& ptr : peers_) {
    Peer& p = *ptr;
    const Nanos silence = now - p.last_heard;
    switch (p.member) {
      case MemberState::alive:
        if (silence >= config_.suspect_after) {
          set_member(p, MemberState::suspect);
          p.probes = 0;
          p.next_probe = now;
          push_event(member_event(EventKind::suspect, p));
          ++work;
        }
        break;
      case MemberState::suspect:
        if (silence >= config_.dead_after) {
          set_member(p, MemberState::dead);
          reset_connection(p, Failure::peer_dead);
          push_event(member_event(EventKind::dead, p));
          ++work;
        }
        break;
      default: break;
    }
    // Probe suspects until they answer or die, and nodes we only heard of
    // (a few times) until they answer.
    const bool probing = p.member == MemberState::suspect ||
                         ((p.member == MemberState::joining || p.member == MemberState::dead ||
                           p.member == MemberState::left) &&
                          p.next_probe.count() > 0 && p.probes < kJoinProbes);
    if (probing && !leaving_ && now >= p.next_probe) {
      send_probe(p, false);
      ++p.probes;
      p.next_probe = now + config_.probe_interval;
      ++work;
    }
  }
  return work;
}

void Engine::send_hello(PacketType type, std::uint16_t to, const wire::MacAddress& dst, std::uint8_t flags) {
  const locabus_hello raw =
      control::encode(control::Hello{flags, static_cast<std::uint16_t>(live_count_), epoch_});
  wire::Header h;
  h.set_type(type).set_proto(wire::Protocol::control).set_node_to(to);
  emit_control(dst, h, control::bytes_of(raw));
}

void Engine::send_discover(const Peer* to) {
  if (to) {
    send_hello(PacketType::discover, to->node, to->mac, 0);
  } else {
    send_hello(PacketType::discover, wire::kBroadcast, wire::MacAddress::broadcast(), 0);
  }
  ++stats_.discover_sent;
}

void Engine::send_heartbeat(bool leaving) {
  send_hello(PacketType::heartbeat, wire::kBroadcast, wire::MacAddress::broadcast(),
             leaving ? LOCABUS_HELLO_F_LEAVING : 0);
  ++stats_.heartbeats_sent;
}

void Engine::send_probe(Peer& p, bool reply) {
  send_hello(reply ? PacketType::probe_reply : PacketType::probe, p.node, p.mac, 0);
  if (!reply) ++stats_.probes_sent;
}

void Engine::send_reply(Peer& to) {
  to.last_reply = clock_.now();
  std::vector<control::MemberEntry> list;
  list.reserve(live_count_);
  for (const auto& ptr : peers_) {
    const Peer& q = *ptr;
    if (q.node == to.node) continue;
    if (q.member != MemberState::alive && q.member != MemberState::suspect) continue;
    list.push_back(control::MemberEntry{q.node, q.mac, q.epoch});
  }
  const control::Hello hello{0, static_cast<std::uint16_t>(live_count_), epoch_};
  wire::Header h;
  h.set_type(PacketType::discover_reply).set_proto(wire::Protocol::control).set_node_to(to.node);
  // Page the list; an empty list still tells the newcomer about us.
  std::size_t offset = 0;
  do {
    const std::size_t n = std::min(control::kReplyMaxEntries, list.size() - offset);
    const auto page =
        control::encode_reply(hello, static_cast<std::uint16_t>(offset), std::span(list).subspan(offset, n));
    emit_control(to.mac, h, page);
    ++stats_.replies_sent;
    offset += n;
  } while (offset < list.size());
}

void Engine::leave() {
  if (leaving_) return;
  for (auto& ptr : peers_) {
    Peer& p = *ptr;
    if (p.conn.synchronized()) {
      // Best effort: the heartbeat below is what tells everyone.
      p.conn.fin_seq = p.conn.snd_max;
      send_fin(p, false, 0, false);
    }
    reset_connection(p, Failure::shutdown);
  }
  bcast_drop_all();
  send_heartbeat(true);
  leaving_ = true;
  next_discover_ = next_heartbeat_ = Nanos::max();
  flush();
}

}  // namespace locabus::engine
