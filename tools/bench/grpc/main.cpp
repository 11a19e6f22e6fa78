// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabus-bench-grpc: gRPC unary calls, the peer of KCCM calls in
// locabus-bench's `rpc` scenario. Uses gRPC's synchronous C++ API as its
// users do: a ServerBuilder with the generated sync service and gRPC's default
// thread settings on the server; on the client one channel shared by K threads,
// each making blocking unary calls with a deadline through its own stub.
//
//   locabus-bench-grpc server --port 7300
//   locabus-bench-grpc client --host 198.18.5.1 --port 7300 --size 64 --count 100000 --inflight 64
//
// The client prints one JSON object (calls/s, latency percentiles, CPU) and
// then calls Stop, on which the server prints its own (calls served, CPU).
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/measure.hpp"

#include "bench.grpc.pb.h"

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using locabus::bench::Cpu;
using locabus::bench::latency_us;
using locabus::bench::rounded;
using locabus::bench::unix_now;
namespace pb = locabus::bench;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// Just under gRPC's default maximum message (4 MiB, payload plus its
// protobuf field header), which neither side raises.
constexpr std::size_t kMaxSize = 4 * 1024 * 1024 - 16;

/// Something failed before or around the measurement; main() prints it as
/// {"ok": false, "error": ...} and exits 1.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

volatile std::sig_atomic_t g_signal = 0;

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = [](int sig) { g_signal = sig; };
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

/// CLOCK_REALTIME in seconds: comparable across the namespaces' processes.
double to_seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

/// "host:port", with brackets around an IPv6 address.
std::string address(const std::string& host, unsigned port) {
  if (host.find(':') != std::string::npos && host.front() != '[') return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

std::chrono::system_clock::time_point deadline_after(double seconds) {
  return std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                std::chrono::duration<double>(seconds));
}

std::string status_text(const grpc::Status& st) {
  return fmt::format("{} (gRPC status {})", st.error_message().empty() ? "no message" : st.error_message(),
                     static_cast<int>(st.error_code()));
}

// ---- server -------------------------------------------------------------------------

struct ServerOptions {
  std::string bind = "0.0.0.0";
  unsigned port = 0;
  int threads = 0;  // 0: gRPC's default
  double timeout_s = 60;
};

/// The generated synchronous service: Echo answers with the request's
/// payload; Begin and Stop frame the measured phase for the main thread.
class BenchService final : public pb::Bench::Service {
 public:
  grpc::Status Echo(grpc::ServerContext*, const pb::Payload* request, pb::Payload* reply) override {
    reply->set_payload(request->payload());
    calls_.fetch_add(1, std::memory_order_relaxed);
    touch();
    return grpc::Status::OK;
  }

  grpc::Status Begin(grpc::ServerContext*, const pb::Empty*, pb::Empty*) override {
    std::lock_guard lk(m_);
    begin_ = Mark{calls_.load(), Cpu::now(), unix_now()};
    touch();
    return grpc::Status::OK;
  }

  grpc::Status Stop(grpc::ServerContext*, const pb::Empty*, pb::Empty*) override {
    {
      std::lock_guard lk(m_);
      stop_ = Mark{calls_.load(), Cpu::now(), unix_now()};
    }
    cv_.notify_all();
    return grpc::Status::OK;
  }

  /// A point of the run: calls served so far, CPU time, wall clock.
  struct Mark {
    std::uint64_t calls = 0;
    Cpu cpu;
    double at = 0;
  };

  /// Waits up to `tick` for Stop; its mark once it came.
  std::optional<Mark> wait_stop(Clock::duration tick) {
    std::unique_lock lk(m_);
    cv_.wait_for(lk, tick, [&] { return stop_.has_value(); });
    return stop_;
  }
  std::optional<Mark> begin() const {
    std::lock_guard lk(m_);
    return begin_;
  }
  std::uint64_t calls() const { return calls_.load(); }
  /// Seconds since the last call of any kind (or since the server started).
  double idle_s() const {
    return to_seconds(Clock::now().time_since_epoch() -
                      Clock::duration(last_.load(std::memory_order_relaxed)));
  }

