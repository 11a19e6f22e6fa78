// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "fastpath/xsk.hpp"

#include <linux/if_xdp.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <xdp/xsk.h>

#include "common/error.hpp"
#include "fastpath/fastpath.hpp"

namespace locabus::xsk {
namespace {

bool power_of_two(std::uint32_t v) { return v && (v & (v - 1)) == 0; }

// An anonymous mapping, unmapped on destruction.
class Mapping {
 public:
  explicit Mapping(std::size_t size) : size_(size) {
    addr_ = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (addr_ == MAP_FAILED) throw Error(fmt::format("map {} bytes of UMEM", size), errno);
  }
  ~Mapping() { ::munmap(addr_, size_); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  std::byte* data() const noexcept { return static_cast<std::byte*>(addr_); }
  std::size_t size() const noexcept { return size_; }

 private:
  void* addr_;
  std::size_t size_;
};

}  // namespace

std::string_view to_string(BindMode m) noexcept {
  switch (m) {
    case BindMode::automatic: return "auto";
    case BindMode::zero_copy: return "zero-copy";
    case BindMode::copy: return "copy";
  }
  return "unknown";
}

struct Socket::Impl {
  Options opts;
  std::unique_ptr<Mapping> area;
  xsk_umem* umem = nullptr;
  xsk_ring_prod fill{};
  xsk_ring_cons comp{};
  xsk_socket* xsk = nullptr;
  xsk_ring_cons rx{};
  xsk_ring_prod tx{};
  std::vector<std::uint64_t> tx_free;
  // Received buffers not yet back on the fill ring (see refill()).
  std::vector<std::uint64_t> fill_pending;
  std::size_t tx_outstanding = 0;  // submitted to the TX ring, not completed
  bool zc = false;

  ~Impl() { close(); }

  // Hands received buffers back to the kernel, as many as the fill ring has
  // room for now. The fill ring is as large as the RX half of the UMEM, but
  // it can be short for a moment: the kernel makes frames visible on the RX
  // ring before it publishes how far it has read the fill ring, so a quick
  // reader may hold a frame whose fill slot does not look free yet. Those
  // buffers wait in fill_pending for the next call.
  void refill() noexcept {
    if (fill_pending.empty()) return;
    const auto want = static_cast<std::uint32_t>(fill_pending.size());
    const std::uint32_t n = std::min(want, xsk_prod_nb_free(&fill, want));
    std::uint32_t idx = 0;
    if (n == 0 || xsk_ring_prod__reserve(&fill, n, &idx) != n) return;
    for (std::uint32_t i = 0; i < n; ++i)
      *xsk_ring_prod__fill_addr(&fill, idx + i) = fill_pending[want - n + i];
    fill_pending.resize(want - n);
    xsk_ring_prod__submit(&fill, n);
  }

  void close() noexcept {
    if (xsk) xsk_socket__delete(xsk);
    xsk = nullptr;
    if (umem && xsk_umem__delete(umem) != 0) spdlog::error("AF_XDP: UMEM still in use at close");
    umem = nullptr;
    area.reset();
  }

