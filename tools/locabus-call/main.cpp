// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabus-call: calls a KCCM handler (docs/KCCM.md) on one node or on every
// node and prints the result; measures calls (--count, --inflight); serves
// handlers of its own (--serve). Uses only the public liblocabus API
// (locabus/kccm.hpp).
//
//   locabus-call --node 2 node.info                      # the built-in, on node 2
//   locabus-call --node all echo hi                      # a line per node
//   locabus-call --node 2 --count 100000 --inflight 64 --size 64 echo --json
//   locabus-call --serve upper,sleep,fail                # handlers in this process
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <iostream>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "call.hpp"

namespace locabus::call {

volatile std::sig_atomic_t g_stop = 0;

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

std::string_view hint(kccm::Status s) {
  switch (s) {
    case kccm::Status::ok: return "";
    case kccm::Status::no_such_handler:
      return "nobody registered that name in this space on that node: check the name and --space "
             "(`locabus-call --serve` registers test handlers)";
    case kccm::Status::handler_failed: return "the handler threw; the message above is its what()";
    case kccm::Status::node_dead:
    case kccm::Status::node_restarted: return "`locabusctl peers` shows the node's state; call again";
    case kccm::Status::deadline_exceeded:
      return "the handler is slow or the node unreachable: raise --timeout, or see `locabusctl peers`";
    case kccm::Status::overloaded: return "the handler's worker queue was full: call less at once";
    case kccm::Status::no_such_node: return "this daemon never heard from that node: `locabusctl peers`";
    case kccm::Status::disconnected: return "the local locabusd went away: is it running?";
    case kccm::Status::too_large: return "arguments are at most 65,440 bytes, handler names 63";
    case kccm::Status::handler_exited: return "the process with the handler exited during the call";
  }
  return "";
}

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/// Unix time in seconds, to compare with `date +%s.%N` in scripts.
double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

/// "all", or a node id (decimal or 0x hex, 0..65534).
std::uint16_t parse_node(const std::string& text) {
  if (text == "all") return kAllNodes;
  unsigned long v = 0;
  const bool hex = text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X');
  const char* b = text.data() + (hex ? 2 : 0);
  const char* e = text.data() + text.size();
  const auto [end, ec] = std::from_chars(b, e, v, hex ? 16 : 10);
  if (b == e || ec != std::errc{} || end != e || v >= 0xFFFF)
    throw CLI::ValidationError("--node",
                               "'" + text + "' is not a node id (0..65534, decimal or 0x hex) or all");
  return static_cast<std::uint16_t>(v);
}

kccm::CallOptions call_options(const Options& o) {
  kccm::CallOptions c;
  if (o.timeout_s > 0)
    c.timeout =
        std::max(std::chrono::milliseconds(1),
                 std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(o.timeout_s * 1000))));
  return c;
}

std::string timeout_text(const Options& o) {
  return o.timeout_s > 0 ? fmt::format("{} s", o.timeout_s) : "the default deadline (10 s)";
}

std::string_view status_name(kccm::Status s) { return kccm::to_string(s); }

// ---- one call -----------------------------------------------------------------------

json reply_json(const kccm::Reply& r) {
  json j{{"node", r.node}, {"status", status_name(r.status)}};
  if (r)
    j["data"] = std::string(r.text());
  else
    j["message"] = r.message;
  return j;
}

void print_failure(const kccm::Reply& r) {
  std::cerr << "locabus-call: " << r.error() << "\n";
  if (const auto h = hint(r.status); !h.empty()) std::cerr << "  hint: " << h << "\n";
}

int call_one(kccm::Space& space, const Options& o, std::uint16_t node, std::span<const std::byte> arg) {
  const auto t0 = Clock::now();
  const kccm::Reply r = space.call(node, o.handler, arg, call_options(o)).get();
  const double ms = seconds_since(t0) * 1000;
  if (o.json) {
    json j = reply_json(r);
    j["ms"] = std::round(ms * 1000) / 1000;
    std::cout << dump(j) << std::endl;
  } else if (r) {
    std::cout << r.text();
    if (r.data.empty() || r.text().back() != '\n') std::cout << "\n";
    std::cout << std::flush;
  }
  if (!r) print_failure(r);
  return exit_code(r.status);
}

