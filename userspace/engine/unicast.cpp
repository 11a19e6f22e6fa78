// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Reliable unicast: the paper's connections, done carefully. 3-way
// handshake, 2-way disconnect, go-back-N with a 16-bit packet sequence
// space, cumulative and piggy-backed ACKs, a delayed-ACK timer, NAK-driven
// fast go-back, the receiver's credit window, RTT-based retransmission with
// exponential back-off. docs/ARCHITECTURE.md has the state diagram.
#include <algorithm>

#include "engine/control.hpp"
#include "engine/engine.hpp"
#include "engine/peer.hpp"
#include "engine/seq.hpp"

namespace locabus::engine {

using wire::PacketType;
using wire::seq_before;

// ---- timers ---------------------------------------------------------------------

Nanos* Engine::timer_fields(Peer& p, TimerKind kind, Nanos*& wheel) noexcept {
  switch (kind) {
    case kRtoTimer: wheel = &p.conn.rto_wheel; return &p.conn.rto_at;
    case kAckTimer: wheel = &p.conn.ack_wheel; return &p.conn.ack_at;
    case kBcastNakTimer: wheel = &p.brx.nak_wheel; return &p.brx.nak_at;
  }
  wheel = nullptr;
  return nullptr;
}

void Engine::arm(Peer& p, TimerKind kind, Nanos at) {
  Nanos* wheel = nullptr;
  Nanos& deadline = *timer_fields(p, kind, wheel);
  deadline = at;
  // Only an earlier deadline needs a new wheel entry; a later one is found
  // when the current entry fires (on_timer re-inserts it).
  if (wheel->count() == 0 || at < *wheel) {
    wheel_.schedule(at, p.index, kind);
    *wheel = at;
  }
}

void Engine::disarm(Peer& p, TimerKind kind) {
  Nanos* wheel = nullptr;
  *timer_fields(p, kind, wheel) = Nanos{0};
}

void Engine::on_timer(const TimerWheel::Entry& e) {
  if (e.owner >= peers_.size()) return;
  Peer& p = *peers_[e.owner];
  Connection& c = p.conn;
  const auto kind = static_cast<TimerKind>(e.kind);
  if (kind != kRtoTimer && kind != kAckTimer && kind != kBcastNakTimer) return;
  Nanos* wheel_ptr = nullptr;
  Nanos& deadline = *timer_fields(p, kind, wheel_ptr);
  Nanos& wheel = *wheel_ptr;
  if (e.deadline != wheel) return;  // superseded by an earlier entry
  wheel = Nanos{0};
  if (deadline.count() == 0) return;  // disarmed
  if (deadline > clock_.now()) {      // pushed back since this entry was made
    wheel_.schedule(deadline, p.index, kind);
    wheel = deadline;
    return;
  }
  deadline = Nanos{0};
  if (kind == kBcastNakTimer) {
    bcast_nak_due(p);
    return;
  }
  if (kind == kRtoTimer) {
    on_rto(p);
    return;
  }
  if (!c.synchronized()) return;
  if (c.flags & Connection::kNakPending) c.flags |= Connection::kNakNow;
  if ((c.flags & Connection::kAckPending) || c.rx_unacked > 0) c.flags |= Connection::kAckNow;
  c.flags &= static_cast<std::uint8_t>(~(Connection::kNakPending | Connection::kAckPending));
  if (c.flags & (Connection::kAckNow | Connection::kNakNow)) mark_tx_ready(p);
}

void Engine::rtt_sample(Connection& c, Nanos r) {
  if (c.rtt_min.count() == 0 || r < c.rtt_min) c.rtt_min = r;
  if (c.srtt.count() == 0) {
    c.srtt = r;
    c.rttvar = r / 2;
  } else {
    const Nanos err = c.srtt > r ? c.srtt - r : r - c.srtt;
    c.rttvar = (3 * c.rttvar + err) / 4;
    c.srtt = (7 * c.srtt + r) / 8;
  }
  c.rto = base_rto(c);
}

Nanos Engine::base_rto(const Connection& c) const {
  if (c.srtt.count() == 0) return config_.rto_initial;
  return std::clamp(c.srtt + std::max<Nanos>(4 * c.rttvar, 1ms), config_.rto_min, config_.rto_max);
}

// ---- connection lifecycle -----------------------------------------------------

void Engine::start_connect(Peer& p) {
  Connection& c = p.conn;
  c = Connection{};
  c.iss = static_cast<std::uint16_t>(rng_());
  c.snd_una = c.snd_nxt = c.snd_max = seq_add(c.iss, 1);
  c.snd_edge = c.snd_una;  // no credit until the peer advertises some
  c.peer_epoch = p.epoch;
  c.rto = config_.rto_initial;
  c.state = ConnState::syn_sent;
  c.rtt_sent_at = clock_.now();
  c.flags |= Connection::kTiming;
  send_syn(p, false);
  arm(p, kRtoTimer, clock_.now() + c.rto);
}

void Engine::established(Peer& p) {
  Connection& c = p.conn;
  if ((c.flags & Connection::kTiming) && c.retries == 0) rtt_sample(c, clock_.now() - c.rtt_sent_at);
  c.flags &= static_cast<std::uint8_t>(~Connection::kTiming);
  c.state = ConnState::established;
  c.retries = 0;
  c.rcv_edge = c.rcv_nxt;
  disarm(p, kRtoTimer);
  transport_.track_peer(p.node);
  c.flags |= Connection::kTracked;
  Event e{EventKind::connected, p.node};
  e.mac = p.mac;
  e.epoch = p.epoch;
  push_event(e);
  mark_tx_ready(p);
  maybe_finish_close(p);
}

void Engine::reset_connection(Peer& p, Failure why) {
  Connection& c = p.conn;
  const bool was_open = c.open();
  if (c.flags & Connection::kTracked) transport_.forget_peer(p.node);
  c = Connection{};  // timers: the wheel entries no longer match and are ignored
  if (was_open) {
    Event e{EventKind::disconnected, p.node};
    e.mac = p.mac;
    e.epoch = p.epoch;
    e.failure = why;
    push_event(e);
  }
  if (why != Failure::none) fail_pending(p, why);
}

void Engine::fail_pending(Peer& p, Failure why) {
  if (p.tx.empty()) return;
  Event e{EventKind::send_failed, p.node};
  e.mac = p.mac;
  e.epoch = p.epoch;
  e.failure = why;
  e.count = p.tx.size();
  e.first_message = p.next_message - p.tx.size();
  push_event(e);
  p.tx.clear();
}

void Engine::close(std::uint16_t node) {
  Peer* p = find(node);
  if (!p || !p->conn.open() || p->conn.state == ConnState::fin_wait) return;
  p->conn.flags |= Connection::kCloseAfterDrain;
  maybe_finish_close(*p);
}

void Engine::maybe_finish_close(Peer& p) {
  Connection& c = p.conn;
  if (!p.tx.empty()) return;
  if (c.state == ConnState::established && (c.flags & Connection::kCloseAfterDrain)) {
    c.state = ConnState::fin_wait;
    c.fin_seq = c.snd_max;
    c.retries = 0;
    send_fin(p, false, 0, false);
    arm(p, kRtoTimer, clock_.now() + c.rto);
  } else if (c.state == ConnState::close_wait) {
    send_fin(p, true, seq_add(c.fin_seq, 1), false);
    reset_connection(p, Failure::none);
  }
}

// ---- frames in ------------------------------------------------------------------

void Engine::on_connection_frame(const wire::FrameView& f) {
  const std::uint16_t from = f.header.node_from();
  const PacketType type = *f.header.type();
  std::optional<std::uint64_t> epoch;
  if (type == PacketType::syn || type == PacketType::syn_ack) {
    auto syn = control::decode_syn(f.payload);
    if (!syn) {
      ++stats_.rx_malformed_control;
      return;
    }
    // A SYN meant for an earlier incarnation of this node is not for us.
    if (syn->peer_epoch != 0 && syn->peer_epoch != epoch_) {
      ++stats_.rx_stale_epoch;
      return;
    }
    epoch = syn->hello.epoch;
  } else if (type == PacketType::fin || type == PacketType::fin_ack) {
    // FIN and RESET name their sender's incarnation too: one from an older
    // life is dropped, one from a newer life is a restart.
    auto hello = control::decode_hello(f.payload);
    if (!hello) {
      ++stats_.rx_malformed_control;
      return;
    }
    epoch = hello->epoch;
  }
  Peer* p = nullptr;
  if (observe(from, f.src, epoch, p) != Contact::ok) return;
  if (leaving_) {
    // This node has left: accept nothing it could not deliver, so the
    // sender learns (RESET) instead of losing messages silently.
    if (type == PacketType::data || type == PacketType::syn) send_reset(f, p);
    if (type == PacketType::fin) send_fin_to(f, p);
    return;
  }
  if (!p) {
    // Never heard of it, and the frame does not say which incarnation it is
    // from: a stale conversation with our previous life. Tell it.
    ++stats_.rx_unknown_peer;
    if (type == PacketType::data) send_reset(f, nullptr);
    if (type == PacketType::fin) send_fin_to(f, nullptr);
    return;
  }
  switch (type) {
    case PacketType::syn: on_syn(f, *p); break;
    case PacketType::syn_ack: on_syn_ack(f, *p); break;
    case PacketType::fin: on_fin(f, *p); break;
    case PacketType::fin_ack: on_fin_ack(f, *p); break;
    case PacketType::data: on_data(f, *p); break;
    case PacketType::ack: on_ack_fields(f, *p); break;
    case PacketType::nak: on_nak(f, *p); break;
    default: break;
  }
}

void Engine::accept_syn(const wire::FrameView& f, Peer& p) {
  Connection& c = p.conn;
  const bool simultaneous = c.state == ConnState::syn_sent;
  if (!simultaneous) {
    c = Connection{};
    c.iss = static_cast<std::uint16_t>(rng_());
    c.snd_una = c.snd_nxt = c.snd_max = seq_add(c.iss, 1);
    c.rto = config_.rto_initial;
    c.rtt_sent_at = clock_.now();
    c.flags |= Connection::kTiming;
  }
  c.peer_epoch = p.epoch;
  c.irs = f.header.seq();
  c.rcv_nxt = seq_add(c.irs, 1);
  c.snd_edge = seq_add(c.snd_una, f.header.window());
  c.state = ConnState::syn_received;
  send_syn(p, true);
  arm(p, kRtoTimer, clock_.now() + c.rto);
}

void Engine::on_syn(const wire::FrameView& f, Peer& p) {
  Connection& c = p.conn;
  switch (c.state) {
    case ConnState::closed:
    case ConnState::syn_sent:  // simultaneous open: both sides answer with SYN_ACK
      accept_syn(f, p);
      return;
    case ConnState::syn_received:
    case ConnState::established:
    case ConnState::fin_wait:
    case ConnState::close_wait:
      if (f.header.seq() == c.irs) {
        // A retransmitted SYN: our SYN_ACK was lost (or is late).
        send_syn(p, true);
        return;
      }
      // A new SYN from the same incarnation: the peer dropped the old
      // connection (it gave up on us). Whatever was in flight may or may not
      // have arrived, so it fails; then the new connection is accepted.
      reset_connection(p, Failure::peer_reset);
      accept_syn(f, p);
      return;
  }
}

void Engine::on_syn_ack(const wire::FrameView& f, Peer& p) {
  Connection& c = p.conn;
  const std::uint16_t seq = f.header.seq();
  switch (c.state) {
    case ConnState::syn_sent:
    case ConnState::syn_received:
      if (f.header.ack() != seq_add(c.iss, 1)) return;  // not an answer to our SYN
      if (c.state == ConnState::syn_received && seq != c.irs) return;
      c.irs = seq;
      c.rcv_nxt = seq_add(seq, 1);
      c.snd_edge = seq_add(f.header.ack(), f.header.window());
      established(p);
      c.flags |= Connection::kAckNow;  // step 3
      mark_tx_ready(p);
      return;
    case ConnState::closed:
      send_reset(f, &p);  // answers a SYN we gave up on
      return;
    default:
      if (seq == c.irs) {  // our step-3 ACK was lost
        c.flags |= Connection::kAckNow;
        mark_tx_ready(p);
      }
      return;
  }
}

void Engine::on_ack_fields(const wire::FrameView& f, Peer& p) {
  Connection& c = p.conn;
  const std::uint16_t ack = f.header.ack();
  if (c.state == ConnState::syn_received) {
    // Step 3 of the handshake: the ACK, or data carrying it.
    if (!seq_between(seq_add(c.iss, 1), ack, c.snd_max)) return;
    established(p);
  }
  if (!c.synchronized()) return;
  apply_ack(p, ack, f.header.window());
}

void Engine::apply_ack(Peer& p, std::uint16_t ack, std::uint16_t window) {
  Connection& c = p.conn;
  if (!seq_between(c.snd_una, ack, c.snd_max)) return;  // old, or acknowledges what we never sent
  c.retries = 0;                                        // the peer is there
  const std::uint16_t acked = seq_diff(ack, c.snd_una);
  if (acked > 0) {
    if ((c.flags & Connection::kTiming) && seq_before(c.rtt_seq, ack)) {
      rtt_sample(c, clock_.now() - c.rtt_sent_at);
      c.flags &= static_cast<std::uint8_t>(~Connection::kTiming);
    }
    p.tx.pop_front(acked);
    c.snd_una = ack;
    // New data got through: the back-off is over (RFC 6298 keeps it until
    // the next sample, which go-back-N under loss may not produce for long).
    c.rto = base_rto(c);
    if (seq_before(c.snd_nxt, ack)) c.snd_nxt = ack;
    if (c.snd_una == c.snd_max) {
      disarm(p, kRtoTimer);
    } else {
      arm(p, kRtoTimer, clock_.now() + c.rto);
    }
  }
  // The right edge (ack + window) never moves back.
  const std::uint16_t edge = seq_add(ack, window);
  if (seq_before(c.snd_edge, edge)) c.snd_edge = edge;
  if (acked > 0 || seq_before(c.snd_nxt, c.snd_edge)) mark_tx_ready(p);
  if (acked > 0) maybe_finish_close(p);
}

void Engine::on_nak(const wire::FrameView& f, Peer& p) {
  on_ack_fields(f, p);
  Connection& c = p.conn;
  if (!c.synchronized()) return;
  ++p.counters.naks_received;
  const std::uint16_t missing = f.header.ack();
  if (missing != c.snd_una || !seq_before(missing, c.snd_nxt)) return;  // nothing to go back for
  const Nanos now = clock_.now();
  // srtt includes delayed ACKs; the quickest answer seen is what a NAK
  // repeated for the same packet must be measured against.
  const Nanos holdoff = std::max(config_.nak_holdoff, c.rtt_min);
  if (missing == c.goback_seq && now - c.goback_at < holdoff) return;  // already going back
  c.goback_seq = missing;
  c.goback_at = now;
  c.snd_nxt = missing;
  c.flags &= static_cast<std::uint8_t>(~Connection::kTiming);  // Karn: no sample across a go-back
  mark_tx_ready(p);
}

void Engine::on_data(const wire::FrameView& f, Peer& p) {
  on_ack_fields(f, p);
  Connection& c = p.conn;
  if (!c.synchronized()) {
    if (c.state == ConnState::closed) send_reset(f, &p);
    return;
  }
  const std::uint16_t seq = f.header.seq();
  const Nanos now = clock_.now();
  // An immediate ACK or NAK goes out at once unless one just went out; then
  // it is deferred to the end of the holdoff, never dropped.
  auto respond = [&](std::uint8_t now_flag, std::uint8_t pending_flag) {
    const Nanos at = c.nak_sent_at + config_.nak_holdoff;
    if (c.nak_sent_at.count() == 0 || at <= now) {
      c.flags |= now_flag;
      mark_tx_ready(p);
    } else {
      c.flags |= pending_flag;
      if (c.ack_at.count() == 0 || at < c.ack_at) arm(p, kAckTimer, at);
    }
  };
  if (seq == c.rcv_nxt) {
    if (p.rx.full()) {
      ++p.counters.window_drops;  // a window probe, or a sender ignoring our window
      c.flags |= Connection::kAckNow;
      mark_tx_ready(p);
      return;
    }
    if (p.rx.empty()) rx_ready_.push_back(p.index << 1);
    p.rx.push(f.header.proto(), f.payload);
    ++receivable_;
    ++p.counters.data_received;
    c.rcv_nxt = seq_add(c.rcv_nxt, 1);
    if (seq_before(c.rcv_edge, c.rcv_nxt)) c.rcv_edge = c.rcv_nxt;
    if (++c.rx_unacked >= config_.ack_every) {
      c.flags |= Connection::kAckNow;
      mark_tx_ready(p);
    } else if (c.ack_at.count() == 0) {
      arm(p, kAckTimer, now + config_.ack_delay);
    }
  } else if (seq_before(seq, c.rcv_nxt)) {
    ++p.counters.duplicates;  // our ACK was lost or late: repeat it soon
    respond(Connection::kAckNow, Connection::kAckPending);
  } else {
    ++p.counters.out_of_order;  // a gap: go-back-N discards, NAK asks for the first missing
    respond(Connection::kNakNow, Connection::kNakPending);
  }
}

void Engine::on_fin(const wire::FrameView& f, Peer& p) {
  Connection& c = p.conn;
  auto hello = control::decode_hello(f.payload);
  if (!hello) {
    ++stats_.rx_malformed_control;
    return;
  }
  if (hello->flags & LOCABUS_HELLO_F_RESET) {
    // "No such connection", echoing the sequence number it refused.
    const std::uint16_t echoed = f.header.ack();
    bool ours = false;
    if (c.synchronized()) ours = seq_between(c.snd_una, echoed, c.snd_max) && echoed != c.snd_max;
    if (c.state == ConnState::syn_sent || c.state == ConnState::syn_received) ours = echoed == c.iss;
    if (ours) reset_connection(p, Failure::peer_reset);
    return;
  }
  switch (c.state) {
    case ConnState::closed:
      send_fin_to(f, &p);  // our FIN_ACK was lost; answer without state
      return;
    case ConnState::syn_sent: return;
    case ConnState::fin_wait:
      // Both sides closed at once: answer, and keep waiting for ours.
      if (f.header.seq() == c.rcv_nxt) send_fin(p, true, seq_add(f.header.seq(), 1), false);
      return;
    case ConnState::close_wait: return;  // FIN_ACK goes out once our queue has drained
    case ConnState::syn_received:
    case ConnState::established:
      on_ack_fields(f, p);
      if (!c.synchronized()) return;
      if (f.header.seq() != c.rcv_nxt) {
        // Data before the FIN is missing: ask for it.
        c.flags |= Connection::kNakNow;
        mark_tx_ready(p);
        return;
      }
      c.fin_seq = f.header.seq();
      c.state = ConnState::close_wait;
      maybe_finish_close(p);  // closes now if nothing of ours is pending
      return;
  }
}

void Engine::on_fin_ack(const wire::FrameView& f, Peer& p) {
  Connection& c = p.conn;
  if (c.state == ConnState::fin_wait && f.header.ack() == seq_add(c.fin_seq, 1)) {
    reset_connection(p, Failure::none);
  }
}

// ---- timeouts -------------------------------------------------------------------

void Engine::on_rto(Peer& p) {
  Connection& c = p.conn;
  const Nanos now = clock_.now();
  const bool data_pending = c.synchronized() && (c.snd_una != c.snd_max || !p.tx.empty());
  if (!data_pending && c.state != ConnState::syn_sent && c.state != ConnState::syn_received &&
      c.state != ConnState::fin_wait) {
    return;
  }
  ++p.counters.timeouts;
  if (++c.retries > config_.max_retransmits) {
    reset_connection(p, Failure::unreachable);
    return;
  }
  c.rto = std::min(c.rto * 2, config_.rto_max);
  c.flags &= static_cast<std::uint8_t>(~Connection::kTiming);
  switch (c.state) {
    case ConnState::syn_sent: send_syn(p, false); break;
    case ConnState::syn_received: send_syn(p, true); break;
    case ConnState::fin_wait: send_fin(p, false, 0, false); break;
    default:
      c.snd_nxt = c.snd_una;  // go back N
      // No credit for even the oldest packet: it goes out as a window probe
      // (again at every timeout; the answer resets the retry count).
      if (!seq_before(c.snd_una, c.snd_edge)) c.flags |= Connection::kProbe;
      mark_tx_ready(p);
      break;
  }
  arm(p, kRtoTimer, now + c.rto);
}

// ---- frames out -----------------------------------------------------------------

std::uint16_t Engine::advertised_window(Peer& p) {
  Connection& c = p.conn;
  std::uint16_t edge = seq_add(c.rcv_nxt, std::min<std::size_t>(p.rx.free(), config_.window));
  if (seq_before(edge, c.rcv_edge)) edge = c.rcv_edge;  // never shrink what we offered
  c.rcv_edge = edge;
  return seq_diff(edge, c.rcv_nxt);
}

void Engine::window_opened(Peer& p) {
  Connection& c = p.conn;
  if (!c.synchronized()) return;
  const std::size_t offered = seq_diff(c.rcv_edge, c.rcv_nxt);
  const std::size_t possible = std::min<std::size_t>(p.rx.free(), config_.window);
  const std::size_t step =
      std::max<std::size_t>(1, std::min<std::size_t>(config_.ack_every, p.rx.limit() / 2));
  // Tell the sender when it is (nearly) stalled and real credit came back.
  if ((offered == 0 && possible > 0) ||
      (possible >= offered + step && offered < std::max<std::size_t>(step, config_.window / 2))) {
    c.flags |= Connection::kAckNow;
    mark_tx_ready(p);
  }
}

wire::Header Engine::conn_header(Peer& p, PacketType t, std::uint8_t proto) {
  wire::Header h;
  h.set_type(t).set_proto_raw(proto).set_node_to(p.node);
  h.set_ack(p.conn.rcv_nxt).set_window(advertised_window(p));
  return h;
}

void Engine::acked_now(Peer& p) {
  Connection& c = p.conn;
  c.rx_unacked = 0;
  c.flags &= static_cast<std::uint8_t>(~(Connection::kAckNow | Connection::kAckPending));
  if (!(c.flags & Connection::kNakPending)) disarm(p, kAckTimer);  // a deferred NAK still needs it
}

void Engine::send_syn(Peer& p, bool syn_ack) {
  Connection& c = p.conn;
  control::Syn syn{{0, static_cast<std::uint16_t>(live_count_), epoch_}, p.epoch};
  wire::Header h;
  h.set_type(syn_ack ? PacketType::syn_ack : PacketType::syn).set_proto(wire::Protocol::control);
  h.set_node_to(p.node).set_seq(c.iss).set_ack(syn_ack ? c.rcv_nxt : 0);
  h.set_window(static_cast<std::uint16_t>(std::min<std::size_t>(p.rx.free(), config_.window)));
  const locabus_syn raw = control::encode(syn);
  emit_control(p.mac, h, control::bytes_of(raw));
}

bool Engine::send_ack(Peer& p, bool nak) {
  Connection& c = p.conn;
  wire::Header h = conn_header(p, nak ? PacketType::nak : PacketType::ack, LOCABUS_P_CONTROL);
  h.set_seq(c.snd_nxt);
  if (!emit_control(p.mac, h, {})) return false;
  acked_now(p);
  if (nak) {
    c.flags &= static_cast<std::uint8_t>(~(Connection::kNakNow | Connection::kNakPending));
    ++p.counters.naks_sent;
  } else {
    ++p.counters.acks_sent;
  }
  c.nak_sent_at = clock_.now();
  return true;
}

void Engine::send_fin(Peer& p, bool fin_ack, std::uint16_t ack_for, bool reset) {
  Connection& c = p.conn;
  const locabus_hello raw = control::encode(
      control::Hello{static_cast<std::uint8_t>(reset ? LOCABUS_HELLO_F_RESET : 0), 0, epoch_});
  wire::Header h;
  h.set_type(fin_ack ? PacketType::fin_ack : PacketType::fin).set_proto(wire::Protocol::control);
  h.set_node_to(p.node).set_seq(fin_ack ? c.snd_max : c.fin_seq);
  h.set_ack(fin_ack ? ack_for : c.rcv_nxt);
  h.set_window(fin_ack ? 0 : seq_diff(c.rcv_edge, c.rcv_nxt));
  emit_control(p.mac, h, control::bytes_of(raw));
}

void Engine::send_fin_to(const wire::FrameView& f, Peer* p) {
  // Stateless FIN_ACK for a FIN of a connection we no longer have.
  const locabus_hello raw = control::encode(control::Hello{0, 0, epoch_});
  wire::Header h;
  h.set_type(PacketType::fin_ack).set_proto(wire::Protocol::control);
  h.set_node_to(f.header.node_from()).set_ack(seq_add(f.header.seq(), 1));
  emit_control(p ? p->mac : f.src, h, control::bytes_of(raw));
}

void Engine::send_reset(const wire::FrameView& f, Peer* p) {
  const Nanos now = clock_.now();
  if (p) {
    if (now - p->conn.nak_sent_at < config_.nak_holdoff) return;
    p->conn.nak_sent_at = now;
  }
  const locabus_hello raw = control::encode(control::Hello{LOCABUS_HELLO_F_RESET, 0, epoch_});
  wire::Header h;
  h.set_type(PacketType::fin).set_proto(wire::Protocol::control);
  h.set_node_to(f.header.node_from()).set_ack(f.header.seq());
  if (emit_control(p ? p->mac : f.src, h, control::bytes_of(raw))) ++stats_.resets_sent;
}

int Engine::transmit_peer(Peer& p) {
  Connection& c = p.conn;
  int work = 0;
  if (c.synchronized()) {
    const Nanos now = clock_.now();
    const std::uint16_t end = seq_add(c.snd_una, p.tx.size());
    while (c.snd_nxt != end) {
      if (tx_space() == 0 && (flush(), tx_space() == 0)) {
        mark_tx_ready(p);  // the transport is full: continue next time
        break;
      }
      if (seq_diff(c.snd_nxt, c.snd_una) >= config_.window) break;  // window full
      const bool probe = (c.flags & Connection::kProbe) != 0;
      if (!seq_before(c.snd_nxt, c.snd_edge) && !probe) {
        // No credit. The retransmission timer doubles as the persist timer.
        if (c.rto_at.count() == 0) arm(p, kRtoTimer, now + c.rto);
        break;
      }
      c.flags &= static_cast<std::uint8_t>(~Connection::kProbe);
      const MessageRing::Slot& slot = p.tx.at(seq_diff(c.snd_nxt, c.snd_una));
      wire::Header h = conn_header(p, PacketType::data, slot.proto);
      h.set_seq(c.snd_nxt);
      if (!emit(p.mac, h, slot.data)) break;
      acked_now(p);  // the ACK rode along
      if (seq_before(c.snd_nxt, c.snd_max)) {
        ++p.counters.retransmits;
      } else {
        ++p.counters.data_sent;
        c.snd_max = seq_add(c.snd_nxt, 1);
        if (!(c.flags & Connection::kTiming)) {
          c.flags |= Connection::kTiming;
          c.rtt_seq = c.snd_nxt;
          c.rtt_sent_at = now;
        }
      }
      c.snd_nxt = seq_add(c.snd_nxt, 1);
      if (c.rto_at.count() == 0) arm(p, kRtoTimer, now + c.rto);
      ++work;
    }
  }
  // send_ack() clears the flag only once the frame is queued; a full
  // transport keeps the peer on the list for the next cycle.
  if (c.flags & Connection::kNakNow) {
    if (!c.synchronized()) {
      c.flags &= static_cast<std::uint8_t>(~Connection::kNakNow);
    } else if (send_ack(p, true)) {
      ++work;
    } else {
      mark_tx_ready(p);
    }
  }
  if (c.flags & Connection::kAckNow) {
    if (!c.synchronized()) {
      c.flags &= static_cast<std::uint8_t>(~Connection::kAckNow);
    } else if (send_ack(p, false)) {
      ++work;
    } else {
      mark_tx_ready(p);
    }
  }
  return work;
}

}  // namespace locabus::engine
