// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Samples this machine (docs/MONITOR.md, "What is sampled") from /proc and
// /sys: cheap, non-blocking reads only (network filesystems are never
// statfs()ed, so a hung NFS server cannot stall the daemon).
#pragma once

#include <filesystem>
#include <string>

#include "monitor/stats.hpp"

namespace locabus::monitor {

struct SamplerOptions {
  /// Where /proc and /sys are (tests point them at crafted trees).
  std::filesystem::path proc = "/proc";
  std::filesystem::path sys = "/sys";
  /// statfs() the local filesystems of proc/self/mounts.
  bool filesystems = true;
};

class Sampler {
 public:
  explicit Sampler(SamplerOptions o = {});
  /// One sample: every source that can be read (a missing one leaves its
  /// fields 0 and is named in last_error()). cpu_permille is over the time
  /// since the previous sample. `locabus` fields are the caller's to fill.
  NodeStats sample();
  /// What could not be read in the last sample, empty if everything was.
  const std::string& last_error() const noexcept { return error_; }

 private:
  SamplerOptions o_;
  std::array<std::uint64_t, kCpuModes> last_cpu_{};
  bool have_last_ = false;
  std::string error_;
};

}  // namespace locabus::monitor
