// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// A deterministic simulated Ethernet segment for the protocol engine: ports
// with MAC addresses, per-link loss, duplication, corruption, reordering and
// delay, partitions, crashed ports, TX back-pressure, one shared virtual
// clock, and a digest of everything that happened so that a run can be
// compared with (and replayed from) its seed.
//
// Everything is single-threaded and driven by the caller: engines send
// through their SimTransport, the harness calls deliver_until() to move
// time forward, then lets the engines receive.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/function_ref.hpp"
#include "engine/clock.hpp"
#include "engine/transport.hpp"
#include "locabus/wire.hpp"

namespace locabus::sim {

/// Impairments of one directed link (from port -> to port). Each copy of a
/// frame is judged independently, so a duplicated frame may lose one copy.
struct LinkParams {
  double loss = 0;       ///< probability that a copy is dropped
  double duplicate = 0;  ///< probability that the frame is delivered twice
  double corrupt = 0;    ///< probability that a copy has one bit flipped in header + data
  double reorder = 0;    ///< probability that a copy is held back by reorder_delay
  engine::Nanos delay = std::chrono::microseconds{50};
  engine::Nanos jitter = engine::Nanos{0};  ///< extra delay, uniform in [0, jitter]
  engine::Nanos reorder_delay = std::chrono::milliseconds{1};
};

/// Counters. "Copies" are per destination port: a broadcast to 255 ports
/// that all lose it counts 255 in `lost`.
struct SimStats {
  std::uint64_t sent = 0;         ///< frames accepted by send() on an up port
  std::uint64_t delivered = 0;    ///< copies put into a receive queue
  std::uint64_t lost = 0;         ///< copies dropped by LinkParams::loss
  std::uint64_t duplicated = 0;   ///< extra copies made by LinkParams::duplicate
  std::uint64_t corrupted = 0;    ///< copies with a flipped bit
  std::uint64_t reordered = 0;    ///< copies held back by LinkParams::reorder
  std::uint64_t partitioned = 0;  ///< copies dropped by a partition
  std::uint64_t port_down = 0;    ///< frames sent by, and copies addressed to, a down port
  std::uint64_t unknown_dst = 0;  ///< frames to a MAC no other port has
  std::uint64_t tx_refused = 0;   ///< frames send() did not accept (TX budget)
  std::uint64_t egress_lost = 0;  ///< frames dropped at the sender by set_egress_loss (all copies)
  std::uint64_t overflow = 0;     ///< copies dropped by a full ingress queue (set_ingress_limit)
};

/// What a trace event records; part of the digest.
enum class EventKind : std::uint8_t { send, refuse, drop, duplicate, corrupt, reorder, deliver };
enum class DropReason : std::uint8_t { none, loss, partition, port_down, unknown_dst, overflow };

class SimNetwork;

/// One port's counters: X(name, description). Append only.
#define LOCABUS_SIM_PORT_COUNTERS(X)                                        \
  X(track_calls, "track_peer() calls: the engine established a connection") \
  X(forget_calls, "forget_peer() calls: the engine closed a connection")

struct SimPortCounters {
  LOCABUS_COUNTER_FIELDS(SimPortCounters, LOCABUS_SIM_PORT_COUNTERS, ::locabus::CounterKind::counter)
};

/// One port's view of the network, handed to an engine as its Transport.
/// Owned by the SimNetwork; valid as long as it is.
class SimTransport final : public engine::Transport {
  struct Key {
    explicit Key() = default;
  };

 public:
  // Only SimNetwork can make the key.
  SimTransport(Key, SimNetwork& net, std::uint32_t port, wire::MacAddress mac) noexcept
      : net_(net), port_(port), mac_(mac) {}
  SimTransport(const SimTransport&) = delete;
  SimTransport& operator=(const SimTransport&) = delete;

