// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// LocaMonitor in daemons in simulation (daemon_harness.hpp): every node
// samples a deterministic synthetic machine (load and memory from its id and
// the simulated time), broadcasts its record and keeps the cluster's table.
// What a node broadcast is read off the simulated wire (every LOCABUS_P_MONITOR
// DATA frame decoded with monitor::parse_part/decode_record), so "every
// table holds what every node last broadcast" is checked against the
// network, not against the service's own idea of it. The "monitor" control
// request goes through a real client on the node's API socket.
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <locabus/wire.h>
#include <nlohmann/json.hpp>

#include "api/control.hpp"
#include "client/monitor_rows.hpp"
#include "daemon/services/monitor.hpp"
#include "daemon_harness.hpp"
#include "locabus/wire.hpp"
#include "monitor/files.hpp"
#include "monitor/record.hpp"
#include "monitor/table.hpp"
#include "sim_test_util.hpp"

namespace locabus::sim {
namespace {

using namespace std::chrono_literals;
using engine::Nanos;
using testing::DaemonSim;
using testing::DaemonSimOptions;
using testing::for_each_seed;
using testing::lossy;

// How much later than it happened the test's polling (DaemonSim::wait_until,
// a real millisecond between looks while simulated time runs on) may notice
// something; a bound on a time observed by polling adds it.
constexpr Nanos kPoll = std::chrono::milliseconds(150);

double sim_ms(Nanos n) { return std::chrono::duration<double, std::milli>(n).count(); }
std::int64_t ms_of(Nanos n) { return std::chrono::duration_cast<std::chrono::milliseconds>(n).count(); }

// ---- the synthetic machines -------------------------------------------------------------

/// Node `index`'s machine: its CPUs, load and available memory are fixed
/// per node (so the least-loaded node is known), with a small wobble over
/// simulated time that stays far below the significant-change thresholds,
/// plus a load a test may add (extra_load_milli). Counters (CPU time,
/// network bytes) grow with time. Driver thread only.
struct Machines {
  struct Spec {
    std::uint32_t cpus = 1;
    std::uint32_t load_milli = 0;  // load1 at rest
    std::uint64_t available = 0;   // bytes at rest
  };
  std::vector<Spec> spec;
  std::vector<std::uint32_t> extra_load_milli;
  std::vector<monitor::NodeStats> last;  // each node's last sample

  static constexpr std::uint64_t kMemTotal = 16ull << 30;

  explicit Machines(std::vector<Spec> s)
      : spec(std::move(s)), extra_load_milli(spec.size(), 0), last(spec.size()) {}

  /// Spread over many nodes: CPUs 1..8, load per CPU in the middle of a
  /// 0.05 bucket, memory from 2 to 10 GiB.
  static std::vector<Spec> spread(std::size_t n) {
    std::vector<Spec> out(n);
    for (std::size_t i = 0; i < n; ++i) {
      out[i].cpus = static_cast<std::uint32_t>(1 + i % 8);
      const std::uint32_t bucket = static_cast<std::uint32_t>(2 + (i * 7) % 30);  // load per CPU 0.10..1.55
      out[i].load_milli = out[i].cpus * (bucket * 50 + 25);
      out[i].available = (2ull << 30) + (i * 37 % 64) * (128ull << 20);
    }
    return out;
  }

  monitor::NodeStats sample(std::size_t i, Nanos now) {
    const Spec& sp = spec.at(i);
    const std::uint64_t now_ms = static_cast<std::uint64_t>(ms_of(now));
    const std::uint64_t wobble = (now_ms / 1000) % 4;  // 0..3, changes every simulated second
    monitor::NodeStats s;
    s.sampled_at_ms = 1'700'000'000'000ull + now_ms;
    s.hostname = fmt::format("sim-node-{}", i + 1);
    s.cpus = sp.cpus;
    const std::uint16_t user = static_cast<std::uint16_t>(100 + 20 * (i % 5));
    s.cpu_permille = {user, 0, 50, static_cast<std::uint16_t>(1000 - user - 50), 0, 0, 0, 0};
    for (std::size_t m = 0; m < monitor::kCpuModes; ++m)
      s.cpu_ms[m] = now_ms * sp.cpus * s.cpu_permille[m] / 1000;
    // Wobble: at most 0.003 of load per CPU and 3 MiB of memory.
    s.load1_milli = sp.load_milli + extra_load_milli[i] + static_cast<std::uint32_t>(wobble);
    s.load5_milli = sp.load_milli;
    s.load15_milli = sp.load_milli / 2;
    s.boot_time_s = 1'699'999'000;
    s.mem_total = kMemTotal;
    s.mem_available = sp.available - wobble * (1ull << 20);
    s.mem_free = s.mem_available / 2;
    s.mem_buffers = 64ull << 20;
    s.mem_cached = 1ull << 30;
    s.swap_total = 2ull << 30;
    s.swap_free = 2ull << 30;
    s.processes = static_cast<std::uint32_t>(100 + i);
    s.threads = static_cast<std::uint32_t>(300 + i);
    s.procs_running = static_cast<std::uint32_t>(1 + i % 3);
    s.nets.push_back({"lo", now_ms * 10, now_ms * 10, now_ms, now_ms, 0, 0, 0, 0});
    s.nets.push_back({"eth-0", now_ms * 100 * (i + 1), now_ms * 50, now_ms, now_ms / 2, 0, 0, 0, 0});
    last.at(i) = s;
    return s;
  }
};

/// Options with the machines wired in as every node's sampler.
DaemonSimOptions with_machines(DaemonSimOptions o, const std::shared_ptr<Machines>& m) {
  o.monitor_sample = [m](std::size_t i, Nanos now) { return m->sample(i, now); };
  return o;
}

// ---- what is on the wire ------------------------------------------------------------------

/// Every LocaMonitor record seen on the simulated network, decoded; and the
/// frames by type. Fed by the send tap (driver thread).
struct Wire {
  struct Record {
    std::uint32_t epoch = 0, seq = 0;
    monitor::NodeStats stats;
  };
  std::map<std::uint16_t, Record> latest;  // each node's last complete record
  std::map<std::tuple<std::uint16_t, std::uint32_t, std::uint32_t>, std::vector<std::vector<std::byte>>>
      assembling;
  std::map<std::uint16_t, std::uint64_t> monitor_frames;  // P_MONITOR DATA frames by sender
  std::array<std::uint64_t, 16> by_type{};                // every frame by packet type
  std::uint64_t frames = 0, monitor_bytes = 0;
  std::vector<std::string> errors;

