// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabusctl status|peers|counters (ask a running locabusd) and
// msg send|recv|echo|ping (an application endpoint through liblocabus).
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <iostream>
#include <map>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <locabus/client.hpp>

#include "api/control.hpp"
#include "commands.hpp"
#include "common/counters.hpp"
#include "common/error.hpp"

namespace locabus::ctl {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct DaemonTarget {
  std::string socket;  // empty: $LOCABUS_SOCKET or the default
  bool json = false;
};

std::filesystem::path socket_of(const DaemonTarget& t) {
  return t.socket.empty() ? api::default_socket_path() : std::filesystem::path(t.socket);
}

void add_daemon_options(CLI::App* cmd, DaemonTarget& t) {
  cmd->add_option("-s,--socket", t.socket,
                  "locabusd's API socket (default: $LOCABUS_SOCKET, else /run/locabus/locabusd.sock)");
  cmd->add_flag("--json", t.json, "Print machine-readable JSON");
}

json ask(const DaemonTarget& t, const std::string& op) {
  UniqueFd fd = api::connect_control(socket_of(t));
  return api::request(fd.get(), {{"op", op}});
}

std::string us_text(std::int64_t us) {
  if (us <= 0) return "-";
  if (us < 10'000) return fmt::format("{}us", us);
  return fmt::format("{:.1f}ms", us / 1000.0);
}

void flatten(const json& j, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it)
      flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
  } else if (j.is_array()) {
    for (std::size_t i = 0; i < j.size(); ++i) flatten(j[i], prefix + "[" + std::to_string(i) + "]", out);
  } else {
    out.emplace_back(prefix, j.is_string() ? j.get<std::string>() : j.dump());
  }
}

void print_status(const json& s) {
  fmt::print("node {} on {} ({}), mac {}, pid {}\n", s.value("node_id", 0), s.value("iface", ""),
             s.value("datapath_detail", ""), s.value("mac", ""), s.value("pid", 0));
  fmt::print("epoch {}, up {:.1f}s, idle strategy {}, {} client(s)\n", s.value("epoch", std::uint64_t{0}),
             s.value("uptime_s", 0.0), s.value("idle_strategy", ""), s.value("clients", 0));
  std::string members;
  for (auto it = s["members"].begin(); it != s["members"].end(); ++it)
    members += fmt::format("{}{} {}", members.empty() ? "" : ", ", it.value().get<int>(), it.key());
  fmt::print("members: {} live{}{}\n", s.value("live_members", 0), members.empty() ? "" : " (",
             members.empty() ? "" : members + ")");
  if (s.contains("xdp"))
    fmt::print("xdp: program {} ({}), pins {}\n", s["xdp"].value("program_id", 0), s["xdp"].value("mode", ""),
               s["xdp"].value("pin_dir", ""));
  fmt::print("api: {}\n", s.value("api_socket", ""));
}

void print_peers(const json& peers) {
  if (peers.empty()) {
    fmt::print("no peers yet (discovery runs for a minute after start; are other nodes up?)\n");
    return;
  }
  fmt::print("{:>5}  {:<17}  {:<8}  {:>20}  {:<12}  {:>8}  {:>8}  {:>8}  {:>6}\n", "NODE", "MAC", "STATE",
             "EPOCH", "CONNECTION", "RTT", "RETRANS", "INFLIGHT", "WINDOW");
  for (const auto& p : peers)
    fmt::print("{:>5}  {:<17}  {:<8}  {:>20}  {:<12}  {:>8}  {:>8}  {:>8}  {:>6}\n", p.value("node", 0),
               p.value("mac", ""), p.value("state", ""), p.value("epoch", std::uint64_t{0}),
               p.value("connection", ""), us_text(p.value("rtt_us", std::int64_t{0})),
               p.value("retransmits", std::uint64_t{0}), p.value("in_flight", 0), p.value("window", 0));
}

// ---- counters -------------------------------------------------------------------

struct CountersOptions {
  DaemonTarget target;
  bool describe = false;
  bool prometheus = false;
};

std::string sample_text(const CounterSample& s) {
  if (s.kind == CounterKind::flag) return s.value ? "true" : "false";
  return std::to_string(s.value);
}

