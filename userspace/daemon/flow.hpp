// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Endpoint flow control between daemons (docs/PROTOCOL.md, "Endpoint flow
// control"): per (peer, destination endpoint) credit on top of the engine's
// connection window, like stream flow control in HTTP/2 or QUIC. The
// receiving daemon always drains its connections; what an endpoint has not
// read yet waits in the daemon, at most `window` messages per sending peer,
// and the sender may not send more than the receiver granted. A stopped
// reader therefore holds up only the traffic addressed to it.
//
// The same bookkeeping names every message a receiver will not deliver
// (REFUSE) and maps engine failures to the client and message that sent
// them, so each endpoint hears about its own messages, by its own numbers.
// Pure logic: no engine, no sockets; the router feeds it and sends what it
// asks for (tests/unit/flow_test.cpp drives two of them back to back).
#pragma once

#include "common/counters.hpp"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include <locabus/locabus.h>
#include <locabus/wire.h>

#include "common/function_ref.hpp"
#include "engine/engine.hpp"

namespace locabus::daemon {

/// A stream over one connection: the destination protocol in the top 16
/// bits, the destination port below (0 for application protocols).
using StreamKey = std::uint32_t;
constexpr StreamKey stream_key(std::uint8_t proto, std::uint16_t port = 0) noexcept {
  return (StreamKey{proto} << 16) | port;
}
constexpr std::uint8_t stream_proto(StreamKey k) noexcept { return static_cast<std::uint8_t>(k >> 16); }
constexpr std::uint16_t stream_port(StreamKey k) noexcept { return static_cast<std::uint16_t>(k); }

/// Who sent a message: a client (0: the daemon itself) and the client's
/// number for it (its count of sends so far).
struct Origin {
  std::uint64_t client = 0;
  std::uint64_t message = 0;
};

/// Where received messages lie in their stream. Handed back to consumed()
/// when they reach their reader, or to refuse(). count 0: not flow
/// controlled (a broadcast).
struct StreamTag {
  std::uint16_t node = 0;
  StreamKey key = 0;
  std::uint32_t gen = 0;
  std::uint64_t first = 0;
  std::uint32_t count = 0;
};

/// Messages of one client that will not be delivered: its messages
/// [first, first + count) to `node`, for `failure` (enum locabus_failure).
struct ClientFailure {
  std::uint64_t client = 0;
  std::uint16_t node = 0;
  std::uint64_t first = 0;
  std::uint64_t count = 0;
  std::uint8_t failure = 0;
};

struct FlowConfig {
  /// Messages per (sending peer, endpoint) a receiver buffers for an
  /// endpoint that does not read: the credit it grants. >= 64 (the initial
  /// window) and >= 45 (one Locasock datagram's fragments).
  std::uint32_t window = 1024;
  /// A stream that went quiet is confirmed this long after its last
  /// message was consumed (so that the sender can forget what it keeps to
  /// report failures), unless a credit went out meanwhile.
  engine::Nanos confirm_delay = std::chrono::milliseconds(2);
  /// The first generation this daemon opens; 0 (the default): a random
  /// one, so that a restarted daemon does not reuse the numbers of its
  /// previous life (a peer may still credit or refuse those).
  std::uint32_t first_gen = 0;
  void validate() const;  // throws locabus::Error naming the bad setting
};

#define LOCABUS_FLOW_COUNTERS(X)                                                                 \
  X(opens_sent, "OPEN messages sent (a new generation of streams to a peer)")                    \
  X(opens_received, "OPEN messages received")                                                    \
  X(credits_sent, "CREDIT entries sent")                                                         \
  X(credits_received, "CREDIT entries received")                                                 \
  X(refusals_sent, "REFUSE entries sent (messages this node will not deliver, named to sender)") \
  X(refused_messages, "messages this node refused (no endpoint, closed, dropped)")               \
  X(refusals_received, "REFUSE entries received")                                                \
  X(over_credit, "messages received beyond the credit granted (refused)")                        \
  X(blocked, "sends held back for lack of a stream's credit")                                    \
  X(failures_reported, "failure reports made to clients")                                        \
  X(malformed, "P_FLOW messages that could not be parsed (ignored)")                             \
  X(holds_sent, "HOLD entries sent: a reader here is full, its broadcasting peer must wait")     \
  X(resumes_sent, "RESUME entries sent")                                                         \
  X(holds_received, "HOLD entries received: broadcasts on that key wait")                        \
  X(broadcast_blocked, "broadcasts held back because a reader somewhere asked to hold")          \
  X(dropped, "REFUSE and CREDIT entries dropped: their peer could not be reached")

struct FlowCounters {
  LOCABUS_COUNTER_FIELDS(FlowCounters, LOCABUS_FLOW_COUNTERS, ::locabus::CounterKind::counter)
};

class FlowControl {
 public:
  using Fail = FunctionRef<void(const ClientFailure&)>;
  /// Sends one P_FLOW message to `node` through the engine.
  using Send = FunctionRef<engine::SendStatus(std::uint16_t node, std::span<const std::byte> payload)>;

