// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Typed access to loaded or pinned BPF maps. The key and value types are
// checked against the map the kernel holds, so a layout mismatch (an old
// pin, the wrong map) is an error at open time, not memory corruption.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace locabus::bpf {

struct MapInfo {
  std::uint32_t id = 0;
  std::uint32_t type = 0;
  std::uint32_t key_size = 0;
  std::uint32_t value_size = 0;
  std::uint32_t max_entries = 0;
  std::string name;
};

/// Kernel's description of the map behind `fd`. Throws Error.
MapInfo map_info(int fd);

/// bpf_obj_get() of a pinned map; throws Error naming `path`.
UniqueFd open_pinned(const std::filesystem::path& path);

/// Checks `info` against the expected sizes (and type, if nonzero); throws
/// Error with `what` in the message on mismatch.
void check_map(const MapInfo& info, const std::string& what, std::uint32_t key_size, std::uint32_t value_size,
               std::uint32_t type = 0);

/// Number of possible CPUs (size of a per-CPU value array). Throws Error.
unsigned possible_cpus();

/// A map with key K and value V (trivially copyable C layouts).
template <typename K, typename V>
class TypedMap {
  static_assert(std::is_trivially_copyable_v<K> && std::is_trivially_copyable_v<V>);

 public:
  /// Takes ownership of `fd` and checks the map's sizes (and `type` if set).
  TypedMap(UniqueFd fd, const std::string& what, std::uint32_t type = 0)
      : fd_(std::move(fd)), info_(map_info(fd_.get())), what_(what) {
    check_map(info_, what_, sizeof(K), sizeof(V), type);
  }
  static TypedMap pinned(const std::filesystem::path& path, std::uint32_t type = 0) {
    return TypedMap(open_pinned(path), path.string(), type);
  }

  /// Lookup; nullopt when absent. `flags` may be BPF_F_LOCK.
  std::optional<V> lookup(const K& key, std::uint64_t flags = 0) const {
    V value{};
    if (bpf_map_lookup_elem_flags(fd_.get(), &key, &value, flags) == 0) return value;
    if (errno == ENOENT) return std::nullopt;
    throw Error("look up an entry of BPF map " + what_, errno);
  }
  void update(const K& key, const V& value, std::uint64_t flags = BPF_ANY) {
    if (bpf_map_update_elem(fd_.get(), &key, &value, flags) != 0)
      throw Error("update an entry of BPF map " + what_, errno);
  }
  /// Inserts only if absent (BPF_NOEXIST); false when the key is present.
  /// Throws Error (E2BIG: the map is full) otherwise.
  bool insert(const K& key, const V& value) {
    if (bpf_map_update_elem(fd_.get(), &key, &value, BPF_NOEXIST) == 0) return true;
    if (errno == EEXIST) return false;
    throw Error("insert an entry into BPF map " + what_, errno,
                errno == E2BIG ? "the map is full: it holds " + std::to_string(info_.max_entries) + " entries"
                               : std::string{});
  }
  /// Deletes; false when it was not there.
  bool erase(const K& key) {
    if (bpf_map_delete_elem(fd_.get(), &key) == 0) return true;
    if (errno == ENOENT) return false;
    throw Error("delete an entry of BPF map " + what_, errno);
  }
  /// All keys present (a snapshot; concurrent updates may add or remove).
  std::vector<K> keys() const {
    std::vector<K> out;
    K key{}, next{};
    const K* prev = nullptr;
    while (bpf_map_get_next_key(fd_.get(), prev, &next) == 0) {
      out.push_back(next);
      key = next;
      prev = &key;
    }
    if (errno != ENOENT) throw Error("iterate BPF map " + what_, errno);
    return out;
  }

  int fd() const noexcept { return fd_.get(); }
  const MapInfo& info() const noexcept { return info_; }

 private:
  UniqueFd fd_;
  MapInfo info_;
  std::string what_;
};

/// A per-CPU map: one V per possible CPU for each key.
template <typename K, typename V>
class PerCpuMap {
  static_assert(std::is_trivially_copyable_v<K> && std::is_trivially_copyable_v<V>);
  static_assert(sizeof(V) % 8 == 0, "per-CPU values are laid out at 8-byte strides");

 public:
  PerCpuMap(UniqueFd fd, const std::string& what)
      : fd_(std::move(fd)), info_(map_info(fd_.get())), what_(what), cpus_(possible_cpus()) {
    check_map(info_, what_, sizeof(K), sizeof(V));
    if (info_.type != BPF_MAP_TYPE_PERCPU_ARRAY && info_.type != BPF_MAP_TYPE_PERCPU_HASH &&
        info_.type != BPF_MAP_TYPE_LRU_PERCPU_HASH)
      throw Error("BPF map " + what_ + " is not a per-CPU map", 0,
                  "the pin belongs to something else; detach and attach again");
  }
  static PerCpuMap pinned(const std::filesystem::path& path) {
    return PerCpuMap(open_pinned(path), path.string());
  }

  /// One value per possible CPU; empty when the key is absent.
  std::vector<V> lookup(const K& key) const {
    std::vector<V> values(cpus_);
    if (bpf_map_lookup_elem(fd_.get(), &key, values.data()) == 0) return values;
    if (errno == ENOENT) return {};
    throw Error("look up an entry of BPF map " + what_, errno);
  }
  void update(const K& key, const std::vector<V>& values) {
    if (values.size() != cpus_) throw Error("update BPF map " + what_ + ": need one value per CPU");
    if (bpf_map_update_elem(fd_.get(), &key, values.data(), BPF_ANY) != 0)
      throw Error("update an entry of BPF map " + what_, errno);
  }

  unsigned cpus() const noexcept { return cpus_; }
  int fd() const noexcept { return fd_.get(); }
  const MapInfo& info() const noexcept { return info_; }

 private:
  UniqueFd fd_;
  MapInfo info_;
  std::string what_;
  unsigned cpus_;
};

}  // namespace locabus::bpf