 private:
  void touch() { last_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed); }

  std::atomic<std::uint64_t> calls_{0};
  std::atomic<Clock::rep> last_{Clock::now().time_since_epoch().count()};
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::optional<Mark> begin_, stop_;
};

int run_server(const ServerOptions& o) {
  const std::string listen = address(o.bind, o.port);
  BenchService service;
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(&service);
  // gRPC servers set SO_REUSEPORT by default, so a second server on a busy
  // port would share it silently; a benchmark wants the bind to fail.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  if (o.threads > 0) {
    grpc::ResourceQuota quota("locabus-bench-grpc");
    quota.SetMaxThreads(o.threads);
    builder.SetResourceQuota(quota);
  }
  const Cpu cpu_start = Cpu::now();
  const double ready_at = unix_now();
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0)
    throw Failure(
        fmt::format("listen on {} failed (is the port in use, or {} not an address of this "
                    "namespace?)",
                    listen, o.bind));
  std::cerr << "ready" << std::endl;

  std::optional<BenchService::Mark> stop;
  std::string error;
  while (!(stop = service.wait_stop(std::chrono::milliseconds(200)))) {
    if (g_signal) {
      error =
          fmt::format("interrupted by signal {} before the client's Stop call", static_cast<int>(g_signal));
      break;
    }
    if (service.idle_s() > o.timeout_s) {
      error = fmt::format("no call for {} s (did the client run and reach {}? --timeout raises the bound)",
                          o.timeout_s, listen);
      break;
    }
  }
  const BenchService::Mark end = stop ? *stop : BenchService::Mark{service.calls(), Cpu::now(), unix_now()};
  const BenchService::Mark begin = service.begin().value_or(BenchService::Mark{0, cpu_start, ready_at});
  // Calls still running get a second to finish, then are cancelled.
  server->Shutdown(deadline_after(1.0));
  server->Wait();

  json j{{"role", "server"},
         {"listen", listen},
         {"threads", o.threads > 0 ? json(o.threads) : json(nullptr)},
         {"calls", end.calls - begin.calls},
         {"warmup_calls", begin.calls},
         {"started_at", begin.at},
         {"finished_at", end.at},
         {"seconds", rounded(end.at - begin.at, 6)},
         {"cpu_s", (end.cpu - begin.cpu).json()},
         {"ok", error.empty()}};
  if (!error.empty()) j["error"] = error;
  std::cout << dump(j) << std::endl;
  if (!error.empty()) std::cerr << "locabus-bench-grpc server: " << error << "\n";
  return error.empty() ? kExitOk : kExitFailure;
}

// ---- client -------------------------------------------------------------------------

struct ClientOptions {
  std::string host;
  unsigned port = 0;
  std::size_t size = 64;
  std::uint64_t count = 0;
  double duration_s = 0;
  unsigned inflight = 1;
  std::uint64_t warmup = 1000;
  double timeout_s = 10;
};

/// What one calling thread did in the measured phase.
struct Worker {
  std::vector<std::int64_t> ns;  // latencies of the calls that succeeded
  std::uint64_t issued = 0, failed = 0, mismatched = 0;
  Clock::time_point last_end{};
  std::string error;  // the first failure
};

/// min, mean and percentiles (the sample at index ceil(q*n)-1 of the sorted
/// samples) in microseconds; null without samples.
/// The payload a thread sends: call number `seq` in the first 8 bytes (as
/// far as they go), then a pattern.
void fill_payload(std::string& p, std::size_t size) {
  p.resize(size);
  for (std::size_t i = 0; i < size; ++i) p[i] = static_cast<char>('a' + i % 26);
}
void stamp(std::string& p, std::uint64_t seq) { std::memcpy(p.data(), &seq, std::min(p.size(), sizeof seq)); }

class Client {
 public:
  explicit Client(const ClientOptions& o) : o_(o), target_(address(o.host, o.port)) {}