// One block per group (one per peer), in the daemon's order: its fields
// from their definitions (the reply's "schema"); hand-made JSON groups
// flattened.
void print_counters(const json& reply, bool describe) {
  if (!reply.contains("schema")) {  // a daemon from before the registry: its keys as they come
    std::vector<std::pair<std::string, std::string>> rows;
    flatten(reply, "", rows);
    std::size_t w = 0;
    for (const auto& [k, v] : rows) w = std::max(w, k.size());
    for (const auto& [k, v] : rows) fmt::print("{:<{}}  {}\n", k, w, v);
    return;
  }
  const CounterGroups groups = counters_from_json(reply, reply.at("schema"));
  bool first = true;
  for (const auto& g : groups) {
    std::string title = g.name.empty() ? "daemon" : g.name;
    for (const auto& [k, v] : g.labels) title += fmt::format(" {}={}", k, v);
    fmt::print("{}{}: {}\n", first ? "" : "\n", title, g.description);
    first = false;
    struct Row {
      std::string name, value;
      std::string_view kind, description;
    };
    std::vector<Row> rows;
    for (const auto& s : g.samples)
      rows.push_back({s.name, sample_text(s), to_string(s.kind), s.description});
    for (const auto& [k, v] : g.info) rows.push_back({k, v, "info", ""});
    if (g.json) {
      std::vector<std::pair<std::string, std::string>> flat;
      flatten(*g.json, "", flat);
      for (auto& [k, v] : flat) rows.push_back({std::move(k), std::move(v), "", ""});
    }
    std::size_t wn = 0, wv = 0;
    for (const auto& r : rows) {
      wn = std::max(wn, r.name.size());
      wv = std::max(wv, r.value.size());
    }
    for (const auto& r : rows) {
      if (describe && !r.kind.empty())
        fmt::print("  {:<{}}  {:>{}}  {:<7}  {}\n", r.name, wn, r.value, wv, r.kind, r.description);
      else
        fmt::print("  {:<{}}  {:>{}}\n", r.name, wn, r.value, wv);
    }
  }
}

void run_counters(const CountersOptions& o) {
  json j = ask(o.target, "counters")["counters"];
  if (o.prometheus) {
    if (!j.contains("schema"))
      throw Error("locabusd sent no counter schema (an older daemon): cannot name the metrics", ENOTSUP,
                  "use --json");
    const json st = ask(o.target, "status")["status"];
    const CounterGroups groups = counters_from_json(j, j.at("schema"));
    std::cout << prometheus_text(groups, {{"node", std::to_string(st.value("node_id", 0))}});
    return;
  }
  if (o.target.json) {
    if (!o.describe) j.erase("schema");  // the values only, as before the registry
    std::cout << j.dump(2) << "\n";
    return;
  }
  print_counters(j, o.describe);
}

// ---- msg send / recv ------------------------------------------------------------

struct MsgOptions {
  DaemonTarget target;
  int proto = LOCABUS_PROTO_DEFAULT;
  std::string to;
  std::vector<std::string> text;
  std::uint64_t count = 1;
  std::size_t size = 0;
  bool sequence = false;
  double timeout_s = 10;
  bool wait_peer = true;
  double rate = 0;      // send: messages per second, 0 = as fast as possible
  bool settle = false;  // send: wait until every message is acknowledged or reported failed
};

// A sequenced payload: 8-byte little-endian number, then a pattern derived
// from it, so the receiver can check order, duplicates and contents.
void fill_sequenced(std::vector<std::byte>& buf, std::uint64_t seq) {
  for (int i = 0; i < 8 && i < static_cast<int>(buf.size()); ++i)
    buf[i] = static_cast<std::byte>(seq >> (8 * i));
  for (std::size_t i = 8; i < buf.size(); ++i) buf[i] = static_cast<std::byte>((seq * 131 + i) & 0xff);
}

std::optional<std::uint64_t> check_sequenced(std::span<const std::byte> p) {
  if (p.size() < 8) return std::nullopt;
  std::uint64_t seq = 0;
  for (int i = 0; i < 8; ++i) seq |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  for (std::size_t i = 8; i < p.size(); ++i)
    if (p[i] != static_cast<std::byte>((seq * 131 + i) & 0xff)) return std::nullopt;
  return seq;
}

/// Unix time in seconds of a steady-clock instant (namespaces share the
/// clock: locabus-bench compares these across processes).
double unix_time(Clock::time_point t) {
  const auto now = Clock::now();
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count() -
         std::chrono::duration<double>(now - t).count();
}

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
}

void wait_for_peer(Endpoint& ep, std::uint16_t node, double timeout_s) {
  const auto until = Clock::now() + to_ms(timeout_s);
  for (;;) {
    for (const auto& p : ep.peers())
      if (p.node == node && (p.state == "alive" || p.state == "suspect")) return;
    if (Clock::now() >= until)
      throw Error(fmt::format("node {} did not join within {}s", node, timeout_s), ETIMEDOUT,
                  "is its locabusd running on the same link? `locabusctl peers` lists what this node sees");
    ep.wait_event(std::chrono::milliseconds(100));
  }
}

