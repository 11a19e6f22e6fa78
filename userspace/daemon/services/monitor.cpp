// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon/services/monitor.hpp"

#include <cerrno>
#include <chrono>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <tuple>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <locabus/wire.h>

#include "api/control.hpp"
#include "monitor/exposition.hpp"
#include "monitor/record.hpp"

namespace locabus::daemon {

namespace {

using std::chrono::milliseconds;

// While a record waits for room on the broadcast stream, the service wants
// the loop back this soon (an ACK that frees room wakes it earlier anyway).
constexpr engine::Nanos kRetry = std::chrono::milliseconds(10);

constexpr StreamKey kKey = stream_key(LOCABUS_P_MONITOR);

// What the log says once per daemon life (a bit each).
enum Warn : unsigned {
  kSampleFailed = 1u << 0,
  kSamplePartial = 1u << 1,
  kTooLarge = 1u << 2,
  kSendFailed = 1u << 3,
  kUnicast = 1u << 4,
  kMalformed = 1u << 5,
  kFull = 1u << 6,
};

monitor::TableLimits limits_of(const MonitorConfig& cfg) {
  monitor::TableLimits l;
  l.stale_after = milliseconds(cfg.stale_ms);
  l.remove_after = milliseconds(cfg.remove_ms);
  return l;
}

std::uint32_t random_epoch() {
  std::random_device rd;
  std::uint32_t e = 0;
  while (e == 0) e = static_cast<std::uint32_t>(rd());
  return e;
}

}  // namespace

MonitorService::MonitorService(ServiceHost& host, const MonitorConfig& cfg,
                               const std::filesystem::path& run_dir, SampleFn sample, std::uint32_t epoch)
    : host_(host),
      cfg_(cfg),
      files_dir_(run_dir / "monitor"),
      sample_(std::move(sample)),
      table_(host.node_id(), limits_of(cfg)),
      epoch_(epoch != 0 ? epoch : random_epoch()) {
  start_ = host_.clock().now();
  next_sample_ = start_;  // the first sample at the first cycle, broadcast at once
  if (!cfg_.enabled) return;
  if (!sample_) sampler_ = std::make_unique<monitor::Sampler>();
  if (cfg_.files)
    files_.emplace(files_dir_, [](monitor::FileError kind, const std::string& message) {
      spdlog::warn("LocaMonitor: run-dir files ({}): {} (logged once; the files= counters count them all)",
                   monitor::to_string(kind), message);
    });
}

MonitorService::~MonitorService() = default;

OpenResult MonitorService::open(ClientId client, const nlohmann::json& request) {
  (void)client;
  (void)request;
  OpenResult r;
  r.refused = OpenRefused{EINVAL, "LocaMonitor is not opened by clients",
                          "ask the daemon with the \"monitor\" request (locabusctl monitor)"};
  return r;
}

RecordResult MonitorService::on_record(ClientId client, std::uint16_t type, std::uint16_t aux,
                                       std::span<const std::byte> payload, std::uint64_t message) {
  (void)client;
  (void)type;
  (void)aux;
  (void)payload;
  (void)message;
  return RecordResult::broken("LocaMonitor takes no records from clients");
}

void MonitorService::warn_once(unsigned kind, const std::string& message) {
  if (warned_ & kind) return;
  warned_ |= kind;
  spdlog::warn("LocaMonitor: {} (logged once; see locabusctl counters, group monitor)", message);
}

std::uint64_t MonitorService::unix_ms() const noexcept {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<milliseconds>(host_.clock().wall()).count());
}

// ---- sampling and broadcasting --------------------------------------------------------

void MonitorService::fill_locabus(monitor::NodeStats& s, engine::Nanos now) {
  const engine::Engine& e = host_.engine();
  const engine::EngineStats& st = e.stats();
  // Per-peer counters vanish with a forgotten peer and restart with a new
  // one: sum their increases, so the record's counters only grow.
  for (const engine::PeerInfo& p : e.peers()) {
    PeerSums& last = peer_last_[p.node];
    const std::uint64_t retx = p.counters.retransmits;
    const std::uint64_t delivered = p.counters.delivered + p.counters.bcast_delivered;
    retransmits_ += retx >= last.retransmits ? retx - last.retransmits : retx;
    delivered_ += delivered >= last.delivered ? delivered - last.delivered : delivered;
    last = {retx, delivered};
  }
  s.locabus.tx_frames = st.tx_frames;
  s.locabus.rx_frames = st.rx_frames;
  s.locabus.retransmits = retransmits_;
  s.locabus.bcast_sent = st.bcast_sent;
  s.locabus.bcast_retransmits = st.bcast_retransmits;
  s.locabus.messages_delivered = delivered_;
  s.locabus.monitor_records_sent = counters_.records_sent;
  s.locabus_gauges.members = e.live_members();
  s.locabus_gauges.clients = host_.client_count();
  s.locabus_gauges.daemon_uptime_seconds =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(now - start_).count());
}

