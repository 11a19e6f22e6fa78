// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus: a KCCM Space's bookkeeping (kccm_core.hpp) and the public
// value types of locabus/kccm.hpp.
#include "client/kccm_core.hpp"

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

namespace locabus::kccm {

std::string_view to_string(Status s) noexcept { return locabus_kccm_status_name(static_cast<int>(s)); }

std::string Reply::error() const {
  if (status == Status::ok) return fmt::format("node {}: ok", node);
  return message.empty() ? fmt::format("node {}: {}", node, to_string(status))
                         : fmt::format("node {}: {}: {}", node, to_string(status), message);
}

bool BroadcastReply::all_ok() const noexcept {
  return !replies.empty() && missing.empty() &&
         std::all_of(replies.begin(), replies.end(), [](const Reply& r) { return r.status == Status::ok; });
}

}  // namespace locabus::kccm

namespace locabus::kccm_internal {

namespace {

Reply make_reply(std::uint16_t node, Status status, std::string message) {
  Reply r;
  r.node = node;
  r.status = status;
  r.message = std::move(message);
  return r;
}

// What a membership event does to a call to its node, if anything.
std::optional<std::pair<Status, std::string>> membership_failure(const locabus_event& e) {
  switch (e.kind) {
    case LOCABUS_EV_DEAD:
      return std::pair{Status::node_dead, fmt::format("node {} was declared dead during the call", e.node)};
    case LOCABUS_EV_LEFT:
      return std::pair{Status::node_dead, fmt::format("node {} left the cluster during the call", e.node)};
    case LOCABUS_EV_DISCONNECTED:
      // The engine drops the connection to a node's old life (failure
      // peer_restarted) just before it reports the restart.
      if (e.failure == LOCABUS_FAIL_PEER_RESTARTED)
        return std::pair{Status::node_restarted, fmt::format("node {} restarted during the call", e.node)};
      return std::pair{Status::node_dead,
                       e.failure ? fmt::format("the connection to node {} failed during the call ({})",
                                               e.node, locabus_failure_name(e.failure))
                                 : fmt::format("the connection to node {} closed during the call", e.node)};
    case LOCABUS_EV_RESTARTED:
      return std::pair{Status::node_restarted, fmt::format("node {} restarted during the call", e.node)};
    default: return std::nullopt;
  }
}

}  // namespace

void Completion::run() {
  if (sink.all) {
    sink.all(std::move(broadcast));
  } else if (sink.single) {
    sink.single(std::move(reply));
  }
}

Status status_of_send_failure(int failure) noexcept {
  switch (failure) {
    case LOCABUS_FAIL_PEER_RESTARTED: return Status::node_restarted;
    case LOCABUS_FAIL_UNKNOWN_NODE:
    case LOCABUS_FAIL_INVALID_NODE: return Status::no_such_node;
    case LOCABUS_FAIL_ENDPOINT_CLOSED: return Status::handler_exited;
    default: return Status::node_dead;
  }
}

// ---- PendingCalls -------------------------------------------------------------------

std::uint64_t PendingCalls::add(CallKind kind, std::uint16_t node, std::string name, Clock::time_point now,
                                std::chrono::milliseconds timeout, CallSink sink) {
  const std::uint64_t id = next_id_++;
  Call c;
  c.kind = kind;
  c.node = node;
  c.name = std::move(name);
  c.timeout = timeout;
  c.deadline = now + timeout;
  c.sink = std::move(sink);
  deadlines_.emplace(c.deadline, id);
  calls_.emplace(id, std::move(c));
  return id;
}

void PendingCalls::set_record(std::uint64_t call_id, std::uint64_t record_no) {
  auto it = calls_.find(call_id);
  if (it == calls_.end()) return;
  if (it->second.record_no) records_.erase(*it->second.record_no);
  it->second.record_no = record_no;
  records_[record_no] = call_id;
}

void PendingCalls::forget(Map::iterator it) {
  deadlines_.erase({it->second.deadline, it->first});
  if (it->second.record_no) records_.erase(*it->second.record_no);
  calls_.erase(it);
}

Completion PendingCalls::finish(Map::iterator it, Reply r) {
  Completion done;
  done.call_id = it->first;
  done.sink = std::move(it->second.sink);
  done.reply = std::move(r);
  forget(it);
  return done;
}

Completion PendingCalls::finish_broadcast(Map::iterator it) {
  Call& c = it->second;
  Completion done;
  done.call_id = it->first;
  done.sink = std::move(c.sink);
  for (auto& [node, r] : c.replies) done.broadcast.replies.push_back(std::move(r));
  for (std::uint16_t n : c.called)
    if (!c.replies.count(n)) done.broadcast.missing.push_back(n);
  forget(it);
  return done;
}

bool PendingCalls::broadcast_complete(const Call& c) const {
  return c.started && std::all_of(c.called.begin(), c.called.end(),
                                  [&](std::uint16_t n) { return c.replies.count(n) != 0; });
}

std::vector<Completion> PendingCalls::on_result(std::uint64_t call_id, std::uint16_t node, Status status,
                                                std::span<const std::byte> body) {
  std::vector<Completion> out;
  auto it = calls_.find(call_id);
  if (it == calls_.end()) {
    ++unmatched_;
    return out;
  }
  Reply r;
  r.node = node;
  r.status = status;
  if (status == Status::ok) {
    r.data.assign(body.begin(), body.end());
  } else {
    r.message.assign(reinterpret_cast<const char*>(body.data()), body.size());
    while (!r.message.empty() && r.message.back() == '\0') r.message.pop_back();
  }
  Call& c = it->second;
  switch (c.kind) {
    case CallKind::single: out.push_back(finish(it, std::move(r))); break;
    case CallKind::oneway:
      // A one-way call has no result: anything back is a failure to report.
      if (status == Status::ok) {
        forget(it);
      } else {
        out.push_back(finish(it, std::move(r)));
      }
      break;
    case CallKind::broadcast:
      if (c.replies.count(node)) {
        ++unmatched_;  // a second answer from one node
        break;
      }
      c.replies.emplace(node, std::move(r));
      if (broadcast_complete(c)) out.push_back(finish_broadcast(it));
      break;
  }
  return out;
}

std::vector<Completion> PendingCalls::on_started(std::uint64_t call_id,
                                                 std::span<const std::uint16_t> nodes) {
  std::vector<Completion> out;
  auto it = calls_.find(call_id);
  if (it == calls_.end() || it->second.kind != CallKind::broadcast || it->second.started) {
    ++unmatched_;
    return out;
  }
  Call& c = it->second;
  c.started = true;
  c.called.assign(nodes.begin(), nodes.end());
  std::sort(c.called.begin(), c.called.end());
  c.called.erase(std::unique(c.called.begin(), c.called.end()), c.called.end());
  if (broadcast_complete(c)) out.push_back(finish_broadcast(it));
  return out;
}

std::vector<Completion> PendingCalls::on_membership(const locabus_event& e) {
  std::vector<Completion> out;
  const auto failure = membership_failure(e);
  if (!failure) return out;
  for (auto it = calls_.begin(); it != calls_.end();) {
    auto next = std::next(it);
    Call& c = it->second;
    if (c.kind == CallKind::single && c.node == e.node) {
      out.push_back(finish(it, make_reply(e.node, failure->first, failure->second)));
    } else if (c.kind == CallKind::broadcast && c.started && !c.replies.count(e.node) &&
               std::binary_search(c.called.begin(), c.called.end(), e.node)) {
      c.replies.emplace(e.node, make_reply(e.node, failure->first, failure->second));
      if (broadcast_complete(c)) out.push_back(finish_broadcast(it));
    }
    it = next;
  }
  return out;
}

std::vector<Completion> PendingCalls::on_send_failed(const locabus_event& e, bool* only_calls) {
  std::vector<Completion> out;
  std::uint64_t matched = 0;
  const Status status = status_of_send_failure(e.failure);
  const std::uint64_t end = e.first_message + e.count;
  auto rec = records_.lower_bound(e.first_message);
  std::vector<std::uint64_t> ids;
  for (; rec != records_.end() && rec->first < end && rec->first >= e.first_message; ++rec) {
    ids.push_back(rec->second);
    ++matched;
  }
  for (std::uint64_t id : ids) {
    auto it = calls_.find(id);
    if (it == calls_.end()) continue;
    Call& c = it->second;
    const std::string msg =
        c.kind == CallKind::broadcast && e.node == kAnyNode
            ? fmt::format("the call to every node could not be sent: {}", locabus_failure_name(e.failure))
            : fmt::format("the call to node {} could not be delivered: {}", e.node,
                          locabus_failure_name(e.failure));
    if (c.kind != CallKind::broadcast) {
      out.push_back(finish(it, make_reply(e.node, status, msg)));
    } else if (c.started && e.node != kAnyNode) {
      if (!c.replies.count(e.node)) c.replies.emplace(e.node, make_reply(e.node, status, msg));
      if (broadcast_complete(c)) out.push_back(finish_broadcast(it));
    } else {
      // The broadcast itself failed: what was gathered plus why.
      if (!c.replies.count(e.node)) c.replies.emplace(e.node, make_reply(e.node, status, msg));
      out.push_back(finish_broadcast(it));
    }
  }
  if (only_calls) *only_calls = e.count != 0 && matched == e.count;
  return out;
}

std::vector<Completion> PendingCalls::expire(Clock::time_point now) {
  std::vector<Completion> out;
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    auto it = calls_.find(deadlines_.begin()->second);
    if (it == calls_.end()) {
      deadlines_.erase(deadlines_.begin());
      continue;
    }
    Call& c = it->second;
    const std::string msg = fmt::format("no result within {} ms", c.timeout.count());
    switch (c.kind) {
      case CallKind::single:
        out.push_back(finish(it, make_reply(c.node, Status::deadline_exceeded, msg)));
        break;
      case CallKind::oneway: forget(it); break;
      case CallKind::broadcast:
        if (!c.started)  // the daemon never said whom it called
          c.replies.emplace(kAnyNode,
                            make_reply(kAnyNode, Status::deadline_exceeded,
                                       fmt::format("the daemon had not started the call to every node within "
                                                   "{} ms",
                                                   c.timeout.count())));
        out.push_back(finish_broadcast(it));
        break;
    }
  }
  return out;
}

