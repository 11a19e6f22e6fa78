// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// LocaMonitor's data model (docs/MONITOR.md): what one node says about
// itself in one sample. The sampler (sampler.hpp) fills it from /proc and
// /sys, the record (record.hpp) carries it between daemons, the table
// (table.hpp) keeps every node's latest, and the exposition
// (exposition.hpp) renders it with node_exporter's names.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/counters.hpp"

namespace locabus::monitor {

/// CPU time modes, in /proc/stat's order. X(name).
#define LOCABUS_MONITOR_CPU_MODES(X) X(user) X(nice) X(system) X(idle) X(iowait) X(irq) X(softirq) X(steal)
enum class CpuMode : std::uint8_t {
#define LOCABUS_MONITOR_CPU_ENUM_(n) n,
  LOCABUS_MONITOR_CPU_MODES(LOCABUS_MONITOR_CPU_ENUM_)
#undef LOCABUS_MONITOR_CPU_ENUM_
};
inline constexpr std::size_t kCpuModes = 8;
inline constexpr std::array<std::string_view, kCpuModes> kCpuModeNames = {
#define LOCABUS_MONITOR_CPU_NAME_(n) #n,
    LOCABUS_MONITOR_CPU_MODES(LOCABUS_MONITOR_CPU_NAME_)
#undef LOCABUS_MONITOR_CPU_NAME_
};

/// The node's own Locabus numbers carried in every record. Monotonic ones
/// (Prometheus counters: locabus_node_<name>_total) X(name, description):
#define LOCABUS_MONITOR_LOCABUS_COUNTERS(X)                                     \
  X(tx_frames, "frames the daemon handed to the transport")                     \
  X(rx_frames, "frames the daemon received from the transport")                 \
  X(retransmits, "DATA frames sent again, over all its connections")            \
  X(bcast_sent, "broadcast frames sent for the first time")                     \
  X(bcast_retransmits, "broadcast repairs sent for NAKs")                       \
  X(messages_delivered, "messages handed to the daemon's services and clients") \
  X(monitor_records_sent, "LocaMonitor records (all their parts) this node sent")
/// Levels (Prometheus gauges: locabus_node_<name>) X(name, description):
#define LOCABUS_MONITOR_LOCABUS_GAUGES(X)           \
  X(members, "other nodes this node sees as alive") \
  X(clients, "applications attached to the daemon") \
  X(daemon_uptime_seconds, "seconds since the daemon started")

struct LocabusCounters {
  LOCABUS_COUNTER_FIELDS(LocabusCounters, LOCABUS_MONITOR_LOCABUS_COUNTERS, ::locabus::CounterKind::counter)
};
struct LocabusGauges {
  LOCABUS_COUNTER_FIELDS(LocabusGauges, LOCABUS_MONITOR_LOCABUS_GAUGES, ::locabus::CounterKind::gauge)
};

/// One block device (whole disks; partitions, loop and ram devices are left out).
struct DiskStats {
  std::string device;  // "sda", "nvme0n1", "vda" (at most kMaxName bytes)
  std::uint64_t reads_completed = 0;
  std::uint64_t writes_completed = 0;
  std::uint64_t read_bytes = 0;
  std::uint64_t written_bytes = 0;
  std::uint64_t io_time_ms = 0;  // time spent doing I/O
  bool operator==(const DiskStats&) const = default;
};

/// One mounted local filesystem (pseudo and network filesystems are left out).
struct FilesystemStats {
  std::string mountpoint;
  std::string device;
  std::string fstype;
  std::uint64_t size_bytes = 0;
  std::uint64_t free_bytes = 0;   // free for root
  std::uint64_t avail_bytes = 0;  // free for unprivileged users
  std::uint64_t files = 0;
  std::uint64_t files_free = 0;
  bool operator==(const FilesystemStats&) const = default;
};

/// One network interface, /proc/net/dev's columns.
struct NetStats {
  std::string device;
  std::uint64_t rx_bytes = 0;
  std::uint64_t tx_bytes = 0;
  std::uint64_t rx_packets = 0;
  std::uint64_t tx_packets = 0;
  std::uint64_t rx_errs = 0;
  std::uint64_t tx_errs = 0;
  std::uint64_t rx_drop = 0;
  std::uint64_t tx_drop = 0;
  bool operator==(const NetStats&) const = default;
};

/// Strings in a record are at most this long (longer ones are cut at
/// sampling, so a record never needs to cut anything).
inline constexpr std::size_t kMaxName = 64;

/// One sample of one node.
struct NodeStats {
  std::uint64_t sampled_at_ms = 0;  // Unix time of the sample, milliseconds
  std::string hostname;
  std::uint32_t cpus = 0;  // online CPUs
  /// Cumulative CPU time per mode over all CPUs, milliseconds (/proc/stat).
  std::array<std::uint64_t, kCpuModes> cpu_ms{};
  /// Each mode's share of the CPU time over the last sampling interval, in
  /// thousandths (they add up to 1000; all 0 before a second sample).
  std::array<std::uint16_t, kCpuModes> cpu_permille{};
  /// Load averages, thousandths (1.5 -> 1500).
  std::uint32_t load1_milli = 0, load5_milli = 0, load15_milli = 0;
  std::uint64_t boot_time_s = 0;  // Unix time the machine booted
  std::uint64_t mem_total = 0, mem_free = 0, mem_available = 0, mem_buffers = 0, mem_cached = 0;
  std::uint64_t swap_total = 0, swap_free = 0;  // bytes
  std::uint32_t procs_running = 0;              // /proc/stat procs_running
  std::uint32_t procs_blocked = 0;              // /proc/stat procs_blocked
  std::uint32_t processes = 0;                  // processes (not threads) that exist
  std::uint32_t threads = 0;                    // scheduling entities (/proc/loadavg)
  std::vector<DiskStats> disks;
  std::vector<FilesystemStats> filesystems;
  std::vector<NetStats> nets;
  LocabusCounters locabus;
  LocabusGauges locabus_gauges;
  bool operator==(const NodeStats&) const;

  /// CPU busy share over the last interval, percent (100 - idle - iowait).
  double cpu_busy_percent() const noexcept;
  double load1() const noexcept { return load1_milli / 1000.0; }
  /// load1 per online CPU (cpus 0 counts as 1).
  double load_per_cpu() const noexcept;
};

}  // namespace locabus::monitor
