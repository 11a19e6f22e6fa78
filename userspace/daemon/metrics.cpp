// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon/metrics.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <future>
#include <list>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

// Without CPPHTTPLIB_OPENSSL_SUPPORT: plain HTTP, no TLS.
#include <fmt/format.h>
#include <httplib.h>

#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "daemon/config.hpp"

namespace locabus::daemon {

namespace {

constexpr const char* kExpositionType = "text/plain; version=0.0.4; charset=utf-8";
constexpr const char* kTextType = "text/plain; charset=utf-8";

constexpr const char* kIndex =
    "<!DOCTYPE html>\n"
    "<html><head><meta charset=\"utf-8\"><title>locabusd metrics</title></head><body>\n"
    "<h1>locabusd: Prometheus metrics</h1>\n"
    "<ul>\n"
    "<li><a href=\"/metrics\">/metrics</a>: this node (its statistics, Locabus counters and "
    "LocaMonitor's row); scrape every node</li>\n"
    "<li><a href=\"/metrics?scope=cluster\">/metrics?scope=cluster</a>: every node LocaMonitor "
    "knows; scrape one node instead</li>\n"
    "</ul>\n"
    "</body></html>\n";

/// httplib's default also sets SO_REUSEPORT, which would let a second
/// exporter bind the same port and share its scrapes; SO_REUSEADDR alone
/// lets a restarted daemon bind again past TIME_WAIT and refuses a taken port.
void exporter_socket_options(int sock) {
  const int yes = 1;
  ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
}

/// Why `host`:`port` cannot be bound (httplib only says that it cannot):
/// the errno of a bind() with the same options, or 0 when it works now.
int bind_errno(const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || !found)
    return EADDRNOTAVAIL;
  int err = 0;
  for (const addrinfo* a = found; a; a = a->ai_next) {
    UniqueFd s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!s) {
      err = errno;
      continue;
    }
    exporter_socket_options(s.get());
    if (::bind(s.get(), a->ai_addr, a->ai_addrlen) == 0) {
      err = 0;
      break;
    }
    err = errno;
  }
  ::freeaddrinfo(found);
  return err;
}

std::string bind_hint(int err) {
  switch (err) {
    case EADDRINUSE:
      return "is another exporter (another locabusd) on this port? set metrics_address "
             "(--metrics-address) to a free HOST:PORT, or \"\" for no exporter";
    case EACCES: return "ports below 1024 need root (CAP_NET_BIND_SERVICE): use a higher port such as 9477";
    case EADDRNOTAVAIL:
      return "HOST must be an address of this machine (or 0.0.0.0 / [::] for all): set metrics_address";
    default: return "set metrics_address (--metrics-address) to a free HOST:PORT, or \"\" for no exporter";
  }
}

std::string with_brackets(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

/// Sockets of this process connected on local TCP port `port` (not
/// listening), by inode: what the exporter accepted.
std::vector<std::pair<int, ino_t>> exporter_connections(int port) {
  std::vector<std::pair<int, ino_t>> out;
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return out;
  const int own = ::dirfd(dir);
  while (const dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == own) continue;
    struct stat st {};
    if (::fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    if (::getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&a), &len) != 0) continue;
    int local = -1;
    if (a.ss_family == AF_INET) local = ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
    if (a.ss_family == AF_INET6) local = ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
    if (local != port) continue;
    int listening = 0;
    socklen_t ll = sizeof listening;
    if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) != 0 || listening)
      continue;
    out.emplace_back(static_cast<int>(fd), st.st_ino);
  }
  ::closedir(dir);
  return out;
}

/// The exporter's workers: httplib's thread pool, plus a deadline per
/// connection. httplib accepts a connection and enqueues its task at once,
/// on its one listening thread; enqueue() finds that new socket (the
/// exporter's port, an inode not seen yet) and keeps a duplicate of it, so
/// that a watchdog can shut it down when the connection outlives
/// `deadline`, and shutdown() can cut every connection at once. The watchdog
/// sleeps while no connection runs: an idle exporter costs nothing.
class DeadlinePool final : public httplib::TaskQueue {
 public:
  DeadlinePool(std::size_t threads, int port, std::chrono::milliseconds deadline)
      : port_(port), deadline_(deadline) {
    for (std::size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
    watchdog_ = std::thread([this] { watch(); });
  }
  ~DeadlinePool() override { shutdown(); }
  DeadlinePool(const DeadlinePool&) = delete;
  DeadlinePool& operator=(const DeadlinePool&) = delete;

  void enqueue(std::function<void()> fn) override {
    Job job;
    job.fn = std::move(fn);
    {
      std::lock_guard lock(mu_);
      for (const auto& [fd, ino] : exporter_connections(port_)) {
        if (known_.count(ino)) continue;
        UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
        if (!dup) continue;  // out of fds: this connection has no deadline
        known_.insert(ino);
        job.sockets.emplace_back(ino, std::move(dup));
      }
      jobs_.push_back(std::move(job));
    }
    cv_.notify_all();
  }

  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      if (stopping_ && workers_.empty()) return;
      stopping_ = true;
      // What runs or waits may finish for a moment (a scrape waiting for
      // the daemon is answered 503 then); the watchdog cuts the rest.
      stop_by_ = std::chrono::steady_clock::now() + kStopGrace;
      for (auto& job : running_) job.deadline = std::min(job.deadline, stop_by_);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    if (watchdog_.joinable()) watchdog_.join();
  }

