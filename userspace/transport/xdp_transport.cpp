// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "transport/xdp_transport.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <locabus/xdp_maps.h>
#include <spdlog/spdlog.h>

#include "common/error.hpp"
#include "fastpath/fastpath.hpp"
#include "fastpath/netdev.hpp"

namespace locabus::transport {
namespace {

// Enough sendto() calls to drain a 2048-entry TX ring in copy mode, where the
// kernel transmits at most 32 frames per call.
constexpr int kMaxKicks = 80;

// The retry timer backs off to this while the kernel takes nothing...
constexpr std::chrono::nanoseconds kMaxRetryDelay = std::chrono::milliseconds(10);
// ...and to this while it says the link is down (a few wakeups a second).
constexpr std::chrono::nanoseconds kLinkDownRetryDelay = std::chrono::milliseconds(200);

bool seq_at_or_after(std::uint16_t a, std::uint16_t b) noexcept {
  return static_cast<std::int16_t>(static_cast<std::uint16_t>(a - b)) >= 0;
}

void set_int_option(int fd, int level, int name, int value, const char* what, const std::string& iface) {
  if (::setsockopt(fd, level, name, &value, sizeof value) != 0) {
    const int err = errno;
    throw Error(fmt::format("set {} on the AF_XDP socket of {}", what, iface), err,
                err == EPERM ? "needs CAP_NET_ADMIN" : "busy polling needs Linux 5.11 or later");
  }
}

void epoll_add(int ep, int fd, const char* what) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
    throw Error(fmt::format("add the {} to the transport's epoll set", what), errno);
}

}  // namespace

void XdpTransport::RingDeleter::operator()(ring_buffer* r) const noexcept { ring_buffer__free(r); }

XdpTransport::XdpTransport(fastpath::FastPath& fastpath, const XdpOptions& options)
    : options_(options),
      fastpath_(fastpath),
      iface_(fastpath.iface()),
      pending_at_(65536, 0),
      faults_(fastpath.iface(), fastpath.ifindex()) {
  const net::Interface info = net::lookup_interface(iface_);
  if (info.ifindex != fastpath.ifindex())
    throw Error(fmt::format("open AF_XDP sockets on {}: ifindex {} here, but the fast path is attached to "
                            "ifindex {}",
                            iface_, info.ifindex, fastpath.ifindex()),
                0, "create the transport in the network namespace the fast path was attached in");
  mac_ = info.mac;
  if (options_.tx_retry.count() <= 0) throw Error("the AF_XDP transport's tx_retry must be positive");
  retry_delay_ = options_.tx_retry;

  std::vector<std::uint32_t> queues = options_.queues;
  if (queues.empty()) {
    const std::uint32_t n = std::min(
        {info.rx_queues, std::max(options_.max_queues, 1u), static_cast<std::uint32_t>(LOCABUS_MAX_QUEUES)});
    for (std::uint32_t q = 0; q < n; ++q) queues.push_back(q);
  }
  for (std::uint32_t q : queues)
    if (q >= LOCABUS_MAX_QUEUES)
      throw Error(fmt::format("AF_XDP on {}: queue {} is out of range (the fast path serves queues below {})",
                              iface_, q, LOCABUS_MAX_QUEUES));

  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) throw Error("create the AF_XDP transport's epoll fd", errno, "check the process's fd limit");

  fastpath::Maps& maps = fastpath_.maps();
  for (std::uint32_t q : queues) {
    xsk::Options o = options_.xsk;
    o.queue = q;
    sockets_.push_back(std::make_unique<xsk::Socket>(iface_, o));
    xsk::Socket& s = *sockets_.back();
    if (options_.busy_poll) {
      set_int_option(s.fd(), SOL_SOCKET, SO_PREFER_BUSY_POLL, 1, "SO_PREFER_BUSY_POLL", iface_);
      set_int_option(s.fd(), SOL_SOCKET, SO_BUSY_POLL, static_cast<int>(options_.busy_poll_usecs),
                     "SO_BUSY_POLL", iface_);
      set_int_option(s.fd(), SOL_SOCKET, SO_BUSY_POLL_BUDGET, static_cast<int>(options_.busy_poll_budget),
                     "SO_BUSY_POLL_BUDGET", iface_);
    }
    registrations_.push_back(std::make_unique<xsk::Registration>(maps, s, LOCABUS_XSK_DEFAULT_SLOT));
    epoll_add(epoll_.get(), s.fd(), "AF_XDP socket");
  }
  // Best effort: without CAP_NET_ADMIN the kernel caps it at wmem_max.
  const int tx_fd = sockets_.front()->fd();
  if (::setsockopt(tx_fd, SOL_SOCKET, SO_SNDBUFFORCE, &options_.sndbuf_bytes, sizeof(int)) != 0)
    ::setsockopt(tx_fd, SOL_SOCKET, SO_SNDBUF, &options_.sndbuf_bytes, sizeof(int));

  ring_.reset(ring_buffer__new(maps.acks_fd(), &XdpTransport::on_ring_record, this, nullptr));
  if (!ring_)
    throw Error(fmt::format("map the fast path's ACK ring buffer on {}", iface_), errno,
                "the kernel needs BPF ring buffers (Linux 5.8 or later)");
  epoll_add(epoll_.get(), maps.acks_fd(), "ACK ring buffer");

  retry_timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!retry_timer_) throw Error("create the AF_XDP transport's retry timer", errno);
  epoll_add(epoll_.get(), retry_timer_.get(), "TX retry timer");

  // Records from before this transport (nothing was tracked) mean nothing.
  ring_buffer__consume(ring_.get());
  stats_ = XdpStats{};
  spdlog::debug("AF_XDP transport on {}: {}", iface_, describe());
}

