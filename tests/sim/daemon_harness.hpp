// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The daemon tested in simulation (issue 12, item 6): N daemons' cores
// (engine + ApiServer with its services) over the simulated network with a
// manual clock, and real liblocabus clients talking to them over real Unix
// sockets in a temporary directory. No root needed.
//
// How time works. A driver thread owns every engine and ApiServer and runs
// continuously; each step it
//   1. advances the simulated clock by a fixed quantum (DaemonSimOptions::
//      quantum, 50 µs by default) and delivers the frames due by then,
//   2. runs each node's daemon duty cycle, exactly as Daemon::do_work does
//      (engine.do_work, poll_events -> server.on_event, after_events,
//      server.do_work), a few times while it reports work,
//   3. yields the CPU when no node had anything to do, so that clients run.
// Clients are ordinary threads using liblocabus, blocking on real time, so
// they must use generous real-time timeouts (seconds). Simulated time runs
// several times faster than real time on an idle machine: a 4 s failure
// detector timeout takes well under a second.
//
// Limits. The network's loss, duplication and reordering are drawn from
// the seed, but which frames they hit depends on when clients hand their
// messages over, which depends on thread scheduling: a run is not exactly
// replayable, and tests must assert properties that hold for every
// interleaving (exactly once, in order, bounds on memory and on time with
// generous margins), never exact traces. Simulated durations measured
// around client activity include client think time (scaled by the driver's
// speed), so bounds on them are ratios or ceilings with wide margins.
// The real kernel (XDP, AF_PACKET, namespaces) stays in the root e2e tier.
//
// Thread safety: the driver is the only thread touching engines, servers
// and the network; tests reach them through call(), which runs a function
// on the driver between two steps and waits for it.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/config.hpp"
#include "daemon/daemon.hpp"
#include "daemon/server.hpp"
#include "monitor/stats.hpp"
#include "sim/sim_cluster.hpp"

namespace locabus::sim::testing {

/// A fresh directory under the system's temporary directory, removed with
/// everything in it when this goes (also when a test fails).
class TempDir {
 public:
  /// Under `base` (empty: the system's temporary directory).
  explicit TempDir(const std::string& prefix = "locabus-dsim-", const std::filesystem::path& base = {});
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

struct DaemonSimOptions {
  std::size_t nodes = 3;
  /// Every directed link's impairments (the sim network's default link).
  LinkParams link;
  engine::EngineConfig engine;
  /// Per client ring; 512 KiB is the least that takes 64 KB datagrams.
  std::uint32_t ring_bytes = 512u << 10;
  std::uint32_t endpoint_window = 1024;
  /// Simulated time per driver step.
  engine::Nanos quantum = std::chrono::microseconds(50);
  /// Where the nodes' run directories go (empty: the system's temporary
  /// directory). A test writing many files points it at a tmpfs (/dev/shm),
  /// as a daemon's /run is: on a disk file system every rename over a file
  /// starts writeback.
  std::filesystem::path run_base;
  /// LocaMonitor on every node (the daemon's defaults unless set).
  daemon::MonitorConfig monitor;
  /// Node `index`'s LocaMonitor sample at simulated time `now`, run on the
  /// driver thread (ServerHooks::monitor_sample). Empty: a fixed synthetic
  /// sample per node; the simulation never reads this machine's /proc.
  std::function<monitor::NodeStats(std::size_t index, engine::Nanos now)> monitor_sample;
};

/// 1-5 % loss (by seed), some reordering and duplication, on every link:
/// what the daemon-in-simulation tests run over.
inline LinkParams lossy(std::uint64_t seed) {
  LinkParams l;
  l.loss = 0.01 * static_cast<double>(1 + seed % 5);
  l.reorder = 0.02;
  l.duplicate = 0.01;
  return l;
}

/// The daemons of one simulated cluster; node index i has node id i + 1.
class DaemonSim {
 public:
  /// Starts the nodes and the driver. Throws on failure (nothing is left behind).
  DaemonSim(std::uint64_t seed, const DaemonSimOptions& options);
  /// Stops the driver, then the servers (their sockets go), the engines and
  /// the temporary directory. Clients should be gone first (their threads
  /// joined): a client blocked in a call waits for its own timeout.
  ~DaemonSim();
  DaemonSim(const DaemonSim&) = delete;
  DaemonSim& operator=(const DaemonSim&) = delete;