/// 0 when every node answered ok; the status's code when every failure
/// (a missing node counts as deadline_exceeded) has the same cause; else 3.
int call_every(kccm::Space& space, const Options& o, std::span<const std::byte> arg) {
  const kccm::BroadcastReply b = space.call_all(o.handler, arg, call_options(o)).get();
  std::optional<kccm::Status> cause;
  bool mixed = false;
  auto failed = [&](kccm::Status s) {
    if (cause && *cause != s) mixed = true;
    cause = s;
  };
  // One line per node, in node order, answered or not.
  std::vector<std::pair<std::uint16_t, std::string>> lines;
  for (const auto& r : b.replies) {
    if (!r) failed(r.status);
    std::string line;
    if (o.json) {
      line = dump(reply_json(r));
    } else if (r) {
      std::string text(r.text());
      while (!text.empty() && text.back() == '\n') text.pop_back();
      line = fmt::format("node {}: {}", r.node, text);
    } else {
      line = fmt::format("node {}: error: {}: {}", r.node, status_name(r.status), r.message);
    }
    lines.emplace_back(r.node, std::move(line));
  }
  for (const auto n : b.missing) {
    failed(kccm::Status::deadline_exceeded);
    const auto why = fmt::format("no answer within {}", timeout_text(o));
    lines.emplace_back(n, o.json ? dump(json{{"node", n},
                                             {"status", status_name(kccm::Status::deadline_exceeded)},
                                             {"missing", true},
                                             {"message", why}})
                                 : fmt::format("node {}: {} (deadline_exceeded)", n, why));
  }
  std::stable_sort(lines.begin(), lines.end(),
                   [](const auto& a, const auto& c) { return a.first < c.first; });
  for (const auto& [n, line] : lines) std::cout << line << "\n";
  std::cout << std::flush;
  if (!cause) return kExitOk;
  const std::size_t bad =
      b.missing.size() + static_cast<std::size_t>(std::count_if(b.replies.begin(), b.replies.end(),
                                                                [](const kccm::Reply& r) { return !r; }));
  std::cerr << fmt::format("locabus-call: {} of {} node(s) failed or did not answer\n", bad,
                           b.replies.size() + b.missing.size());
  if (mixed) return kExitMixed;
  if (const auto h = hint(*cause); !h.empty()) std::cerr << "  hint: " << h << "\n";
  return exit_code(*cause);
}

// ---- many calls (--count, --duration) -------------------------------------------------------

/// How one of many calls ended.
struct Outcome {
  kccm::Status status = kccm::Status::ok;
  std::string message;  // not ok: "node 3: node_dead: ..."
  bool mismatch = false;
  std::int64_t ns = 0;  // from the call to its outcome
};

Outcome outcome_of(const kccm::Reply& r, std::span<const std::byte> want) {
  Outcome out{r.status, r ? std::string() : r.error(), false, 0};
  if (r && !want.empty() && !std::equal(r.data.begin(), r.data.end(), want.begin(), want.end())) {
    out.mismatch = true;
    out.message = fmt::format("node {}: the echo of {} bytes came back as {} different bytes", r.node,
                              want.size(), r.data.size());
  }
  return out;
}

Outcome outcome_of(const kccm::BroadcastReply& b, const Options& o) {
  for (const auto& r : b.replies)
    if (!r) return {r.status, r.error(), false, 0};
  if (!b.missing.empty())
    return {kccm::Status::deadline_exceeded,
            fmt::format("node {}: no answer within {} ({} node(s) missing)", b.missing.front(),
                        timeout_text(o), b.missing.size()),
            false, 0};
  return {};
}

/// Latencies in bounded memory however long a run lasts: exact below 128 ns,
/// above in buckets of 1/128 of a power of two (a percentile is the upper
/// end of its bucket, at most 0.8 % above the true value; min, max and mean
/// are exact).
class Histogram {
 public:
  void add(std::int64_t ns) {
    const auto v = static_cast<std::uint64_t>(std::max<std::int64_t>(ns, 0));
    ++counts_[index(v)];
    min_ = n_ == 0 ? v : std::min(min_, v);
    max_ = std::max(max_, v);
    sum_ += static_cast<double>(v);
    ++n_;
  }
  std::uint64_t count() const { return n_; }
  void clear() { *this = Histogram(); }

