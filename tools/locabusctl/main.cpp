// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabusctl: the Locabus administration tool.
#include <cstdlib>
#include <iostream>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <locabus/client.hpp>

#include "commands.hpp"
#include "common/error.hpp"
#include "fastpath/bpffs.hpp"
#include "fastpath/netdev.hpp"

namespace locabus::ctl {

void add_target_options(CLI::App& cmd, Target& t, bool with_json) {
  cmd.add_option("-i,--iface", t.iface, "Network interface (in the current network namespace)")->required();
  cmd.add_option("--pin-dir", t.pin_dir,
                 "Directory of the pinned maps (default: /sys/fs/bpf/locabus/IFACE, or IFACE@NETNS "
                 "outside the initial network namespace)");
  if (with_json) cmd.add_flag("--json", t.json, "Print machine-readable JSON");
}

std::filesystem::path pin_dir_of(const Target& t) {
  return t.pin_dir.empty() ? bpffs::default_pin_dir(t.iface) : std::filesystem::path(t.pin_dir);
}

std::uint16_t node_id_option(const std::string& text, const std::string& option) {
  auto id = net::parse_node_id(text);
  if (!id)
    throw CLI::ValidationError(option, "'" + text + "' is not a node id (0..65534, decimal or 0x hex)");
  return *id;
}

}  // namespace locabus::ctl

int main(int argc, char** argv) {
  // Logs go to stderr so that --json output on stdout stays clean.
  auto logger = spdlog::stderr_color_mt("locabusctl");
  logger->set_pattern("%^%l%$: %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::warn);
  if (const char* env = std::getenv("LOCABUS_LOG")) spdlog::set_level(spdlog::level::from_str(env));

  CLI::App app{"locabusctl: inspect and drive locabusd, the Locabus XDP fast path and its fault injection"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "locabusctl 0.1.0");
  std::string log_level;
  app.add_option("--log-level", log_level, "trace, debug, info, warn (default), error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->each([](const std::string& l) { spdlog::set_level(spdlog::level::from_str(l)); });
  app.footer("Environment: LOCABUS_LOG=debug shows libbpf/libxdp detail. Most commands need root.");

  locabus::ctl::register_xdp_commands(app);
  locabus::ctl::register_stats_command(app);
  locabus::ctl::register_frame_commands(app);
  locabus::ctl::register_chaos_commands(app);
  locabus::ctl::register_daemon_commands(app);
  locabus::ctl::register_monitor_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const locabus::ClientError& e) {
    std::cerr << "locabusctl: error: " << e.what() << "\n";
    return 1;
  } catch (const locabus::Error& e) {
    std::cerr << "locabusctl: error: " << e.what() << "\n";
    if (!e.hint().empty()) std::cerr << "  hint: " << e.hint() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "locabusctl: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
