// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Reliable unicast: the paper's connections, done carefully. 3-way
// handshake, 2-way disconnect, a 16-bit packet sequence space, cumulative
// and piggy-backed ACKs, a delayed-ACK timer, the receiver's credit window,
// RTT-based retransmission with exponential back-off; and, beyond the
// paper's go-back-N, selective repeat (the receiver holds frames ahead of a
// gap, its NAKs name the missing ranges, the sender resends only those), a
// tail-loss probe, and congestion control that tells random loss from a
// queue overflowing. docs/ARCHITECTURE.md has the state diagram and the
// rules; docs/PROTOCOL.md the frames.
#include <algorithm>
#include <array>
#include <optional>

#include "engine/control.hpp"
#include "engine/engine.hpp"
#include "engine/peer.hpp"
#include "engine/seq.hpp"

namespace locabus::engine {

using wire::PacketType;
using wire::seq_before;

namespace {
// MessageRing::Slot::marks of a send queue.
constexpr std::uint8_t kSacked = 1 << 0;         // the peer holds it (a NAK said so)
constexpr std::uint8_t kLost = 1 << 1;           // a NAK reported it missing at least once
constexpr std::uint8_t kQueued = 1 << 2;         // in Peer::retx
constexpr std::uint8_t kRetransmitted = 1 << 3;  // sent more than once
constexpr std::uint8_t kProvenLost = 1 << 4;     // queued again because the last copy is known lost
constexpr std::uint8_t kAmbiguous = 1 << 5;      // a copy went out while an earlier one may still arrive

// Serial order of two 32-bit transmission stamps.
constexpr bool order_before(std::uint32_t a, std::uint32_t b) noexcept {
  return static_cast<std::int32_t>(a - b) < 0;
}

// The peer holds `slot` (a NAK or the cumulative ACK says so): its last
// transmission arrived, unless an earlier copy may have arrived instead.
// With `now` (a NAK, which answers at once), how long the latest frame
// known held took to be reported is kept in held_rtt.
void credit_held(Connection& c, const MessageRing::Slot& slot, std::optional<Nanos> now) noexcept {
  if ((slot.marks & kAmbiguous) || slot.sent_order == 0 || !order_before(c.held_order, slot.sent_order))
    return;
  c.held_order = slot.sent_order;
  if (now)
    c.held_rtt =
        static_cast<std::uint32_t>(std::clamp<std::int64_t>((*now - slot.sent_at).count(), 0, UINT32_MAX));
}

constexpr std::uint8_t clear(std::uint8_t flags, std::uint8_t bits) noexcept {
  return static_cast<std::uint8_t>(flags & ~bits);
}
}  // namespace

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

Nanos Engine::pto(const Connection& c) const { return std::max(2 * c.srtt, config_.tlp_min); }

// How long after sending a frame again a NAK that still names it means the
// repair was lost too (and not merely still on its way).
// Frames and NAKs keep their order on the link, so a NAK that left the
// receiver after the repair arrived comes back at least a round trip after
// the repair was sent: the quickest round trip seen (rtt_min, an answer to a
// frame that asked for one), with a quarter on top for jitter.
Nanos Engine::repair_wait(const Connection& c) const {
  if (c.rtt_min.count() == 0) return config_.tlp_min;
  return std::max<Nanos>(c.rtt_min + c.rtt_min / 4, 20us);
}

// The retransmission timer: at the tail-loss probe's time when the newest
// frame asked for an ACK and no probe went out since the last progress,
// else at the retransmission timeout.
// While the peer gives no credit even for the oldest unacknowledged packet,
// the retransmission timer is the persist timer: a window probe after
// max(2 * srtt, tlp_min), doubling per probe up to rto_max, so a lost window
// update costs milliseconds and a stopped reader a probe every rto_max.
Nanos Engine::persist_interval(const Connection& c) const {
  const Nanos first = pto(c);
  if (c.persist_shift >= 20 || first * (1 << c.persist_shift) >= config_.rto_max) return config_.rto_max;
  return first * (1 << c.persist_shift);
}

static bool persisting(const Connection& c) noexcept {
  return c.synchronized() && !seq_before(c.snd_una, c.snd_edge);
}

void Engine::arm_retransmit(Peer& p, Nanos now) {
  Connection& c = p.conn;
  c.flags2 = clear(c.flags2, Connection::kTlpArmed);
  if (persisting(c)) {
    arm(p, kRtoTimer, now + persist_interval(c));
    return;
  }
  Nanos at = now + c.rto;
  const std::uint8_t probes = c.tail_probes();
  // Not while a window probe is out (something was sent past the peer's
  // credit): that is the persist timer's business, which backs off.
  if (c.state == ConnState::established && (c.flags2 & Connection::kAckReqOut) &&
      probes < Connection::kMaxTailProbes && c.srtt.count() != 0 && c.snd_una != c.snd_max &&
      !seq_before(c.snd_edge, c.snd_max)) {
    const Nanos probe = now + pto(c) * (1 << probes);  // backs off while unanswered
    if (probe < at) {
      at = probe;
      c.flags2 |= Connection::kTlpArmed;
    }
  }
  arm(p, kRtoTimer, at);
}

// ---- the fast path's view -------------------------------------------------------

// Tells the transport what the fast path's ACK rule (locabus/ack_rule.h)
// judges this peer's pure ACKs by, whenever it changes: the unacknowledged
// range [snd_una, snd_una + queued] and whether every ACK must reach us.
void Engine::publish(Peer& p) {
  const Connection& c = p.conn;
  locabus_conn_pub pub{};
  if (c.synchronized() && (c.flags & Connection::kTracked)) {
    pub.una = c.snd_una;
    pub.max = seq_add(c.snd_una, std::max<std::size_t>(p.tx.size(), seq_diff(c.snd_max, c.snd_una)));
    pub.flags = LOCABUS_CONN_F_PUBLISHED;
    // Answers to window probes and to timeouts must never be judged stale.
    if (c.retries > 0 || (c.flags & Connection::kProbe) || (c.flags2 & Connection::kRtoRecovery))
      pub.flags |= LOCABUS_CONN_F_PASS_ALL;
  }
  const locabus_conn_pub& old = p.published;
  if (pub.una == old.una && pub.max == old.max && pub.flags == old.flags) return;
  pub.gen = static_cast<std::uint16_t>(old.gen + 1);
  p.published = pub;
  transport_.publish_conn(p.node, pub);
}

// ---- connection lifecycle -----------------------------------------------------

// A new connection's first sequence number. The first with a peer is random;
// the next starts half the sequence space away from where the last one
// ended, so a late frame of the old connection can never fall inside the new
// one's window (docs/PROTOCOL.md, "Initial sequence numbers").
std::uint16_t Engine::initial_seq(Peer& p) {
  const auto r = static_cast<std::uint16_t>(rng_());
  if (!p.prev_valid) return r;
  // With window <= kMaxWindow the old connection's last window and the new
  // one's first are at least 2 * (0x4000 - kMaxWindow) - 0x100 apart.
  return seq_add(p.prev_snd_max, 0x8000u + (r & 0xFFu));
}

void Engine::start_connect(Peer& p) {
  Connection& c = p.conn;
  c = Connection{};
  c.iss = initial_seq(p);
  c.snd_una = c.snd_max = seq_add(c.iss, 1);
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
  c.rcv_high = c.rcv_nxt;
  // The credit our SYN / SYN_ACK advertised counts from rcv_nxt: the peer may
  // use all of it before our first ACK. The queue has only drained since.
  c.rcv_edge = c.rcv_nxt;
  advertised_window(p);
  c.cwnd = std::min(config_.cc_initial_window, config_.window);
  c.ssthresh = config_.window;
  c.recover = c.rtx_nxt = c.snd_una;
  disarm(p, kRtoTimer);
  transport_.track_peer(p.node);
  c.flags |= Connection::kTracked;
  publish(p);
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
  if (c.state != ConnState::closed) {
    // Where this connection's sequence space ended: the next one starts far away.
    p.prev_snd_max = c.snd_max;
    p.prev_valid = true;
  }
  if (c.flags & Connection::kTracked) transport_.forget_peer(p.node);
  c = Connection{};  // timers: the wheel entries no longer match and are ignored
  p.published = locabus_conn_pub{};
  p.retx.clear();
  drop_held(p);
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
  p.retx.clear();
  p.conn.sacked = 0;
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
    case PacketType::ack:
      on_ack_fields(f, *p);
      answered(*p);
      break;
    case PacketType::nak: on_nak(f, *p); break;
    default: break;
  }
}

