// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// KCCM's node side (docs/KCCM.md, docs/PROTOCOL.md "KCCM"), independent of
// the daemon: per space the receive queue and the waiting queue, the
// handler registry, the reference table of calls being answered here, the
// built-in handlers, and the KCCM frame (struct kccm_hdr) both ways. It
// talks to the outside only through Host (send or broadcast one KCCM
// datagram, deliver a record to a client, refuse or consume a flow-control
// StreamTag, the clock), so it is tested against a fake host
// (tests/unit/kccm_node_test.cpp); services/kccm.* adapts it to the
// daemon's seam, with Locasock framing datagrams into engine messages.
// Single-threaded, like the daemon.
#pragma once

#include "common/counters.hpp"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <locabus/locabus.h>
#include <locabus/wire.h>

#include "daemon/flow.hpp"
#include "engine/clock.hpp"
#include "engine/engine.hpp"

namespace locabus::kccm {

using ClientId = std::uint64_t;
using daemon::Origin;
using daemon::StreamTag;

inline constexpr std::size_t kHeaderLen = KCCM_HDR_LEN;  // 32
inline constexpr std::size_t kMaxName = KCCM_MAX_NAME;   // 63
inline constexpr std::size_t kMaxData = KCCM_MAX_DATA;   // 65440
inline constexpr std::uint16_t kAnyNode = LOCABUS_KCCM_ANY_NODE;

// ---- the frame ----------------------------------------------------------------------

/// A parsed KCCM datagram; name and body point into it.
struct Frame {
  std::uint8_t type = 0;  // KCCM_T_*
  std::uint8_t flags = 0;
  std::uint8_t status = 0;
  std::uint32_t tag = 0;
  std::uint32_t instance = 0;
  std::uint32_t deadline_ms = 0;
  std::uint64_t caller = 0;
  std::uint64_t call_id = 0;
  std::string_view name;  // CALL
  std::span<const std::byte> body;
};

/// The frame in `datagram`, or nullopt with *why saying what is wrong:
/// shorter than the header, an unknown type, a CALL whose name_len is 0,
/// over 63 or beyond the datagram, or whose deadline is 0, a name on a
/// DATA or REPLY, a body over KCCM_MAX_DATA.
std::optional<Frame> parse_frame(std::span<const std::byte> datagram, std::string* why = nullptr);
/// Writes `f` (header, f.name, f.body) into `out`, replacing what it held.
void write_frame(const Frame& f, std::vector<std::byte>& out);

// ---- what the node needs ------------------------------------------------------------

class Host {
 public:
  virtual ~Host() = default;
  virtual engine::Nanos now() const noexcept = 0;
  /// Sends one KCCM datagram on (LOCABUS_P_KCCM, space) to another node,
  /// all of it or nothing: ok, would_block (retry later), or why it cannot
  /// go (unknown_node...). Failures after ok reach `origin` (origin.client
  /// 0: the daemon itself).
  virtual engine::SendStatus send(std::uint16_t node, std::uint16_t space, std::span<const std::byte> frame,
                                  Origin origin) = 0;
  /// The same to every other node (Locabus broadcast).
  virtual engine::SendStatus broadcast(std::uint16_t space, std::span<const std::byte> frame) = 0;
  /// A record for a client; `tag`'s messages count as consumed once it
  /// reaches the client (count 0: none).
  virtual void deliver(ClientId client, std::uint16_t type, std::uint16_t aux,
                       std::span<const std::byte> head, std::span<const std::byte> body,
                       const StreamTag& tag) = 0;
  /// Messages that will not be delivered (LOCABUS_REFUSE_*): their sender is told.
  virtual void refuse(const StreamTag& tag, std::uint8_t reason) = 0;
  /// Messages the node used up without a client (a call a built-in answered).
  virtual void consume(const StreamTag& tag) = 0;
  /// "pid 123 (uid 1000)".
  virtual std::string who(ClientId client) const = 0;
  /// Records waiting for room in the client's ring (its backlog).
  virtual std::size_t backlog(ClientId client) const = 0;
};

struct NodeConfig {
  std::uint16_t node = 0;
  /// This daemon life's instance number (CALL/REPLY); 0: a random one.
  std::uint32_t instance = 0;
  /// Local messages (sent to this node) queued per space, at most: more
  /// sends wait (the daemon's endpoint_window).
  std::uint32_t window = 1024;
  /// Calls being answered by local handlers, at most; beyond, callers get
  /// LOCABUS_KCCM_OVERLOADED.
  std::size_t max_refs = 65536;
  /// REPLYs of the node's own (built-ins, no_such_handler, handler_exited)
  /// waiting for room toward their caller, at most; beyond, they are
  /// dropped (counted; the caller's deadline covers them).
  std::size_t max_pending_replies = 4096;
  /// Records a client may have waiting in its backlog (it does not read its
  /// ring as fast as it asks): beyond, its records wait (blocked) until it
  /// reads, so that what its own requests answer (cancels, acks, local
  /// results, messages for its receives) cannot grow without bound.
  std::size_t max_backlog = 1024;
  /// Receives one client may have waiting, at most; one more breaks its
  /// connection (a flood: a process has one receive per thread).
  std::size_t max_waiters = 4096;
  /// A reference is forgotten this long after its call's deadline.
  engine::Nanos ref_grace = std::chrono::seconds(1);
};

/// What a client record came to (the daemon's RecordResult).
struct Outcome {
  enum Kind { ok, blocked, refused, broken } kind = ok;
  std::uint16_t node = 0;                              // refused: for which node
  engine::SendStatus status = engine::SendStatus::ok;  // refused: why
  std::string error;                                   // broken: what the client did wrong
};

#define LOCABUS_KCCM_COUNTERS(X)                                                                            \
  X(sends, "messages clients sent to other nodes (accepted)")                                               \
  X(local_sends, "messages clients sent to their own node")                                                 \
  X(messages_in, "DATA frames received from other nodes")                                                   \
  X(handed_over, "messages handed straight to a waiting receive")                                           \
  X(queued, "messages that joined a receive queue")                                                         \
  X(taken, "queued messages a receive took")                                                                \
  X(no_endpoint, "DATA for a space nobody attached here (refused: no_endpoint)")                            \
  X(refused_on_close, "queued messages refused (endpoint_closed) when the last client of their space left") \
  X(dropped_on_close, "queued local messages dropped when the last client of their space left")             \
  X(cancels, "cancel records (each answered)")                                                              \
  X(registered, "handlers registered")                                                                      \
  X(register_refused, "registrations and unregistrations refused (EEXIST, EINVAL, ENOENT)")                 \
  X(calls_out, "calls sent to another node")                                                                \
  X(calls_local, "calls to this node, dispatched without the network")                                      \
  X(calls_broadcast, "calls sent to every node")                                                            \
  X(calls_in, "CALL frames received")                                                                       \
  X(invokes, "calls handed to a registered handler")                                                        \
  X(builtin, "calls answered by a built-in handler (echo, node.info)")                                      \
  X(no_such_handler, "calls for a name nobody registered (answered no_such_handler)")                       \
  X(overloaded, "calls answered overloaded: the reference table was full")                                  \
  X(replies_out, "REPLY frames sent")                                                                       \
  X(results, "results delivered to calling clients")                                                        \
  X(replies_refused, "REPLY frames refused: another instance, or a caller not attached here")               \
  X(late_replies, "replies to a call already forgotten (expired, origin gone) or not this client's")        \
  X(refs_expired, "references forgotten at their call's deadline + grace")                                  \
  X(refs_forgotten, "references forgotten because their origin died, left, restarted or disconnected")      \
  X(handler_exited, "calls answered handler_exited: the handler's client left")                             \
  X(reply_failures, "REPLY frames the network refused or failed (the caller's deadline covers them)")       \
  X(replies_dropped, "REPLYs of the node's own dropped: too many waited for room")                          \
  X(results_unclaimed, "local results whose caller had left")                                               \
  X(bad_frames, "KCCM frames refused as malformed (or a DATA that came by broadcast)")                      \
  X(backlog_blocked, "client records held back: the client had max_backlog records not read yet")

struct NodeStats {
  LOCABUS_COUNTER_FIELDS(NodeStats, LOCABUS_KCCM_COUNTERS, ::locabus::CounterKind::counter)
};

/// One node's KCCM state.
class Node {
 public:
  /// The host must outlive the node.
  Node(Host& host, const NodeConfig& config);
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // ---- clients
  /// `client` attached to `space` ("open" {"kccm": space}).
  void attach(ClientId client, std::uint16_t space);
  /// The client hung up: its receives and handlers go at once (records
  /// left in its ring still come, then detach()).
  void leave(ClientId client);
  /// The client is gone: calls its handlers were answering get
  /// handler_exited; if it was the last of its space, the queued messages
  /// are refused (endpoint_closed).
  void detach(ClientId client);
  /// A record from the client's ring; `message` is its number.
  Outcome on_record(ClientId client, std::uint16_t type, std::uint16_t aux,
                    std::span<const std::byte> payload, std::uint64_t message);

