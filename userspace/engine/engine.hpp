// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The Locabus protocol engine: reliable unicast (go-back-N connections) and
// membership (discovery, boot epochs, failure detection) over a Transport,
// driven by an injected Clock. Single-threaded: every method is called from
// the thread that runs do_work(). It never blocks and never sleeps; the
// owner decides how to idle (engine/idle.hpp).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/counters.hpp"
#include "common/function_ref.hpp"
#include "engine/agent.hpp"
#include "engine/buffers.hpp"
#include "engine/clock.hpp"
#include "engine/config.hpp"
#include "engine/connection.hpp"
#include "engine/events.hpp"
#include "engine/timer_wheel.hpp"
#include "engine/transport.hpp"
#include "locabus/wire.hpp"

namespace locabus::engine {

enum class SendStatus : std::uint8_t {
  ok,
  would_block,   // the peer's send queue is full: retry after it drains
  too_large,     // payload over 1484 bytes
  invalid_node,  // 0xFFFF or our own id
  unknown_node,  // never heard from: wait for discovery
  unreachable,   // the peer is dead, has left, or stopped answering
  closing,       // close() was called for this peer and has not finished
};
std::string_view to_string(SendStatus s) noexcept;

struct SendResult {
  SendStatus status = SendStatus::ok;
  std::uint64_t message_id = 0;  // ok: per-peer id, consecutive (see Event::send_failed)
  explicit operator bool() const noexcept { return status == SendStatus::ok; }
  /// What failed and what to do, for error messages.
  std::string describe(std::uint16_t node) const;
};

/// A received message, valid during the receive() callback.
struct Message {
  std::uint16_t node = 0;
  std::uint8_t proto = 0;
  std::span<const std::byte> payload;
  bool broadcast = false;  // from the node's broadcast stream (Engine::broadcast), not unicast
};

/// Per-peer counters: X(name, description), defined once and rendered
/// everywhere (struct, JSON, exposition, sums) from this list
/// (common/counters.hpp). Append only.
#define LOCABUS_PEER_COUNTERS(X)                                                                        \
  X(data_sent, "DATA first transmissions")                                                              \
  X(retransmits, "DATA frames sent again (repairs, tail-loss probes, after timeouts)")                  \
  X(data_received, "DATA accepted (in order, or delivered from behind a repaired gap)")                 \
  X(duplicates, "DATA already had")                                                                     \
  X(out_of_order, "DATA held ahead of a gap (selective repeat)")                                        \
  X(window_drops, "DATA discarded: beyond the receive credit")                                          \
  X(acks_sent, "pure ACK frames sent")                                                                  \
  X(naks_sent, "NAK frames sent (naming the missing ranges)")                                           \
  X(naks_received, "NAK frames received")                                                               \
  X(timeouts, "retransmission timeouts (window probes included)")                                       \
  X(delivered, "messages handed to the application")                                                    \
  X(reorder_drops, "DATA ahead of a gap not held: reorder_memory was full (asked for again)")           \
  X(tlp_probes, "tail-loss probes sent")                                                                \
  X(congestion_events, "congestion window reductions (loss runs, timeouts)")                            \
  X(rx_stale, "DATA whose ACK field belongs to no sequence of this connection: dropped")                \
  X(bcast_received, "its broadcast stream: new frames accepted (in order or ahead of a gap)")           \
  X(bcast_duplicates, "its broadcast stream: already had it")                                           \
  X(bcast_out_of_order, "its broadcast stream: held until the gap before it is repaired")               \
  X(bcast_window_drops, "its broadcast stream: too far ahead for broadcast_receive_buffer")             \
  X(bcast_naks_sent, "its broadcast stream: NAK frames sent for gaps")                                  \
  X(bcast_naks_heard, "its broadcast stream: other nodes' NAKs heard")                                  \
  X(bcast_nak_held, "its broadcast stream: missing sequences not NAKed in a round (a NAK was pending)") \
  X(bcast_acks_sent, "its broadcast stream: ACKs sent when its POLL asked us")                          \
  X(bcast_skipped, "its broadcast stream: lost for good (the sequences broadcast_lost events named)")   \
  X(bcast_delivered, "its broadcast stream: handed to the application")                                 \
  X(bcast_acks_received, "our broadcast stream: ACKs from it")                                          \
  X(bcast_naks_received, "our broadcast stream: NAKs from it")

struct PeerCounters {
  LOCABUS_COUNTER_FIELDS(PeerCounters, LOCABUS_PEER_COUNTERS, ::locabus::CounterKind::counter)
};

/// A snapshot of one peer, for status tools and tests.
struct PeerInfo {
  std::uint16_t node = 0;
  wire::MacAddress mac{};
  MemberState member = MemberState::joining;
  std::uint64_t epoch = 0;
  Nanos last_heard{0};
  ConnState conn = ConnState::closed;
  Nanos srtt{0};
  Nanos rto{0};
  Nanos retransmit_at{0};         // when the retransmission timer fires (0 = not armed)
  std::uint16_t in_flight = 0;    // sent, not yet acknowledged
  std::size_t queued = 0;         // in the send queue, in flight included
  std::size_t receivable = 0;     // delivered, waiting for receive()
  std::uint16_t peer_window = 0;  // credit the peer last advertised
  std::uint16_t cwnd = 0;         // congestion window (packets)
  std::uint16_t ssthresh = 0;
  std::uint16_t sacked = 0;        // in flight, but reported held by the peer
  std::size_t held_ahead = 0;      // its frames we hold ahead of a gap
  std::uint64_t next_message = 0;  // id the next send() will get
  // broadcast: its stream as we receive it, and ours as it confirmed it
  bool bcast_started = false;        // we have a position in its stream
  std::uint16_t bcast_next = 0;      // next sequence we expect from it
  std::uint16_t bcast_high = 0;      // one past the highest it is known to have sent
  std::size_t bcast_held = 0;        // its frames held ahead of a gap
  std::size_t bcast_receivable = 0;  // its broadcasts waiting for receive()
  std::uint16_t bcast_acked = 0;     // next sequence of our stream it confirmed
  PeerCounters counters;
};

/// This node's broadcast stream (sender side): X(type, name, description).
#define LOCABUS_BROADCAST_INFO(X)                                                 \
  X(std::uint16_t, low, "oldest sequence still held")                             \
  X(std::uint16_t, next, "next sequence to transmit for the first time")          \
  X(std::size_t, held, "messages held: sent and unconfirmed, plus queued")        \
  X(std::size_t, queued, "messages accepted by broadcast(), not sent yet")        \
  X(std::size_t, repairs_queued, "retransmissions waiting to go out")             \
  X(std::size_t, holding, "live members that have not confirmed everything sent") \
  X(std::uint64_t, next_message, "id the next broadcast() will get")

struct BroadcastInfo {
  LOCABUS_TYPED_FIELDS(BroadcastInfo, LOCABUS_BROADCAST_INFO, ::locabus::CounterKind::gauge)
};

/// The engine's own counters (per peer: PeerCounters; invalid frames by
/// reason: EngineStats::rx_invalid). X(name, description). Append only.
#define LOCABUS_ENGINE_COUNTERS(X)                                                                     \
  X(rx_frames, "frames received from the transport")                                                   \
  X(rx_not_ours, "frames dropped: node_to is neither us nor broadcast")                                \
  X(rx_own, "frames dropped: node_from is us, from our own MAC")                                       \
  X(rx_stale_epoch, "frames dropped: from an older incarnation of the node")                           \
  X(rx_conflict, "frames dropped: from a MAC that conflicts with a member's id")                       \
  X(rx_unknown_peer, "connection frames dropped: from an unknown node")                                \
  X(rx_unsupported, "frames dropped: valid, but no meaning (e.g. a broadcast SYN)")                    \
  X(rx_malformed_control, "control frames dropped: payload too short or wrong version")                \
  X(tx_frames, "frames handed to the transport")                                                       \
  X(tx_control_dropped, "control frames not sent: the transport's TX queue was full")                  \
  X(resets_sent, "RST frames sent")                                                                    \
  X(discover_sent, "DISCOVER frames sent")                                                             \
  X(replies_sent, "discovery replies sent")                                                            \
  X(heartbeats_sent, "heartbeats sent")                                                                \
  X(probes_sent, "failure-detection probes sent")                                                      \
  X(events_dropped, "events not queued for the application: the event queue was full")                 \
  X(bcast_sent, "our broadcast stream: first transmissions")                                           \
  X(bcast_retransmits, "our broadcast stream: repairs sent for NAKs")                                  \
  X(bcast_repairs_held,                                                                                \
    "our broadcast stream: NAKed sequences not resent (sent again within "                             \
    "bcast_repair_holdoff)")                                                                           \
  X(bcast_unrepairable, "our broadcast stream: NAKs for sequences already released")                   \
  X(bcast_polls_sent, "our broadcast stream: POLL frames sent")                                        \
  X(bcast_acks_received, "our broadcast stream: ACKs received")                                        \
  X(bcast_naks_received, "our broadcast stream: NAKs received")                                        \
  X(bcast_released, "our broadcast stream: messages every live member confirmed (or no member holds)") \
  X(bcast_would_block, "our broadcast stream: broadcast() refused, the buffer was full")               \
  X(bcast_dropped, "our broadcast stream: held messages given up by leave()")                          \
  X(rx_bcast_malformed, "POLL or broadcast ACK/NAK frames dropped: bad data")                          \
  X(rx_bcast_stale, "POLL or broadcast ACK/NAK frames dropped: for another incarnation")

struct EngineStats {
  LOCABUS_COUNTER_FIELDS(EngineStats, LOCABUS_ENGINE_COUNTERS, ::locabus::CounterKind::counter)
  std::array<std::uint64_t, wire::kFrameErrors>
      rx_invalid{};  // frames dropped by validation, by wire::FrameError
};

class Engine final : public Agent {
 public:
  /// `seed` drives every random choice (initial sequence numbers, jitter),
  /// so a simulation is repeatable. The transport and clock must outlive
  /// the engine. Throws locabus::Error if the config is invalid.
  Engine(const EngineConfig& config, Transport& transport, const Clock& clock, std::uint64_t seed);
  ~Engine() override;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // ---- Agent ------------------------------------------------------------------
  /// Receives a batch, runs due timers, transmits. Returns the work done.
  int do_work() override;
  std::optional<Nanos> next_deadline() const override;
  std::string_view name() const noexcept override { return "engine"; }
  /// The agents do_work() runs, in order: receiver, conductor, sender. For
  /// measuring them separately; they share state, so one thread runs all.
  std::array<Agent*, 3> agents() noexcept;

