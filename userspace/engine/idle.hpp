// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Idle strategies and the runner that drives an agent with one. The agent
// never decides how to wait; the runner does, from what the agent reports:
// work done (go again at once), the next timer deadline, and an fd that
// becomes readable when frames arrive (Transport::wait_fd()).
#pragma once

#include <atomic>
#include <memory>
#include <string_view>
#include <vector>

#include "common/unique_fd.hpp"
#include "engine/agent.hpp"

namespace locabus::engine {

class IdleStrategy {
 public:
  virtual ~IdleStrategy() = default;
  /// Called after a duty cycle that did no work. `deadline` is the agent's
  /// next timer (nullopt: none); the strategy must return by then.
  virtual void idle(std::optional<Nanos> deadline) = 0;
  /// Called after a duty cycle that did work (resets any back-off; arms
  /// BlockingIdle's spin). The daemon calls it only for work with
  /// applications, so timers and heartbeats alone never make it spin.
  virtual void reset() noexcept {}
  virtual std::string_view name() const noexcept = 0;
};

/// Burns a core for the lowest latency. Opt-in only.
class BusySpinIdle final : public IdleStrategy {
 public:
  void idle(std::optional<Nanos>) override;
  std::string_view name() const noexcept override { return "busy-spin"; }
};

/// sched_yield(): low latency, still a full core when another thread is idle.
class YieldIdle final : public IdleStrategy {
 public:
  void idle(std::optional<Nanos>) override;
  std::string_view name() const noexcept override { return "yield"; }
};

/// Sleeps in poll(2) on the given fds until one is readable or the next
/// deadline passes: no CPU at all while idle. The default. wake() (from any
/// thread) interrupts the wait, for commands posted to the agent.
class BlockingIdle final : public IdleStrategy {
 public:
  /// `fds` are watched for POLLIN (e.g. the AF_XDP socket); -1 entries are
  /// ignored. `clock` converts deadlines to timeouts.
  BlockingIdle(const Clock& clock, std::vector<int> fds, Nanos spin = Nanos{0});
  void idle(std::optional<Nanos> deadline) override;
  void reset() noexcept override;
  std::string_view name() const noexcept override { return "blocking"; }
  /// Makes the current (or next) idle() return at once. Thread-safe.
  void wake() noexcept;
  /// Within a spin: the caller need not arrange to be woken (e.g. tell
  /// producers it sleeps) before the next idle(), which will not sleep. When
  /// the spin time runs out idle() returns once more without sleeping, so
  /// the caller sees spinning() false and arranges it before the real sleep.
  bool spinning() const noexcept { return spinning_; }
  /// How many idle() calls actually slept (for tests and metrics).
  std::uint64_t sleeps() const noexcept { return sleeps_; }

 private:
  const Clock& clock_;
  std::vector<int> fds_;
  UniqueFd wake_fd_;  // eventfd
  std::uint64_t sleeps_ = 0;
  Nanos spin_{0};          // keep polling this long after the last work
  Nanos last_work_{0};     // clock_.now() at the last reset()
  bool spinning_ = false;  // last_work_ is recent enough to spin
};

/// Runs an agent until stopped: do_work(), and idle when it did nothing.
class AgentRunner {
 public:
  AgentRunner(Agent& agent, IdleStrategy& idle) : agent_(agent), idle_(idle) {}
  /// Runs on the calling thread until stop() is called (from the agent,
  /// another thread or a signal handler).
  void run();
  /// One duty cycle: do_work(), then idle if there was nothing to do.
  /// Returns the work done.
  int run_once();
  void stop() noexcept { running_.store(false, std::memory_order_relaxed); }
  bool running() const noexcept { return running_.load(std::memory_order_relaxed); }

 private:
  Agent& agent_;
  IdleStrategy& idle_;
  std::atomic<bool> running_{true};
};

}  // namespace locabus::engine