void MonitorService::take_sample(engine::Nanos now, engine::Nanos slot) {
  monitor::NodeStats s;
  try {
    s = sample_ ? sample_() : sampler_->sample();
  } catch (const std::exception& e) {
    ++counters_.sample_errors;
    warn_once(kSampleFailed, fmt::format("sampling this node failed: {}; the sample is skipped", e.what()));
    return;
  }
  ++counters_.samples;
  if (sampler_ && !sampler_->last_error().empty()) {
    ++counters_.sample_errors;
    warn_once(kSamplePartial, fmt::format("could not read {}; those fields stay 0 (is /proc mounted?)",
                                          sampler_->last_error()));
  }
  if (s.sampled_at_ms == 0) s.sampled_at_ms = unix_ms();
  fill_locabus(s, now);

  // gmond's rule: time and value thresholds, plus a newcomer that must
  // learn this row; at most one record per sample. A record still waiting
  // is replaced by this newer one.
  const bool due = !last_sent_ || pending_.has_value() || joined_since_broadcast_ ||
                   slot - last_broadcast_slot_ >= milliseconds(cfg_.broadcast_ms) ||
                   monitor::significant_change(*last_sent_, s);
  if (due) {
    try {
      auto parts = monitor::encode_record(s, epoch_, seq_ + 1);
      ++seq_;
      pending_ = Pending{std::move(parts), s, slot, false};
    } catch (const std::length_error& e) {
      ++counters_.sample_errors;
      warn_once(kTooLarge, fmt::format("this node's record does not fit {} parts ({}); it is not broadcast",
                                       monitor::kMaxParts, e.what()));
    }
  }
  table_.set_local(s, epoch_, seq_, now);
  table_changed();
  if (pending_) try_send(now);
  write_row(host_.node_id(), now);
}

bool MonitorService::try_send(engine::Nanos now) {
  Pending& p = *pending_;
  // All parts of a record go together: a receiver completes it or keeps
  // the previous one.
  if (host_.can_broadcast(kKey, p.parts.size()) != engine::SendStatus::ok) {
    if (!p.counted_blocked) ++counters_.send_blocked;
    p.counted_blocked = true;
    retry_at_ = now + kRetry;
    return false;
  }
  std::size_t sent = 0;
  for (const auto& part : p.parts) {
    const engine::SendResult r = host_.broadcast(kKey, part);
    if (!r) {
      // can_broadcast said yes in this same cycle, so this is not expected.
      // Nothing sent: the record waits as if blocked; some parts sent: the
      // receivers drop the incomplete record when the next one starts.
      warn_once(kSendFailed, fmt::format("broadcasting part {} of a record failed ({}); {}", sent,
                                         engine::to_string(r.status),
                                         sent == 0 ? "it is tried again" : "the next record replaces it"));
      break;
    }
    ++counters_.parts_sent;
    ++sent;
  }
  if (sent == 0) {
    if (!p.counted_blocked) ++counters_.send_blocked;
    p.counted_blocked = true;
    retry_at_ = now + kRetry;
    return false;
  }
  ++counters_.records_sent;
  last_sent_ = std::move(p.stats);
  last_broadcast_slot_ = p.sampled;
  joined_since_broadcast_ = false;
  pending_.reset();
  return true;
}

int MonitorService::do_work() {
  if (!cfg_.enabled) return 0;
  const engine::Nanos now = host_.clock().now();
  int work = 0;
  if (now >= next_sample_) {
    engine::Nanos slot = next_sample_;
    next_sample_ += milliseconds(cfg_.sample_ms);
    if (next_sample_ <= now) {  // the loop fell behind by a whole interval: start the grid again
      slot = now;
      next_sample_ = now + milliseconds(cfg_.sample_ms);
    }
    take_sample(now, slot);
    ++work;
  } else if (pending_ && try_send(now)) {
    ++work;
  }
  if (const auto e = next_expiry(); e && now >= *e) {
    expire(now);
    ++work;
  }
  return work;
}

