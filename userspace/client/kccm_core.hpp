// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus internals: the bookkeeping of a KCCM Space that needs no
// threads and no daemon, so that unit tests drive it directly
// (tests/unit/kccm_client_test.cpp): the pending-call table (deadlines, the
// record numbers of call records, how membership and send_failed events fail
// calls, call_all()'s gathering), the receive waiters, the register and
// unregister acks (FIFO) and the bounded event queue. None of it locks: the
// Space (kccm.cpp) holds its mutex around every call. Not in namespace
// locabus::kccm: the version script exports that one.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <locabus/client.hpp>
#include <locabus/kccm.hpp>

namespace locabus::kccm_internal {

using namespace locabus::kccm;  // Status, Reply, ...

using Clock = std::chrono::steady_clock;

/// Thrown by a handler to fail its call with its own sentence (the C API's
/// locabus_kccm_reply_error()): "handler NAME failed: what()".
struct HandlerFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class CallKind : std::uint8_t {
  single,     // call(): one Reply
  oneway,     // post(): a Reply only when the daemon reports a failure
  broadcast,  // call_all(): a BroadcastReply
};

/// Where a finished call goes: `single` for call() and post() (failures
/// only), `all` for call_all().
struct CallSink {
  std::function<void(Reply)> single;
  std::function<void(BroadcastReply)> all;
};

/// A finished call, to run (deliver) outside the Space's lock.
struct Completion {
  std::uint64_t call_id = 0;
  CallSink sink;
  Reply reply;               // sink.single
  BroadcastReply broadcast;  // sink.all
  /// Hands the outcome over; an exception from a callback propagates.
  void run();
};

/// The status a send_failed event of a call record gives the call
/// (docs/KCCM.md): peer_restarted -> node_restarted; unknown_node,
/// invalid_node -> no_such_node; endpoint_closed -> handler_exited; the rest
/// -> node_dead.
Status status_of_send_failure(int failure) noexcept;

/// The calls this process has made and not seen finish.
class PendingCalls {
 public:
  /// A new call (id 1, 2, ...) to `node` (kAnyNode for a broadcast) with a
  /// deadline `timeout` after `now`.
  std::uint64_t add(CallKind kind, std::uint16_t node, std::string name, Clock::time_point now,
                    std::chrono::milliseconds timeout, CallSink sink);
  /// The call's record went into the ring as record number `record_no`.
  void set_record(std::uint64_t call_id, std::uint64_t record_no);

  /// kRecordKccmResult from `node`.
  std::vector<Completion> on_result(std::uint64_t call_id, std::uint16_t node, Status status,
                                    std::span<const std::byte> body);
  /// kRecordKccmCallStarted: the nodes a call_all() went to.
  std::vector<Completion> on_started(std::uint64_t call_id, std::span<const std::uint16_t> nodes);
  /// A membership event: dead, left, disconnected (node_dead) and restarted
  /// (node_restarted) fail the calls to that node (not posts: only what
  /// the daemon reports about them counts).
  std::vector<Completion> on_membership(const locabus_event& e);
  /// A send_failed event. *only_calls: every record it names was a pending
  /// call's (the event says nothing more to the application).
  std::vector<Completion> on_send_failed(const locabus_event& e, bool* only_calls);
  /// Calls whose deadline is at or before `now`: deadline_exceeded (a
  /// broadcast: what it gathered, the rest missing). Posts are dropped.
  std::vector<Completion> expire(Clock::time_point now);
  /// Ends one call now (nothing when it is not pending).
  std::vector<Completion> fail(std::uint64_t call_id, Status status, const std::string& message);
  /// Ends every call (the daemon went away, the Space closes). Posts are dropped.
  std::vector<Completion> fail_all(Status status, const std::string& message);

  std::optional<Clock::time_point> next_deadline() const;
  bool contains(std::uint64_t call_id) const { return calls_.count(call_id) != 0; }
  std::size_t size() const noexcept { return calls_.size(); }
  /// Record numbers remembered (one per pending call that has one).
  std::size_t records() const noexcept { return records_.size(); }
  /// Results and CallStarted records for calls not pending (late or unknown).
  std::uint64_t unmatched() const noexcept { return unmatched_; }

