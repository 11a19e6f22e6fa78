// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "sim/sim_cluster.hpp"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace locabus::sim {

namespace {

wire::MacAddress mac_of(std::size_t index) {
  const std::size_t id = index + 1;
  return wire::MacAddress{
      {0x02, 0x00, 0x00, 0x00, static_cast<std::uint8_t>(id >> 8), static_cast<std::uint8_t>(id & 0xff)}};
}

/// The network's virtual clock, with the wall time shifted for one node.
class ShiftedClock final : public engine::Clock {
 public:
  ShiftedClock(const engine::Clock& base, engine::Nanos shift) : base_(base), shift_(shift) {}
  engine::Nanos now() const noexcept override { return base_.now(); }
  engine::Nanos wall() const noexcept override { return base_.wall() + shift_; }

 private:
  const engine::Clock& base_;
  engine::Nanos shift_;
};

// A step runs an engine until it reports no work; this bounds a runaway.
constexpr int kMaxSpinsPerStep = 10000;
// Rounds of steps at one virtual instant before the harness calls it a livelock.
constexpr int kMaxRoundsPerInstant = 100000;

}  // namespace

SimCluster::SimCluster(std::uint64_t seed, std::size_t nodes, const engine::EngineConfig& config,
                       const LinkParams& link)
    : net_(seed), seed_(seed), base_(config) {
  net_.set_default_link(link);
  nodes_.reserve(nodes);
  for (std::size_t i = 0; i < nodes; ++i) add_node();
}

SimCluster::~SimCluster() = default;

std::size_t SimCluster::add_node() {
  Node n;
  n.index = nodes_.size();
  n.port = net_.add_port(mac_of(n.index));
  n.config = base_;
  n.config.node_id = id_of(n.index);
  nodes_.push_back(std::move(n));
  start(nodes_.back());
  return nodes_.back().index;
}

void SimCluster::set_config(std::size_t index, const engine::EngineConfig& config) {
  nodes_[index].config = config;
}

void SimCluster::start(Node& n, engine::Nanos wall_shift) {
  net_.set_up(n.port, true);
  // Each incarnation draws its own random stream, derived from the seed.
  const std::uint64_t engine_seed = seed_ * 0x9E3779B97F4A7C15ULL + n.index * 1000003ULL + n.incarnation;
  n.engine.reset();
  n.clock = std::make_unique<ShiftedClock>(net_.clock(), wall_shift);
  n.engine = std::make_unique<engine::Engine>(n.config, net_.transport(n.port), *n.clock, engine_seed);
  ++n.incarnation;
  n.deadline = now();
}

engine::Engine& SimCluster::node(std::size_t index) {
  Node& n = nodes_.at(index);
  if (!n.engine) throw std::logic_error("sim node " + std::to_string(index) + " is down");
  n.dirty = true;  // the caller may queue work: ask the engine again before sleeping
  return *n.engine;
}

void SimCluster::crash(std::size_t index) {
  Node& n = nodes_.at(index);
  n.engine.reset();
  net_.set_up(n.port, false);
}

void SimCluster::restart(std::size_t index, engine::Nanos wall_shift) {
  Node& n = nodes_.at(index);
  if (n.engine) crash(index);
  start(n, wall_shift);
}

void SimCluster::stop(std::size_t index) {
  Node& n = nodes_.at(index);
  if (!n.engine) return;
  n.engine->leave();
  step(n);
  // Let the goodbye frames leave the port before it goes down.
  net_.deliver_until(now() + std::chrono::milliseconds(10));
  crash(index);
}

void SimCluster::step(Node& n) {
  for (int i = 0; i < kMaxSpinsPerStep && n.engine->do_work() > 0; ++i) {
  }
  n.engine->poll_events([&](const engine::Event& e) { n.events.push_back({now(), e}); });
  if (hook_) hook_(n.index);
  if (!n.engine) return;  // the hook may crash it
  // A hook that queued messages leaves the engine with work for now.
  n.deadline = n.engine->next_deadline().value_or(engine::Nanos::max());
  n.dirty = false;
}

void SimCluster::run_until(engine::Nanos t) {
  run_until([] { return false; }, t - now());
}

bool SimCluster::run_until(const std::function<bool()>& done, engine::Nanos limit) {
  const engine::Nanos end = now() + limit;
  engine::Nanos instant = now();
  int rounds_at_instant = 0;
  for (;;) {
    if (now() != instant) {
      instant = now();
      rounds_at_instant = 0;
    } else if (++rounds_at_instant > kMaxRoundsPerInstant) {
      std::string who;
      for (const Node& n : nodes_) {
        if (n.engine && n.deadline <= now()) who += " " + std::to_string(n.index);
      }
      throw std::logic_error("simulation livelock at t=" + std::to_string(now().count()) +
                             "ns: engines keep reporting work without time passing (nodes" + who + ")");
    }
    net_.reset_tx_budgets();
    bool stepped = false;
    for (Node& n : nodes_) {
      if (!n.engine) continue;
      if (net_.rx_pending(n.port) || n.deadline <= now()) {
        step(n);
        stepped = true;
      }
    }
    if (done()) return true;
    for (Node& n : nodes_) {
      if (n.dirty && n.engine) n.deadline = n.engine->next_deadline().value_or(engine::Nanos::max());
      n.dirty = false;
    }
    if (stepped) continue;  // steps may have made work for others at this instant
    engine::Nanos next = end;
    if (auto d = net_.next_delivery()) next = std::min(next, *d);
    for (const Node& n : nodes_) {
      if (n.engine) next = std::min(next, n.deadline);
    }
    if (next >= end) {
      net_.deliver_until(end);
      return done();
    }
    net_.deliver_until(next);
  }
}

std::size_t SimCluster::count_events(std::size_t index, engine::EventKind kind, std::uint16_t about) const {
  return static_cast<std::size_t>(
      std::count_if(nodes_[index].events.begin(), nodes_[index].events.end(),
                    [&](const TimedEvent& t) { return t.event.kind == kind && t.event.node == about; }));
}

bool SimCluster::converged() const {
  for (const Node& n : nodes_) {
    if (!n.engine) continue;
    for (const Node& m : nodes_) {
      if (&m == &n || !m.engine) continue;
      auto info = n.engine->peer(id_of(m.index));
      if (!info || info->member != engine::MemberState::alive || info->epoch != m.engine->epoch())
        return false;
    }
  }
  return true;
}

std::vector<std::uint64_t> test_seeds(std::size_t count, std::uint64_t first) {
  if (const char* one = std::getenv("LOCABUS_SIM_SEED")) return {std::stoull(one)};
  if (const char* n = std::getenv("LOCABUS_SIM_SEEDS")) count = std::stoull(n);
  std::vector<std::uint64_t> seeds(count);
  for (std::size_t i = 0; i < count; ++i) seeds[i] = first + i;
  return seeds;
}

}  // namespace locabus::sim