std::optional<engine::Nanos> MonitorService::next_deadline() const {
  if (!cfg_.enabled) return std::nullopt;
  engine::Nanos next = next_sample_;
  if (pending_) next = std::min(next, retry_at_);
  if (const auto e = next_expiry()) next = std::min(next, *e);
  return next;
}

std::optional<engine::Nanos> MonitorService::next_expiry() const {
  if (!expiry_known_) {
    expiry_ = table_.next_expiry();
    expiry_known_ = true;
  }
  return expiry_;
}

// ---- the table ------------------------------------------------------------------------

void MonitorService::write_row(std::uint16_t node, engine::Nanos now) {
  if (!files_) return;
  if (const auto row = table_.row(node, now))
    files_->write(*row, unix_ms());
  else
    files_->remove(node);
}

void MonitorService::expire(engine::Nanos now) {
  table_changed();
  for (const std::uint16_t node : table_.expire(now)) write_row(node, now);
}

void MonitorService::on_message(const Inbound& m) {
  if (!m.broadcast) {
    // Records travel only by broadcast: a unicast one is some sender's bug.
    ++counters_.parts_unicast_refused;
    warn_once(kUnicast, fmt::format("node {} sent a monitor record by unicast; refused", m.node));
    host_.refuse(m.tag, LOCABUS_REFUSE_INCOMPLETE);
    return;
  }
  host_.consume(m.tag);  // used up here, whatever the table makes of it
  if (!cfg_.enabled) return;
  ++counters_.parts_received;
  const engine::Nanos now = host_.clock().now();
  std::string error;
  table_changed();
  switch (table_.apply(m.node, m.payload, now, &error)) {
    case monitor::Applied::complete:
      ++counters_.records_completed;
      write_row(m.node, now);
      break;
    case monitor::Applied::partial: ++counters_.parts_partial; break;
    case monitor::Applied::old: ++counters_.parts_old; break;
    case monitor::Applied::malformed:
      ++counters_.parts_malformed;
      warn_once(kMalformed, fmt::format("a record part from node {} is malformed: {}", m.node, error));
      break;
    case monitor::Applied::full:
      ++counters_.table_full;
      warn_once(kFull, fmt::format("the table is full; node {} is not added", m.node));
      break;
  }
}

void MonitorService::on_event(const engine::Event& e) {
  if (!cfg_.enabled) return;
  using engine::EventKind;
  switch (e.kind) {
    case EventKind::joined:
    case EventKind::restarted:
    case EventKind::alive:
      // A newcomer (or a node back from the dead, which may have dropped
      // this row) learns it with the next sample, not broadcast_ms later.
      joined_since_broadcast_ = true;
      break;
    case EventKind::dead:
    case EventKind::left: {
      const engine::Nanos now = host_.clock().now();
      table_.mark_stale(e.node, now);
      table_changed();
      write_row(e.node, now);
      break;
    }
    default: break;
  }
}

// ---- the control socket, status, counters, exposition -----------------------------------