  // ---- unicast --------------------------------------------------------------
  /// Queues one message (<= 1484 bytes) for reliable, in-order, exactly-once
  /// delivery to `node`; connects first if needed. Never blocks: a full
  /// queue gives would_block. A message accepted here either arrives or is
  /// reported in a send_failed event.
  SendResult send(std::uint16_t node, std::uint8_t proto, std::span<const std::byte> payload);
  /// Hands up to `max` received messages to `on_message`, fairly across
  /// peers. Reading frees receive credit, which is advertised to the peer.
  std::size_t receive(std::size_t max, FunctionRef<void(const Message&)> on_message);
  /// As receive(), but `on_message` may decline a message for now (return
  /// false): its stream (the peer's connection, or its broadcast stream) is
  /// parked with that message first, and receive() skips it until unpark().
  /// Parking holds the stream's receive buffer, so its credit closes: the
  /// sender slows down (back-pressure), nothing is lost.
  std::size_t receive_or_park(std::size_t max, FunctionRef<bool(const Message&)> on_message);
  /// Streams parked by receive_or_park() are offered again.
  void unpark();
  std::size_t parked() const noexcept { return parked_.size(); }
  /// Messages waiting for receive(), unicast and broadcast.
  std::size_t receivable() const noexcept { return receivable_; }
  /// Payload bytes held ahead of gaps over all connections (<= reorder_memory).
  std::size_t reorder_bytes() const noexcept { return reorder_bytes_; }
  /// ok when `messages` sends to `node` would all be accepted now; otherwise
  /// what send() would say (too_large if they could never fit the queue).
  SendStatus can_send(std::uint16_t node, std::size_t messages) const noexcept;

