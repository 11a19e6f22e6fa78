// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus: the process side of KCCM (locabus/kccm.hpp, docs/KCCM.md).
//
// Threads of a Space:
// - the listener owns the receive ring and the doorbell: it dispatches what
//   the daemon delivers (messages and cancels to recv() waiters, invokes to
//   handlers, results to pending calls, acks to register/unregister,
//   events), runs short handlers and call() callbacks, fails calls whose
//   deadline passed, and wakes writers waiting for space in the send ring;
// - writers (any user thread, the workers) write records into the send ring
//   under write_mu_, numbering every record; a full ring makes them wait on
//   space_cv_, which the listener signals when the daemon rings. The
//   listener itself never waits: what it writes goes to the outbox when the
//   ring is full (or the outbox is not empty: records keep their numbers'
//   order), and it flushes the outbox before anything else is written;
// - workers run long handlers (a bounded queue: full -> overloaded);
// - the watchdog logs short handlers that run longer than short_warn.
// Lock order: write_mu_ before mu_, work_mu_ before mu_; wd_mu_ alone. Completions (futures, callbacks) run
// with no lock held.
#include <locabus/kccm.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <bit>
#include <condition_variable>
#include <cstdio>
#include <limits>
#include <map>
#include <mutex>
#include <thread>

#include <locabus/wire.h>

#include "client/connection.hpp"
#include "client/kccm_core.hpp"

namespace locabus::kccm {

namespace detail = ::locabus::kccm_internal;

namespace {

using detail::CallKind;
using detail::CallSink;
using detail::Completion;

constexpr std::size_t kMaxEvents = 4096;  // next_event()'s queue; the oldest are dropped beyond
constexpr std::size_t kReadBatch = 64;    // records per read before the listener looks at deadlines
constexpr std::chrono::milliseconds kCancelGrace{
    100};  // how long a timed-out recv() waits for its cancel's answer

template <typename T>
std::span<const std::byte> raw(const T& v) noexcept {
  return std::as_bytes(std::span(&v, 1));
}

template <typename T>
bool load(std::span<const std::byte> p, T* out) noexcept {
  if (p.size() < sizeof(T)) return false;
  std::memcpy(out, p.data(), sizeof(T));
  return true;
}

std::vector<std::byte> text_bytes(std::string_view s) { return bytes(s); }

std::chrono::milliseconds clamp_timeout(std::chrono::milliseconds t) {
  constexpr std::chrono::milliseconds kMax{std::numeric_limits<std::uint32_t>::max()};
  return std::clamp(t, std::chrono::milliseconds(1), kMax);
}

ClientError not_connected() {
  return ClientError(
      "locabusd closed the connection (it stopped or restarted): open the space again to reconnect",
      ENOTCONN);
}

ClientError from_listener(std::string_view what) {
  return ClientError(
      fmt::format("{} waits for the listener thread, and was called from it (a short handler or "
                  "a call() callback): call it from another thread",
                  what),
      EDEADLK);
}

struct HandlerEntry {
  std::string name;
  Handler fn;
  HandlerKind kind = HandlerKind::long_running;
  unsigned inflight = 0;  // queued + running (under Impl::mu_)
};

// The handler entry this thread is running (reset() from inside a handler
// must not wait for itself).
thread_local const HandlerEntry* t_running = nullptr;

struct Job {
  std::shared_ptr<HandlerEntry> handler;
  std::uint64_t ref = 0;
  std::uint16_t node = 0;
  std::uint8_t flags = 0;
  std::chrono::milliseconds left{0};
  detail::Clock::time_point deadline;
  std::vector<std::byte> arg;
};

struct Outgoing {
  std::uint16_t type = 0;
  std::uint16_t aux = 0;
  std::vector<std::byte> payload;
};

}  // namespace

struct Registration::SpaceRef {
  std::weak_ptr<Space::Impl> impl;
};

// Hidden: the version script exports locabus::kccm::*, not the internals.
struct __attribute__((visibility("hidden"))) Space::Impl : std::enable_shared_from_this<Space::Impl> {
  using Clock = detail::Clock;

  SpaceOptions opt;
  std::uint16_t space = 0;
  Connection conn;
  std::atomic<bool> connected{true};
  std::atomic<bool> closed{false};
  // The listener runs until close() has joined the workers: their replies
  // may wait for room in the send ring, which only the listener's doorbell
  // makes (wake_writers()).
  std::atomic<bool> listener_stop_{false};
  UniqueFd wake_fd;  // eventfd: wakes the listener (a nearer deadline, close)

  // ---- the send ring
  std::mutex write_mu_;
  std::condition_variable space_cv_;
  std::uint64_t space_gen_ = 0;  // bumped when writers may retry
  std::atomic<unsigned> writers_waiting_{0};
  std::uint64_t next_record_ = 0;  // the number of the next record written (docs/KCCM.md)
  std::deque<Outgoing> outbox_;

  // ---- tables
  std::mutex mu_;
  detail::PendingCalls pending_;
  detail::Waiters waiters_;
  detail::Acks acks_;
  detail::EventQueue events_{kMaxEvents};
  std::map<std::string, std::shared_ptr<HandlerEntry>, std::less<>> handlers_;
  std::condition_variable handlers_cv_;  // an inflight count dropped
  bool listener_sleeps_ = false;         // in poll(), until listener_wakes_ (nullopt: forever)
  std::optional<Clock::time_point> listener_wakes_;

