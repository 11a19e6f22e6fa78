// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon/config.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <limits>
#include <set>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "api/control.hpp"
#include "common/error.hpp"
#include "fastpath/netdev.hpp"

#include <locabus/wire.h>
#include <spdlog/spdlog.h>

namespace locabus::daemon {

std::filesystem::path Config::socket_path() const {
  return api_socket.empty() ? run_dir / api::kSocketName : api_socket;
}

void Config::validate() const {
  if (iface.empty())
    throw Error("locabusd: no interface given", EINVAL, "pass --iface or set iface in the config");
  if (node_id && *node_id == 0xFFFF) throw Error("locabusd: node id 0xFFFF is the broadcast id", EINVAL);
  if (ring_bytes < (64u << 10) || ring_bytes > (256u << 20) || (ring_bytes & (ring_bytes - 1)))
    throw Error(fmt::format("locabusd: ring_bytes {} is invalid", ring_bytes), EINVAL,
                "use a power of two between 64 KiB and 256 MiB");
  if (api_mode & ~0777u) throw Error("locabusd: api_mode has bits beyond 0777", EINVAL);
  if (nak_dedup_us > fastpath::kMaxNakDedupUs)
    throw Error(fmt::format("locabusd: nak_dedup_us {} is invalid", nak_dedup_us), EINVAL,
                fmt::format("use 0 (off) .. {} microseconds", fastpath::kMaxNakDedupUs));
  static constexpr const char* kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  if (std::find(std::begin(kLevels), std::end(kLevels), log_level) == std::end(kLevels))
    throw Error("locabusd: log_level '" + log_level + "' is not a level", EINVAL,
                "use trace, debug, info, warn, error, critical or off");
  engine::EngineConfig e = engine;
  if (node_id) e.node_id = *node_id;
  e.validate();
  monitor.validate();
  if (!metrics_address.empty() && !parse_host_port(metrics_address))
    throw Error("locabusd: metrics_address '" + metrics_address + "' is not HOST:PORT", EINVAL,
                "use e.g. 0.0.0.0:9477, 127.0.0.1:9477 or [::]:9477, or leave it empty for no exporter");
}

void MonitorConfig::validate() const {
  auto range = [](const char* key, std::uint32_t v, std::uint32_t lo, std::uint32_t hi) {
    if (v < lo || v > hi)
      throw Error(fmt::format("locabusd: monitor.{} {} is outside {}..{}", key, v, lo, hi), EINVAL,
                  "see dist/locabusd.toml, [monitor]");
  };
  range("sample_ms", sample_ms, 100, 60'000);
  range("broadcast_ms", broadcast_ms, 100, 600'000);
  range("stale_ms", stale_ms, 300, 3'600'000);
  range("remove_ms", remove_ms, 600, 86'400'000);
  if (!(sample_ms <= broadcast_ms && broadcast_ms < stale_ms && stale_ms < remove_ms))
    throw Error(
        fmt::format("locabusd: monitor times must grow: sample_ms {} <= broadcast_ms {} < stale_ms {} < "
                    "remove_ms {}",
                    sample_ms, broadcast_ms, stale_ms, remove_ms),
        EINVAL, "a node must be heard from more often than it is declared stale");
}

std::optional<std::pair<std::string, std::uint16_t>> parse_host_port(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) return std::nullopt;
  std::string host = text.substr(0, colon);
  const std::string port = text.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return std::nullopt;
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return std::nullopt;  // an IPv6 address needs brackets
  }
  if (port.size() > 5) return std::nullopt;
  unsigned v = 0;
  for (const char c : port) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > 65535) return std::nullopt;
  return std::pair{host, static_cast<std::uint16_t>(v)};
}

std::optional<mode_t> parse_mode(const std::string& text) {
  if (text.empty() || text.size() > 4) return std::nullopt;
  mode_t m = 0;
  for (char c : text) {
    if (c < '0' || c > '7') return std::nullopt;
    m = m * 8 + static_cast<mode_t>(c - '0');
  }
  return m;
}