std::vector<Completion> PendingCalls::fail(std::uint64_t call_id, Status status, const std::string& message) {
  std::vector<Completion> out;
  auto it = calls_.find(call_id);
  if (it == calls_.end()) return out;
  Call& c = it->second;
  if (c.kind == CallKind::broadcast) {
    c.replies.emplace(kAnyNode, make_reply(kAnyNode, status, message));
    out.push_back(finish_broadcast(it));
  } else {
    out.push_back(finish(it, make_reply(c.node, status, message)));
  }
  return out;
}

std::vector<Completion> PendingCalls::fail_all(Status status, const std::string& message) {
  std::vector<Completion> out;
  while (!calls_.empty()) {
    auto it = calls_.begin();
    Call& c = it->second;
    if (c.kind == CallKind::oneway) {
      forget(it);
    } else if (c.kind == CallKind::broadcast) {
      // Every node that has not answered gets the failure (it is not
      // "missing": the failure is here, not there).
      if (!c.started) {
        c.replies.emplace(kAnyNode, make_reply(kAnyNode, status, message));
      } else {
        for (std::uint16_t n : c.called)
          if (!c.replies.count(n)) c.replies.emplace(n, make_reply(n, status, message));
      }
      out.push_back(finish_broadcast(it));
    } else {
      out.push_back(finish(it, make_reply(c.node, status, message)));
    }
  }
  return out;
}

