// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// LocaMonitor behind the service seam (docs/MONITOR.md): every sample_ms
// the node samples itself (monitor::Sampler, or a function the simulation
// gives) and adds its own Locabus numbers; it broadcasts the sample as a
// record (monitor/record.hpp, LOCABUS_P_MONITOR) when broadcast_ms has
// passed, when the sample changed significantly, or when a node joined;
// every node keeps the cluster's table (monitor/table.hpp), writes the
// run-dir files (monitor/files.hpp), answers the "monitor" control request
// and renders the table for the Prometheus exporter. No client opens it.
#pragma once

#include "common/counters.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <locabus/wire.h>

#include "daemon/config.hpp"
#include "daemon/service.hpp"
#include "monitor/files.hpp"
#include "monitor/sampler.hpp"
#include "monitor/stats.hpp"
#include "monitor/table.hpp"

namespace locabus::daemon {

#define LOCABUS_MONITOR_SERVICE_COUNTERS(X)                                                          \
  X(samples, "samples of this node taken")                                                           \
  X(sample_errors, "samples that could not read every source (or failed), and records too large")    \
  X(records_sent, "records broadcast (every part of each)")                                          \
  X(parts_sent, "record parts broadcast (one broadcast message each)")                               \
  X(send_blocked, "records that had to wait: the broadcast stream was full or held")                 \
  X(parts_received, "record parts received from other nodes")                                        \
  X(records_completed, "records completed from their parts: a row changed")                          \
  X(parts_partial, "parts kept, waiting for the rest of their record")                               \
  X(parts_old, "parts of an older epoch or seq than the row's (dropped)")                            \
  X(parts_malformed, "parts refused as malformed (logged once)")                                     \
  X(parts_unicast_refused, "parts that came by unicast: refused (records travel only by broadcast)") \
  X(table_full, "parts of a new node not added: the table was full")                                 \
  X(files_written, "run-dir files written")                                                          \
  X(file_errors, "run-dir files that could not be written or removed (logged once per kind)")

#define LOCABUS_MONITOR_SERVICE_GAUGES(X)            \
  X(nodes, "rows in the table (this node included)") \
  X(stale_nodes, "rows in the table that are stale") \
  X(table_bytes, "bytes the table holds (rows, devices, partial records)")

struct MonitorServiceCounters {
  LOCABUS_COUNTER_FIELDS(MonitorServiceCounters, LOCABUS_MONITOR_SERVICE_COUNTERS,
                         ::locabus::CounterKind::counter)
};
struct MonitorServiceGauges {
  LOCABUS_COUNTER_FIELDS(MonitorServiceGauges, LOCABUS_MONITOR_SERVICE_GAUGES, ::locabus::CounterKind::gauge)
};

class MonitorService final : public Service {
 public:
  /// One sample of this node (its `locabus` fields are the service's to
  /// fill). May throw: the sample is then skipped and counted.
  using SampleFn = std::function<monitor::NodeStats()>;

  /// `sample` empty: a monitor::Sampler over /proc and /sys. `epoch` 0: a
  /// random non-zero one (tests may fix it). With `cfg.enabled` false the
  /// service only answers "monitor" with ENOTSUP and consumes what other
  /// nodes broadcast.
  MonitorService(ServiceHost& host, const MonitorConfig& cfg, const std::filesystem::path& run_dir,
                 SampleFn sample = {}, std::uint32_t epoch = 0);
  ~MonitorService() override;

  std::string_view name() const noexcept override { return "monitor"; }
  std::vector<std::uint8_t> protocols() const override { return {LOCABUS_P_MONITOR}; }
  bool wants(const nlohmann::json& open) const override {
    (void)open;
    return false;
  }
  OpenResult open(ClientId client, const nlohmann::json& request) override;
  void close(ClientId client) override { (void)client; }
  RecordResult on_record(ClientId client, std::uint16_t type, std::uint16_t aux,
                         std::span<const std::byte> payload, std::uint64_t message) override;
  void on_message(const Inbound& m) override;
  void on_event(const engine::Event& e) override;
  int do_work() override;
  std::optional<engine::Nanos> next_deadline() const override;
  void counters(CounterGroups& out) const override;
  std::optional<nlohmann::json> control(const std::string& op, const nlohmann::json& request,
                                        ClientId client) override;
  void status(nlohmann::json& out) const override;
  void exposition(bool cluster, std::string& out) const override;

  const monitor::Table& table() const noexcept { return table_; }
  std::uint32_t epoch() const noexcept { return epoch_; }
  const MonitorServiceCounters& stats() const noexcept { return counters_; }
  /// The one-line least-loaded rule the "monitor" reply carries.
  static constexpr const char* kRule =
      "among alive nodes: lowest load1 per CPU in steps of 0.05, then most available memory, then lowest "
      "node id";

 private:
  struct Pending {
    std::vector<std::vector<std::byte>> parts;
    monitor::NodeStats stats;
    engine::Nanos sampled{};  // the sample's slot on the sampling grid
    bool counted_blocked = false;
  };

  void take_sample(engine::Nanos now, engine::Nanos slot);
  void fill_locabus(monitor::NodeStats& s, engine::Nanos now);
  bool try_send(engine::Nanos now);
  void expire(engine::Nanos now);
  void write_row(std::uint16_t node, engine::Nanos now);
  std::uint64_t unix_ms() const noexcept;
  void warn_once(unsigned kind, const std::string& message);
  /// Table::next_expiry() walks every row: it is asked again only after the table changed.
  std::optional<engine::Nanos> next_expiry() const;
  void table_changed() noexcept { expiry_known_ = false; }

  ServiceHost& host_;
  MonitorConfig cfg_;
  std::filesystem::path files_dir_;
  SampleFn sample_;
  std::unique_ptr<monitor::Sampler> sampler_;  // when no sample function was given
  monitor::Table table_;
  std::optional<monitor::FileWriter> files_;
  std::uint32_t epoch_ = 0;
  std::uint32_t seq_ = 0;

  engine::Nanos start_{};
  engine::Nanos next_sample_{};
  std::optional<monitor::NodeStats> last_sent_;
  engine::Nanos last_broadcast_slot_{};  // the sampling slot of the last record sent
  bool joined_since_broadcast_ = false;
  std::optional<Pending> pending_;
  engine::Nanos retry_at_{};

  // Monotonic sums over peers whose counters may be forgotten: the last value seen per peer.
  struct PeerSums {
    std::uint64_t retransmits = 0, delivered = 0;
  };
  std::unordered_map<std::uint16_t, PeerSums> peer_last_;
  std::uint64_t retransmits_ = 0, delivered_ = 0;

  mutable std::optional<engine::Nanos> expiry_;
  mutable bool expiry_known_ = false;

  unsigned warned_ = 0;  // log lines already written, a bit per kind
  MonitorServiceCounters counters_;
};

}  // namespace locabus::daemon
