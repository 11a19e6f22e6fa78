// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The XDP fast path on one interface: load, attach (libxdp), pin, inspect,
// detach. See docs/FASTPATH.md.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <locabus/xdp_maps.h>

#include "common/error.hpp"
#include "fastpath/bpf_map.hpp"
#include "fastpath/bpffs.hpp"
#include "fastpath/counters.hpp"

struct bpf_object;

namespace locabus::fastpath {

enum class AttachMode {
  automatic,  // native, else generic with a warning
  native,     // driver mode only
  generic,    // skb mode only (slow; for NICs without XDP support)
};
std::string_view to_string(AttachMode m) noexcept;
std::optional<AttachMode> parse_attach_mode(std::string_view s) noexcept;

// Pin names inside the pin directory.
inline constexpr const char* kPinConfig = "config";
inline constexpr const char* kPinStats = "stats";
inline constexpr const char* kPinProto = "proto";
inline constexpr const char* kPinPeers = "peers";
inline constexpr const char* kPinXsks = "xsks";
inline constexpr const char* kPinAcks = "acks";
inline constexpr const char* kPinNaks = "naks";
inline constexpr const char* kPinConns = "conns";

/// Thrown when a live process (possibly this one) owns the fast path on the
/// interface: nobody else may replace it, and nothing may fall back to
/// another datapath behind its back.
class InterfaceInUse final : public Error {
 public:
  InterfaceInUse(const std::string& what, std::string hint, pid_t owner)
      : Error(what, 0, std::move(hint)), owner_(owner) {}
  pid_t owner() const noexcept { return owner_; }

 private:
  pid_t owner_;
};

/// Largest Options::nak_dedup_us (1 s): a longer suppression would hold
/// back a receiver's repeated NAK after the repair it asked for was lost.
inline constexpr std::uint32_t kMaxNakDedupUs = 1'000'000;

/// The name of our program as the kernel and libxdp report it.
inline constexpr std::string_view kProgramName = "locabus_xdp";

struct Options {
  std::string iface;
  /// Our node id; by default the low 16 bits of iface's IPv4 address.
  std::optional<std::uint16_t> node_id;
  std::uint32_t flags = 0;  // LOCABUS_CFG_F_*
  AttachMode mode = AttachMode::automatic;
  std::uint32_t max_peers = LOCABUS_MAX_PEERS_DEFAULT;
  /// Size of the ACK ring buffer (`acks`): a power of two, at least a page.
  std::uint32_t ack_ring_bytes = LOCABUS_ACK_RING_BYTES;
  /// Broadcast NAKs to us that repeat a range passed to user space within
  /// this many microseconds are dropped in the kernel; 0 turns that off.
  /// At most kMaxNakDedupUs.
  std::uint32_t nak_dedup_us = LOCABUS_NAK_DEDUP_US_DEFAULT;
  /// Empty: bpffs::default_pin_dir(iface, bpffs_root).
  std::filesystem::path pin_dir;
  std::filesystem::path bpffs_root = bpffs::kDefaultRoot;
  /// Record this process as the owner: while it lives, nobody else may
  /// replace or detach the fast path. False for an administrative attach
  /// (`locabusctl xdp attach`) that outlives the process.
  bool own = true;
};

/// The locabus_conns array (xdp_maps.h) mapped into this process: what the
/// engine publishes per connection for the ACK rule (ack_rule.h), written
/// and read with single 64-bit atomic accesses. Move-only; unmaps on
/// destruction.
class ConnTable {
 public:
  ConnTable(UniqueFd fd, const std::string& what);
  ConnTable(ConnTable&& o) noexcept;
  ConnTable& operator=(ConnTable&& o) noexcept;
  ConnTable(const ConnTable&) = delete;
  ConnTable& operator=(const ConnTable&) = delete;
  ~ConnTable();

  void store(std::uint16_t node, const locabus_conn_pub& pub) noexcept;
  locabus_conn_pub load(std::uint16_t node) const noexcept;

