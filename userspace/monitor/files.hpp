// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The run-dir files, LocaMonitor's /proc analogue (docs/MONITOR.md, "Run-dir
// files"): <run_dir>/monitor/<node id in decimal>, one key=value line per
// key, keys [a-z0-9_]+, written to a temporary file in that directory and
// renamed over the old one, so a reader sees a whole file or the previous
// one, never half of it. Shell scripts read them:
//
//   . <(grep '^load1=' /run/locabus/monitor/3)
//   awk -F= '$1 == "mem_available_bytes" {print $2}' /run/locabus/monitor/*
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <string_view>

#include "monitor/table.hpp"

namespace locabus::monitor {

/// A row as the file's content: key=value lines in the documented order
/// (node, self, state, updated_at_ms, age_ms, epoch, seq, hostname, cpus,
/// cpu_busy_percent, cpu_<mode>_percent, load1, load5, load15, load_per_cpu,
/// mem_*_bytes, swap_*_bytes, processes, threads, procs_running,
/// procs_blocked, the rates, net_<dev>_rx_bytes / net_<dev>_tx_bytes per
/// interface, locabus_<field> per LocabusCounters and LocabusGauges field).
/// `updated_at_ms`: the Unix time in milliseconds the file is written.
/// Values never hold a newline (a peer's hostname is cleaned of control
/// characters); interface names are lower-cased with every character
/// outside [a-z0-9_] made '_' (a name that then collides gets _2, _3, ...).
std::string key_values(const NodeView& row, std::uint64_t updated_at_ms);

/// What went wrong with a file, for logs and counters (each kind is
/// reported to the error sink once per writer).
enum class FileError : std::uint8_t { mkdir, write, rename, remove };
const char* to_string(FileError e) noexcept;

/// Writes and removes the files of one directory. Never throws for a file
/// system error: it counts it and tells the sink (once per kind), and the
/// daemon goes on without that file.
class FileWriter {
 public:
  using ErrorSink = std::function<void(FileError kind, const std::string& message)>;

  /// Creates `dir` (its parent must exist) and removes what an earlier
  /// daemon left in it (files named by a node id, and temporary files).
  FileWriter(std::filesystem::path dir, ErrorSink on_error = {});
  /// Removes every file it wrote and the directory (if it is then empty).
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  /// Writes <dir>/<row.node> atomically. false (and counted) on failure.
  bool write(const NodeView& row, std::uint64_t now_unix_ms);
  /// Removes <dir>/<node>, if this writer wrote it.
  void remove(std::uint16_t node);

  const std::filesystem::path& dir() const noexcept { return dir_; }
  std::uint64_t written() const noexcept { return written_; }
  std::uint64_t errors() const noexcept { return errors_; }
  /// Nodes whose file exists now.
  std::size_t files() const noexcept { return nodes_.size(); }

 private:
  void fail(FileError kind, const std::string& message);

  std::filesystem::path dir_;
  ErrorSink on_error_;
  bool have_dir_ = false;
  std::set<std::uint16_t> nodes_;  // files written and not removed
  std::uint64_t written_ = 0;
  std::uint64_t errors_ = 0;
  unsigned reported_ = 0;  // FileError kinds already told, a bit each
};

}  // namespace locabus::monitor
