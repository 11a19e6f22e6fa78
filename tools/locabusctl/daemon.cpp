// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabusctl status|peers|counters (ask a running locabusd) and
// msg send|recv (an application endpoint through liblocabus).
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <locabus/client.hpp>

#include "api/control.hpp"
#include "commands.hpp"
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
      for (const auto& p : ask(o.target, "peers")["peers"])
        if (p.value("node", 0) == node) queued = p.value("queued", std::uint64_t{0});
      empty = queued == 0 ? empty + 1 : 0;
      if (auto e = ep.wait_event(std::chrono::milliseconds(50))) on_event(*e);
    }
    while (auto e = ep.next_event()) on_event(*e);
    settled = Clock::now() < until;
  }
  if (o.target.json) {
    json j{{"to", node}, {"sent", o.count}, {"bytes", buf.size()}, {"seconds", secs}, {"failed", failed}};
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
  auto last_report = Clock::now();
  json messages = json::array();
  while (got < o.count) {
    auto m = ep.receive(to_ms(o.timeout_s));
    if (!m) break;
    if (!first) first = Clock::now();
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

  auto tc = std::make_shared<DaemonTarget>();
  auto* counters = app.add_subcommand(
      "counters", "Engine, transport, XDP and API counters of locabusd, global and per peer");
  add_daemon_options(counters, *tc);
  counters->callback([tc] {
    const json j = ask(*tc, "counters")["counters"];
    if (tc->json) {
      std::cout << j.dump(2) << "\n";
      return;
    }
    std::vector<std::pair<std::string, std::string>> rows;
    flatten(j, "", rows);
    std::size_t w = 0;
    for (const auto& [k, v] : rows) w = std::max(w, k.size());
    for (const auto& [k, v] : rows) fmt::print("{:<{}}  {}\n", k, w, v);
  });

  auto* msg =
      app.add_subcommand("msg", "Send or receive messages through locabusd (an application endpoint)");
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
}

}  // namespace locabus::ctl