void Engine::accept_syn(const wire::FrameView& f, Peer& p) {
  Connection& c = p.conn;
  const bool simultaneous = c.state == ConnState::syn_sent;
  if (!simultaneous) {
    c = Connection{};
    c.iss = initial_seq(p);
    c.snd_una = c.snd_max = seq_add(c.iss, 1);
    c.rto = config_.rto_initial;
    c.rtt_sent_at = clock_.now();
    c.flags |= Connection::kTiming;
  }
  c.peer_epoch = p.epoch;
  c.irs = f.header.seq();
  c.rcv_nxt = c.rcv_high = seq_add(c.irs, 1);
  c.snd_edge = seq_add(c.snd_una, f.header.window() & LOCABUS_WINDOW_MASK);
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
      c.rcv_nxt = c.rcv_high = seq_add(seq, 1);
      c.snd_edge = seq_add(f.header.ack(), f.header.window() & LOCABUS_WINDOW_MASK);
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
  apply_ack(p, ack, f.header.window() & LOCABUS_WINDOW_MASK);
}

void Engine::apply_ack(Peer& p, std::uint16_t ack, std::uint16_t window) {
  Connection& c = p.conn;
  if (!seq_between(c.snd_una, ack, c.snd_max)) return;  // old, or acknowledges what we never sent
  const bool was_retrying = c.retries > 0;
  const bool was_persisting = persisting(c);
  c.retries = 0;  // the peer is there
  const std::uint16_t acked = seq_diff(ack, c.snd_una);
  const Nanos now = clock_.now();
  if (acked > 0) {
    if ((c.flags & Connection::kTiming) && seq_before(c.rtt_seq, ack)) {
      rtt_sample(c, now - c.rtt_sent_at);
      c.flags &= static_cast<std::uint8_t>(~Connection::kTiming);
    }
    for (std::size_t i = 0; i < acked && i < p.tx.size(); ++i) {
      const MessageRing::Slot& slot = p.tx.at(i);
      if (slot.marks & kSacked) {
        --c.sacked;
      } else {
        credit_held(c, slot, std::nullopt);
      }
    }
    p.tx.pop_front(acked);
    c.snd_una = ack;
    // New data got through: the back-off is over (RFC 6298 keeps it until
    // the next sample, which may not come for long under loss).
    c.rto = base_rto(c);
    c.flags2 = clear(c.flags2, Connection::kTlpCountMask);
    if (seq_before(c.rtx_nxt, ack)) c.rtx_nxt = ack;
    if ((c.flags2 & (Connection::kRecovery | Connection::kRtoRecovery)) && !seq_before(ack, c.recover)) {
      c.flags2 = clear(c.flags2, Connection::kRecovery | Connection::kRtoRecovery);
    }
    cc_acked(p, acked);
    if (c.snd_una == c.snd_max) {
      disarm(p, kRtoTimer);
      c.flags2 = clear(c.flags2, Connection::kTlpArmed);
    } else {
      arm_retransmit(p, now);
    }
  }
  // The right edge (ack + window) never moves back.
  const std::uint16_t edge = seq_add(ack, window);
  if (seq_before(c.snd_edge, edge)) {
    c.snd_edge = edge;
    c.persist_shift = 0;  // credit again: the next closed window starts probing fast
    if (was_persisting && c.snd_una != c.snd_max) {
      // The window opened with a window probe out that this ACK does not
      // cover: it arrived beyond the window and was dropped. Send it again
      // now, not after the next probe interval.
      for (std::uint16_t s = c.snd_una; s != c.snd_max && seq_before(s, c.snd_edge); s = seq_add(s, 1))
        queue_retx(p, s);
    }
  }
  if (acked > 0 || was_retrying) publish(p);
  if (acked > 0 || seq_before(c.snd_max, c.snd_edge) || !p.retx.empty()) mark_tx_ready(p);
  if (acked > 0) maybe_finish_close(p);
}