  // ---- workers
  std::mutex work_mu_;
  std::condition_variable work_cv_;
  std::deque<Job> jobs_;
  std::vector<std::thread> workers_;
  bool workers_stop_ = false;
  std::atomic<std::uint64_t> skipped_{0};

  // ---- watchdog
  std::mutex wd_mu_;
  std::condition_variable wd_cv_;
  std::thread watchdog_;
  bool wd_stop_ = false;
  bool wd_idle_ = false;  // the watchdog waits with no deadline: the next call must wake it
  std::optional<Clock::time_point> wd_since_;
  std::string wd_name_;
  std::uint64_t wd_seq_ = 0;

  std::thread listener_;
  std::atomic<std::thread::id> listener_id_{};

  ~Impl() { close(); }

  bool on_listener() const noexcept { return std::this_thread::get_id() == listener_id_.load(); }

  void log(std::string_view msg) const {
    if (opt.log) {
      try {
        opt.log(msg);
      } catch (...) {  // a logger that throws loses the line, not the listener
      }
    } else {
      std::fprintf(stderr, "locabus kccm: space %u: %.*s\n", static_cast<unsigned>(space),
                   static_cast<int>(msg.size()), msg.data());
    }
  }

  // ---- writing ---------------------------------------------------------------------

  void publish(api::RingProducer& out) {
    if (out.publish() && !conn.bell.ring()) connected = false;  // the listener sees the rest
  }

  // Numbers the record just written (or put in the outbox). Under write_mu_.
  void assign(std::uint64_t call_id, const std::shared_ptr<detail::AckSlot>& ack, std::uint64_t* record_no) {
    const std::uint64_t n = next_record_++;
    if (record_no) *record_no = n;
    if (call_id == 0 && !ack) return;
    std::lock_guard lk(mu_);
    if (call_id) pending_.set_record(call_id, n);
    if (ack) acks_.push(ack);
  }

  // Writes one record (payload a + b). A user thread or a worker waits up to
  // `timeout` while the ring is full; the listener never waits (the record
  // goes to the outbox). Throws ClientError(ENOTCONN) when the daemon went away.
  SendStatus submit(std::uint16_t type, std::uint16_t aux, std::span<const std::byte> a,
                    std::span<const std::byte> b, std::chrono::milliseconds timeout,
                    std::uint64_t call_id = 0, const std::shared_ptr<detail::AckSlot>& ack = nullptr,
                    std::uint64_t* record_no = nullptr, bool defer = false) {
    const bool listener = on_listener();
    const auto deadline = deadline_of(timeout);
    std::unique_lock lk(write_mu_);
    auto& out = conn.region->producer();
    for (;;) {
      if (!connected) throw not_connected();
      if (outbox_.empty()) {
        switch (out.try_write(type, aux, a, b)) {
          case api::RingProducer::Status::kWritten:
            assign(call_id, ack, record_no);
            publish(out);
            return SendStatus::ok;
          case api::RingProducer::Status::kFull: break;
          case api::RingProducer::Status::kInvalid: return SendStatus::too_large;
          case api::RingProducer::Status::kProtocolError:
            connected = false;
            throw ClientError(fmt::format("the daemon's ring is corrupt ({}): open the space again",
                                          api::describe(out.error())),
                              EPROTO);
        }
        publish(out);  // padding staged by the full try_write
      }
      if (listener || defer) {
        if (a.size() + b.size() > out.max_payload()) return SendStatus::too_large;
        Outgoing o{type, aux, {}};
        o.payload.reserve(a.size() + b.size());
        o.payload.insert(o.payload.end(), a.begin(), a.end());
        o.payload.insert(o.payload.end(), b.begin(), b.end());
        outbox_.push_back(std::move(o));
        assign(call_id, ack, record_no);
        if (!listener) wake_listener();  // it flushes the outbox
        return SendStatus::ok;
      }
      if (timeout.count() == 0 || (deadline && Clock::now() >= *deadline)) return SendStatus::would_block;
      const std::uint64_t gen = space_gen_;
      // With an outbox the listener wakes us when it has drained it.
      if (outbox_.empty() && !out.prepare_sleep(a.size() + b.size())) continue;
      ++writers_waiting_;
      const auto ready = [&] { return space_gen_ != gen || !connected; };
      if (deadline) {
        space_cv_.wait_until(lk, *deadline, ready);
      } else {
        space_cv_.wait(lk, ready);
      }
      --writers_waiting_;
    }
  }

  void wake_writers() {
    if (writers_waiting_.load() == 0) return;
    std::lock_guard lk(write_mu_);
    ++space_gen_;
    space_cv_.notify_all();
  }

  // The listener: writes what the outbox holds. True when it should look
  // again at once (space appeared while it arranged to be woken).
  bool flush_outbox() {
    std::lock_guard lk(write_mu_);
    if (outbox_.empty()) return false;
    auto& out = conn.region->producer();
    while (!outbox_.empty()) {
      const auto& o = outbox_.front();
      const auto st = out.try_write(o.type, o.aux, o.payload);
      if (st == api::RingProducer::Status::kFull) break;
      if (st == api::RingProducer::Status::kProtocolError)
        throw ClientError(fmt::format("the daemon's ring is corrupt ({})", api::describe(out.error())),
                          EPROTO);
      outbox_.pop_front();  // kInvalid cannot happen: submit() checked the size
    }
    publish(out);
    if (outbox_.empty()) {
      ++space_gen_;
      space_cv_.notify_all();
      return false;
    }
    return !out.prepare_sleep(outbox_.front().payload.size());
  }