std::optional<Clock::time_point> PendingCalls::next_deadline() const {
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.begin()->first;
}

// ---- Waiters ------------------------------------------------------------------------

std::shared_ptr<WaiterSlot> Waiters::add() {
  auto slot = std::make_shared<WaiterSlot>();
  slot->id = next_id_++;
  slots_.emplace(slot->id, slot);
  return slot;
}

bool Waiters::on_message(std::uint64_t waiter, Received m) {
  if (abandoned_.contains(waiter)) {
    kept_.push_back(std::move(m));  // its cancel is answered next: the entry goes then
    return true;
  }
  auto it = slots_.find(waiter);
  if (it == slots_.end() || it->second->state != WaiterSlot::State::waiting) {
    ++orphans_;
    return false;
  }
  it->second->message = std::move(m);
  it->second->state = WaiterSlot::State::message;
  it->second->cv.notify_all();
  return true;
}

bool Waiters::on_cancelled(std::uint64_t waiter) {
  if (abandoned_.erase(waiter) != 0) return true;
  auto it = slots_.find(waiter);
  if (it == slots_.end() || it->second->state != WaiterSlot::State::waiting) return false;
  it->second->state = WaiterSlot::State::cancelled;
  it->second->cv.notify_all();
  return true;
}

void Waiters::abandon(std::uint64_t waiter) {
  auto it = slots_.find(waiter);
  if (it == slots_.end()) return;
  if (it->second->state == WaiterSlot::State::message && it->second->message) {
    kept_.push_back(std::move(*it->second->message));  // answered meanwhile: keep it
  } else if (it->second->state == WaiterSlot::State::waiting) {
    abandoned_.insert(waiter);
  }
  slots_.erase(it);
}

std::optional<Received> Waiters::take_kept(std::uint16_t node, std::optional<std::uint32_t> tag) {
  for (auto it = kept_.begin(); it != kept_.end(); ++it)
    if ((node == LOCABUS_KCCM_ANY_NODE || it->node == node) && (!tag || it->tag == *tag)) {
      Received m = std::move(*it);
      kept_.erase(it);
      return m;
    }
  return std::nullopt;
}

void Waiters::disconnect_all() {
  abandoned_.clear();  // nothing more will come; what was kept stays for receives
  for (auto& [id, slot] : slots_) {
    if (slot->state == WaiterSlot::State::waiting) slot->state = WaiterSlot::State::disconnected;
    slot->cv.notify_all();
  }
}

// ---- Acks, EventQueue -----------------------------------------------------------------

bool Acks::on_ack(int err, std::string text) {
  if (q_.empty()) return false;
  auto slot = std::move(q_.front());
  q_.pop_front();
  slot->done = true;
  slot->err = err;
  slot->text = std::move(text);
  slot->cv.notify_all();
  return true;
}

void Acks::disconnect_all() {
  for (auto& slot : q_) {
    slot->done = true;
    slot->err = ENOTCONN;
    slot->text = "locabusd closed the connection (it stopped or restarted): open the space again";
    slot->cv.notify_all();
  }
  q_.clear();
}

void EventQueue::push(const Event& e) {
  if (capacity_ == 0) {
    ++dropped_;
    return;
  }
  if (q_.size() >= capacity_) {
    q_.pop_front();
    ++dropped_;
  }
  q_.push_back(e);
}

std::optional<Event> EventQueue::pop() {
  if (q_.empty()) return std::nullopt;
  Event e = q_.front();
  q_.pop_front();
  return e;
}

}  // namespace locabus::kccm_internal
