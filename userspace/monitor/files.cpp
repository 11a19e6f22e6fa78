// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "monitor/files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <iterator>
#include <string>
#include <system_error>

#include <fmt/format.h>

#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace locabus::monitor {

namespace {

// Interface names become key parts: [a-z0-9_] only.
std::string key_part(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (const char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 'A' && c <= 'Z')
      out.push_back(static_cast<char>(c - 'A' + 'a'));
    else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')
      out.push_back(static_cast<char>(c));
    else
      out.push_back('_');
  }
  if (out.empty()) out.push_back('_');
  return out;
}

// A value a shell may read with `. file` or `eval`: another node chose it
// (its hostname), so anything beyond a hostname's letters, digits, '.', '-'
// and '_' becomes '_' (no quote, space, '$', ';' or newline gets through).
std::string shell_safe(std::string_view s) {
  std::string out(s);
  for (char& ch : out) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    ch == '.' || ch == '-' || ch == '_';
    if (!ok) ch = '_';
  }
  return out;
}

std::string fixed(double v, int decimals) {
  if (!std::isfinite(v)) v = 0;
  return fmt::format("{:.{}f}", v, decimals);
}

// Thousandths as a decimal with three places, exactly (1500 -> "1.500").
std::string milli(std::uint64_t v) { return fmt::format("{}.{:03}", v / 1000, v % 1000); }

// Permille as a percent with one place, exactly (125 -> "12.5").
std::string permille_percent(std::uint16_t v) { return fmt::format("{}.{}", v / 10, v % 10); }

bool is_node_file(std::string_view name) {
  if (name.empty() || name.size() > 5) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool is_temp_file(std::string_view name) {
  return name.size() > 5 && name.front() == '.' && name.ends_with(".tmp");
}

}  // namespace

std::string key_values(const NodeView& row, std::uint64_t updated_at_ms) {
  const NodeStats& s = row.stats;
  std::string out;
  out.reserve(2048);
  auto kv = [&out](std::string_view key, const auto& value) {
    fmt::format_to(std::back_inserter(out), "{}={}\n", key, value);
  };
  kv("node", row.node);
  kv("self", row.self ? 1 : 0);
  kv("state", to_string(row.state));
  kv("updated_at_ms", updated_at_ms);
  kv("age_ms", std::chrono::duration_cast<std::chrono::milliseconds>(row.age).count());
  kv("epoch", row.epoch);
  kv("seq", row.seq);
  kv("hostname", shell_safe(s.hostname));
  kv("cpus", s.cpus);
  kv("cpu_busy_percent", fixed(s.cpu_busy_percent(), 1));
  for (std::size_t m = 0; m < kCpuModes; ++m)
    kv(fmt::format("cpu_{}_percent", kCpuModeNames[m]), permille_percent(s.cpu_permille[m]));
  kv("load1", milli(s.load1_milli));
  kv("load5", milli(s.load5_milli));
  kv("load15", milli(s.load15_milli));
  kv("load_per_cpu", fixed(s.load_per_cpu(), 3));
  kv("mem_total_bytes", s.mem_total);
  kv("mem_free_bytes", s.mem_free);
  kv("mem_available_bytes", s.mem_available);
  kv("mem_buffers_bytes", s.mem_buffers);
  kv("mem_cached_bytes", s.mem_cached);
  kv("swap_total_bytes", s.swap_total);
  kv("swap_free_bytes", s.swap_free);
  kv("processes", s.processes);
  kv("threads", s.threads);
  kv("procs_running", s.procs_running);
  kv("procs_blocked", s.procs_blocked);
  kv("net_rx_bytes_per_s", fixed(row.rates.net_rx_bytes_per_s, 0));
  kv("net_tx_bytes_per_s", fixed(row.rates.net_tx_bytes_per_s, 0));
  kv("disk_read_bytes_per_s", fixed(row.rates.disk_read_bytes_per_s, 0));
  kv("disk_write_bytes_per_s", fixed(row.rates.disk_write_bytes_per_s, 0));
  std::set<std::string> devices;
  for (const NetStats& n : s.nets) {
    std::string dev = key_part(n.device);
    for (int i = 2; !devices.insert(dev).second; ++i) dev = fmt::format("{}_{}", key_part(n.device), i);
    kv(fmt::format("net_{}_rx_bytes", dev), n.rx_bytes);
    kv(fmt::format("net_{}_tx_bytes", dev), n.tx_bytes);
  }
  for (const auto& f : LocabusCounters::counter_fields())
    kv(fmt::format("locabus_{}", f.field.name), f.value(s.locabus));
  for (const auto& f : LocabusGauges::counter_fields())
    kv(fmt::format("locabus_{}", f.field.name), f.value(s.locabus_gauges));
  return out;
}