 private:
  void unmap() noexcept;
  UniqueFd fd_;
  void* base_ = nullptr;
  std::size_t bytes_ = 0;
};

/// The fast path's maps. Every map's key/value sizes are checked on open.
class Maps {
 public:
  /// Opens the maps pinned in `dir`. Throws Error.
  static Maps open_pinned(const std::filesystem::path& dir);
  /// Opens the maps of a loaded object (duplicating its fds).
  static Maps from_object(bpf_object* obj);

  locabus_config config() const;
  void set_config(const locabus_config& c);
  /// Counters summed over CPUs.
  CounterValues counters() const;
  /// Per-protocol stats summed over CPUs.
  locabus_proto_stats proto_stats(std::uint8_t proto) const;
  /// The kernel's record of `node` (read under its spin lock).
  std::optional<locabus_peer> peer(std::uint16_t node) const;
  /// Every peer entry, ordered by node id.
  std::vector<std::pair<std::uint16_t, locabus_peer>> peers() const;
  /// Starts tracking `node` with a fresh record: from now on the kernel
  /// consumes its pure ACKs and records its NAKs. Call when a connection to
  /// it is established (or re-established: the old record is replaced).
  /// Throws Error when the table is full (attach with a larger max_peers).
  void track_peer(std::uint16_t node);
  /// Stops tracking `node` (connection closed or reset); false if it was not.
  /// Its published connection state is cleared too.
  bool forget_peer(std::uint16_t node);
  /// Publishes the connection state the ACK rule judges `node`'s pure ACKs
  /// by (ack_rule.h): one 64-bit store into the mapped locabus_conns array.
  void publish(std::uint16_t node, const locabus_conn_pub& pub) noexcept { conns_.store(node, pub); }
  locabus_conn_pub published(std::uint16_t node) const noexcept { return conns_.load(node); }

  /// Registers AF_XDP socket `xsk_fd` for (queue, slot); see locabus_xsk_key.
  /// Throws Error when another socket holds the slot (the kernel removes a
  /// socket from the map when it is closed, so only a live one can).
  void register_socket(std::uint32_t queue, std::uint32_t slot, int xsk_fd);
  /// Removes the socket of (queue, slot); false if there was none.
  bool unregister_socket(std::uint32_t queue, std::uint32_t slot);

  const bpf::TypedMap<std::uint32_t, std::uint32_t>& xsks() const { return xsks_; }

  /// The duplicate-NAK table's entry for broadcast NAKs starting at `first`.
  std::optional<locabus_nak_entry> nak(std::uint16_t first) const;
  /// Every entry of the duplicate-NAK table, ordered by first sequence.
  std::vector<std::pair<std::uint16_t, locabus_nak_entry>> naks() const;

  /// The ACK ring buffer (BPF_MAP_TYPE_RINGBUF): one locabus_ack_record per
  /// consumed pure ACK that changed a tracked peer's record. Poll this fd
  /// for POLLIN and read it through its mmap (libbpf's ring_buffer API).
  /// Only one reader per fast path: reading consumes.
  int acks_fd() const noexcept { return acks_.get(); }
  /// The ring's size in bytes.
  std::uint32_t acks_bytes() const noexcept { return acks_bytes_; }

 private:
  Maps(bpf::TypedMap<std::uint32_t, locabus_config> config,
       bpf::PerCpuMap<std::uint32_t, locabus_xdp_stats> stats,
       bpf::PerCpuMap<std::uint32_t, locabus_proto_stats> proto,
       bpf::TypedMap<locabus_peer_key, locabus_peer> peers, bpf::TypedMap<std::uint32_t, std::uint32_t> xsks,
       UniqueFd acks, const std::string& acks_what, bpf::TypedMap<locabus_nak_key, locabus_nak_entry> naks,
       ConnTable conns);