XdpTransport::~XdpTransport() {
  // Peers this transport tracked: the kernel should stop consuming their
  // ACKs, since nobody reads the ring any more.
  if (tracked_.none()) return;
  try {
    fastpath::Maps& maps = fastpath_.maps();
    for (std::size_t n = 0; n < tracked_.size(); ++n)
      if (tracked_.test(n)) maps.forget_peer(static_cast<std::uint16_t>(n));
  } catch (const std::exception& e) {
    spdlog::debug("AF_XDP transport on {}: forgetting tracked peers: {}", iface_, e.what());
  }
}

std::vector<std::uint32_t> XdpTransport::queues() const {
  std::vector<std::uint32_t> out;
  for (const auto& s : sockets_) out.push_back(s->queue());
  return out;
}

bool XdpTransport::zero_copy() const noexcept { return sockets_.front()->zero_copy(); }

std::string XdpTransport::describe() const {
  return fmt::format("{} mode, {} {}{}", zero_copy() ? "zero-copy" : "copy", sockets_.size(),
                     sockets_.size() == 1 ? "queue" : "queues", options_.busy_poll ? ", busy polling" : "");
}

// ---- TX -----------------------------------------------------------------------------

// Makes the kernel take what is on the TX ring. In copy mode it transmits
// only inside sendto() (or poll()), at most a batch per call, so this calls
// it while that makes progress. It stops when the ring is empty, when the
// kernel does not need us (zero-copy drivers work on their own), or when a
// call took nothing (out of socket buffer, device busy, link down): the
// retry timer takes over then.
void XdpTransport::kick() {
  if (!faults_.fatal().empty()) return;  // the device is gone: nothing will ever go
  xsk::Socket& tx = *sockets_.front();
  for (int i = 0; i < kMaxKicks; ++i) {
    const std::size_t before = tx.tx_unsent();
    if (before == 0 || !tx.tx_needs_wakeup()) return;
    ++stats_.tx_kicks;
    const int err = tx.flush();
    const bool took = tx.tx_unsent() < before;
    if (err != 0) kick_failed(err);
    if (!took) return;
    if (err == 0 || err == EAGAIN) faults_.tx_ok();  // after the link was down: frames flow again
  }
}

// Never throws: a kick that failed leaves the frames on the ring (or, for
// EBUSY, the kernel dropped one), and the retry timer tries again.
void XdpTransport::kick_failed(int err) {
  switch (err) {
    case EAGAIN:
    case ENOBUFS: ++stats_.tx_kick_busy; return;  // out of socket buffer, or it stopped after a batch
    case EBUSY:
      ++stats_.tx_kick_busy;
      faults_.tx_failed(err, 1, "kick");  // the device dropped one frame (e.g. no carrier)
      return;
    case ENETDOWN:
      ++stats_.tx_kick_busy;
      ++stats_.tx_kick_down;
      faults_.tx_failed(err, 0, "kick");  // counts the outage, logs it (rate-limited)
      return;
    default:
      ++stats_.tx_kick_fail;
      // ENXIO: the socket lost its device; fatal() once the interface is gone.
      faults_.tx_failed(err, 0, "kick");
      return;
  }
}