  /// min, mean, p50, p90, p99, max in microseconds (0.1 us); null when empty.
  json to_json() const {
    if (n_ == 0) return nullptr;
    auto us = [](double ns) { return std::round(ns / 100) / 10; };
    return {{"min", us(static_cast<double>(min_))}, {"mean", us(sum_ / static_cast<double>(n_))},
            {"p50", us(percentile_ns(0.50))},       {"p90", us(percentile_ns(0.90))},
            {"p99", us(percentile_ns(0.99))},       {"max", us(static_cast<double>(max_))}};
  }

 private:
  static constexpr int kSub = 7;  // 128 buckets per power of two

  static std::size_t index(std::uint64_t v) {
    if (v < (std::uint64_t{1} << kSub)) return static_cast<std::size_t>(v);
    const int e = 63 - std::countl_zero(v);  // 2^e <= v < 2^(e+1), e >= kSub
    const auto m = static_cast<std::size_t>((v >> (e - kSub)) & ((std::uint64_t{1} << kSub) - 1));
    return (static_cast<std::size_t>(e - kSub + 1) << kSub) + m;
  }
  // The largest value bucket i holds.
  static std::uint64_t upper(std::size_t i) {
    if (i < (std::size_t{1} << kSub)) return i;
    const int e = static_cast<int>(i >> kSub) + kSub - 1;
    const std::uint64_t m = i & ((std::size_t{1} << kSub) - 1);
    return ((((std::uint64_t{1} << kSub) | m) + 1) << (e - kSub)) - 1;
  }
  // Nearest rank.
  double percentile_ns(double p) const {
    const auto rank =
        std::clamp<std::uint64_t>(static_cast<std::uint64_t>(std::ceil(p * static_cast<double>(n_))), 1, n_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) return static_cast<double>(std::clamp(upper(i), min_, max_));
    }
    return static_cast<double>(max_);
  }

  std::array<std::uint64_t, static_cast<std::size_t>(64 - kSub + 1) << kSub> counts_{};
  std::uint64_t n_ = 0, min_ = 0, max_ = 0;
  double sum_ = 0;
};