 private:
  struct Job {
    std::function<void()> fn;
    std::vector<std::pair<ino_t, UniqueFd>> sockets;  // duplicates of its connection
    std::chrono::steady_clock::time_point deadline{};
    bool cut = false;
  };

  void work() {
    for (;;) {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, nothing left
      running_.splice(running_.end(), jobs_, jobs_.begin());
      auto it = std::prev(running_.end());
      it->deadline = std::min(std::chrono::steady_clock::now() + deadline_, stop_by_);
      lock.unlock();
      cv_.notify_all();  // the watchdog: a new deadline
      it->fn();          // serves the connection and closes httplib's socket
      lock.lock();
      for (const auto& [ino, sock] : it->sockets) known_.erase(ino);
      running_.erase(it);  // closes the duplicates: the socket goes
      lock.unlock();
      cv_.notify_all();  // the watchdog: one deadline less (and perhaps the last)
    }
  }

  void watch() {
    std::unique_lock lock(mu_);
    for (;;) {
      auto next = std::chrono::steady_clock::time_point::max();
      const auto now = std::chrono::steady_clock::now();
      for (auto& job : running_) {
        if (job.cut) continue;
        if (job.deadline <= now) {
          job.cut = true;  // the worker's read or write fails at once
          for (auto& [ino, sock] : job.sockets) ::shutdown(sock.get(), SHUT_RDWR);
        } else {
          next = std::min(next, job.deadline);
        }
      }
      if (stopping_ && running_.empty() && jobs_.empty()) return;
      if (next == std::chrono::steady_clock::time_point::max())
        cv_.wait(lock);
      else
        cv_.wait_until(lock, next);
    }
  }

  const int port_;
  const std::chrono::milliseconds deadline_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::list<Job> jobs_, running_;  // guarded by mu_
  std::set<ino_t> known_;          // sockets of queued and running jobs, guarded by mu_
  bool stopping_ = false;          // guarded by mu_
  static constexpr std::chrono::milliseconds kStopGrace{500};
  std::chrono::steady_clock::time_point stop_by_ = std::chrono::steady_clock::time_point::max();  // mu_
  std::vector<std::thread> workers_;
  std::thread watchdog_;
};

}  // namespace

const char* to_string(MetricsScope s) noexcept { return s == MetricsScope::cluster ? "cluster" : "local"; }

// ---- MetricsExporter ---------------------------------------------------------------

struct MetricsExporter::Impl {
  struct Scrape {
    MetricsScope scope = MetricsScope::local;
    std::promise<std::string> answer;
  };

  Impl(std::atomic<bool>& pending_flag, MetricsOptions opts) : pending(pending_flag), options(opts) {}

  ~Impl() {
    {
      std::lock_guard lock(mutex);
      stopping = true;
      for (auto& s : queue)
        s.answer.set_exception(std::make_exception_ptr(Error("locabusd is shutting down")));
      queue.clear();
      drain_event_fd();
      pending.store(false, std::memory_order_release);
    }
    // listen_after_bind() runs until stop(); stop() acts only once the
    // server runs, which the constructor waited for.
    server.stop();
    if (thread.joinable()) thread.join();
  }

  void drain_event_fd() noexcept {
    std::uint64_t n = 0;
    [[maybe_unused]] const auto r = ::read(event_fd.get(), &n, sizeof n);  // EAGAIN: nothing
  }

  void count(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    c.fetch_add(n, std::memory_order_relaxed);
  }

