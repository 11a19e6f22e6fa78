// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The engine's frame I/O, its agents, peers and public API. The protocol
// logic is in unicast.cpp and membership.cpp.
#include "engine/engine.hpp"

#include <algorithm>
#include <cstring>

#include "common/error.hpp"
#include "engine/peer.hpp"
#include "engine/seq.hpp"

namespace locabus::engine {

namespace {
constexpr std::size_t kMaxQueuedEvents = 1 << 16;
}  // namespace

// The engine is three agents over shared state, run in this order by
// Engine::do_work(): the receiver takes a batch of frames and runs the
// protocol on them, the conductor runs due timers (retransmission, delayed
// ACK, discovery, heartbeats, failure detection), the sender turns queued
// messages and pending ACK/NAKs into frames and hands them to the transport.
// Keeping them separate keeps each step's cost visible and bounded (see
// docs/ARCHITECTURE.md).
#define LOCABUS_ENGINE_AGENT(Class, label, work)                                       \
  class Engine::Class final : public Agent {                                           \
   public:                                                                             \
    explicit Class(Engine& e) : e_(e) {}                                               \
    int do_work() override { return e_.work(); }                                       \
    std::optional<Nanos> next_deadline() const override { return e_.next_deadline(); } \
    std::string_view name() const noexcept override { return label; }                  \
                                                                                       \
   private:                                                                            \
    Engine& e_;                                                                        \
  };
LOCABUS_ENGINE_AGENT(Receiver, "receiver", receive_frames)
LOCABUS_ENGINE_AGENT(Conductor, "conductor", run_timers)
LOCABUS_ENGINE_AGENT(Sender, "sender", transmit)
#undef LOCABUS_ENGINE_AGENT

Engine::Engine(const EngineConfig& config, Transport& transport, const Clock& clock, std::uint64_t seed)
    : config_(config),
      transport_(transport),
      clock_(clock),
      rng_(seed),
      epoch_(static_cast<std::uint64_t>(clock.wall().count())),
      mac_(transport.mac()),
      started_at_(clock.now()),
      checksum_check_(transport.frames_validated() ? wire::ChecksumCheck::skip : wire::ChecksumCheck::verify),
      receiver_(std::make_unique<Receiver>(*this)),
      conductor_(std::make_unique<Conductor>(*this)),
      sender_(std::make_unique<Sender>(*this)) {
  config_.validate();
  tx_buf_.resize(config_.tx_batch);
  tx_len_.resize(config_.tx_batch);
  tx_slot_.resize(config_.tx_batch);
  for (std::size_t i = 0; i < tx_slot_.size(); ++i) tx_slot_[i] = static_cast<std::uint16_t>(i);
  tx_frames_.reserve(config_.tx_batch);
  bcast_init();
  // Nodes that boot together should not discover in lock-step.
  next_discover_ = started_at_ + jitter(std::min<Nanos>(config_.discover_interval / 4, 50ms));
  discover_until_ = started_at_ + config_.discover_duration;
  next_heartbeat_ = started_at_ + jitter(config_.heartbeat_interval);
  next_sweep_ = started_at_ + sweep_period();
}

Engine::~Engine() = default;

Nanos Engine::jitter(Nanos upto) {
  if (upto.count() <= 0) return Nanos{0};
  return Nanos{static_cast<std::int64_t>(rng_() % static_cast<std::uint64_t>(upto.count()))};
}

Nanos Engine::sweep_period() const noexcept {
  return std::max<Nanos>(std::min(config_.probe_interval, config_.heartbeat_interval) / 2, 1ms);
}

// ---- agents -----------------------------------------------------------------

int Engine::do_work() {
  int work = receiver_->do_work();
  work += conductor_->do_work();
  work += sender_->do_work();
  return work;
}

std::array<Agent*, 3> Engine::agents() noexcept { return {receiver_.get(), conductor_.get(), sender_.get()}; }

std::optional<Nanos> Engine::next_deadline() const {
  Nanos next = std::min({next_heartbeat_, next_discover_, next_sweep_});
  if (auto w = wheel_.next_deadline()) next = std::min(next, *w);
  if (btx_->next_poll.count() != 0) next = std::min(next, btx_->next_poll);
  const bool bcast_pending = !btx_->repairs.empty() || seq_diff(btx_->nxt, btx_->low) != btx_->buf.size();
  if (!tx_ready_.empty() || tx_count_ > 0 || bcast_pending) {
    // Something to send. If the transport refused frames and will wake its
    // wait_fd() when it can take them, sleep until then (with a backstop)
    // instead of offering them again in a busy loop.
    const Nanos now = clock_.now();
    next = std::min(next, tx_refused_ && transport_.signals_tx_space() ? now + kTxRefusedBackstop : now);
  }
  return next;
}

int Engine::receive_frames() {
  std::size_t n = transport_.poll_acks([this](std::uint16_t node, std::uint16_t ack, std::uint16_t window) {
    Peer* p = find(node);
    if (p && p->conn.synchronized()) apply_ack(*p, ack, window);
  });
  n += transport_.receive(config_.rx_batch, [this](FrameBytes f) { on_frame(f); });
  return static_cast<int>(n);
}

int Engine::run_timers() {
  const Nanos now = clock_.now();
  int work = static_cast<int>(wheel_.expire(now, [this](const TimerWheel::Entry& e) { on_timer(e); }));
  work += membership_tick();
  work += bcast_poll_tick();
  return work;
}

int Engine::transmit() {
  int work = 0;
  // Each ready peer gets one turn per call; a peer that still has work (the
  // TX batch filled up) goes back on the list for the next call.
  tx_turn_.clear();
  tx_turn_.swap(tx_ready_);  // both keep their capacity: no allocation per cycle
  for (std::uint32_t idx : tx_turn_) peers_[idx]->tx_ready = false;
  for (std::uint32_t idx : tx_turn_) work += transmit_peer(*peers_[idx]);
  work += transmit_broadcast();
  flush();
  return work;
}

void Engine::mark_tx_ready(Peer& p) {
  if (p.tx_ready) return;
  p.tx_ready = true;
  tx_ready_.push_back(p.index);
}

// ---- frames -----------------------------------------------------------------

void Engine::on_frame(FrameBytes frame) {
  ++stats_.rx_frames;
  const wire::DecodeResult r = wire::decode_frame(frame, checksum_check_);
  if (!r) {
    ++stats_.rx_invalid[static_cast<std::size_t>(r.error())];
    return;
  }
  const wire::FrameView& f = *r;
  const std::uint16_t to = f.header.node_to();
  const std::uint16_t from = f.header.node_from();
  if (to != config_.node_id && to != wire::kBroadcast) {
    ++stats_.rx_not_ours;
    return;
  }
  if (from == config_.node_id) {
    if (f.src != mac_) {
      report_conflict(from, mac_, f.src);
      ++stats_.rx_conflict;
    } else {
      ++stats_.rx_own;
    }
    return;
  }
  const wire::PacketType type = *f.header.type();
  switch (type) {
    case wire::PacketType::discover:
    case wire::PacketType::discover_reply:
    case wire::PacketType::probe:
    case wire::PacketType::probe_reply:
    case wire::PacketType::heartbeat: on_membership_frame(f); return;
    default: break;
  }
  // Broadcast streams: POLL and DATA to everyone, NAKs to everyone, ACKs
  // with data (a unicast ACK never carries any; a unicast NAK names the
  // ranges a connection misses).
  if ((type == wire::PacketType::ack && !f.payload.empty()) ||
      (type == wire::PacketType::nak && to == wire::kBroadcast)) {
    if (!leaving_) on_bcast_ctl(f);
    return;
  }
  if (type == wire::PacketType::poll || (to == wire::kBroadcast && type == wire::PacketType::data)) {
    Peer* p = find(from);
    if (!p || !is_live(*p) || p->mac != f.src) {
      ++stats_.rx_unknown_peer;  // not a member (yet): its stream starts once it is
      return;
    }
    if (leaving_) return;  // we are going: no more receiving streams
    if (type == wire::PacketType::poll) {
      on_poll(f, *p);
    } else {
      on_bcast_data(f, *p);
    }
    return;
  }
  if (to == wire::kBroadcast) {
    ++stats_.rx_unsupported;  // no other type means anything sent to everyone
    return;
  }
  on_connection_frame(f);
}

std::size_t Engine::tx_space() const noexcept { return tx_buf_.size() - tx_count_; }

bool Engine::emit(const wire::MacAddress& dst, wire::Header hdr, std::span<const std::byte> payload) {
  if (tx_count_ == tx_buf_.size()) flush();
  if (tx_count_ == tx_buf_.size()) return false;
  hdr.set_node_from(config_.node_id);
  const std::uint16_t slot = tx_slot_[tx_count_];
  const std::size_t n = wire::encode_frame(tx_buf_[slot], dst, mac_, hdr, payload);
  if (n == 0) return false;  // payload over 1484 bytes: callers check first
  tx_len_[slot] = static_cast<std::uint16_t>(n);
  ++tx_count_;
  ++stats_.tx_frames;
  return true;
}

bool Engine::emit_control(const wire::MacAddress& dst, wire::Header hdr, std::span<const std::byte> payload) {
  if (emit(dst, hdr, payload)) return true;
  ++stats_.tx_control_dropped;  // the transport is full; timers will send it again
  return false;
}

std::size_t Engine::flush() {
  if (tx_count_ == 0) return 0;
  tx_frames_.clear();
  for (std::size_t i = 0; i < tx_count_; ++i) {
    const std::uint16_t slot = tx_slot_[i];
    tx_frames_.push_back(FrameBytes(tx_buf_[slot].data(), tx_len_[slot]));
  }
  const std::size_t sent = transport_.send(tx_frames_);
  tx_refused_ = sent < tx_count_;
  if (sent >= tx_count_) {
    tx_count_ = 0;
  } else {
    // Keep the unsent frames, in order, for the next flush.
    std::rotate(tx_slot_.begin(), tx_slot_.begin() + static_cast<std::ptrdiff_t>(sent),
                tx_slot_.begin() + static_cast<std::ptrdiff_t>(tx_count_));
    tx_count_ -= sent;
  }
  return sent;
}

void Engine::push_event(Event e) {
  if (events_.size() >= kMaxQueuedEvents) {
    events_.pop_front();
    ++stats_.events_dropped;
  }
  events_.push_back(e);
}

std::size_t Engine::poll_events(FunctionRef<void(const Event&)> on_event) {
  std::size_t n = 0;
  while (!events_.empty()) {
    const Event e = events_.front();
    events_.pop_front();
    on_event(e);
    ++n;
  }
  return n;
}

// ---- peers ------------------------------------------------------------------

Engine::Peer* Engine::find(std::uint16_t node) noexcept {
  auto it = index_.find(node);
  return it == index_.end() ? nullptr : peers_[it->second].get();
}

const Engine::Peer* Engine::find(std::uint16_t node) const noexcept {
  auto it = index_.find(node);
  return it == index_.end() ? nullptr : peers_[it->second].get();
}

Engine::Peer& Engine::create_peer(std::uint16_t node, const wire::MacAddress& mac) {
  const auto idx = static_cast<std::uint32_t>(peers_.size());
  peers_.push_back(std::make_unique<Peer>(node, mac, idx, config_));
  index_.emplace(node, idx);
  return *peers_.back();
}

PeerInfo Engine::info(const Peer& p) const {
  PeerInfo i;
  i.node = p.node;
  i.mac = p.mac;
  i.member = p.member;
  i.epoch = p.epoch;
  i.last_heard = p.last_heard;
  i.conn = p.conn.state;
  i.srtt = p.conn.srtt;
  i.rto = p.conn.rto;
  i.retransmit_at = p.conn.rto_at;
  if (p.conn.synchronized()) {
    i.in_flight = static_cast<std::uint16_t>(p.conn.snd_max - p.conn.snd_una);
    i.peer_window = static_cast<std::uint16_t>(p.conn.snd_edge - p.conn.snd_una);
    i.cwnd = p.conn.cwnd;
    i.ssthresh = p.conn.ssthresh;
    i.sacked = p.conn.sacked;
  }
  i.held_ahead = p.ooo.size();
  i.queued = p.tx.size();
  i.receivable = p.rx.size();
  i.next_message = p.next_message;
  i.bcast_started = p.brx.started;
  i.bcast_next = p.brx.rcv_nxt;
  i.bcast_high = p.brx.high;
  i.bcast_held = p.brx.ahead.size();
  i.bcast_receivable = p.brx.queue.size();
  i.bcast_acked = p.bcast_acked;
  i.counters = p.counters;
  return i;
}

void Engine::counters(CounterGroups& out) const {
  out.emplace_back("engine", "the protocol engine: frames in and out, membership, our broadcast stream")
      .add(stats_);
  static constexpr CounterField kInvalid[] = {
#define LOCABUS_X_FIELD(name, desc) {#name, "frames dropped by validation: " desc, CounterKind::counter},
      LOCABUS_FRAME_ERRORS(LOCABUS_X_FIELD)
#undef LOCABUS_X_FIELD
  };
  out.emplace_back("engine.rx_invalid",
                   "frames the engine's validation dropped, by reason (wire::FrameError)")
      .add(kInvalid, stats_.rx_invalid);
  out.emplace_back("engine.broadcast", "our broadcast stream now (sender side)").add(broadcast_info());
  std::vector<const Peer*> by_node;
  for (const auto& p : peers_) by_node.push_back(p.get());
  std::sort(by_node.begin(), by_node.end(), [](const Peer* a, const Peer* b) { return a->node < b->node; });
  PeerCounters sum;
  for (const Peer* p : by_node) {
    out.emplace_back("peers", "per-peer counters of the connection and of its broadcast stream",
                     CounterLabels{{"peer", std::to_string(p->node)}})
        .add(p->counters);
    sum += p->counters;
  }
  CounterGroup& total =
      out.emplace_back("engine.peers_total", "the per-peer counters summed over every peer");
  total.add(sum);
  total.exported = false;
}

std::vector<PeerInfo> Engine::peers() const {
  std::vector<PeerInfo> out;
  out.reserve(peers_.size());
  for (const auto& p : peers_) out.push_back(info(*p));
  std::sort(out.begin(), out.end(), [](const PeerInfo& a, const PeerInfo& b) { return a.node < b.node; });
  return out;
}

std::optional<PeerInfo> Engine::peer(std::uint16_t node) const {
  const Peer* p = find(node);
  if (!p) return std::nullopt;
  return info(*p);
}

// ---- application side -----------------------------------------------------------

SendStatus Engine::can_send(std::uint16_t node, std::size_t messages) const noexcept {
  if (node == wire::kBroadcast || node == config_.node_id) return SendStatus::invalid_node;
  if (leaving_) return SendStatus::unreachable;
  const Peer* p = find(node);
  if (!p || p->member == MemberState::joining) return SendStatus::unknown_node;
  if (p->member == MemberState::dead || p->member == MemberState::left) return SendStatus::unreachable;
  if (p->conn.flags & Connection::kCloseAfterDrain || p->conn.state == ConnState::fin_wait) {
    return SendStatus::closing;
  }
  if (messages > p->tx.limit()) return SendStatus::too_large;
  return p->tx.free() >= messages ? SendStatus::ok : SendStatus::would_block;
}

SendResult Engine::send(std::uint16_t node, std::uint8_t proto, std::span<const std::byte> payload) {
  if (payload.size() > wire::kMaxPayload) return {SendStatus::too_large, 0};
  if (node == wire::kBroadcast || node == config_.node_id) return {SendStatus::invalid_node, 0};
  if (leaving_) return {SendStatus::unreachable, 0};
  Peer* p = find(node);
  if (!p || p->member == MemberState::joining) return {SendStatus::unknown_node, 0};
  if (p->member == MemberState::dead || p->member == MemberState::left) return {SendStatus::unreachable, 0};
  if (p->conn.flags & Connection::kCloseAfterDrain || p->conn.state == ConnState::fin_wait) {
    return {SendStatus::closing, 0};
  }
  if (p->tx.full()) return {SendStatus::would_block, 0};
  p->tx.push(proto, payload);
  const std::uint64_t id = p->next_message++;
  if (p->conn.state == ConnState::closed) start_connect(*p);
  mark_tx_ready(*p);
  return {SendStatus::ok, id};
}

std::size_t Engine::receive(std::size_t max, FunctionRef<void(const Message&)> on_message) {
  return receive_or_park(max, [&](const Message& m) {
    on_message(m);
    return true;
  });
}

std::size_t Engine::receive_or_park(std::size_t max, FunctionRef<bool(const Message&)> on_message) {
  std::size_t n = 0;
  // Round robin, one message per stream (a peer's connection, a peer's
  // broadcast stream) per turn.
  while (n < max && !rx_ready_.empty()) {
    const std::uint32_t entry = rx_ready_.front();
    rx_ready_.pop_front();
    Peer& p = *peers_[entry >> 1];
    const bool bcast = (entry & 1) != 0;
    MessageRing& ring = bcast ? p.brx.queue : p.rx;
    if (ring.empty()) continue;
    const MessageRing::Slot& slot = ring.at(0);
    if (!on_message(Message{p.node, slot.proto, slot.data, bcast})) {
      parked_.push_back(entry);
      continue;
    }
    ring.pop_front();
    --receivable_;
    ++n;
    if (!ring.empty()) rx_ready_.push_back(entry);
    if (bcast) {
      ++p.counters.bcast_delivered;
      bcast_check_gaps(p);  // room again: frames dropped for lack of it can be asked for
    } else {
      ++p.counters.delivered;
      if (!p.ooo.empty()) drain_held(p);  // (the credit keeps room for them; this is a safety net)
      window_opened(p);
    }
  }
  return n;
}

void Engine::unpark() {
  for (const std::uint32_t entry : parked_) rx_ready_.push_back(entry);
  parked_.clear();
}

std::size_t Engine::live_members() const noexcept { return live_count_; }

// ---- names ------------------------------------------------------------------

std::string_view to_string(SendStatus s) noexcept {
  switch (s) {
    case SendStatus::ok: return "ok";
    case SendStatus::would_block: return "would_block";
    case SendStatus::too_large: return "too_large";
    case SendStatus::invalid_node: return "invalid_node";
    case SendStatus::unknown_node: return "unknown_node";
    case SendStatus::unreachable: return "unreachable";
    case SendStatus::closing: return "closing";
  }
  return "unknown";
}

std::string SendResult::describe(std::uint16_t node) const {
  const std::string n = std::to_string(node);
  switch (status) {
    case SendStatus::ok: return "message " + std::to_string(message_id) + " to node " + n + " queued";
    case SendStatus::would_block:
      return "send to node " + n +
             " would block: its send queue is full; retry when it drains "
             "(or raise send_buffer)";
    case SendStatus::too_large:
      return "message to node " + n + " is larger than 1484 bytes; split it (Locasock fragments datagrams)";
    case SendStatus::invalid_node:
      return "node " + n + " cannot be sent to: 0xFFFF is broadcast and a node does not send to itself";
    case SendStatus::unknown_node:
      return "node " + n + " is not known yet; wait for discovery (see the peers list) and retry";
    case SendStatus::unreachable:
      return "node " + n + " is unreachable (dead, left, or this node is leaving); retry after it rejoins";
    case SendStatus::closing: return "the connection to node " + n + " is closing; retry once it has closed";
  }
  return "send to node " + n + ": unknown status";
}

void EngineConfig::validate() const {
  auto bad = [](const std::string& what) {
    throw Error("invalid engine configuration: " + what, 0, "fix the setting and start again");
  };
  if (node_id == wire::kBroadcast) bad("node_id 65535 (0xFFFF) is reserved for broadcast");
  if (window == 0 || window > kMaxWindow) {
    bad("window must be 1.." + std::to_string(kMaxWindow) +
        " packets (a new connection starts half the sequence space from the last one; two windows must fit "
        "between them)");
  }
  if (send_buffer == 0 || send_buffer > 32767) bad("send_buffer must be 1..32767 messages");
  if (receive_buffer == 0) bad("receive_buffer must be at least 1 message");
  if (ack_every == 0) bad("ack_every must be at least 1");
  if (ack_delay.count() <= 0 || nak_holdoff.count() < 0 || discover_duration.count() < 0) {
    bad("ack_delay must be positive; nak_holdoff and discover_duration must not be negative");
  }
  if (rto_min <= ack_delay) {
    bad("rto_min must be longer than ack_delay, or every lone message is retransmitted before its "
        "delayed ACK can arrive");
  }
  if (rto_initial < rto_min || rto_max < rto_initial) bad("need rto_min <= rto_initial <= rto_max");
  if (tlp_min.count() <= 0 || tlp_min >= rto_min) bad("tlp_min must be positive and shorter than rto_min");
  if (cc_min_window == 0 || cc_initial_window < cc_min_window) {
    bad("need 1 <= cc_min_window <= cc_initial_window (both are capped by window)");
  }
  if (cc_loss_run < 2) bad("cc_loss_run must be at least 2 packets (a single loss is never congestion)");
  if (cc_beta < 512 || cc_beta >= 1024) bad("cc_beta must be 512..1023 (0.5 .. 0.999, in 1/1024)");
  if (reorder_memory < wire::kMaxPayload) bad("reorder_memory must hold at least one frame (1484 bytes)");
  if (max_retransmits == 0) bad("max_retransmits must be at least 1");
  if (broadcast_buffer == 0 || broadcast_buffer > 16384) bad("broadcast_buffer must be 1..16384 messages");
  if (broadcast_receive_buffer == 0 || broadcast_receive_buffer > 16384) {
    bad("broadcast_receive_buffer must be 1..16384 messages");
  }
  if (poll_every == 0) bad("poll_every must be at least 1 frame");
  if (poll_ackers == 0 || poll_ackers > LOCABUS_POLL_MAX_ACKERS) bad("poll_ackers must be 1..4");
  if (poll_interval.count() <= 0 || poll_interval_max < poll_interval) {
    bad("poll_interval must be positive and poll_interval_max at least poll_interval");
  }
  if (bcast_nak_delay.count() <= 0 || bcast_repair_wait.count() <= 0 || bcast_repair_holdoff.count() < 0) {
    bad("bcast_nak_delay and bcast_repair_wait must be positive; bcast_repair_holdoff must not be negative");
  }
  if (discover_interval.count() <= 0 || heartbeat_interval.count() <= 0 || probe_interval.count() <= 0) {
    bad("discover_interval, heartbeat_interval and probe_interval must be positive");
  }
  if (suspect_after <= heartbeat_interval) bad("suspect_after must be longer than heartbeat_interval");
  if (dead_after <= suspect_after) bad("dead_after must be longer than suspect_after");
  if (rx_batch == 0 || tx_batch == 0) bad("rx_batch and tx_batch must be at least 1");
}

}  // namespace locabus::engine