const char* to_string(FileError e) noexcept {
  switch (e) {
    case FileError::mkdir: return "mkdir";
    case FileError::write: return "write";
    case FileError::rename: return "rename";
    case FileError::remove: return "remove";
  }
  return "?";
}

FileWriter::FileWriter(std::filesystem::path dir, ErrorSink on_error)
    : dir_(std::move(dir)), on_error_(std::move(on_error)) {
  std::error_code ec;
  std::filesystem::create_directory(dir_, ec);
  if (ec) {
    fail(FileError::mkdir,
         fmt::format("cannot create {}: {}; no monitor files will be written (check that the run "
                     "directory exists and is writable)",
                     dir_.string(), ec.message()));
    return;
  }
  have_dir_ = true;
  // What a daemon that was killed left behind would describe nodes that may be gone.
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!is_node_file(name) && !is_temp_file(name)) continue;
    std::error_code rec;
    std::filesystem::remove(entry.path(), rec);
    if (rec)
      fail(FileError::remove,
           fmt::format("cannot remove the old {}: {}", entry.path().string(), rec.message()));
  }
}

FileWriter::~FileWriter() {
  if (!have_dir_) return;
  std::error_code ec;
  for (const std::uint16_t node : nodes_) std::filesystem::remove(dir_ / std::to_string(node), ec);
  std::filesystem::remove(dir_, ec);  // only if empty: a file someone else put there stays
}

void FileWriter::fail(FileError kind, const std::string& message) {
  ++errors_;
  const unsigned bit = 1u << static_cast<unsigned>(kind);
  if (reported_ & bit) return;
  reported_ |= bit;
  if (on_error_) on_error_(kind, message);
}

bool FileWriter::write(const NodeView& row, std::uint64_t now_unix_ms) {
  if (!have_dir_) {
    ++errors_;
    return false;
  }
  const std::string text = key_values(row, now_unix_ms);
  const std::filesystem::path file = dir_ / std::to_string(row.node);
  const std::filesystem::path tmp = dir_ / fmt::format(".{}.tmp", row.node);
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!fd) {
      fail(FileError::write, fmt::format("cannot create {}: {}", tmp.string(), error_text(errno)));
      return false;
    }
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        fail(FileError::write,
             fmt::format("cannot write {}: {} (is the run directory's file system full?)", tmp.string(),
                         n < 0 ? error_text(errno) : std::string("no progress")));
        ::unlink(tmp.c_str());
        return false;
      }
      done += static_cast<std::size_t>(n);
    }
    const int closed = ::close(fd.get());
    const int close_errno = errno;
    (void)fd.release();
    if (closed != 0) {
      fail(FileError::write, fmt::format("cannot write {}: {}", tmp.string(), error_text(close_errno)));
      ::unlink(tmp.c_str());
      return false;
    }
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    fail(FileError::rename,
         fmt::format("cannot rename {} to {}: {}", tmp.string(), file.string(), error_text(errno)));
    ::unlink(tmp.c_str());
    return false;
  }
  nodes_.insert(row.node);
  ++written_;
  return true;
}

void FileWriter::remove(std::uint16_t node) {
  if (nodes_.erase(node) == 0) return;
  const std::filesystem::path file = dir_ / std::to_string(node);
  if (::unlink(file.c_str()) != 0 && errno != ENOENT)
    fail(FileError::remove, fmt::format("cannot remove {}: {}", file.string(), error_text(errno)));
}

}  // namespace locabus::monitor
