// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The Prometheus exporter (docs/METRICS.md): GET /metrics over HTTP
// (cpp-httplib) in its own thread, while every byte it serves is rendered
// by the daemon's one thread. The HTTP side never touches daemon state: a
// scrape is queued (its scope and a promise) and an eventfd is written; the
// daemon's loop, which polls that eventfd with its other fds, renders the
// text in its duty cycle (serve()) and fulfils the promise; the scrape
// waits for it at most MetricsOptions::answer_timeout (then 503). Nothing
// polls: an exporter nobody scrapes costs no CPU.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/counters.hpp"

namespace locabus::daemon {

/// What a scrape asks for: this node (GET /metrics, /metrics?scope=local)
/// or every node of the monitor's table (/metrics?scope=cluster).
enum class MetricsScope : std::uint8_t { local, cluster };
const char* to_string(MetricsScope s) noexcept;

/// The exporter's own counters (group "metrics": locabus_metrics_<field>_total).
#define LOCABUS_METRICS_COUNTERS(X)                                                               \
  X(scrapes_local, "scrapes of this node's metrics the daemon rendered (GET /metrics)")           \
  X(scrapes_cluster, "scrapes of every node's metrics the daemon rendered (?scope=cluster)")      \
  X(timeouts, "scrapes answered 503 because the daemon did not render them in time")              \
  X(failures, "scrapes answered 500 because rendering failed, or 503 because the daemon stopped") \
  X(bad_requests, "requests answered 400 (an unknown scope) or 404 (an unknown path)")

struct MetricsCounters {
  LOCABUS_COUNTER_FIELDS(MetricsCounters, LOCABUS_METRICS_COUNTERS, ::locabus::CounterKind::counter)
};

struct MetricsOptions {
  /// How long a scrape waits for the daemon to render it (then 503).
  std::chrono::milliseconds answer_timeout{5000};
  /// Each read and write of a connection, and waiting for its request.
  std::chrono::seconds io_timeout{3};
  /// The longest a connection may take, whole: cpp-httplib 0.11 bounds each
  /// read only, so a client that sends a byte now and then would hold a
  /// worker (and the exporter's shutdown) for as long as it goes on. The
  /// exporter's workers shut such a connection's socket down at this
  /// deadline, and every connection's at once when the exporter stops.
  std::chrono::milliseconds connection_deadline{10'000};
  /// HTTP worker threads (connections served at once; more wait their turn).
  std::size_t threads = 2;
};

class MetricsExporter {
 public:
  /// Renders a scrape; runs on the thread that calls serve() (the daemon's).
  using Renderer = std::function<std::string(MetricsScope)>;

  /// Binds `address` ("HOST:PORT", "[V6]:PORT"; port 0 picks a free port)
  /// and starts serving. Throws Error naming the address (and errno) when
  /// it is malformed or cannot be bound.
  explicit MetricsExporter(const std::string& address, MetricsOptions options = {});
  /// Answers waiting scrapes 503 ("shutting down"), stops the server and
  /// joins its threads.
  ~MetricsExporter();
  MetricsExporter(const MetricsExporter&) = delete;
  MetricsExporter& operator=(const MetricsExporter&) = delete;

  /// The address as bound: "0.0.0.0:9477", with the real port when 0 was given.
  const std::string& address() const noexcept { return address_; }
  /// "http://<address>/metrics".
  std::string url() const { return "http://" + address_ + "/metrics"; }

  /// Readable when scrapes wait for serve(): one more fd of the daemon's poll set.
  int wait_fd() const noexcept;
  /// Whether scrapes wait (cheap: one atomic load; for the daemon's duty cycle).
  bool pending() const noexcept { return pending_.load(std::memory_order_acquire); }
  /// Renders every waiting scrape (each scope once per call) and answers
  /// them. Never blocks. Returns how many scrapes it answered. An exception
  /// from `render` answers that scrape 500 with its text.
  std::size_t serve(const Renderer& render);

  MetricsCounters counters() const noexcept;
  /// How long the last render of each scope took on the daemon's thread
  /// (microseconds; 0 before the first), for locabusctl status. Not a
  /// counter of the registry: Prometheus wants seconds, the registry has
  /// integers only.
  std::uint64_t last_render_us(MetricsScope scope) const noexcept;

 private:
  struct Impl;
  std::atomic<bool> pending_{false};  // before impl_: its threads set it
  std::string address_;
  std::unique_ptr<Impl> impl_;
};

/// locabus_build_info{node="N",version="V"} 1, with its HELP and TYPE.
std::string build_info_text(std::uint16_t node, std::string_view version);

/// The metric family names of a text exposition, from its # TYPE lines, in
/// order (a name twice means a family split or repeated: invalid).
std::vector<std::string> exposition_families(std::string_view text);

}  // namespace locabus::daemon
