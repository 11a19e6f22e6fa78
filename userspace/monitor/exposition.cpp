// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Families go outermost and rows inside them, so each family's samples are
// together under its one HELP and TYPE; a family no row has a sample of
// (no disks anywhere) is left out. Seconds and load averages are written
// from their integer milliseconds/thousandths exactly, not through a double.
#include "monitor/exposition.hpp"

#include <charconv>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/counters.hpp"
#include "monitor/text.hpp"

namespace locabus::monitor {
namespace {

using std::string_view;

void append_u64(std::string& out, std::uint64_t v) {
  char b[24];
  const auto r = std::to_chars(b, b + sizeof b, v);
  out.append(b, r.ptr);
}

/// v / 1000 with three decimals, exactly ("1.500").
void append_milli(std::string& out, std::uint64_t v) {
  append_u64(out, v / 1000);
  const auto f = v % 1000;
  out += '.';
  out += static_cast<char>('0' + f / 100);
  out += static_cast<char>('0' + f / 10 % 10);
  out += static_cast<char>('0' + f % 10);
}

/// Escaped as the text format wants; bytes that are not UTF-8 (a peer's
/// record, a mount point) become U+FFFD, since Prometheus refuses the whole
/// scrape over one label value that is not valid UTF-8.
void append_escaped(std::string& out, string_view s, bool quote) {
  std::string fixed;
  if (!valid_utf8(s)) s = fixed = to_valid_utf8(s);
  for (const char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (quote && c == '"')
      out += "\\\"";
    else
      out += c;
  }
}

/// Which devices, interfaces and mount points of a row are rendered: the
/// first of each name as rendered, i.e. made valid UTF-8 (a record from
/// another node is not trusted to have no duplicates, two names differing
/// only in bytes that are not UTF-8 render alike, and a duplicate series
/// would make the scrape fail).
struct RowKeep {
  std::vector<bool> disks, nets, filesystems;
  explicit RowKeep(const NodeStats& s) {
    std::unordered_set<std::string> seen;
    const auto mark = [&seen](std::vector<bool>& keep, const auto& items, auto key) {
      seen.clear();
      keep.reserve(items.size());
      for (const auto& i : items) {
        const string_view k = key(i);
        keep.push_back(seen.insert(valid_utf8(k) ? std::string(k) : to_valid_utf8(k)).second);
      }
    };
    mark(disks, s.disks, [](const DiskStats& d) { return string_view(d.device); });
    mark(nets, s.nets, [](const NetStats& n) { return string_view(n.device); });
    mark(filesystems, s.filesystems, [](const FilesystemStats& f) { return string_view(f.mountpoint); });
  }
};

class Writer {
 public:
  /// Starts a family: its name, HELP, TYPE and the names of its own labels
  /// (after node). Throws std::invalid_argument for an invalid name.
  void begin(string_view name, string_view help, string_view type,
             std::initializer_list<string_view> labels = {}) {
    if (!valid_metric_name(name))
      throw std::invalid_argument("'" + std::string(name) + "' is not a valid Prometheus metric name");
    for (const auto l : labels)
      if (!valid_label_name(l))
        throw std::invalid_argument("'" + std::string(l) + "' is not a valid Prometheus label name");
    name_ = name;
    labels_.assign(labels.begin(), labels.end());
    body_.clear();
    head_.clear();
    head_ += "# HELP ";
    head_ += name;
    head_ += ' ';
    append_escaped(head_, help, false);
    head_ += "\n# TYPE ";
    head_ += name;
    head_ += ' ';
    head_ += type;
    head_ += '\n';
  }
  /// One sample of the family: `values` are its own labels' values, in order.
  std::string& sample(std::uint16_t node, std::initializer_list<string_view> values = {}) {
    body_ += name_;
    body_ += "{node=\"";
    append_u64(body_, node);
    body_ += '"';
    auto l = labels_.begin();
    for (const auto v : values) {
      body_ += ',';
      body_ += *l++;
      body_ += "=\"";
      append_escaped(body_, v, true);
      body_ += '"';
    }
    body_ += "} ";
    return body_;
  }
  void u64(std::uint16_t node, std::uint64_t v, std::initializer_list<string_view> values = {}) {
    append_u64(sample(node, values), v);
    body_ += '\n';
  }
  void milli(std::uint16_t node, std::uint64_t v, std::initializer_list<string_view> values = {}) {
    append_milli(sample(node, values), v);
    body_ += '\n';
  }
  void end() {
    if (body_.empty()) return;
    out_ += head_;
    out_ += body_;
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_, head_, body_;
  string_view name_;
  std::vector<string_view> labels_;
};

}  // namespace

std::string node_exposition(std::span<const NodeView> rows) {
  std::vector<RowKeep> keep;
  keep.reserve(rows.size());
  for (const auto& r : rows) keep.emplace_back(r.stats);
  Writer w;

  // A gauge or counter with one value per node.
  const auto per_node = [&](string_view name, string_view help, string_view type, auto value, bool milli) {
    w.begin(name, help, type);
    for (const auto& r : rows) {
      if (milli)
        w.milli(r.node, value(r));
      else
        w.u64(r.node, value(r));
    }
    w.end();
  };
#define LOCABUS_NODE_GAUGE_(name, help, expr) \
  per_node(                                   \
      name, help, "gauge", [](const NodeView& r) -> std::uint64_t { return expr; }, false)

  w.begin("node_cpu_seconds_total", "Seconds the CPUs spent in each mode (the sum over all CPUs).", "counter",
          {"mode"});
  for (const auto& r : rows)
    for (std::size_t m = 0; m < kCpuModes; ++m) w.milli(r.node, r.stats.cpu_ms[m], {kCpuModeNames[m]});
  w.end();

  per_node(
      "node_load1", "1m load average.", "gauge", [](const NodeView& r) { return r.stats.load1_milli; }, true);
  per_node(
      "node_load5", "5m load average.", "gauge", [](const NodeView& r) { return r.stats.load5_milli; }, true);
  per_node(
      "node_load15", "15m load average.", "gauge", [](const NodeView& r) { return r.stats.load15_milli; },
      true);

  // node_exporter's meminfo names are /proc/meminfo's (node_memory_MemTotal_bytes);
  // promtool's linter rejects their camelCase, so they are served in
  // snake_case (docs/METRICS.md maps them).
  LOCABUS_NODE_GAUGE_("node_memory_mem_total_bytes",
                      "/proc/meminfo MemTotal, bytes (node_exporter: node_memory_MemTotal_bytes).",
                      r.stats.mem_total);
  LOCABUS_NODE_GAUGE_("node_memory_mem_free_bytes",
                      "/proc/meminfo MemFree, bytes (node_exporter: node_memory_MemFree_bytes).",
                      r.stats.mem_free);
  LOCABUS_NODE_GAUGE_("node_memory_mem_available_bytes",
                      "/proc/meminfo MemAvailable, bytes (node_exporter: node_memory_MemAvailable_bytes).",
                      r.stats.mem_available);
  LOCABUS_NODE_GAUGE_("node_memory_buffers_bytes",
                      "/proc/meminfo Buffers, bytes (node_exporter: node_memory_Buffers_bytes).",
                      r.stats.mem_buffers);
  LOCABUS_NODE_GAUGE_("node_memory_cached_bytes",
                      "/proc/meminfo Cached, bytes (node_exporter: node_memory_Cached_bytes).",
                      r.stats.mem_cached);
  LOCABUS_NODE_GAUGE_("node_memory_swap_total_bytes",
                      "/proc/meminfo SwapTotal, bytes (node_exporter: node_memory_SwapTotal_bytes).",
                      r.stats.swap_total);
  LOCABUS_NODE_GAUGE_("node_memory_swap_free_bytes",
                      "/proc/meminfo SwapFree, bytes (node_exporter: node_memory_SwapFree_bytes).",
                      r.stats.swap_free);

  const auto disk = [&](string_view name, string_view help, auto value, bool milli) {
    w.begin(name, help, "counter", {"device"});
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      for (std::size_t d = 0; d < r.stats.disks.size(); ++d) {
        if (!keep[i].disks[d]) continue;
        const auto& s = r.stats.disks[d];
        if (milli)
          w.milli(r.node, value(s), {s.device});
        else
          w.u64(r.node, value(s), {s.device});
      }
    }
    w.end();
  };
  disk(
      "node_disk_reads_completed_total", "The total number of reads completed successfully.",
      [](const DiskStats& d) { return d.reads_completed; }, false);
  disk(
      "node_disk_writes_completed_total", "The total number of writes completed successfully.",
      [](const DiskStats& d) { return d.writes_completed; }, false);
  disk(
      "node_disk_read_bytes_total", "The total number of bytes read successfully.",
      [](const DiskStats& d) { return d.read_bytes; }, false);
  disk(
      "node_disk_written_bytes_total", "The total number of bytes written successfully.",
      [](const DiskStats& d) { return d.written_bytes; }, false);
  disk(
      "node_disk_io_time_seconds_total", "Total seconds spent doing I/Os.",
      [](const DiskStats& d) { return d.io_time_ms; }, true);

