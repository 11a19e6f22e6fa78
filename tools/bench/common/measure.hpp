// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// What locabus-bench's peers (peer/, grpc/, mpi/) measure, defined once so
// every side is measured the same way: Unix time for comparing events across
// processes, a process's CPU time, and latency percentiles.
#pragma once

#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace locabus::bench {

/// CLOCK_REALTIME in seconds: network namespaces share the clock, so the
/// driver compares these across processes (first sent, last received).
inline double unix_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

/// `v` rounded to `digits` decimals (JSON that reads well; far below what is measured).
inline double rounded(double v, int digits) {
  const double f = std::pow(10.0, digits);
  return std::round(v * f) / f;
}

/// This process's CPU time (every thread), from getrusage(RUSAGE_SELF).
struct Cpu {
  double user = 0, sys = 0;

  static Cpu now() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto s = [](const timeval& tv) {
      return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) * 1e-6;
    };
    return {s(ru.ru_utime), s(ru.ru_stime)};
  }
  Cpu operator-(const Cpu& o) const { return {user - o.user, sys - o.sys}; }
  /// {"user": s, "sys": s}
  nlohmann::json json() const { return {{"user", rounded(user, 6)}, {"sys", rounded(sys, 6)}}; }
};

/// min, mean, p50, p90, p99, p999, max in microseconds of samples in
/// nanoseconds; a percentile is the sample at index ceil(q*n)-1 of the sorted
/// samples (every sample counts, no histogram). Sorts `ns`. Null without samples.
inline nlohmann::json latency_us(std::vector<std::int64_t>& ns) {
  if (ns.empty()) return nullptr;
  std::sort(ns.begin(), ns.end());
  const std::size_t n = ns.size();
  const auto us = [](std::int64_t v) { return rounded(static_cast<double>(v) / 1000.0, 3); };
  const auto at = [&](std::size_t per_mille) {
    const std::size_t rank = (per_mille * n + 999) / 1000;  // ceil(q*n), exact in integers
    return us(ns[std::clamp<std::size_t>(rank, 1, n) - 1]);
  };
  long double sum = 0;
  for (const std::int64_t v : ns) sum += v;
  return {{"min", us(ns.front())}, {"mean", rounded(static_cast<double>(sum / n) / 1000.0, 3)},
          {"p50", at(500)},        {"p90", at(900)},
          {"p99", at(990)},        {"p999", at(999)},
          {"max", us(ns.back())}};
}

}  // namespace locabus::bench