  wire::MacAddress mac() const noexcept override { return mac_; }
  /// Accepts every frame unless the port has a TX budget (see
  /// SimNetwork::set_tx_budget); a down port accepts and drops everything,
  /// as a NIC without link would.
  std::size_t send(std::span<const engine::FrameBytes> frames) override;
  std::size_t receive(std::size_t max, FunctionRef<void(engine::FrameBytes)> on_frame) override;
  int wait_fd() const noexcept override { return -1; }
  void track_peer(std::uint16_t node) override;
  void forget_peer(std::uint16_t node) override;

  /// The nodes the engine currently tracks (track_peer minus forget_peer),
  /// so that tests can check the engine keeps the fast path informed.
  /// Cleared when the port goes down: a crash loses the engine's state.
  const std::set<std::uint16_t>& tracked() const noexcept { return tracked_; }
  std::uint64_t track_calls() const noexcept { return counters_.track_calls; }
  std::uint64_t forget_calls() const noexcept { return counters_.forget_calls; }
  /// "transport": the port's counters, the ACK rule's verdicts, the peers tracked.
  void counters(CounterGroups& out) const override;
  std::uint32_t port() const noexcept { return port_; }

  /// Behave like the XDP fast path (on by default): a valid pure ACK (type
  /// ACK, len 16) from a tracked peer is judged by the fast path's own ACK
  /// rule (locabus/ack_rule.h, the function the XDP program runs) against
  /// what the engine published (publish_conn) and the newest ACK consumed so
  /// far; a consumed ACK is not queued, and poll_acks() hands it over. Passed
  /// ones reach the engine as frames.
  void set_consume_acks(bool on) noexcept { consume_acks_ = on; }
  void publish_conn(std::uint16_t node, const locabus_conn_pub& pub) override;
  std::size_t poll_acks(
      FunctionRef<void(std::uint16_t node, std::uint16_t ack, std::uint16_t window)> on_ack) override;
  /// Pure ACKs consumed, and how many the rule gave each verdict
  /// (index: enum locabus_ack_verdict).
  std::uint64_t acks_consumed() const noexcept { return verdicts_[LOCABUS_ACK_CONSUME]; }
  std::uint64_t ack_verdicts(locabus_ack_verdict v) const noexcept { return verdicts_.at(v); }
  /// Consumed ACKs poll_acks() has not handed over yet.
  bool acks_pending() const noexcept {
    for (const auto& [node, rec] : acks_)
      if (rec.changed && tracked_.count(node)) return true;
    return false;
  }
  /// What the engine last published for `node`.
  locabus_conn_pub published(std::uint16_t node) const noexcept {
    auto it = published_.find(node);
    return it == published_.end() ? locabus_conn_pub{} : it->second;
  }

 private:
  friend class SimNetwork;
  /// Called on delivery; true if the frame was consumed.
  bool consume(engine::FrameBytes frame);

  struct AckRecord {
    std::uint16_t ack = 0;
    std::uint16_t window = 0;
    bool valid = false;    // the kernel record's LOCABUS_PEER_F_ACK_VALID
    bool changed = false;  // consumed since the last poll_acks()
  };
  bool consume_acks_ = true;
  std::map<std::uint16_t, AckRecord> acks_;
  std::map<std::uint16_t, locabus_conn_pub> published_;
  std::array<std::uint64_t, 5> verdicts_{};

  SimNetwork& net_;
  std::uint32_t port_;
  wire::MacAddress mac_;
  std::set<std::uint16_t> tracked_;
  SimPortCounters counters_;
};

/// The simulated segment. Deterministic: the same seed and the same calls
/// give the same deliveries, times and trace_digest() on any platform.
///
/// Semantics worth knowing:
///  - Delivery is by destination MAC: unicast to every other port with that
///    MAC, ff:ff:ff:ff:ff:ff to every other port; never back to the sender.
///  - Partitions and down ports are checked when a frame is sent and again
///    when it is due: a copy crosses only if both moments allow it. So a
///    frame in flight is lost if a partition or a crash is in force when it
///    arrives, but a port that crashed and restarted while it was in flight
///    receives it (as a rebooted node may see its predecessor's traffic).
///  - Corruption flips one bit in the Locabus header + data (never the
///    Ethernet header or padding) and is always detectable by
///    wire::decode_frame (bad checksum or a length error).
class SimNetwork {
 public:
  using Port = std::uint32_t;
  /// Used as the destination of trace events that have none (send, refuse).
  static constexpr Port kNoPort = 0xFFFF'FFFF;