  std::size_t size() const noexcept { return nodes_.size(); }
  static std::uint16_t id_of(std::size_t index) noexcept { return SimCluster::id_of(index); }
  /// The API socket of node `index`, for EndpointOptions/SocketOptions::socket_path.
  std::string socket(std::size_t index) const;
  const DaemonSimOptions& options() const noexcept { return options_; }

  /// Runs `fn` on the driver thread between two steps and returns its
  /// result (exceptions are passed on). `fn` may use cluster(), server(),
  /// now(). Never call it from the driver itself.
  template <typename F>
  auto call(F&& fn) -> std::invoke_result_t<F&> {
    using R = std::invoke_result_t<F&>;
    auto task = std::make_shared<std::packaged_task<R()>>(std::forward<F>(fn));
    auto result = task->get_future();
    post([task] { (*task)(); });
    return result.get();
  }

  /// Polls `done` on the driver (between steps) until it holds or
  /// `real_timeout` of wall time has passed; returns whether it held.
  bool wait_until(const std::function<bool()>& done,
                  std::chrono::milliseconds real_timeout = std::chrono::seconds(30));
  /// Waits until `d` of simulated time has passed.
  bool wait_for_sim(engine::Nanos d, std::chrono::milliseconds real_timeout = std::chrono::seconds(30));

  // ---- for functions run by call() (the driver thread) ------------------------------
  SimCluster& cluster() noexcept { return cluster_; }
  /// Node `index`'s run directory (<run_dir>/monitor holds its monitor files).
  std::filesystem::path run_dir(std::size_t index) const;
  SimNetwork& net() noexcept { return cluster_.net(); }
  engine::Nanos now() const noexcept { return cluster_.now(); }
  daemon::ApiServer& server(std::size_t index);
  /// Every engine event node `index` reported, in order.
  const std::vector<SimCluster::TimedEvent>& events(std::size_t index) const;
  /// Every node sees every other as alive.
  bool converged() const { return cluster_.converged(); }
  /// Kills node `index` like SIGKILL: its server goes (its clients see the
  /// daemon go away), then its engine and all its state; the node falls
  /// silent. Driver thread only (through call()).
  void crash(std::size_t index);
  /// Starts a new incarnation of a crashed node (a new boot epoch) and a new
  /// server on the same API socket. Driver thread only.
  void restart(std::size_t index);
  /// The counters entry of the endpoint or socket with `key` == `value`
  /// (e.g. "proto", 20) on node `index`; null if there is none.
  nlohmann::json endpoint_counters(std::size_t index, const std::string& key, int value);

  /// What stopped the driver (an exception from a daemon cycle; simulated
  /// time then stands still), or empty. From any thread.
  std::string driver_error() const;

  /// Driver steps taken so far (from any thread).
  std::uint64_t steps() const noexcept { return steps_.load(std::memory_order_relaxed); }

 private:
  struct Node;
  daemon::ServerHooks hooks(std::size_t index);
  void post(std::function<void()> task);
  void drive();
  int cycle(Node& n);

  DaemonSimOptions options_;
  TempDir dir_;
  SimCluster cluster_;
  std::vector<std::unique_ptr<Node>> nodes_;

  mutable std::mutex mu_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  std::string error_;                        // guarded by mu_
  std::atomic<bool> failed_{false};
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> steps_{0};
  std::thread driver_;
};

/// A client thread: runs `body` and joins when destroyed, so that a test
/// that returns early never leaves a thread behind. Exceptions from `body`
/// are kept and reported by join() / error().
class ClientThread {
 public:
  explicit ClientThread(std::function<void()> body);
  ~ClientThread();
  ClientThread(ClientThread&&) = delete;
  /// Waits for the thread; returns the exception's text if it threw.
  std::string join();

 private:
  std::string error_;
  std::thread thread_;
};

}  // namespace locabus::sim::testing