// A NAK: the cumulative ACK, then the ranges the receiver is missing below
// `high`; everything else below `high` it holds. Frames keep their order on
// the way, so a missing frame is lost when one sent after it arrived: a
// first transmission below `high`, a retransmission sent before the latest
// frame known held (held_order). Those are sent again at once. Any other
// missing retransmission may still wait in a queue (a slow receiver's ring
// holds milliseconds of frames): it is sent again only once it is older
// than repair_wait and than the latest frame known held was when reported
// (+25 %). A run of cc_loss_run transmissions lost back to back is a queue
// overflowing: the congestion window shrinks.
void Engine::on_nak(const wire::FrameView& f, Peer& p) {
  on_ack_fields(f, p);
  Connection& c = p.conn;
  if (!c.synchronized()) return;
  ++p.counters.naks_received;
  const std::uint16_t ack = f.header.ack();
  control::NakRanges nak;
  if (f.payload.empty()) {
    nak.high = seq_add(ack, 1);  // the bare form: only ack_num is missing
    nak.ranges.push_back({ack, 1});
  } else if (auto decoded = control::decode_nak(f.payload)) {
    nak = std::move(*decoded);
  } else {
    ++stats_.rx_malformed_control;
    return;
  }
  answered(p);
  // A NAK older than what we have already seen acknowledged says nothing new.
  if (ack != c.snd_una) return;
  std::uint16_t high = nak.high;
  if (!seq_between(c.snd_una, high, c.snd_max)) high = c.snd_max;  // names what we never sent
  const Nanos now = clock_.now();
  // The timed frame asked for an ACK: a NAK that says it is held (below
  // `high`, in no range) is that answer; one that says it is missing ends
  // the timing. Waiting for the cumulative ACK instead would time the
  // repair of an earlier gap, not the round trip.
  if ((c.flags & Connection::kTiming) && seq_between(c.snd_una, c.rtt_seq, high) && c.rtt_seq != high) {
    bool missing = false;
    for (const control::SeqRange& r : nak.ranges) {
      if (seq_diff(c.rtt_seq, r.first) < r.count) missing = true;
    }
    if (!missing) rtt_sample(c, now - c.rtt_sent_at);
    c.flags &= static_cast<std::uint8_t>(~Connection::kTiming);
  }
  // The ranges, clipped to [snd_una, high), in order and without overlap.
  std::array<control::SeqRange, LOCABUS_NAK_MAX_RANGES> gaps;
  std::size_t n = 0;
  std::uint16_t cursor = c.snd_una;
  for (const control::SeqRange& r : nak.ranges) {
    std::uint16_t first = r.first;
    std::uint16_t end = seq_add(r.first, r.count);
    if (seq_before(first, cursor)) first = cursor;  // overlapping or out of order: skip what was covered
    if (seq_before(high, end)) end = high;
    if (!seq_before(first, end) || n == gaps.size()) continue;
    gaps[n++] = {first, seq_diff(end, first)};
    cursor = end;
  }
  // What it holds first: the latest transmission among those tells which
  // missing copies went out before a frame that arrived, and are lost.
  auto held = [&](std::uint16_t from, std::uint16_t to) {
    for (std::uint16_t s = from; s != to; s = seq_add(s, 1)) {
      MessageRing::Slot& slot = p.tx.at(seq_diff(s, c.snd_una));
      if (!(slot.marks & kSacked)) {
        slot.marks |= kSacked;
        ++c.sacked;
        credit_held(c, slot, now);
      }
    }
  };
  cursor = c.snd_una;
  for (std::size_t i = 0; i < n; ++i) {
    held(cursor, gaps[i].first);
    cursor = seq_add(gaps[i].first, gaps[i].count);
  }
  held(cursor, high);
  // A missing retransmission that no later frame overtook may still be on
  // its way (behind a queue): it is sent again once a later frame arrived,
  // or, if none does, once it is older than the latest frame known held was
  // when reported, plus a quarter (tail-loss probes and the timeout stay
  // behind it).
  const Nanos held_rtt{c.held_rtt};
  const Nanos wait = std::max(repair_wait(c), held_rtt + held_rtt / 4);
  // Congestion: cc_loss_run transmissions in a row (first transmissions or
  // repairs, consecutive in tx_order) newly known lost. A queue that
  // overflows drops what arrives while it is full, so a sender loses its
  // back-to-back frames; independent random loss rarely takes six.
  std::uint16_t run = 0;
  std::uint32_t run_first = 0, run_last = 0;
  std::optional<std::uint32_t> congested;  // the first transmission of the run that said so
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint16_t end = seq_add(gaps[i].first, gaps[i].count);
    for (std::uint16_t s = gaps[i].first; s != end; s = seq_add(s, 1)) {
      MessageRing::Slot& slot = p.tx.at(seq_diff(s, c.snd_una));
      if (slot.marks & kSacked) {  // it said it held it: believe the newer word
        slot.marks = clear(slot.marks, kSacked);
        --c.sacked;
      }
      slot.marks |= kLost;
      if (slot.marks & kQueued) continue;
      // A first transmission below `high` was overtaken by a later frame.
      if (!(slot.marks & kRetransmitted) || order_before(slot.sent_order, c.held_order)) {
        if (run > 0 && slot.sent_order == run_last + 1) {
          ++run;
        } else {
          run = 1;
          run_first = slot.sent_order;
        }
        run_last = slot.sent_order;
        if (run >= config_.cc_loss_run && !congested) congested = run_first;
        slot.marks |= kProvenLost;
        queue_retx(p, s);
      } else if (now - slot.sent_at >= wait) {
        queue_retx(p, s);
      }
    }
  }
  if (congested) congestion(p, false, *congested);
  if (!p.retx.empty()) mark_tx_ready(p);
}

