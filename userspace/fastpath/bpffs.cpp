// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "fastpath/bpffs.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/statfs.h>

#include <algorithm>
#include <cerrno>

#include <spdlog/spdlog.h>

#include "common/error.hpp"
#include "fastpath/netdev.hpp"

namespace locabus::bpffs {

bool is_bpffs(const std::filesystem::path& path) {
  struct statfs st {};
  return ::statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

void ensure_mounted(const std::filesystem::path& root) {
  if (is_bpffs(root)) return;
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) throw Error("create bpffs mount point " + root.string(), ec.value());
  if (::mount("bpf", root.c_str(), "bpf", 0, "mode=0700") != 0)
    throw Error("mount bpffs on " + root.string(), errno,
                "mount it by hand (`mount -t bpf bpf " + root.string() + "`) or run as root");
  spdlog::info("mounted bpffs on {}", root.string());
}

std::string pin_key(const std::string& iface) {
  std::string key = iface;
  const std::string ns = net::netns_label();
  if (!ns.empty()) key += "@" + ns;
  std::replace(key.begin(), key.end(), '.', '_');
  return key;
}

std::filesystem::path default_pin_dir(const std::string& iface, const std::filesystem::path& root) {
  return root / "locabus" / pin_key(iface);
}

std::vector<std::string> remove_pin_dir(const std::filesystem::path& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return removed;
  // error_code overloads throughout: this runs in destructors.
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code rm_ec;
    std::filesystem::remove(it->path(), rm_ec);
    if (rm_ec) throw Error("remove pin " + it->path().string(), rm_ec.value());
    removed.push_back(it->path().filename().string());
  }
  if (ec) throw Error("list pins in " + dir.string(), ec.value());
  std::filesystem::remove(dir, ec);
  if (ec) throw Error("remove pin directory " + dir.string(), ec.value());
  std::sort(removed.begin(), removed.end());
  return removed;
}

DirLock::DirLock(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error("create " + dir.string(), ec.value());
  fd_.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd_) throw Error("open " + dir.string(), errno);
  if (::flock(fd_.get(), LOCK_EX) != 0) throw Error("lock " + dir.string(), errno);
}

}  // namespace locabus::bpffs
