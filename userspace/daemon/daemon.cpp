// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon/daemon.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/error.hpp"
#include "common/version.hpp"
#include "daemon/server.hpp"
#include "fastpath/bpffs.hpp"
#include "fastpath/counters.hpp"
#include "fastpath/netdev.hpp"

namespace locabus::daemon {

namespace {

constexpr const char* kOwnersDir = "/run/locabus/owners";

std::int64_t micros(engine::Nanos n) {
  return std::chrono::duration_cast<std::chrono::microseconds>(n).count();
}

nlohmann::json counters_json(const engine::PeerCounters& c) { return values_json(CounterGroup().add(c)); }

spdlog::level::level_enum event_level(engine::EventKind k) {
  using engine::EventKind;
  switch (k) {
    case EventKind::joined:
    case EventKind::left:
    case EventKind::alive:
    case EventKind::restarted: return spdlog::level::info;
    case EventKind::suspect:
    case EventKind::dead:
    case EventKind::id_conflict:
    case EventKind::send_failed:
    case EventKind::broadcast_lost: return spdlog::level::warn;
    case EventKind::connected:
    case EventKind::disconnected: return spdlog::level::debug;
  }
  return spdlog::level::info;
}

UniqueFd make_signal_fd() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGCHLD);  // services' children: the loop reaps them (a child must unblock its signals)
  // Blocked before anything else could start a thread; signalfd reads them.
  if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0) throw Error("block SIGTERM/SIGINT/SIGHUP/SIGCHLD", errno);
  UniqueFd fd(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!fd) throw Error("create a signalfd", errno);
  ::signal(SIGPIPE, SIG_IGN);
  return fd;
}

}  // namespace

void notify_systemd(const std::string& state) {
  if (!std::getenv("NOTIFY_SOCKET")) return;
  const int r = sd_notify(0, state.c_str());
  if (r < 0) spdlog::warn("sd_notify({}) failed: {}", state, error_text(-r));
}

// ---- OwnerLock ------------------------------------------------------------------

OwnerLock::OwnerLock(const std::string& iface) {
  std::error_code ec;
  std::filesystem::create_directories(kOwnersDir, ec);
  if (ec) throw Error(fmt::format("create {}", kOwnersDir), ec.value(), privilege_hint(ec.value()));
  path_ = std::filesystem::path(kOwnersDir) / (bpffs::pin_key(iface) + ".lock");
  fd_ = UniqueFd(::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd_) throw Error("open the owner lock " + path_.string(), errno, privilege_hint(errno));
  if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string owner = "another process";
    std::ifstream in(path_);
    if (long pid = 0; in >> pid && pid > 0) owner = fmt::format("locabusd pid {}", pid);
    if (err == EWOULDBLOCK)
      throw Error(fmt::format("{} already owns interface {} (lock {})", owner, iface, path_.string()), EBUSY,
                  "stop that daemon first (SIGTERM), or run this one on another interface");
    throw Error("lock " + path_.string(), err);
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_.get(), 0) != 0 || ::pwrite(fd_.get(), pid.data(), pid.size(), 0) < 0)
    throw Error("write the owner lock " + path_.string(), errno);
}

// The file stays: unlinking it would let a process that opened the old
// inode and one that creates a new file both "own" the interface.
OwnerLock::~OwnerLock() = default;

// ---- Daemon ---------------------------------------------------------------------

namespace {

std::uint16_t resolve_node_id(const Config& cfg) {
  if (cfg.node_id) return *cfg.node_id;
  return net::default_node_id(net::lookup_interface(cfg.iface));
}

transport::OpenedDatapath open_datapath(const Config& cfg, std::uint16_t node_id) {
  transport::DatapathOptions o;
  o.iface = cfg.iface;
  o.node_id = node_id;
  o.want = cfg.datapath;
  o.busy_poll = cfg.busy_poll;
  o.attach_mode = cfg.attach_mode;
  o.max_peers = cfg.max_peers;
  o.nak_dedup_us = cfg.nak_dedup_us;
  return transport::open_datapath(o);
}

}  // namespace

