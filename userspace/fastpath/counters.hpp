// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Names and sums of the fast path's per-CPU counters (xdp_maps.h).
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include <locabus/xdp_maps.h>

#include "common/counters.hpp"

namespace locabus::fastpath {

/// A counter's name and description (kind: always a monotonic counter).
using CounterInfo = locabus::CounterField;

#define LOCABUS_X_INFO(name, desc) CounterInfo{#name, desc, locabus::CounterKind::counter},
inline constexpr std::array<CounterInfo, LOCABUS_CTR__COUNT> kCounters{
    {LOCABUS_XDP_COUNTERS(LOCABUS_X_INFO)}};
#undef LOCABUS_X_INFO

using CounterValues = std::array<std::uint64_t, LOCABUS_CTR__COUNT>;

/// The group "xdp": the fast path's counters (summed over CPUs), from the
/// LOCABUS_XDP_COUNTERS definition.
CounterGroup counter_group(const CounterValues& values);

/// Counter values summed over CPUs.
CounterValues sum_counters(const std::vector<locabus_xdp_stats>& per_cpu);

/// Per-protocol stats summed over CPUs.
locabus_proto_stats sum_proto(const std::vector<locabus_proto_stats>& per_cpu);

}  // namespace locabus::fastpath