  // ---- reliable broadcast -------------------------------------------------------
  /// Queues one message (<= 1484 bytes) on this node's broadcast stream: one
  /// frame reaches every node, and every member that is alive when it is sent
  /// delivers it in order, exactly once, with Message::broadcast set. Never
  /// blocks: would_block while the stream holds broadcast_buffer messages
  /// that some live member has not confirmed. The id counts broadcasts.
  SendResult broadcast(std::uint8_t proto, std::span<const std::byte> payload);
  /// ok when `messages` broadcasts would all be accepted now.
  SendStatus can_broadcast(std::size_t messages) const noexcept;
  BroadcastInfo broadcast_info() const;
  /// Closes the connection to `node` once everything queued is delivered
  /// (FIN/FIN_ACK). Sends after this return closing until it is done.
  void close(std::uint16_t node);
  /// A clean shutdown: closes every connection (queued messages fail with
  /// `shutdown`), announces that this node leaves. Call do_work() a few
  /// times after it to let the frames out.
  void leave();

  // ---- events and state -------------------------------------------------------
  /// Hands queued events to `on_event`, oldest first; returns how many.
  std::size_t poll_events(FunctionRef<void(const Event&)> on_event);
  std::vector<PeerInfo> peers() const;
  std::optional<PeerInfo> peer(std::uint16_t node) const;
  /// Members in state alive or suspect (this node not included).
  std::size_t live_members() const noexcept;
  const EngineStats& stats() const noexcept { return stats_; }
  /// Appends the engine's counter groups: "engine" (stats()),
  /// "engine.rx_invalid" (by reason), "engine.broadcast" (gauges,
  /// broadcast_info()), one "peers" group per peer (label peer) and their sum
  /// "engine.peers_total" (JSON only).
  void counters(CounterGroups& out) const;
  std::uint16_t node_id() const noexcept { return config_.node_id; }
  std::uint64_t epoch() const noexcept { return epoch_; }
  const EngineConfig& config() const noexcept { return config_; }