  int run() {
    channel_ = grpc::CreateChannel(target_, grpc::InsecureChannelCredentials());
    if (!channel_->WaitForConnected(deadline_after(o_.timeout_s)))
      throw Failure(
          fmt::format("connect to {} failed within {} s (is `locabus-bench-grpc server --port {}` "
                      "running in that namespace, and is {} reachable from here?)",
                      target_, o_.timeout_s, o_.port, o_.host));
    control_ = pb::Bench::NewStub(channel_);

    workers_.resize(o_.inflight);
    {
      std::barrier sync(static_cast<std::ptrdiff_t>(o_.inflight), [this]() noexcept { begin_measurement(); });
      std::vector<std::jthread> threads;
      threads.reserve(o_.inflight);
      for (unsigned t = 0; t < o_.inflight; ++t) threads.emplace_back([this, t, &sync] { work(t, sync); });
    }
    const Cpu cpu_end = Cpu::now();

    Clock::time_point last_end = t0_;
    std::vector<std::int64_t> all;
    std::uint64_t issued = 0, failed = 0, mismatched = 0;
    std::string error = begin_error_;
    for (auto& w : workers_) {
      last_end = std::max(last_end, w.last_end);
      issued += w.issued;
      failed += w.failed;
      mismatched += w.mismatched;
      if (error.empty()) error = w.error;
      all.insert(all.end(), w.ns.begin(), w.ns.end());
      w.ns = {};
    }
    if (error.empty() && g_signal)
      error = fmt::format("interrupted by signal {}", static_cast<int>(g_signal));
    if (error.empty() && mismatched > 0)
      error = fmt::format("{} echoes came back different from what was sent", mismatched);
    const std::string stop_error = stop_server();
    if (error.empty() && !stop_error.empty()) error = stop_error;

    const double seconds = to_seconds(last_end - t0_);
    json j{{"role", "client"},
           {"target", target_},
           {"size", o_.size},
           {"inflight", o_.inflight},
           {"warmup", o_.warmup},
           {"calls", issued},
           {"completed", issued},
           {"succeeded", issued - failed},
           {"failed", failed},
           {"mismatched", mismatched},
           {"seconds", rounded(seconds, 6)},
           {"calls_per_s", seconds > 0 ? rounded(static_cast<double>(issued) / seconds, 1) : 0.0},
           {"latency_us", latency_us(all)},
           {"cpu_s", (cpu_end - cpu_start_).json()},
           {"started_at", started_at_},
           {"finished_at", started_at_ + seconds},
           {"ok", error.empty() && (o_.count == 0 || issued == o_.count)}};
    if (!error.empty()) j["error"] = error;
    std::cout << dump(j) << std::endl;
    if (!error.empty()) std::cerr << "locabus-bench-grpc client: " << error << "\n";
    return j["ok"].get<bool>() ? kExitOk : kExitFailure;
  }

