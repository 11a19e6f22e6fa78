// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabusd's settings: a TOML file (dist/locabusd.toml documents every key)
// overlaid by command-line flags.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>

#include "engine/config.hpp"
#include "fastpath/fastpath.hpp"
#include "transport/datapath.hpp"

namespace locabus::daemon {

/// LocaMonitor (docs/MONITOR.md): sampling, spreading and forgetting.
struct MonitorConfig {
  bool enabled = true;
  std::uint32_t sample_ms = 1000;     // how often the node samples itself
  std::uint32_t broadcast_ms = 5000;  // longest time between two broadcasts of its record
  std::uint32_t stale_ms = 15000;     // a node silent this long is stale
  std::uint32_t remove_ms = 60000;    // a node silent this long leaves the table
  bool files = true;                  // write <run_dir>/monitor/<node> files
  /// Throws Error naming the bad setting (ranges, and sample <= broadcast < stale < remove).
  void validate() const;
};

struct Config {
  std::string iface;
  std::optional<std::uint16_t> node_id;  // default: low 16 bits of iface's IPv4 address
  transport::Datapath datapath = transport::Datapath::automatic;
  fastpath::AttachMode attach_mode = fastpath::AttachMode::automatic;
  bool busy_poll = false;  // spin instead of sleeping: lowest latency, one core
  /// After a duty cycle that did work, keep polling (no sleep) this many
  /// microseconds before sleeping: an answer that comes back within it costs
  /// no wakeup. An idle daemon does no work, so it does not spin.
  std::uint32_t idle_spin_us = kDefaultIdleSpinUs;
  static constexpr std::uint32_t kDefaultIdleSpinUs = 50;
  static constexpr std::uint32_t kMaxIdleSpinUs = 10'000;
  std::uint32_t max_peers = LOCABUS_MAX_PEERS_DEFAULT;
  /// In-kernel duplicate broadcast NAK suppression interval, 0 = off.
  std::uint32_t nak_dedup_us = LOCABUS_NAK_DEDUP_US_DEFAULT;

  std::filesystem::path run_dir = "/run/locabus";
  std::filesystem::path api_socket;     // empty: <run_dir>/locabusd.sock
  std::string api_group;                // group allowed to use the API besides root
  mode_t api_mode = 0660;               // permissions of the API socket
  std::uint32_t ring_bytes = 2u << 20;  // per direction and client
  /// Messages per (sending peer, endpoint) the daemon holds for an endpoint
  /// whose ring is full: the credit it grants each sender (endpoint flow
  /// control, docs/PROTOCOL.md). A slow reader holds up only its own traffic.
  std::uint32_t endpoint_window = 1024;

  std::string log_level = "info";
  engine::EngineConfig engine;
  MonitorConfig monitor;
  /// Where the Prometheus exporter listens ("HOST:PORT", "[V6]:PORT"; port 0
  /// picks one): GET /metrics. Empty: no exporter.
  std::string metrics_address;

  std::filesystem::path socket_path() const;
  /// Throws Error naming the bad setting.
  void validate() const;
};

/// Reads a TOML file into `cfg` (keys absent from the file keep their value).
/// Unknown keys are errors, so a typo never goes unnoticed. Throws Error.
void load_toml(const std::filesystem::path& file, Config& cfg);

/// Splits "HOST:PORT" or "[V6]:PORT" (host without brackets); nullopt when invalid.
std::optional<std::pair<std::string, std::uint16_t>> parse_host_port(const std::string& text);

/// Parses "0660" style octal permissions; nullopt when invalid.
std::optional<mode_t> parse_mode(const std::string& text);

}  // namespace locabus::daemon