 private:
  struct Peer;
  enum TimerKind : std::uint8_t { kRtoTimer, kAckTimer, kBcastNakTimer };
  struct BroadcastTx;
  class Receiver;
  class Conductor;
  class Sender;

  // the agents' work (engine.cpp)
  int receive_frames();
  int run_timers();
  int transmit();

  // frames in and out (engine.cpp)
  void on_frame(FrameBytes frame);
  bool emit(const wire::MacAddress& dst, wire::Header hdr, std::span<const std::byte> payload);
  bool emit_control(const wire::MacAddress& dst, wire::Header hdr, std::span<const std::byte> payload);
  std::size_t tx_space() const noexcept;
  std::size_t flush();
  void push_event(Event e);
  Nanos jitter(Nanos upto);
  Nanos sweep_period() const noexcept;

  // peers (engine.cpp)
  Peer* find(std::uint16_t node) noexcept;
  const Peer* find(std::uint16_t node) const noexcept;
  Peer& create_peer(std::uint16_t node, const wire::MacAddress& mac);
  PeerInfo info(const Peer& p) const;

  // membership (membership.cpp)
  enum class Contact : std::uint8_t { ok, stale, conflict };
  Contact observe(std::uint16_t node, const wire::MacAddress& mac, std::optional<std::uint64_t> epoch,
                  Peer*& out);
  void set_member(Peer& p, MemberState s);
  Event member_event(EventKind kind, const Peer& p) const;
  void on_membership_frame(const wire::FrameView& f);
  int membership_tick();
  void send_hello(wire::PacketType type, std::uint16_t to, const wire::MacAddress& dst, std::uint8_t flags);
  void send_discover(const Peer* to);
  void send_reply(Peer& to);
  void send_heartbeat(bool leaving);
  void send_probe(Peer& p, bool reply);
  void report_conflict(std::uint16_t node, const wire::MacAddress& first, const wire::MacAddress& second);