  void wake_listener() {
    const std::uint64_t one = 1;
    if (::write(wake_fd.get(), &one, sizeof one) < 0) {
      // EAGAIN: the counter is full, so the listener wakes anyway.
    }
  }

  // ---- completions and failures -----------------------------------------------------

  void run(std::vector<Completion>& done) {
    for (auto& c : done) {
      try {
        c.run();
      } catch (const std::exception& e) {
        log(fmt::format("a call's callback threw: {}", e.what()));
      } catch (...) {
        log("a call's callback threw an exception that is not a std::exception");
      }
    }
  }

  // The daemon went away (or the space closes): everyone waiting wakes.
  void disconnect(Status status, const std::string& why) {
    connected = false;
    {
      std::lock_guard lk(write_mu_);
      ++space_gen_;
      space_cv_.notify_all();
    }
    std::vector<Completion> done;
    {
      std::lock_guard lk(mu_);
      waiters_.disconnect_all();
      acks_.disconnect_all();
      done = pending_.fail_all(status, why);
      handlers_cv_.notify_all();
    }
    run(done);
  }

  // ---- the listener ------------------------------------------------------------------

  void listen() {
    listener_id_ = std::this_thread::get_id();
    bool daemon_gone = false;
    std::string why = "locabusd closed the connection (it stopped or restarted): open the space again";
    try {
      auto& in = conn.region->consumer();
      while (!listener_stop_) {
        const bool again = flush_outbox();
        auto r = in.read(kReadBatch, [&](std::uint16_t type, std::uint16_t aux,
                                         std::span<const std::byte> p) { dispatch(type, aux, p); });
        if (!r) {
          why =
              fmt::format("the daemon's ring is corrupt ({}): open the space again", api::describe(r.error));
          break;
        }
        if (r.wake_producer && !conn.bell.ring()) break;
        expire();
        if (r.records > 0 || again) continue;
        if (in.release() && !conn.bell.ring()) break;
        if (conn.bell.drain() > 0) wake_writers();
        if (!in.empty()) continue;
        if (daemon_gone) break;  // everything it published is read
        if (!in.prepare_sleep()) continue;
        int timeout = -1;
        {
          std::lock_guard lk(mu_);
          listener_sleeps_ = true;
          listener_wakes_ = pending_.next_deadline();
          if (listener_wakes_) timeout = remaining_ms(listener_wakes_);
        }
        pollfd p[3] = {{conn.bell.fd(), POLLIN, 0}, {conn.ctl.get(), POLLIN, 0}, {wake_fd.get(), POLLIN, 0}};
        int n;
        do n = ::poll(p, 3, timeout);
        while (n < 0 && errno == EINTR);
        {
          std::lock_guard lk(mu_);
          listener_sleeps_ = false;
        }
        if (n < 0) throw ClientError(fmt::format("poll: {}", std::strerror(errno)), errno);
        if (p[2].revents) {
          std::uint64_t v;
          if (::read(wake_fd.get(), &v, sizeof v) < 0) {
            // EAGAIN: another read took it
          }
        }
        // Nothing is ever sent unasked on the control socket: only its end.
        if (p[1].revents || (p[0].revents & (POLLHUP | POLLERR))) daemon_gone = true;
        if (p[0].revents & POLLIN) {
          conn.bell.drain();
          wake_writers();
        }
      }
    } catch (const std::exception& e) {
      why = fmt::format("the listener stopped: {}", e.what());
      log(why);
    }
    listener_id_ = std::thread::id();  // ids are reused by later threads
    // Also while closing: a worker waiting for room in the ring must wake
    // (the daemon went away during close()), or close() would wait for it.
    disconnect(Status::disconnected, closed ? std::string("the space was closed") : why);
  }

  void expire() {
    std::vector<Completion> done;
    {
      std::lock_guard lk(mu_);
      const auto next = pending_.next_deadline();
      if (!next || *next > Clock::now()) return;
      done = pending_.expire(Clock::now());
    }
    run(done);
  }