  explicit SimNetwork(std::uint64_t seed);
  ~SimNetwork();
  SimNetwork(const SimNetwork&) = delete;
  SimNetwork& operator=(const SimNetwork&) = delete;

  /// The one virtual clock every simulated node must use. Starts at 0; its
  /// wall() origin is fixed, so boot epochs are reproducible too.
  engine::ManualClock& clock() noexcept { return clock_; }
  engine::Nanos now() const noexcept { return clock_.now(); }

  /// Adds an up port; ids are 0, 1, 2, ... in order of addition.
  Port add_port(wire::MacAddress mac);
  std::size_t port_count() const noexcept { return ports_.size(); }
  SimTransport& transport(Port port);
  const SimTransport& transport(Port port) const;

  /// Validated: probabilities in [0, 1], durations >= 0
  /// (std::invalid_argument otherwise).
  void set_default_link(const LinkParams& params);
  /// Overrides the default for the direction from -> to only.
  void set_link(Port from, Port to, const LinkParams& params);
  LinkParams link(Port from, Port to) const;

  /// Frames then pass only between ports of the same group; ports in no
  /// group (including ports added later) are isolated. Replaces any
  /// previous partition. A port listed twice is std::invalid_argument.
  void partition(const std::vector<std::vector<Port>>& groups);
  void heal() noexcept { partitioned_ = false; }

  /// Drops each frame `port` sends with probability `p` before it reaches
  /// any receiver (a loss every receiver shares, e.g. at the sender's NIC).
  /// std::invalid_argument outside [0, 1].
  void set_egress_loss(Port port, double p);

  /// A bottleneck in front of `port` (a NIC ring, a busy receiver): copies
  /// to it pass one per `per_frame`, in order of arrival, and at most
  /// `queue_frames` wait; more are dropped (drop tail, SimStats::overflow).
  /// Copies wait in the queue on top of the link delay. nullopt removes it.
  void set_ingress_limit(Port port, std::optional<engine::Nanos> per_frame, std::size_t queue_frames = 0);
  /// Copies waiting in `port`'s ingress queue now, and the most there were.
  std::size_t ingress_queued(Port port) const;
  std::size_t ingress_peak(Port port) const;

  /// Crash (false) or restart (true) a port. Going down empties its receive
  /// queue and its tracked() set.
  void set_up(Port port, bool up);
  bool is_up(Port port) const;

  /// Limits send() on `port` to `frames_per_step` frames until the next
  /// reset_tx_budgets(), to exercise back-pressure; nullopt = unlimited.
  void set_tx_budget(Port port, std::optional<std::size_t> frames_per_step);
  /// Gives every budgeted port its full budget again (once per harness step).
  void reset_tx_budgets() noexcept;

  /// When the next frame in flight is due, if any.
  std::optional<engine::Nanos> next_delivery() const;
  /// Delivers, in (due time, send order), every frame due at or before `t`,
  /// advancing the clock to each one's time, then to `t`. Returns how many
  /// copies reached a receive queue.
  std::size_t deliver_until(engine::Nanos t);
  bool rx_pending(Port port) const;
  std::size_t rx_queued(Port port) const;
  std::size_t in_flight() const noexcept { return in_flight_.size(); }

  const SimStats& stats() const noexcept { return stats_; }

