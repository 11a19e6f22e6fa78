// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabusctl xdp attach|detach|status, and locabusctl stats.
#include <chrono>
#include <iostream>
#include <memory>
#include <optional>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <locabus/wire.hpp>

#include "commands.hpp"
#include "common/error.hpp"
#include "fastpath/fastpath.hpp"

namespace locabus::ctl {
namespace {

using nlohmann::json;

json published_json(const locabus_conn_pub& pub) {
  return {{"published", (pub.flags & LOCABUS_CONN_F_PUBLISHED) != 0},
          {"una", pub.una},
          {"max", pub.max},
          {"pass_all", (pub.flags & LOCABUS_CONN_F_PASS_ALL) != 0}};
}

std::string flags_text(std::uint32_t flags) {
  std::vector<std::string> names;
  if (flags & LOCABUS_CFG_F_ACK_TO_USER) names.emplace_back("ack-to-user");
  if (flags & LOCABUS_CFG_F_PASS_UNCLAIMED) names.emplace_back("pass-unclaimed");
  return names.empty() ? "none" : fmt::format("{}", fmt::join(names, ","));
}

std::string wall_time(std::uint64_t ns) {
  const std::time_t t = static_cast<std::time_t>(ns / 1'000'000'000ULL);
  return fmt::format("{:%Y-%m-%d %H:%M:%S}", fmt::localtime(t));
}

json config_json(const locabus_config& c) {
  json j{{"node_id", c.node_id},
         {"flags", c.flags},
         {"flags_text", flags_text(c.flags)},
         {"owner_pid", c.owner_pid},
         {"attached_at_ns", c.attached_at_ns}};
  j["nak_dedup_us"] = c.nak_dedup_us;
  return j;
}

json status_json(const fastpath::Status& s) {
  json j{{"iface", s.iface},
         {"ifindex", s.ifindex},
         {"pin_dir", s.pin_dir.string()},
         {"attached", !s.program_ids.empty()},
         {"program_ids", s.program_ids},
         {"mode", s.mode ? std::string(fastpath::to_string(*s.mode)) : ""},
         {"dispatcher", s.dispatcher},
         {"pinned", s.pinned},
         {"owner", std::string(fastpath::to_string(s.owner))},
         {"healthy", s.healthy()}};
  if (s.config) j["config"] = config_json(*s.config);
  return j;
}

void print_status(const fastpath::Status& s) {
  fmt::print("interface   {} (ifindex {})\n", s.iface, s.ifindex);
  if (s.program_ids.empty())
    fmt::print("program     not attached\n");
  else
    fmt::print(
        "program     attached, id {} ({} mode, {})\n", fmt::join(s.program_ids, ","),
        s.mode ? fastpath::to_string(*s.mode) : "unknown",
        s.dispatcher ? "through the libxdp dispatcher" : "alone: the kernel refused libxdp's dispatcher");
  fmt::print("pins        {} ({})\n", s.pin_dir.string(), s.pinned ? "present" : "absent");
  if (s.config) {
    fmt::print("node id     {} (0x{:04x})\n", s.config->node_id, s.config->node_id);
    fmt::print("flags       {}\n", flags_text(s.config->flags));
    if (s.config->nak_dedup_us)
      fmt::print("NAK dedup   {} microseconds (repeated broadcast NAKs to us dropped)\n",
                 s.config->nak_dedup_us);
    else
      fmt::print("NAK dedup   off\n");
    if (s.config->owner_pid)
      fmt::print("owner       process {} ({})\n", s.config->owner_pid,
                 s.owner == fastpath::OwnerState::alive ? "running" : "gone");
    else
      fmt::print("owner       none (administrative attach)\n");
    fmt::print("attached at {}\n", wall_time(s.config->attached_at_ns));
  }
  if (!s.program_ids.empty() || s.pinned) {
    if (s.healthy())
      fmt::print("state       healthy\n");
    else
      fmt::print("state       STALE: {}; `locabusctl xdp attach` replaces it, `xdp detach` removes it\n",
                 s.program_ids.empty()      ? "pins without a program"
                 : !s.pinned                ? "program without (all of) its pins"
                 : s.program_ids.size() > 1 ? "more than one Locabus program"
                                            : "its owner process is gone");
  }
}

}  // namespace

void register_xdp_commands(CLI::App& app) {
  auto* xdp = app.add_subcommand("xdp", "Attach, detach and inspect the XDP fast path");
  xdp->require_subcommand(1);

  // attach
  {
    auto* cmd = xdp->add_subcommand(
        "attach",
        "Load the XDP program on an interface and pin its maps; it stays attached until `xdp detach`. "
        "Leftovers of an earlier run are replaced.");
    auto t = std::make_shared<Target>();
    auto node = std::make_shared<std::string>();
    auto mode = std::make_shared<std::string>("auto");
    auto ack_to_user = std::make_shared<bool>(false);
    auto pass_unclaimed = std::make_shared<bool>(false);
    auto max_peers = std::make_shared<std::uint32_t>(LOCABUS_MAX_PEERS_DEFAULT);
    auto nak_dedup_us = std::make_shared<std::uint32_t>(LOCABUS_NAK_DEDUP_US_DEFAULT);
    add_target_options(*cmd, *t);
    cmd->add_option("-n,--node-id", *node,
                    "Our node id, 0..65534 (default: low 16 bits of the interface's IPv4 address)");
    cmd->add_option("--mode", *mode, "auto (native, else generic), native or generic")
        ->check(CLI::IsMember({"auto", "native", "generic"}));
    cmd->add_flag("--ack-to-user", *ack_to_user, "Deliver pure ACKs to user space instead of consuming them");
    cmd->add_flag("--pass-unclaimed", *pass_unclaimed,
                  "Pass frames no AF_XDP socket claims to the kernel stack instead of dropping them");
    cmd->add_option("--max-peers", *max_peers, "Size of the kernel peer table")
        ->check(CLI::Range(1u, 65535u));
    cmd->add_option("--nak-dedup-us", *nak_dedup_us,
                    "Drop broadcast NAKs to us that repeat a range passed to user space within this many "
                    "microseconds (0 = off)")
        ->check(CLI::Range(0u, fastpath::kMaxNakDedupUs));
    cmd->callback([=] {
      fastpath::Options o;
      o.iface = t->iface;
      if (!node->empty()) o.node_id = node_id_option(*node, "--node-id");
      o.mode = *fastpath::parse_attach_mode(*mode);
      o.flags = (*ack_to_user ? LOCABUS_CFG_F_ACK_TO_USER : 0u) |
                (*pass_unclaimed ? LOCABUS_CFG_F_PASS_UNCLAIMED : 0u);
      o.max_peers = *max_peers;
      o.nak_dedup_us = *nak_dedup_us;
      o.pin_dir = pin_dir_of(*t);
      o.own = false;  // outlives this command
      auto fp = fastpath::FastPath::attach(o);
      fp->persist();
      if (t->json) {
        std::cout << json{{"iface", fp->iface()},
                          {"ifindex", fp->ifindex()},
                          {"program_id", fp->program_id()},
                          {"mode", std::string(fastpath::to_string(fp->mode()))},
                          {"node_id", fp->node_id()},
                          {"pin_dir", fp->pin_dir().string()}}
                         .dump(2)
                  << "\n";
      } else {
        fmt::print("attached to {}: program id {}, {} mode, node id {} (0x{:04x}), maps in {}\n", fp->iface(),
                   fp->program_id(), fastpath::to_string(fp->mode()), fp->node_id(), fp->node_id(),
                   fp->pin_dir().string());
      }
    });
  }

  // detach
  {
    auto* cmd = xdp->add_subcommand("detach", "Detach the XDP program and remove its pins (stale ones too)");
    auto t = std::make_shared<Target>();
    auto force = std::make_shared<bool>(false);
    add_target_options(*cmd, *t);
    cmd->add_flag("--force", *force, "Detach even when a running process (locabusd) owns the fast path");
    cmd->callback([=] {
      auto r = fastpath::detach(t->iface, pin_dir_of(*t), *force);
      if (t->json) {
        std::cout << json{{"iface", t->iface}, {"programs", r.programs}, {"pins", r.pins}}.dump(2) << "\n";
      } else {
        fmt::print("detached from {}: program ids [{}], pins removed [{}]\n", t->iface,
                   fmt::join(r.programs, ", "), fmt::join(r.pins, ", "));
      }
    });
  }

  // track-peer / forget-peer
  for (const bool track : {true, false}) {
    auto* cmd = xdp->add_subcommand(
        track ? "track-peer" : "forget-peer",
        track
            ? "Have the kernel record a peer's NAKs and judge its pure ACKs by the ACK rule (the engine does "
              "this when a connection is established); resets an existing record. With --una/--max it also "
              "publishes an unacknowledged range, so ACKs that advance inside it are consumed"
            : "Stop tracking a peer: its pure ACKs go to user space again");
    auto t = std::make_shared<Target>();
    auto node = std::make_shared<std::string>();
    auto una = std::make_shared<std::optional<std::uint16_t>>();
    auto max = std::make_shared<std::optional<std::uint16_t>>();
    add_target_options(*cmd, *t, false);
    cmd->add_option("-n,--node", *node, "Peer node id")->required();
    if (track) {
      auto* u = cmd->add_option("--una", *una, "Publish: oldest unacknowledged sequence number");
      auto* m = cmd->add_option("--max", *max, "Publish: one past the newest sequence sent");
      u->needs(m);
      m->needs(u);
    }
    cmd->callback([=] {
      const auto id = node_id_option(*node, "--node");
      const auto dir = pin_dir_of(*t);
      auto maps = fastpath::Maps::open_pinned(dir);
      if (track) {
        maps.track_peer(id);
        if (una->has_value()) {
          maps.publish(id, locabus_conn_pub{**una, **max, LOCABUS_CONN_F_PUBLISHED, 1});
          fmt::print("tracking peer {} on {}, unacknowledged range [{}, {}] published\n", id, t->iface, **una,
                     **max);
        } else {
          fmt::print("tracking peer {} on {} (nothing published: its pure ACKs are passed)\n", id, t->iface);
        }
      } else if (maps.forget_peer(id)) {
        fmt::print("stopped tracking peer {} on {}\n", id, t->iface);
      } else {
        throw Error(fmt::format("peer {} is not tracked on {}", id, t->iface), 0,
                    "`locabusctl stats --iface " + t->iface + "` lists the tracked peers");
      }
    });
  }

  // status
  {
    auto* cmd =
        xdp->add_subcommand("status", "Show whether the fast path is attached, and its configuration");
    auto t = std::make_shared<Target>();
    add_target_options(*cmd, *t);
    cmd->callback([=] {
      auto s = fastpath::status(t->iface, pin_dir_of(*t));
      if (t->json)
        std::cout << status_json(s).dump(2) << "\n";
      else
        print_status(s);
    });
  }
}

void register_stats_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "stats",
      "Fast path counters (summed over CPUs), per-protocol delivery and the kernel's peer ACK/NAK table");
  auto t = std::make_shared<Target>();
  add_target_options(*cmd, *t);
  cmd->callback([=] {
    const auto dir = pin_dir_of(*t);
    auto maps = fastpath::Maps::open_pinned(dir);
    const auto counters = maps.counters();
    const auto peers = maps.peers();

    json protos = json::array();
    for (unsigned p = 0; p < LOCABUS_PROTO_IDS; ++p) {
      const auto s = maps.proto_stats(static_cast<std::uint8_t>(p));
      if (!s.to_proto_socket && !s.to_default_socket && !s.no_socket) continue;
      protos.push_back({{"proto", p},
                        {"name", std::string(wire::to_string(static_cast<wire::Protocol>(p)))},
                        {"to_proto_socket", s.to_proto_socket},
                        {"to_default_socket", s.to_default_socket},
                        {"no_socket", s.no_socket},
                        {"bytes", s.bytes}});
    }

    if (t->json) {
      json c = json::object();
      for (std::size_t i = 0; i < counters.size(); ++i)
        c[std::string(fastpath::kCounters[i].name)] = counters[i];
      json ps = json::array();
      for (const auto& [node, p] : peers)
        ps.push_back({{"node_id", node},
                      {"ack_valid", (p.flags & LOCABUS_PEER_F_ACK_VALID) != 0},
                      {"ack_num", p.ack_num},
                      {"ack_window", p.ack_window},
                      {"acks", p.acks},
                      {"acks_passed", p.passed_acks},
                      {"published", published_json(maps.published(node))},
                      {"nak_valid", (p.flags & LOCABUS_PEER_F_NAK_VALID) != 0},
                      {"nak_ack", p.nak_ack},
                      {"nak_seq", p.nak_seq},
                      {"naks", p.naks},
                      {"last_heard_ns", p.last_heard_ns}});
      std::cout << json{{"iface", t->iface}, {"counters", c}, {"protocols", protos}, {"peers", ps}}.dump(2)
                << "\n";
      return;
    }

    fmt::print("{:<18} {:>12}  {}\n", "counter", "value", "meaning");
    for (std::size_t i = 0; i < counters.size(); ++i)
      fmt::print("{:<18} {:>12}  {}\n", fastpath::kCounters[i].name, counters[i],
                 fastpath::kCounters[i].description);
    if (!protos.empty()) {
      fmt::print("\n{:<10} {:>12} {:>12} {:>12} {:>14}\n", "protocol", "own socket", "default", "no socket",
                 "bytes");
      for (const auto& p : protos)
        fmt::print("{:<10} {:>12} {:>12} {:>12} {:>14}\n", p["name"].get<std::string>(),
                   p["to_proto_socket"].get<std::uint64_t>(), p["to_default_socket"].get<std::uint64_t>(),
                   p["no_socket"].get<std::uint64_t>(), p["bytes"].get<std::uint64_t>());
    }
    if (!peers.empty()) {
      fmt::print("\n{:<6} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8}  {}\n", "peer", "ack", "window", "consumed",
                 "passed", "naks", "nak_ack", "published [una, max]");
      for (const auto& [node, p] : peers) {
        const locabus_conn_pub pub = maps.published(node);
        fmt::print("{:<6} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8}  {}\n", node,
                   p.flags & LOCABUS_PEER_F_ACK_VALID ? std::to_string(p.ack_num) : "-",
                   p.flags & LOCABUS_PEER_F_ACK_VALID ? std::to_string(p.ack_window) : "-", p.acks,
                   p.passed_acks, p.naks,
                   p.flags & LOCABUS_PEER_F_NAK_VALID ? std::to_string(p.nak_ack) : "-",
                   pub.flags & LOCABUS_CONN_F_PUBLISHED
                       ? fmt::format("[{}, {}]{}", pub.una, pub.max,
                                     pub.flags & LOCABUS_CONN_F_PASS_ALL ? " pass-all" : "")
                       : "-");
      }
    }
  });
}

}  // namespace locabus::ctl