int run_send(const MsgOptions& o) {
  const auto node = node_id_option(o.to, "--to");
  if (o.sequence && o.size < 8) throw CLI::ValidationError("--size", "--sequence needs --size of at least 8");
  EndpointOptions eo;
  eo.socket_path = o.target.socket;
  eo.protocol = static_cast<std::uint8_t>(o.proto);
  eo.events = true;
  Endpoint ep = Endpoint::open(eo);
  if (o.wait_peer) wait_for_peer(ep, node, o.timeout_s);

  std::vector<std::byte> buf;
  if (!o.sequence) {
    std::string text;
    for (const auto& t : o.text) text += (text.empty() ? "" : " ") + t;
    if (o.size) text.resize(o.size, '.');
    buf.resize(text.size());
    std::memcpy(buf.data(), text.data(), text.size());
  } else {
    buf.resize(o.size);
  }
  const auto start = Clock::now();
  auto last_report = start;
  std::uint64_t failed = 0;
  auto on_event = [&](const Event& e) {
    if (e.kind == LOCABUS_EV_SEND_FAILED && e.node == node) {
      failed += e.count;
      std::cerr << "locabusctl: " << e.to_string() << "\n";
    }
  };
  for (std::uint64_t i = 0; i < o.count; ++i) {
    if (o.rate > 0)
      std::this_thread::sleep_until(
          start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(i / o.rate)));
    if (o.sequence) fill_sequenced(buf, i);
    const auto st = ep.send(node, buf, to_ms(o.timeout_s));
    if (st == SendStatus::would_block)
      throw Error(fmt::format("message {} could not be queued within {}s", i, o.timeout_s), EAGAIN,
                  "the peer or the daemon is not keeping up; check `locabusctl peers`");
    if (st != SendStatus::ok) throw Error(fmt::format("message {} refused", i), EINVAL);
    while (auto e = ep.next_event()) on_event(*e);
    if (o.count >= 10000 && !o.target.json && Clock::now() - last_report > std::chrono::seconds(1)) {
      last_report = Clock::now();
      std::cerr << fmt::format("  sent {}/{}\n", i + 1, o.count);
    }
  }
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  // --settle: the daemon's queue for the node (in flight included) empties
  // as messages are acknowledged or fail; seen empty twice in a row, so a
  // last send still in the ring to the daemon is not missed.
  bool settled = false;
  if (o.settle) {
    const auto until = Clock::now() + to_ms(o.timeout_s);
    for (int empty = 0; empty < 2 && Clock::now() < until;) {
      std::uint64_t queued = 0;
      // (the reply must outlive the loop: ranging over a member of a temporary reads freed memory)
      const json reply = ask(o.target, "peers");
      for (const auto& p : reply.at("peers"))
        if (p.value("node", 0) == node) queued = p.value("queued", std::uint64_t{0});
      empty = queued == 0 ? empty + 1 : 0;
      if (auto e = ep.wait_event(std::chrono::milliseconds(50))) on_event(*e);
    }
    while (auto e = ep.next_event()) on_event(*e);
    settled = Clock::now() < until;
  }
  if (o.target.json) {
    json j{{"to", node},
           {"sent", o.count},
           {"bytes", buf.size()},
           {"seconds", secs},
           {"failed", failed},
           {"started_at", unix_time(start)},
           {"finished_at", unix_time(start) + secs}};
    if (o.settle) j["settled"] = settled;
    std::cout << j.dump() << "\n";
  } else {
    fmt::print("queued {} message(s) of {} bytes for node {} in {:.3f}s ({:.0f} msg/s){}\n", o.count,
               buf.size(), node, secs, secs > 0 ? o.count / secs : 0.0,
               o.settle ? fmt::format("; {} failed", failed) : std::string{});
    if (o.settle && !settled)
      std::cerr << fmt::format("locabusctl: messages still queued for node {} after {}s\n", node,
                               o.timeout_s);
  }
  return failed || (o.settle && !settled) ? 1 : 0;
}