  // ---- the network
  /// A KCCM datagram from `node` for `space` (it came by broadcast, or at
  /// `tag` in its stream). It delivers, queues, consumes or refuses `tag`.
  void on_frame(std::uint16_t node, std::uint16_t space, bool broadcast, std::span<const std::byte> datagram,
                const StreamTag& tag);
  /// Membership: `node` is alive (CallStarted lists it) or not.
  void set_alive(std::uint16_t node, bool alive);
  /// `node` died, left, restarted or its connection ended: its calls here
  /// are forgotten (their callers are told by their own daemon), and the
  /// REPLYs waiting for it dropped.
  void forget_node(std::uint16_t node);
  /// The node's own REPLYs (origin.client 0) that the network failed.
  void reply_failed(std::uint64_t count) noexcept { stats_.reply_failures += count; }

  // ---- time
  /// Forgets expired references, retries waiting REPLYs. Returns the work done.
  int do_work();
  std::optional<engine::Nanos> next_deadline() const;

  // ---- introspection
  /// A client of `space` (for the router's broadcast holds), if any.
  std::optional<ClientId> client_of(std::uint16_t space) const;
  std::optional<std::uint16_t> space_of(ClientId client) const;
  std::uint32_t instance() const noexcept { return instance_; }
  std::uint16_t node_id() const noexcept { return config_.node; }
  const NodeStats& stats() const noexcept { return stats_; }
  const NodeConfig& config() const noexcept { return config_; }
  std::size_t spaces() const noexcept { return spaces_.size(); }
  std::size_t clients() const noexcept { return clients_.size(); }
  std::size_t queued_messages() const noexcept;
  std::size_t queued_bytes() const noexcept { return queued_bytes_; }
  std::size_t waiters() const noexcept;
  std::size_t handlers() const noexcept;
  std::size_t refs() const noexcept { return refs_.size(); }
  std::size_t pending_replies() const noexcept { return pending_.size(); }
  /// The alive peers, ascending.
  std::vector<std::uint16_t> alive_peers() const { return {alive_.begin(), alive_.end()}; }
  /// The built-in node.info's answer now (JSON text).
  std::string node_info() const;

