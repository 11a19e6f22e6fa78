// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The local API's data path, measured: messages from one thread to another
// through (a) the shared-memory ring of api/shm.hpp with its wakeup protocol
// (blocking: each side sleeps in poll() on its doorbell when it cannot
// progress), (b) a Unix SOCK_SEQPACKET socketpair with one send()/recv() per
// message, (c) the same socketpair with sendmmsg()/recvmmsg() batches of 32.
// Plus a ping-pong (one message each way, the latency case) and the cost of
// one doorbell ring. docs/PERFORMANCE.md ("Local API data path") has the
// numbers and what they mean.
#include <benchmark/benchmark.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "api/shm.hpp"
#include "common/unique_fd.hpp"

namespace {

using locabus::UniqueFd;
using locabus::api::Doorbell;
using locabus::api::RingConsumer;
using locabus::api::RingProducer;
using locabus::api::SharedRegion;

constexpr std::uint16_t kData = 1;
constexpr std::uint16_t kStop = 2;
constexpr std::size_t kMaxMessage = 2048;

[[noreturn]] void die(const char* what) {
  throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
}

void sleep_on(const Doorbell& bell) {
  pollfd pfd{bell.fd(), POLLIN, 0};
  if (::poll(&pfd, 1, -1) < 0 && errno != EINTR) die("poll");
  bell.drain();
}

/// A daemon-side region, a client attached to it and the two doorbell ends:
/// the client produces into to_daemon, the daemon consumes.
struct ShmLink {
  SharedRegion daemon = SharedRegion::create("bench");
  SharedRegion client = SharedRegion::attach(daemon.duplicate_fd());
  std::pair<Doorbell, Doorbell> bells = Doorbell::create_pair();  // daemon's, client's
  std::atomic<std::uint64_t> rings{0};
};

/// Writes one record, sleeping while the ring is full. Publishes every
/// `batch` records (and when full).
void shm_send(RingProducer& p, const Doorbell& bell, std::atomic<std::uint64_t>& rings, std::uint16_t type,
              std::span<const std::byte> msg, int batch, int& staged) {
  for (;;) {
    const auto st = p.try_write(type, 0, msg);
    if (st == RingProducer::Status::kWritten) {
      if (++staged >= batch) {
        staged = 0;
        if (p.publish()) {
          rings.fetch_add(1, std::memory_order_relaxed);
          bell.ring();
        }
      }
      return;
    }
    if (st != RingProducer::Status::kFull) throw std::runtime_error("try_write failed");
    staged = 0;
    if (p.publish()) {
      rings.fetch_add(1, std::memory_order_relaxed);
      bell.ring();
    }
    if (p.prepare_sleep(msg.size())) sleep_on(bell);
  }
}

/// Reads records until a kStop record, copying each payload out (as recv()
/// would), sleeping on the doorbell when the ring is empty.
std::uint64_t shm_receive_all(RingConsumer& c, const Doorbell& bell, std::atomic<std::uint64_t>& rings) {
  std::array<std::byte, kMaxMessage> buf;
  std::uint64_t n = 0;
  bool stop = false;
  while (!stop) {
    const auto r = c.read(256, [&](std::uint16_t type, std::uint16_t, std::span<const std::byte> payload) {
      std::memcpy(buf.data(), payload.data(), payload.size());
      benchmark::DoNotOptimize(buf);
      if (type == kStop) stop = true;
    });
    if (!r) throw std::runtime_error("ring protocol error");
    n += r.records;
    if (r.wake_producer) {
      rings.fetch_add(1, std::memory_order_relaxed);
      bell.ring();
    }
    if (!stop && r.records == 0 && c.prepare_sleep()) sleep_on(bell);
  }
  return n;
}

// (a) the shared-memory ring, one direction. Arguments: message size, records per publish.
void BM_ShmRing(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const int batch = static_cast<int>(state.range(1));
  ShmLink link;
  std::vector<std::byte> msg(size, std::byte{0x5a});
  std::thread consumer([&] {
    benchmark::DoNotOptimize(shm_receive_all(link.daemon.consumer(), link.bells.first, link.rings));
  });
  int staged = 0;
  for (auto _ : state) {
    shm_send(link.client.producer(), link.bells.second, link.rings, kData, msg, batch, staged);
  }
  shm_send(link.client.producer(), link.bells.second, link.rings, kStop, msg, 1, staged);
  consumer.join();
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(size));
  state.counters["ns_per_msg"] = benchmark::Counter(
      static_cast<double>(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["wakeups_per_msg"] =
      static_cast<double>(link.rings.load()) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_ShmRing)
    ->ArgNames({"bytes", "publish_every"})
    ->Args({64, 1})
    ->Args({64, 32})
    ->Args({1024, 1})
    ->Args({1024, 32})
    ->UseRealTime();

UniqueFd seqpacket_pair(UniqueFd& other) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
  other.reset(sv[1]);
  return UniqueFd(sv[0]);
}

void send_all(int fd, const void* data, std::size_t len) {
  while (::send(fd, data, len, MSG_NOSIGNAL) < 0) {
    if (errno != EINTR) die("send");
  }
}

// (b) SOCK_SEQPACKET, one send() and one recv() per message. A 1-byte message stops.
void BM_SeqpacketSendRecv(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  UniqueFd rx;
  const UniqueFd tx = seqpacket_pair(rx);
  std::vector<std::byte> msg(size, std::byte{0x5a});
  std::thread consumer([&] {
    std::array<std::byte, kMaxMessage> buf;
    for (;;) {
      const ssize_t n = ::recv(rx.get(), buf.data(), buf.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 1) break;
      benchmark::DoNotOptimize(buf);
    }
  });
  for (auto _ : state) send_all(tx.get(), msg.data(), msg.size());
  send_all(tx.get(), msg.data(), 1);
  consumer.join();
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(size));
  state.counters["ns_per_msg"] = benchmark::Counter(
      static_cast<double>(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_SeqpacketSendRecv)->ArgName("bytes")->Arg(64)->Arg(1024)->UseRealTime();

constexpr int kMmsgBatch = 32;

// (c) SOCK_SEQPACKET with sendmmsg()/recvmmsg() batches of 32.
void BM_SeqpacketMmsg(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  UniqueFd rx;
  const UniqueFd tx = seqpacket_pair(rx);
  std::vector<std::byte> msg(size, std::byte{0x5a});
  std::thread consumer([&] {
    std::vector<std::array<std::byte, kMaxMessage>> bufs(kMmsgBatch);
    std::array<iovec, kMmsgBatch> iov{};
    std::array<mmsghdr, kMmsgBatch> hdr{};
    for (int i = 0; i < kMmsgBatch; ++i) {
      iov[i] = {bufs[i].data(), bufs[i].size()};
      hdr[i].msg_hdr.msg_iov = &iov[i];
      hdr[i].msg_hdr.msg_iovlen = 1;
    }
    for (bool stop = false; !stop;) {
      const int n = ::recvmmsg(rx.get(), hdr.data(), kMmsgBatch, MSG_WAITFORONE, nullptr);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      for (int i = 0; i < n; ++i) stop = stop || hdr[i].msg_len <= 1;
      benchmark::DoNotOptimize(bufs);
    }
  });
  std::array<iovec, kMmsgBatch> iov{};
  std::array<mmsghdr, kMmsgBatch> hdr{};
  for (int i = 0; i < kMmsgBatch; ++i) {
    iov[i] = {msg.data(), msg.size()};
    hdr[i].msg_hdr.msg_iov = &iov[i];
    hdr[i].msg_hdr.msg_iovlen = 1;
  }
  auto flush = [&](int count) {
    for (int done = 0; done < count;) {
      const int n =
          ::sendmmsg(tx.get(), hdr.data() + done, static_cast<unsigned>(count - done), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        die("sendmmsg");
      }
      done += n;
    }
  };
  int pending = 0;
  for (auto _ : state) {
    if (++pending == kMmsgBatch) {
      flush(pending);
      pending = 0;
    }
  }
  flush(pending);
  send_all(tx.get(), msg.data(), 1);
  consumer.join();
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(size));
  state.counters["ns_per_msg"] = benchmark::Counter(
      static_cast<double>(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_SeqpacketMmsg)->ArgName("bytes")->Arg(64)->Arg(1024)->UseRealTime();

// ---- latency: one message there, one back -------------------------------------------------------

void BM_ShmPingPong(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  ShmLink link;
  std::vector<std::byte> msg(size, std::byte{0x5a});
  std::thread echo([&] {
    // The daemon: reads to_daemon, answers on to_client.
    std::array<std::byte, kMaxMessage> buf;
    int staged = 0;
    for (bool stop = false; !stop;) {
      std::size_t len = 0;
      const auto r = link.daemon.consumer().read(1, [&](std::uint16_t type, std::uint16_t, auto payload) {
        std::memcpy(buf.data(), payload.data(), payload.size());
        len = payload.size();
        stop = type == kStop;
      });
      if (r.wake_producer) link.bells.first.ring();
      if (r.records == 1) {
        if (!stop) {
          shm_send(link.daemon.producer(), link.bells.first, link.rings, kData, std::span(buf).first(len), 1,
                   staged);
        }
      } else if (link.daemon.consumer().prepare_sleep()) {
        sleep_on(link.bells.first);
      }
    }
  });
  std::array<std::byte, kMaxMessage> buf;
  int staged = 0;
  auto& in = link.client.consumer();
  for (auto _ : state) {
    shm_send(link.client.producer(), link.bells.second, link.rings, kData, msg, 1, staged);
    for (;;) {
      const auto r = in.read(1, [&](std::uint16_t, std::uint16_t, auto payload) {
        std::memcpy(buf.data(), payload.data(), payload.size());
      });
      if (r.wake_producer) link.bells.second.ring();
      if (r.records == 1) break;
      if (in.prepare_sleep()) sleep_on(link.bells.second);
    }
  }
  shm_send(link.client.producer(), link.bells.second, link.rings, kStop, msg, 1, staged);
  echo.join();
  state.SetItemsProcessed(state.iterations());
  state.counters["wakeups_per_roundtrip"] =
      static_cast<double>(link.rings.load()) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_ShmPingPong)->ArgName("bytes")->Arg(64)->Arg(1024)->UseRealTime();

void BM_SeqpacketPingPong(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  UniqueFd theirs;
  const UniqueFd mine = seqpacket_pair(theirs);
  std::vector<std::byte> msg(size, std::byte{0x5a});
  std::thread echo([&] {
    std::array<std::byte, kMaxMessage> buf;
    for (;;) {
      const ssize_t n = ::recv(theirs.get(), buf.data(), buf.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 1) break;
      send_all(theirs.get(), buf.data(), static_cast<std::size_t>(n));
    }
  });
  std::array<std::byte, kMaxMessage> buf;
  for (auto _ : state) {
    send_all(mine.get(), msg.data(), msg.size());
    while (::recv(mine.get(), buf.data(), buf.size(), 0) < 0) {
      if (errno != EINTR) die("recv");
    }
  }
  send_all(mine.get(), msg.data(), 1);
  echo.join();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SeqpacketPingPong)->ArgName("bytes")->Arg(64)->Arg(1024)->UseRealTime();

// ---- the doorbell alone (no sleeper to wake) ----------------------------------------------------

void BM_DoorbellRingDrain(benchmark::State& state) {
  auto [mine, theirs] = Doorbell::create_pair();
  for (auto _ : state) {
    mine.ring();
    benchmark::DoNotOptimize(theirs.drain());
  }
}
BENCHMARK(BM_DoorbellRingDrain);

void BM_EventfdWriteRead(benchmark::State& state) {
  const UniqueFd efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!efd) die("eventfd");
  std::uint64_t v = 1;
  for (auto _ : state) {
    if (::write(efd.get(), &v, sizeof v) != sizeof v) die("write");
    if (::read(efd.get(), &v, sizeof v) != sizeof v) die("read");
    v = 1;
  }
}
BENCHMARK(BM_EventfdWriteRead);

}  // namespace

BENCHMARK_MAIN();