  const auto fs = [&](string_view name, string_view help, auto value) {
    w.begin(name, help, "gauge", {"device", "fstype", "mountpoint"});
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      for (std::size_t f = 0; f < r.stats.filesystems.size(); ++f) {
        if (!keep[i].filesystems[f]) continue;
        const auto& s = r.stats.filesystems[f];
        w.u64(r.node, value(s), {s.device, s.fstype, s.mountpoint});
      }
    }
    w.end();
  };
  fs("node_filesystem_size_bytes", "Filesystem size in bytes.",
     [](const FilesystemStats& f) { return f.size_bytes; });
  fs("node_filesystem_free_bytes", "Filesystem free space in bytes.",
     [](const FilesystemStats& f) { return f.free_bytes; });
  fs("node_filesystem_avail_bytes", "Filesystem space available to non-root users in bytes.",
     [](const FilesystemStats& f) { return f.avail_bytes; });
  fs("node_filesystem_files", "Filesystem total file nodes.",
     [](const FilesystemStats& f) { return f.files; });
  fs("node_filesystem_files_free", "Filesystem total free file nodes.",
     [](const FilesystemStats& f) { return f.files_free; });

  const auto net = [&](string_view name, string_view help, auto value) {
    w.begin(name, help, "counter", {"device"});
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      for (std::size_t n = 0; n < r.stats.nets.size(); ++n) {
        if (!keep[i].nets[n]) continue;
        const auto& s = r.stats.nets[n];
        w.u64(r.node, value(s), {s.device});
      }
    }
    w.end();
  };
  net("node_network_receive_bytes_total", "Network device statistic receive_bytes.",
      [](const NetStats& n) { return n.rx_bytes; });
  net("node_network_transmit_bytes_total", "Network device statistic transmit_bytes.",
      [](const NetStats& n) { return n.tx_bytes; });
  net("node_network_receive_packets_total", "Network device statistic receive_packets.",
      [](const NetStats& n) { return n.rx_packets; });
  net("node_network_transmit_packets_total", "Network device statistic transmit_packets.",
      [](const NetStats& n) { return n.tx_packets; });
  net("node_network_receive_errs_total", "Network device statistic receive_errs.",
      [](const NetStats& n) { return n.rx_errs; });
  net("node_network_transmit_errs_total", "Network device statistic transmit_errs.",
      [](const NetStats& n) { return n.tx_errs; });
  net("node_network_receive_drop_total", "Network device statistic receive_drop.",
      [](const NetStats& n) { return n.rx_drop; });
  net("node_network_transmit_drop_total", "Network device statistic transmit_drop.",
      [](const NetStats& n) { return n.tx_drop; });

  LOCABUS_NODE_GAUGE_("node_procs_running", "Number of processes in runnable state.", r.stats.procs_running);
  LOCABUS_NODE_GAUGE_("node_procs_blocked", "Number of processes blocked waiting for I/O to complete.",
                      r.stats.procs_blocked);
  LOCABUS_NODE_GAUGE_("node_boot_time_seconds", "Node boot time, in unixtime.", r.stats.boot_time_s);

  w.begin("locabus_node_info", "The node's hostname, as its own sample says (always 1).", "gauge",
          {"hostname"});
  for (const auto& r : rows) w.u64(r.node, 1, {r.stats.hostname});
  w.end();
  LOCABUS_NODE_GAUGE_("locabus_node_cpus", "Online CPUs of the node.", r.stats.cpus);
  LOCABUS_NODE_GAUGE_("locabus_node_processes", "Processes (not threads) that exist on the node.",
                      r.stats.processes);
  LOCABUS_NODE_GAUGE_("locabus_node_threads", "Scheduling entities (threads) that exist on the node.",
                      r.stats.threads);
  LOCABUS_NODE_GAUGE_("locabus_node_up",
                      "1 if the node's monitor records arrive (alive), 0 if it went silent or left (stale).",
                      r.state == NodeState::alive ? 1 : 0);
  per_node(
      "locabus_node_age_seconds",
      "Seconds since the node's last complete record arrived (this node: its last sample).", "gauge",
      [](const NodeView& r) -> std::uint64_t {
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(r.age).count();
        return ms > 0 ? static_cast<std::uint64_t>(ms) : 0;
      },
      true);
  // From the permille shares: exact, and 0 before the node's second sample.
  per_node(
      "locabus_node_cpu_busy_ratio",
      "Share of CPU time not idle and not waiting for I/O over the node's last sampling interval (0 to 1).",
      "gauge",
      [](const NodeView& r) -> std::uint64_t {
        std::uint64_t sum = 0;
        for (const auto p : r.stats.cpu_permille) sum += p;
        if (sum == 0) return 0;
        const std::uint64_t idle = r.stats.cpu_permille[static_cast<std::size_t>(CpuMode::idle)] +
                                   r.stats.cpu_permille[static_cast<std::size_t>(CpuMode::iowait)];
        return idle >= sum ? 0 : (sum - idle) * 1000 / sum;
      },
      true);
#undef LOCABUS_NODE_GAUGE_

  std::string name;
  for (const auto& f : LocabusCounters::counter_fields()) {
    name = "locabus_node_";
    name += f.field.name;
    name += "_total";
    w.begin(name, f.field.description, "counter");
    for (const auto& r : rows) w.u64(r.node, f.value(r.stats.locabus));
    w.end();
  }
  for (const auto& f : LocabusGauges::counter_fields()) {
    name = "locabus_node_";
    name += f.field.name;
    w.begin(name, f.field.description, "gauge");
    for (const auto& r : rows) w.u64(r.node, f.value(r.stats.locabus_gauges));
    w.end();
  }
  return w.take();
}

}  // namespace locabus::monitor