// Arms the retry timer when frames are waiting for the kernel (refused by
// send(), or on the ring untaken while it needs a kick), disarms it when not.
void XdpTransport::update_retry(bool refused) {
  const xsk::Socket& tx = *sockets_.front();
  const bool waiting = refused || (tx.tx_unsent() > 0 && tx.tx_needs_wakeup());
  if (waiting == retry_armed_) return;
  itimerspec its{};
  if (waiting) {
    const auto ns = retry_delay_.count();
    its.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    its.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    ++stats_.tx_retries;
  }
  if (::timerfd_settime(retry_timer_.get(), 0, &its, nullptr) != 0)
    throw Error("set the AF_XDP transport's retry timer", errno);
  if (!waiting) {
    std::uint64_t expirations;
    [[maybe_unused]] const ssize_t r = ::read(retry_timer_.get(), &expirations, sizeof expirations);
  }
  retry_armed_ = waiting;
}

// While the retry timer is armed (frames waiting), every duty cycle pushes
// the TX ring and takes back completed buffers. A timer that has fired is
// read (so the epoll fd stops being readable) and armed again if the frames
// are still waiting, twice as late each time nothing moved (a link that is
// down must not cost thousands of wakeups a second); the engine offers
// refused frames again itself.
void XdpTransport::service_tx() {
  xsk::Socket& tx = *sockets_.front();
  if (!faults_.fatal().empty()) {
    // Nothing will ever go: stop the timer rather than retry for ever.
    std::uint64_t expirations = 0;
    [[maybe_unused]] const ssize_t r = ::read(retry_timer_.get(), &expirations, sizeof expirations);
    itimerspec off{};
    ::timerfd_settime(retry_timer_.get(), 0, &off, nullptr);
    retry_armed_ = false;
    return;
  }
  const std::size_t unsent = tx.tx_unsent();
  bool progress = tx.reclaim() > 0;
  kick();
  progress = progress || tx.tx_unsent() < unsent;
  std::uint64_t expirations = 0;
  const bool fired = ::read(retry_timer_.get(), &expirations, sizeof expirations) == sizeof expirations;
  if (fired) retry_armed_ = false;  // one-shot: disarmed now
  if (progress)
    retry_delay_ = options_.tx_retry;
  else if (fired)
    retry_delay_ = std::min<std::chrono::nanoseconds>(
        retry_delay_ * 2, faults_.link_down() ? kLinkDownRetryDelay : kMaxRetryDelay);
  update_retry(false);
}

std::size_t XdpTransport::send(std::span<const engine::FrameBytes> frames) {
  if (frames.empty()) return 0;
  xsk::Socket& tx = *sockets_.front();
  if (!faults_.fatal().empty()) {  // gone for good: the daemon is stopping
    faults_.tx_failed(ENODEV, frames.size());
    return frames.size();
  }
  // The link is down: what is on the ring waits and probes it (a kick
  // takes it once the link is up); new frames are dropped, not queued
  // behind it, so the ring never fills and the engine never spins on a
  // refusal. Its retransmissions repair the loss.
  if (faults_.link_down()) {
    kick();
    if (faults_.link_down() && tx.tx_unsent() > 0) {
      faults_.tx_failed(ENETDOWN, frames.size());
      update_retry(false);
      return frames.size();
    }
  }
  std::size_t done = tx.send_batch(frames);
  kick();
  if (done < frames.size() && (faults_.link_down() || !faults_.fatal().empty())) {
    // The kick just found the link down: drop the rest, as above.
    faults_.tx_failed(ENETDOWN, frames.size() - done);
    stats_.tx_frames += done;
    if (done > 0) active_ = true;
    update_retry(false);
    return frames.size();
  }
  if (done < frames.size()) {
    // Out of TX buffers or ring slots: the kick may have completed some.
    tx.reclaim();
    const std::size_t more = tx.send_batch(frames.subspan(done));
    if (more > 0) {
      done += more;
      kick();
    }
  }
  stats_.tx_frames += done;
  const bool refused = done < frames.size();
  if (refused) ++stats_.tx_busy;
  if (done > 0) {
    active_ = true;
    retry_delay_ = options_.tx_retry;
  }
  update_retry(refused);
  return done;
}

// ---- RX -----------------------------------------------------------------------------