  void dispatch(std::uint16_t type, std::uint16_t aux, std::span<const std::byte> p) {
    switch (type) {
      case api::kRecordKccmMessage: {
        api::KccmMessageHeader h;
        if (!load(p, &h)) return malformed(type);
        Received m;
        m.node = aux;
        m.tag = h.tag;
        m.data.assign(p.begin() + sizeof h, p.end());
        std::lock_guard lk(mu_);
        if (!waiters_.on_message(h.waiter, std::move(m)))
          log(fmt::format("the daemon delivered a message for receive {}, which does not wait: it is lost",
                          h.waiter));
        return;
      }
      case api::kRecordKccmCancelled: {
        api::KccmWaiter w;
        if (!load(p, &w)) return malformed(type);
        std::lock_guard lk(mu_);
        waiters_.on_cancelled(w.waiter);  // after the message: ignored
        return;
      }
      case api::kRecordKccmInvoke: return invoke(aux, p);
      case api::kRecordKccmResult: {
        api::KccmResultHeader h;
        if (!load(p, &h)) return malformed(type);
        Status st = static_cast<Status>(h.status);
        std::vector<Completion> done;
        if (h.status > LOCABUS_KCCM_HANDLER_EXITED) st = Status::handler_failed;
        {
          std::lock_guard lk(mu_);
          done = pending_.on_result(h.call_id, aux, st, p.subspan(sizeof h));
        }
        return run(done);
      }
      case api::kRecordKccmCallStarted: {
        api::KccmStartedHeader h;
        if (!load(p, &h) || p.size() - sizeof h < std::size_t{h.count} * 2) return malformed(type);
        std::vector<std::uint16_t> nodes(h.count);
        if (h.count) std::memcpy(nodes.data(), p.data() + sizeof h, nodes.size() * 2);
        std::vector<Completion> done;
        {
          std::lock_guard lk(mu_);
          done = pending_.on_started(h.call_id, nodes);
        }
        return run(done);
      }
      case api::kRecordKccmAck: {
        api::KccmAck h;
        if (!load(p, &h)) return malformed(type);
        std::string text(reinterpret_cast<const char*>(p.data()) + sizeof h, p.size() - sizeof h);
        std::lock_guard lk(mu_);
        if (!acks_.on_ack(h.err, std::move(text))) log("the daemon acknowledged a request that was not made");
        return;
      }
      case api::kRecordEvent: {
        Event e;
        if (p.size() != sizeof(locabus_event)) return malformed(type);
        std::memcpy(static_cast<locabus_event*>(&e), p.data(), sizeof(locabus_event));
        std::vector<Completion> done;
        {
          std::lock_guard lk(mu_);
          bool only_calls = false;
          if (e.kind == LOCABUS_EV_SEND_FAILED) {
            done = pending_.on_send_failed(e, &only_calls);
          } else {
            done = pending_.on_membership(e);
          }
          if (!only_calls) events_.push(e);
        }
        return run(done);
      }
      default: return;  // a record type of a later daemon
    }
  }

  void malformed(std::uint16_t type) {
    log(fmt::format("ignored a malformed record of type {} from the daemon: is it the same release?", type));
  }

  // ---- handlers ----------------------------------------------------------------------

  std::pair<Status, std::vector<std::byte>> run_handler(HandlerEntry& h, const CallInfo& info,
                                                        std::span<const std::byte> arg) {
    const HandlerEntry* outer = std::exchange(t_running, &h);
    struct Restore {
      const HandlerEntry* v;
      ~Restore() { t_running = v; }
    } restore{outer};
    try {
      auto out = h.fn(info, arg);
      if (out.size() > kMaxData)
        return {Status::too_large,
                text_bytes(fmt::format("handler {} returned {} bytes, over the {}-byte limit", h.name,
                                       out.size(), kMaxData))};
      return {Status::ok, std::move(out)};
    } catch (const detail::HandlerFailure& e) {
      return {Status::handler_failed, text_bytes(fmt::format("handler {} failed: {}", h.name, e.what()))};
    } catch (const std::exception& e) {
      return {Status::handler_failed, text_bytes(fmt::format("handler {} threw: {}", h.name, e.what()))};
    } catch (...) {
      return {Status::handler_failed,
              text_bytes(fmt::format("handler {} threw an exception that is not a std::exception", h.name))};
    }
  }

  // Answers call `ref` (0: one-way, nobody wants an answer: failures are logged).
  void reply(std::uint64_t ref, std::string_view name, Status st, std::span<const std::byte> body) {
    if (ref == 0) {
      if (st != Status::ok)
        log(fmt::format("one-way call of {}: {}: {}", name, to_string(st),
                        std::string_view(reinterpret_cast<const char*>(body.data()), body.size())));
      return;
    }
    api::KccmReplyHeader h{};
    h.ref = ref;
    h.status = static_cast<std::uint8_t>(st);
    try {
      (void)submit(api::kRecordKccmReply, 0, raw(h), body, kForever);
    } catch (const ClientError&) {
      // The daemon went away: nobody to answer (callers learn from their daemon).
    }
  }

  void done_with(HandlerEntry& h) {
    std::lock_guard lk(mu_);
    --h.inflight;
    handlers_cv_.notify_all();
  }

  void invoke(std::uint16_t node, std::span<const std::byte> p) {
    api::KccmInvokeHeader h;
    if (!load(p, &h) || p.size() - sizeof h < h.name_len) return malformed(api::kRecordKccmInvoke);
    const std::string name(reinterpret_cast<const char*>(p.data()) + sizeof h, h.name_len);
    const auto arg = p.subspan(sizeof h + h.name_len);
    const auto left = std::chrono::milliseconds(h.deadline_ms);
    std::shared_ptr<HandlerEntry> entry;
    {
      std::lock_guard lk(mu_);
      if (auto it = handlers_.find(name); it != handlers_.end()) {
        entry = it->second;
        ++entry->inflight;
      }
    }
    if (!entry)
      return reply(h.ref, name, Status::no_such_handler,
                   text_bytes(fmt::format("handler {} is not registered in space {} on node {} (it was being "
                                          "unregistered)",
                                          name, space, conn.node_id)));
    CallInfo info;
    info.node = node;
    info.space = space;
    info.handler = entry->name;
    info.deadline = left;
    info.oneway = (h.flags & KCCM_F_ONEWAY) != 0;
    info.broadcast = (h.flags & KCCM_F_BCAST) != 0;
    if (entry->kind == HandlerKind::short_inline) {
      watch_begin(entry->name);
      auto [st, body] = run_handler(*entry, info, arg);
      watch_end();
      done_with(*entry);
      return reply(info.oneway ? 0 : h.ref, name, st, body);
    }
    bool stopping = false;
    {
      std::lock_guard lk(work_mu_);
      stopping = workers_stop_;
      if (jobs_.size() < opt.queue && !stopping) {
        jobs_.push_back(Job{entry, info.oneway ? 0 : h.ref, node, h.flags, left, Clock::now() + left,
                            std::vector<std::byte>(arg.begin(), arg.end())});
        work_cv_.notify_one();
        return;
      }
    }
    done_with(*entry);
    if (stopping)
      return reply(info.oneway ? 0 : h.ref, name, Status::handler_exited,
                   text_bytes(fmt::format("space {} is closing on node {}", space, conn.node_id)));
    reply(info.oneway ? 0 : h.ref, name, Status::overloaded,
          text_bytes(fmt::format("handler {} on node {}: {} calls already wait for its {} worker(s)", name,
                                 conn.node_id, opt.queue, opt.workers)));
  }