  /// FNV-1a over every event (kind, drop reason, time, from, to, FNV-1a of
  /// the frame bytes); the seed itself is not folded in, so two seeds that
  /// lead to the same events give the same digest. Equal digests mean equal
  /// runs.
  std::uint64_t trace_digest() const noexcept { return digest_; }
  /// How many recent events recent_trace() keeps (default 2000; 0 = none).
  void set_trace_capacity(std::size_t events);
  /// The kept events, oldest first, one line each: time in µs, event, ports,
  /// decoded Locabus header.
  std::vector<std::string> recent_trace() const;
  /// The last `last_n` lines of recent_trace(), newline-separated.
  std::string format_recent_trace(std::size_t last_n) const;
  /// Receives every trace line as it happens (for debugging a replay).
  void set_trace_sink(std::function<void(std::string_view)> sink) { trace_sink_ = std::move(sink); }

  /// Called for every copy put into a receive queue, as delivered (after
  /// corruption), at its delivery time.
  void set_tap(std::function<void(Port from, Port to, engine::FrameBytes frame, engine::Nanos at)> tap) {
    tap_ = std::move(tap);
  }
  /// Called for every frame an up port's send() accepts, before impairments.
  void set_send_tap(std::function<void(Port from, engine::FrameBytes frame, engine::Nanos at)> tap) {
    send_tap_ = std::move(tap);
  }

 private:
  friend class SimTransport;

  struct Frame {
    std::vector<std::byte> bytes;
    std::uint64_t hash = 0;  // FNV-1a of bytes
  };
  using FramePtr = std::shared_ptr<const Frame>;

  struct PortState;

  struct InFlight {
    engine::Nanos at;
    std::uint64_t order;
    Port from;
    Port to;
    FramePtr frame;
  };
  struct LaterFirst {
    bool operator()(const InFlight& a, const InFlight& b) const noexcept {
      return a.at != b.at ? a.at > b.at : a.order > b.order;
    }
  };

  struct TraceRecord {
    engine::Nanos at;
    EventKind kind;
    DropReason reason;
    Port from;
    Port to;
    FramePtr frame;
  };

  std::size_t send_from(Port from, std::span<const engine::FrameBytes> frames);
  std::size_t receive_on(Port port, std::size_t max, FunctionRef<void(engine::FrameBytes)> on_frame);
  void send_one(Port from, engine::FrameBytes bytes);
  void route(Port from, Port to, const FramePtr& frame);
  FramePtr corrupt_copy(const FramePtr& frame);
  bool blocked(Port from, Port to) const noexcept;
  const LinkParams& link_ref(Port from, Port to) const;
  PortState& port_state(Port port);
  const PortState& port_state(Port port) const;

  // Randomness on raw mt19937_64 output only: the standard distributions
  // differ between standard libraries, which would break replays.
  double uniform01();
  bool chance(double p);
  std::uint64_t uniform_below(std::uint64_t n);    // [0, n), n > 0
  engine::Nanos uniform_nanos(engine::Nanos max);  // [0, max]

  void record(EventKind kind, DropReason reason, Port from, Port to, const FramePtr& frame);
  std::string format(const TraceRecord& r) const;
  static FramePtr make_frame(engine::FrameBytes bytes);

  std::mt19937_64 rng_;
  engine::ManualClock clock_;
  std::vector<std::unique_ptr<PortState>> ports_;
  std::unordered_map<std::uint64_t, std::vector<Port>> ports_by_mac_;
  LinkParams default_link_;
  std::unordered_map<std::uint64_t, LinkParams> links_;  // key: from << 32 | to
  bool partitioned_ = false;
  std::priority_queue<InFlight, std::vector<InFlight>, LaterFirst> in_flight_;
  std::uint64_t next_order_ = 0;
  SimStats stats_;

  std::uint64_t digest_;
  std::vector<TraceRecord> ring_;  // circular once full; ring_next_ is the oldest then
  std::size_t ring_capacity_ = 2000;
  std::size_t ring_next_ = 0;
  std::function<void(std::string_view)> trace_sink_;
  std::function<void(Port, Port, engine::FrameBytes, engine::Nanos)> tap_;
  std::function<void(Port, engine::FrameBytes, engine::Nanos)> send_tap_;
};

}  // namespace locabus::sim