// The peer answered with an ACK or NAK frame (not an ACK riding on its
// data): it is there and hears us, so a further tail-loss probe may go out
// if the frames still outstanding get no answer either.
void Engine::answered(Peer& p) {
  Connection& c = p.conn;
  if (!c.synchronized() || c.tail_probes() == 0) return;
  c.flags2 = clear(c.flags2, Connection::kTlpCountMask);
  if (c.snd_una != c.snd_max && (c.flags2 & Connection::kAckReqOut)) arm_retransmit(p, clock_.now());
}

void Engine::queue_retx(Peer& p, std::uint16_t seq) {
  MessageRing::Slot& slot = p.tx.at(seq_diff(seq, p.conn.snd_una));
  if (slot.marks & (kQueued | kSacked)) return;
  slot.marks |= kQueued;
  p.retx.push_back(seq);
}

// ---- congestion control -------------------------------------------------------------

// A reduction. Loss runs cut once per episode: again only for frames sent
// after the last cut (tx_order past cut_order), so a cut that was not enough
// is followed by another within a round trip, not after the repairs of the
// whole flight are through.
void Engine::congestion(Peer& p, bool timeout, std::uint32_t lost_order) {
  Connection& c = p.conn;
  if (!timeout && (c.flags2 & Connection::kRecovery) && !order_before(c.cut_order, lost_order)) return;
  ++p.counters.congestion_events;
  if (timeout) {
    // Half of everything outstanding (held by the peer or not): a timeout
    // says feedback stopped, which random loss can do too.
    c.ssthresh = std::max<std::uint16_t>(seq_diff(c.snd_max, c.snd_una) / 2, config_.cc_min_window);
    c.cwnd = config_.cc_min_window;
    c.flags2 |= Connection::kRtoRecovery;
    c.rtx_nxt = c.snd_una;
  } else {
    const auto reduced = static_cast<std::uint16_t>(std::uint32_t{c.cwnd} * config_.cc_beta / 1024);
    c.cwnd = c.ssthresh = std::max(reduced, config_.cc_min_window);
  }
  c.cwnd_acc = 0;
  // (a timeout's rescue keeps its range)
  if (timeout || !(c.flags2 & Connection::kRtoRecovery)) c.recover = c.snd_max;
  c.cut_order = c.tx_order;
  c.flags2 |= Connection::kRecovery;
}