namespace {

class Reader {
 public:
  Reader(const toml::table& t, std::string prefix, std::string file)
      : t_(t), prefix_(std::move(prefix)), file_(std::move(file)) {
    for (auto&& [k, v] : t_) {
      (void)v;
      unknown_.insert(std::string(k.str()));
    }
  }

  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw Error(fmt::format("config {}: {}{}: {}", file_, prefix_, key, why), EINVAL,
                "see dist/locabusd.toml for every key and its range");
  }

  void str(const char* key, std::string& out) {
    if (auto node = take(key)) {
      if (!node->is_string()) fail(key, "expected a string");
      out = **node->as_string();
    }
  }
  void boolean(const char* key, bool& out) {
    if (auto node = take(key)) {
      if (!node->is_boolean()) fail(key, "expected true or false");
      out = **node->as_boolean();
    }
  }
  template <typename T>
  void integer(const char* key, T& out, std::int64_t lo, std::int64_t hi) {
    if (auto node = take(key)) {
      if (!node->is_integer()) fail(key, "expected an integer");
      const std::int64_t v = **node->as_integer();
      if (v < lo || v > hi) fail(key, fmt::format("{} is outside {}..{}", v, lo, hi));
      out = static_cast<T>(v);
    }
  }
  void millis(const char* key, engine::Nanos& out) {
    std::int64_t ms = -1;
    integer(key, ms, 1, 24 * 3600 * 1000);
    if (ms > 0) out = std::chrono::milliseconds(ms);
  }
  const toml::node* raw(const char* key) { return take(key); }
  const toml::table* table(const char* key) {
    if (auto node = take(key)) {
      if (!node->is_table()) fail(key, "expected a table [" + std::string(key) + "]");
      return node->as_table();
    }
    return nullptr;
  }
  void finish() const {
    if (!unknown_.empty()) fail(*unknown_.begin(), "unknown key");
  }

 private:
  const toml::node* take(const char* key) {
    unknown_.erase(key);
    return t_.get(key);
  }
  const toml::table& t_;
  std::string prefix_;
  std::string file_;
  std::set<std::string> unknown_;
};

}  // namespace

