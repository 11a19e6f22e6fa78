// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The cluster table every daemon keeps (docs/MONITOR.md): each node's
// latest complete sample, its state and age, and the rules that use it:
// when a node broadcasts (significant_change) and which node is least
// loaded (least_loaded). Pure logic on a caller's clock: the daemon
// service, the simulation and the unit tests drive it alike.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "monitor/record.hpp"
#include "monitor/stats.hpp"

namespace locabus::monitor {

using Nanos = std::chrono::nanoseconds;

enum class NodeState : std::uint8_t {
  alive,  // a complete record within stale_after
  stale,  // silent for stale_after, or the membership said it died or left
};
const char* to_string(NodeState s) noexcept;

/// Rates over the interval between a node's last two complete records (0
/// until there are two). Loopback is left out of the network sums.
struct Rates {
  double net_rx_bytes_per_s = 0, net_tx_bytes_per_s = 0;
  double net_rx_packets_per_s = 0, net_tx_packets_per_s = 0;
  double disk_read_bytes_per_s = 0, disk_write_bytes_per_s = 0;
};

/// One row of the table.
struct NodeView {
  std::uint16_t node = 0;
  bool self = false;
  NodeState state = NodeState::alive;
  std::uint32_t epoch = 0;
  std::uint32_t seq = 0;
  Nanos age{};  // since its last complete record arrived (self: since its last sample)
  NodeStats stats;
  Rates rates;
};

/// The least-loaded rule, documented in docs/MONITOR.md: among alive nodes,
/// the lowest load1 per CPU in steps of 0.05 (so noise does not decide),
/// then the most available memory, then the lowest node id. nullopt when
/// no node is alive.
std::optional<std::uint16_t> least_loaded(std::span<const NodeView> rows);

/// When a node broadcasts before its time is up (gmond-style value
/// thresholds): CPU busy moved by >= 10 points, load1 per CPU by >= 0.25,
/// available memory by >= 5 % of the total, used swap by >= 5 % of the swap,
/// a filesystem's use by >= 5 points, or a disk, filesystem or interface
/// came or went.
bool significant_change(const NodeStats& last_sent, const NodeStats& now);

struct TableLimits {
  Nanos stale_after = std::chrono::seconds(15);
  Nanos remove_after = std::chrono::seconds(60);
  /// Nodes beyond this many are not added (counted): bounds the memory.
  std::size_t max_nodes = 65535;
};

/// What apply() did with a part.
enum class Applied : std::uint8_t {
  complete,   // it completed a record: the node's row changed
  partial,    // kept, waiting for the record's other parts
  old,        // of an epoch or seq older than the row's (dropped)
  malformed,  // refused (error says why)
  full,       // a new node beyond max_nodes
};
const char* to_string(Applied a) noexcept;

class Table {
 public:
  Table(std::uint16_t self, TableLimits limits);

  /// This node's own sample (its row is always alive).
  void set_local(const NodeStats& s, std::uint32_t epoch, std::uint32_t seq, Nanos now);
  /// A part broadcast by `node`. A part of a newer seq (or another epoch: a
  /// restarted node) starts a new record; the row changes when all its parts
  /// are in.
  Applied apply(std::uint16_t node, std::span<const std::byte> payload, Nanos now,
                std::string* error = nullptr);
  /// The membership says `node` died or left: its row is stale at once.
  void mark_stale(std::uint16_t node, Nanos now);
  /// Moves silent rows to stale and removes rows silent for remove_after.
  /// Returns the nodes whose state changed or that were removed.
  std::vector<std::uint16_t> expire(Nanos now);
  /// The next time expire() has something to do.
  std::optional<Nanos> next_expiry() const;

  std::vector<NodeView> rows(Nanos now) const;  // by node id
  std::optional<NodeView> row(std::uint16_t node, Nanos now) const;
  /// least_loaded() over rows() without copying them.
  std::optional<std::uint16_t> least_loaded() const;
  /// Rows shown by rows() in `state`, without copying them (for the gauges).
  std::size_t count(NodeState state) const noexcept;
  std::size_t size() const noexcept { return rows_.size(); }
  /// Bytes the table holds (rows, their strings and devices, partial records): for the scale bound.
  std::size_t memory_bytes() const;

 private:
  struct Row {
    NodeView view;
    NodeStats previous;  // the record before, for rates
    bool has_previous = false;
    Nanos heard{};        // when its last complete record arrived
    Nanos stale_since{};  // when it became stale
    // A record being assembled:
    std::uint32_t pending_epoch = 0, pending_seq = 0;
    std::uint8_t pending_parts = 0;
    std::vector<std::vector<std::byte>> pending;  // by part index; empty = not yet
  };
  void commit(Row& r, std::uint16_t node, const RecordHeader& h, Nanos now, NodeStats stats);

  std::uint16_t self_;
  TableLimits limits_;
  std::map<std::uint16_t, Row> rows_;
};

/// A row as JSON: the "monitor" control request's rows, locabusctl monitor
/// --json, liblocabus's locabus_monitor_nodes(). docs/API.md lists them:
///   node, self, state ("alive"|"stale"), age_ms, epoch, seq, sampled_at_ms,
///   hostname, cpus, cpu_busy_percent, cpu_percent {mode: %}, cpu_seconds
///   {mode: s}, load [1, 5, 15], load_per_cpu, memory {total, free,
///   available, buffers, cached}, swap {total, free} (bytes), processes,
///   threads, procs_running, procs_blocked, boot_time_s, rates
///   {net_rx_bytes_per_s, net_tx_bytes_per_s, net_rx_packets_per_s,
///   net_tx_packets_per_s, disk_read_bytes_per_s, disk_write_bytes_per_s},
///   disks [{device, reads_completed, writes_completed, read_bytes,
///   written_bytes, io_time_ms}], filesystems [{mountpoint, device, fstype,
///   size_bytes, free_bytes, avail_bytes, files, files_free}], nets [{device,
///   rx_bytes, tx_bytes, rx_packets, tx_packets, rx_errs, tx_errs, rx_drop,
///   tx_drop}], locabus {every LOCABUS_MONITOR_LOCABUS_* field}.
nlohmann::json to_json(const NodeView& v);

/// One page of rows for the "monitor" control request (docs/API.md,
/// "LocaMonitor"), appended to the array `nodes`: the rows of node id >=
/// `from`, in node order, at most `limit` of them and at most `max_bytes` of
/// JSON (commas included), but never none while a row is left, so that
/// paging always moves on. With `devices` false each row is a summary,
/// without disks, filesystems, nets and cpu_seconds; so is a row larger than
/// `max_bytes` on its own, flagged "devices_omitted": true.
struct Page {
  std::size_t rows = 0;
  std::size_t bytes = 0;              // of nodes.dump()
  std::optional<std::uint16_t> next;  // the first node id left out, if any
};
Page page(std::span<const NodeView> rows, std::uint32_t from, std::size_t limit, std::size_t max_bytes,
          bool devices, nlohmann::json& nodes);

}  // namespace locabus::monitor