 private:
  // One blocking call; false (and the failure noted in `w`) if it failed.
  bool call(pb::Bench::Stub& stub, pb::Payload& request, pb::Payload& reply, Worker& w, bool measured) {
    const auto start = Clock::now();
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline_after(o_.timeout_s));
    const grpc::Status st = stub.Echo(&ctx, request, &reply);
    const auto end = Clock::now();
    if (measured) w.last_end = end;
    if (!st.ok()) {
      if (measured) ++w.failed;
      if (w.error.empty())
        w.error =
            fmt::format("{}call to {} failed: {}{}", measured ? "" : "warm-up ", target_, status_text(st),
                        st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED
                            ? fmt::format(" (no answer within {} s: raise --timeout?)", o_.timeout_s)
                            : std::string());
      stop_.store(true, std::memory_order_relaxed);
      return false;
    }
    if (reply.payload() != request.payload()) {
      if (measured) {
        ++w.mismatched;
        ++w.failed;
      } else if (w.error.empty()) {
        w.error = "a warm-up echo came back different from what was sent";
        stop_.store(true, std::memory_order_relaxed);
      }
      return measured;
    }
    if (measured) w.ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
    return true;
  }

  template <class Barrier>
  void work(unsigned t, Barrier& sync) {
    Worker& w = workers_[t];
    auto stub = pb::Bench::NewStub(channel_);
    pb::Payload request, reply;
    fill_payload(*request.mutable_payload(), o_.size);
    std::uint64_t seq = static_cast<std::uint64_t>(t) << 48;

    const std::uint64_t warmup = o_.warmup / o_.inflight + (t < o_.warmup % o_.inflight ? 1 : 0);
    for (std::uint64_t i = 0; i < warmup && !stopped(); ++i) {
      stamp(*request.mutable_payload(), seq++);
      if (!call(*stub, request, reply, w, false)) break;
    }
    sync.arrive_and_wait();

    if (o_.count > 0) w.ns.reserve(o_.count / o_.inflight + 1);
    while (!stopped()) {
      if (o_.count > 0) {
        if (next_.fetch_add(1, std::memory_order_relaxed) >= o_.count) break;
      } else if (Clock::now() >= end_) {
        break;
      }
      stamp(*request.mutable_payload(), seq++);
      ++w.issued;
      call(*stub, request, reply, w, true);
    }
  }

  bool stopped() const { return stop_.load(std::memory_order_relaxed) || g_signal; }

  // The barrier's completion (every thread has done its warm-up): the
  // server's and our measured phases start here.
  void begin_measurement() noexcept {
    try {
      grpc::ClientContext ctx;
      ctx.set_deadline(deadline_after(o_.timeout_s));
      pb::Empty req, rep;
      if (const auto st = control_->Begin(&ctx, req, &rep); !st.ok()) {
        begin_error_ = fmt::format("the Begin call to {} failed: {}", target_, status_text(st));
        stop_.store(true);
      }
    } catch (const std::exception& e) {
      begin_error_ = e.what();
      stop_.store(true);
    }
    cpu_start_ = Cpu::now();
    started_at_ = unix_now();
    t0_ = Clock::now();
    end_ = t0_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.duration_s));
  }

  // Tells the server to print its JSON and exit; an error text if it failed.
  std::string stop_server() {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline_after(o_.timeout_s));
    pb::Empty req, rep;
    const auto st = control_->Stop(&ctx, req, &rep);
    if (st.ok()) return {};
    return fmt::format("the Stop call to {} failed: {} (the server may still be running)", target_,
                       status_text(st));
  }

  const ClientOptions o_;
  const std::string target_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Bench::Stub> control_;
  std::vector<Worker> workers_;
  std::atomic<std::uint64_t> next_{0};
  std::atomic<bool> stop_{false};
  // Set by begin_measurement() before the threads go on.
  std::string begin_error_;
  Cpu cpu_start_;
  double started_at_ = 0;
  Clock::time_point t0_{}, end_{};
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "locabus-bench-grpc: gRPC unary calls with Debian's gRPC C++ (synchronous API, insecure\n"
      "credentials), the peer of KCCM calls in locabus-bench. `server` serves a unary Echo service;\n"
      "`client` makes blocking Echo calls from --inflight threads on one shared channel and prints one\n"
      "JSON object: calls/s, latency percentiles of the calls (after a warm-up), CPU time; it then calls\n"
      "the service's Stop, on which the server prints its own JSON (calls served, CPU) and exits."};
  app.set_version_flag("--version", "locabus-bench-grpc 0.1.0");
  app.require_subcommand(1);

  ServerOptions so;
  auto* server = app.add_subcommand("server",
                                    "Serve Echo until a client calls Stop; print \"ready\" on stderr "
                                    "once listening, a JSON object on stdout at the end");
  server->add_option("-p,--port", so.port, "TCP port to listen on")->required()->check(CLI::Range(1, 65535));
  server->add_option("-b,--bind", so.bind, "Address to listen on (default 0.0.0.0)");
  server
      ->add_option("--threads", so.threads,
                   "Most threads the sync server may use (a grpc::ResourceQuota; default: gRPC's default, "
                   "unbounded); calls beyond them fail with RESOURCE_EXHAUSTED, as gRPC does")
      ->check(CLI::Range(1, 65536));
  server
      ->add_option("-t,--timeout", so.timeout_s,
                   "Seconds without any call after which the server gives up (exit 1; default 60)")
      ->check(CLI::PositiveNumber);

  server->footer(
      "Example: locabus-bench-grpc server --port 7300   (then `client` from another namespace)\n"
      "JSON at the end: calls (after the client's warm-up), warmup_calls, seconds, cpu_s {user, sys},\n"
      "started_at, finished_at, ok. Exit status: 0 ok; 1 a failure; 2 bad usage.");

  ClientOptions co;
  auto* client = app.add_subcommand("client", "Call Echo and print calls/s and latency as one JSON object");
  client->add_option("-H,--host", co.host, "The server's address")->required();
  client->add_option("-p,--port", co.port, "The server's port")->required()->check(CLI::Range(1, 65535));
  client
      ->add_option("-s,--size", co.size,
                   fmt::format("Payload bytes per call, each way (default 64, at most {})", kMaxSize))
      ->check(CLI::Range(std::size_t{0}, kMaxSize));
  auto* count =
      client->add_option("-c,--count", co.count, "Measured calls in all")->check(CLI::PositiveNumber);
  auto* duration =
      client->add_option("-d,--duration", co.duration_s, "Measure for this many seconds instead of --count")
          ->check(CLI::PositiveNumber);
  count->excludes(duration);
  client
      ->add_option("-k,--inflight", co.inflight,
                   "Calls in flight: threads, each with its own stub on the one channel, each making one "
                   "blocking call after another (default 1)")
      ->check(CLI::Range(1, 4096));
  client->add_option("-w,--warmup", co.warmup,
                     "Calls before the measurement, spread over the threads, not counted (default 1000)");
  client
      ->add_option("-t,--timeout", co.timeout_s,
                   "Seconds: each call's deadline and the bound on connecting (default 10)")
      ->check(CLI::PositiveNumber);

  client->footer(
      "Example: locabus-bench-grpc client --host 198.18.5.1 --port 7300 --size 64 --count 100000 "
      "--inflight 64\n"
      "JSON: calls, completed, succeeded, failed, mismatched, calls_per_s, latency_us {min, mean, p50,\n"
      "p90, p99, p999, max}, inflight, size, seconds, cpu_s {user, sys}, started_at, finished_at, ok.\n"
      "Exit status: 0 ok; 1 a failure (the JSON's \"error\" says which); 2 bad usage.");

  app.footer(
      "Examples (the server in one namespace, the client in another):\n"
      "  locabus-bench-grpc server --port 7300\n"
      "  locabus-bench-grpc client --host 198.18.5.1 --port 7300 --size 64 --count 100000 --inflight 64\n"
      "  locabus-bench-grpc client --host 198.18.5.1 --port 7300 --size 64 --duration 5 --inflight 1\n"
      "Client JSON: calls, completed, succeeded, failed, mismatched, calls_per_s, latency_us {min, mean,\n"
      "p50, p90, p99, p999, max}, inflight, size, seconds, cpu_s {user, sys}, started_at, finished_at, ok.\n"
      "Server JSON: calls (after the client's warm-up), warmup_calls, seconds, cpu_s, started_at,\n"
      "finished_at, ok.\n"
      "Exit status: 0 ok; 1 a failure (the JSON's \"error\" says which); 2 bad usage.");

  try {
    app.parse(argc, argv);
    if (client->parsed() && count->count() == 0 && duration->count() == 0)
      throw CLI::ValidationError("--count/--duration", "the client needs one of them");
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  install_stop_handlers();
  const char* role = server->parsed() ? "server" : "client";
  try {
    if (server->parsed()) return run_server(so);
    return Client(co).run();
  } catch (const std::exception& e) {
    std::cout << dump(json{{"role", role}, {"ok", false}, {"error", e.what()}}) << std::endl;
    std::cerr << "locabus-bench-grpc " << role << ": " << e.what() << "\n";
    return kExitFailure;
  }
}