 private:
  struct Message {
    std::uint16_t node = 0;
    std::uint32_t tag = 0;
    bool local = false;
    StreamTag flow;  // its place in its stream (count 0: local)
    std::vector<std::byte> data;
  };
  struct Waiter {
    ClientId client = 0;
    std::uint64_t id = 0;
    std::uint16_t node = kAnyNode;
    bool any_tag = false;
    std::uint32_t tag = 0;
    bool matches(const Message& m) const noexcept {
      return (node == kAnyNode || node == m.node) && (any_tag || tag == m.tag);
    }
  };
  struct Registered {
    ClientId client = 0;
    std::uint16_t kind = LOCABUS_KCCM_LONG;
  };
  struct Space {
    std::vector<ClientId> clients;  // attach order
    std::deque<Message> queue;      // the receive queue, arrival order
    std::deque<Waiter> waiters;     // the waiting queue, FIFO
    std::map<std::string, Registered, std::less<>> handlers;
    std::uint32_t local_queued = 0;
  };
  struct ClientState {
    std::uint16_t space = 0;
    bool leaving = false;
    std::size_t waiters = 0;  // its receives in its space's waiting queue
  };
  /// A call a local handler is answering.
  struct Ref {
    std::uint16_t origin = 0;  // the calling node (this one for a local call)
    std::uint16_t space = 0;
    std::uint32_t instance = 0;
    std::uint64_t caller = 0;
    std::uint64_t call_id = 0;
    ClientId handler = 0;
    std::string name;
    engine::Nanos expiry{0};
  };
  /// A REPLY of the node's own that waits for room toward its caller.
  struct PendingReply {
    std::uint16_t node = 0;
    std::uint16_t space = 0;
    StreamTag call;  // the CALL it answers: consumed once the REPLY is out
    std::vector<std::byte> frame;
  };
  /// Who called, for the answer.
  struct CallFrom {
    std::uint16_t node = 0;
    std::uint16_t space = 0;
    std::uint32_t instance = 0;
    std::uint64_t caller = 0;
    std::uint64_t call_id = 0;
  };