  void on_frame(engine::FrameBytes bytes) {
    const auto f = wire::decode_frame(bytes);
    if (!f) return;
    ++frames;
    ++by_type[f->header.type_raw() & 15];
    if (f->header.type() != wire::PacketType::data || f->header.proto() != LOCABUS_P_MONITOR) return;
    const std::uint16_t node = f->header.node_from();
    if (f->header.node_to() != LOCABUS_NODE_BROADCAST) {
      errors.push_back(fmt::format("node {} sent a monitor part by unicast", node));
      return;
    }
    ++monitor_frames[node];
    monitor_bytes += bytes.size();
    std::string why;
    const auto part = monitor::parse_part(f->payload, &why);
    if (!part) {
      errors.push_back(fmt::format("node {} sent a malformed part: {}", node, why));
      return;
    }
    const auto& h = part->header;
    auto& parts = assembling[{node, h.epoch, h.seq}];
    parts.resize(h.parts);
    parts.at(h.part).assign(f->payload.begin(), f->payload.end());
    for (const auto& p : parts)
      if (p.empty()) return;
    auto stats = monitor::decode_record(parts, &why);
    assembling.erase({node, h.epoch, h.seq});
    if (!stats) {
      errors.push_back(fmt::format("node {}'s record {} does not decode: {}", node, h.seq, why));
      return;
    }
    Record& r = latest[node];
    if (r.epoch != h.epoch || h.seq >= r.seq) r = Record{h.epoch, h.seq, std::move(*stats)};
  }
  std::uint64_t of_type(std::uint8_t t) const { return by_type[t & 15]; }
};

void tap(DaemonSim& sim, const std::shared_ptr<Wire>& w) {
  sim.call([&] {
    sim.net().set_send_tap([w](SimNetwork::Port, engine::FrameBytes b, Nanos) { w->on_frame(b); });
  });
}

const daemon::MonitorService& service(DaemonSim& sim, std::size_t i) { return sim.server(i).monitor(); }

/// A row's stats without the fields the service adds (its own Locabus numbers).
monitor::NodeStats sampled_part(monitor::NodeStats s) {
  s.locabus = {};
  s.locabus_gauges = {};
  return s;
}

/// Every node's table holds every node up, alive, with what that node last
/// broadcast (its own row: its last sample). Driver thread. `why` says what
/// is missing.
bool tables_agree(DaemonSim& sim, const Wire& w, const Machines& m, const std::vector<std::size_t>& up,
                  std::string* why) {
  const Nanos now = sim.now();
  for (const std::size_t i : up) {
    const auto rows = service(sim, i).table().rows(now);
    if (rows.size() != up.size()) {
      *why = fmt::format("node {} has {} rows, not {}", DaemonSim::id_of(i), rows.size(), up.size());
      return false;
    }
    for (const auto& row : rows) {
      if (row.state != monitor::NodeState::alive) {
        *why = fmt::format("node {}: row {} is {}", DaemonSim::id_of(i), row.node,
                           monitor::to_string(row.state));
        return false;
      }
      const std::size_t j = row.node - 1u;
      if (j == i) {
        if (!row.self || row.epoch != service(sim, i).epoch() || sampled_part(row.stats) != m.last[i]) {
          *why = fmt::format("node {}: its own row is not its last sample", row.node);
          return false;
        }
        continue;
      }
      const auto it = w.latest.find(row.node);
      if (it == w.latest.end() || row.epoch != it->second.epoch || row.seq != it->second.seq ||
          !(row.stats == it->second.stats)) {
        *why = fmt::format("node {}: row {} has epoch {} seq {}, the wire's last record is epoch {} seq {}",
                           DaemonSim::id_of(i), row.node, row.epoch, row.seq,
                           it == w.latest.end() ? 0 : it->second.epoch,
                           it == w.latest.end() ? 0 : it->second.seq);
        return false;
      }
    }
  }
  return true;
}

/// Waits (simulated time bounded by `sim_limit`) until the tables agree;
/// returns the simulated time it took, or nullopt.
std::optional<Nanos> wait_tables(DaemonSim& sim, const Wire& w, const Machines& m,
                                 const std::vector<std::size_t>& up, Nanos sim_limit, std::string* why,
                                 std::chrono::milliseconds real = std::chrono::seconds(120)) {
  const Nanos start = sim.call([&] { return sim.now(); });
  std::optional<Nanos> at;
  Nanos checked = start - 1s;
  sim.wait_until(
      [&] {
        // The check reads every row of every table (256 x 256 at scale) and
        // holds the driver meanwhile: once per 10 ms of simulated time.
        if (sim.now() - checked < 10ms) return false;
        checked = sim.now();
        if (tables_agree(sim, w, m, up, why)) at = sim.now();
        return at.has_value() || sim.now() - start > sim_limit;
      },
      real);
  if (!at) return std::nullopt;
  return *at - start;
}

std::vector<std::size_t> all(std::size_t n) {
  std::vector<std::size_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

/// The least-loaded rule, written again from docs/MONITOR.md: among alive
/// rows the lowest load1 per CPU in steps of 0.05, then the most available
/// memory, then the lowest id.
std::optional<std::uint16_t> expected_least(
    const std::vector<std::tuple<std::uint16_t, double, std::uint64_t>>& rows) {
  std::optional<std::tuple<long, std::int64_t, std::uint16_t>> best;
  for (const auto& [node, per_cpu, avail] : rows) {
    const auto key = std::make_tuple(static_cast<long>(std::floor(per_cpu / 0.05)),
                                     -static_cast<std::int64_t>(avail), node);
    if (!best || key < *best) best = key;
  }
  if (!best) return std::nullopt;
  return std::get<2>(*best);
}

/// A run-dir file as a map; an empty map and a failure if it breaks the format.
std::map<std::string, std::string> read_file(const std::filesystem::path& p) {
  std::map<std::string, std::string> kv;
  std::ifstream in(p);
  if (!in) {
    ADD_FAILURE() << "cannot open " << p;
    return {};
  }
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq == std::string::npos || eq == 0) {
      ADD_FAILURE() << p << ": line '" << line << "' is not key=value";
      return {};
    }
    const std::string key = line.substr(0, eq);
    for (const char c : key)
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
        ADD_FAILURE() << p << ": key '" << key << "' is not [a-z0-9_]+";
        return {};
      }
    if (!kv.emplace(key, line.substr(eq + 1)).second) {
      ADD_FAILURE() << p << ": key '" << key << "' twice";
      return {};
    }
  }
  return kv;
}