int run_recv(const MsgOptions& o) {
  EndpointOptions eo;
  eo.socket_path = o.target.socket;
  eo.protocol = static_cast<std::uint8_t>(o.proto);
  eo.events = false;
  Endpoint ep = Endpoint::open(eo);
  if (!o.target.json && o.count > 1)
    std::cerr << fmt::format("receiving {} message(s) on protocol {}\n", o.count, o.proto);

  std::uint64_t got = 0, bad = 0, out_of_order = 0, missing = 0, backwards = 0;
  // Per sender: order is checked for each sender's numbering separately.
  struct FromNode {
    std::uint64_t next_seq = 0, received = 0, out_of_order = 0;
  };
  std::map<std::uint16_t, FromNode> from;
  std::optional<Clock::time_point> first;
  Clock::time_point last{};
  auto last_report = Clock::now();
  json messages = json::array();
  while (got < o.count) {
    auto m = ep.receive(to_ms(o.timeout_s));
    if (!m) break;
    last = Clock::now();
    if (!first) first = last;
    ++got;
    if (o.sequence) {
      auto seq = check_sequenced(m->data);
      auto& f = from[m->node];
      ++f.received;
      if (!seq) {
        ++bad;
      } else if (*seq != f.next_seq) {
        ++f.out_of_order;
        // Ahead: the messages in between are missing (a sender reports
        // them failed); behind: a duplicate or a reordering.
        if (*seq > f.next_seq)
          missing += *seq - f.next_seq;
        else
          ++backwards;
        if (out_of_order++ < 5)
          std::cerr << fmt::format("locabusctl: from node {}: message {} where {} was expected\n", m->node,
                                   *seq, f.next_seq);
        f.next_seq = *seq + 1;
      } else {
        ++f.next_seq;
      }
    } else if (o.target.json) {
      messages.push_back({{"from", m->node}, {"text", std::string(m->text())}});
    } else {
      fmt::print("node {}: {}\n", m->node, m->text());
      std::fflush(stdout);
    }
    if (o.count >= 10000 && !o.target.json && Clock::now() - last_report > std::chrono::seconds(1)) {
      last_report = Clock::now();
      std::cerr << fmt::format("  received {}/{}\n", got, o.count);
    }
  }
  const double secs = first ? std::chrono::duration<double>(Clock::now() - *first).count() : 0.0;
  const bool ok = got == o.count && bad == 0 && out_of_order == 0;
  if (o.target.json) {
    json j{{"received", got}, {"expected", o.count}, {"seconds", secs}, {"ok", ok}};
    j["started_at"] = first ? json(unix_time(*first)) : json(nullptr);
    j["finished_at"] = first ? json(unix_time(last)) : json(nullptr);
    if (o.sequence) {
      j["corrupt"] = bad;
      j["out_of_order"] = out_of_order;
      j["missing"] = missing;
      j["backwards"] = backwards;
      json senders = json::array();
      for (const auto& [node, f] : from)
        senders.push_back({{"node", node}, {"received", f.received}, {"out_of_order", f.out_of_order}});
      j["senders"] = senders;
    } else {
      j["messages"] = messages;
    }
    std::cout << j.dump() << "\n";
  } else if (o.sequence || o.count > 1) {
    fmt::print("received {}/{} message(s) in {:.3f}s{}\n", got, o.count, secs,
               o.sequence ? fmt::format(", {} corrupt, {} out of order", bad, out_of_order) : "");
    if (from.size() > 1)
      for (const auto& [node, f] : from)
        fmt::print("  from node {}: {} message(s), {} out of order\n", node, f.received, f.out_of_order);
  }
  if (got < o.count && !o.target.json)
    std::cerr << fmt::format("locabusctl: timed out after {}s with {}/{} message(s)\n", o.timeout_s, got,
                             o.count);
  return ok ? 0 : 1;
}

// ---- msg echo / ping ------------------------------------------------------------

volatile std::sig_atomic_t g_stop = 0;

void on_stop_signal(int) { g_stop = 1; }

// SIGINT/SIGTERM end echo and ping with their summary; the loops wait in
// short slices, so they notice within kSlice.
void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

constexpr std::chrono::milliseconds kSlice{100};

struct PingOptions {
  MsgOptions msg;
  std::uint64_t max_failures = 10;
  std::uint64_t warmup = 0;  // round trips before the measured --count, not in the times
};

// Echoes every message back to its sender (unchanged, same protocol) until
// --count have been echoed, nothing arrived for --timeout seconds (if set),
// or SIGINT/SIGTERM.
int run_echo(const MsgOptions& o) {
  EndpointOptions eo;
  eo.socket_path = o.target.socket;
  eo.protocol = static_cast<std::uint8_t>(o.proto);
  eo.events = true;  // send_failed for the echoes (membership events are skipped)
  Endpoint ep = Endpoint::open(eo);
  install_stop_handlers();
  if (!o.target.json)
    std::cerr << fmt::format("echoing messages on protocol {}{} (Ctrl-C to stop)\n", o.proto,
                             o.count ? fmt::format(" until {} were echoed", o.count) : "");

  const auto send_timeout = to_ms(o.timeout_s > 0 ? o.timeout_s : 10.0);
  std::uint64_t echoed = 0, failed = 0, bad = 0, out_of_order = 0;
  std::map<std::uint16_t, std::uint64_t> from, next_seq;
  std::optional<Clock::time_point> first;
  auto last_heard = Clock::now();
  auto last_report = Clock::now();
  std::uint64_t reported = 0;
  bool idle_timeout = false;
  while (!g_stop && (o.count == 0 || echoed < o.count)) {
    auto m = ep.receive(kSlice);
    while (auto e = ep.next_event())
      if (e->kind == LOCABUS_EV_SEND_FAILED) {
        failed += e->count;
        std::cerr << "locabusctl: echo failed: " << e->to_string() << "\n";
      }
    if (!m) {
      if (o.timeout_s > 0 && Clock::now() - last_heard >= to_ms(o.timeout_s)) {
        idle_timeout = true;
        break;
      }
    } else {
      last_heard = Clock::now();
      if (!first) first = last_heard;
      if (o.sequence) {
        if (auto seq = check_sequenced(m->data); !seq) {
          ++bad;
        } else if (*seq != next_seq[m->node]) {
          if (out_of_order++ < 5)
            std::cerr << fmt::format("locabusctl: from node {}: message {} where {} was expected\n", m->node,
                                     *seq, next_seq[m->node]);
          next_seq[m->node] = *seq + 1;
        } else {
          ++next_seq[m->node];
        }
      }
      const auto st = ep.send(m->node, m->data, send_timeout);
      if (st == SendStatus::would_block)
        throw Error(
            fmt::format("the echo of message {} to node {} could not be queued within {}ms", echoed, m->node,
                        send_timeout.count()),
            EAGAIN,
            "node " + std::to_string(m->node) + " or the daemon is not keeping up; check `locabusctl peers`");
      if (st != SendStatus::ok) throw Error(fmt::format("the echo to node {} was refused", m->node), EINVAL);
      ++echoed;
      ++from[m->node];
    }
    if (!o.target.json && echoed != reported && Clock::now() - last_report > std::chrono::seconds(1)) {
      last_report = Clock::now();
      reported = echoed;
      std::cerr << fmt::format("  echoed {}{}\n", echoed, o.count ? fmt::format("/{}", o.count) : "");
    }
  }
  const double secs = first ? std::chrono::duration<double>(Clock::now() - *first).count() : 0.0;
  const bool complete = o.count == 0 || echoed == o.count;
  const bool ok = complete && failed == 0 && bad == 0 && out_of_order == 0;
  if (o.target.json) {
    json by_node = json::object();
    for (const auto& [n, k] : from) by_node[std::to_string(n)] = k;
    json j{{"echoed", echoed},
           {"from", by_node},
           {"failed", failed},
           {"seconds", secs},
           {"ok", ok},
           {"interrupted", g_stop != 0},
           {"idle_timeout", idle_timeout}};
    if (o.count) j["expected"] = o.count;
    if (o.sequence) {
      j["corrupt"] = bad;
      j["out_of_order"] = out_of_order;
    }
    std::cout << j.dump() << "\n";
  } else {
    std::string senders;
    for (const auto& [n, k] : from)
      senders += fmt::format("{}{} from node {}", senders.empty() ? "" : ", ", k, n);
    fmt::print("echoed {} message(s){} in {:.3f}s{}{}\n", echoed, senders.empty() ? "" : " (" + senders + ")",
               secs, failed ? fmt::format(", {} echo(es) failed", failed) : "",
               o.sequence ? fmt::format(", {} corrupt, {} out of order", bad, out_of_order) : "");
  }
  if (!complete)
    std::cerr << fmt::format(
        "locabusctl: {} after {}/{} echo(es)\n",
        idle_timeout ? fmt::format("nothing arrived for {}s", o.timeout_s) : "interrupted", echoed, o.count);
  return ok ? 0 : 1;
}

