// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabusd: the Locabus daemon for one network interface.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "common/error.hpp"
#include "common/version.hpp"
#include "daemon/config.hpp"
#include "daemon/daemon.hpp"
#include "fastpath/fastpath.hpp"
#include "fastpath/netdev.hpp"

namespace {

using locabus::daemon::Config;

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("locabusd");
  // Under systemd the journal adds its own timestamps (JOURNAL_STREAM is set).
  if (std::getenv("JOURNAL_STREAM"))
    logger->set_pattern("<%l> %v");
  else
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::flush_on(spdlog::level::info);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "locabusd: the Locabus daemon. Runs the protocol engine on one interface (AF_XDP, or AF_PACKET "
      "without XDP) and serves local applications on a Unix socket."};
  app.set_version_flag("--version", std::string("locabusd ") + locabus::kVersion);
  app.option_defaults()->always_capture_default();

  std::string config_file, config_optional, iface, node_id, datapath, run_dir, api_socket, api_group,
      api_mode, log_level, attach_mode;
  std::optional<std::string> metrics_address;
  std::optional<std::uint32_t> monitor_sample_ms;
  bool busy_poll = false, no_monitor = false;
  std::optional<std::uint32_t> nak_dedup_us, idle_spin_us;
  app.add_option("-c,--config", config_file, "TOML config file (dist/locabusd.toml documents every key)")
      ->check(CLI::ExistingFile);
  app.add_option("--config-optional", config_optional, "Like --config, but a missing file is not an error");
  app.add_option("-i,--iface", iface, "Network interface to run on");
  app.add_option("-n,--node-id", node_id,
                 "Node id 0..65534 (default: low 16 bits of the interface's IPv4 address)");
  app.add_option("-d,--datapath", datapath,
                 "auto (AF_XDP, else AF_PACKET; the log says which and why), xdp or packet")
      ->check(CLI::IsMember({"auto", "xdp", "packet"}));
  app.add_option("--attach-mode", attach_mode, "XDP attach mode: auto, native or generic")
      ->check(CLI::IsMember({"auto", "native", "generic"}));
  app.add_option("--nak-dedup-us", nak_dedup_us,
                 "Drop repeated broadcast NAKs for our stream in the kernel within this many microseconds "
                 "(0 = off; default 2000)")
      ->check(CLI::Range(0u, locabus::fastpath::kMaxNakDedupUs));
  app.add_flag("--busy-poll", busy_poll, "Spin instead of sleeping when idle (lowest latency, burns a core)");
  app.add_option("--idle-spin-us", idle_spin_us,
                 "After work, keep polling this many microseconds before sleeping (0 = sleep at once; "
                 "default " +
                     std::to_string(locabus::daemon::Config::kDefaultIdleSpinUs) +
                     "): answers within it cost no wakeup; an idle daemon does not spin")
      ->check(CLI::Range(0u, locabus::daemon::Config::kMaxIdleSpinUs));
  app.add_option("--run-dir", run_dir,
                 "Directory for the pid file and the API socket (default /run/locabus)");
  app.add_option("--api-socket", api_socket, "API socket path (default RUN_DIR/locabusd.sock)");
  app.add_option("--api-group", api_group, "Group whose members may use the API (root always may)");
  app.add_option("--api-mode", api_mode, "Permissions of the API socket, octal (default 0660)");
  app.add_option("--metrics-address", metrics_address,
                 "Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 0.0.0.0:9477; \"\" = off, "
                 "the default)");
  app.add_option("--monitor-sample-ms", monitor_sample_ms,
                 "LocaMonitor: sample this node every this many milliseconds (default 1000)")
      ->check(CLI::Range(100u, 60'000u));
  app.add_flag("--no-monitor", no_monitor, "Turn LocaMonitor off (no statistics sampled, sent or kept)");
  app.add_option("-l,--log-level", log_level, "trace, debug, info (default), warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.footer(
      "Signals: SIGTERM/SIGINT shut down cleanly (connections closed, XDP detached, pins and socket "
      "removed).\nReadiness: sd_notify READY=1 (systemd Type=notify) and the log line 'ready'.");
  CLI11_PARSE(app, argc, argv);

  Config cfg;
  try {
    if (!config_optional.empty() && std::filesystem::exists(config_optional))
      locabus::daemon::load_toml(config_optional, cfg);
    if (!config_file.empty()) locabus::daemon::load_toml(config_file, cfg);
    if (!iface.empty()) cfg.iface = iface;
    if (!node_id.empty()) {
      auto id = locabus::net::parse_node_id(node_id);
      if (!id)
        throw locabus::Error("--node-id '" + node_id + "' is not a node id (0..65534, decimal or 0x hex)");
      cfg.node_id = id;
    }
    if (!datapath.empty()) cfg.datapath = *locabus::transport::parse_datapath(datapath);
    if (!attach_mode.empty()) cfg.attach_mode = *locabus::fastpath::parse_attach_mode(attach_mode);
    if (nak_dedup_us) cfg.nak_dedup_us = *nak_dedup_us;
    if (busy_poll) cfg.busy_poll = true;
    if (idle_spin_us) cfg.idle_spin_us = *idle_spin_us;
    if (!run_dir.empty()) cfg.run_dir = run_dir;
    if (!api_socket.empty()) cfg.api_socket = api_socket;
    if (!api_group.empty()) cfg.api_group = api_group;
    if (!api_mode.empty()) {
      auto m = locabus::daemon::parse_mode(api_mode);
      if (!m) throw locabus::Error("--api-mode '" + api_mode + "' is not an octal mode like 0660");
      cfg.api_mode = *m;
    }
    if (!log_level.empty()) cfg.log_level = log_level;
    if (metrics_address) cfg.metrics_address = *metrics_address;
    if (monitor_sample_ms) {
      cfg.monitor.sample_ms = *monitor_sample_ms;
      cfg.monitor.broadcast_ms = std::max(cfg.monitor.broadcast_ms, cfg.monitor.sample_ms);
    }
    if (no_monitor) cfg.monitor.enabled = false;
    cfg.validate();
    setup_logging(cfg.log_level);
    locabus::fastpath::install_library_logging();
    locabus::daemon::Daemon daemon(cfg);
    return daemon.run();
  } catch (const locabus::Error& e) {
    if (!spdlog::get("locabusd")) setup_logging("info");
    spdlog::critical("{}", e.what());
    if (!e.hint().empty()) spdlog::critical("hint: {}", e.hint());
    return 1;
  } catch (const std::exception& e) {
    if (!spdlog::get("locabusd")) setup_logging("info");
    spdlog::critical("{}", e.what());
    return 1;
  }
}
