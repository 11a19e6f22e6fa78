// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "fastpath/bpf_map.hpp"

#include <fmt/format.h>

namespace locabus::bpf {

MapInfo map_info(int fd) {
  bpf_map_info info{};
  __u32 len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) throw Error("query BPF map info", errno);
  MapInfo out;
  out.id = info.id;
  out.type = info.type;
  out.key_size = info.key_size;
  out.value_size = info.value_size;
  out.max_entries = info.max_entries;
  out.name = info.name;
  return out;
}

UniqueFd open_pinned(const std::filesystem::path& path) {
  const int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    const int err = errno;
    throw Error(
        "open pinned BPF map " + path.string(), err,
        err == ENOENT ? "is the fast path attached? see `locabusctl xdp status --iface IF`" : std::string{});
  }
  return UniqueFd(fd);
}

void check_map(const MapInfo& info, const std::string& what, std::uint32_t key_size, std::uint32_t value_size,
               std::uint32_t type) {
  if (info.key_size != key_size || info.value_size != value_size || (type && info.type != type))
    throw Error(fmt::format("BPF map {} (id {}, '{}') has key/value sizes {}/{} and type {}, "
                            "expected {}/{}{}",
                            what, info.id, info.name, info.key_size, info.value_size, info.type, key_size,
                            value_size, type ? fmt::format(" and type {}", type) : ""),
                0, "it was made by another Locabus version: detach the fast path and attach it again");
}

unsigned possible_cpus() {
  const int n = libbpf_num_possible_cpus();
  if (n <= 0) throw Error("count possible CPUs", -n);
  return static_cast<unsigned>(n);
}

}  // namespace locabus::bpf
