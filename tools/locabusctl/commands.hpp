// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

namespace locabus::ctl {

/// Options every fast-path command shares.
struct Target {
  std::string iface;
  std::string pin_dir;  // empty: the default for iface
  bool json = false;
};

/// Adds --iface, --pin-dir and --json to `cmd`.
void add_target_options(CLI::App& cmd, Target& t, bool with_json = true);

/// --pin-dir, else the default pin directory of --iface in this namespace.
std::filesystem::path pin_dir_of(const Target& t);

void register_xdp_commands(CLI::App& app);
void register_stats_command(CLI::App& app);
void register_frame_commands(CLI::App& app);
void register_chaos_commands(CLI::App& app);
void register_daemon_commands(CLI::App& app);
void register_monitor_command(CLI::App& app);

/// Parses a node id option (decimal or 0x hex, < 0xFFFF) or throws CLI::ValidationError.
std::uint16_t node_id_option(const std::string& text, const std::string& option);

}  // namespace locabus::ctl