// Nearest-rank percentile of sorted round-trip times, in microseconds.
double percentile_us(const std::vector<std::int64_t>& sorted_ns, double p) {
  if (sorted_ns.empty()) return 0;
  auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted_ns.size())));
  rank = std::clamp<std::size_t>(rank, 1, sorted_ns.size());
  return static_cast<double>(sorted_ns[rank - 1]) / 1000.0;
}

// Sends one numbered message to --to, waits for its echo (`msg echo` there),
// and repeats --count times: round trips, failures and round-trip times.
int run_ping(const PingOptions& po) {
  const MsgOptions& o = po.msg;
  const auto node = node_id_option(o.to, "--to");
  if (o.size < 8)
    throw CLI::ValidationError("--size", "ping needs --size of at least 8 (the round trip's number)");
  EndpointOptions eo;
  eo.socket_path = o.target.socket;
  eo.protocol = static_cast<std::uint8_t>(o.proto);
  eo.events = true;
  Endpoint ep = Endpoint::open(eo);
  if (o.wait_peer) wait_for_peer(ep, node, o.timeout_s);
  install_stop_handlers();

  std::vector<std::byte> buf(o.size);
  std::vector<std::int64_t> rtts;
  rtts.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(o.count, 10'000'000)));
  std::uint64_t sent = 0, answered = 0, timed_out = 0, send_failed = 0, failed = 0, late = 0, corrupt = 0,
                unexpected = 0;
  const auto timeout = to_ms(o.timeout_s);
  auto start = Clock::now();
  auto last_report = start;
  std::uint64_t last_answered = 0;
  const std::uint64_t total = o.count + po.warmup;
  std::int64_t window_ns = 0;
  std::string first_failure;
  auto note_failure = [&](const std::string& what) {
    ++failed;
    if (first_failure.empty()) first_failure = what;
    std::cerr << "locabusctl: " << what << "\n";
  };
  for (std::uint64_t i = 0; i < total && !g_stop && failed < po.max_failures; ++i) {
    if (i == po.warmup) start = Clock::now();  // the measured round trips begin
    fill_sequenced(buf, i);
    const auto t0 = Clock::now();
    const auto st = ep.send(node, buf, timeout);
    if (st == SendStatus::would_block)
      throw Error(fmt::format("round trip {}: the message could not be queued within {}s", i, o.timeout_s),
                  EAGAIN, "the daemon is not keeping up; check `locabusctl peers`");
    if (st != SendStatus::ok) throw Error(fmt::format("round trip {}: the message was refused", i), EINVAL);
    ++sent;
    const auto deadline = t0 + timeout;
    bool done = false;
    while (!done) {
      const auto now = Clock::now();
      if (now >= deadline) {
        ++timed_out;
        note_failure(
            fmt::format("round trip {} to node {}: no echo within {}s (is `locabusctl msg echo --proto {}` "
                        "running there? "
                        "`locabusctl peers` shows the connection)",
                        i, node, o.timeout_s, o.proto));
        break;
      }
      if (g_stop) break;
      auto m = ep.receive(std::min(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
                                       std::chrono::milliseconds(1),
                                   kSlice));
      if (m) {
        const auto seq = check_sequenced(m->data);
        if (m->node != node || m->broadcast) {
          ++unexpected;
        } else if (!seq || m->data.size() != buf.size()) {
          ++corrupt;
        } else if (*seq < i) {
          ++late;  // the echo of a round trip that timed out
        } else if (*seq > i) {
          ++unexpected;
        } else {
          const std::int64_t ns =
              std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
          if (i >= po.warmup) {  // the warm-up's round trips are not measured
            rtts.push_back(ns);
            window_ns += ns;
            ++answered;
          }
          done = true;
        }
      }
      while (auto e = ep.next_event())
        if (e->kind == LOCABUS_EV_SEND_FAILED && e->node == node) {
          send_failed += e->count;
          if (!done) {
            note_failure(fmt::format("round trip {}: {}", i, e->to_string()));
            done = true;
          } else {
            std::cerr << "locabusctl: " << e->to_string() << "\n";
          }
        }
    }
    if (!o.target.json && Clock::now() - last_report > std::chrono::seconds(1)) {
      const auto n = answered - last_answered;
      std::cerr << fmt::format("  {}/{} round trips, {} failed, mean {} over the last {}\n", i + 1, total,
                               failed, n ? us_text(window_ns / static_cast<std::int64_t>(n) / 1000) : "-", n);
      last_report = Clock::now();
      last_answered = answered;
      window_ns = 0;
    }
  }
  // Echoes still on their way, or a failure reported after the last round trip.
  while (auto e = ep.next_event())
    if (e->kind == LOCABUS_EV_SEND_FAILED && e->node == node) {
      send_failed += e->count;
      std::cerr << "locabusctl: " << e->to_string() << "\n";
    }
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::sort(rtts.begin(), rtts.end());
  double mean_us = 0;
  for (auto ns : rtts) mean_us += static_cast<double>(ns) / 1000.0;
  if (!rtts.empty()) mean_us /= static_cast<double>(rtts.size());
  const bool interrupted = g_stop != 0;
  const bool ok = answered == o.count && failed == 0 && send_failed == 0 && corrupt == 0 && unexpected == 0;
  if (o.target.json) {
    json j{{"to", node},
           {"proto", o.proto},
           {"size", o.size},
           {"count", o.count},
           {"warmup", po.warmup},
           {"sent", sent},
           {"answered", answered},
           {"failed", failed},
           {"timed_out", timed_out},
           {"send_failed", send_failed},
           {"late", late},
           {"corrupt", corrupt},
           {"unexpected", unexpected},
           {"seconds", secs},
           {"rate", secs > 0 ? static_cast<double>(answered) / secs : 0.0},
           {"rtt_us", json(nullptr)},  // below: only when some round trip was answered
           {"interrupted", interrupted},
           {"ok", ok}};
    if (!rtts.empty())
      j["rtt_us"] = {{"min", percentile_us(rtts, 0)},    {"mean", mean_us},
                     {"p50", percentile_us(rtts, 0.50)}, {"p90", percentile_us(rtts, 0.90)},
                     {"p99", percentile_us(rtts, 0.99)}, {"p999", percentile_us(rtts, 0.999)},
                     {"max", percentile_us(rtts, 1)}};
    if (!first_failure.empty()) j["first_failure"] = first_failure;
    std::cout << j.dump() << "\n";
  } else {
    fmt::print("{} of {} round trip(s) to node {} answered ({} bytes) in {:.3f}s ({:.0f}/s)\n", answered,
               o.count, node, o.size, secs, secs > 0 ? static_cast<double>(answered) / secs : 0.0);
    if (!rtts.empty())
      fmt::print("round trip: min {:.0f}us, p50 {:.0f}us, p99 {:.0f}us, max {:.0f}us, mean {:.0f}us\n",
                 percentile_us(rtts, 0), percentile_us(rtts, 0.5), percentile_us(rtts, 0.99),
                 percentile_us(rtts, 1), mean_us);
    if (late || corrupt || unexpected)
      fmt::print("{} late echo(es), {} corrupt, {} unexpected message(s)\n", late, corrupt, unexpected);
  }
  if (!ok) {
    std::string why;
    if (interrupted)
      why = fmt::format("interrupted after {} of {} round trip(s)", sent, o.count);
    else if (failed >= po.max_failures && sent < total)
      why = fmt::format("gave up after {} failed round trip(s) (--max-failures)", failed);
    else
      why = fmt::format("{} of {} round trip(s) failed ({} timed out, {} message(s) reported failed)", failed,
                        o.count, timed_out, send_failed);
    if (corrupt || unexpected)
      why += fmt::format("; {} corrupt and {} unexpected message(s)", corrupt, unexpected);
    std::cerr << "locabusctl: ping: " << why << (first_failure.empty() ? "" : "; first: " + first_failure)
              << "\n";
  }
  return ok ? 0 : 1;
}