std::string us_text(double us) {
  if (us < 10'000) return fmt::format("{:.0f}us", us);
  return fmt::format("{:.1f}ms", us / 1000.0);
}

/// What many calls did; shared by the thread that makes them and the one
/// that completes them (the Space's listener, or --node all's callers).
class Tally {
 public:
  void record(const Outcome& out) {
    std::lock_guard lk(m_);
    const double at = unix_now();
    ++done_;
    if (out.status == kccm::Status::ok && !out.mismatch) {
      ++ok_;
      ok_ns_.add(out.ns);
      window_ns_.add(out.ns);
      if (any_failure_) {
        ++ok_after_failure_;
        if (!first_ok_after_failure_at_) first_ok_after_failure_at_ = at;
      }
      return;
    }
    if (!any_failure_) first_failure_status_ = out.status;
    any_failure_ = true;
    ok_after_failure_ = 0;
    first_ok_after_failure_at_.reset();
    max_failed_ns_ = std::max(max_failed_ns_, out.ns);
    const std::string key = out.mismatch ? "mismatch" : std::string(status_name(out.status));
    if (out.mismatch) ++mismatched_;
    ++window_failed_[key];
    auto [it, fresh] = failures_.try_emplace(key);
    auto& f = it->second;
    ++f.count;
    if (fresh) {
      f.first_at = at;
      f.first_message = out.message;
    }
    f.last_at = at;
    f.max_ns = std::max(f.max_ns, out.ns);
    if (!first_failure_message_.empty()) return;
    first_failure_message_ = out.message;
  }

  std::uint64_t done() const {
    std::lock_guard lk(m_);
    return done_;
  }
  bool any_failure() const {
    std::lock_guard lk(m_);
    return any_failure_;
  }

  /// The interval's line (--interval), and the interval starts again.
  json take_window(double t) {
    std::lock_guard lk(m_);
    json failed = json::object();
    std::uint64_t nfailed = 0;
    for (const auto& [k, n] : window_failed_) {
      failed[k] = n;
      nfailed += n;
    }
    const double secs = std::chrono::duration<double>(Clock::now() - window_start_).count();
    json j{{"t", std::round(t * 1000) / 1000},
           {"at", unix_now()},
           {"ok", window_ns_.count()},
           {"failed", failed},
           {"calls_per_s",
            secs > 0 ? std::round(static_cast<double>(window_ns_.count() + nfailed) / secs) : 0.0},
           {"latency_us", window_ns_.to_json()}};
    window_ns_.clear();
    window_failed_.clear();
    window_start_ = Clock::now();
    return j;
  }

  json summary(const Options& o, std::uint16_t node, std::size_t size, std::uint64_t issued, double secs,
               bool interrupted, bool stopped_at_failure) const {
    std::lock_guard lk(m_);
    json failures = json::object();
    for (const auto& [k, f] : failures_)
      failures[k] = {{"count", f.count},
                     {"first_at", f.first_at},
                     {"last_at", f.last_at},
                     {"max_ms", std::round(static_cast<double>(f.max_ns) / 1e4) / 100},
                     {"first_message", f.first_message}};
    auto opt = [](const std::optional<double>& v) { return v ? json(*v) : json(nullptr); };
    std::optional<double> first_failure_at, last_failure_at;
    for (const auto& [k, f] : failures_) {
      first_failure_at = std::min(first_failure_at.value_or(f.first_at), f.first_at);
      last_failure_at = std::max(last_failure_at.value_or(f.last_at), f.last_at);
    }
    return {{"handler", o.handler},
            {"node", node == kAllNodes ? json("all") : json(node)},
            {"space", o.space},
            {"size", size},
            {"inflight", o.inflight},
            {"calls", issued},
            {"completed", done_},
            {"succeeded", ok_},
            {"failed", done_ - ok_},
            {"mismatched", mismatched_},
            {"ok", done_ == ok_ && done_ == issued && !interrupted},
            {"seconds", std::round(secs * 1e6) / 1e6},
            {"calls_per_s", secs > 0 ? std::round(static_cast<double>(done_) / secs) : 0.0},
            {"latency_us", ok_ns_.to_json()},
            {"failures", failures},
            {"first_failure", first_failure_message_.empty() ? json(nullptr) : json(first_failure_message_)},
            {"first_failure_at", opt(first_failure_at)},
            {"last_failure_at", opt(last_failure_at)},
            {"max_failed_ms", any_failure_ ? json(std::round(static_cast<double>(max_failed_ns_) / 1e4) / 100)
                                           : json(nullptr)},
            {"ok_after_last_failure", any_failure_ ? ok_after_failure_ : ok_},
            {"first_ok_after_last_failure_at", opt(first_ok_after_failure_at_)},
            {"started_at", started_at_},
            {"interrupted", interrupted},
            {"stopped_at_failure", stopped_at_failure}};
  }

  /// The exit status of the run: 0, the one cause's, or kExitMixed/kExitMismatch.
  int exit_status(bool complete) const {
    std::lock_guard lk(m_);
    if (!any_failure_) return complete ? kExitOk : kExitError;
    if (failures_.size() > 1) return kExitMixed;
    if (mismatched_) return kExitMismatch;
    return exit_code(first_failure_status_);
  }

  // --- progress (stderr, a terminal only)
  std::pair<std::uint64_t, std::uint64_t> ok_failed() const {
    std::lock_guard lk(m_);
    return {ok_, done_ - ok_};
  }

 private:
  struct PerCause {
    std::uint64_t count = 0;
    double first_at = 0, last_at = 0;
    std::int64_t max_ns = 0;
    std::string first_message;
  };
  mutable std::mutex m_;
  const double started_at_ = unix_now();
  std::uint64_t done_ = 0, ok_ = 0, mismatched_ = 0, ok_after_failure_ = 0;
  Histogram ok_ns_, window_ns_;
  std::map<std::string, std::uint64_t> window_failed_;
  Clock::time_point window_start_ = Clock::now();
  bool any_failure_ = false;
  kccm::Status first_failure_status_ = kccm::Status::ok;
  std::string first_failure_message_;
  std::int64_t max_failed_ns_ = 0;
  std::optional<double> first_ok_after_failure_at_;
  std::map<std::string, PerCause> failures_;
};

/// The argument of --count runs: ARG, or --size bytes of a printable pattern.
std::vector<std::byte> make_argument(const Options& o) {
  if (o.size == 0) return kccm::bytes(o.arg);
  std::vector<std::byte> a(o.size);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<std::byte>('a' + i % 26);
  return a;
}

/// Makes the calls of a --count/--duration run; prints interval lines,
/// progress and the summary.
class Runner {
 public:
  Runner(kccm::Space& space, const Options& o, std::uint16_t node)
      : space_(space), o_(o), node_(node), arg_(make_argument(o)), state_(std::make_shared<State>()) {
    // echo's result must be its argument (built-in or not)
    if (o.handler == "echo") state_->want = arg_;
  }

  int run() {
    install_stop_handlers();
    start_ = Clock::now();
    next_progress_ = start_ + std::chrono::seconds(1);
    next_interval_ = start_ + interval();
    if (node_ == kAllNodes)
      run_threads();
    else
      run_async();
    return finish();
  }

 private:
  // Between the caller and the listener's completions.
  struct State {
    std::mutex m;
    std::condition_variable cv;
    unsigned outstanding = 0;
    Clock::time_point backoff_until{};
    std::vector<std::byte> want;  // echo: the result each call must return
    Tally tally;
  };

  Clock::duration interval() const {
    return o_.interval_s > 0
               ? std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.interval_s))
               : std::chrono::hours(24 * 365);
  }

  bool more() {
    if (g_stop) return false;
    if (o_.count && issued_ >= o_.count) return false;
    if (o_.duration_s > 0 && seconds_since(start_) >= o_.duration_s) return false;
    if (!o_.keep_going && state_->tally.any_failure()) {
      stopped_at_failure_ = true;
      return false;
    }
    return true;
  }

  // Interval lines (stdout) and progress (stderr, when it is a terminal).
  void tick() {
    const auto now = Clock::now();
    if (now >= next_interval_) {
      json w = state_->tally.take_window(seconds_since(start_));
      if (o_.json) {
        w["interval"] = true;
        std::cout << dump(w) << std::endl;
      } else {
        std::string failed;
        for (auto it = w["failed"].begin(); it != w["failed"].end(); ++it)
          failed += fmt::format(", {} {}", it.value().get<std::uint64_t>(), it.key());
        const auto& l = w["latency_us"];
        std::cout << fmt::format("{:7.3f}s: {} ok{} ({} calls/s){}", w["t"].get<double>(),
                                 w["ok"].get<std::uint64_t>(), failed, w["calls_per_s"].get<double>(),
                                 l.is_null()
                                     ? std::string()
                                     : fmt::format(", p50 {}, p99 {}", us_text(l["p50"].get<double>()),
                                                   us_text(l["p99"].get<double>())))
                  << std::endl;
      }
      while (next_interval_ <= now) next_interval_ += interval();
    }
    if (now >= next_progress_) {
      if (progress_) {
        const auto [ok, failed] = state_->tally.ok_failed();
        const double secs = std::chrono::duration<double>(now - last_progress_at_).count();
        std::cerr << fmt::format(
            "  {}{} calls, {} failed, {:.0f} calls/s over the last {:.1f}s\n", ok + failed,
            o_.count ? fmt::format("/{}", o_.count) : "", failed,
            secs > 0 ? static_cast<double>(ok + failed - last_progress_done_) / secs : 0.0, secs);
        last_progress_done_ = ok + failed;
        last_progress_at_ = now;
      }
      next_progress_ = now + std::chrono::seconds(1);
    }
  }

  Clock::time_point next_wake() const { return std::min(next_progress_, next_interval_); }

  // Unicast: calls with a completion callback (run by the Space's
  // listener), at most --inflight outstanding.
  void run_async() {
    const auto opts = call_options(o_);
    const auto pause = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.pause_s));
    auto st = state_;
    for (;;) {
      {
        std::unique_lock lk(st->m);
        // wait for a free slot (and the back-off after a failure), ticking
        while (st->outstanding >= o_.inflight || Clock::now() < st->backoff_until) {
          auto until = next_wake();
          if (st->outstanding < o_.inflight) until = std::min(until, st->backoff_until);
          st->cv.wait_until(lk, until);
          lk.unlock();
          tick();
          lk.lock();
          if (g_stop) break;
        }
      }
      tick();
      if (!more()) break;
      {
        std::lock_guard lk(st->m);
        ++st->outstanding;
      }
      ++issued_;
      const auto t0 = Clock::now();
      space_.call(
          node_, o_.handler, arg_,
          [st, t0, pause](kccm::Reply r) {
            Outcome out = outcome_of(r, st->want);
            out.ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
            st->tally.record(out);
            {
              std::lock_guard lk(st->m);
              --st->outstanding;
              if (out.status != kccm::Status::ok || out.mismatch) st->backoff_until = Clock::now() + pause;
            }
            st->cv.notify_all();
          },
          opts);
    }
    // Every call has a deadline: the outstanding ones end.
    std::unique_lock lk(st->m);
    while (st->outstanding > 0) {
      st->cv.wait_until(lk, next_wake());
      lk.unlock();
      tick();
      lk.lock();
    }
  }

  // --node all: --inflight threads, each calling call_all() and waiting.
  void run_threads() {
    const auto opts = call_options(o_);
    std::mutex issue_m;
    auto claim = [&] {
      std::lock_guard lk(issue_m);
      if (!more()) return false;
      ++issued_;
      return true;
    };
    unsigned running = o_.inflight;  // under state_->m
    std::vector<std::jthread> callers;
    for (unsigned i = 0; i < o_.inflight; ++i)
      callers.emplace_back([&] {
        while (claim()) {
          const auto t0 = Clock::now();
          Outcome out = outcome_of(space_.call_all(o_.handler, arg_, opts).get(), o_);
          out.ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
          state_->tally.record(out);
          if (out.status != kccm::Status::ok)
            std::this_thread::sleep_for(std::chrono::duration<double>(o_.pause_s));
        }
        {
          std::lock_guard lk(state_->m);
          --running;
        }
        state_->cv.notify_all();
      });
    std::unique_lock lk(state_->m);
    while (running > 0) {
      state_->cv.wait_until(lk, next_wake());
      lk.unlock();
      tick();
      lk.lock();
    }
  }

  int finish() {
    const double secs = seconds_since(start_);
    const bool interrupted = g_stop != 0;
    const json s =
        state_->tally.summary(o_, node_, arg_.size(), issued_, secs, interrupted, stopped_at_failure_);
    if (o_.json) {
      std::cout << dump(s) << std::endl;
    } else {
      const std::string where = node_ == kAllNodes ? "every node" : fmt::format("node {}", node_);
      std::cout << fmt::format(
          "{} call(s) of {} on {} ({}-byte argument, up to {} in flight): {} ok, {} failed in {:.3f}s "
          "({:.0f} "
          "calls/s)\n",
          issued_, o_.handler, where, arg_.size(), o_.inflight, s["succeeded"].get<std::uint64_t>(),
          s["failed"].get<std::uint64_t>(), secs, s["calls_per_s"].get<double>());
      if (const auto& l = s["latency_us"]; !l.is_null())
        std::cout << fmt::format("latency: min {}, p50 {}, p90 {}, p99 {}, max {}, mean {}\n",
                                 us_text(l["min"].get<double>()), us_text(l["p50"].get<double>()),
                                 us_text(l["p90"].get<double>()), us_text(l["p99"].get<double>()),
                                 us_text(l["max"].get<double>()), us_text(l["mean"].get<double>()));
      for (auto it = s["failures"].begin(); it != s["failures"].end(); ++it)
        std::cout << fmt::format("failed: {} x {} (the first: {})\n",
                                 it.value()["count"].get<std::uint64_t>(), it.key(),
                                 it.value()["first_message"].get<std::string>());
      if (s["failed"].get<std::uint64_t>() > 0 && s["ok_after_last_failure"].get<std::uint64_t>() > 0)
        std::cout << fmt::format("{} call(s) succeeded after the last failure\n",
                                 s["ok_after_last_failure"].get<std::uint64_t>());
      std::cout << std::flush;
    }
    if (interrupted) std::cerr << fmt::format("locabus-call: interrupted after {} call(s)\n", issued_);
    if (stopped_at_failure_)
      std::cerr << fmt::format("locabus-call: stopped at the first failure (--keep-going goes on): {}\n",
                               s["first_failure"].get<std::string>());
    return state_->tally.exit_status(!interrupted);
  }

  kccm::Space& space_;
  const Options& o_;
  const std::uint16_t node_;
  const std::vector<std::byte> arg_;
  std::shared_ptr<State> state_;
  std::uint64_t issued_ = 0;
  bool stopped_at_failure_ = false;
  Clock::time_point start_{}, next_progress_{}, next_interval_{}, last_progress_at_ = Clock::now();
  std::uint64_t last_progress_done_ = 0;
  const bool progress_ = ::isatty(STDERR_FILENO) == 1 && !o_.quiet;
};