  /// The clock paces confirmations of streams that went quiet.
  explicit FlowControl(const engine::Clock& clock, const FlowConfig& config = {});

  // ---- sending side ---------------------------------------------------------------
  /// True when `n` more messages may go on the stream now.
  bool has_credit(std::uint16_t node, StreamKey key, std::size_t n) const noexcept;
  /// Counts a send held back for lack of credit.
  void blocked() noexcept { ++counters_.blocked; }
  /// Before the first message of a generation the peer must hear OPEN: the
  /// router sends it (send_open) before the message. Returns the engine's
  /// answer; ok when no OPEN was needed.
  engine::SendStatus ensure_open(std::uint16_t node, Send send);
  /// A message the engine accepted for the stream (`engine_id` its id).
  void sent(std::uint16_t node, StreamKey key, Origin origin, std::uint64_t engine_id);

  // ---- receiving side -------------------------------------------------------------
  /// A unicast message of the stream arrived: where it lies. `over_credit`
  /// when the sender went beyond the credit (refuse it).
  StreamTag arrived(std::uint16_t node, StreamKey key, bool& over_credit);
  /// The messages reached their reader: credit for more.
  void consumed(const StreamTag& tag);
  /// The messages will not be delivered: the sender is told why
  /// (LOCABUS_REFUSE_*), and they stop counting against the credit.
  void refuse(const StreamTag& tag, std::uint8_t reason);

  // ---- broadcast (no credit: XON/XOFF per receiving node and key) ----------------------
  /// A broadcast of `node` arrived for a reader whose backlog is full: ask
  /// it to stop broadcasting on `key` (again, if the last HOLD is old).
  void hold(std::uint16_t node, StreamKey key);
  /// The reader caught up: `node` may broadcast on `key` again.
  void release(std::uint16_t node, StreamKey key);
  /// The (node, key) pairs this daemon asked to hold.
  std::vector<std::pair<std::uint16_t, StreamKey>> holding() const;
  /// Sender: whether some node asked us to hold broadcasts on `key`.
  bool broadcast_held(StreamKey key) const noexcept;
  void broadcast_blocked() noexcept { ++counters_.broadcast_blocked; }

  // ---- both -----------------------------------------------------------------------
  /// A P_FLOW message from `node`.
  void on_message(std::uint16_t node, std::span<const std::byte> payload, Fail fail);
  /// The engine failed messages [first, first + count) (its ids) to `node`.
  void on_send_failed(std::uint16_t node, std::uint64_t first, std::uint64_t count, std::uint8_t failure,
                      Fail fail);
  /// The connection to `node` ended (or the node died, left, restarted):
  /// every message of ours not yet confirmed is reported with `failure`
  /// (what the peer's daemon held is lost or out of our sight), and the
  /// next send starts a new generation. What we kept of the peer's streams
  /// to us is forgotten too (it starts a new generation as well).
  void on_reset(std::uint16_t node, std::uint8_t failure, Fail fail);
  /// Sends the REFUSE and CREDIT messages due (refusals first: a credit
  /// confirms what it covers). Returns how many messages went out. What a
  /// peer cannot take now (would_block) waits; what is due for a peer that
  /// cannot be reached (any other status) is dropped and counted.
  int flush(Send send);
  /// When flush() has something to send that waits for time (a quiet
  /// stream's confirmation); nullopt if nothing waits.
  std::optional<engine::Nanos> next_deadline() const noexcept { return confirm_at_; }
  /// Whether flush() has something to send now (HOLD/RESUME waiting for room).
  bool hold_pending() const noexcept { return hold_dirty_; }