// Slow start below ssthresh, then one packet per window of ACKed packets;
// no growth while recovering from a reduction.
void Engine::cc_acked(Peer& p, std::uint16_t acked) {
  Connection& c = p.conn;
  if ((c.flags2 & Connection::kRecovery) && !(c.flags2 & Connection::kRtoRecovery)) return;
  const std::uint32_t limit = config_.window;
  std::uint32_t cwnd = c.cwnd;
  if (cwnd < c.ssthresh) {
    cwnd = std::min<std::uint32_t>(cwnd + acked, c.ssthresh);
  } else {
    std::uint32_t acc = std::uint32_t{c.cwnd_acc} + acked;
    while (acc >= cwnd && cwnd < limit) {
      acc -= cwnd;
      ++cwnd;
    }
    c.cwnd_acc = static_cast<std::uint16_t>(std::min<std::uint32_t>(acc, 0xFFFF));
  }
  c.cwnd = static_cast<std::uint16_t>(std::min(cwnd, limit));
}

// ---- receiving data -----------------------------------------------------------------

void Engine::hold_ahead(Peer& p, std::uint16_t seq, std::uint8_t proto, std::span<const std::byte> payload) {
  p.ooo.put(seq, proto, payload);
  reorder_bytes_ += payload.size();
}

// Moves the frames held right behind rcv_nxt into the receive queue.
void Engine::drain_held(Peer& p) {
  Connection& c = p.conn;
  while (!p.ooo.empty() && p.ooo.has(c.rcv_nxt) && !p.rx.full()) {
    MessageRing::Slot& held = p.ooo.at(c.rcv_nxt);
    const std::size_t bytes = held.data.size();
    if (p.rx.empty()) rx_ready_.push_back(p.index << 1);
    p.rx.push_swap(held.proto, held.data);
    p.ooo.erase(c.rcv_nxt, bytes);
    reorder_bytes_ -= std::min(reorder_bytes_, bytes);
    ++receivable_;
    ++p.counters.data_received;
    ++c.rx_unacked;
    c.rcv_nxt = seq_add(c.rcv_nxt, 1);
  }
}

void Engine::drop_held(Peer& p) {
  reorder_bytes_ -= std::min(reorder_bytes_, p.ooo.bytes());
  p.ooo.release();
}