 private:
  struct Call {
    CallKind kind = CallKind::single;
    std::uint16_t node = 0;
    std::string name;
    Clock::time_point deadline;
    std::chrono::milliseconds timeout{0};
    CallSink sink;
    std::optional<std::uint64_t> record_no;
    // broadcast
    bool started = false;
    std::vector<std::uint16_t> called;       // sorted
    std::map<std::uint16_t, Reply> replies;  // by node
  };
  using Map = std::unordered_map<std::uint64_t, Call>;

  Completion finish(Map::iterator it, Reply r);   // single/oneway: removes the call
  Completion finish_broadcast(Map::iterator it);  // gathered so far; removes the call
  bool broadcast_complete(const Call& c) const;   // every called node answered
  void forget(Map::iterator it);

  Map calls_;
  std::map<std::uint64_t, std::uint64_t> records_;  // record number -> call id
  std::set<std::pair<Clock::time_point, std::uint64_t>> deadlines_;
  std::uint64_t next_id_ = 1;
  std::uint64_t unmatched_ = 0;
};

/// One recv() waiting for the daemon's answer.
struct WaiterSlot {
  enum class State : std::uint8_t { waiting, message, cancelled, disconnected };
  std::uint64_t id = 0;
  State state = State::waiting;
  std::optional<Received> message;
  std::condition_variable cv;  // notified when state leaves waiting
};

/// The receives waiting for a kRecordKccmMessage or kRecordKccmCancelled.
class Waiters {
 public:
  /// A new waiter (ids 1, 2, ...), registered before its record is written.
  std::shared_ptr<WaiterSlot> add();
  /// kRecordKccmMessage. False when no such waiter waits (counted).
  bool on_message(std::uint64_t waiter, Received m);
  /// kRecordKccmCancelled: ignored when the message came first.
  bool on_cancelled(std::uint64_t waiter);
  /// The daemon went away: every waiter wakes.
  void disconnect_all();
  void remove(std::uint64_t waiter) { slots_.erase(waiter); }
  /// A receive that timed out and sent its cancel, but whose answer did
  /// not come in time (its cancel waits in the ring behind a send that
  /// waits for credit): the receive returns; if the daemon had handed it a
  /// message, that message is kept for the next matching receive.
  void abandon(std::uint64_t waiter);
  /// The oldest kept message from `node` (LOCABUS_KCCM_ANY_NODE: any) with
  /// `tag` (nullopt: any), taken out.
  std::optional<Received> take_kept(std::uint16_t node, std::optional<std::uint32_t> tag);
  std::size_t size() const noexcept { return slots_.size(); }
  /// Abandoned receives whose cancel the daemon has not answered yet.
  std::size_t abandoned() const noexcept { return abandoned_.size(); }
  std::size_t kept() const noexcept { return kept_.size(); }
  /// Messages for no waiter: a daemon bug (the message is lost).
  std::uint64_t orphans() const noexcept { return orphans_; }

 private:
  std::map<std::uint64_t, std::shared_ptr<WaiterSlot>> slots_;
  std::set<std::uint64_t> abandoned_;
  std::deque<Received> kept_;  // at most one per abandoned receive
  std::uint64_t next_id_ = 1;
  std::uint64_t orphans_ = 0;
};

/// A register or unregister waiting for its kRecordKccmAck.
struct AckSlot {
  bool done = false;
  int err = 0;  // 0, an errno value, or ENOTCONN when the daemon went away
  std::string text;
  std::condition_variable cv;
};

/// Acks come in request order: a FIFO of slots, pushed in ring order.
class Acks {
 public:
  void push(std::shared_ptr<AckSlot> slot) { q_.push_back(std::move(slot)); }
  /// False when no request waits for an ack (a daemon bug).
  bool on_ack(int err, std::string text);
  void disconnect_all();
  std::size_t size() const noexcept { return q_.size(); }

 private:
  std::deque<std::shared_ptr<AckSlot>> q_;
};

/// Events for next_event(): at most `capacity`, the oldest dropped beyond.
class EventQueue {
 public:
  explicit EventQueue(std::size_t capacity) : capacity_(capacity) {}
  void push(const Event& e);
  std::optional<Event> pop();
  std::size_t size() const noexcept { return q_.size(); }
  std::uint64_t dropped() const noexcept { return dropped_; }

 private:
  std::size_t capacity_;
  std::deque<Event> q_;
  std::uint64_t dropped_ = 0;
};

}  // namespace locabus::kccm_internal
