// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabusctl chaos attach|set|status|detach: fault injection on a veth.
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <locabus/wire.hpp>

#include "commands.hpp"
#include "common/error.hpp"
#include "fastpath/chaos.hpp"

namespace locabus::ctl {
namespace {

using nlohmann::json;

struct ChaosOptions {
  std::string iface;
  double drop = 0;
  double corrupt = 0;
  std::uint64_t seed = 1;
  std::vector<std::string> types;
  bool off = false;
  bool json = false;
};

std::uint32_t type_mask(const std::vector<std::string>& types) {
  std::uint32_t mask = 0;
  for (const auto& t : types) {
    auto parsed = wire::parse_packet_type(t);
    if (!parsed)
      throw CLI::ValidationError("--type", "'" + t + "' is not a packet type (data, ack, nak, ...)");
    mask |= 1u << static_cast<unsigned>(*parsed);
  }
  return mask;
}

chaos::Settings settings_of(const ChaosOptions& o) {
  chaos::Settings s;
  s.enabled = !o.off;
  s.drop_percent = o.drop;
  s.corrupt_percent = o.corrupt;
  s.seed = o.seed;
  s.type_mask = type_mask(o.types);
  return s;
}

std::string types_text(std::uint32_t mask) {
  if (mask == 0) return "all";
  std::string out;
  for (unsigned t = LOCABUS_T_MIN; t <= LOCABUS_T_MAX; ++t) {
    if (mask & (1u << t)) {
      if (!out.empty()) out += ",";
      out += wire::to_string(static_cast<wire::PacketType>(t));
    }
  }
  return out;
}

void add_settings(CLI::App* cmd, ChaosOptions& o) {
  cmd->add_option("--drop", o.drop, "percentage of Locabus frames dropped (0-100)")
      ->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--corrupt", o.corrupt, "percentage of the other frames with one bit flipped (0-100)")
      ->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--seed", o.seed, "random seed; the same seed repeats the same decisions on one CPU");
  cmd->add_option("--type", o.types, "affect only these packet types (repeatable: --type data --type ack)");
  cmd->add_flag("--off", o.off, "keep it attached but let everything through");
}

void print(const std::string& iface, const chaos::Settings& s, const chaos::Stats& st, bool as_json) {
  if (as_json) {
    json j{{"iface", iface},
           {"enabled", s.enabled},
           {"drop_percent", s.drop_percent},
           {"corrupt_percent", s.corrupt_percent},
           {"seed", s.seed},
           {"types", types_text(s.type_mask)},
           {"seen", st.seen},
           {"dropped", st.dropped},
           {"corrupted", st.corrupted},
           {"passed", st.passed}};
    std::cout << j.dump(2) << "\n";
    return;
  }
  fmt::print("chaos on {}: {}, drop {}%, corrupt {}%, seed {}, types {}\n", iface, s.enabled ? "on" : "off",
             s.drop_percent, s.corrupt_percent, s.seed, types_text(s.type_mask));
  fmt::print("frames      seen {}, dropped {}, corrupted {}, passed {}\n", st.seen, st.dropped, st.corrupted,
             st.passed);
}

void show(const std::string& iface, bool as_json) {
  const chaos::Settings s = chaos::settings(iface);  // first: its error says how to attach
  print(iface, s, chaos::stats(iface), as_json);
}

}  // namespace

void register_chaos_commands(CLI::App& app) {
  auto* chaos_cmd = app.add_subcommand(
      "chaos", "fault injection: drop and corrupt Locabus frames on a veth (no netem on these kernels)");
  chaos_cmd->require_subcommand(1);
  chaos_cmd->footer(
      "Attach it to the end of a veth pair that receives the frames to disturb (the host side of a\n"
      "namespace's veth disturbs what that node sends). The interface's own XDP slot is used, so it\n"
      "cannot share an interface with locabusd.");
  auto opts = std::make_shared<ChaosOptions>();

  auto* attach = chaos_cmd->add_subcommand("attach", "load the program, attach it and apply the settings");
  attach->add_option("iface", opts->iface, "interface")->required();
  add_settings(attach, *opts);
  attach->add_flag("--json", opts->json, "print the result as JSON");
  attach->callback([opts] {
    chaos::attach(opts->iface, settings_of(*opts));
    show(opts->iface, opts->json);
  });

  auto* set =
      chaos_cmd->add_subcommand("set", "change the settings while it runs (unset options: 0 / all / on)");
  set->add_option("iface", opts->iface, "interface")->required();
  add_settings(set, *opts);
  set->add_flag("--json", opts->json, "print the result as JSON");
  set->callback([opts] {
    chaos::set(opts->iface, settings_of(*opts));
    show(opts->iface, opts->json);
  });

  auto* status = chaos_cmd->add_subcommand("status", "settings and counters");
  status->add_option("iface", opts->iface, "interface")->required();
  status->add_flag("--json", opts->json, "print as JSON");
  status->callback([opts] { show(opts->iface, opts->json); });

  auto* detach = chaos_cmd->add_subcommand("detach", "detach the program and remove its pins");
  detach->add_option("iface", opts->iface, "interface")->required();
  detach->callback([opts] {
    const bool was = chaos::detach(opts->iface);
    fmt::print("chaos {} {}\n", was ? "detached from" : "was not attached to", opts->iface);
  });
}

}  // namespace locabus::ctl