  const FlowCounters& counters() const noexcept { return counters_; }
  const FlowConfig& config() const noexcept { return config_; }
  /// Messages sent and not yet confirmed, over all streams (memory bound:
  /// peers x streams x window).
  std::size_t unconfirmed() const noexcept;
  /// Streams with state, sending and receiving.
  std::size_t streams() const noexcept;
  /// What the receiving side keeps beyond its streams: ranges consumed out
  /// of order and refusals not sent yet (memory bound: a stream's window).
  std::size_t receiver_entries() const noexcept;

 private:
  struct InFlight {
    std::uint64_t client = 0;
    std::uint64_t message = 0;
    std::uint64_t engine_id = 0;
    bool failed = false;  // reported already
  };
  struct TxStream {
    std::uint64_t sent = 0;
    std::uint64_t limit = LOCABUS_FLOW_INITIAL_WINDOW;
    std::uint64_t confirmed = 0;    // inflight[0] is message `confirmed`
    std::deque<InFlight> inflight;  // [confirmed, sent)
  };
  struct TxPeer {
    std::uint32_t gen = 0;
    bool open = false;  // OPEN for `gen` went out
    std::unordered_map<StreamKey, TxStream> streams;
  };
  struct RxStream {
    std::uint64_t received = 0;
    std::uint64_t consumed = 0;                    // every message below is consumed or refused
    std::map<std::uint64_t, std::uint64_t> ahead;  // [first, end) consumed out of order, above `consumed`
    std::uint64_t granted = LOCABUS_FLOW_INITIAL_WINDOW;  // limit the sender knows
    std::uint64_t advertised = LOCABUS_FLOW_INITIAL_WINDOW;
    std::uint64_t confirmed = 0;  // `consumed` the sender knows
  };
  struct Refusal {
    StreamKey key = 0;
    std::uint8_t reason = 0;
    std::uint64_t first = 0;
    std::uint64_t count = 0;
  };
  struct RxPeer {
    std::uint32_t gen = 0;
    std::unordered_map<StreamKey, RxStream> streams;
    std::vector<Refusal> refusals;    // to send
    std::set<StreamKey> credit_due;   // send now
    std::set<StreamKey> confirm_due;  // send at confirm_at_: the stream went quiet
  };

  void report(std::uint16_t node, std::deque<InFlight>& q, std::size_t from, std::size_t to,
              std::uint8_t failure, Fail fail);
  void done(RxPeer& p, StreamKey key, RxStream& s, std::uint64_t first, std::uint64_t count);
  void on_credit(std::uint16_t node, std::uint32_t gen, std::span<const std::byte> entries);
  void on_refuse(std::uint16_t node, std::uint32_t gen, std::span<const std::byte> entries, Fail fail);
  void on_hold(std::uint16_t node, bool hold, std::span<const std::byte> entries);
  int flush_holds(Send send);

  const engine::Clock& clock_;
  FlowConfig config_;
  std::optional<engine::Nanos> confirm_at_;
  std::unordered_map<std::uint16_t, TxPeer> tx_;
  std::unordered_map<std::uint16_t, RxPeer> rx_;
  std::set<std::uint16_t> dirty_;  // peers with refusals or credit to send
  // Broadcast holds. Receiving side: what we asked each node to hold (and
  // what is still to be said); sending side: who asked us.
  struct HoldState {
    bool held = false;         // we want the node to hold the key
    bool told = false;         // ... and told it so (HOLD sent, or RESUME when !held)
    engine::Nanos sent_at{0};  // the last HOLD
  };
  std::map<std::pair<std::uint16_t, StreamKey>, HoldState> holds_;
  std::map<StreamKey, std::set<std::uint16_t>> held_by_;
  bool hold_dirty_ = false;     // holds_ has something to tell
  std::uint32_t next_gen_ = 1;  // never 0; random at start: unique across daemon lives
  FlowCounters counters_;
};

/// The locabus_failure a refusal reason becomes at the sender.
std::uint8_t refusal_failure(std::uint8_t reason) noexcept;

}  // namespace locabus::daemon
