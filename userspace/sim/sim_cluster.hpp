// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// N engines on one SimNetwork, stepped deterministically: every engine runs
// until idle, then virtual time jumps to the next frame delivery or timer.
// Same seed, same calls -> same trace (SimNetwork::trace_digest()).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "engine/engine.hpp"
#include "sim/sim_network.hpp"

namespace locabus::sim {

class SimCluster {
 public:
  struct TimedEvent {
    engine::Nanos at;
    engine::Event event;
  };

  /// Nodes get ids 1..n (index i has id i + 1) and MACs 02:00:00:00:hi:lo.
  SimCluster(std::uint64_t seed, std::size_t nodes, const engine::EngineConfig& config = {},
             const LinkParams& link = {});
  ~SimCluster();
  SimCluster(const SimCluster&) = delete;
  SimCluster& operator=(const SimCluster&) = delete;

  std::size_t size() const noexcept { return nodes_.size(); }
  static std::uint16_t id_of(std::size_t index) noexcept { return static_cast<std::uint16_t>(index + 1); }
  SimNetwork& net() noexcept { return net_; }
  engine::Nanos now() const noexcept { return net_.now(); }

  /// The engine of node `index`; the node must be up.
  engine::Engine& node(std::size_t index);
  bool up(std::size_t index) const noexcept { return nodes_[index].engine != nullptr; }
  /// Node `index`'s port on the network.
  SimNetwork::Port port_of(std::size_t index) const { return nodes_.at(index).port; }

  /// Kills a node: its engine and all its state vanish, its port goes down.
  void crash(std::size_t index);
  /// Starts a new incarnation (new boot epoch) of a crashed node. A
  /// negative `wall_shift` models a node whose clock was set back: its boot
  /// epoch can be older than its previous incarnation's.
  void restart(std::size_t index, engine::Nanos wall_shift = engine::Nanos{0});
  /// Stops a node cleanly (Engine::leave()), then takes it down.
  void stop(std::size_t index);
  /// Adds a node (up) with the next index; returns its index.
  std::size_t add_node();
  /// The config node `index` gets when it next (re)starts, node_id included
  /// (a test may give two nodes one id).
  void set_config(std::size_t index, const engine::EngineConfig& config);

  /// Runs until virtual time `t` (or for `d`).
  void run_until(engine::Nanos t);
  void run_for(engine::Nanos d) { run_until(now() + d); }
  /// Runs until `done()` holds (checked after each step) or `limit` more
  /// time has passed; returns whether it held.
  bool run_until(const std::function<bool()>& done, engine::Nanos limit);

  /// Called after each step of a node, with its index (tests use it to drain
  /// messages as they arrive and to check invariants continuously).
  void on_step(std::function<void(std::size_t)> hook) { hook_ = std::move(hook); }

  /// Every event each node reported, in order, with its time.
  const std::vector<TimedEvent>& events(std::size_t index) const { return nodes_[index].events; }
  /// Events of `kind` about `about` seen by node `index`.
  std::size_t count_events(std::size_t index, engine::EventKind kind, std::uint16_t about) const;

  const engine::EngineConfig& config_of(std::size_t index) const { return nodes_.at(index).config; }

  /// Every node up sees every other node up as alive.
  bool converged() const;

 private:
  struct Node {
    std::size_t index;
    SimNetwork::Port port;
    engine::EngineConfig config;
    std::unique_ptr<engine::Engine> engine;
    std::vector<TimedEvent> events;
    engine::Nanos deadline{0};
    bool dirty = false;  // node() was called: the deadline may be stale
    std::uint32_t incarnation = 0;
    std::unique_ptr<engine::Clock> clock;  // the shared virtual time, wall clock shifted
  };
  void start(Node& n, engine::Nanos wall_shift = engine::Nanos{0});
  void step(Node& n);

  SimNetwork net_;
  std::uint64_t seed_;
  engine::EngineConfig base_;
  std::vector<Node> nodes_;
  std::function<void(std::size_t)> hook_;
};

/// Seeds for a simulation test: LOCABUS_SIM_SEED=S replays exactly one;
/// otherwise `count` seeds from `first` (LOCABUS_SIM_SEEDS=N overrides the
/// count, to soak).
std::vector<std::uint64_t> test_seeds(std::size_t count, std::uint64_t first = 1);

}  // namespace locabus::sim