Daemon::Daemon(const Config& cfg)
    : cfg_(cfg),
      node_id_(resolve_node_id(cfg)),
      lock_(cfg.iface),
      signal_fd_(make_signal_fd()),
      started_(clock_.now()),
      dp_(open_datapath(cfg, node_id_)) {
  spdlog::info("datapath: {}", dp_.why);

  std::error_code ec;
  std::filesystem::create_directories(cfg_.run_dir, ec);
  if (ec)
    throw Error("create the run directory " + cfg_.run_dir.string(), ec.value(), privilege_hint(ec.value()));

  engine::EngineConfig ecfg = cfg_.engine;
  ecfg.node_id = node_id_;
  engine_ = std::make_unique<engine::Engine>(ecfg, *dp_.transport, clock_, std::random_device{}());

  server_ = std::make_unique<ApiServer>(cfg_, *engine_, clock_, *this);

  if (!cfg_.metrics_address.empty()) {
    metrics_ = std::make_unique<MetricsExporter>(cfg_.metrics_address);
    spdlog::info("metrics: serving {} (this node; {}?scope=cluster: every node)", metrics_->url(),
                 metrics_->url());
  }

  if (cfg_.busy_poll) {
    idle_ = std::make_unique<engine::BusySpinIdle>();
  } else {
    auto b = std::make_unique<engine::BlockingIdle>(
        clock_,
        std::vector<int>{dp_.transport->wait_fd(), server_->wait_fd(), signal_fd_.get(),
                         metrics_ ? metrics_->wait_fd() : -1},
        std::chrono::microseconds(cfg_.idle_spin_us));
    blocking_ = b.get();
    idle_ = std::move(b);
  }

  // Last: only a daemon that is about to serve names itself. Written to a
  // temporary file and renamed, so a reader never sees half a pid.
  const auto pid_file = cfg_.run_dir / "locabusd.pid";
  const auto tmp = cfg_.run_dir / "locabusd.pid.tmp";
  {
    std::ofstream pf(tmp);
    pf << ::getpid() << "\n";
    if (!pf) throw Error("write " + tmp.string(), errno);
  }
  std::filesystem::rename(tmp, pid_file, ec);
  if (ec) throw Error("rename " + tmp.string() + " to " + pid_file.string(), ec.value());
  pid_file_ = pid_file;
}

Daemon::~Daemon() {
  try {
    metrics_.reset();  // its scrapes render from the server and the engine
    server_.reset();
    engine_.reset();
    dp_.transport.reset();
    dp_.fastpath.reset();
  } catch (const std::exception& e) {
    spdlog::error("cleanup: {}", e.what());
  }
  std::error_code ec;
  if (!pid_file_.empty()) std::filesystem::remove(pid_file_, ec);
}

int Daemon::do_work() {
  int work = engine_->do_work();
  work += static_cast<int>(engine_->poll_events([&](const engine::Event& e) {
    spdlog::log(event_level(e.kind), "{}", e.to_string());
    server_->on_event(e);
  }));
  server_->after_events();
  // While the idle strategy spins, clients need not be told to ring.
  work += server_->do_work(!blocking_ || !blocking_->spinning());
  // Scrapes waiting for the daemon: rendered here, on its thread.
  if (metrics_ && metrics_->pending())
    work += static_cast<int>(metrics_->serve([this](MetricsScope s) { return metrics_text(s); }));
  return work;
}

std::optional<engine::Nanos> Daemon::next_deadline() const {
  auto a = engine_->next_deadline();
  auto b = server_->next_deadline();
  if (!a) return b;
  if (!b) return a;
  return std::min(*a, *b);
}

