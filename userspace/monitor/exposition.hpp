// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Table rows in the Prometheus text exposition (version 0.0.4) with
// node_exporter's metric names and a `node` label (docs/MONITOR.md,
// "Prometheus"): node_cpu_seconds_total{mode}, node_load1/5/15,
// node_memory_*_bytes, node_disk_*, node_filesystem_*, node_network_*,
// node_procs_*, plus locabus_node_up, locabus_node_age_seconds and the
// record's Locabus numbers (locabus_node_<name>[_total]). Every family's
// lines are together, each with one HELP and TYPE.
#pragma once

#include <span>
#include <string>

#include "monitor/table.hpp"

namespace locabus::monitor {

std::string node_exposition(std::span<const NodeView> rows);

}  // namespace locabus::monitor
