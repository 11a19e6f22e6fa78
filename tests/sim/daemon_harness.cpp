// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon_harness.hpp"

#include <stdlib.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>

#include <spdlog/spdlog.h>

#include "engine/events.hpp"

namespace locabus::sim::testing {

// ---- TempDir ------------------------------------------------------------------------

TempDir::TempDir(const std::string& prefix, const std::filesystem::path& base) {
  std::string templ =
      ((base.empty() ? std::filesystem::temp_directory_path() : base) / (prefix + "XXXXXX")).string();
  if (!::mkdtemp(templ.data())) throw std::system_error(errno, std::generic_category(), "mkdtemp " + templ);
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

// ---- ClientThread -------------------------------------------------------------------

ClientThread::ClientThread(std::function<void()> body)
    : thread_([this, body = std::move(body)] {
        try {
          body();
        } catch (const std::exception& e) {
          error_ = e.what();
        } catch (...) {
          error_ = "an exception that is not a std::exception";
        }
      }) {}

ClientThread::~ClientThread() { join(); }

std::string ClientThread::join() {
  if (thread_.joinable()) thread_.join();
  return error_;
}

// ---- DaemonSim ----------------------------------------------------------------------

namespace {

// What the API server asks its daemon (locabusctl status/peers/counters).
class SimIntrospection final : public daemon::Introspection {
 public:
  SimIntrospection(const engine::Engine& engine, std::string socket)
      : engine_(engine), socket_(std::move(socket)) {}
  nlohmann::json status() const override {
    return {{"node_id", engine_.node_id()}, {"api_socket", socket_}, {"datapath", "sim"}};
  }
  nlohmann::json peers() const override {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& p : engine_.peers())
      arr.push_back({{"node", p.node},
                     {"mac", p.mac.to_string()},
                     {"state", engine::to_string(p.member)},
                     {"connection", engine::to_string(p.conn)},
                     {"epoch", p.epoch},
                     {"in_flight", p.in_flight},
                     {"window", p.peer_window}});
    return arr;
  }
  nlohmann::json counters() const override { return nlohmann::json::object(); }

 private:
  const engine::Engine& engine_;
  std::string socket_;
};

// What a node samples when the test gives no function: a small fixed machine.
monitor::NodeStats default_sample(std::size_t index, const engine::Clock& clock) {
  monitor::NodeStats s;
  s.sampled_at_ms =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(clock.wall()).count());
  s.hostname = "sim" + std::to_string(index + 1);
  s.cpus = 1;
  s.mem_total = 1ull << 30;
  s.mem_free = s.mem_available = 1ull << 29;
  return s;
}

// Daemon cycles per node and step while it reports work: the daemon is
// fast compared with the network, but a client that streams always has
// work, so this is bounded.
constexpr int kCyclesPerStep = 8;

}  // namespace

struct DaemonSim::Node {
  std::size_t index = 0;
  daemon::Config cfg;  // the Router and ClientHost keep a reference: it lives as long as the server
  std::unique_ptr<SimIntrospection> introspection;
  std::unique_ptr<daemon::ApiServer> server;
  std::vector<SimCluster::TimedEvent> events;
};

daemon::ServerHooks DaemonSim::hooks(std::size_t index) {
  daemon::ServerHooks h;
  h.monitor_sample = [this, index] {
    return options_.monitor_sample ? options_.monitor_sample(index, now())
                                   : default_sample(index, cluster_.net().clock());
  };
  return h;
}

DaemonSim::DaemonSim(std::uint64_t seed, const DaemonSimOptions& options)
    : options_(options),
      dir_("locabus-dsim-", options.run_base),
      cluster_(seed, options.nodes, options.engine, options.link) {
  // The servers log every open and close at info: keep test output for failures.
  spdlog::set_level(spdlog::level::warn);
  for (std::size_t i = 0; i < options_.nodes; ++i) {
    auto n = std::make_unique<Node>();
    n->index = i;
    n->cfg.iface = "sim";
    n->cfg.node_id = id_of(i);
    n->cfg.run_dir = dir_.path() / ("n" + std::to_string(id_of(i)));
    n->cfg.ring_bytes = options_.ring_bytes;
    n->cfg.endpoint_window = options_.endpoint_window;
    n->cfg.engine = options_.engine;
    n->cfg.log_level = "warn";
    n->cfg.monitor = options_.monitor;
    n->cfg.validate();
    std::filesystem::create_directories(n->cfg.run_dir);
    engine::Engine& e = cluster_.node(i);
    n->introspection = std::make_unique<SimIntrospection>(e, n->cfg.socket_path().string());
    n->server =
        std::make_unique<daemon::ApiServer>(n->cfg, e, cluster_.net().clock(), *n->introspection, hooks(i));
    nodes_.push_back(std::move(n));
  }
  driver_ = std::thread([this] { drive(); });
}