bool Daemon::handle_signals() {
  signalfd_siginfo si;
  while (::read(signal_fd_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
    if (si.ssi_signo == SIGCHLD) {
      server_->reap_children();  // for services that spawn processes
      continue;
    }
    if (si.ssi_signo == SIGHUP) {
      spdlog::info("SIGHUP: nothing to reload (restart the daemon to apply a new config)");
      continue;
    }
    stop_reason_ = si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT";
    return true;
  }
  return false;
}

int Daemon::run() {
  const std::string ready = fmt::format("ready: node {} on {} ({}), API at {}", node_id_, cfg_.iface,
                                        transport::to_string(dp_.got), cfg_.socket_path().string());
  spdlog::info("{}", ready);
  notify_systemd(fmt::format("READY=1\nSTATUS={}\nMAINPID={}", ready, ::getpid()));

  std::uint32_t cycles = 0;
  const transport::LinkFaults* faults = dp_.faults();
  std::uint64_t client_records = server_->client_records();
  for (;;) {
    const int work = do_work();
    // Signals are read before sleeping (not at every cycle of a spin) and
    // every 256 busy cycles.
    const bool may_sleep = work == 0 && (!blocking_ || !blocking_->spinning());
    if ((may_sleep || (++cycles & 255) == 0) && handle_signals()) break;
    if (faults && !faults->fatal().empty()) {
      // The interface is gone for good (a link that is merely down is not
      // fatal: frames are dropped until it is up again).
      stop_reason_ = faults->fatal();
      link_gone_ = true;
      break;
    }
    if (work > 0) {
      // Only work with applications (records from or to a client) arms the
      // idle spin: their answer is likely within it. Timers and heartbeats
      // do not, so a daemon without application traffic never spins.
      const std::uint64_t now_records = server_->client_records();
      if (now_records != client_records) idle_->reset();
      client_records = now_records;
    } else {
      idle_->idle(next_deadline());
    }
  }
  shutdown();
  return link_gone_ ? 1 : 0;  // a failure: systemd's Restart=on-failure tries again
}

void Daemon::shutdown() {
  if (link_gone_)
    spdlog::error("shutting down: the transport on {} cannot work any more (exit status 1)", cfg_.iface);
  else
    spdlog::info("{}: shutting down: closing connections", stop_reason_);
  notify_systemd("STOPPING=1\nSTATUS=closing connections");
  metrics_.reset();  // scrapes now get 503 ("shutting down") rather than wait
  server_->stop_accepting();
  engine_->leave();  // without a link the transport drops what it says
  // Without a link nobody can answer: do not wait for them.
  const engine::Nanos until = clock_.now() + (link_gone_ ? engine::Nanos{0} : std::chrono::seconds(1));
  engine::BlockingIdle idle(clock_, {dp_.transport->wait_fd()});
  while (clock_.now() < until) {
    const int work = engine_->do_work();
    engine_->poll_events([&](const engine::Event& e) {
      spdlog::log(event_level(e.kind), "{}", e.to_string());
      server_->on_event(e);
    });
    server_->after_events();
    const auto peers = engine_->peers();
    const bool open = std::any_of(peers.begin(), peers.end(), [](const engine::PeerInfo& p) {
      return p.conn != engine::ConnState::closed;
    });
    if (!open) break;
    if (work == 0) {
      auto d = engine_->next_deadline();
      idle.idle(d ? std::min(*d, until) : until);
    }
  }
  server_.reset();  // clients see the connection close; the socket file goes
  engine_.reset();
  dp_.transport.reset();
  if (dp_.fastpath) {
    if (!link_gone_) {
      dp_.fastpath->detach();  // throws with a reason rather than leaving pins silently
      spdlog::info("XDP detached from {}, pins removed", cfg_.iface);
    } else {
      // The program went with the interface; the pins are still ours to remove.
      try {
        dp_.fastpath->detach();
        spdlog::info("pins of the fast path on {} removed", cfg_.iface);
      } catch (const Error& e) {
        spdlog::error("remove the fast path's pins: {} (`locabusctl xdp detach --iface {}` cleans up)",
                      e.what(), cfg_.iface);
      }
    }
  }
  dp_.fastpath.reset();
  std::error_code ec;
  std::filesystem::remove(pid_file_, ec);
  spdlog::info("stopped");
}

// ---- introspection ----------------------------------------------------------------

nlohmann::json Daemon::status() const {
  nlohmann::json j;
  j["version"] = kVersion;
  j["pid"] = ::getpid();
  j["iface"] = cfg_.iface;
  j["node_id"] = node_id_;
  j["mac"] = dp_.transport->mac().to_string();
  j["epoch"] = engine_->epoch();
  j["datapath"] = transport::to_string(dp_.got);
  j["datapath_detail"] = dp_.why;
  j["busy_poll"] = cfg_.busy_poll;
  j["idle_spin_us"] = cfg_.idle_spin_us;
  j["idle_strategy"] = idle_->name();
  j["uptime_s"] = std::chrono::duration<double>(clock_.now() - started_).count();
  j["api_socket"] = cfg_.socket_path().string();
  j["clients"] = server_->client_count();
  j["live_members"] = engine_->live_members();
  nlohmann::json by_state = nlohmann::json::object();
  for (const auto& p : engine_->peers()) {
    auto& n = by_state[std::string(engine::to_string(p.member))];
    n = n.is_null() ? 1 : n.get<int>() + 1;
  }
  j["members"] = by_state;
  if (dp_.fastpath) {
    j["xdp"] = {{"program_id", dp_.fastpath->program_id()},
                {"mode", fastpath::to_string(dp_.fastpath->mode())},
                {"pin_dir", dp_.fastpath->pin_dir().string()}};
  }
  // No exporter: enabled false and empty strings (consumers need not test for null).
  j["metrics"] = {{"enabled", metrics_ != nullptr},
                  {"address", metrics_ ? metrics_->address() : std::string()},
                  {"url", metrics_ ? metrics_->url() : std::string()}};
  if (metrics_)
    j["metrics"]["last_render_us"] = {{"local", metrics_->last_render_us(MetricsScope::local)},
                                      {"cluster", metrics_->last_render_us(MetricsScope::cluster)}};
  server_->status(j);  // the services' parts ("monitor")
  return j;
}

nlohmann::json Daemon::peers() const {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& p : engine_->peers()) {
    nlohmann::json j = {
        {"node", p.node},
        {"mac", p.mac.to_string()},
        {"state", engine::to_string(p.member)},
        {"epoch", p.epoch},
        {"connection", engine::to_string(p.conn)},
        {"rtt_us", micros(p.srtt)},
        {"rto_us", micros(p.rto)},
        {"last_heard_ms_ago",
         std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now() - p.last_heard).count()},
        {"retransmits", p.counters.retransmits},
        {"in_flight", p.in_flight},
        {"queued", p.queued},
        {"receivable", p.receivable},
        {"window", p.peer_window},
        {"cwnd", p.cwnd},
        {"ssthresh", p.ssthresh},
        {"sacked", p.sacked},
        {"held_ahead", p.held_ahead},
        {"next_message", p.next_message},
        {"counters", counters_json(p.counters)},
    };
    if (dp_.fastpath) {
      if (auto k = dp_.fastpath->maps().peer(p.node)) {
        j["xdp"] = {{"acks_consumed", k->acks},
                    {"acks_passed", k->passed_acks},
                    {"naks", k->naks},
                    {"ack_num", k->ack_num},
                    {"ack_window", k->ack_window}};
      }
    }
    arr.push_back(std::move(j));
  }
  return arr;
}