  // On an HTTP worker thread.
  void handle_metrics(const httplib::Request& req, httplib::Response& res) {
    MetricsScope scope = MetricsScope::local;
    if (req.has_param("scope")) {
      const std::string s = req.get_param_value("scope");
      if (s == "cluster") {
        scope = MetricsScope::cluster;
      } else if (s != "local") {
        count(bad_requests);
        res.status = 400;
        res.set_content(fmt::format("unknown scope '{}': use scope=local (this node, the default) or "
                                    "scope=cluster (every node LocaMonitor knows; scrape one node only)\n",
                                    s),
                        kTextType);
        return;
      }
    }
    std::future<std::string> answer;
    {
      std::lock_guard lock(mutex);
      if (stopping) {
        count(failures);
        res.status = 503;
        res.set_content("locabusd is shutting down\n", kTextType);
        return;
      }
      Scrape& s = queue.emplace_back();
      s.scope = scope;
      answer = s.answer.get_future();
      pending.store(true, std::memory_order_release);
      // Under the lock: the daemon reads the eventfd and takes the queue
      // under it too, so a readable eventfd always means a waiting scrape.
      const std::uint64_t one = 1;
      [[maybe_unused]] const auto w = ::write(event_fd.get(), &one, sizeof one);
    }
    if (answer.wait_for(options.answer_timeout) != std::future_status::ready) {
      count(timeouts);
      res.status = 503;
      res.set_header("Retry-After", "1");
      res.set_content(fmt::format("locabusd did not answer in time ({} ms): it is busy or stuck; "
                                  "try again, and see its log\n",
                                  options.answer_timeout.count()),
                      kTextType);
      return;
    }
    try {
      res.set_content(answer.get(), kExpositionType);
    } catch (const std::exception& e) {
      count(failures);
      const bool stopped = stopping_seen();
      res.status = stopped ? 503 : 500;
      res.set_content(stopped ? std::string(e.what()) + "\n"
                              : fmt::format("locabusd could not render the metrics: {}\n", e.what()),
                      kTextType);
    }
  }

  bool stopping_seen() {
    std::lock_guard lock(mutex);
    return stopping;
  }

  std::atomic<bool>& pending;
  MetricsOptions options;
  int port = 0;  // as bound, before the server thread starts
  UniqueFd event_fd;
  httplib::Server server;
  std::thread thread;
  std::atomic<bool> thread_done{false};

  std::mutex mutex;
  std::deque<Scrape> queue;  // guarded by mutex
  bool stopping = false;     // guarded by mutex

  std::atomic<std::uint64_t> scrapes_local{0}, scrapes_cluster{0};
  std::atomic<std::uint64_t> last_render_us[2] = {0, 0};  // by MetricsScope
  std::atomic<std::uint64_t> timeouts{0}, failures{0}, bad_requests{0};
};

MetricsExporter::MetricsExporter(const std::string& address, MetricsOptions options) {
  const auto hp = parse_host_port(address);
  if (!hp)
    throw Error("metrics: the address '" + address + "' is not HOST:PORT", EINVAL,
                "set metrics_address (--metrics-address) to e.g. 0.0.0.0:9477, 127.0.0.1:9477 or [::]:9477");
  const auto& [host, port] = *hp;

  impl_ = std::make_unique<Impl>(pending_, options);
  Impl& m = *impl_;
  m.event_fd = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!m.event_fd) throw Error("metrics: create an eventfd", errno, "check the process's fd limit");

  httplib::Server& s = m.server;
  const std::size_t threads = options.threads ? options.threads : 1;
  // httplib owns the queue (a unique_ptr in listen_after_bind()); it is
  // made there, after the bind below, so the port is known by then.
  s.new_task_queue = [threads, &m] {
    return std::make_unique<DeadlinePool>(threads, m.port, m.options.connection_deadline).release();
  };
  s.set_socket_options(exporter_socket_options);
  const auto io = static_cast<time_t>(options.io_timeout.count());
  s.set_read_timeout(io, 0);
  s.set_write_timeout(io, 0);
  // One request per connection: an idle keep-alive connection would hold
  // one of the few workers (and delay shutdown) between scrapes.
  s.set_keep_alive_max_count(1);
  s.set_keep_alive_timeout(io);
  s.set_payload_max_length(4096);  // GET only: no body worth reading

  s.Get("/metrics",
        [&m](const httplib::Request& req, httplib::Response& res) { m.handle_metrics(req, res); });
  s.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kIndex, "text/html; charset=utf-8");
  });
  s.set_error_handler(httplib::Server::HandlerWithResponse([&m](const httplib::Request& req,
                                                                httplib::Response& res) {
    if (res.status != 404 || !res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    m.count(m.bad_requests);
    if ((req.path == "/" || req.path == "/metrics") && req.method != "GET" && req.method != "HEAD") {
      res.status = 405;
      res.set_header("Allow", "GET, HEAD");
      res.set_content(fmt::format("{} {}: the exporter answers GET only\n", req.method, req.path), kTextType);
      return httplib::Server::HandlerResponse::Handled;
    }
    res.set_content(fmt::format("no page {} here: metrics are at /metrics (this node) and "
                                "/metrics?scope=cluster (every node)\n",
                                req.path),
                    kTextType);
    return httplib::Server::HandlerResponse::Handled;
  }));

  int bound = port;
  if (port == 0) {
    bound = s.bind_to_any_port(host);
  } else if (!s.bind_to_port(host, port)) {
    bound = -1;
  }
  if (bound <= 0) {
    const int err = bind_errno(host, port);
    throw Error(fmt::format("metrics: bind {}", address), err ? err : EADDRNOTAVAIL, bind_hint(err));
  }
  address_ = with_brackets(host) + ":" + std::to_string(bound);
  m.port = bound;

  m.thread = std::thread([&m] {
    m.server.listen_after_bind();
    m.thread_done.store(true, std::memory_order_release);
  });
  // stop() only works on a running server: wait until it runs (a few
  // microseconds; at most 5 s).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!m.server.is_running() && !m.thread_done.load(std::memory_order_acquire) &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (!m.server.is_running())
    throw Error(fmt::format("metrics: the HTTP server on {} did not start", address_), 0,
                "see the log; set metrics_address to \"\" to run without an exporter");
}