/// The request through a real client on the node's API socket.
nlohmann::json ask(DaemonSim& sim, std::size_t i, const nlohmann::json& req) {
  UniqueFd fd = api::connect_control(sim.socket(i));
  api::send_control(fd.get(), req);
  auto reply = api::receive_control(fd.get(), nullptr, std::chrono::milliseconds(20'000));
  if (!reply) throw std::runtime_error("no reply to " + req.dump());
  return *reply;
}

/// A monitor counter of node `i`, on the driver thread.
std::uint64_t counter_now(DaemonSim& sim, std::size_t i, const char* name) {
  return sim.server(i).counters_json()["monitor"][name].get<std::uint64_t>();
}

std::uint64_t counter(DaemonSim& sim, std::size_t i, const char* name) {
  return sim.call([&] { return sim.server(i).counters_json()["monitor"][name].get<std::uint64_t>(); });
}

// ---- the file writer on its own ------------------------------------------------------------

TEST(MonitorFiles, KeyValuesAreOneKeyPerLineWithCleanNamesAndValues) {
  monitor::NodeView row;
  row.node = 9;
  row.stats.hostname = "evil\nstate=alive;$(reboot) 'x`\"n1.ex-am_ple";
  row.stats.cpus = 2;
  row.stats.load1_milli = 1500;
  row.stats.cpu_permille = {125, 0, 0, 875, 0, 0, 0, 0};
  row.stats.nets = {{"eth-0", 1, 2, 0, 0, 0, 0, 0, 0},
                    {"eth_0", 3, 4, 0, 0, 0, 0, 0, 0},
                    {"Wlan0", 5, 6, 0, 0, 0, 0, 0, 0}};
  const std::string text = monitor::key_values(row, 1234);
  std::map<std::string, std::string> kv;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const auto eq = line.find('=');
    ASSERT_NE(eq, std::string::npos) << line;
    ASSERT_TRUE(kv.emplace(line.substr(0, eq), line.substr(eq + 1)).second) << "twice: " << line;
  }
  // Another node chose it: nothing a shell would act on gets through.
  EXPECT_EQ(kv.at("hostname"), "evil_state_alive___reboot___x__n1.ex-am_ple");
  EXPECT_EQ(kv.at("state"), "alive");
  EXPECT_EQ(kv.at("updated_at_ms"), "1234");
  EXPECT_EQ(kv.at("net_eth_0_rx_bytes"), "1");
  EXPECT_EQ(kv.at("net_eth_0_2_tx_bytes"), "4");
  EXPECT_EQ(kv.at("net_wlan0_rx_bytes"), "5");
  EXPECT_EQ(kv.at("load1"), "1.500");
  EXPECT_EQ(kv.at("cpu_busy_percent"), "12.5");
  EXPECT_EQ(kv.at("cpu_user_percent"), "12.5");
  EXPECT_EQ(kv.at("cpu_idle_percent"), "87.5");
  EXPECT_EQ(kv.at("load_per_cpu"), "0.750");
  EXPECT_EQ(kv.size(), 37u + 3u * 2u + 10u);  // fixed keys, 3 interfaces, the Locabus fields
}

TEST(MonitorFiles, TheWriterCleansUpAfterAKilledDaemonAndCountsItsErrorsOnce) {
  testing::TempDir tmp("locabus-monfiles-");
  const auto dir = tmp.path() / "monitor";
  std::filesystem::create_directory(dir);
  for (const char* name : {"7", ".7.tmp", "README"}) std::ofstream(dir / name) << "x\n";
  monitor::NodeView row;
  row.node = 3;
  {
    int told = 0;
    monitor::FileWriter w(dir, [&](monitor::FileError, const std::string&) { ++told; });
    EXPECT_FALSE(std::filesystem::exists(dir / "7"));       // a node file of an earlier daemon
    EXPECT_FALSE(std::filesystem::exists(dir / ".7.tmp"));  // its temporary file
    EXPECT_TRUE(std::filesystem::exists(dir / "README"));   // not ours
    ASSERT_TRUE(w.write(row, 1));
    EXPECT_EQ(read_file(dir / "3").at("node"), "3");
    EXPECT_FALSE(std::filesystem::exists(dir / ".3.tmp"));
    EXPECT_EQ(w.files(), 1u);
    w.remove(3);
    EXPECT_FALSE(std::filesystem::exists(dir / "3"));
    ASSERT_TRUE(w.write(row, 2));
    EXPECT_EQ(w.written(), 2u);
    EXPECT_EQ(w.errors(), 0u);
    EXPECT_EQ(told, 0);
  }
  // Its files went with it; the directory stays because README is not its.
  EXPECT_FALSE(std::filesystem::exists(dir / "3"));
  EXPECT_TRUE(std::filesystem::exists(dir / "README"));

  int told = 0;
  std::string said;
  monitor::FileWriter broken(tmp.path() / "missing" / "monitor",
                             [&](monitor::FileError kind, const std::string& m) {
                               ++told;
                               said = std::string(monitor::to_string(kind)) + ": " + m;
                             });
  EXPECT_FALSE(broken.write(row, 1));
  EXPECT_FALSE(broken.write(row, 2));
  EXPECT_EQ(broken.errors(), 3u);  // the directory, then each file
  EXPECT_EQ(told, 1);              // once per kind
  EXPECT_NE(said.find("mkdir: cannot create"), std::string::npos) << said;
}

// ---- a) convergence, files, the control request -----------------------------------------

daemon::MonitorConfig fast_monitor() {
  daemon::MonitorConfig c;
  c.sample_ms = 200;
  c.broadcast_ms = 1000;
  c.stale_ms = 3000;
  c.remove_ms = 6000;
  return c;
}

// Four machines whose least-loaded node is decided by memory: nodes 2 and
// 4 share the lowest load per CPU bucket (0.2025 and 0.2050 are both in
// [0.20, 0.25)), node 4 has more memory available.
std::vector<Machines::Spec> four_machines() {
  return {{2, 1050, 6ull << 30}, {4, 810, 4ull << 30}, {8, 4200, 12ull << 30}, {4, 820, 5ull << 30}};
}

TEST(MonitorSim, EveryTableHoldsWhatEveryNodeLastBroadcastAndTheFilesAndTheRequestShowIt) {
  for_each_seed(4, [](std::uint64_t seed) {
    auto machines = std::make_shared<Machines>(four_machines());
    auto w = std::make_shared<Wire>();
    DaemonSimOptions o;
    o.nodes = 4;
    o.link = lossy(seed);
    o.monitor = fast_monitor();
    DaemonSim sim(seed, with_machines(o, machines));
    tap(sim, w);
    ASSERT_TRUE(sim.wait_until([&] { return sim.converged(); })) << sim.driver_error();
    const Nanos members_at = sim.call([&] { return sim.now(); });

    // Bound: a newcomer triggers a record at the next sample, so every row
    // is in within a sample and the broadcast repairs after membership
    // (losses cost a NAK round of 20 ms each); broadcast_ms is the worst case
    // for a record that missed the joiner.
    std::string why;
    const auto took = wait_tables(sim, *w, *machines, all(4), 1000ms + 200ms + 500ms, &why);
    ASSERT_TRUE(took) << why << " (driver: " << sim.driver_error() << ")";
    std::printf("seed %llu: membership at %.0f ms, tables agree %.0f ms later\n",
                static_cast<unsigned long long>(seed), sim_ms(members_at), sim_ms(*took));
    ASSERT_TRUE(w->errors.empty()) << w->errors.front();

    // The files, at one instant of the driver (the tables agree there too).
    sim.call([&] {
      std::string again;
      ASSERT_TRUE(tables_agree(sim, *w, *machines, all(4), &again)) << again;
      const Nanos now = sim.now();
      for (std::size_t i = 0; i < 4; ++i) {
        const auto dir = sim.run_dir(i) / "monitor";
        std::size_t files = 0;
        for (const auto& e : std::filesystem::directory_iterator(dir))
          files += e.path().filename().string()[0] != '.';
        EXPECT_EQ(files, 4u) << dir;
        for (const auto& row : service(sim, i).table().rows(now)) {
          const auto kv = read_file(dir / std::to_string(row.node));
          ASSERT_FALSE(kv.empty());
          const monitor::NodeStats& s = row.stats;
          EXPECT_EQ(kv.at("node"), std::to_string(row.node));
          EXPECT_EQ(kv.at("self"), row.node == DaemonSim::id_of(i) ? "1" : "0");
          EXPECT_EQ(kv.at("state"), "alive");
          EXPECT_EQ(kv.at("epoch"), std::to_string(row.epoch));
          EXPECT_EQ(kv.at("seq"), std::to_string(row.seq));
          EXPECT_EQ(kv.at("hostname"), s.hostname);
          EXPECT_EQ(kv.at("cpus"), std::to_string(s.cpus));
          EXPECT_EQ(kv.at("load1"), fmt::format("{}.{:03}", s.load1_milli / 1000, s.load1_milli % 1000));
          EXPECT_EQ(kv.at("load5"), fmt::format("{}.{:03}", s.load5_milli / 1000, s.load5_milli % 1000));
          EXPECT_EQ(kv.at("mem_available_bytes"), std::to_string(s.mem_available));
          EXPECT_EQ(kv.at("mem_total_bytes"), std::to_string(s.mem_total));
          EXPECT_EQ(kv.at("processes"), std::to_string(s.processes));
          EXPECT_EQ(kv.at("cpu_user_percent"),
                    fmt::format("{}.{}", s.cpu_permille[0] / 10, s.cpu_permille[0] % 10));
          EXPECT_EQ(kv.at("net_eth_0_rx_bytes"), std::to_string(s.nets.at(1).rx_bytes));
          EXPECT_EQ(kv.at("net_lo_tx_bytes"), std::to_string(s.nets.at(0).tx_bytes));
          EXPECT_EQ(kv.at("locabus_tx_frames"), std::to_string(s.locabus.tx_frames));
          EXPECT_EQ(kv.at("locabus_members"), std::to_string(s.locabus_gauges.members));
          for (const auto& f : monitor::LocabusCounters::counter_fields())
            EXPECT_TRUE(kv.count(fmt::format("locabus_{}", f.field.name))) << f.field.name;
          for (const auto& f : monitor::LocabusGauges::counter_fields())
            EXPECT_TRUE(kv.count(fmt::format("locabus_{}", f.field.name))) << f.field.name;
          // Written at most a broadcast interval (plus a sample) ago, in the simulated wall time.
          const auto updated = std::stoull(kv.at("updated_at_ms"));
          const auto wall_ms = static_cast<std::uint64_t>(
              std::chrono::duration_cast<std::chrono::milliseconds>(sim.net().clock().wall()).count());
          EXPECT_LE(updated, wall_ms);
          EXPECT_GE(updated + 1200, wall_ms);
        }
      }
    });

    // The control request, on every node, through its API socket.
    std::vector<std::tuple<std::uint16_t, double, std::uint64_t>> rule_rows;
    for (std::size_t j = 0; j < 4; ++j) {
      const auto& sp = machines->spec[j];
      rule_rows.emplace_back(DaemonSim::id_of(j), sp.load_milli / 1000.0 / sp.cpus, sp.available);
    }
    const auto least = expected_least(rule_rows);
    ASSERT_EQ(least, std::optional<std::uint16_t>(4));  // the machines were chosen so
    for (std::size_t i = 0; i < 4; ++i) {
      const auto r = ask(sim, i, {{"op", "monitor"}});
      ASSERT_TRUE(r.value("ok", false)) << r.dump();
      const auto& m = r.at("monitor");
      EXPECT_EQ(m.at("node"), DaemonSim::id_of(i));
      EXPECT_EQ(m.at("enabled"), true);
      EXPECT_EQ(m.at("sample_ms"), 200);
      EXPECT_EQ(m.at("broadcast_ms"), 1000);
      EXPECT_EQ(m.at("stale_ms"), 3000);
      EXPECT_EQ(m.at("remove_ms"), 6000);
      EXPECT_EQ(m.at("least_loaded"), *least);
      EXPECT_FALSE(m.at("rule").get<std::string>().empty());
      ASSERT_EQ(m.at("nodes").size(), 4u);
      for (std::size_t j = 0; j < 4; ++j) {
        const auto& row = m.at("nodes")[j];
        EXPECT_EQ(row.at("node"), DaemonSim::id_of(j));  // by node id
        EXPECT_EQ(row.at("state"), "alive");
        EXPECT_EQ(row.at("self"), i == j);
        EXPECT_EQ(row.at("hostname"), fmt::format("sim-node-{}", j + 1));
        EXPECT_EQ(row.at("cpus"), machines->spec[j].cpus);
      }
      const auto only = ask(sim, i, {{"op", "monitor"}, {"least_loaded_only", true}});
      ASSERT_TRUE(only.value("ok", false)) << only.dump();
      EXPECT_EQ(only.at("monitor").at("least_loaded"), *least);
      EXPECT_FALSE(only.at("monitor").contains("nodes"));
      const auto bad = ask(sim, i, {{"op", "monitor"}, {"least_loaded_only", 1}});
      EXPECT_EQ(bad.value("ok", true), false);
      EXPECT_EQ(bad.value("errno", 0), EINVAL);
      // The summary: the same rows without the per-device lists.
      const auto summary = ask(sim, i, {{"op", "monitor"}, {"devices", false}});
      ASSERT_TRUE(summary.value("ok", false)) << summary.dump();
      const auto& rows = summary.at("monitor").at("nodes");
      ASSERT_EQ(rows.size(), 4u);
      for (std::size_t j = 0; j < 4; ++j) {
        auto full = m.at("nodes")[j];
        for (const char* key : {"disks", "filesystems", "nets", "cpu_seconds"}) {
          EXPECT_FALSE(rows[j].contains(key)) << key;
          full.erase(key);
        }
        full.erase("age_ms");  // time passed between the two requests
        auto brief = rows[j];
        brief.erase("age_ms");
        // Simulated time went on: a newer sample may have come in between.
        if (brief.at("sampled_at_ms") == full.at("sampled_at_ms") && brief.at("seq") == full.at("seq"))
          EXPECT_EQ(brief, full) << "the summary differs beyond the lists it leaves out";
        else
          EXPECT_EQ(brief.at("node"), full.at("node"));
      }
      EXPECT_EQ(ask(sim, i, {{"op", "monitor"}, {"devices", "no"}}).value("errno", 0), EINVAL);
      // In pages of one row over one connection (liblocabus's and
      // locabusctl's way, here with a limit so that 4 rows take 4 pages):
      // the same rows, in order.
      {
        UniqueFd fd = api::connect_control(sim.socket(i));
        std::vector<nlohmann::json> pages;
        const auto page_ask = [&](const nlohmann::json& req) {
          pages.push_back(api::request(fd.get(), req).at("monitor"));
          return pages.back();
        };
        const auto joined = monitor_rows::fetch_pages(page_ask, {{"op", "monitor"}, {"limit", 1}});
        ASSERT_EQ(pages.size(), 4u);
        for (std::size_t j = 0; j < 4; ++j) {
          ASSERT_EQ(pages[j].at("nodes").size(), 1u);
          EXPECT_EQ(pages[j].value("next", -1), j + 1 < 4 ? DaemonSim::id_of(j + 1) : -1);
          EXPECT_EQ(pages[j].at("least_loaded"), *least);
        }
        ASSERT_EQ(joined.at("nodes").size(), 4u);
        for (std::size_t j = 0; j < 4; ++j) EXPECT_EQ(joined.at("nodes")[j].at("node"), DaemonSim::id_of(j));
        EXPECT_FALSE(joined.contains("next"));
      }
      const auto beyond = ask(sim, i, {{"op", "monitor"}, {"from", 65535}});
      ASSERT_TRUE(beyond.value("ok", false)) << beyond.dump();
      EXPECT_EQ(beyond.at("monitor").at("nodes"), nlohmann::json::array());
      EXPECT_FALSE(beyond.at("monitor").contains("next"));
      for (const auto& bad_page :
           {nlohmann::json{{"from", -1}}, nlohmann::json{{"from", 65536}}, nlohmann::json{{"from", "0"}},
            nlohmann::json{{"limit", 0}}, nlohmann::json{{"limit", 1.5}}}) {
        auto req = bad_page;
        req["op"] = "monitor";
        const auto refusal = ask(sim, i, req);
        EXPECT_EQ(refusal.value("errno", 0), EINVAL) << req.dump() << " -> " << refusal.dump();
      }
    }

    // Status and the exporter's families.
    sim.call([&] {
      nlohmann::json st;
      sim.server(0).status(st);
      EXPECT_EQ(st.at("monitor").at("enabled"), true);
      EXPECT_EQ(st.at("monitor").at("sample_ms"), 200);
      EXPECT_EQ(st.at("monitor").at("nodes"), 4);
      EXPECT_EQ(st.at("monitor").at("files"), (sim.run_dir(0) / "monitor").string());
      std::string self, cluster;
      sim.server(0).exposition(false, self);
      sim.server(0).exposition(true, cluster);
      EXPECT_NE(self.find("node=\"1\""), std::string::npos);
      EXPECT_EQ(self.find("node=\"2\""), std::string::npos);
      for (int n = 1; n <= 4; ++n) EXPECT_NE(cluster.find(fmt::format("node=\"{}\"", n)), std::string::npos);
      // Every record part counted once somewhere: no part was refused or malformed.
      for (std::size_t i = 0; i < 4; ++i) {
        const auto c = sim.server(i).counters_json()["monitor"];
        EXPECT_EQ(c["parts_malformed"], 0);
        EXPECT_EQ(c["parts_unicast_refused"], 0);
        EXPECT_EQ(c["file_errors"], 0);
        EXPECT_EQ(c["sample_errors"], 0);
        EXPECT_EQ(c["nodes"], 4);
        EXPECT_EQ(c["stale_nodes"], 0);
        EXPECT_EQ(c["parts_sent"], c["records_sent"]);  // a synthetic record fits one part
      }
    });
    // A part sent by unicast (no daemon does; injected into node 1's engine)
    // is refused (LOCABUS_REFUSE_INCOMPLETE, through flow control) and leaves
    // the table alone.
    sim.call([&] {
      const auto parts = monitor::encode_record(machines->last[0], 1, 1);
      ASSERT_TRUE(sim.cluster().node(0).send(2, LOCABUS_P_MONITOR, parts.at(0)));
    });
    ASSERT_TRUE(sim.wait_until([&] { return counter_now(sim, 1, "parts_unicast_refused") == 1; }));
    sim.call([&] {
      const auto row = service(sim, 1).table().row(1, sim.now());
      ASSERT_TRUE(row);
      EXPECT_NE(row->epoch, 1u);
      EXPECT_EQ(sim.server(1).counters_json()["api"]["router"]["flow"]["refused_messages"], 1);
    });
    // The directory goes with the daemon.
    const auto dir = sim.run_dir(0) / "monitor";
    sim.call([&] { sim.crash(0); });
    EXPECT_FALSE(std::filesystem::exists(dir));
  });
}

TEST(MonitorSim, OffAnswersEnotsupAndSendsNothing) {
  auto w = std::make_shared<Wire>();
  DaemonSimOptions o;
  o.nodes = 2;
  o.monitor.enabled = false;
  DaemonSim sim(1, o);
  tap(sim, w);
  ASSERT_TRUE(sim.wait_until([&] { return sim.converged(); })) << sim.driver_error();
  ASSERT_TRUE(sim.wait_for_sim(3s));
  const auto r = ask(sim, 0, {{"op", "monitor"}});
  EXPECT_EQ(r.value("ok", true), false);
  EXPECT_EQ(r.value("errno", 0), 95);
  EXPECT_EQ(r.value("error", ""), "LocaMonitor is off on this daemon");
  EXPECT_EQ(r.value("hint", ""), "start locabusd without --no-monitor ([monitor] enabled = true)");
  sim.call([&] {
    EXPECT_EQ(w->monitor_frames.size(), 0u);
    nlohmann::json st;
    sim.server(0).status(st);
    EXPECT_EQ(st.at("monitor").at("enabled"), false);
    EXPECT_EQ(st.at("monitor").at("nodes"), 0);
    EXPECT_TRUE(st.at("monitor").at("files").is_null());
    EXPECT_EQ(sim.server(0).counters_json()["monitor"]["samples"], 0);
    EXPECT_EQ(service(sim, 0).table().size(), 0u);
    EXPECT_FALSE(std::filesystem::exists(sim.run_dir(0) / "monitor"));
  });
}

// ---- b) a crash: stale, removed, and a restart's new epoch ---------------------------------

TEST(MonitorSim, ACrashedNodeGoesStaleThenIsRemovedAndARestartReplacesItsRow) {
  for_each_seed(3, [](std::uint64_t seed) {
    auto machines = std::make_shared<Machines>(four_machines());
    auto w = std::make_shared<Wire>();
    DaemonSimOptions o;
    o.nodes = 4;
    o.link = lossy(seed);
    o.monitor = fast_monitor();  // stale 3 s, remove 6 s; the engine's dead_after is 4 s
    DaemonSim sim(seed, with_machines(o, machines));
    tap(sim, w);
    ASSERT_TRUE(sim.wait_until([&] { return sim.converged(); })) << sim.driver_error();
    std::string why;
    ASSERT_TRUE(wait_tables(sim, *w, *machines, all(4), 2s, &why)) << why;

    const std::vector<std::size_t> others{0, 1, 2};
    auto row_state = [&](std::size_t i, std::uint16_t node) -> std::optional<monitor::NodeView> {
      return service(sim, i).table().row(node, sim.now());
    };
    auto file_of = [&](std::size_t i, std::uint16_t node) {
      return sim.run_dir(i) / "monitor" / std::to_string(node);
    };

    // Node 4 crashes, and comes back before it is removed.
    const Nanos crashed = sim.call([&] {
      sim.crash(3);
      return sim.now();
    });
    Nanos stale_at{};
    Nanos heard_max{}, heard_min = Nanos::max();
    ASSERT_TRUE(sim.wait_until([&] {
      for (const auto i : others) {
        const auto r = row_state(i, 4);
        if (!r || r->state != monitor::NodeState::stale) return false;
      }
      stale_at = sim.now();
      for (const auto i : others) {
        const auto r = row_state(i, 4);
        EXPECT_GE(r->age, 3000ms) << "stale after less than stale_ms of silence";
        heard_max = std::max(heard_max, sim.now() - r->age);
        heard_min = std::min(heard_min, sim.now() - r->age);
      }
      return true;
    }));
    // Its last record was heard before the crash and at most broadcast_ms
    // (plus repairs) before it, so it is stale by crash + stale_ms at the
    // latest; kPoll is how late the test's polling may notice.
    EXPECT_LE(heard_max, crashed);
    EXPECT_GE(heard_min, crashed - 1000ms - 200ms);
    EXPECT_LE(stale_at - crashed, 3000ms + kPoll) << sim_ms(stale_at - crashed);
    std::printf("seed %llu: stale %.0f ms after the crash\n", static_cast<unsigned long long>(seed),
                sim_ms(stale_at - crashed));
    sim.call([&] {
      for (const auto i : others) EXPECT_EQ(read_file(file_of(i, 4)).at("state"), "stale");
      EXPECT_EQ(sim.server(0).counters_json()["monitor"]["stale_nodes"], 1);
    });

    const std::uint32_t old_epoch = w->latest.at(4).epoch;
    const Nanos restarted = sim.call([&] {
      sim.restart(3);
      return sim.now();
    });
    const std::uint32_t new_epoch = sim.call([&] { return service(sim, 3).epoch(); });
    ASSERT_NE(new_epoch, old_epoch);
    ASSERT_TRUE(sim.wait_until([&] { return sim.converged(); })) << sim.driver_error();
    const auto took = wait_tables(sim, *w, *machines, all(4), 6s, &why);
    ASSERT_TRUE(took) << why;
    sim.call([&] {
      for (const auto i : others) {
        const auto r = row_state(i, 4);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->epoch, new_epoch);
        EXPECT_EQ(r->state, monitor::NodeState::alive);
        EXPECT_EQ(read_file(file_of(i, 4)).at("epoch"), std::to_string(new_epoch));
      }
    });
    std::printf("seed %llu: restarted node's row replaced %.0f ms after its restart\n",
                static_cast<unsigned long long>(seed),
                sim_ms(sim.call([&] { return sim.now(); }) - restarted));

    // Node 3 crashes for good: stale, then removed, its files gone.
    const Nanos crashed3 = sim.call([&] {
      sim.crash(2);
      return sim.now();
    });
    const std::vector<std::size_t> rest{0, 1, 3};
    Nanos removed_at{};
    ASSERT_TRUE(sim.wait_until([&] {
      for (const auto i : rest)
        if (row_state(i, 3)) return false;
      removed_at = sim.now();
      return true;
    }));
    EXPECT_LE(removed_at - crashed3, 6000ms + kPoll) << sim_ms(removed_at - crashed3);
    EXPECT_GE(removed_at - crashed3, 6000ms - 1000ms - 200ms) << sim_ms(removed_at - crashed3);
    std::printf("seed %llu: removed %.0f ms after the crash\n", static_cast<unsigned long long>(seed),
                sim_ms(removed_at - crashed3));
    sim.call([&] {
      for (const auto i : rest) {
        EXPECT_FALSE(std::filesystem::exists(file_of(i, 3)));
        EXPECT_EQ(service(sim, i).table().size(), 3u);
      }
    });
  });
}

