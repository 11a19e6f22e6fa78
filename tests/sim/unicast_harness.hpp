// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The unicast test harness shared by the simulation tests: a checker that
// drains every node and verifies exactly-once, in-order delivery, message
// streams that keep the send queue full, and common settings and checks.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <set>
#include <string>

#include "sim_test_util.hpp"

namespace locabus::sim::testing {

using namespace std::chrono_literals;

/// Drains every node's messages as they arrive and checks exactly-once,
/// in-order delivery per (sender, receiver) with intact payloads.
class Delivery {
 public:
  explicit Delivery(SimCluster& c) : c_(c) {
    c_.on_step([this](std::size_t idx) { drain(idx); });
  }

  void drain(std::size_t idx) {
    if (paused_.count(idx) || !c_.up(idx)) return;
    const std::uint16_t me = SimCluster::id_of(idx);
    c_.node(idx).receive(budget_, [&](const engine::Message& m) {
      const auto p = parse(m.payload);
      ++total_;
      if (!p.intact || p.from != m.node) {
        ++corrupt_;
        return;
      }
      std::uint64_t& next = next_[{m.node, me}];
      if (p.index != next) {
        ++order_errors_;
        if (first_error_.empty()) {
          first_error_ = "node " + std::to_string(me) + " got message " + std::to_string(p.index) + " from " +
                         std::to_string(m.node) + ", expected " + std::to_string(next);
        }
      }
      next = p.index + 1;
    });
  }

  /// Messages from `from` that `to` has received in order.
  std::uint64_t received(std::uint16_t from, std::uint16_t to) const {
    auto it = next_.find({from, to});
    return it == next_.end() ? 0 : it->second;
  }
  void pause(std::size_t idx) { paused_.insert(idx); }
  void resume(std::size_t idx) { paused_.erase(idx); }
  /// Messages each node reads per step (default: everything).
  void set_budget(std::size_t b) { budget_ = b; }
  void expect_clean() const {
    EXPECT_EQ(order_errors_, 0u) << first_error_;
    EXPECT_EQ(corrupt_, 0u) << "messages with a damaged payload were delivered";
  }
  /// Forget what `to` expects from everyone (it restarted: streams begin again).
  void reset_receiver(std::uint16_t to) {
    for (auto it = next_.begin(); it != next_.end();) it = it->first.second == to ? next_.erase(it) : ++it;
  }
  void reset_stream(std::uint16_t from, std::uint16_t to, std::uint64_t next) { next_[{from, to}] = next; }

 private:
  SimCluster& c_;
  std::map<std::pair<std::uint16_t, std::uint16_t>, std::uint64_t> next_;
  std::set<std::size_t> paused_;
  std::size_t budget_ = 1u << 20;
  std::uint64_t total_ = 0, corrupt_ = 0, order_errors_ = 0;
  std::string first_error_;
};

/// Keeps `count` messages flowing from node `from` to node `to`, queueing as
/// the send buffer allows.
struct Stream {
  std::size_t from, to;
  std::uint64_t count;
  std::uint64_t next = 0;
  std::size_t payload = 64;

  void pump(SimCluster& c) {
    if (!c.up(from)) return;
    auto& e = c.node(from);
    while (next < count) {
      auto p = sim::testing::payload(SimCluster::id_of(from), next, payload);
      auto r = e.send(SimCluster::id_of(to), LOCABUS_P_KCCM, p);
      if (r.status == engine::SendStatus::would_block) return;
      ASSERT_TRUE(r) << r.describe(SimCluster::id_of(to));
      ASSERT_EQ(r.message_id, next);
      ++next;
    }
  }
};

inline engine::EngineConfig patient_config() {
  // Unicast tests: a failure detector that does not give up under heavy
  // loss, so what is measured is the connection's own recovery.
  engine::EngineConfig cfg;
  cfg.suspect_after = 20s;
  cfg.dead_after = 40s;
  cfg.max_retransmits = 30;
  return cfg;
}

inline bool all_acked(SimCluster& c, std::size_t from, std::size_t to) {
  auto info = c.node(from).peer(SimCluster::id_of(to));
  return info && info->queued == 0;
}

/// No node saw a send fail, a connection drop, or a member die.
inline void expect_no_failures(SimCluster& c) {
  for (std::size_t i = 0; i < c.size(); ++i) {
    for (const auto& e : c.events(i)) {
      EXPECT_NE(e.event.kind, engine::EventKind::send_failed) << "node " << i << ": " << e.event.to_string();
      EXPECT_NE(e.event.kind, engine::EventKind::disconnected) << "node " << i << ": " << e.event.to_string();
      EXPECT_NE(e.event.kind, engine::EventKind::dead) << "node " << i << ": " << e.event.to_string();
    }
  }
}

}  // namespace locabus::sim::testing
