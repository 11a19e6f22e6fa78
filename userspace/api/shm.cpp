// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "api/shm.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <string>

#include "common/error.hpp"

namespace locabus::api {
namespace {

constexpr int kRequiredSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

std::string hex(std::uint64_t v) {
  char buf[32];
  const int n = std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return std::string(buf, static_cast<std::size_t>(n));
}

bool valid_ring_bytes(std::uint64_t n) noexcept {
  return n >= SharedRegion::kMinRingBytes && n <= SharedRegion::kMaxRingBytes && std::has_single_bit(n);
}

std::uint64_t region_bytes_for(std::uint64_t ring_bytes) noexcept {
  return layout::kHeaderBytes + 2 * ring_bytes;
}

Mapping map_shared(int fd, std::size_t size, const char* who) {
  void* addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (addr == MAP_FAILED) {
    throw Error(std::string(who) + ": mmap of " + std::to_string(size) + " bytes of shared memory", errno,
                "check the memory limits (ulimit -l/-v, the cgroup's memory.max)");
  }
  return Mapping(addr, size);
}

detail::RingGeometry ring_at(std::byte* base, std::size_t control, std::uint64_t data,
                             std::uint64_t ring_bytes) noexcept {
  return detail::RingGeometry{
      .control = reinterpret_cast<layout::RingControl*>(base + control),
      .data = base + data,
      .capacity = ring_bytes,
      .max_payload = SharedRegion::max_payload_for(ring_bytes),
  };
}

}  // namespace

std::string_view describe(ProtocolError e) noexcept {
  switch (e) {
    case ProtocolError::kNone: return "no error";
    case ProtocolError::kMisalignedIndex: return "the peer stored a ring index that is not a multiple of 8";
    case ProtocolError::kIndexOutOfRange:
      return "the peer stored a ring index beyond what the ring can hold or what was published";
    case ProtocolError::kIndexWentBack: return "the peer moved a ring index backwards";
    case ProtocolError::kTruncatedRecord:
      return "the peer published a record that extends past its published index";
    case ProtocolError::kRecordTooLong: return "the peer published a record longer than the maximum payload";
    case ProtocolError::kRecordWraps: return "the peer published a record that crosses the end of the ring";
    case ProtocolError::kBadPadding:
      return "the peer published a padding record that does not end at the end of the ring";
  }
  return "unknown ring protocol error";
}

// ---- Mapping ----------------------------------------------------------------------

Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    reset();
    addr_ = std::exchange(o.addr_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void Mapping::reset() noexcept {
  if (addr_ != nullptr) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
}

// ---- SharedRegion ---------------------------------------------------------------------

SharedRegion::SharedRegion(UniqueFd fd, Mapping map, Side side, std::size_t ring_bytes) noexcept
    : fd_(std::move(fd)), map_(std::move(map)), side_(side), ring_bytes_(ring_bytes) {
  const auto to_client = ring_at(map_.data(), layout::kToClientControl, layout::kHeaderBytes, ring_bytes);
  const auto to_daemon =
      ring_at(map_.data(), layout::kToDaemonControl, layout::kHeaderBytes + ring_bytes, ring_bytes);
  producer_ = RingProducer(side == Side::kDaemon ? to_client : to_daemon);
  consumer_ = RingConsumer(side == Side::kDaemon ? to_daemon : to_client);
}

SharedRegion SharedRegion::create(std::string_view name, std::size_t ring_bytes) {
  if (!valid_ring_bytes(ring_bytes)) {
    throw Error("create shared region: ring size " + std::to_string(ring_bytes) + " bytes is invalid", EINVAL,
                "use a power of two between " + std::to_string(kMinRingBytes) + " and " +
                    std::to_string(kMaxRingBytes) + " (ring_bytes in the daemon's configuration)");
  }
  // memfd names are limited to 249 bytes; the name is only for /proc/PID/fd.
  const std::string full = "locabus:" + std::string(name.substr(0, 200));
  UniqueFd fd(::memfd_create(full.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) {
    throw Error("create shared region '" + full + "': memfd_create", errno,
                "the kernel needs memfd support (Linux >= 3.17); check RLIMIT_NOFILE");
  }
  const std::uint64_t size = region_bytes_for(ring_bytes);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    throw Error("create shared region '" + full + "': resize to " + std::to_string(size) + " bytes", errno,
                "check the memory available to tmpfs/shmem (cgroup memory.max)");
  }
  // Sealed before the client can see it: it can never shrink the file under
  // our mapping (SIGBUS) nor grow it, nor add or remove seals.
  if (::fcntl(fd.get(), F_ADD_SEALS, kRequiredSeals) != 0) {
    throw Error("create shared region '" + full + "': seal the memfd", errno,
                "the kernel needs memfd sealing (Linux >= 3.17)");
  }
  Mapping map = map_shared(fd.get(), size, "create shared region");
  layout::RegionHeader h{};
  std::memcpy(h.magic, layout::kMagic, sizeof h.magic);
  h.version = layout::kVersion;
  h.header_bytes = layout::kHeaderBytes;
  h.ring_bytes = ring_bytes;
  h.region_bytes = size;
  h.to_client_offset = layout::kHeaderBytes;
  h.to_daemon_offset = layout::kHeaderBytes + ring_bytes;
  std::memcpy(map.data(), &h, sizeof h);  // the rest of a new memfd is zero
  return SharedRegion(std::move(fd), std::move(map), Side::kDaemon, ring_bytes);
}

SharedRegion SharedRegion::attach(UniqueFd fd) {
  const char* what = "attach shared region";
  const std::string hint = "the fd must be the region locabusd sent; is the daemon the same version?";
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0)
    throw Error(std::string(what) + ": fstat", fd ? errno : EBADF, hint);
  if (!S_ISREG(st.st_mode)) throw Error(std::string(what) + ": not a memfd", EINVAL, hint);
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0) throw Error(std::string(what) + ": read the seals (is it a memfd?)", errno, hint);
  if ((seals & kRequiredSeals) != kRequiredSeals) {
    throw Error(std::string(what) +
                    ": the memfd is not sealed against shrinking, growing and resealing (seals " +
                    hex(static_cast<unsigned>(seals)) + ")",
                EINVAL, hint);
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size < region_bytes_for(kMinRingBytes) || size > region_bytes_for(kMaxRingBytes)) {
    throw Error(std::string(what) + ": size " + std::to_string(size) + " bytes is not a region's", EINVAL,
                hint);
  }
  Mapping map = map_shared(fd.get(), static_cast<std::size_t>(size), what);
  layout::RegionHeader h{};
  std::memcpy(&h, map.data(), sizeof h);  // one copy; only the copy is checked and used
  if (std::memcmp(h.magic, layout::kMagic, sizeof h.magic) != 0) {
    throw Error(std::string(what) + ": bad magic (not a Locabus region)", EINVAL, hint);
  }
  if (h.version != layout::kVersion) {
    throw Error(std::string(what) + ": layout version " + std::to_string(h.version) +
                    ", this library knows " + std::to_string(layout::kVersion),
                EPROTO, "use a liblocabus of the same release as locabusd");
  }
  if (h.header_bytes != layout::kHeaderBytes || !valid_ring_bytes(h.ring_bytes) ||
      h.region_bytes != region_bytes_for(h.ring_bytes) || h.region_bytes != size ||
      h.to_client_offset != layout::kHeaderBytes ||
      h.to_daemon_offset != layout::kHeaderBytes + h.ring_bytes) {
    throw Error(std::string(what) + ": inconsistent header (header " + std::to_string(h.header_bytes) +
                    " B, rings " + std::to_string(h.ring_bytes) + " B, region " +
                    std::to_string(h.region_bytes) + " B, file " + std::to_string(size) + " B)",
                EINVAL, hint);
  }
  return SharedRegion(std::move(fd), std::move(map), Side::kClient, static_cast<std::size_t>(h.ring_bytes));
}