struct EventOptions {
  DaemonTarget target;
  std::uint64_t count = 0;  // 0: until --until or the timeout
  double timeout_s = 0;     // 0: for ever
  std::string until;        // an event kind
  std::string node;         // only this node's events
};

json event_json(const Event& e) {
  json j{{"kind", e.kind_name()}, {"node", e.node}, {"text", e.to_string()}};
  if (e.epoch) j["epoch"] = e.epoch;
  if (e.old_epoch) j["old_epoch"] = e.old_epoch;
  if (e.failure) j["failure"] = e.failure_name();
  if (e.count) j["count"] = e.count;
  if (e.kind == LOCABUS_EV_BROADCAST_LOST) j["first"] = e.first_message;  // a stream sequence, 0 included
  return j;
}

int run_events(const EventOptions& o) {
  std::optional<std::uint16_t> node;
  if (!o.node.empty()) node = node_id_option(o.node, "--node");
  EndpointOptions eo;
  eo.socket_path = o.target.socket;
  eo.protocol = LOCABUS_PROTO_NONE;
  eo.events = true;
  Endpoint ep = Endpoint::open(eo);
  const auto until = o.timeout_s > 0 ? std::optional(Clock::now() + to_ms(o.timeout_s)) : std::nullopt;
  std::uint64_t seen = 0;
  for (;;) {
    auto wait = std::chrono::milliseconds(-1);
    if (until) {
      wait = std::chrono::duration_cast<std::chrono::milliseconds>(*until - Clock::now());
      if (wait.count() <= 0) break;
    }
    auto e = ep.wait_event(wait);
    if (!e) break;
    if (node && e->node != *node) continue;
    ++seen;
    if (o.target.json)
      std::cout << event_json(*e).dump() << std::endl;
    else
      std::cout << e->to_string() << std::endl;
    if (!o.until.empty() && e->kind_name() == o.until) return 0;
    if (o.count && seen >= o.count) return 0;
  }
  if (!o.until.empty()) {
    std::cerr << fmt::format("locabusctl: no '{}' event within {}s\n", o.until, o.timeout_s);
    return 1;
  }
  return o.count && seen < o.count ? 1 : 0;
}

}  // namespace

