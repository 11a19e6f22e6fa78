// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The BPF filesystem: where the fast path pins its maps.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "common/unique_fd.hpp"

namespace locabus::bpffs {

inline constexpr const char* kDefaultRoot = "/sys/fs/bpf";

/// Mounts bpffs on `root` unless one is there already (a fresh machine, or a
/// private mount namespace from `ip netns exec`, may have none).
void ensure_mounted(const std::filesystem::path& root = kDefaultRoot);

/// True when `path` is on a bpffs mount.
bool is_bpffs(const std::filesystem::path& path);

/// The directory name for `iface` in the calling thread's namespace: the
/// interface name in the initial namespace, "<iface>@<netns>" elsewhere, so
/// that two namespaces sharing one bpffs never collide. bpffs forbids '.',
/// which becomes '_'.
std::string pin_key(const std::string& iface);

/// <root>/locabus/<pin_key(iface)>.
std::filesystem::path default_pin_dir(const std::string& iface,
                                      const std::filesystem::path& root = kDefaultRoot);

/// Removes the pins inside `dir` and `dir` itself; returns the names removed.
/// Absent `dir` is not an error.
std::vector<std::string> remove_pin_dir(const std::filesystem::path& dir);

/// An exclusive flock on `dir` (created if missing), held for its lifetime:
/// serialises attach/detach of the fast path between processes.
class DirLock {
 public:
  explicit DirLock(const std::filesystem::path& dir);

 private:
  UniqueFd fd_;
};

}  // namespace locabus::bpffs