UniqueFd SharedRegion::duplicate_fd() const {
  UniqueFd dup(::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (!dup) throw Error("duplicate the shared region's fd", errno, "check RLIMIT_NOFILE (ulimit -n)");
  return dup;
}

// ---- Doorbell -----------------------------------------------------------------------

std::pair<Doorbell, Doorbell> Doorbell::create_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
    throw Error("create doorbell socketpair", errno, "check RLIMIT_NOFILE (ulimit -n)");
  }
  return {Doorbell(UniqueFd(fds[0])), Doorbell(UniqueFd(fds[1]))};
}

Doorbell Doorbell::adopt(UniqueFd fd) {
  const std::string hint = "the fd must be the doorbell locabusd sent";
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0) throw Error("adopt doorbell: fstat", fd ? errno : EBADF, hint);
  int type = 0, domain = 0;
  socklen_t len = sizeof type;
  socklen_t dlen = sizeof domain;
  if (!S_ISSOCK(st.st_mode) || ::getsockopt(fd.get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0 ||
      ::getsockopt(fd.get(), SOL_SOCKET, SO_DOMAIN, &domain, &dlen) != 0 || type != SOCK_STREAM ||
      domain != AF_UNIX) {
    throw Error("adopt doorbell: not a Unix SOCK_STREAM socket", EINVAL, hint);
  }
  return Doorbell(std::move(fd));
}

bool Doorbell::ring() const noexcept {
  const char b = 1;
  for (;;) {
    if (::send(fd_.get(), &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1) return true;
    if (errno == EINTR) continue;
    // EAGAIN: the peer's queue is full of unread rings, it will wake anyway.
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS;
  }
}

std::size_t Doorbell::drain() const noexcept {
  // Each ring is one byte of a stream: one recv() takes up to 256 of them.
  // At most 4 calls, so a peer that rings without pause cannot keep us here.
  std::size_t n = 0;
  char buf[256];
  for (int i = 0; i < 4; ++i) {
    const ssize_t r = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;  // EAGAIN (drained), 0 (peer closed: POLLHUP tells), or an error
    n += static_cast<std::size_t>(r);
    if (static_cast<std::size_t>(r) < sizeof buf) break;  // nothing more was queued
  }
  return n;
}

}  // namespace locabus::api
