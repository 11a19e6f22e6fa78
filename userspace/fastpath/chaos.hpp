// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The chaos program (bpf/locabus_chaos.bpf.c): seeded loss and corruption of
// Locabus frames on a veth, for end-to-end tests on kernels without netem.
// Attached in native mode; its maps are pinned under
// <bpffs>/locabus/chaos/<iface>[@<netns>] so that settings can change while
// it runs, from another process.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <locabus/xdp_maps.h>

namespace locabus::chaos {

struct Settings {
  bool enabled = true;
  double drop_percent = 0;     // of Locabus frames, 0..100
  double corrupt_percent = 0;  // of the frames not dropped, 0..100
  std::uint64_t seed = 1;
  std::uint32_t type_mask = 0;  // bit t: only packet type t (wire.h LOCABUS_T_*); 0 = all

  /// The map layout; throws Error for percentages outside 0..100.
  locabus_chaos_config to_config() const;
  static Settings from_config(const locabus_chaos_config& c);
};

struct Stats {
  std::uint64_t seen = 0;  // Locabus frames
  std::uint64_t dropped = 0;
  std::uint64_t corrupted = 0;
  std::uint64_t passed = 0;
};

/// Sums the per-CPU values of the stats map.
Stats sum(const std::vector<locabus_chaos_stats>& per_cpu);

/// Where the pins for `iface` (in the calling thread's network namespace) live.
std::filesystem::path pin_dir(const std::string& iface);

/// Loads the program, applies `s`, attaches it to `iface` in native (driver)
/// mode and pins it and its maps. Fails if an XDP program is already on
/// `iface`. Throws Error with what to do.
void attach(const std::string& iface, const Settings& s);
/// Changes the settings of the program attached to `iface`.
void set(const std::string& iface, const Settings& s);
Settings settings(const std::string& iface);
/// Counters summed over CPUs.
Stats stats(const std::string& iface);
/// Detaches (only our program: another one on `iface` is left alone) and
/// removes the pins. Returns false if nothing of ours was there.
bool detach(const std::string& iface);

}  // namespace locabus::chaos