void Engine::on_data(const wire::FrameView& f, Peer& p) {
  Connection& c = p.conn;
  if (c.synchronized()) {
    // A frame of this connection never acknowledges what we have not sent
    // (a reordered one may carry an older ACK, however old). A frame of an
    // earlier connection between the same incarnations carries that
    // connection's ACK numbers, which lie half the sequence space from ours
    // (initial_seq()) and so look ahead of snd_max.
    if (seq_before(c.snd_max, f.header.ack())) {
      ++p.counters.rx_stale;
      return;
    }
  }
  on_ack_fields(f, p);
  if (!c.synchronized()) {
    if (c.state == ConnState::closed) send_reset(f, &p);
    return;
  }
  const std::uint16_t seq = f.header.seq();
  const bool ack_req = (f.header.window() & LOCABUS_WINDOW_ACK_REQ) != 0;
  const Nanos now = clock_.now();
  // An answer to a frame that asked for one goes out at once. Other
  // immediate ACKs and NAKs go out at once unless one just went out; then
  // they are deferred to the end of the holdoff, never dropped.
  auto respond = [&](bool nak) {
    const std::uint8_t now_flag = nak ? Connection::kNakNow : Connection::kAckNow;
    const Nanos at = c.nak_sent_at + config_.nak_holdoff;
    if (ack_req || c.nak_sent_at.count() == 0 || at <= now) {
      c.flags |= now_flag;
      mark_tx_ready(p);
    } else {
      c.flags |= nak ? Connection::kNakPending : Connection::kAckPending;
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
    ++c.rx_unacked;
    c.rcv_nxt = seq_add(c.rcv_nxt, 1);
    const bool filled = !p.ooo.empty();
    if (filled) drain_held(p);
    // The gap closed: a NAK still waiting for the holdoff would describe
    // what no longer is (with nothing held it would name rcv_nxt missing).
    if (p.ooo.empty()) c.flags &= static_cast<std::uint8_t>(~(Connection::kNakNow | Connection::kNakPending));
    if (seq_before(c.rcv_high, c.rcv_nxt)) c.rcv_high = c.rcv_nxt;
    if (seq_before(c.rcv_edge, c.rcv_nxt)) c.rcv_edge = c.rcv_nxt;
    if (ack_req || filled) {
      // A repair arrived (or the sender waits for us): say where we stand now.
      respond(!p.ooo.empty());
    } else if (c.rx_unacked >= config_.ack_every) {
      c.flags |= Connection::kAckNow;
      mark_tx_ready(p);
    } else if (c.ack_at.count() == 0) {
      arm(p, kAckTimer, now + config_.ack_delay);
    }
  } else if (seq_before(seq, c.rcv_nxt)) {
    ++p.counters.duplicates;  // our ACK was lost or late: repeat it soon
    respond(!p.ooo.empty());
  } else if (!seq_before(seq, c.rcv_edge)) {
    ++p.counters.window_drops;  // beyond the credit we gave
    respond(!p.ooo.empty());
  } else if (p.ooo.has(seq)) {
    ++p.counters.duplicates;
    respond(true);
  } else if (reorder_bytes_ + f.payload.size() > config_.reorder_memory) {
    ++p.counters.reorder_drops;  // no room to hold it: it stays missing and is asked for again
    respond(true);
  } else {
    ++p.counters.out_of_order;
    hold_ahead(p, seq, f.header.proto(), f.payload);
    if (seq_before(c.rcv_high, seq_add(seq, 1))) c.rcv_high = seq_add(seq, 1);
    respond(true);
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
        if (seq_before(c.rcv_high, f.header.seq())) c.rcv_high = f.header.seq();
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

// The tail-loss probe: a frame that asked for an ACK got no answer within
// pto(). Send the newest frame the peer is not known to hold again (asking
// for an ACK), once per round; the retransmission timeout stays behind it.
void Engine::on_tail_probe(Peer& p) {
  Connection& c = p.conn;
  c.flags2 = clear(c.flags2, Connection::kTlpArmed);
  const auto probes =
      static_cast<std::uint8_t>(std::min<int>(c.tail_probes() + 1, Connection::kMaxTailProbes));
  c.flags2 = static_cast<std::uint8_t>(clear(c.flags2, Connection::kTlpCountMask) |
                                       (probes << Connection::kTlpCountShift));
  if (c.synchronized() && c.snd_una != c.snd_max) {
    for (std::uint16_t s = seq_add(c.snd_max, 0xFFFF);; s = seq_add(s, 0xFFFF)) {
      MessageRing::Slot& slot = p.tx.at(seq_diff(s, c.snd_una));
      if (!(slot.marks & kSacked)) {
        queue_retx(p, s);
        ++p.counters.tlp_probes;
        mark_tx_ready(p);
        break;
      }
      if (s == c.snd_una) break;
    }
  }
  // The next probe (backed off), or the timeout once probes are used up.
  arm_retransmit(p, clock_.now());
}

void Engine::on_rto(Peer& p) {
  Connection& c = p.conn;
  if (c.flags2 & Connection::kTlpArmed) {
    on_tail_probe(p);
    return;
  }
  const Nanos now = clock_.now();
  const bool data_pending = c.synchronized() && (c.snd_una != c.snd_max || !p.tx.empty());
  if (!data_pending && c.state != ConnState::syn_sent && c.state != ConnState::syn_received &&
      c.state != ConnState::fin_wait) {
    return;
  }
  ++p.counters.timeouts;
  if (persisting(c)) {
    // A window probe. Only the slow ones (once the back-off has reached
    // rto_min) count towards max_retransmits; any answer resets the count.
    if (persist_interval(c) >= config_.rto_min && ++c.retries > config_.max_retransmits) {
      reset_connection(p, Failure::unreachable);
      return;
    }
    if (c.persist_shift < 20) ++c.persist_shift;
    if (c.snd_una == c.snd_max) {
      c.flags |= Connection::kProbe;  // the next new packet goes out past the edge
    } else {
      queue_retx(p, c.snd_una);  // the probe sent before (or what is in flight) again
    }
    publish(p);  // every answer must reach us now
    mark_tx_ready(p);
    arm(p, kRtoTimer, now + persist_interval(c));
    return;
  }
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
      if (c.snd_una != c.snd_max) {
        // Nothing came back for a whole timeout: what is in flight and not
        // known held is presumed lost and sent again, oldest first, within
        // a congestion window that starts over (transmit_peer), each frame
        // asking for an ACK, with tail-loss probes behind them again.
        congestion(p, true, c.tx_order);
        c.flags2 = clear(c.flags2, Connection::kTlpCountMask);
        for (std::uint16_t s : p.retx) {
          // (entries an ACK has passed since they were queued are skipped)
          if (!seq_before(s, c.snd_una) && seq_before(s, c.snd_max))
            p.tx.at(seq_diff(s, c.snd_una)).marks &= static_cast<std::uint8_t>(~kQueued);
        }
        p.retx.clear();
      }
      publish(p);  // every answer must reach us now
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

// The missing ranges between rcv_nxt and rcv_high (at most
// LOCABUS_NAK_MAX_RANGES; `high` is lowered to the end of the last one listed
// when they do not all fit). With nothing held, rcv_nxt alone is missing.
std::size_t Engine::build_nak(Peer& p, std::span<std::byte> out) {
  const Connection& c = p.conn;
  std::array<control::SeqRange, LOCABUS_NAK_MAX_RANGES> ranges;
  std::size_t n = 0;
  std::uint16_t high = c.rcv_high;
  if (p.ooo.empty() || !seq_before(c.rcv_nxt, c.rcv_high)) {
    ranges[n++] = {c.rcv_nxt, 1};
    high = seq_add(c.rcv_nxt, 1);
  } else {
    for (std::uint16_t s = c.rcv_nxt; s != c.rcv_high;) {
      if (p.ooo.has(s)) {
        s = seq_add(s, 1);
        continue;
      }
      if (n == ranges.size()) {
        high = s;  // the rest does not fit: say nothing about it
        break;
      }
      const std::uint16_t first = s;
      while (s != c.rcv_high && !p.ooo.has(s)) s = seq_add(s, 1);
      ranges[n++] = {first, seq_diff(s, first)};
    }
  }
  return control::encode_nak(high, std::span(ranges.data(), n), out);
}

bool Engine::send_ack(Peer& p, bool nak) {
  Connection& c = p.conn;
  wire::Header h = conn_header(p, nak ? PacketType::nak : PacketType::ack, LOCABUS_P_CONTROL);
  h.set_seq(c.snd_max);
  std::span<const std::byte> payload;
  if (nak) payload = std::span<const std::byte>(nak_buf_.data(), build_nak(p, nak_buf_));
  if (!emit_control(p.mac, h, payload)) return false;
  acked_now(p);
  c.flags &= static_cast<std::uint8_t>(~(Connection::kNakNow | Connection::kNakPending));
  if (nak) {
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

// One DATA frame for `seq` (in [snd_una, snd_max] : a retransmission, or
// the next new one), asking for an ACK at once if `ack_req`.
bool Engine::emit_data(Peer& p, std::uint16_t seq, bool ack_req, Nanos now) {
  Connection& c = p.conn;
  MessageRing::Slot& slot = p.tx.at(seq_diff(seq, c.snd_una));
  wire::Header h = conn_header(p, PacketType::data, slot.proto);
  h.set_seq(seq);
  if (ack_req) h.set_window(static_cast<std::uint16_t>(h.window() | LOCABUS_WINDOW_ACK_REQ));
  if (!emit(p.mac, h, slot.data)) return false;
  acked_now(p);  // the ACK rode along
  const bool again = seq_before(seq, c.snd_max);
  slot.sent_order = ++c.tx_order;
  if (again) {
    // Unless the copy before is known lost, either may be the one that arrives.
    if (!(slot.marks & kProvenLost)) slot.marks |= kAmbiguous;
    slot.marks = clear(slot.marks, kProvenLost);
    slot.marks |= kRetransmitted;
    ++p.counters.retransmits;
    if ((c.flags & Connection::kTiming) && c.rtt_seq == seq) {
      c.flags &= static_cast<std::uint8_t>(~Connection::kTiming);  // Karn: never time a retransmission
    }
  } else {
    ++p.counters.data_sent;
    c.snd_max = seq_add(seq, 1);
    if (ack_req && !(c.flags & Connection::kTiming)) {
      // Only frames answered at once are timed: a delayed ACK's wait is no round trip.
      c.flags |= Connection::kTiming;
      c.rtt_seq = seq;
      c.rtt_sent_at = now;
    }
  }
  slot.sent_at = now;
  if (ack_req) {
    c.flags2 |= Connection::kAckReqOut;
  } else {
    c.flags2 = clear(c.flags2, Connection::kAckReqOut);
  }
  if (c.rto_at.count() == 0 || (ack_req && c.tail_probes() == 0)) arm_retransmit(p, now);
  return true;
}

int Engine::transmit_peer(Peer& p) {
  Connection& c = p.conn;
  int work = 0;
  bool stalled = false;  // the transport is full: continue next time
  auto room = [&] {
    if (tx_space() == 0 && (flush(), tx_space() == 0)) {
      mark_tx_ready(p);
      stalled = true;
    }
    return !stalled;
  };
  if (c.synchronized()) {
    const Nanos now = clock_.now();
    publish(p);  // before anything beyond the published range leaves
    // 1. Repairs the peer's NAKs (or a tail-loss probe) asked for.
    std::size_t done = 0;
    while (done < p.retx.size() && room()) {
      const std::uint16_t seq = p.retx[done];
      if (!seq_before(seq, c.snd_max) || seq_before(seq, c.snd_una)) {
        ++done;  // acknowledged meanwhile
        continue;
      }
      MessageRing::Slot& slot = p.tx.at(seq_diff(seq, c.snd_una));
      if (slot.marks & kSacked) {
        slot.marks &= static_cast<std::uint8_t>(~kQueued);
        ++done;
        continue;
      }
      if (!emit_data(p, seq, done + 1 == p.retx.size(), now)) {
        mark_tx_ready(p);
        stalled = true;
        break;
      }
      slot.marks &= static_cast<std::uint8_t>(~kQueued);
      ++done;
      ++work;
    }
    p.retx.erase(p.retx.begin(), p.retx.begin() + static_cast<std::ptrdiff_t>(done));
    // 2. After a timeout: everything in flight that is not known held, again,
    //    oldest first, within the (restarting) congestion window.
    while (!stalled && (c.flags2 & Connection::kRtoRecovery) && seq_before(c.rtx_nxt, c.recover) &&
           seq_before(c.rtx_nxt, c.snd_max) && seq_diff(c.rtx_nxt, c.snd_una) < c.cwnd && room()) {
      MessageRing::Slot& slot = p.tx.at(seq_diff(c.rtx_nxt, c.snd_una));
      if (!(slot.marks & kSacked)) {
        if (!emit_data(p, c.rtx_nxt, true, now)) {
          mark_tx_ready(p);
          stalled = true;
          break;
        }
        ++work;
      }
      c.rtx_nxt = seq_add(c.rtx_nxt, 1);
    }
    // 3. New data, within the window, the peer's credit and the congestion window.
    const bool rescuing = (c.flags2 & Connection::kRtoRecovery) && seq_before(c.rtx_nxt, c.recover) &&
                          seq_before(c.rtx_nxt, c.snd_max);
    const std::uint16_t end = seq_add(c.snd_una, p.tx.size());
    while (!stalled && !rescuing && c.snd_max != end && room()) {
      const std::uint16_t span = seq_diff(c.snd_max, c.snd_una);
      if (span >= config_.window) break;  // window full
      const bool probe = (c.flags & Connection::kProbe) != 0;
      const std::uint16_t flight = static_cast<std::uint16_t>(span - c.sacked);
      if (flight >= c.cwnd && !probe) break;
      if (!seq_before(c.snd_max, c.snd_edge) && !probe) {
        // No credit. The retransmission timer doubles as the persist timer.
        if (c.rto_at.count() == 0) arm_retransmit(p, now);
        break;
      }
      c.flags &= static_cast<std::uint8_t>(~Connection::kProbe);
      const std::uint16_t next = seq_add(c.snd_max, 1);
      // Ask for an ACK at once when we must wait for one next: a probe, the
      // congestion window or the peer's credit used up, or the queue drained
      // with more than one frame out (a lone frame is answered by the reply
      // it usually provokes, or by the delayed ACK).
      const bool ack_req = probe || flight + 1 >= c.cwnd || next == c.snd_edge ||
                           seq_diff(next, c.snd_una) >= config_.window || (next == end && flight >= 1);
      if (!emit_data(p, c.snd_max, ack_req, now)) {
        mark_tx_ready(p);
        break;
      }
      ++work;
    }
  }
  // send_ack() clears the flags only once the frame is queued; a full
  // transport keeps the peer on the list for the next cycle. A NAK carries
  // the cumulative ACK too, and with frames held behind a gap every ACK is
  // a NAK (it names the gaps).
  if (c.flags & (Connection::kNakNow | Connection::kAckNow)) {
    if (!c.synchronized()) {
      c.flags &= static_cast<std::uint8_t>(~(Connection::kNakNow | Connection::kAckNow));
    } else if (send_ack(p, (c.flags & Connection::kNakNow) || !p.ooo.empty())) {
      ++work;
    } else {
      mark_tx_ready(p);
    }
  }
  return work;
}

}  // namespace locabus::engine
