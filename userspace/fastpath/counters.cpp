// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "fastpath/counters.hpp"

#include <cstring>

namespace locabus::fastpath {

CounterValues sum_counters(const std::vector<locabus_xdp_stats>& per_cpu) {
  CounterValues total{};
  for (const auto& s : per_cpu) {
    std::array<std::uint64_t, LOCABUS_CTR__COUNT> v;
    std::memcpy(v.data(), &s, sizeof s);  // the struct is an array of u64
    for (std::size_t i = 0; i < v.size(); ++i) total[i] += v[i];
  }
  return total;
}

locabus_proto_stats sum_proto(const std::vector<locabus_proto_stats>& per_cpu) {
  locabus_proto_stats t{};
  for (const auto& s : per_cpu) {
    t.to_proto_socket += s.to_proto_socket;
    t.to_default_socket += s.to_default_socket;
    t.no_socket += s.no_socket;
    t.bytes += s.bytes;
  }
  return t;
}

CounterGroup counter_group(const CounterValues& values) {
  CounterGroup g("xdp", "the XDP program's counters, summed over CPUs (docs/FASTPATH.md)");
  g.add(kCounters, values);
  return g;
}

}  // namespace locabus::fastpath