  // unicast (unicast.cpp)
  void on_connection_frame(const wire::FrameView& f);
  void on_syn(const wire::FrameView& f, Peer& p);
  void accept_syn(const wire::FrameView& f, Peer& p);
  void on_syn_ack(const wire::FrameView& f, Peer& p);
  void on_fin(const wire::FrameView& f, Peer& p);
  void on_fin_ack(const wire::FrameView& f, Peer& p);
  void on_ack_fields(const wire::FrameView& f, Peer& p);
  void apply_ack(Peer& p, std::uint16_t ack, std::uint16_t window);
  void on_data(const wire::FrameView& f, Peer& p);
  void on_nak(const wire::FrameView& f, Peer& p);
  void start_connect(Peer& p);
  void established(Peer& p);
  void reset_connection(Peer& p, Failure why);
  void fail_pending(Peer& p, Failure why);
  void maybe_finish_close(Peer& p);
  void arm(Peer& p, TimerKind kind, Nanos at);
  void disarm(Peer& p, TimerKind kind);
  void on_timer(const TimerWheel::Entry& e);
  void on_rto(Peer& p);
  void rtt_sample(Connection& c, Nanos r);
  Nanos base_rto(const Connection& c) const;
  std::uint16_t advertised_window(Peer& p);
  void window_opened(Peer& p);
  wire::Header conn_header(Peer& p, wire::PacketType t, std::uint8_t proto);
  void acked_now(Peer& p);
  void send_syn(Peer& p, bool syn_ack);
  bool send_ack(Peer& p, bool nak);
  std::size_t build_nak(Peer& p, std::span<std::byte> out);
  void hold_ahead(Peer& p, std::uint16_t seq, std::uint8_t proto, std::span<const std::byte> payload);
  void drain_held(Peer& p);
  void drop_held(Peer& p);
  void publish(Peer& p);
  void arm_retransmit(Peer& p, Nanos now);
  Nanos pto(const Connection& c) const;
  Nanos persist_interval(const Connection& c) const;
  Nanos repair_wait(const Connection& c) const;
  void queue_retx(Peer& p, std::uint16_t seq);
  void answered(Peer& p);
  void on_tail_probe(Peer& p);
  void congestion(Peer& p, bool timeout, std::uint32_t lost_order);
  void cc_acked(Peer& p, std::uint16_t acked);
  std::uint16_t initial_seq(Peer& p);
  bool emit_data(Peer& p, std::uint16_t seq, bool ack_req, Nanos now);
  void send_fin(Peer& p, bool fin_ack, std::uint16_t ack_for, bool reset);
  void send_fin_to(const wire::FrameView& f, Peer* p);
  void send_reset(const wire::FrameView& f, Peer* p);
  int transmit_peer(Peer& p);
  void mark_tx_ready(Peer& p);
  Nanos* timer_fields(Peer& p, TimerKind kind, Nanos*& wheel) noexcept;

