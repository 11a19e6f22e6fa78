// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "monitor/table.hpp"

#include <algorithm>
#include <set>
#include <string_view>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "monitor/text.hpp"

namespace locabus::monitor {

namespace {

using u128 = unsigned __int128;

std::uint64_t absdiff(std::uint64_t a, std::uint64_t b) noexcept { return a > b ? a - b : b - a; }
u128 absdiff(u128 a, u128 b) noexcept { return a > b ? a - b : b - a; }

// A counter's increase; one that went backwards (a reset) gives 0.
std::uint64_t increase(std::uint64_t now, std::uint64_t before) noexcept {
  return now >= before ? now - before : 0;
}

/// CPU busy share in thousandths (what cpu_busy_percent() is, without floating point).
std::int64_t busy_permille(const NodeStats& s) noexcept {
  std::int64_t total = 0;
  for (auto p : s.cpu_permille) total += p;
  if (total == 0) return 0;
  const std::int64_t idle = s.cpu_permille[static_cast<std::size_t>(CpuMode::idle)] +
                            s.cpu_permille[static_cast<std::size_t>(CpuMode::iowait)];
  return std::clamp<std::int64_t>(1000 - idle, 0, 1000);
}

std::uint64_t cpus_of(const NodeStats& s) noexcept { return std::max<std::uint32_t>(s.cpus, 1); }

/// The least-loaded rule's load bucket: floor(load1 per CPU / 0.05), exact.
std::uint64_t load_bucket(const NodeStats& s) noexcept { return s.load1_milli / (50 * cpus_of(s)); }

/// The first item of each name (a record is not trusted to name each
/// device once; the exposition too renders the first of each name).
template <class T>
std::unordered_map<std::string_view, const T*> first_by_device(const std::vector<T>& v) {
  std::unordered_map<std::string_view, const T*> out;
  out.reserve(v.size());
  for (const auto& x : v) out.emplace(x.device, &x);
  return out;
}

Rates rates_between(const NodeStats& before, const NodeStats& now) {
  Rates r;
  if (now.sampled_at_ms <= before.sampled_at_ms) return r;
  const double seconds = static_cast<double>(now.sampled_at_ms - before.sampled_at_ms) / 1000.0;
  // Sums of u64 increases over up to a record's ~8,000 devices: 128 bits do not wrap.
  u128 rx = 0, tx = 0, rxp = 0, txp = 0, rd = 0, wr = 0;
  // Lookups by name, not a scan of the other record per device: a peer's
  // record of thousands of devices costs linear time.
  {
    const auto was = first_by_device(before.nets);
    const auto is = first_by_device(now.nets);
    for (const auto& [name, n] : is) {
      if (name == "lo") continue;
      const auto it = was.find(name);
      if (it == was.end()) continue;  // new interface: no baseline yet
      rx += increase(n->rx_bytes, it->second->rx_bytes);
      tx += increase(n->tx_bytes, it->second->tx_bytes);
      rxp += increase(n->rx_packets, it->second->rx_packets);
      txp += increase(n->tx_packets, it->second->tx_packets);
    }
  }
  {
    const auto was = first_by_device(before.disks);
    const auto is = first_by_device(now.disks);
    for (const auto& [name, d] : is) {
      const auto it = was.find(name);
      if (it == was.end()) continue;
      rd += increase(d->read_bytes, it->second->read_bytes);
      wr += increase(d->written_bytes, it->second->written_bytes);
    }
  }
  r.net_rx_bytes_per_s = static_cast<double>(rx) / seconds;
  r.net_tx_bytes_per_s = static_cast<double>(tx) / seconds;
  r.net_rx_packets_per_s = static_cast<double>(rxp) / seconds;
  r.net_tx_packets_per_s = static_cast<double>(txp) / seconds;
  r.disk_read_bytes_per_s = static_cast<double>(rd) / seconds;
  r.disk_write_bytes_per_s = static_cast<double>(wr) / seconds;
  return r;
}

/// Every string of a sample as valid UTF-8 (what is not becomes U+FFFD).
void make_valid_utf8(NodeStats& s) {
  const auto fix = [](std::string& str) {
    if (!valid_utf8(str)) str = to_valid_utf8(str);
  };
  fix(s.hostname);
  for (auto& d : s.disks) fix(d.device);
  for (auto& f : s.filesystems) {
    fix(f.mountpoint);
    fix(f.device);
    fix(f.fstype);
  }
  for (auto& n : s.nets) fix(n.device);
}

// Heap bytes a string holds (0 while it is in its small-string buffer).
std::size_t heap_bytes(const std::string& s) noexcept {
  const char* p = s.data();
  const char* self = reinterpret_cast<const char*>(&s);
  if (p >= self && p < self + sizeof(s)) return 0;
  return s.capacity() + 1;
}

std::size_t heap_bytes(const NodeStats& s) noexcept {
  std::size_t n = heap_bytes(s.hostname);
  n += s.disks.capacity() * sizeof(DiskStats);
  for (const auto& d : s.disks) n += heap_bytes(d.device);
  n += s.filesystems.capacity() * sizeof(FilesystemStats);
  for (const auto& f : s.filesystems)
    n += heap_bytes(f.mountpoint) + heap_bytes(f.device) + heap_bytes(f.fstype);
  n += s.nets.capacity() * sizeof(NetStats);
  for (const auto& d : s.nets) n += heap_bytes(d.device);
  return n;
}

// A std::map node: the value and the tree links (three pointers and a colour).
template <class Value>
constexpr std::size_t kMapNodeBytes = sizeof(Value) + 4 * sizeof(void*);

template <class T, class Key>
std::set<std::string_view> names(const std::vector<T>& v, Key key) {
  std::set<std::string_view> out;
  for (const auto& x : v) out.insert(key(x));
  return out;
}

}  // namespace

const char* to_string(NodeState s) noexcept {
  switch (s) {
    case NodeState::alive: return "alive";
    case NodeState::stale: return "stale";
  }
  return "unknown";
}

const char* to_string(Applied a) noexcept {
  switch (a) {
    case Applied::complete: return "complete";
    case Applied::partial: return "partial";
    case Applied::old: return "old";
    case Applied::malformed: return "malformed";
    case Applied::full: return "full";
  }
  return "unknown";
}

namespace {

/// The least-loaded rule's order: whether alive row `v` beats `best`.
bool less_loaded(const NodeView& v, const NodeView& best) {
  const auto b = load_bucket(v.stats), bb = load_bucket(best.stats);
  if (b != bb) return b < bb;
  if (v.stats.mem_available != best.stats.mem_available)
    return v.stats.mem_available > best.stats.mem_available;
  return v.node < best.node;
}

}  // namespace

std::optional<std::uint16_t> least_loaded(std::span<const NodeView> rows) {
  const NodeView* best = nullptr;
  for (const auto& v : rows)
    if (v.state == NodeState::alive && (!best || less_loaded(v, *best))) best = &v;
  if (!best) return std::nullopt;
  return best->node;
}

bool significant_change(const NodeStats& last_sent, const NodeStats& now) {
  // CPU busy by >= 10 points.
  if (absdiff(static_cast<std::uint64_t>(busy_permille(now)),
              static_cast<std::uint64_t>(busy_permille(last_sent))) >= 100)
    return true;
  // load1 per CPU by >= 0.25: |a/ca - b/cb| >= 250 (thousandths), cross-multiplied.
  {
    const u128 a = static_cast<u128>(now.load1_milli) * cpus_of(last_sent);
    const u128 b = static_cast<u128>(last_sent.load1_milli) * cpus_of(now);
    if (absdiff(a, b) * 4 >= static_cast<u128>(1000) * cpus_of(now) * cpus_of(last_sent)) return true;
  }
  // Available memory by >= 5 % of the total. The larger of the two totals:
  // a total that went to 0 (meminfo unreadable) is a change, not a skip.
  if (const auto mem_total = std::max(now.mem_total, last_sent.mem_total);
      mem_total > 0 && static_cast<u128>(absdiff(now.mem_available, last_sent.mem_available)) * 20 >=
                           static_cast<u128>(mem_total))
    return true;
  // Used swap by >= 5 % of the swap (the larger total again: swapoff).
  if (const auto swap_total = std::max(now.swap_total, last_sent.swap_total); swap_total > 0) {
    const auto used_now = now.swap_total - std::min(now.swap_free, now.swap_total);
    const auto used_last = last_sent.swap_total - std::min(last_sent.swap_free, last_sent.swap_total);
    if (static_cast<u128>(absdiff(used_now, used_last)) * 20 >= static_cast<u128>(swap_total)) return true;
  }
  // A disk, filesystem or interface came or went.
  auto disk_name = [](const DiskStats& d) -> std::string_view { return d.device; };
  auto fs_name = [](const FilesystemStats& f) -> std::string_view { return f.mountpoint; };
  auto net_name = [](const NetStats& n) -> std::string_view { return n.device; };
  if (names(now.disks, disk_name) != names(last_sent.disks, disk_name) ||
      names(now.filesystems, fs_name) != names(last_sent.filesystems, fs_name) ||
      names(now.nets, net_name) != names(last_sent.nets, net_name))
    return true;
  // A filesystem's use ((size - free) / size) by >= 5 points: |ua/sa - ub/sb| >= 1/20, cross-multiplied.
  std::unordered_map<std::string_view, const FilesystemStats*> sent;
  sent.reserve(last_sent.filesystems.size());
  for (const auto& f : last_sent.filesystems) sent.emplace(f.mountpoint, &f);
  for (const auto& f : now.filesystems) {
    const auto found = sent.find(f.mountpoint);
    if (found == sent.end()) continue;
    const FilesystemStats* it = found->second;
    const u128 sa = f.size_bytes, sb = it->size_bytes;
    const u128 ua = f.size_bytes - std::min(f.free_bytes, f.size_bytes);
    const u128 ub = it->size_bytes - std::min(it->free_bytes, it->size_bytes);
    if (sa == 0 && sb == 0) continue;
    if (sa == 0 || sb == 0) return true;  // it became empty or got a size: 100 points
    if (absdiff(ua * sb, ub * sa) * 20 >= sa * sb) return true;
  }
  return false;
}

Table::Table(std::uint16_t self, TableLimits limits) : self_(self), limits_(limits) {}

void Table::commit(Row& r, std::uint16_t node, const RecordHeader& h, Nanos now, NodeStats stats) {
  stats.sampled_at_ms = h.sampled_at_ms;
  if (r.view.epoch != 0 && r.view.epoch == h.epoch) {
    r.view.rates = rates_between(r.view.stats, stats);
    r.previous = std::move(r.view.stats);
    r.has_previous = true;
  } else {  // a first record, or a restarted node: nothing to take rates against
    r.view.rates = {};
    r.previous = {};
    r.has_previous = false;
  }
  r.view.node = node;
  r.view.self = node == self_;
  r.view.state = NodeState::alive;
  r.view.epoch = h.epoch;
  r.view.seq = h.seq;
  r.view.stats = std::move(stats);
  r.heard = now;
  r.stale_since = {};
}

void Table::set_local(const NodeStats& s, std::uint32_t epoch, std::uint32_t seq, Nanos now) {
  RecordHeader h;
  h.epoch = epoch;
  h.seq = seq;
  h.sampled_at_ms = s.sampled_at_ms;
  NodeStats copy = s;
  make_valid_utf8(copy);  // the sampler's are; a caller's own (the simulation's hook) may not be
  commit(rows_[self_], self_, h, now, std::move(copy));
}

Applied Table::apply(std::uint16_t node, std::span<const std::byte> payload, Nanos now, std::string* error) {
  auto part = parse_part(payload, error);
  if (!part) return Applied::malformed;
  const RecordHeader& h = part->header;
  if (node == self_) {
    if (error)
      *error =
          fmt::format("a LocaMonitor part that says it is from this node ({}): its row is set locally", node);
    return Applied::old;
  }
  auto it = rows_.find(node);
  if (it == rows_.end()) {
    if (rows_.size() >= limits_.max_nodes) {
      if (error)
        *error = fmt::format("the LocaMonitor table holds its limit of {} nodes; node {} is left out",
                             limits_.max_nodes, node);
      return Applied::full;
    }
    it = rows_.emplace(node, Row{}).first;
    it->second.view.node = node;
    it->second.heard = now;  // a row without a complete record yet goes after remove_after
  }
  Row& r = it->second;
  if (r.view.epoch != 0 && h.epoch == r.view.epoch && h.seq <= r.view.seq) {
    if (error)
      *error = fmt::format("LocaMonitor part of seq {} from node {}: it already has seq {} of that epoch",
                           h.seq, node, r.view.seq);
    return Applied::old;
  }
  const bool pending = r.pending_parts != 0;
  if (!pending || h.epoch != r.pending_epoch || h.seq > r.pending_seq) {
    // A newer record (or a restarted node's): the older pending one is dropped.
    std::vector<std::vector<std::byte>>(h.parts).swap(r.pending);
    r.pending_epoch = h.epoch;
    r.pending_seq = h.seq;
    r.pending_parts = h.parts;
  } else if (h.seq < r.pending_seq) {
    if (error)
      *error = fmt::format("LocaMonitor part of seq {} from node {}: seq {} is being assembled", h.seq, node,
                           r.pending_seq);
    return Applied::old;
  } else if (h.parts != r.pending_parts) {
    if (error)
      *error = fmt::format(
          "LocaMonitor part {} of seq {} from node {} says {} parts, its record's other parts say {}", h.part,
          h.seq, node, h.parts, r.pending_parts);
    return Applied::malformed;
  }
  auto& slot = r.pending[h.part];
  if (!slot.empty()) {
    if (error)
      *error = fmt::format("LocaMonitor part {} of seq {} from node {} arrived twice", h.part, h.seq, node);
    return Applied::old;
  }
  slot.assign(payload.begin(), payload.end());
  if (r.view.epoch == 0) r.heard = now;
  if (std::any_of(r.pending.begin(), r.pending.end(), [](const auto& p) { return p.empty(); }))
    return Applied::partial;

  NodeStats stats;
  std::string why;
  bool ok = true;
  for (const auto& p : r.pending) {
    auto parsed = parse_part(p);  // stored parts parsed once already
    if (!decode_sections(parsed->sections, stats, &why)) {
      ok = false;
      break;
    }
  }
  std::vector<std::vector<std::byte>>().swap(r.pending);
  r.pending_parts = 0;
  r.pending_epoch = r.pending_seq = 0;
  if (!ok) {
    if (error) *error = fmt::format("LocaMonitor record seq {} from node {}: {}", h.seq, node, why);
    return Applied::malformed;
  }
  commit(r, node, h, now, std::move(stats));
  return Applied::complete;
}

void Table::mark_stale(std::uint16_t node, Nanos now) {
  auto it = rows_.find(node);
  if (it == rows_.end() || node == self_ || it->second.view.epoch == 0) return;
  Row& r = it->second;
  if (r.view.state == NodeState::alive) {
    r.view.state = NodeState::stale;
    r.stale_since = now;
  }
}

std::vector<std::uint16_t> Table::expire(Nanos now) {
  std::vector<std::uint16_t> changed;
  for (auto it = rows_.begin(); it != rows_.end();) {
    Row& r = it->second;
    if (it->first == self_) {
      ++it;
      continue;
    }
    const Nanos silent = now - r.heard;
    if (silent >= limits_.remove_after) {
      if (r.view.epoch != 0) changed.push_back(it->first);  // a row never complete was never shown
      it = rows_.erase(it);
      continue;
    }
    if (r.view.epoch != 0 && r.view.state == NodeState::alive && silent >= limits_.stale_after) {
      r.view.state = NodeState::stale;
      r.stale_since = now;
      changed.push_back(it->first);
    }
    ++it;
  }
  return changed;
}

std::optional<Nanos> Table::next_expiry() const {
  std::optional<Nanos> next;
  auto consider = [&](Nanos t) {
    if (!next || t < *next) next = t;
  };
  for (const auto& [node, r] : rows_) {
    if (node == self_) continue;
    consider(r.heard + limits_.remove_after);
    if (r.view.epoch != 0 && r.view.state == NodeState::alive) consider(r.heard + limits_.stale_after);
  }
  return next;
}

std::vector<NodeView> Table::rows(Nanos now) const {
  std::vector<NodeView> out;
  out.reserve(rows_.size());
  for (const auto& [node, r] : rows_) {
    if (r.view.epoch == 0) continue;
    out.push_back(r.view);
    out.back().age = std::max(Nanos{0}, now - r.heard);
  }
  return out;
}

std::optional<NodeView> Table::row(std::uint16_t node, Nanos now) const {
  auto it = rows_.find(node);
  if (it == rows_.end() || it->second.view.epoch == 0) return std::nullopt;
  NodeView v = it->second.view;
  v.age = std::max(Nanos{0}, now - it->second.heard);
  return v;
}

std::optional<std::uint16_t> Table::least_loaded() const {
  // The rows in place, not copied (the age does not enter the rule).
  const NodeView* best = nullptr;
  for (const auto& [node, r] : rows_)
    if (r.view.epoch != 0 && r.view.state == NodeState::alive && (!best || less_loaded(r.view, *best)))
      best = &r.view;
  if (!best) return std::nullopt;
  return best->node;
}

std::size_t Table::count(NodeState state) const noexcept {
  std::size_t n = 0;
  for (const auto& [node, r] : rows_) n += r.view.epoch != 0 && r.view.state == state;
  return n;
}

std::size_t Table::memory_bytes() const {
  std::size_t n = sizeof(*this);
  for (const auto& [node, r] : rows_) {
    n += kMapNodeBytes<std::pair<const std::uint16_t, Row>>;
    n += heap_bytes(r.view.stats) + heap_bytes(r.previous);
    n += r.pending.capacity() * sizeof(std::vector<std::byte>);
    for (const auto& p : r.pending) n += p.capacity();
  }
  return n;
}

nlohmann::json to_json(const NodeView& v) {
  using nlohmann::json;
  // Strings as valid UTF-8 (json::dump throws on anything else): a table's
  // are already, a NodeView made elsewhere may not be.
  const auto text = [](const std::string& str) { return valid_utf8(str) ? str : to_valid_utf8(str); };
  const NodeStats& s = v.stats;
  json cpu_percent = json::object(), cpu_seconds = json::object();
  for (std::size_t i = 0; i < kCpuModes; ++i) {
    const std::string name(kCpuModeNames[i]);
    cpu_percent[name] = s.cpu_permille[i] / 10.0;
    cpu_seconds[name] = static_cast<double>(s.cpu_ms[i]) / 1000.0;
  }
  json disks = json::array(), filesystems = json::array(), nets = json::array();
  for (const auto& d : s.disks)
    disks.push_back({{"device", text(d.device)},
                     {"reads_completed", d.reads_completed},
                     {"writes_completed", d.writes_completed},
                     {"read_bytes", d.read_bytes},
                     {"written_bytes", d.written_bytes},
                     {"io_time_ms", d.io_time_ms}});
  for (const auto& f : s.filesystems)
    filesystems.push_back({{"mountpoint", text(f.mountpoint)},
                           {"device", text(f.device)},
                           {"fstype", text(f.fstype)},
                           {"size_bytes", f.size_bytes},
                           {"free_bytes", f.free_bytes},
                           {"avail_bytes", f.avail_bytes},
                           {"files", f.files},
                           {"files_free", f.files_free}});
  for (const auto& n : s.nets)
    nets.push_back({{"device", text(n.device)},
                    {"rx_bytes", n.rx_bytes},
                    {"tx_bytes", n.tx_bytes},
                    {"rx_packets", n.rx_packets},
                    {"tx_packets", n.tx_packets},
                    {"rx_errs", n.rx_errs},
                    {"tx_errs", n.tx_errs},
                    {"rx_drop", n.rx_drop},
                    {"tx_drop", n.tx_drop}});
  json locabus = json::object();
  for (const auto& f : LocabusCounters::kFields) locabus[std::string(f.field.name)] = s.locabus.*f.member;
  for (const auto& f : LocabusGauges::kFields)
    locabus[std::string(f.field.name)] = s.locabus_gauges.*f.member;
  return json{
      {"node", v.node},
      {"self", v.self},
      {"state", to_string(v.state)},
      {"age_ms", std::chrono::duration_cast<std::chrono::milliseconds>(v.age).count()},
      {"epoch", v.epoch},
      {"seq", v.seq},
      {"sampled_at_ms", s.sampled_at_ms},
      {"hostname", text(s.hostname)},
      {"cpus", s.cpus},
      {"cpu_busy_percent", s.cpu_busy_percent()},
      {"cpu_percent", std::move(cpu_percent)},
      {"cpu_seconds", std::move(cpu_seconds)},
      {"load", json::array({s.load1_milli / 1000.0, s.load5_milli / 1000.0, s.load15_milli / 1000.0})},
      {"load_per_cpu", s.load_per_cpu()},
      {"memory",
       {{"total", s.mem_total},
        {"free", s.mem_free},
        {"available", s.mem_available},
        {"buffers", s.mem_buffers},
        {"cached", s.mem_cached}}},
      {"swap", {{"total", s.swap_total}, {"free", s.swap_free}}},
      {"processes", s.processes},
      {"threads", s.threads},
      {"procs_running", s.procs_running},
      {"procs_blocked", s.procs_blocked},
      {"boot_time_s", s.boot_time_s},
      {"rates",
       {{"net_rx_bytes_per_s", v.rates.net_rx_bytes_per_s},
        {"net_tx_bytes_per_s", v.rates.net_tx_bytes_per_s},
        {"net_rx_packets_per_s", v.rates.net_rx_packets_per_s},
        {"net_tx_packets_per_s", v.rates.net_tx_packets_per_s},
        {"disk_read_bytes_per_s", v.rates.disk_read_bytes_per_s},
        {"disk_write_bytes_per_s", v.rates.disk_write_bytes_per_s}}},
      {"disks", std::move(disks)},
      {"filesystems", std::move(filesystems)},
      {"nets", std::move(nets)},
      {"locabus", std::move(locabus)},
  };
}

Page page(std::span<const NodeView> rows, std::uint32_t from, std::size_t limit, std::size_t max_bytes,
          bool devices, nlohmann::json& nodes) {
  Page p;
  nodes = nlohmann::json::array();
  p.bytes = 2;  // []
  auto it = std::find_if(rows.begin(), rows.end(), [&](const NodeView& v) { return v.node >= from; });
  for (; it != rows.end(); ++it) {
    nlohmann::json j = to_json(*it);
    std::size_t row_bytes = j.dump().size();
    // A row too large for a page on its own (only a crafted record comes
    // near: the sampler keeps 512 devices of a kind) goes as a summary,
    // flagged, rather than making the whole table unreadable.
    if (!devices || row_bytes > max_bytes) {
      for (const char* key : {"disks", "filesystems", "nets", "cpu_seconds"}) j.erase(key);
      if (devices) j["devices_omitted"] = true;
      row_bytes = j.dump().size();
    }
    const std::size_t bytes = row_bytes + (p.rows == 0 ? 0 : 1);
    if (p.rows > 0 && (p.rows >= limit || p.bytes + bytes > max_bytes)) {
      p.next = it->node;
      break;
    }
    p.bytes += bytes;
    ++p.rows;
    nodes.push_back(std::move(j));
  }
  return p;
}

}  // namespace locabus::monitor
