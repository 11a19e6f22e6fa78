// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Reliable broadcast: the paper's "NAK based protocol with polling and
// random acknowledgment". Every node owns one sender-sequenced stream; one
// frame on the wire reaches every node. Receivers hold frames that arrive
// ahead of a gap and NAK the gap after a random delay, by broadcast, so
// that one receiver's NAK holds back everyone else's for the same frames.
// The sender retransmits NAKed frames (each at most once per holdoff),
// POLLs with its highest sequence after every batch and while anything is
// unconfirmed, and names in each POLL the few members that must ACK: the
// one furthest behind and a rotating one. It frees a frame once every live
// member has confirmed it. docs/PROTOCOL.md has the whole protocol.
#include <algorithm>
#include <bit>
#include <deque>

#include "common/error.hpp"
#include "engine/control.hpp"
#include "engine/engine.hpp"
#include "engine/peer.hpp"
#include "engine/seq.hpp"

namespace locabus::engine {

using wire::PacketType;
using wire::seq_before;

namespace {
/// NAK frames one receiver sends for one stream per timer expiry; the rest
/// of its gaps wait for the next round.
constexpr std::size_t kMaxNaksPerRound = 16;
/// Sequences one NAK asks for at most.
constexpr std::size_t kMaxNakRun = 1024;
/// Broadcast DATA and POLL carry the low 16 bits of the sender's boot epoch
/// in `window`, so that a late frame of a previous incarnation is not taken
/// for part of the new stream.
std::uint16_t epoch_tag(std::uint64_t epoch) noexcept { return static_cast<std::uint16_t>(epoch); }

/// The sender has sent everything before `end`: what lies beyond the
/// receive buffer cannot be asked for yet, so `high` moves at most that far.
void bcast_raise_high(BroadcastRx& r, std::uint16_t end) noexcept {
  const std::size_t ahead = std::min<std::size_t>(seq_diff(end, r.rcv_nxt), r.queue.limit());
  const std::uint16_t capped = seq_add(r.rcv_nxt, ahead);
  if (wire::seq_before(r.high, capped) && !wire::seq_before(end, r.rcv_nxt)) r.high = capped;
}
}  // namespace

void Engine::bcast_init() {
  btx_ = std::make_unique<BroadcastTx>(config_.broadcast_buffer, static_cast<std::uint16_t>(rng_()));
}

void Engine::bcast_drop_all() {
  // leave(): what members have not confirmed is given up (best effort: the
  // frames already sent may still be repaired by nobody).
  BroadcastTx& b = *btx_;
  stats_.bcast_dropped += b.buf.size();
  b.buf.clear();
  b.repairs.clear();
  std::fill(b.repair_queued.begin(), b.repair_queued.end(), 0);
  b.low = b.nxt;
  b.next_poll = Nanos{0};
}

bool Engine::is_live(const Peer& p) const noexcept {
  return p.member == MemberState::alive || p.member == MemberState::suspect;
}

// ---- application side -------------------------------------------------------

SendResult Engine::broadcast(std::uint8_t proto, std::span<const std::byte> payload) {
  if (payload.size() > wire::kMaxPayload) return {SendStatus::too_large, 0};
  if (leaving_) return {SendStatus::unreachable, 0};
  BroadcastTx& b = *btx_;
  if (b.buf.full()) {
    ++stats_.bcast_would_block;
    return {SendStatus::would_block, 0};
  }
  b.buf.push(proto, payload);
  return {SendStatus::ok, b.next_message++};
}

SendStatus Engine::can_broadcast(std::size_t messages) const noexcept {
  if (leaving_) return SendStatus::unreachable;
  if (messages > btx_->buf.limit()) return SendStatus::too_large;
  return btx_->buf.free() >= messages ? SendStatus::ok : SendStatus::would_block;
}

BroadcastInfo Engine::broadcast_info() const {
  const BroadcastTx& b = *btx_;
  BroadcastInfo i;
  i.low = b.low;
  i.next = b.nxt;
  i.held = b.buf.size();
  i.queued = b.buf.size() - seq_diff(b.nxt, b.low);
  i.repairs_queued = b.repairs.size();
  for (const auto& p : peers_) {
    if (is_live(*p) && p->bcast_acked != b.nxt) ++i.holding;
  }
  i.next_message = b.next_message;
  return i;
}

// ---- sender -----------------------------------------------------------------

void Engine::bcast_member_joined(Peer& p) {
  // A member that joins (or comes back, or restarts) starts at the stream's
  // current position: what is sent from now on is held for it.
  BroadcastTx& b = *btx_;
  p.bcast_acked = b.nxt;
  // A POLL now tells it where our stream is, even if the stream is idle: a
  // member back after we had counted it out may miss a tail it cannot know
  // of, which it then asks for and, when freed, learns it lost. Nothing to
  // tell before our first broadcast (a cluster starting up).
  if (b.next_message > 0 && !leaving_) {
    b.poll_owed = true;
    b.next_poll = clock_.now();
  }
  // Its stream, as we receive it: back after being dead in the same life,
  // we need its position to know whether we lost anything (on_poll). Ask
  // for it now rather than wait for a POLL: its stream may be idle, and
  // the POLL it may have sent when it heard us again came while it was
  // still dead to us and was ignored (bcast_nak_due sends the question).
  BroadcastRx& r = p.brx;
  if (r.started && r.resync && !leaving_) {
    const Nanos half = config_.bcast_nak_delay / 2;
    arm(p, kBcastNakTimer, clock_.now() + half + jitter(half + Nanos{1}));
  }
}

void Engine::bcast_note_ack(Peer& p, std::uint16_t ack) {
  BroadcastTx& b = *btx_;
  if (!is_live(p)) return;
  // Only forward, and never past what was sent.
  if (seq_before(p.bcast_acked, b.low)) p.bcast_acked = b.low;
  if (!seq_between(p.bcast_acked, ack, b.nxt)) return;
  p.bcast_acked = ack;
  bcast_release();
}

void Engine::bcast_release() {
  BroadcastTx& b = *btx_;
  std::uint16_t new_low = b.nxt;
  for (const auto& p : peers_) {
    if (!is_live(*p)) continue;
    const std::uint16_t acked = seq_before(p->bcast_acked, b.low) ? b.low : p->bcast_acked;
    if (seq_before(acked, new_low)) new_low = acked;
  }
  const std::uint16_t n = seq_diff(new_low, b.low);
  if (n == 0) return;
  b.buf.pop_front(n);
  b.low = new_low;
  stats_.bcast_released += n;
}

void Engine::bcast_repair(std::uint16_t first, std::uint16_t count) {
  BroadcastTx& b = *btx_;
  const Nanos now = clock_.now();
  const std::uint16_t sent = seq_diff(b.nxt, b.low);
  std::uint16_t seq = first;
  for (std::size_t i = 0; i < count; ++i, seq = seq_add(seq, 1)) {
    const std::uint16_t off = seq_diff(seq, b.low);
    if (off >= sent) {
      // Before low: released, every member we count confirmed it (the asker
      // was dead, or joined after it was sent). After nxt: never sent.
      if (seq_before(seq, b.low)) ++stats_.bcast_unrepairable;
      continue;
    }
    const std::size_t slot = seq & b.mask;
    if (b.repair_queued[slot]) continue;
    if (b.repaired_at[slot].count() != 0 && now - b.repaired_at[slot] < config_.bcast_repair_holdoff) {
      ++stats_.bcast_repairs_held;
      continue;
    }
    b.repair_queued[slot] = 1;
    b.repairs.push_back(seq);
  }
}

bool Engine::emit_bcast_data(std::uint16_t seq, Nanos now, bool repair) {
  BroadcastTx& b = *btx_;
  const MessageRing::Slot& slot = b.buf.at(seq_diff(seq, b.low));
  wire::Header h;
  h.set_type(PacketType::data).set_proto_raw(slot.proto).set_node_to(wire::kBroadcast);
  h.set_seq(seq).set_ack(b.low).set_window(epoch_tag(epoch_));
  if (!emit(wire::MacAddress::broadcast(), h, slot.data)) return false;
  b.repaired_at[seq & b.mask] = repair ? now : Nanos{0};
  return true;
}

void Engine::send_poll(Nanos now) {
  BroadcastTx& b = *btx_;
  control::Poll poll;
  poll.epoch = epoch_;
  const std::size_t want = std::min<std::size_t>(config_.poll_ackers, LOCABUS_POLL_MAX_ACKERS);
  // The member furthest behind first: its ACK is what frees the oldest frames.
  const Peer* laggard = nullptr;
  for (const auto& p : peers_) {
    if (!is_live(*p) || p->bcast_acked == b.nxt) continue;
    if (!laggard || seq_before(p->bcast_acked, laggard->bcast_acked)) laggard = p.get();
  }
  if (laggard && want > 0) poll.ackers[poll.nackers++] = laggard->node;
  // Then a rotation over all live members, so that each is heard from now
  // and then (and is found out if it stopped receiving).
  for (std::size_t looked = 0; looked < peers_.size() && poll.nackers < want; ++looked) {
    const Peer& p = *peers_[b.rotate++ % peers_.size()];
    if (is_live(p) && !poll.asks(p.node)) poll.ackers[poll.nackers++] = p.node;
  }
  if (b.rotate >= peers_.size()) b.rotate = 0;
  const locabus_poll raw = control::encode(poll);
  wire::Header h;
  h.set_type(PacketType::poll).set_proto(wire::Protocol::control).set_node_to(wire::kBroadcast);
  h.set_seq(b.nxt).set_ack(b.low).set_window(epoch_tag(epoch_));
  if (emit_control(wire::MacAddress::broadcast(), h, control::bytes_of(raw))) {
    ++stats_.bcast_polls_sent;
    b.since_poll = 0;
  }
  (void)now;
}

int Engine::bcast_poll_tick() {
  BroadcastTx& b = *btx_;
  const Nanos now = clock_.now();
  if (b.next_poll.count() == 0 || now < b.next_poll) return 0;
  if (b.low == b.nxt && !b.poll_owed) {
    b.next_poll = Nanos{0};  // everything sent is confirmed: quiet until the next broadcast
    return 0;
  }
  send_poll(now);
  b.poll_owed = false;
  if (b.low == b.nxt) {
    b.next_poll = Nanos{0};  // only owed: its low edge tells a receiver behind it to skip
    return 1;
  }
  // Back off while nothing gets confirmed (a member is slow, or gone and not
  // yet declared dead); poll briskly again once it moves.
  b.poll_backoff =
      b.low != b.poll_low ? config_.poll_interval : std::min(b.poll_backoff * 2, config_.poll_interval_max);
  b.poll_low = b.low;
  b.next_poll = now + b.poll_backoff;
  return 1;
}

int Engine::transmit_broadcast() {
  BroadcastTx& b = *btx_;
  const Nanos now = clock_.now();
  int work = 0;
  while (!b.repairs.empty()) {
    const std::uint16_t seq = b.repairs.front();
    if (seq_diff(seq, b.low) < seq_diff(b.nxt, b.low)) {  // still held
      if (!emit_bcast_data(seq, now, true)) return work;  // the transport is full: later
      ++stats_.bcast_retransmits;
      ++work;
    }
    b.repair_queued[seq & b.mask] = 0;
    b.repairs.pop_front();
  }
  const std::uint16_t end = seq_add(b.low, b.buf.size());
  bool sent_new = false;
  while (b.nxt != end) {
    if (!emit_bcast_data(b.nxt, now, false)) break;
    ++stats_.bcast_sent;
    b.nxt = seq_add(b.nxt, 1);
    sent_new = true;
    ++work;
    if (++b.since_poll >= config_.poll_every) send_poll(now);
  }
  if (sent_new) {
    // No member: nothing to wait for.
    if (live_count_ == 0) bcast_release();
    if (b.next_poll.count() == 0 || b.poll_backoff != config_.poll_interval) {
      b.poll_backoff = config_.poll_interval;
      b.poll_low = b.low;
      b.next_poll = now + config_.poll_interval;
    }
  }
  return work;
}

// ---- receiver ---------------------------------------------------------------

void Engine::bcast_reset_rx(Peer& p) {
  BroadcastRx& r = p.brx;
  // A new incarnation: what the old one was known to have sent and we did
  // not deliver (the gaps and the frames held past them) is lost.
  if (r.started) bcast_report_lost(p, r.rcv_nxt, seq_diff(r.high, r.rcv_nxt), Failure::peer_restarted);
  r.started = false;
  r.ahead.clear();
  r.asked.clear();
  disarm(p, kBcastNakTimer);
  // Messages already delivered in order stay readable.
}

void Engine::bcast_sender_lost(Peer& p) {
  // The sender is dead or left: nobody is asked for anything more, and the
  // frames held past a gap are dropped (they cannot be delivered before the
  // gap is repaired). `high` stays: it is what the sender is known to have
  // sent.
  BroadcastRx& r = p.brx;
  if (!r.started) return;
  r.ahead.clear();
  r.asked.clear();
  r.resync = true;
  disarm(p, kBcastNakTimer);
  if (p.member == MemberState::left) {
    // It said goodbye: this life sends nothing more, so what we miss of it
    // is lost now.
    bcast_report_lost(p, r.rcv_nxt, seq_diff(r.high, r.rcv_nxt), Failure::peer_left);
    r.rcv_nxt = r.high;
    return;
  }
  // Dead: nothing is lost yet. If it comes back in the same life, its next
  // POLL says whether our position is still inside its stream (the gap is
  // repaired) or not (skipped, and reported then); if it restarts or leaves,
  // bcast_reset_rx() or the branch above reports the rest.
}

void Engine::bcast_report_lost(Peer& p, std::uint16_t first, std::uint64_t count, Failure why) {
  if (count == 0) return;
  p.counters.bcast_skipped += count;
  Event e = member_event(EventKind::broadcast_lost, p);
  e.epoch = p.brx.epoch;
  e.failure = why;
  e.first_message = first;
  e.count = count;
  push_event(e);
}

void Engine::bcast_start(Peer& p, std::uint16_t low) {
  // A receiver starts a stream at its low edge, as the first DATA or POLL it
  // hears of it says: the oldest frame the sender still holds. A member that
  // was there from the start so gets everything even if it lost the first
  // frames; a late joiner gets what the sender still had when it joined,
  // and everything after.
  BroadcastRx& r = p.brx;
  r.started = true;
  r.accepted = false;
  r.epoch = p.epoch;
  r.rcv_nxt = low;
  r.high = low;
}

void Engine::bcast_accept(Peer& p, std::uint8_t proto, std::span<const std::byte> payload) {
  BroadcastRx& r = p.brx;
  if (r.queue.empty()) rx_ready_.push_back((p.index << 1) | 1);
  r.queue.push(proto, payload);  // the frame's bytes go back to the transport after this call
  bcast_accepted(p);
}

void Engine::bcast_accept_held(Peer& p, std::uint8_t proto, std::vector<std::byte>& data) {
  BroadcastRx& r = p.brx;
  if (r.queue.empty()) rx_ready_.push_back((p.index << 1) | 1);
  r.queue.push_swap(proto, data);
  bcast_accepted(p);
}

// After a message went into the queue at rcv_nxt.
void Engine::bcast_accepted(Peer& p) {
  BroadcastRx& r = p.brx;
  r.accepted = true;
  ++receivable_;
  r.asked.erase(r.rcv_nxt);
  r.rcv_nxt = seq_add(r.rcv_nxt, 1);
  if (seq_before(r.high, r.rcv_nxt)) r.high = r.rcv_nxt;
  // Frames held ahead of the gap that just closed follow in order.
  while (!r.ahead.empty()) {
    auto it = r.ahead.find(r.rcv_nxt);
    if (it == r.ahead.end()) break;
    if (r.queue.full()) break;  // cannot happen (admission keeps room), but never overrun
    r.queue.push_swap(it->second.proto, it->second.data);  // held: no copy
    ++receivable_;
    r.ahead.erase(it);
    r.asked.erase(r.rcv_nxt);
    r.rcv_nxt = seq_add(r.rcv_nxt, 1);
  }
}

void Engine::bcast_skip_to(Peer& p, std::uint16_t low) {
  BroadcastRx& r = p.brx;
  if (!seq_before(r.rcv_nxt, low)) return;
  // The sender no longer holds what we miss before `low`: deliver what we
  // have of it, in order, and report each run of the rest as lost. Before
  // the first message is delivered this is only a later start: the position
  // was where we first heard the stream, not a promise.
  std::uint16_t run_first = r.rcv_nxt;
  std::uint64_t run_len = 0;
  while (seq_before(r.rcv_nxt, low)) {
    auto it = r.ahead.find(r.rcv_nxt);
    if (it != r.ahead.end() && !r.queue.full()) {
      bcast_report_lost(p, run_first, run_len, Failure::released);
      run_len = 0;
      BroadcastRx::Held held = std::move(it->second);
      r.ahead.erase(it);
      bcast_accept_held(p, held.proto, held.data);
      continue;
    }
    if (it != r.ahead.end()) r.ahead.erase(it);
    r.asked.erase(r.rcv_nxt);
    if (r.accepted) {
      if (run_len++ == 0) run_first = r.rcv_nxt;
    }
    r.rcv_nxt = seq_add(r.rcv_nxt, 1);
  }
  bcast_report_lost(p, run_first, run_len, Failure::released);
  if (seq_before(r.high, r.rcv_nxt)) r.high = r.rcv_nxt;
  // Anything held right after `low` can go now.
  auto it = r.ahead.find(r.rcv_nxt);
  if (it != r.ahead.end() && !r.queue.full()) {
    BroadcastRx::Held held = std::move(it->second);
    r.ahead.erase(it);
    bcast_accept_held(p, held.proto, held.data);
  }
}

void Engine::bcast_check_gaps(Peer& p) {
  BroadcastRx& r = p.brx;
  if (!r.started || r.nak_at.count() != 0 || leaving_ || !is_live(p)) return;
  if (seq_diff(r.high, r.rcv_nxt) <= r.ahead.size()) return;  // nothing missing
  // Wait a random part of bcast_nak_delay: whoever NAKs first holds back the rest.
  const Nanos half = config_.bcast_nak_delay / 2;
  arm(p, kBcastNakTimer, clock_.now() + half + jitter(half + Nanos{1}));
}

void Engine::on_bcast_data(const wire::FrameView& f, Peer& p) {
  BroadcastRx& r = p.brx;
  if (f.header.window() != epoch_tag(p.epoch)) {
    ++stats_.rx_bcast_stale;  // from another incarnation of the sender (a late frame of the last one)
    return;
  }
  const std::uint16_t seq = f.header.seq();
  if (r.resync) return;  // the next POLL places us first (it is repaired if we need it)
  if (!r.started) bcast_start(p, f.header.ack());
  bcast_skip_to(p, f.header.ack());
  if (seq_before(seq, r.rcv_nxt) || r.ahead.contains(seq)) {
    ++p.counters.bcast_duplicates;
    return;
  }
  const std::uint16_t dist = seq_diff(seq, r.rcv_nxt);
  if (dist >= r.queue.free()) {
    // No room to hold it until the gap before it closes (or to queue it):
    // drop it; it is asked for again once the application reads.
    ++p.counters.bcast_window_drops;
    if (dist < std::max<std::size_t>(r.queue.limit(), 1) && seq_before(r.high, seq_add(seq, 1))) {
      r.high = seq_add(seq, 1);
    }
    return;
  }
  ++p.counters.bcast_received;
  if (seq_before(r.high, seq_add(seq, 1))) r.high = seq_add(seq, 1);
  if (dist == 0) {
    bcast_accept(p, f.header.proto(), f.payload);
  } else {
    ++p.counters.bcast_out_of_order;
    r.ahead.emplace(seq, BroadcastRx::Held{f.header.proto(), {f.payload.begin(), f.payload.end()}});
  }
  bcast_check_gaps(p);
}

void Engine::on_poll(const wire::FrameView& f, Peer& p) {
  auto poll = control::decode_poll(f.payload);
  if (!poll) {
    ++stats_.rx_bcast_malformed;
    return;
  }
  if (poll->epoch != p.epoch || f.header.window() != epoch_tag(p.epoch)) {
    ++stats_.rx_bcast_stale;  // an older (or, not yet known to us, newer) incarnation
    return;
  }
  BroadcastRx& r = p.brx;
  const std::uint16_t next = f.header.seq();
  if (r.started && r.epoch != p.epoch) bcast_reset_rx(p);
  if (r.resync) {
    // Back after being dead, same life. Our position still means something
    // if it lies within [low, next]: what we miss is repaired. Before low,
    // the sender freed it meanwhile: bcast_skip_to() below reports it. After
    // next, the sender went round more than half the sequence space while
    // we were away: everything up to its low edge is lost, a count known
    // only modulo 65536.
    r.resync = false;
    const std::uint16_t low = f.header.ack();
    if (r.started && seq_before(next, r.rcv_nxt)) {
      if (r.accepted) bcast_report_lost(p, r.rcv_nxt, seq_diff(low, r.rcv_nxt), Failure::released);
      r.ahead.clear();
      r.asked.clear();
      r.rcv_nxt = r.high = low;
    }
  }
  if (!r.started) bcast_start(p, f.header.ack());
  bcast_skip_to(p, f.header.ack());
  // The sender has sent everything before `next`: a lost tail shows up here.
  bcast_raise_high(r, next);
  if (poll->asks(config_.node_id)) send_bcast_ack(p);
  bcast_check_gaps(p);
}

void Engine::send_bcast_ack(Peer& p) {
  const BroadcastRx& r = p.brx;
  control::BcastCtl ctl{p.node, 0, 0, p.epoch};
  const locabus_bcast_ctl raw = control::encode(ctl);
  wire::Header h;
  h.set_type(PacketType::ack).set_proto(wire::Protocol::control).set_node_to(p.node);
  h.set_seq(0).set_ack(r.rcv_nxt).set_window(static_cast<std::uint16_t>(r.queue.free()));
  if (emit_control(p.mac, h, control::bytes_of(raw))) ++p.counters.bcast_acks_sent;
}

void Engine::bcast_nak_due(Peer& p) {
  BroadcastRx& r = p.brx;
  if (!r.started || leaving_ || !is_live(p)) return;
  const Nanos now = clock_.now();
  const Nanos half = config_.bcast_nak_delay / 2;
  if (r.resync) {
    // Waiting to learn where its stream is: a NAK with count 0 names our
    // position and asks for nothing; the sender answers it with a POLL.
    // Asked again after bcast_repair_wait until a POLL comes.
    control::BcastCtl ctl{p.node, r.rcv_nxt, 0, p.epoch};
    const locabus_bcast_ctl raw = control::encode(ctl);
    wire::Header h;
    h.set_type(PacketType::nak).set_proto(wire::Protocol::control).set_node_to(wire::kBroadcast);
    h.set_seq(0).set_ack(r.rcv_nxt).set_window(static_cast<std::uint16_t>(r.queue.free()));
    if (emit_control(wire::MacAddress::broadcast(), h, control::bytes_of(raw))) ++p.counters.bcast_naks_sent;
    arm(p, kBcastNakTimer, now + config_.bcast_repair_wait + half + jitter(half + Nanos{1}));
    return;
  }
  // Ask only for what there is room to hold.
  const std::uint16_t span =
      static_cast<std::uint16_t>(std::min<std::size_t>(seq_diff(r.high, r.rcv_nxt), r.queue.free()));
  Nanos next_check{0};
  std::size_t naks = 0;
  std::uint16_t seq = r.rcv_nxt;
  std::uint16_t run_first = 0;
  std::size_t run_len = 0;
  bool missing_left = false;
  auto flush_run = [&]() -> bool {
    if (run_len == 0) return true;
    if (naks >= kMaxNaksPerRound) {
      missing_left = true;
      return false;
    }
    control::BcastCtl ctl{p.node, run_first, static_cast<std::uint16_t>(run_len), p.epoch};
    const locabus_bcast_ctl raw = control::encode(ctl);
    wire::Header h;
    h.set_type(PacketType::nak).set_proto(wire::Protocol::control).set_node_to(wire::kBroadcast);
    h.set_seq(0).set_ack(r.rcv_nxt).set_window(static_cast<std::uint16_t>(r.queue.free()));
    if (!emit_control(wire::MacAddress::broadcast(), h, control::bytes_of(raw))) {
      missing_left = true;  // the transport is full: try again shortly
      run_len = 0;
      return false;
    }
    ++naks;
    ++p.counters.bcast_naks_sent;
    const Nanos until = now + config_.bcast_repair_wait;
    std::uint16_t s = run_first;
    for (std::size_t i = 0; i < run_len; ++i, s = seq_add(s, 1)) r.asked[s] = until;
    if (next_check.count() == 0 || until < next_check) next_check = until;
    run_len = 0;
    return true;
  };
  for (std::size_t i = 0; i < span; ++i, seq = seq_add(seq, 1)) {
    const bool have = r.ahead.contains(seq);
    bool askable = !have;
    if (!have) {
      auto it = r.asked.find(seq);
      if (it != r.asked.end() && it->second > now) {
        askable = false;  // asked (by us or another node) and the repair may be on its way
        if (next_check.count() == 0 || it->second < next_check) next_check = it->second;
        ++p.counters.bcast_nak_held;
      }
    }
    if (askable) {
      if (run_len == 0) run_first = seq;
      if (++run_len >= kMaxNakRun && !flush_run()) break;
    } else if (!flush_run()) {
      break;
    }
  }
  flush_run();
  if (missing_left) {
    const Nanos soon = now + config_.bcast_nak_delay;
    if (next_check.count() == 0 || soon < next_check) next_check = soon;
  }
  // Every receiver that heard the same NAK waits until the same moment; a
  // random delay after it keeps them from asking again all at once.
  if (next_check.count() != 0) arm(p, kBcastNakTimer, next_check + half + jitter(half + Nanos{1}));
}

void Engine::on_bcast_ctl(const wire::FrameView& f) {
  const std::uint16_t from = f.header.node_from();
  auto ctl = control::decode_bcast_ctl(f.payload);
  if (!ctl) {
    ++stats_.rx_bcast_malformed;
    return;
  }
  Peer* sender = find(from);
  if (!sender || !is_live(*sender)) {
    ++stats_.rx_unknown_peer;
    return;
  }
  const bool nak = *f.header.type() == PacketType::nak;
  if (ctl->stream == config_.node_id) {
    // About our stream.
    if (ctl->epoch != epoch_) {
      ++stats_.rx_bcast_stale;
      return;
    }
    if (nak) {
      ++stats_.bcast_naks_received;
      ++sender->counters.bcast_naks_received;
    } else {
      ++stats_.bcast_acks_received;
      ++sender->counters.bcast_acks_received;
    }
    bcast_note_ack(*sender, f.header.ack());  // a NAK is a cumulative ACK too
    if (nak && ctl->count > 0) bcast_repair(ctl->first, ctl->count);
    if (nak && (seq_before(ctl->first, btx_->low) || ctl->count == 0)) {
      // Asked for what is freed, or where the stream is (a receiver back
      // after it had us for dead): a POLL at once tells it the low edge and
      // the next sequence.
      btx_->poll_owed = true;
      btx_->next_poll = clock_.now();
    }
    return;
  }
  if (!nak || f.header.node_to() != wire::kBroadcast) {
    ++stats_.rx_unsupported;  // an ACK for another node's stream is not ours to see
    return;
  }
  // Another receiver NAKed a third node's stream: hold back our own NAK for
  // the same sequences while the repair is on its way.
  Peer* owner = find(ctl->stream);
  if (!owner || !owner->brx.started || ctl->count == 0 || !is_live(*owner)) return;
  if (ctl->epoch != owner->epoch) {
    ++stats_.rx_bcast_stale;
    return;
  }
  BroadcastRx& r = owner->brx;
  ++owner->counters.bcast_naks_heard;
  const Nanos until = clock_.now() + config_.bcast_repair_wait;
  const std::uint16_t end = seq_add(ctl->first, ctl->count);
  // Those sequences exist: a gap we had not seen yet shows up.
  bcast_raise_high(r, end);
  std::uint16_t s = seq_before(ctl->first, r.rcv_nxt) ? r.rcv_nxt : ctl->first;
  for (; seq_before(s, end) && seq_before(s, r.high); s = seq_add(s, 1)) {
    if (r.ahead.contains(s)) continue;
    Nanos& at = r.asked[s];
    if (at < until) at = until;
  }
  bcast_check_gaps(*owner);
}

}  // namespace locabus::engine