// ---- c) the broadcast rule --------------------------------------------------------------

TEST(MonitorSim, ALoadJumpIsBroadcastAtTheNextSampleAndASteadyNodeEveryBroadcastInterval) {
  auto machines = std::make_shared<Machines>(four_machines());
  auto w = std::make_shared<Wire>();
  DaemonSimOptions o;
  o.nodes = 4;  // a clean network: the timing is the rule's alone
  o.monitor.sample_ms = 250;
  o.monitor.broadcast_ms = 2000;
  o.monitor.stale_ms = 6000;
  o.monitor.remove_ms = 12000;
  DaemonSim sim(7, with_machines(o, machines));
  tap(sim, w);
  ASSERT_TRUE(sim.wait_until([&] { return sim.converged(); })) << sim.driver_error();
  std::string why;
  ASSERT_TRUE(wait_tables(sim, *w, *machines, all(4), 3s, &why)) << why;
  ASSERT_TRUE(sim.wait_for_sim(2500ms));  // past the joins' records

  // A window of steady load: every node broadcasts every broadcast_ms.
  constexpr auto kWindow = 10s;
  std::vector<std::uint64_t> before(4);
  for (std::size_t i = 0; i < 4; ++i) before[i] = counter(sim, i, "records_sent");
  ASSERT_TRUE(sim.wait_for_sim(kWindow));
  for (std::size_t i = 0; i < 4; ++i) {
    const auto n = counter(sim, i, "records_sent") - before[i];
    EXPECT_GE(n, 5u) << "node " << i + 1;  // 10 s / 2 s
    EXPECT_LE(n, 6u) << "node " << i + 1;
  }

  // Node 2's load jumps (0.2 -> 2.2 per CPU): the others have it within a
  // sample (and the broadcast's delivery), far sooner than broadcast_ms.
  const auto records2 = counter(sim, 1, "records_sent");
  const Nanos jumped = sim.call([&] {
    machines->extra_load_milli[1] = 8000;
    return sim.now();
  });
  Nanos seen{};  // when the last of the others had the record (its row's age tells exactly)
  ASSERT_TRUE(sim.wait_until([&] {
    Nanos last{};
    for (const std::size_t i : {0, 2, 3}) {
      const auto r = service(sim, i).table().row(2, sim.now());
      if (!r || r->stats.load1_milli < 8000) return false;
      last = std::max(last, sim.now() - r->age);
    }
    seen = last;
    return true;
  }));
  EXPECT_LE(seen - jumped, 250ms + 20ms) << sim_ms(seen - jumped);
  std::printf("load jump seen everywhere %.1f ms after it happened (sample_ms 250, broadcast_ms 2000)\n",
              sim_ms(seen - jumped));
  // One record for the jump, then the steady interval again (not one per sample).
  ASSERT_TRUE(sim.wait_for_sim(kWindow));
  const auto n2 = counter(sim, 1, "records_sent") - records2;
  EXPECT_GE(n2, 1u + 4u);
  EXPECT_LE(n2, 1u + 6u);
  // The least-loaded node is still 4 everywhere, and node 2 is now last in line.
  for (std::size_t i = 0; i < 4; ++i) {
    const auto r = ask(sim, i, {{"op", "monitor"}, {"least_loaded_only", true}});
    EXPECT_EQ(r.at("monitor").at("least_loaded"), 4);
  }
}