std::string read_stdin() {
  return {std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
}

int run(Options& o) {
  if (o.serving()) return serve(o);
  if (o.arg == "-") o.arg = read_stdin();
  if (o.arg.size() > kccm::kMaxData || o.size > kccm::kMaxData)
    throw Failure(fmt::format("the argument has {} bytes, over the limit of {}",
                              std::max(o.arg.size(), o.size), kccm::kMaxData));
  const std::optional<std::uint16_t> given =
      o.node_text.empty() ? std::nullopt : std::optional(parse_node(o.node_text));
  kccm::SpaceOptions so;
  so.socket_path = o.socket_path;
  auto space = kccm::Space::open(o.space, so);
  const std::uint16_t node = given.value_or(space.node_id());
  if (o.counting()) return Runner(space, o, node).run();
  const auto arg = kccm::bytes(o.arg);
  return node == kAllNodes ? call_every(space, o, arg) : call_one(space, o, node, arg);
}

}  // namespace
}  // namespace locabus::call

int main(int argc, char** argv) {
  using namespace locabus::call;
  CLI::App app{
      "locabus-call: call a KCCM handler (docs/KCCM.md) on one node or every node through the local\n"
      "locabusd and print its result; measure calls (--count, --inflight); or serve test handlers in\n"
      "this process (--serve). Every space has the built-ins echo (returns its argument) and node.info\n"
      "(JSON about the node)."};
  app.set_version_flag("--version", "locabus-call 0.1.0");
  Options o;
  app.add_option("-s,--socket", o.socket_path,
                 "locabusd's API socket (default: $LOCABUS_SOCKET, else /run/locabus/locabusd.sock)");
  app.add_option("--space", o.space, "The KCCM space (0..65535, default 0)")->check(CLI::Range(0, 65535));
  auto* node =
      app.add_option("-n,--node", o.node_text,
                     "The node to call (decimal or 0x hex), or 'all': every node, this one included, "
                     "a line each (default: this node)");
  app.add_option("-t,--timeout", o.timeout_s,
                 "Seconds: the call's deadline (default 10); a call still without a result then fails "
                 "with deadline_exceeded")
      ->check(CLI::PositiveNumber);
  app.add_flag("--json", o.json,
               "JSON: an object per node ({node, status, data | message}), or the --count summary (and "
               "--interval lines)");
  app.add_flag("-q,--quiet", o.quiet, "No progress or notes on stderr (errors still)");
  auto* handler = app.add_option("HANDLER", o.handler, "The handler's name (1..63 bytes)");
  auto* arg = app.add_option("ARG", o.arg, "The argument (default empty; '-': read it from stdin)");
  auto* count = app.add_option("-c,--count", o.count,
                               "Make N calls (up to --inflight at once) and print calls/s and latency "
                               "percentiles (within 1 %) instead of results")
                    ->check(CLI::PositiveNumber);
  auto* duration = app.add_option("-d,--duration", o.duration_s,
                                  "Like --count, for this many seconds (with --count: whichever ends first)")
                       ->check(CLI::PositiveNumber);
  auto* inflight =
      app.add_option("-k,--inflight", o.inflight,
                     "With --count/--duration: calls outstanding at once (default 1; --node all: that many "
                     "threads each waiting for its call_all)")
          ->check(CLI::Range(1, 65536));
  auto* size = app.add_option("--size", o.size,
                              "With --count/--duration: an argument of this many bytes (a letter pattern) "
                              "instead of ARG; echo's results are checked against it")
                   ->check(CLI::Range(1, static_cast<int>(LOCABUS_KCCM_MAX_DATA)));
  auto* keep = app.add_flag("--keep-going", o.keep_going,
                            "With --count/--duration: go on after failures (by default the run stops "
                            "making calls at the first one); a failed call's slot waits --pause first");
  auto* pause = app.add_option("--pause", o.pause_s,
                               "With --keep-going: seconds a slot waits after a failure "
                               "(default 0.05)")
                    ->check(CLI::NonNegativeNumber);
  auto* interval =
      app.add_option("-i,--interval", o.interval_s,
                     "With --count/--duration: a line per this many seconds on stdout (calls ok, "
                     "failed by cause, calls/s, p50/p99; JSON with --json)")
          ->check(CLI::PositiveNumber);
  auto* serve_opt = app.add_option(
      "--serve", o.serve,
      "Register handlers in this process and serve until SIGINT/SIGTERM: NAME[=BEHAVIOUR],... where "
      "BEHAVIOUR is upper (returns ARG upper-cased), sleep (sleeps ARG ms), fail (throws: handler_failed) or "
      "echo; NAME alone uses the behaviour of that name. Prints a line once they are registered");
  auto* short_opt = app.add_flag("--short", o.short_handlers,
                                 "With --serve: register short handlers (run in the listener thread) instead "
                                 "of long ones (a worker pool)");
  auto* workers =
      app.add_option("--workers", o.workers, "With --serve: worker threads for long handlers (default 4)")
          ->check(CLI::Range(1, 1024));
  for (auto* opt : {node, handler, arg, count, duration}) serve_opt->excludes(opt);
  short_opt->needs(serve_opt);
  workers->needs(serve_opt);
  pause->needs(keep);
  size->excludes(arg);
  app.footer(
      "Examples:\n"
      "  locabus-call --node 2 node.info\n"
      "  locabus-call --node all echo hi\n"
      "  locabus-call --node 3 --timeout 1 sleep 5000          # deadline_exceeded (exit 15) after 1 s\n"
      "  locabus-call --node 2 --count 100000 --inflight 64 --size 64 echo --json\n"
      "  locabus-call --serve upper,sleep,fail                 # then: locabus-call --node N upper hi\n"
      "Exit status: 0 ok; 1 no call was made (no daemon, bad argument...), a --count run was\n"
      "interrupted, or --serve lost its daemon;\n"
      "10 + the failure's status: 11 no_such_handler, 12 handler_failed, 13 node_dead, 14 node_restarted,\n"
      "15 deadline_exceeded, 16 overloaded, 17 no_such_node, 18 disconnected, 19 too_large,\n"
      "20 handler_exited; 3 failures of several causes (--node all, --count); 4 an echo came back\n"
      "different (--count); 100 and above: bad usage. docs/KCCM.md describes the statuses.");
  try {
    app.parse(argc, argv);
    if (!o.serving() && handler->count() == 0)
      throw CLI::ValidationError("HANDLER", "the handler to call is required (or --serve)");
    if (!o.counting())
      for (const auto* opt : {inflight, size, keep, interval})
        if (opt->count()) throw CLI::ValidationError(opt->get_name(), "needs --count or --duration");
    if (o.serving() && app.get_option("--timeout")->count())
      throw CLI::ValidationError("--timeout", "applies to calls, not to --serve");
    return run(o);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const locabus::ClientError& e) {
    std::cerr << "locabus-call: error: " << e.what() << "\n";
    return kExitError;
  } catch (const Failure& e) {
    std::cerr << "locabus-call: error: " << e.what() << "\n";
    return kExitError;
  } catch (const std::exception& e) {
    std::cerr << "locabus-call: error: " << e.what() << "\n";
    return kExitError;
  }
}