  // Creates UMEM and socket bound with `bind_flags`; returns 0 or -errno.
  int open(const std::string& iface, std::uint16_t bind_flags) {
    area = std::make_unique<Mapping>(std::size_t{opts.frame_count} * opts.frame_size);
    xsk_umem_config ucfg{};
    ucfg.fill_size = opts.ring_size;
    ucfg.comp_size = opts.ring_size;
    ucfg.frame_size = opts.frame_size;
    ucfg.frame_headroom = 0;
    ucfg.flags = 0;
    if (int err = xsk_umem__create(&umem, area->data(), area->size(), &fill, &comp, &ucfg)) {
      umem = nullptr;
      throw Error("create AF_XDP UMEM", err);
    }
    xsk_socket_config scfg{};
    scfg.rx_size = opts.ring_size;
    scfg.tx_size = opts.ring_size;
    scfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;  // the fast path is ours
    scfg.bind_flags = bind_flags;
    return xsk_socket__create(&xsk, iface.c_str(), opts.queue, umem, &rx, &tx, &scfg);
  }
};

Socket::Socket(const std::string& iface, const Options& opts) : impl_(std::make_unique<Impl>()) {
  if (!power_of_two(opts.frame_count) || !power_of_two(opts.ring_size) ||
      (opts.frame_size != 2048 && opts.frame_size != 4096) || opts.frame_count / 2 > opts.ring_size)
    throw Error(
        fmt::format("AF_XDP options: frame_count {} and ring_size {} must be powers of two with "
                    "frame_count/2 <= ring_size, frame_size {} must be 2048 or 4096",
                    opts.frame_count, opts.ring_size, opts.frame_size));
  impl_->opts = opts;
  const std::uint16_t wake = opts.need_wakeup ? XDP_USE_NEED_WAKEUP : 0;

  auto bind = [&] {
    int err = 0;
    if (opts.mode != BindMode::copy) {
      err = impl_->open(iface, wake | XDP_ZEROCOPY);
      if (err == 0)
        impl_->zc = true;
      else
        impl_->close();
    }
    if (!impl_->zc && opts.mode != BindMode::zero_copy) {
      const int zc_err = err;
      err = impl_->open(iface, wake | XDP_COPY);
      if (err == 0 && opts.mode == BindMode::automatic)
        spdlog::debug("AF_XDP on {} queue {}: zero-copy unavailable ({}), using copy mode", iface, opts.queue,
                      error_text(zc_err));
    }
    return err;
  };
  // EBUSY: a socket is bound to the queue. The kernel releases a closed
  // socket's binding a moment after close() (deferred work), so a socket
  // reopened at once (a restart) waits for that, briefly.
  int err = bind();
  for (int i = 0; err == -EBUSY && i < 25; ++i) {
    impl_->close();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    err = bind();
  }
  if (err) {
    impl_->close();
    throw Error(
        fmt::format("bind an AF_XDP socket to {} queue {} ({} mode)", iface, opts.queue,
                    to_string(opts.mode)),
        err,
        err == -EBUSY
            ? "another AF_XDP socket is bound to that queue (another process?); stop it or use another queue"
        : err == -EINVAL ? fmt::format("does {} have a queue {}? is the XDP program attached in native mode?",
                                       iface, opts.queue)
                         : std::string{});
  }

  // Lower half of the UMEM receives, upper half sends.
  const std::uint32_t half = opts.frame_count / 2;
  std::uint32_t idx = 0;
  if (xsk_ring_prod__reserve(&impl_->fill, half, &idx) != half)
    throw Error("fill the AF_XDP fill ring: fewer slots than RX frames");
  for (std::uint32_t i = 0; i < half; ++i)
    *xsk_ring_prod__fill_addr(&impl_->fill, idx++) = std::uint64_t{i} * opts.frame_size;
  xsk_ring_prod__submit(&impl_->fill, half);
  impl_->fill_pending.reserve(half);
  impl_->tx_free.reserve(half);
  for (std::uint32_t i = half; i < opts.frame_count; ++i)
    impl_->tx_free.push_back(std::uint64_t{i} * opts.frame_size);
}

Socket::~Socket() = default;

int Socket::fd() const noexcept { return xsk_socket__fd(impl_->xsk); }
std::uint32_t Socket::queue() const noexcept { return impl_->opts.queue; }
bool Socket::zero_copy() const noexcept { return impl_->zc; }

std::size_t Socket::receive(std::size_t max, FunctionRef<void(std::span<const std::byte>)> on_frame) {
  impl_->refill();
  std::uint32_t idx = 0;
  const std::uint32_t n = xsk_ring_cons__peek(&impl_->rx, static_cast<std::uint32_t>(max), &idx);
  if (n == 0) {
    // The kernel may be waiting for us to notice refilled buffers.
    if (xsk_ring_prod__needs_wakeup(&impl_->fill))
      ::recvfrom(fd(), nullptr, 0, MSG_DONTWAIT, nullptr, nullptr);
    return 0;
  }
  // The buffers go back to the kernel and the RX slots are released even if
  // on_frame throws.
  struct Finish {
    Impl& impl;
    std::uint32_t idx, n;
    ~Finish() {
      const std::uint64_t chunk_mask = ~std::uint64_t{impl.opts.frame_size - 1};
      for (std::uint32_t i = 0; i < n; ++i)  // capacity reserved: no allocation
        impl.fill_pending.push_back(xsk_ring_cons__rx_desc(&impl.rx, idx + i)->addr & chunk_mask);
      xsk_ring_cons__release(&impl.rx, n);
      impl.refill();
    }
  } finish{*impl_, idx, n};
  for (std::uint32_t i = 0; i < n; ++i) {
    const xdp_desc* d = xsk_ring_cons__rx_desc(&impl_->rx, idx + i);
    on_frame(std::span<const std::byte>(
        static_cast<const std::byte*>(xsk_umem__get_data(impl_->area->data(), d->addr)), d->len));
  }
  return n;
}

void Socket::wakeup_rx() { ::recvfrom(fd(), nullptr, 0, MSG_DONTWAIT, nullptr, nullptr); }

bool Socket::wait_readable(std::chrono::milliseconds timeout) {
  pollfd p{fd(), POLLIN, 0};
  const int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
  if (r < 0) {
    if (errno == EINTR) return false;
    throw Error("poll the AF_XDP socket", errno);
  }
  return r > 0 && (p.revents & POLLIN);
}

bool Socket::send(std::span<const std::byte> frame) {
  if (frame.size() > impl_->opts.frame_size)
    throw Error(fmt::format("send a {}-byte frame over AF_XDP: larger than the {}-byte buffers", frame.size(),
                            impl_->opts.frame_size));
  if (impl_->tx_free.empty()) reclaim();
  if (impl_->tx_free.empty()) return false;
  std::uint32_t idx = 0;
  if (xsk_ring_prod__reserve(&impl_->tx, 1, &idx) != 1) return false;
  const std::uint64_t addr = impl_->tx_free.back();
  impl_->tx_free.pop_back();
  std::memcpy(xsk_umem__get_data(impl_->area->data(), addr), frame.data(), frame.size());
  xdp_desc* d = xsk_ring_prod__tx_desc(&impl_->tx, idx);
  d->addr = addr;
  d->len = static_cast<std::uint32_t>(frame.size());
  d->options = 0;
  xsk_ring_prod__submit(&impl_->tx, 1);
  ++impl_->tx_outstanding;
  return true;
}

std::size_t Socket::send_batch(std::span<const std::span<const std::byte>> frames) {
  for (const auto& frame : frames)  // before touching the ring: nothing to undo
    if (frame.size() > impl_->opts.frame_size)
      throw Error(fmt::format("send a {}-byte frame over AF_XDP: larger than the {}-byte buffers",
                              frame.size(), impl_->opts.frame_size));
  if (impl_->tx_free.size() < frames.size()) reclaim();
  auto n = static_cast<std::uint32_t>(std::min(frames.size(), impl_->tx_free.size()));
  n = std::min(n, xsk_prod_nb_free(&impl_->tx, n));  // refreshes the ring's view when short
  std::uint32_t idx = 0;
  if (n == 0 || xsk_ring_prod__reserve(&impl_->tx, n, &idx) != n) return 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::span<const std::byte> frame = frames[i];
    const std::uint64_t addr = impl_->tx_free.back();
    impl_->tx_free.pop_back();
    std::memcpy(xsk_umem__get_data(impl_->area->data(), addr), frame.data(), frame.size());
    xdp_desc* d = xsk_ring_prod__tx_desc(&impl_->tx, idx + i);
    d->addr = addr;
    d->len = static_cast<std::uint32_t>(frame.size());
    d->options = 0;
  }
  xsk_ring_prod__submit(&impl_->tx, n);
  impl_->tx_outstanding += n;
  return n;
}

int Socket::flush() noexcept {
  if (impl_->opts.need_wakeup && !xsk_ring_prod__needs_wakeup(&impl_->tx)) return 0;
  if (::sendto(fd(), nullptr, 0, MSG_DONTWAIT, nullptr, 0) < 0) return errno;
  return 0;
}

std::size_t Socket::tx_unsent() const noexcept {
  const std::uint32_t prod = *impl_->tx.producer;
  const std::uint32_t cons = __atomic_load_n(impl_->tx.consumer, __ATOMIC_ACQUIRE);
  return prod - cons;
}

bool Socket::tx_needs_wakeup() const noexcept {
  return !impl_->opts.need_wakeup || xsk_ring_prod__needs_wakeup(&impl_->tx);
}

std::size_t Socket::reclaim() {
  std::uint32_t idx = 0;
  const std::uint32_t n = xsk_ring_cons__peek(&impl_->comp, impl_->opts.ring_size, &idx);
  for (std::uint32_t i = 0; i < n; ++i)
    impl_->tx_free.push_back(*xsk_ring_cons__comp_addr(&impl_->comp, idx + i));
  xsk_ring_cons__release(&impl_->comp, n);
  impl_->tx_outstanding -= n;
  return n;
}

std::size_t Socket::tx_in_flight() const noexcept { return impl_->tx_outstanding; }

Stats Socket::stats() const {
  xdp_statistics s{};
  socklen_t len = sizeof s;
  if (::getsockopt(fd(), SOL_XDP, XDP_STATISTICS, &s, &len) != 0)
    throw Error("read AF_XDP statistics", errno);
  Stats out;
#define LOCABUS_X_COPY(name, desc) out.name = s.name;
  LOCABUS_XSK_COUNTERS(LOCABUS_X_COPY)
#undef LOCABUS_X_COPY
  return out;
}

Registration::Registration(fastpath::Maps& maps, const Socket& socket, std::uint32_t slot)
    : maps_(maps), queue_(socket.queue()), slot_(slot) {
  maps_.register_socket(queue_, slot_, socket.fd());
}

Registration::~Registration() {
  try {
    maps_.unregister_socket(queue_, slot_);
  } catch (const Error& e) {
    spdlog::error("unregister AF_XDP socket (queue {}, slot {}): {}", queue_, slot_, e.what());
  }
}

}  // namespace locabus::xsk