  bpf::TypedMap<std::uint32_t, locabus_config> config_;
  bpf::PerCpuMap<std::uint32_t, locabus_xdp_stats> stats_;
  bpf::PerCpuMap<std::uint32_t, locabus_proto_stats> proto_;
  bpf::TypedMap<locabus_peer_key, locabus_peer> peers_;
  bpf::TypedMap<std::uint32_t, std::uint32_t> xsks_;
  UniqueFd acks_;
  std::uint32_t acks_bytes_ = 0;
  bpf::TypedMap<locabus_nak_key, locabus_nak_entry> naks_;
  ConnTable conns_;
};

/// The fast path attached to one interface by this process. Destroying it
/// detaches the program and removes the pins, unless persist() was called.
class FastPath {
 public:
  /// Loads the XDP program, attaches it and pins its maps. Leftovers of an
  /// earlier run (our program still attached, pins whose owner is gone) are
  /// reported and replaced, never reused. Throws InterfaceInUse when a live
  /// process owns the interface, Error on any other failure (nothing is left
  /// behind then).
  static std::unique_ptr<FastPath> attach(const Options& opts);

  ~FastPath();
  FastPath(const FastPath&) = delete;
  FastPath& operator=(const FastPath&) = delete;

  /// Detaches and unpins now. Throws Error; idempotent.
  void detach();
  /// Leaves the program attached and pinned when this object goes away.
  void persist() noexcept;

  const std::string& iface() const noexcept;
  int ifindex() const noexcept;
  std::uint16_t node_id() const noexcept;
  std::uint32_t program_id() const noexcept;
  /// native or generic: what the attach got.
  AttachMode mode() const noexcept;
  const std::filesystem::path& pin_dir() const noexcept;
  /// The maps; throws Error after detach().
  Maps& maps();

  struct Impl;

 private:
  explicit FastPath(std::unique_ptr<Impl> impl);
  void detach_locked();  // detach() with the pin lock already held
  std::unique_ptr<Impl> impl_;
};

enum class OwnerState { none, alive, gone };
std::string_view to_string(OwnerState s) noexcept;

/// What is on an interface now, as seen from the calling thread's namespace.
struct Status {
  std::string iface;
  int ifindex = 0;
  std::filesystem::path pin_dir;
  std::vector<std::uint32_t> program_ids;  // our programs attached (normally 0 or 1)
  std::optional<AttachMode> mode;          // native/generic when attached
  /// Attached through libxdp's dispatcher (it can share the interface with
  /// other XDP programs); false when libxdp had to attach it alone.
  bool dispatcher = false;
  bool pinned = false;                   // the pin directory holds our maps
  std::optional<locabus_config> config;  // when pinned
  OwnerState owner = OwnerState::none;
  /// Attached and pinned, and no owner that died: usable as it is.
  bool healthy() const noexcept { return program_ids.size() == 1 && pinned && owner != OwnerState::gone; }
};

/// Inspects `iface`. Throws Error for a missing interface.
Status status(const std::string& iface, const std::filesystem::path& pin_dir = {},
              const std::filesystem::path& bpffs_root = bpffs::kDefaultRoot);

struct DetachReport {
  std::vector<std::uint32_t> programs;  // program ids detached
  std::vector<std::string> pins;        // pin names removed
};

/// Detaches our program from `iface` and removes its pins, also when they
/// are stale or only one of the two is left. Refuses (Error) when a live
/// process (the caller included) owns it, unless `force`.
DetachReport detach(const std::string& iface, const std::filesystem::path& pin_dir = {}, bool force = false,
                    const std::filesystem::path& bpffs_root = bpffs::kDefaultRoot);

/// Start time of `pid` (/proc/PID/stat field 22), nullopt if it is gone
/// (or a zombie).
std::optional<std::uint64_t> process_start_time(pid_t pid);

/// Routes libbpf and libxdp messages into spdlog (once per process).
void install_library_logging();

}  // namespace locabus::fastpath