CounterGroups Daemon::counter_groups() const {
  CounterGroups g;
  engine_->counters(g);
  dp_.transport->counters(g);
  if (dp_.fastpath) g.push_back(fastpath::counter_group(dp_.fastpath->maps().counters()));
  server_->counters(g);  // the API, the router, flow control, every service
  if (blocking_) {
    static constexpr CounterField kIdleSleeps{"idle_sleeps", "times the blocking idle strategy slept",
                                              CounterKind::counter};
    g.emplace_back("", "the daemon").add(kIdleSleeps, blocking_->sleeps());
  }
  if (metrics_)
    g.emplace_back("metrics", "the Prometheus exporter (docs/METRICS.md)").add(metrics_->counters());
  return g;
}

std::string Daemon::metrics_text(MetricsScope scope) const {
  std::string out;
  if (scope == MetricsScope::local) {
    out = prometheus_text(counter_groups(), {{"node", std::to_string(node_id_)}});
    server_->exposition(false, out);
    out += build_info_text(node_id_, kVersion);
  } else {
    server_->exposition(true, out);
    if (out.empty())
      out = "# no cluster table on this daemon (LocaMonitor is off: started with --no-monitor?)\n";
  }
  return out;
}

nlohmann::json Daemon::counters() const {
  const CounterGroups groups = counter_groups();
  nlohmann::json j = counters_json(groups);
  if (!j.contains("peers")) j["peers"] = nlohmann::json::object();  // no peer yet
  j["schema"] = counters_schema(groups);                            // what each field is, for locabusctl
  return j;
}

}  // namespace locabus::daemon
