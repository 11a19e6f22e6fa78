// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabusd's core: one thread runs the engine and the API server as one
// agent, sleeping in poll() on the transport, the API's epoll set and a
// signalfd (or spinning, with busy_poll). See docs/ARCHITECTURE.md.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/unique_fd.hpp"
#include "daemon/config.hpp"
#include "daemon/metrics.hpp"
#include "engine/agent.hpp"
#include "engine/clock.hpp"
#include "engine/engine.hpp"
#include "engine/idle.hpp"
#include "transport/datapath.hpp"

namespace locabus::daemon {

class ApiServer;

/// Exclusive ownership of an interface (in this network namespace) by one
/// daemon: an flock on /run/locabus/owners/<iface[@netns]>.lock. The kernel
/// drops it when the process dies, so a daemon killed with SIGKILL never
/// blocks its successor.
class OwnerLock {
 public:
  /// Throws Error naming the owner's pid when another live daemon holds it.
  explicit OwnerLock(const std::string& iface);
  ~OwnerLock();
  OwnerLock(const OwnerLock&) = delete;
  OwnerLock& operator=(const OwnerLock&) = delete;
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
  UniqueFd fd_;
};

/// What the API server asks the daemon about (locabusctl status/peers/counters).
class Introspection {
 public:
  virtual ~Introspection() = default;
  virtual nlohmann::json status() const = 0;
  virtual nlohmann::json peers() const = 0;
  virtual nlohmann::json counters() const = 0;
};

class Daemon final : public engine::Agent, public Introspection {
 public:
  /// Takes the interface, opens the datapath, starts the engine and the API
  /// socket. Throws Error (nothing is left behind then).
  explicit Daemon(const Config& cfg);
  ~Daemon() override;
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  /// Serves until SIGTERM or SIGINT, then shuts down cleanly; also when the
  /// interface is gone for good (deleted), then with status 1. A link that
  /// is down is not a reason to stop. Returns the process exit status.
  int run();

  // engine::Agent: the engine, the events and the API as one duty cycle.
  int do_work() override;
  std::optional<engine::Nanos> next_deadline() const override;
  std::string_view name() const noexcept override { return "locabusd"; }

  // Introspection
  nlohmann::json status() const override;
  nlohmann::json peers() const override;
  nlohmann::json counters() const override;

 private:
  bool handle_signals();  // true when asked to stop
  void shutdown();
  /// Every counter group: engine, transport, XDP, API, the services, the exporter.
  CounterGroups counter_groups() const;
  /// A scrape's text (docs/METRICS.md): this node's counter registry, the
  /// services' families about this node and locabus_build_info (local), or
  /// the services' families about every node they know (cluster).
  std::string metrics_text(MetricsScope scope) const;

  // In construction order: the interface is ours before anything touches it.
  Config cfg_;
  std::uint16_t node_id_ = 0;
  OwnerLock lock_;
  UniqueFd signal_fd_;
  engine::SystemClock clock_;
  engine::Nanos started_{};
  transport::OpenedDatapath dp_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<ApiServer> server_;
  std::unique_ptr<MetricsExporter> metrics_;  // metrics_address set; renders on this thread
  std::unique_ptr<engine::IdleStrategy> idle_;
  engine::BlockingIdle* blocking_ = nullptr;  // idle_ when it blocks
  std::filesystem::path pid_file_;
  bool stopping_ = false;
  bool link_gone_ = false;  // stopping because the transport can never work again
  std::string stop_reason_;
};

/// sd_notify() when NOTIFY_SOCKET is set; a no-op otherwise.
void notify_systemd(const std::string& state);

}  // namespace locabus::daemon
