// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "fastpath/chaos.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <net/if.h>

#include <cerrno>
#include <cmath>

#include "common/error.hpp"
#include "fastpath/bpf_map.hpp"
#include "fastpath/bpffs.hpp"
#include "fastpath/skeleton.hpp"
#include "locabus_chaos.skel.h"

namespace locabus::chaos {

namespace {

using ChaosSkeleton =
    bpf::Skeleton<locabus_chaos, &locabus_chaos__open_opts, &locabus_chaos__load, &locabus_chaos__destroy>;

constexpr const char* kProgPin = "prog";
constexpr const char* kConfigPin = "config";
constexpr const char* kStatsPin = "stats";

std::uint32_t ppm(double percent, const char* what) {
  if (!(percent >= 0 && percent <= 100)) {
    throw Error(std::string("chaos: ") + what + " must be a percentage between 0 and 100");
  }
  return static_cast<std::uint32_t>(std::lround(percent * (LOCABUS_CHAOS_PPM / 100.0)));
}

int ifindex_of(const std::string& iface) {
  const unsigned idx = ::if_nametoindex(iface.c_str());
  if (idx == 0) throw Error("find interface " + iface, errno, "check the name with `ip link`");
  return static_cast<int>(idx);
}

bpf::TypedMap<std::uint32_t, locabus_chaos_config> config_map(const std::string& iface) {
  const auto path = pin_dir(iface) / kConfigPin;
  if (!std::filesystem::exists(path)) {
    throw Error("no chaos program on " + iface + " (" + path.string() + " is missing)", 0,
                "attach it first: locabusctl chaos attach " + iface);
  }
  return bpf::TypedMap<std::uint32_t, locabus_chaos_config>::pinned(path, BPF_MAP_TYPE_ARRAY);
}

}  // namespace

locabus_chaos_config Settings::to_config() const {
  locabus_chaos_config c{};
  c.enabled = enabled ? 1 : 0;
  c.drop_ppm = ppm(drop_percent, "the drop rate");
  c.corrupt_ppm = ppm(corrupt_percent, "the corruption rate");
  c.type_mask = type_mask;
  c.seed = seed;
  return c;
}

Settings Settings::from_config(const locabus_chaos_config& c) {
  Settings s;
  s.enabled = c.enabled != 0;
  s.drop_percent = c.drop_ppm * (100.0 / LOCABUS_CHAOS_PPM);
  s.corrupt_percent = c.corrupt_ppm * (100.0 / LOCABUS_CHAOS_PPM);
  s.type_mask = c.type_mask;
  s.seed = c.seed;
  return s;
}

std::filesystem::path pin_dir(const std::string& iface) {
  return std::filesystem::path(bpffs::kDefaultRoot) / "locabus" / "chaos" / bpffs::pin_key(iface);
}

void attach(const std::string& iface, const Settings& s) {
  const locabus_chaos_config cfg = s.to_config();
  const int ifindex = ifindex_of(iface);
  bpffs::ensure_mounted();
  const auto dir = pin_dir(iface);
  std::filesystem::create_directories(dir);
  bpffs::DirLock lock(dir);
  if (std::filesystem::exists(dir / kProgPin)) {
    throw Error("attach chaos to " + iface + ": it is attached already", EEXIST,
                "change it with `locabusctl chaos set`, or detach it first");
  }
  ChaosSkeleton skel("locabus_chaos");
  skel.load();
  const std::uint32_t key = 0;
  if (bpf_map_update_elem(bpf_map__fd(skel->maps.locabus_chaos_cfg), &key, &cfg, BPF_ANY) != 0) {
    throw Error("configure the chaos program", errno);
  }
  const int prog_fd = bpf_program__fd(skel->progs.locabus_chaos);
  if (int err = bpf_xdp_attach(ifindex, prog_fd, XDP_FLAGS_DRV_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST, nullptr)) {
    throw Error("attach the chaos XDP program to " + iface, err,
                err == -EBUSY || err == -EEXIST
                    ? "another XDP program is attached there; chaos goes on the other end of the veth"
                    : privilege_hint(err));
  }
  // From here a failure must not leave the program attached without pins.
  try {
    auto pin = [&](int fd, const char* name) {
      if (bpf_obj_pin(fd, (dir / name).c_str()) != 0) throw Error("pin " + (dir / name).string(), errno);
    };
    pin(prog_fd, kProgPin);
    pin(bpf_map__fd(skel->maps.locabus_chaos_cfg), kConfigPin);
    pin(bpf_map__fd(skel->maps.locabus_chaos_stats), kStatsPin);
  } catch (...) {
    bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, nullptr);
    bpffs::remove_pin_dir(dir);
    throw;
  }
}

void set(const std::string& iface, const Settings& s) {
  const locabus_chaos_config cfg = s.to_config();
  config_map(iface).update(0, cfg);
}

Settings settings(const std::string& iface) {
  auto c = config_map(iface).lookup(0);
  if (!c) throw Error("read the chaos settings of " + iface);
  return Settings::from_config(*c);
}

Stats stats(const std::string& iface) {
  auto map = bpf::PerCpuMap<std::uint32_t, locabus_chaos_stats>::pinned(pin_dir(iface) / kStatsPin);
  return sum(map.lookup(0));
}

Stats sum(const std::vector<locabus_chaos_stats>& per_cpu) {
  Stats out;
  for (const auto& v : per_cpu) {
    out.seen += v.seen;
    out.dropped += v.dropped;
    out.corrupted += v.corrupted;
    out.passed += v.passed;
  }
  return out;
}

bool detach(const std::string& iface) {
  const auto dir = pin_dir(iface);
  if (!std::filesystem::exists(dir / kProgPin)) {
    bpffs::remove_pin_dir(dir);
    return false;
  }
  bpffs::DirLock lock(dir);
  UniqueFd prog(bpf_obj_get((dir / kProgPin).c_str()));
  bool detached = false;
  const unsigned idx = ::if_nametoindex(iface.c_str());
  if (prog && idx != 0) {
    bpf_prog_info info{};
    std::uint32_t len = sizeof info;
    std::uint32_t attached = 0;
    if (bpf_obj_get_info_by_fd(prog.get(), &info, &len) == 0 &&
        bpf_xdp_query_id(static_cast<int>(idx), XDP_FLAGS_DRV_MODE, &attached) == 0 && attached == info.id) {
      if (int err = bpf_xdp_detach(static_cast<int>(idx), XDP_FLAGS_DRV_MODE, nullptr)) {
        throw Error("detach the chaos program from " + iface, err, privilege_hint(err));
      }
      detached = true;
    }
  }
  bpffs::remove_pin_dir(dir);
  return detached;
}

}  // namespace locabus::chaos