  void work() {
    for (;;) {
      Job j;
      {
        std::unique_lock lk(work_mu_);
        work_cv_.wait(lk, [&] { return workers_stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping
        j = std::move(jobs_.front());
        jobs_.pop_front();
      }
      HandlerEntry& h = *j.handler;
      if (Clock::now() >= j.deadline) {
        if (skipped_++ == 0)
          log(
              fmt::format("handler {}: a call's deadline ({} ms) passed before a worker was free; it was "
                          "skipped (more workers: SpaceOptions::workers)",
                          h.name, j.left.count()));
        reply(j.ref, h.name, Status::deadline_exceeded,
              text_bytes(fmt::format("handler {} was not started before the call's deadline ({} ms): its "
                                     "workers were busy",
                                     h.name, j.left.count())));
        done_with(h);
        continue;
      }
      CallInfo info;
      info.node = j.node;
      info.space = space;
      info.handler = h.name;
      info.deadline = std::chrono::duration_cast<std::chrono::milliseconds>(j.deadline - Clock::now());
      info.oneway = (j.flags & KCCM_F_ONEWAY) != 0;
      info.broadcast = (j.flags & KCCM_F_BCAST) != 0;
      auto [st, body] = run_handler(h, info, j.arg);
      reply(j.ref, h.name, st, body);
      done_with(h);
    }
  }

  void start_workers() {
    std::lock_guard lk(work_mu_);
    if (!workers_.empty() || workers_stop_) return;
    for (unsigned i = 0; i < opt.workers; ++i)
      workers_.emplace_back([self = shared_from_this()] { self->work(); });
  }

  // ---- the watchdog of short handlers ----------------------------------------------------

  void start_watchdog() {
    std::lock_guard lk(wd_mu_);
    if (watchdog_.joinable() || wd_stop_) return;
    watchdog_ = std::thread([self = shared_from_this()] { self->watch(); });
  }
  void watch_begin(const std::string& name) {
    std::lock_guard lk(wd_mu_);
    wd_since_ = Clock::now();
    wd_name_ = name;
    ++wd_seq_;
    // Only a watchdog with nothing to time needs waking; one already timing
    // an earlier call looks at the current one when that wait ends. So a
    // stream of short calls does not wake it (a thread switch) every call.
    if (wd_idle_) wd_cv_.notify_one();
  }
  void watch_end() {
    std::lock_guard lk(wd_mu_);
    wd_since_.reset();
  }
  void watch() {
    std::unique_lock lk(wd_mu_);
    std::uint64_t warned = 0;  // the call (wd_seq_) last warned about: once per call
    while (!wd_stop_) {
      if (!wd_since_ || warned == wd_seq_) {
        wd_idle_ = true;
        wd_cv_.wait(lk);
        wd_idle_ = false;
        continue;
      }
      const auto seq = wd_seq_;
      const auto at = *wd_since_ + opt.short_warn;
      // Calls starting and ending meanwhile do not wake this wait (see
      // watch_begin); at its end the call running then, if any, is timed.
      wd_cv_.wait_until(lk, at, [&] { return wd_stop_; });
      if (wd_stop_ || !wd_since_ || wd_seq_ != seq || Clock::now() < at) continue;
      warned = seq;
      const auto ran = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - *wd_since_);
      const std::string name = wd_name_;
      lk.unlock();
      log(fmt::format(
          "short handler {} has run for {} ms in the listener (short_warn is {} ms): nothing else "
          "of this space is received meanwhile; register it as long_running",
          name, ran.count(), opt.short_warn.count()));
      lk.lock();
    }
  }

  // ---- operations --------------------------------------------------------------------

  void start_call(CallKind kind, std::uint16_t node, std::string_view name, std::span<const std::byte> arg,
                  std::chrono::milliseconds timeout, CallSink sink) {
    if (name.empty()) throw ClientError("a handler name is 1..63 bytes, not empty", EINVAL);
    const auto fail_now = [&](Status st, std::string msg) {
      Completion c;
      c.sink = std::move(sink);
      Reply r;
      r.node = node;
      r.status = st;
      r.message = std::move(msg);
      if (kind == CallKind::broadcast) {
        c.broadcast.replies.push_back(std::move(r));
      } else {
        c.reply = std::move(r);
      }
      std::vector<Completion> done;
      done.push_back(std::move(c));
      run(done);
    };
    if (name.size() > kMaxName)
      return fail_now(Status::too_large, fmt::format("the handler name has {} bytes, over the {}-byte limit",
                                                     name.size(), kMaxName));
    if (arg.size() > kMaxData)
      return fail_now(Status::too_large,
                      fmt::format("the argument has {} bytes, over the {}-byte limit", arg.size(), kMaxData));
    if (!connected) return fail_now(Status::disconnected, not_connected().what());
    timeout = clamp_timeout(timeout.count() > 0 ? timeout : opt.default_deadline);
    const auto now = Clock::now();
    std::uint64_t id = 0;
    {
      std::lock_guard lk(mu_);
      id = pending_.add(kind, node, std::string(name), now, timeout, std::move(sink));
      if (listener_sleeps_ && (!listener_wakes_ || now + timeout < *listener_wakes_)) wake_listener();
    }
    std::array<std::byte, sizeof(api::KccmCallHeader) + kMaxName> head{};
    api::KccmCallHeader h{};
    h.call_id = id;
    h.deadline_ms = static_cast<std::uint32_t>(timeout.count());
    h.flags = kind == CallKind::oneway ? KCCM_F_ONEWAY : 0;
    h.name_len = static_cast<std::uint8_t>(name.size());
    std::memcpy(head.data(), &h, sizeof h);
    std::memcpy(head.data() + sizeof h, name.data(), name.size());
    const std::span<const std::byte> a(head.data(), sizeof h + name.size());
    std::vector<Completion> done;
    try {
      const auto st = submit(api::kRecordKccmCall, node, a, arg, timeout, id);
      if (st != SendStatus::ok) {
        std::lock_guard lk(mu_);
        done = pending_.fail(
            id, Status::deadline_exceeded,
            fmt::format("no result within {} ms: the ring to locabusd stayed full, the call was "
                        "not sent",
                        timeout.count()));
      }
    } catch (const ClientError& e) {
      std::lock_guard lk(mu_);
      done = pending_.fail(id, Status::disconnected, e.what());
    }
    run(done);
  }

  std::optional<Received> recv(std::uint16_t node, std::optional<std::uint32_t> tag,
                               std::chrono::milliseconds timeout) {
    if (on_listener()) throw from_listener("recv()");
    std::shared_ptr<detail::WaiterSlot> slot;
    {
      std::lock_guard lk(mu_);
      // A message handed to a receive that had given up comes first: it
      // is older than anything of its (sender, tag) still at the daemon.
      if (auto kept = waiters_.take_kept(node, tag)) return kept;
      if (!connected) throw not_connected();
      slot = waiters_.add();
    }
    const auto forget = [&] {
      std::lock_guard lk(mu_);
      waiters_.remove(slot->id);
    };
    const auto deadline = deadline_of(timeout);
    api::KccmRecvRequest req{};
    req.waiter = slot->id;
    req.node = node;
    req.flags = tag ? 0 : api::kKccmAnyTag;
    req.tag = tag.value_or(0);
    try {
      if (submit(api::kRecordKccmRecv, 0, raw(req), {}, timeout) != SendStatus::ok) {
        forget();
        return std::nullopt;  // the ring stayed full: nothing was asked
      }
    } catch (...) {
      forget();
      throw;
    }
    std::unique_lock lk(mu_);
    const auto answered = [&] { return slot->state != detail::WaiterSlot::State::waiting; };
    bool got = true;
    if (!deadline) {
      slot->cv.wait(lk, answered);
    } else {
      got = slot->cv.wait_until(lk, *deadline, answered);
    }
    if (!got) {
      // Cancel; the daemon answers with the message it had already handed
      // over (in the ring before the Cancelled) or with Cancelled. The
      // cancel never waits for ring space (the listener's outbox takes it),
      // and the answer is awaited only briefly: a cancel can sit behind a
      // send that waits for credit (a send to this node's own full queue
      // waits for this very receive), so the receive gives up then, and a
      // message handed over later is kept for the next matching receive.
      lk.unlock();
      api::KccmWaiter w{slot->id};
      try {
        (void)submit(api::kRecordKccmCancel, 0, raw(w), {}, kForever, 0, nullptr, nullptr, true);
      } catch (...) {
        forget();
        throw;
      }
      lk.lock();
      if (!slot->cv.wait_for(lk, kCancelGrace, answered)) {
        waiters_.abandon(slot->id);
        return std::nullopt;
      }
    }
    waiters_.remove(slot->id);
    switch (slot->state) {
      case detail::WaiterSlot::State::message: return std::move(slot->message);
      case detail::WaiterSlot::State::disconnected: throw not_connected();
      default: return std::nullopt;
    }
  }

  // Registered when it returns; throws ClientError otherwise.
  void register_handler(const std::string& name, Handler fn, HandlerKind kind) {
    if (name.empty() || name.size() > kMaxName)
      throw ClientError(
          fmt::format("handler name \"{}\" has {} bytes: it must have 1..{}", name, name.size(), kMaxName),
          EINVAL);
    if (!fn) throw ClientError(fmt::format("handler {}: the function is empty", name), EINVAL);
    if (on_listener()) throw from_listener("register_handler()");
    if (!connected) throw not_connected();
    auto entry = std::make_shared<HandlerEntry>();
    entry->name = name;
    entry->fn = std::move(fn);
    entry->kind = kind;
    {
      std::lock_guard lk(mu_);
      if (handlers_.count(name))
        throw ClientError(
            fmt::format("handler {} is already registered in space {} by this process", name, space), EEXIST);
      handlers_.emplace(name, entry);
    }
    const auto drop = [&] {
      std::lock_guard lk(mu_);
      if (auto it = handlers_.find(name); it != handlers_.end() && it->second == entry) handlers_.erase(it);
    };
    if (kind == HandlerKind::long_running) {
      start_workers();
    } else {
      start_watchdog();
    }
    auto ack = std::make_shared<detail::AckSlot>();
    try {
      (void)submit(api::kRecordKccmRegister,
                   kind == HandlerKind::short_inline ? LOCABUS_KCCM_SHORT : LOCABUS_KCCM_LONG,
                   std::as_bytes(std::span(name.data(), name.size())), {}, kForever, 0, ack);
    } catch (...) {
      drop();
      throw;
    }
    std::unique_lock lk(mu_);
    ack->cv.wait(lk, [&] { return ack->done; });
    lk.unlock();
    if (ack->err != 0) {
      drop();
      if (ack->err == ENOTCONN) throw not_connected();
      throw ClientError(ack->text.empty()
                            ? fmt::format("locabusd refused handler {}: {}", name, std::strerror(ack->err))
                            : ack->text,
                        ack->err);
    }
  }

  void unregister(const std::string& name) noexcept {
    try {
      std::shared_ptr<HandlerEntry> entry;
      {
        std::lock_guard lk(mu_);
        auto it = handlers_.find(name);
        if (it == handlers_.end()) return;
        entry = it->second;
      }
      const auto drop = [&] {
        std::lock_guard lk(mu_);
        if (auto it = handlers_.find(name); it != handlers_.end() && it->second == entry) handlers_.erase(it);
      };
      if (connected && !closed) {
        auto ack = std::make_shared<detail::AckSlot>();
        (void)submit(api::kRecordKccmUnregister, 0, std::as_bytes(std::span(name.data(), name.size())), {},
                     kForever, 0, ack);
        if (on_listener()) {
          drop();  // invokes still on their way are answered no_such_handler
          return;  // its running calls: this one, the listener's only
        }
        std::unique_lock lk(mu_);
        ack->cv.wait(lk, [&] { return ack->done; });
        if (ack->err != 0 && ack->err != ENOTCONN)
          log(fmt::format("unregistering handler {}: {}", name, ack->text));
      }
      drop();
      // Its calls still waiting for a worker never start: the worker that
      // would run them may be the one calling reset() (a handler that
      // unregisters itself), so waiting for them could last forever.
      std::vector<Job> dropped;
      {
        std::lock_guard wl(work_mu_);
        std::lock_guard lk(mu_);
        for (auto it = jobs_.begin(); it != jobs_.end();) {
          if (it->handler != entry) {
            ++it;
            continue;
          }
          --entry->inflight;
          dropped.push_back(std::move(*it));
          it = jobs_.erase(it);
        }
        if (!dropped.empty()) handlers_cv_.notify_all();
      }
      for (const Job& j : dropped)
        reply(j.ref, name, Status::no_such_handler,
              text_bytes(fmt::format("handler {} was unregistered in space {} on node {} before the call "
                                     "started",
                                     name, space, conn.node_id)));
      if (on_listener()) return;
      std::unique_lock lk(mu_);
      const unsigned self = t_running == entry.get() ? 1 : 0;
      handlers_cv_.wait(lk, [&] { return entry->inflight <= self; });
    } catch (const std::exception& e) {
      log(fmt::format("unregistering handler {}: {}", name, e.what()));
    }
  }

  std::optional<Event> next_event() {
    std::lock_guard lk(mu_);
    return events_.pop();
  }

  // ---- closing -------------------------------------------------------------------------

  void close() noexcept {
    if (closed.exchange(true)) return;
    const auto me = std::this_thread::get_id();
    bool ours = me == listener_id_.load() || (watchdog_.joinable() && watchdog_.get_id() == me);
    std::vector<std::thread> workers;
    {
      std::lock_guard lk(work_mu_);
      workers_stop_ = true;
      // Calls that wait for a worker are dropped: the daemon answers them
      // handler_exited when this client detaches.
      std::lock_guard lk2(mu_);
      for (auto& j : jobs_) --j.handler->inflight;
      jobs_.clear();
      workers.swap(workers_);
    }
    work_cv_.notify_all();
    for (auto& t : workers) ours = ours || t.get_id() == me;
    {
      std::lock_guard lk(wd_mu_);
      wd_stop_ = true;
    }
    wd_cv_.notify_all();
    // From one of our own threads (a handler or callback closing its space)
    // nothing can be joined: the threads hold the Impl and end on their own.
    const auto end = [&](std::thread& t) {
      if (!t.joinable()) return;
      if (ours) {
        t.detach();
      } else {
        t.join();
      }
    };
    for (auto& t : workers) end(t);  // running handlers finish; the listener still carries their replies
    end(watchdog_);
    listener_stop_ = true;
    wake_listener();
    end(listener_);
    disconnect(Status::disconnected, "the space was closed");
    if (const auto n = skipped_.load())
      log(fmt::format("{} call(s) were skipped: their deadline passed before a worker was free", n));
  }
};

// ---- Space --------------------------------------------------------------------------------

Space::Space(std::shared_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Space::Space(Space&&) noexcept = default;
Space& Space::operator=(Space&& o) noexcept {
  if (this != &o) {
    if (impl_) impl_->close();
    impl_ = std::move(o.impl_);
  }
  return *this;
}
Space::~Space() {
  if (impl_) impl_->close();
}

Space Space::open(std::uint16_t space, const SpaceOptions& options) {
  auto impl = std::make_shared<Impl>();
  impl->opt = options;
  impl->opt.workers = std::max(1U, impl->opt.workers);
  impl->opt.default_deadline = clamp_timeout(impl->opt.default_deadline);
  if (impl->opt.short_warn.count() <= 0) impl->opt.short_warn = std::chrono::milliseconds(100);
  impl->space = space;
  impl->conn.kind = "space";
  const auto reply = impl->conn.open(options.socket_path, {{"op", "open"},
                                                           {"version", api::kProtocolVersion},
                                                           {"kccm", space},
                                                           {"events", true},
                                                           {"max_event_kind", LOCABUS_EV_BROADCAST_LOST}});
  if (!reply.contains("space") || reply.value("space", -1) != space)
    throw ClientError(
        fmt::format("locabusd did not attach KCCM space {} (its reply has no \"space\"): is it an "
                    "older release without KCCM?",
                    space),
        EPROTO);
  if (impl->conn.region->max_payload() < api::kMaxKccmRecord)
    throw ClientError(fmt::format("locabusd's rings ({} bytes) are too small for {}-byte KCCM messages: set "
                                  "ring_bytes to at least {} in its configuration",
                                  impl->conn.region->ring_bytes(), kMaxData,
                                  std::bit_ceil(4 * (api::kMaxKccmRecord + sizeof(api::RecordHeader)))),
                      EMSGSIZE);
  impl->wake_fd = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->wake_fd) throw ClientError(fmt::format("eventfd: {}", std::strerror(errno)), errno);
  impl->listener_ = std::thread([self = impl] { self->listen(); });
  return Space(std::move(impl));
}

std::uint16_t Space::node_id() const noexcept { return impl_->conn.node_id; }
std::uint16_t Space::space() const noexcept { return impl_->space; }
bool Space::connected() const noexcept { return impl_->connected; }
bool Space::in_listener() const noexcept { return impl_->on_listener(); }

SendStatus Space::send(std::uint16_t node, std::uint32_t tag, std::span<const std::byte> data,
                       std::chrono::milliseconds timeout, std::uint64_t* message_no) {
  if (!impl_->connected) throw not_connected();
  if (data.size() > kMaxData) return SendStatus::too_large;
  api::KccmTagHeader h{};
  h.tag = tag;
  return impl_->submit(api::kRecordKccmSend, node, raw(h), data, timeout, 0, nullptr, message_no);
}

std::optional<Received> Space::recv(std::uint16_t node, std::optional<std::uint32_t> tag,
                                    std::chrono::milliseconds timeout) {
  return impl_->recv(node, tag, timeout);
}

Registration Space::register_handler(std::string name, Handler handler, HandlerKind kind) {
  impl_->register_handler(name, std::move(handler), kind);
  return Registration(std::make_shared<Registration::SpaceRef>(Registration::SpaceRef{impl_}),
                      std::move(name));
}

std::future<Reply> Space::call(std::uint16_t node, std::string_view handler, std::span<const std::byte> arg,
                               CallOptions options) {
  auto p = std::make_shared<std::promise<Reply>>();
  auto f = p->get_future();
  impl_->start_call(CallKind::single, node, handler, arg, options.timeout,
                    CallSink{[p](Reply r) { p->set_value(std::move(r)); }, {}});
  return f;
}

void Space::call(std::uint16_t node, std::string_view handler, std::span<const std::byte> arg,
                 std::function<void(Reply)> done, CallOptions options) {
  if (!done) throw ClientError("call(): the callback is empty", EINVAL);
  impl_->start_call(CallKind::single, node, handler, arg, options.timeout, CallSink{std::move(done), {}});
}

void Space::post(std::uint16_t node, std::string_view handler, std::span<const std::byte> arg) {
  post(node, handler, arg, nullptr);
}

void Space::post(std::uint16_t node, std::string_view handler, std::span<const std::byte> arg,
                 std::function<void(const Reply&)> on_failure) {
  if (!on_failure) on_failure = impl_->opt.on_post_failure;
  std::function<void(Reply)> sink;
  if (on_failure) {
    sink = [f = std::move(on_failure)](Reply r) { f(r); };
  } else {
    sink = [w = std::weak_ptr<Impl>(impl_), name = std::string(handler)](Reply r) {
      if (auto impl = w.lock()) impl->log(fmt::format("post() of {} failed: {}", name, r.error()));
    };
  }
  impl_->start_call(CallKind::oneway, node, handler, arg, std::chrono::milliseconds(0),
                    CallSink{std::move(sink), {}});
}

std::future<BroadcastReply> Space::call_all(std::string_view handler, std::span<const std::byte> arg,
                                            CallOptions options) {
  auto p = std::make_shared<std::promise<BroadcastReply>>();
  auto f = p->get_future();
  impl_->start_call(CallKind::broadcast, kAnyNode, handler, arg, options.timeout,
                    CallSink{{}, [p](BroadcastReply r) { p->set_value(std::move(r)); }});
  return f;
}

std::optional<Event> Space::next_event() { return impl_->next_event(); }

// ---- Registration ---------------------------------------------------------------------

Registration::Registration(Registration&& o) noexcept
    : space_(std::move(o.space_)), name_(std::move(o.name_)) {}
Registration& Registration::operator=(Registration&& o) noexcept {
  if (this != &o) {
    reset();
    space_ = std::move(o.space_);
    name_ = std::move(o.name_);
  }
  return *this;
}
Registration::~Registration() { reset(); }

void Registration::reset() noexcept {
  auto ref = std::move(space_);
  if (!ref) return;
  if (auto impl = ref->impl.lock()) impl->unregister(name_);
}

}  // namespace locabus::kccm
