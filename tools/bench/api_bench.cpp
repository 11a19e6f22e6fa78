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
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <locabus/client.hpp>
#include <nlohmann/json.hpp>

#include "api/control.hpp"
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

// ---- the client library's receive path --------------------------------------------------------
//
// What liblocabus costs per received message, in one thread: a fake daemon
// (this process, the daemon side of the region) writes a batch of records
// into the endpoint's ring and publishes them, untimed; then the
// application takes them with receive_into() / receive() (/ receive_view()),
// timed (manual time). No sleeping, no cross-core traffic: the client's own
// CPU per message, as the engine benchmarks measure the engine's.

/// A daemon that answers one "open" on a private socket with a region and a
/// doorbell, then stays silent (the client takes any message on the control
/// socket for the end of the connection).
struct FakeDaemon {
  std::filesystem::path dir;
  UniqueFd listener;
  UniqueFd conn;
  std::optional<SharedRegion> region;
  std::pair<Doorbell, Doorbell> bells = Doorbell::create_pair();

  FakeDaemon() {
    char tmpl[] = "/tmp/locabus-bench-XXXXXX";
    if (!::mkdtemp(tmpl)) die("mkdtemp");
    dir = tmpl;
    listener.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!listener) die("socket");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string path = (dir / "sock").string();
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("bind");
    if (::listen(listener.get(), 1) != 0) die("listen");
  }
  ~FakeDaemon() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string socket_path() const { return (dir / "sock").string(); }

  /// Serves the open request (in a thread: open() waits for the reply).
  void serve(nlohmann::json reply) {
    conn.reset(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) die("accept");
    if (!locabus::api::receive_control(conn.get())) throw std::runtime_error("no open request");
    region.emplace(SharedRegion::create("bench"));
    const int fds[2] = {region->fd(), bells.second.fd()};
    locabus::api::send_control(conn.get(), reply, fds);
  }

  template <typename Open>
  auto open(nlohmann::json reply, Open&& open_client) {
    std::thread t([&] { serve(std::move(reply)); });
    auto client = open_client(socket_path());
    t.join();
    return client;
  }

  /// Writes `n` records and publishes them. They must fit.
  void write(std::uint16_t type, std::uint16_t aux, std::span<const std::byte> head,
             std::span<const std::byte> body, std::size_t n) {
    auto& p = region->producer();
    for (std::size_t i = 0; i < n; ++i) {
      if (p.try_write(type, aux, head, body) != RingProducer::Status::kWritten)
        throw std::runtime_error("the endpoint's ring is full: the benchmark's batch is too large");
    }
    if (p.publish()) bells.first.ring();
  }
};

enum class ClientCall { receive_into, receive, receive_view };

template <typename Take>
void run_client_receive(benchmark::State& state, FakeDaemon& d, std::uint16_t type,
                        std::span<const std::byte> head, std::span<const std::byte> body, std::size_t batch,
                        Take&& take) {
  std::chrono::nanoseconds timed{0};
  std::uint64_t n = 0;
  for (auto _ : state) {
    d.write(type, 2, head, body, batch);
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < batch; ++i) take();
    const auto t1 = std::chrono::steady_clock::now();
    timed += t1 - t0;
    n += batch;
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(n));
  state.SetBytesProcessed(static_cast<std::int64_t>(n * body.size()));
  state.counters["ns_per_msg"] = static_cast<double>(timed.count()) / static_cast<double>(n);
}

// Endpoint: messages of N bytes, 256 per batch (the daemon's engine batch).
void BM_ClientReceive(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto call = static_cast<ClientCall>(state.range(1));
  constexpr std::size_t kBatch = 256;
  FakeDaemon d;
  auto ep = d.open({{"ok", true}, {"node_id", 1}, {"proto", LOCABUS_PROTO_DEFAULT}}, [](std::string path) {
    locabus::EndpointOptions o;
    o.socket_path = std::move(path);
    o.events = false;
    return locabus::Endpoint::open(o);
  });
  std::vector<std::byte> msg(size, std::byte{0x5a});
  std::array<std::byte, LOCABUS_MAX_MESSAGE> buf;
  std::uint16_t from = 0;
  const auto forever = std::chrono::milliseconds(-1);
  switch (call) {
    case ClientCall::receive_into:
      run_client_receive(state, d, locabus::api::kRecordMessage, {}, msg, kBatch, [&] {
        benchmark::DoNotOptimize(ep.receive_into(buf, from, forever));
        benchmark::DoNotOptimize(buf);
      });
      break;
    case ClientCall::receive:
      run_client_receive(state, d, locabus::api::kRecordMessage, {}, msg, kBatch, [&] {
        auto m = ep.receive(forever);
        benchmark::DoNotOptimize(m->data.data());
      });
      break;
    case ClientCall::receive_view:
      run_client_receive(state, d, locabus::api::kRecordMessage, {}, msg, kBatch, [&] {
        auto v = ep.receive_view(forever);
        benchmark::DoNotOptimize(v->data.data());
      });
      break;
  }
}
BENCHMARK(BM_ClientReceive)
    ->ArgNames({"bytes", "call"})
    ->ArgsProduct({{64, 1024}, {0, 1, 2}})
    ->UseManualTime();

// Socket: datagrams of N bytes, 64 per batch.
void BM_ClientSocketReceive(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto call = static_cast<ClientCall>(state.range(1));
  constexpr std::size_t kBatch = 64;
  FakeDaemon d;
  auto sock = d.open({{"ok", true}, {"node_id", 1}, {"port", 7000}}, [](std::string path) {
    locabus::SocketOptions o;
    o.socket_path = std::move(path);
    return locabus::Socket::bind(7000, o);
  });
  std::vector<std::byte> dgram(size, std::byte{0x5a});
  const locabus::api::DatagramHeader h{2, 7000, 0, 0};
  const auto head = std::as_bytes(std::span(&h, 1));
  std::vector<std::byte> buf(LOCABUS_MAX_DATAGRAM);
  locabus::DatagramInfo from;
  const auto forever = std::chrono::milliseconds(-1);
  switch (call) {
    case ClientCall::receive_into:
      run_client_receive(state, d, locabus::api::kRecordDatagram, head, dgram, kBatch, [&] {
        benchmark::DoNotOptimize(sock.receive_into(buf, from, forever));
        benchmark::DoNotOptimize(buf.data());
      });
      break;
    case ClientCall::receive:
      run_client_receive(state, d, locabus::api::kRecordDatagram, head, dgram, kBatch, [&] {
        auto m = sock.receive(forever);
        benchmark::DoNotOptimize(m->data.data());
      });
      break;
    case ClientCall::receive_view:
      run_client_receive(state, d, locabus::api::kRecordDatagram, head, dgram, kBatch, [&] {
        auto v = sock.receive_view(forever);
        benchmark::DoNotOptimize(v->data.data());
      });
      break;
  }
}
BENCHMARK(BM_ClientSocketReceive)
    ->ArgNames({"bytes", "call"})
    ->ArgsProduct({{1024, 16384}, {0, 1, 2}})
    ->UseManualTime();

}  // namespace

BENCHMARK_MAIN();