DaemonSim::~DaemonSim() {
  stop_ = true;
  if (driver_.joinable()) driver_.join();
  // Tasks nobody will run: their callers are gone (call() waits), so drop them.
  tasks_.clear();
  // Servers before engines: they hold references to them.
  for (auto& n : nodes_) n->server.reset();
}

void DaemonSim::crash(std::size_t index) {
  Node& n = *nodes_.at(index);
  n.server.reset();  // before the engine: it holds a reference
  n.introspection.reset();
  cluster_.crash(index);
}

void DaemonSim::restart(std::size_t index) {
  Node& n = *nodes_.at(index);
  cluster_.restart(index);
  engine::Engine& e = cluster_.node(index);
  n.introspection = std::make_unique<SimIntrospection>(e, n.cfg.socket_path().string());
  n.server =
      std::make_unique<daemon::ApiServer>(n.cfg, e, cluster_.net().clock(), *n.introspection, hooks(index));
}

std::string DaemonSim::socket(std::size_t index) const {
  return nodes_.at(index)->cfg.socket_path().string();
}
daemon::ApiServer& DaemonSim::server(std::size_t index) { return *nodes_.at(index)->server; }
std::filesystem::path DaemonSim::run_dir(std::size_t index) const { return nodes_.at(index)->cfg.run_dir; }
const std::vector<SimCluster::TimedEvent>& DaemonSim::events(std::size_t index) const {
  return nodes_.at(index)->events;
}

void DaemonSim::post(std::function<void()> task) {
  std::lock_guard<std::mutex> lock(mu_);
  tasks_.push_back(std::move(task));
}

int DaemonSim::cycle(Node& n) {
  if (!n.server || !cluster_.up(n.index)) return 0;
  engine::Engine& e = cluster_.node(n.index);
  // As Daemon::do_work.
  int work = e.do_work();
  work += static_cast<int>(e.poll_events([&](const engine::Event& ev) {
    n.events.push_back({now(), ev});
    n.server->on_event(ev);
  }));
  n.server->after_events();
  work += n.server->do_work();
  return work;
}

void DaemonSim::drive() {
  SimNetwork& net = cluster_.net();
  while (!stop_.load(std::memory_order_relaxed)) {
    std::deque<std::function<void()>> tasks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks.swap(tasks_);
    }
    for (auto& t : tasks) t();

    if (failed_.load(std::memory_order_relaxed)) {  // time stands still; tasks still run
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    int work = 0;
    try {
      net.reset_tx_budgets();
      net.deliver_until(now() + options_.quantum);
      for (auto& n : nodes_) {
        for (int i = 0; i < kCyclesPerStep; ++i) {
          const int w = cycle(*n);
          work += w;
          if (w == 0) break;
        }
      }
    } catch (const std::exception& e) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        error_ = e.what();
      }
      failed_ = true;
    }
    steps_.fetch_add(1, std::memory_order_relaxed);
    if (work == 0) std::this_thread::yield();
  }
}

std::string DaemonSim::driver_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

bool DaemonSim::wait_until(const std::function<bool()>& done, std::chrono::milliseconds real_timeout) {
  const auto until = std::chrono::steady_clock::now() + real_timeout;
  for (;;) {
    if (call([&] { return done(); })) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

bool DaemonSim::wait_for_sim(engine::Nanos d, std::chrono::milliseconds real_timeout) {
  const engine::Nanos until = call([&] { return now() + d; });
  return wait_until([&] { return now() >= until; }, real_timeout);
}

nlohmann::json DaemonSim::endpoint_counters(std::size_t index, const std::string& key, int value) {
  const nlohmann::json c = server(index).counters_json()["api"];
  for (const auto& ep : c["endpoints"])
    if (ep.contains(key) && ep[key].is_number_integer() && ep[key].get<int>() == value) return ep;
  return nullptr;
}

}  // namespace locabus::sim::testing