  // broadcast (broadcast.cpp)
  void bcast_init();
  void bcast_drop_all();
  bool is_live(const Peer& p) const noexcept;
  void on_bcast_data(const wire::FrameView& f, Peer& p);
  void on_poll(const wire::FrameView& f, Peer& p);
  void on_bcast_ctl(const wire::FrameView& f);
  void bcast_start(Peer& p, std::uint16_t low);
  void bcast_reset_rx(Peer& p);
  void bcast_sender_lost(Peer& p);
  void bcast_skip_to(Peer& p, std::uint16_t low);
  void bcast_report_lost(Peer& p, std::uint16_t first, std::uint64_t count, Failure why);
  void bcast_accept(Peer& p, std::uint8_t proto, std::span<const std::byte> payload);
  /// The same for a message already held in `data`: its buffer moves into
  /// the queue (swapped), no copy.
  void bcast_accept_held(Peer& p, std::uint8_t proto, std::vector<std::byte>& data);
  void bcast_accepted(Peer& p);
  void bcast_check_gaps(Peer& p);
  void bcast_nak_due(Peer& p);
  void bcast_note_ack(Peer& p, std::uint16_t ack);
  void bcast_release();
  void bcast_member_joined(Peer& p);
  void bcast_repair(std::uint16_t first, std::uint16_t count);
  bool emit_bcast_data(std::uint16_t seq, Nanos now, bool repair);
  void send_poll(Nanos now);
  int bcast_poll_tick();
  int transmit_broadcast();
  void send_bcast_ack(Peer& p);

  EngineConfig config_;
  Transport& transport_;
  const Clock& clock_;
  std::mt19937_64 rng_;
  std::uint64_t epoch_;
  wire::MacAddress mac_;
  Nanos started_at_;
  wire::ChecksumCheck checksum_check_;  // skip: the transport's frames passed the XDP program

  std::vector<std::unique_ptr<Peer>> peers_;  // index = timer-wheel owner id
  std::unordered_map<std::uint16_t, std::uint32_t> index_;
  std::size_t live_count_ = 0;
  TimerWheel wheel_;

  // TX: frames built in place in a fixed pool, handed over in batches
  std::vector<std::array<std::byte, wire::kMaxFrame>> tx_buf_;
  std::vector<std::uint16_t> tx_len_;
  std::vector<std::uint16_t> tx_slot_;  // pool slots in send order
  std::vector<FrameBytes> tx_frames_;
  std::size_t tx_count_ = 0;
  bool tx_refused_ = false;  // the last flush() left frames the transport did not take
  // How long to sleep at most after the transport refused frames, when it
  // promises to wake wait_fd() (Transport::signals_tx_space) anyway.
  static constexpr Nanos kTxRefusedBackstop{1'000'000};
  std::vector<std::uint32_t> tx_ready_;  // peers with data or control to send
  std::vector<std::uint32_t> tx_turn_;   // the peers transmit() is serving

  std::unique_ptr<BroadcastTx> btx_;  // our broadcast stream

  // Streams with messages for receive(): (peer index << 1) | 1 for its
  // broadcast stream, | 0 for its unicast connection.
  std::deque<std::uint32_t> rx_ready_;
  std::vector<std::uint32_t> parked_;  // streams receive_or_park() was told to hold
  std::size_t receivable_ = 0;
  std::size_t reorder_bytes_ = 0;  // payload held ahead of gaps, all peers (<= reorder_memory)
  std::array<std::byte, wire::kMaxPayload> nak_buf_{};

  // membership timers
  Nanos next_discover_{0};
  Nanos next_heartbeat_{0};
  Nanos next_sweep_{0};
  Nanos discover_until_{0};
  bool leaving_ = false;
  bool self_conflict_reported_ = false;
  wire::MacAddress self_conflict_mac_{};

  std::deque<Event> events_;
  EngineStats stats_;

  std::unique_ptr<Receiver> receiver_;
  std::unique_ptr<Conductor> conductor_;
  std::unique_ptr<Sender> sender_;
};

}  // namespace locabus::engine