  Outcome send_record(ClientId client, std::uint16_t space, std::uint16_t node,
                      std::span<const std::byte> payload, std::uint64_t message);
  Outcome recv_record(ClientId client, Space& s, std::span<const std::byte> payload);
  Outcome cancel_record(ClientId client, Space& s, std::span<const std::byte> payload);
  Outcome register_record(ClientId client, std::uint16_t space, Space& s, std::uint16_t kind,
                          std::span<const std::byte> payload, bool unregister);
  Outcome call_record(ClientId client, std::uint16_t space, std::uint16_t node,
                      std::span<const std::byte> payload, std::uint64_t message);
  Outcome reply_record(ClientId client, std::span<const std::byte> payload);

  /// A message for `space` (from another node or this one): to the oldest
  /// matching waiter, else to the queue.
  void arrive(Space& s, std::uint16_t node, std::uint32_t tag, bool local, const StreamTag& flow,
              std::span<const std::byte> data);
  /// A call for `space` here: to its handler, a built-in, or no_such_handler.
  void dispatch(const CallFrom& from, std::uint8_t flags, std::uint32_t deadline_ms, std::string_view name,
                std::span<const std::byte> arg, const StreamTag& tag);
  /// Answers the call `from` (locally, or with a REPLY); `tag` (the CALL)
  /// is consumed once the answer is out. ok, or would_block when it cannot
  /// go now and `queue` is false.
  engine::SendStatus answer(const CallFrom& from, std::uint8_t status, std::span<const std::byte> body,
                            const StreamTag& tag, bool queue);
  void ack(ClientId client, std::int32_t err, std::string_view text);
  void erase_ref(std::unordered_map<std::uint64_t, Ref>::iterator it);
  Space* space_ptr(std::uint16_t space);
  /// A waiter leaves its space's waiting queue (answered or cancelled).
  void waiter_gone(ClientId client);

  Host& host_;
  NodeConfig config_;
  std::uint32_t instance_ = 0;
  engine::Nanos started_{0};
  std::unordered_map<std::uint16_t, Space> spaces_;
  std::unordered_map<ClientId, ClientState> clients_;
  std::unordered_map<std::uint64_t, Ref> refs_;
  std::set<std::pair<engine::Nanos, std::uint64_t>> expiry_;  // refs by expiry
  std::uint64_t next_ref_ = 1;
  std::deque<PendingReply> pending_;
  std::set<std::uint16_t> alive_;
  std::size_t queued_bytes_ = 0;
  std::vector<std::byte> frame_;  // the frame being built
  NodeStats stats_;
};

}  // namespace locabus::kccm