std::optional<nlohmann::json> MonitorService::control(const std::string& op, const nlohmann::json& request,
                                                      ClientId client) {
  (void)client;
  if (op != "monitor") return std::nullopt;
  if (!cfg_.enabled)
    return nlohmann::json{{"ok", false},
                          {"errno", ENOTSUP},
                          {"error", "LocaMonitor is off on this daemon"},
                          {"hint", "start locabusd without --no-monitor ([monitor] enabled = true)"}};
  const auto invalid = [](const std::string& what) {
    return nlohmann::json{
        {"ok", false}, {"errno", EINVAL}, {"error", what}, {"hint", "see docs/API.md, \"LocaMonitor\""}};
  };
  bool only = false, devices = true;
  for (auto [key, out] : {std::pair<const char*, bool*>{"least_loaded_only", &only}, {"devices", &devices}}) {
    if (!request.contains(key)) continue;
    if (!request[key].is_boolean())
      return invalid(fmt::format("request field '{}' must be true or false", key));
    *out = request[key].get<bool>();
  }
  // Paging: "from" (the first node id wanted) and "limit" (rows at most).
  // A paged reply is cut to fit a control message and says where to go on
  // ("next"); without either, the whole table is one reply or refused.
  std::optional<std::uint32_t> from, limit;
  for (auto [key, out, lo] :
       {std::tuple<const char*, std::optional<std::uint32_t>*, std::uint32_t>{"from", &from, 0},
        {"limit", &limit, 1}}) {
    if (!request.contains(key)) continue;
    const auto& v = request[key];
    if (!v.is_number_integer() || v.get<std::int64_t>() < lo || v.get<std::int64_t>() > 65535)
      return invalid(fmt::format("request field '{}' must be an integer {}..65535", key, lo));
    *out = static_cast<std::uint32_t>(v.get<std::int64_t>());
  }
  const bool paged = from || limit;
  const engine::Nanos now = host_.clock().now();
  nlohmann::json m = {{"node", host_.node_id()},     {"enabled", true},
                      {"sample_ms", cfg_.sample_ms}, {"broadcast_ms", cfg_.broadcast_ms},
                      {"stale_ms", cfg_.stale_ms},   {"remove_ms", cfg_.remove_ms},
                      {"least_loaded", nullptr},     {"rule", kRule}};
  if (only) {
    if (auto least = table_.least_loaded()) m["least_loaded"] = *least;
    return nlohmann::json{{"ok", true}, {"monitor", std::move(m)}};
  }
  const std::vector<monitor::NodeView> rows = table_.rows(now);
  if (auto least = monitor::least_loaded(rows)) m["least_loaded"] = *least;
  // What the reply holds besides the rows: {"ok":true,"monitor":{...,
  // "nodes":[...],"next":65535}}.
  const std::size_t envelope = nlohmann::json{{"ok", true}, {"monitor", m}}.dump().size() + 32;
  const std::size_t room = api::kMaxControlMessage > envelope ? api::kMaxControlMessage - envelope : 0;
  nlohmann::json nodes;
  const monitor::Page page =
      monitor::page(rows, from.value_or(0), paged ? limit.value_or(65535) : rows.size() + 1,
                    paged ? room : std::numeric_limits<std::size_t>::max(), devices, nodes);
  // Unpaged, a table too large for one control message is told, not cut (a
  // small machine's row is about 2 KB in full, 1 KB as a summary: some 500
  // or 1,000 nodes).
  if (!paged && page.bytes > room)
    return nlohmann::json{
        {"ok", false},
        {"errno", EMSGSIZE},
        {"error",
         fmt::format("the table ({} rows, {} bytes as JSON) is larger than a control message ({} bytes)",
                     rows.size(), page.bytes + envelope, api::kMaxControlMessage)},
        {"hint",
         fmt::format("ask for it in pages (\"from\": 0, then each reply's \"next\"), as liblocabus and "
                     "locabusctl do, or read the files in {}",
                     files_dir_.string())}};
  m["nodes"] = std::move(nodes);
  if (page.next) m["next"] = *page.next;
  return nlohmann::json{{"ok", true}, {"monitor", std::move(m)}};
}

void MonitorService::status(nlohmann::json& out) const {
  out["monitor"] = {{"enabled", cfg_.enabled},
                    {"sample_ms", cfg_.sample_ms},
                    {"broadcast_ms", cfg_.broadcast_ms},
                    {"stale_ms", cfg_.stale_ms},
                    {"remove_ms", cfg_.remove_ms},
                    {"nodes", cfg_.enabled ? table_.size() : 0},
                    {"files", files_ ? nlohmann::json(files_->dir().string()) : nlohmann::json(nullptr)}};
}

void MonitorService::exposition(bool cluster, std::string& out) const {
  if (!cfg_.enabled) return;
  const engine::Nanos now = host_.clock().now();
  std::vector<monitor::NodeView> rows;
  if (cluster)
    rows = table_.rows(now);
  else if (auto self = table_.row(host_.node_id(), now))
    rows.push_back(std::move(*self));
  if (rows.empty()) return;
  out += monitor::node_exposition(rows);
}

void MonitorService::counters(CounterGroups& out) const {
  MonitorServiceCounters c = counters_;
  if (files_) {
    c.files_written = files_->written();
    c.file_errors = files_->errors();
  }
  MonitorServiceGauges g;
  g.nodes = table_.size();
  g.stale_nodes = table_.count(monitor::NodeState::stale);  // in place: a scrape copies no row
  g.table_bytes = table_.memory_bytes();
  out.emplace_back("monitor",
                   "LocaMonitor: samples, records broadcast and received, the table, run-dir files "
                   "(docs/MONITOR.md)")
      .add(c)
      .add(g);
}

}  // namespace locabus::daemon