// ---- d) scale ---------------------------------------------------------------------------------

// A sanitizer build runs this some 12 times slower: 256 nodes would take
// about 8 minutes there, near ctest's 10-minute limit, so it runs the same
// test at 64 nodes (22 s) and the 256-node test says it is skipped.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

/// The scale test at `kNodes` nodes: convergence, then a steady 20 s
/// window's traffic per node, table memory, the whole table by request.
void scale(const std::size_t kNodes) {
  auto machines = std::make_shared<Machines>(Machines::spread(kNodes));
  auto w = std::make_shared<Wire>();
  DaemonSimOptions o;
  o.nodes = kNodes;
  o.quantum = 1ms;
  o.ring_bytes = 64u << 10;  // no client opens an endpoint here
  // 256 daemons write some 13,000 files per simulated second: on a tmpfs,
  // as /run is (on ext4 each rename over a file starts writeback).
  if (std::filesystem::is_directory("/dev/shm")) o.run_base = "/dev/shm";
  // The daemon's monitor defaults: sample 1 s, broadcast 5 s, stale 15 s, remove 60 s.
  DaemonSim sim(11, with_machines(o, machines));
  const auto real_start = std::chrono::steady_clock::now();
  tap(sim, w);
  ASSERT_TRUE(sim.wait_until([&] { return sim.converged(); }, std::chrono::seconds(240)))
      << sim.driver_error();
  const Nanos members_at = sim.call([&] { return sim.now(); });
  std::string why;
  const auto took = wait_tables(sim, *w, *machines, all(kNodes), 10s, &why, std::chrono::seconds(240));
  ASSERT_TRUE(took) << why;
  const Nanos converged_at = members_at + *took;
  // Bound: every node broadcasts at the first sample after a join, so the
  // tables agree within a sample (1 s) of membership, plus delivery and the
  // test's 10 ms between checks (a record a joiner missed would take up to
  // broadcast_ms, 5 s: on this clean network none is missed).
  EXPECT_LE(*took, 1000ms + 500ms);
  std::printf(
      "%zu nodes: membership at %.0f ms, every table holds %zu alive rows agreeing with the wire %.0f ms "
      "later (sim time %.0f ms, real time %.1f s)\n",
      kNodes, sim_ms(members_at), kNodes, sim_ms(*took), sim_ms(converged_at),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - real_start).count());

  // Settle past the joins' records, then a steady window.
  ASSERT_TRUE(sim.wait_for_sim(6s, std::chrono::seconds(120)));
  struct Snap {
    std::vector<std::uint64_t> records, parts;
    Wire wire;
    Nanos at;
    SimStats net;
  };
  auto snap = [&] {
    return sim.call([&] {
      Snap s;
      for (std::size_t i = 0; i < kNodes; ++i) {
        const auto& c = service(sim, i).stats();
        s.records.push_back(c.records_sent);
        s.parts.push_back(c.parts_sent);
      }
      s.wire = *w;
      s.at = sim.now();
      s.net = sim.net().stats();
      return s;
    });
  };
  const auto real_window = std::chrono::steady_clock::now();
  const Snap a = snap();
  ASSERT_TRUE(sim.wait_for_sim(20s, std::chrono::seconds(180)));
  const Snap b = snap();
  const double secs = std::chrono::duration<double>(b.at - a.at).count();
  std::uint64_t records_max = 0, records_min = ~0ull, parts = 0, records = 0;
  for (std::size_t i = 0; i < kNodes; ++i) {
    const auto r = b.records[i] - a.records[i];
    records_max = std::max(records_max, r);
    records_min = std::min(records_min, r);
    records += r;
    parts += b.parts[i] - a.parts[i];
  }
  std::uint64_t wire_monitor = 0;
  for (const auto& [node, n] : b.wire.monitor_frames) {
    const auto it = a.wire.monitor_frames.find(node);
    wire_monitor += n - (it == a.wire.monitor_frames.end() ? 0 : it->second);
  }
  const auto type_delta = [&](std::uint8_t t) { return b.wire.of_type(t) - a.wire.of_type(t); };
  const double per_node_s = static_cast<double>(kNodes) * secs;
  std::printf(
      "%zu nodes, steady %.1f s of sim time (%.1f s real): records per node %llu..%llu (%.3f/s per node), "
      "parts %.3f/s per node; on the wire: monitor DATA frames %.3f/s per node (repairs included, %llu bytes "
      "in all), POLL %.3f/s, ACK %.3f/s, NAK %.3f/s, HEARTBEAT %.3f/s per node; all frames %.2f/s per node\n",
      kNodes, secs, std::chrono::duration<double>(std::chrono::steady_clock::now() - real_window).count(),
      static_cast<unsigned long long>(records_min), static_cast<unsigned long long>(records_max),
      static_cast<double>(records) / per_node_s, static_cast<double>(parts) / per_node_s,
      static_cast<double>(wire_monitor) / per_node_s,
      static_cast<unsigned long long>(b.wire.monitor_bytes - a.wire.monitor_bytes),
      static_cast<double>(type_delta(LOCABUS_T_POLL)) / per_node_s,
      static_cast<double>(type_delta(LOCABUS_T_ACK)) / per_node_s,
      static_cast<double>(type_delta(LOCABUS_T_NAK)) / per_node_s,
      static_cast<double>(type_delta(LOCABUS_T_HEARTBEAT)) / per_node_s,
      static_cast<double>(b.wire.frames - a.wire.frames) / per_node_s);
  // Steady state, no joins: one record every broadcast_ms (5 s) per node,
  // one part each: 4 in 20 s, 5 if the window catches both ends.
  EXPECT_GE(records_min, 4u);
  EXPECT_LE(records_max, 5u);
  EXPECT_EQ(parts, records);
  // On the wire: at most one part per broadcast_ms per node, plus repairs
  // (the network is clean: none expected).
  EXPECT_LE(static_cast<double>(wire_monitor) / per_node_s, 1.0 / 5.0 + 0.01);
  // The broadcast acknowledgement (docs/PROTOCOL.md, "Reliable broadcast"):
  // with 255 members to confirm, two per POLL, a record stays unconfirmed
  // longer than broadcast_ms, so each sender POLLs every poll_interval_max
  // (100 ms) and each POLL draws poll_ackers (2) ACKs. Bounds: 1000 / 100
  // POLLs per second plus 2, and 2 ACKs per POLL.
  const double polls = static_cast<double>(type_delta(LOCABUS_T_POLL)) / per_node_s;
  const double acks = static_cast<double>(type_delta(LOCABUS_T_ACK)) / per_node_s;
  EXPECT_LE(polls, 10.0 + 2.0);
  EXPECT_LE(acks, 2.0 * polls + 0.1);

  // What the senders hold: a record is freed once every member confirmed
  // it, which takes the POLL rotation a round over all members (about
  // members x 100 ms at 256 nodes): a few records, never a growing queue.
  std::size_t held_max = 0;
  sim.call([&] {
    for (std::size_t i = 0; i < kNodes; ++i)
      held_max = std::max(held_max, sim.cluster().node(i).broadcast_info().held);
  });
  const double round_s = static_cast<double>(kNodes - 1) * 0.1;
  std::printf(
      "%zu nodes: broadcast messages held by a sender at most %zu (a POLL rotation round is about %.1f s)\n",
      kNodes, held_max, round_s);
  EXPECT_LE(static_cast<double>(held_max), std::ceil(round_s / 5.0) + 2.0);

  // Memory: rows of at most 4 KiB each.
  std::uint64_t bytes_max = 0;
  sim.call([&] {
    for (std::size_t i = 0; i < kNodes; ++i) {
      const auto c = sim.server(i).counters_json()["monitor"];
      bytes_max = std::max(bytes_max, c["table_bytes"].get<std::uint64_t>());
      EXPECT_EQ(c["nodes"], kNodes);
      EXPECT_EQ(c["stale_nodes"], 0);
    }
  });
  std::printf("%zu nodes: table memory at most %llu bytes per daemon (%.0f bytes per row)\n", kNodes,
              static_cast<unsigned long long>(bytes_max), static_cast<double>(bytes_max) / kNodes);
  EXPECT_LE(bytes_max, kNodes * 4096u);

  // The whole table through the API socket.
  const auto r = ask(sim, 0, {{"op", "monitor"}});
  ASSERT_TRUE(r.value("ok", false)) << r.dump().substr(0, 400);
  EXPECT_EQ(r.at("monitor").at("nodes").size(), kNodes);
  std::printf("%zu nodes: the \"monitor\" reply is %zu bytes\n", kNodes, r.dump().size());
  std::vector<std::tuple<std::uint16_t, double, std::uint64_t>> rule_rows;
  for (std::size_t j = 0; j < kNodes; ++j) {
    const auto& sp = machines->spec[j];
    rule_rows.emplace_back(DaemonSim::id_of(j), sp.load_milli / 1000.0 / sp.cpus, sp.available);
  }
  EXPECT_EQ(r.at("monitor").at("least_loaded"), *expected_least(rule_rows));
  std::printf("%zu nodes: whole test %.1f s real\n", kNodes,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - real_start).count());
}

TEST(MonitorSim, TwoHundredFiftySixNodesConvergeWithinBoundsOfTrafficAndMemory) {
  if (kSanitized)
    GTEST_SKIP() << "256 nodes take about 8 minutes under the sanitizers; SixtyFourNodes runs there";
  scale(256);
}

TEST(MonitorSim, SixtyFourNodesConvergeWithinBoundsOfTrafficAndMemory) { scale(64); }

}  // namespace
}  // namespace locabus::sim
