// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "monitor/stats.hpp"

#include <algorithm>

namespace locabus::monitor {

namespace {

template <class T>
bool fields_equal(const T& a, const T& b) noexcept {
  for (const auto& f : T::kFields)
    if (a.*f.member != b.*f.member) return false;
  return true;
}

}  // namespace

bool NodeStats::operator==(const NodeStats& o) const {
  return sampled_at_ms == o.sampled_at_ms && hostname == o.hostname && cpus == o.cpus && cpu_ms == o.cpu_ms &&
         cpu_permille == o.cpu_permille && load1_milli == o.load1_milli && load5_milli == o.load5_milli &&
         load15_milli == o.load15_milli && boot_time_s == o.boot_time_s && mem_total == o.mem_total &&
         mem_free == o.mem_free && mem_available == o.mem_available && mem_buffers == o.mem_buffers &&
         mem_cached == o.mem_cached && swap_total == o.swap_total && swap_free == o.swap_free &&
         procs_running == o.procs_running && procs_blocked == o.procs_blocked && processes == o.processes &&
         threads == o.threads && disks == o.disks && filesystems == o.filesystems && nets == o.nets &&
         fields_equal(locabus, o.locabus) && fields_equal(locabus_gauges, o.locabus_gauges);
}

double NodeStats::cpu_busy_percent() const noexcept {
  unsigned total = 0;
  for (auto p : cpu_permille) total += p;
  if (total == 0) return 0.0;  // no interval yet
  const int idle = cpu_permille[static_cast<std::size_t>(CpuMode::idle)] +
                   cpu_permille[static_cast<std::size_t>(CpuMode::iowait)];
  return std::clamp(100.0 - idle / 10.0, 0.0, 100.0);
}

double NodeStats::load_per_cpu() const noexcept { return load1() / std::max<std::uint32_t>(cpus, 1); }

}  // namespace locabus::monitor