MetricsExporter::~MetricsExporter() = default;

int MetricsExporter::wait_fd() const noexcept { return impl_->event_fd.get(); }

std::size_t MetricsExporter::serve(const Renderer& render) {
  if (!pending()) return 0;
  Impl& m = *impl_;
  std::deque<Impl::Scrape> batch;
  {
    std::lock_guard lock(m.mutex);
    m.drain_event_fd();
    batch.swap(m.queue);
    pending_.store(false, std::memory_order_release);
  }
  std::optional<std::string> text[2];
  for (auto& s : batch) {
    auto& t = text[static_cast<int>(s.scope)];
    if (!t) {
      const auto start = std::chrono::steady_clock::now();
      try {
        t = render(s.scope);
      } catch (...) {
        s.answer.set_exception(std::current_exception());
        continue;
      }
      const auto us =
          std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
      m.last_render_us[static_cast<int>(s.scope)].store(static_cast<std::uint64_t>(us.count()),
                                                        std::memory_order_relaxed);
      m.count(s.scope == MetricsScope::cluster ? m.scrapes_cluster : m.scrapes_local);
    }
    s.answer.set_value(*t);
  }
  return batch.size();
}

MetricsCounters MetricsExporter::counters() const noexcept {
  const Impl& m = *impl_;
  MetricsCounters c;
  c.scrapes_local = m.scrapes_local.load(std::memory_order_relaxed);
  c.scrapes_cluster = m.scrapes_cluster.load(std::memory_order_relaxed);
  c.timeouts = m.timeouts.load(std::memory_order_relaxed);
  c.failures = m.failures.load(std::memory_order_relaxed);
  c.bad_requests = m.bad_requests.load(std::memory_order_relaxed);
  return c;
}

std::uint64_t MetricsExporter::last_render_us(MetricsScope scope) const noexcept {
  return impl_->last_render_us[static_cast<int>(scope)].load(std::memory_order_relaxed);
}

// ---- text helpers -------------------------------------------------------------------

std::string build_info_text(std::uint16_t node, std::string_view version) {
  std::string v;  // a label value: \\, \" and \n escaped
  for (const char c : version) {
    if (c == '\\' || c == '"') v += '\\';
    if (c == '\n') {
      v += "\\n";
      continue;
    }
    v += c;
  }
  return fmt::format(
      "# HELP locabus_build_info the locabusd serving this node (its version); always 1\n"
      "# TYPE locabus_build_info gauge\n"
      "locabus_build_info{{node=\"{}\",version=\"{}\"}} 1\n",
      node, v);
}

std::vector<std::string> exposition_families(std::string_view text) {
  std::vector<std::string> out;
  constexpr std::string_view kType = "# TYPE ";
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(at, end - at);
    if (line.starts_with(kType)) {
      const std::string_view rest = line.substr(kType.size());
      out.emplace_back(rest.substr(0, rest.find(' ')));
    }
    at = end + 1;
  }
  return out;
}

}  // namespace locabus::daemon