void register_daemon_commands(CLI::App& app) {
  auto rq = std::make_shared<std::pair<DaemonTarget, std::string>>();
  auto* request = app.add_subcommand("request",
                                     "Send one raw control request (JSON text) to locabusd and print "
                                     "the reply (for debugging the local API, docs/API.md)");
  add_daemon_options(request, rq->first);
  request->add_option("text", rq->second, "The request, e.g. '{\"op\":\"status\"}'")->required();
  request->callback([rq] {
    UniqueFd fd = api::connect_control(socket_of(rq->first));
    if (::send(fd.get(), rq->second.data(), rq->second.size(), MSG_NOSIGNAL) < 0)
      throw Error("send the request", errno);
    bool timed_out = false;
    auto reply = api::receive_control(fd.get(), nullptr, std::chrono::seconds(10), &timed_out);
    if (!reply)
      throw Error(timed_out ? "no reply within 10 s" : "locabusd closed the connection without a reply");
    std::cout << reply->dump(rq->first.json ? -1 : 2) << "\n";
    if (!reply->value("ok", false)) throw CLI::RuntimeError(1);
  });

  auto ev = std::make_shared<EventOptions>();
  auto* events = app.add_subcommand(
      "events",
      "Print membership events as locabusd reports them (joined, dead, restarted...), and broadcasts "
      "this node will never get (broadcast_lost)");
  add_daemon_options(events, ev->target);
  events->add_option("--count", ev->count, "Stop after this many events");
  events->add_option("--timeout", ev->timeout_s, "Stop after this many seconds (default: never)");
  events->add_option("--until", ev->until, "Stop at the first event of this kind (exit 1 if none came)")
      ->check(CLI::IsMember(
          {"joined", "restarted", "suspect", "alive", "dead", "left", "id_conflict", "broadcast_lost"}));
  events->add_option("--node", ev->node, "Only events about this node");
  events->callback([ev] {
    if (const int rc = run_events(*ev)) throw CLI::RuntimeError(rc);
  });

  auto t = std::make_shared<DaemonTarget>();
  auto* status = app.add_subcommand("status", "Show a running locabusd: node, datapath, members, clients");
  add_daemon_options(status, *t);
  status->callback([t] {
    const json j = ask(*t, "status")["status"];
    if (t->json)
      std::cout << j.dump(2) << "\n";
    else
      print_status(j);
  });

  auto tp = std::make_shared<DaemonTarget>();
  auto* peers =
      app.add_subcommand("peers", "List the peers locabusd knows: id, MAC, state, epoch, RTT, window...");
  add_daemon_options(peers, *tp);
  peers->callback([tp] {
    const json j = ask(*tp, "peers")["peers"];
    if (tp->json)
      std::cout << j.dump(2) << "\n";
    else
      print_peers(j);
  });

  auto tc = std::make_shared<CountersOptions>();
  auto* counters = app.add_subcommand(
      "counters",
      "Engine, transport, XDP and API counters of locabusd, global and per peer (rendered from their "
      "definitions: locabusd sends what each one is)");
  add_daemon_options(counters, tc->target);
  counters->add_flag("-v,--describe", tc->describe,
                     "Also say what each counter is (kind and description); with --json: add the "
                     "\"schema\" key");
  counters
      ->add_flag("--prometheus", tc->prometheus,
                 "Print the Prometheus text exposition (metrics locabus_<group>_<field>, label node)")
      ->excludes("--json");
  counters->callback([tc] { run_counters(*tc); });

  auto* msg = app.add_subcommand(
      "msg", "Send, receive, echo or ping messages through locabusd (an application endpoint)");
  msg->require_subcommand(1);
  auto o = std::make_shared<MsgOptions>();
  auto common = [](CLI::App* c, MsgOptions& m) {
    add_daemon_options(c, m.target);
    c->add_option("-p,--proto", m.proto, "Application protocol id (16-255)")->check(CLI::Range(16, 255));
    c->add_option("--count", m.count, "Number of messages")->check(CLI::PositiveNumber);
    c->add_flag(
        "--sequence", m.sequence,
        "Numbered, patterned payloads; the receiver checks order (per sender), duplicates and contents");
    c->add_option("--timeout", m.timeout_s,
                  "Seconds to wait (for the peer, ring space, or the next message)");
  };
  auto* send = msg->add_subcommand("send", "Send TEXT (or --count numbered messages) to node --to");
  common(send, *o);
  send->add_option("--to", o->to, "Destination node id")->required();
  send->add_option("--size", o->size, "Payload bytes (pads TEXT; needed with --sequence)")
      ->check(CLI::Range(0, LOCABUS_MAX_MESSAGE));
  send->add_option("text", o->text, "Message text");
  send->add_flag("!--no-wait", o->wait_peer, "Do not wait for the destination to be a live member first");
  send->add_option("--rate", o->rate,
                   "Send at most this many messages per second (default: as fast as possible)")
      ->check(CLI::NonNegativeNumber);
  send->add_flag("--settle", o->settle,
                 "After the last send, wait (up to --timeout) until every message is acknowledged or "
                 "reported failed, and count the failures");
  send->callback([o] {
    if (const int rc = run_send(*o)) throw CLI::RuntimeError(rc);
  });
  auto r = std::make_shared<MsgOptions>();
  auto* recv = msg->add_subcommand("recv", "Print messages that arrive (or check --sequence ones)");
  common(recv, *r);
  recv->callback([r] {
    if (const int rc = run_recv(*r)) throw CLI::RuntimeError(rc);
  });
  auto e = std::make_shared<MsgOptions>();
  e->count = 0;
  e->timeout_s = 0;
  auto* echo = msg->add_subcommand(
      "echo",
      "Echo every message back to its sender, until --count were echoed or interrupted (for `msg ping`)");
  common(echo, *e);
  echo->get_option("--count")->description("Stop after echoing this many messages (default: never)");
  echo->get_option("--timeout")
      ->description(
          "Stop when nothing arrived for this many seconds (default: never); also the wait for "
          "ring space");
  echo->get_option("--sequence")
      ->description("Check that each sender's messages are numbered in order (ping's)");
  echo->callback([e] {
    if (const int rc = run_echo(*e)) throw CLI::RuntimeError(rc);
  });
  auto pg = std::make_shared<PingOptions>();
  pg->msg.size = 64;
  auto* ping = msg->add_subcommand(
      "ping",
      "Send a numbered message to node --to, wait for its echo (`msg echo` there), repeat --count times; "
      "report round-trip times and failures");
  add_daemon_options(ping, pg->msg.target);
  ping->add_option("-p,--proto", pg->msg.proto, "Application protocol id (16-255)")
      ->check(CLI::Range(16, 255));
  ping->add_option("--to", pg->msg.to, "The node that echoes")->required();
  ping->add_option("--count", pg->msg.count, "Round trips, one after another")
      ->required()
      ->check(CLI::PositiveNumber);
  ping->add_option("--size", pg->msg.size, "Payload bytes (at least 8; default 64)")
      ->check(CLI::Range(8, LOCABUS_MAX_MESSAGE));
  ping->add_option("--timeout", pg->msg.timeout_s,
                   "Seconds to wait for each echo (a round trip slower than that fails), and for the peer");
  ping->add_option("--max-failures", pg->max_failures, "Stop after this many failed round trips (default 10)")
      ->check(CLI::PositiveNumber);
  ping->add_option("--warmup", pg->warmup,
                   "Round trips before the --count measured ones, on the same endpoint; not in the times, "
                   "the rate or the counts (default 0)");
  ping->add_flag("!--no-wait", pg->msg.wait_peer, "Do not wait for the node to be a live member first");
  ping->callback([pg] {
    if (const int rc = run_ping(*pg)) throw CLI::RuntimeError(rc);
  });
}

}  // namespace locabus::ctl