void load_toml(const std::filesystem::path& file, Config& cfg) {
  toml::table root;
  try {
    root = toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    throw Error(
        fmt::format("config {}:{}:{}: {}", file.string(), src.begin.line, src.begin.column, e.description()),
        EINVAL, "fix the TOML syntax");
  }
  Reader r(root, "", file.string());
  r.str("iface", cfg.iface);
  if (const toml::node* n = r.raw("node_id")) {
    std::optional<std::uint16_t> id;
    if (n->is_integer()) {
      const std::int64_t v = **n->as_integer();
      if (v >= 0 && v < 0xFFFF) id = static_cast<std::uint16_t>(v);
    } else if (n->is_string()) {
      id = net::parse_node_id(**n->as_string());
    }
    if (!id) r.fail("node_id", "expected a node id 0..65534 (an integer, or a string like \"0x201\")");
    cfg.node_id = id;
  }
  std::string text;
  r.str("datapath", text);
  if (!text.empty()) {
    auto d = transport::parse_datapath(text);
    if (!d) r.fail("datapath", "'" + text + "' is not auto, xdp or packet");
    cfg.datapath = *d;
  }
  r.boolean("busy_poll", cfg.busy_poll);
  r.integer("idle_spin_us", cfg.idle_spin_us, 0u, Config::kMaxIdleSpinUs);
  std::string s;
  r.str("run_dir", s);
  if (!s.empty()) cfg.run_dir = s;
  s.clear();
  r.str("api_socket", s);
  if (!s.empty()) cfg.api_socket = s;
  r.str("api_group", cfg.api_group);
  s.clear();
  r.str("api_mode", s);
  if (!s.empty()) {
    auto m = parse_mode(s);
    if (!m) r.fail("api_mode", "'" + s + "' is not an octal mode like \"0660\"");
    cfg.api_mode = *m;
  }
  r.integer("ring_bytes", cfg.ring_bytes, 64 << 10, 256 << 20);
  r.integer("endpoint_window", cfg.endpoint_window, LOCABUS_FLOW_INITIAL_WINDOW, 1 << 20);
  // Before endpoint flow control a client that stopped reading was
  // disconnected after this long; it now harms nobody and stays.
  engine::Nanos ignored{};
  r.millis("client_stall_timeout_ms", ignored);
  if (ignored.count() != 0)
    spdlog::warn(
        "{}: client_stall_timeout_ms is no longer used (a slow reader holds up only its own traffic); "
        "remove it",
        file.string());
  r.str("log_level", cfg.log_level);
  r.str("metrics_address", cfg.metrics_address);

  if (const toml::table* x = r.table("xdp")) {
    Reader xr(*x, "xdp.", file.string());
    std::string mode;
    xr.str("attach_mode", mode);
    if (!mode.empty()) {
      auto m = fastpath::parse_attach_mode(mode);
      if (!m) xr.fail("attach_mode", "'" + mode + "' is not auto, native or generic");
      cfg.attach_mode = *m;
    }
    xr.integer("max_peers", cfg.max_peers, 1, 65535);
    xr.integer("nak_dedup_us", cfg.nak_dedup_us, 0, fastpath::kMaxNakDedupUs);
    xr.finish();
  }
  if (const toml::table* t = r.table("engine")) {
    Reader er(*t, "engine.", file.string());
    auto& e = cfg.engine;
    er.integer("window", e.window, 1, engine::kMaxWindow);
    er.integer("send_buffer", e.send_buffer, 1, 65535);
    er.integer("receive_buffer", e.receive_buffer, 1, 65535);
    er.millis("ack_delay_ms", e.ack_delay);
    er.integer("ack_every", e.ack_every, 1, 65535);
    er.millis("rto_initial_ms", e.rto_initial);
    er.millis("rto_min_ms", e.rto_min);
    er.millis("rto_max_ms", e.rto_max);
    er.integer("max_retransmits", e.max_retransmits, 1, 255);
    er.millis("nak_holdoff_ms", e.nak_holdoff);
    er.millis("tlp_min_ms", e.tlp_min);
    er.integer("reorder_memory", e.reorder_memory, 1484, std::int64_t{1} << 31);
    er.integer("cc_initial_window", e.cc_initial_window, 1, 32767);
    er.integer("cc_min_window", e.cc_min_window, 1, 32767);
    er.integer("cc_loss_run", e.cc_loss_run, 2, 32767);
    er.integer("cc_beta", e.cc_beta, 512, 1023);
    er.millis("discover_interval_ms", e.discover_interval);
    er.millis("discover_duration_ms", e.discover_duration);
    er.millis("heartbeat_interval_ms", e.heartbeat_interval);
    er.millis("suspect_after_ms", e.suspect_after);
    er.millis("dead_after_ms", e.dead_after);
    er.millis("probe_interval_ms", e.probe_interval);
    er.integer("rx_batch", e.rx_batch, 1, 1024);
    er.integer("tx_batch", e.tx_batch, 1, 1024);
    er.finish();
  }
  if (const toml::table* t = r.table("monitor")) {
    Reader mr(*t, "monitor.", file.string());
    auto& m = cfg.monitor;
    mr.boolean("enabled", m.enabled);
    mr.integer("sample_ms", m.sample_ms, 100, 60'000);
    mr.integer("broadcast_ms", m.broadcast_ms, 100, 600'000);
    mr.integer("stale_ms", m.stale_ms, 300, 3'600'000);
    mr.integer("remove_ms", m.remove_ms, 600, 86'400'000);
    mr.boolean("files", m.files);
    mr.finish();
  }
  r.finish();
}

}  // namespace locabus::daemon