std::size_t XdpTransport::receive(std::size_t max, FunctionRef<void(engine::FrameBytes)> on_frame) {
  if (retry_armed_) service_tx();
  std::size_t got = 0;
  const std::size_t nq = sockets_.size();
  auto deliver = [&](std::span<const std::byte> f) {
    // A pure ACK reaches us only from an untracked peer or when the ACK
    // ring was full (the frame is valid: the XDP program checked it).
    if (f.size() >= wire::kMinFrame) {
      const auto h = wire::Header::read(f.subspan(wire::kEthHeaderLen));
      if (h.type_raw() == LOCABUS_T_ACK && h.len() == wire::kHeaderLen) ++stats_.rx_pure_acks;
    }
    on_frame(f);
  };
  for (std::size_t i = 0; i < nq && got < max; ++i)
    got += sockets_[(rx_next_ + i) % nq]->receive(max - got, deliver);
  rx_next_ = nq > 1 ? (rx_next_ + 1) % nq : 0;
  if (got == 0 && options_.busy_poll) {
    for (auto& s : sockets_) s->wakeup_rx();
    stats_.busy_polls += nq;
  }
  stats_.rx_frames += got;
  if (got > 0) active_ = true;
  return got;
}

// ---- ACKs consumed in the kernel ----------------------------------------------------

void XdpTransport::track_peer(std::uint16_t node) {
  // Records of an earlier connection to `node` still on the ring must not
  // reach the new one: read them now, while the node is not tracked (they
  // are dropped; other nodes' records wait in pending_ for poll_acks()).
  // The kernel writes none between forget_peer() and this: it has no entry.
  if (!tracked_.test(node)) ring_buffer__consume(ring_.get());
  try {
    fastpath_.maps().track_peer(node);
    tracked_.set(node);
  } catch (const Error& e) {
    // Not fatal: its ACKs keep arriving as frames.
    spdlog::warn("{}: peer {} stays untracked, its ACKs reach user space as frames: {} ({})", iface_, node,
                 e.what(), e.hint());
  }
}

void XdpTransport::forget_peer(std::uint16_t node) {
  tracked_.reset(node);
  try {
    fastpath_.maps().forget_peer(node);
  } catch (const Error& e) {
    spdlog::warn("{}: forget peer {} in the kernel table: {}", iface_, node, e.what());
  }
}

void XdpTransport::publish_conn(std::uint16_t node, const locabus_conn_pub& pub) {
  if (tracked_.test(node)) fastpath_.maps().publish(node, pub);
}

int XdpTransport::on_ring_record(void* ctx, void* data, std::size_t size) {
  auto& self = *static_cast<XdpTransport*>(ctx);
  ++self.stats_.acks_from_ring;
  locabus_ack_record rec{};
  if (size < sizeof rec) return 0;  // not ours: cannot happen with our program
  std::memcpy(&rec, data, sizeof rec);
  if (!self.tracked_.test(rec.node_id)) {
    ++self.stats_.acks_ignored;  // forgotten since (connection closed or reset)
    return 0;
  }
  std::uint16_t& at = self.pending_at_[rec.node_id];
  if (at == 0) {
    self.pending_.push_back({rec.node_id, rec.ack_num, rec.window});
    at = static_cast<std::uint16_t>(self.pending_.size());
  } else {
    // Records of one peer arrive in order from one CPU; from several (a
    // multi-queue NIC) they may not, so keep the newest in serial order.
    // An equal ACK with another window is a window update: the later wins.
    Pending& p = self.pending_[at - 1];
    if (seq_at_or_after(rec.ack_num, p.ack)) {
      p.ack = rec.ack_num;
      p.window = rec.window;
    }
  }
  return 0;
}

std::size_t XdpTransport::poll_acks(
    FunctionRef<void(std::uint16_t node, std::uint16_t ack, std::uint16_t window)> on_ack) {
  const std::uint64_t before = stats_.acks_from_ring;
  const int r = ring_buffer__consume(ring_.get());
  if (r < 0) throw Error("read the fast path's ACK ring on " + iface_, -r);
  const bool found = stats_.acks_from_ring != before;
  if (found) {
    ++stats_.ring_drains;
    if (!active_) ++stats_.ring_wakeups;
  }
  active_ = found;
  if (pending_.empty()) return 0;
  struct Clear {
    XdpTransport& t;
    ~Clear() {
      for (const Pending& p : t.pending_) t.pending_at_[p.node] = 0;
      t.pending_.clear();
    }
  } clear{*this};
  for (const Pending& p : pending_) on_ack(p.node, p.ack, p.window);
  stats_.acks_applied += pending_.size();
  return pending_.size();
}

// ---- status -------------------------------------------------------------------------

void XdpTransport::counters(CounterGroups& out) const {
  CounterGroup& g = out.emplace_back("transport", "the AF_XDP transport");
  g.add(stats_);
  faults_.add_counters(g);
  g.info.emplace_back("mode", describe());
  xsk::Stats k;
  for (const auto& sock : sockets_) k += sock->stats();
  out.emplace_back("transport.xsk", "the kernel's counters of the AF_XDP sockets, summed").add(k);
}

}  // namespace locabus::transport
