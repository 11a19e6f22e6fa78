// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabus-bench-sock: the plain TCP and UDP socket peers that locabus-bench (issue 14,
// docs/PERFORMANCE.md) measures Locabus against. Each subcommand is the loop a user of the kernel's
// sockets writes, configured the way such users configure it, nothing tuned for or against it.
// Servers bind --bind (default 0.0.0.0) and --port and print "ready" on stderr once they listen.
// Every program prints one JSON object on stdout: "ok" ("error" on failure), "cpu_s" {user, sys}
// from getrusage(RUSAGE_SELF) over the measured phase, "started_at"/"finished_at" (CLOCK_REALTIME
// seconds of the first/last measured event) and latency percentiles in microseconds (the sample at
// index ceil(q*n)-1 of all measured samples). Every blocking wait is bounded by --timeout (default
// 60 s). Exit status 0 ok, 1 the measurement failed, 2 bad usage.
//
// pingpong-server / pingpong-client --proto tcp|udp: round-trip latency ("rtt_us").
//   The client sends --size bytes and the server sends them back; one sample is the time from the
//   client's send to the complete reply. One thread per side, blocking sockets, no busy polling.
//   TCP: TCP_NODELAY on both ends, as latency users set it. After connecting, the client sends an
//   8-byte hello ("LBPP", the size as 32-bit little-endian); then per round trip it write()s the
//   message (a full write loop) and read()s exactly --size bytes, while the server read()s exactly
//   --size bytes and write()s them back. The server exits when the client closes.
//   UDP: one datagram each way (--size up to 65,507), send()/recv() on a connect()ed client socket
//   and recvfrom()/sendto() on the server. A reply not back within --loss-timeout (default 1 s) is
//   counted in "lost" and the client sends the next. The client ends with the 4-byte datagram "STOP";
//   the server answers it with "STOP" and exits.
//   The first --warmup round trips (default 1000) are not measured.
// stream-server / stream-client: one-way TCP throughput; the server's JSON is the measurement.
//   The client write()s --count messages of --size bytes, each with a full write loop, with Nagle's
//   algorithm on (TCP_NODELAY off: a throughput user's default). The server read()s into a buffer of
//   max(size, 64 KiB) until it has count * size bytes, and reports first byte to last byte: messages/s
//   ("rate") and MB/s (1e6 bytes). Each message starts with its number (8 bytes, little-endian), which
//   the server checks when --size >= 8 (reassembling across read boundaries: "corrupt"). Then the
//   client shuts down its side; the server sees end of stream, answers 16 bytes (the bytes it received
//   and the corrupt count) and closes, so the client knows every byte arrived intact.
// rpc-server / rpc-client: a TCP request/response loop ("latency_us", "calls_per_s").
//   A request is a 4-byte length (big-endian) and --size bytes; the server answers with the same
//   frame (echo). The server is one thread on epoll (level-triggered, non-blocking sockets) serving
//   every connection, and exits once all the connections it accepted are closed. The client opens
//   --inflight K connections (TCP_NODELAY on both ends), each with one request outstanding at a time,
//   driven by one epoll thread (non-blocking). A call's latency is from the write of its request to
//   the complete read of its reply. --count N calls or --duration D seconds, after --warmup calls
//   (default 1000) that are not measured.
//
// Example, namespaces a and b with b at 198.18.200.2:
//   ip netns exec b locabus-bench-sock pingpong-server --proto tcp --port 7100 &
//   ip netns exec a locabus-bench-sock pingpong-client --proto tcp --host 198.18.200.2 --port 7100
//       --size 1024 --count 100000   (one command line)
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/measure.hpp"

namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;
using locabus::bench::Cpu;
using locabus::bench::latency_us;
using locabus::bench::rounded;
using locabus::bench::unix_now;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

constexpr std::size_t kMaxUdpPayload = 65507;     // IPv4: 65,535 - 20 (IP) - 8 (UDP)
constexpr std::size_t kMaxTcpMessage = 64 << 20;  // ping-pong, stream and RPC messages
constexpr std::size_t kMinReadBuffer = 64 * 1024;
constexpr std::size_t kHeadBytes = 8;  // a message's number, little-endian
constexpr std::array<char, 4> kHelloMagic{'L', 'B', 'P', 'P'};
constexpr std::array<char, 4> kStop{'S', 'T', 'O', 'P'};
constexpr int kStopAttempts = 3;

/// The measurement failed: printed as {"ok": false, "error": what()}, exit 1.
class Failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string errno_text(int e) { return std::strerror(e); }

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct Options {
  std::string proto = "tcp";
  std::string host;
  std::string bind = "0.0.0.0";
  std::uint16_t port = 0;
  std::size_t size = 0;
  std::uint64_t count = 0;
  std::uint64_t warmup = 1000;
  double duration_s = 0;
  int inflight = 1;
  double timeout_s = 60;
  double loss_timeout_s = 1;
};

// ---- time, CPU, statistics ----------------------------------------------------------

std::int64_t ns_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

Clock::duration to_duration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

int to_ms(double seconds) {
  return static_cast<int>(std::clamp(std::ceil(seconds * 1000), 1.0, static_cast<double>(INT_MAX)));
}

/// CPU time (all threads) at construction; cpu_s() is what was used since.
class CpuMark {
 public:
  json cpu_s() const { return (Cpu::now() - start_).json(); }

 private:
  Cpu start_ = Cpu::now();
};

json per_second(double amount, double seconds) {
  return seconds > 0 ? json(std::round(amount / seconds * 1000) / 1000) : json(nullptr);
}

// ---- bytes --------------------------------------------------------------------------

void store_le(char* p, std::uint64_t v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<char>(v >> (8 * i));
}

std::uint64_t load_le(const char* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

void store_be32(char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * (3 - i)));
}

std::uint32_t load_be32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void fill_pattern(std::vector<char>& buf) {
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>('a' + i % 26);
}

// ---- sockets ------------------------------------------------------------------------

struct Address {
  sockaddr_in sa{};
  std::string text;  // "198.18.200.2:7100"
};

Address make_address(const std::string& ip, std::uint16_t port) {
  Address a;
  a.sa.sin_family = AF_INET;
  a.sa.sin_port = htons(port);
  if (::inet_pton(AF_INET, ip.c_str(), &a.sa.sin_addr) != 1)
    throw Failure(fmt::format("'{}' is not an IPv4 address (give one like 198.18.200.2)", ip));
  a.text = fmt::format("{}:{}", ip, port);
  return a;
}

std::string address_text(const sockaddr_in& sa) {
  std::array<char, INET_ADDRSTRLEN> buf{};
  ::inet_ntop(AF_INET, &sa.sin_addr, buf.data(), buf.size());
  return fmt::format("{}:{}", buf.data(), ntohs(sa.sin_port));
}

const sockaddr* as_sockaddr(const sockaddr_in& sa) { return reinterpret_cast<const sockaddr*>(&sa); }
sockaddr* as_sockaddr(sockaddr_in& sa) { return reinterpret_cast<sockaddr*>(&sa); }

UniqueFd make_socket(int type) {
  UniqueFd fd(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
  if (fd.get() < 0)
    throw Failure(
        fmt::format("socket() failed: {} (out of file descriptors? see ulimit -n)", errno_text(errno)));
  return fd;
}

void set_int_option(int fd, int level, int name, int value, std::string_view what) {
  if (::setsockopt(fd, level, name, &value, sizeof value) != 0)
    throw Failure(fmt::format("setsockopt({}) failed: {}", what, errno_text(errno)));
}

void set_nodelay(int fd) { set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY"); }

void set_timeout(int fd, int name, double seconds) {
  timeval tv{};
  const auto usec = std::max<long long>(1, std::llround(seconds * 1e6));  // 0 would mean forever
  tv.tv_sec = static_cast<time_t>(usec / 1000000);
  tv.tv_usec = static_cast<suseconds_t>(usec % 1000000);
  if (::setsockopt(fd, SOL_SOCKET, name, &tv, sizeof tv) != 0)
    throw Failure(fmt::format("setsockopt({}) failed: {}",
                              name == SO_RCVTIMEO ? "SO_RCVTIMEO" : "SO_SNDTIMEO", errno_text(errno)));
}

void set_timeouts(int fd, double seconds) {
  set_timeout(fd, SO_RCVTIMEO, seconds);
  set_timeout(fd, SO_SNDTIMEO, seconds);
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    throw Failure(fmt::format("fcntl(O_NONBLOCK) failed: {}", errno_text(errno)));
}

UniqueFd bind_socket(int type, const Address& a) {
  UniqueFd fd = make_socket(type);
  if (type == SOCK_STREAM) set_int_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
  if (::bind(fd.get(), as_sockaddr(a.sa), sizeof a.sa) != 0) {
    const int e = errno;
    std::string_view hint = "";
    if (e == EADDRINUSE) hint = " (another server holds that port: choose another --port or stop it)";
    if (e == EADDRNOTAVAIL) hint = " (no interface in this namespace has that address: check --bind)";
    if (e == EACCES) hint = " (ports below 1024 need CAP_NET_BIND_SERVICE: choose another --port)";
    throw Failure(fmt::format("bind to {} ({}) failed: {}{}", a.text, type == SOCK_STREAM ? "tcp" : "udp",
                              errno_text(e), hint));
  }
  return fd;
}

UniqueFd tcp_listen(const Address& a) {
  UniqueFd fd = bind_socket(SOCK_STREAM, a);
  if (::listen(fd.get(), SOMAXCONN) != 0)
    throw Failure(fmt::format("listen on {} failed: {}", a.text, errno_text(errno)));
  return fd;
}

void announce_ready() { std::cerr << "ready" << std::endl; }

struct Accepted {
  UniqueFd fd;
  std::string peer;
};

/// Waits up to `timeout_s` for one connection on the (blocking) listening socket.
Accepted tcp_accept_one(int lfd, double timeout_s, std::string_view client) {
  pollfd p{lfd, POLLIN, 0};
  for (;;) {
    const int n = ::poll(&p, 1, to_ms(timeout_s));
    if (n > 0) break;
    if (n == 0)
      throw Failure(
          fmt::format("no {} connected within {} s: start it (or raise --timeout)", client, timeout_s));
    if (errno != EINTR)
      throw Failure(fmt::format("poll() on the listening socket failed: {}", errno_text(errno)));
  }
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  UniqueFd fd(::accept4(lfd, as_sockaddr(sa), &len, SOCK_CLOEXEC));
  if (fd.get() < 0) throw Failure(fmt::format("accept() failed: {}", errno_text(errno)));
  return {std::move(fd), address_text(sa)};
}

/// A blocking connect bounded by `timeout_s`; `server` names the program that should listen.
UniqueFd tcp_connect(const Address& a, double timeout_s, std::string_view server) {
  UniqueFd fd = make_socket(SOCK_STREAM);
  set_timeout(fd.get(), SO_SNDTIMEO, timeout_s);  // bounds connect() too
  while (::connect(fd.get(), as_sockaddr(a.sa), sizeof a.sa) != 0) {
    const int e = errno;
    if (e == EINTR) continue;
    if (e == ECONNREFUSED)
      throw Failure(
          fmt::format("connect to {} failed: {} (is the {} running in that namespace, on that port?)", a.text,
                      errno_text(e), server));
    if (e == EINPROGRESS || e == ETIMEDOUT)
      throw Failure(
          fmt::format("connect to {} timed out after {} s (is the address reachable from this "
                      "namespace? check the link, the address and --timeout)",
                      a.text, timeout_s));
    if (e == ENETUNREACH || e == EHOSTUNREACH)
      throw Failure(
          fmt::format("connect to {} failed: {} (no route from this namespace: check --host and the "
                      "interfaces)",
                      a.text, errno_text(e)));
    throw Failure(fmt::format("connect to {} failed: {}", a.text, errno_text(e)));
  }
  return fd;
}

/// A blocking TCP connection and how to name it in errors.
struct Link {
  int fd;
  std::string name;  // "the connection to pingpong-server at 198.18.200.2:7100"
  double timeout_s;
};

[[noreturn]] void io_failure(const Link& l, std::string_view op, int e) {
  if (e == EAGAIN || e == EWOULDBLOCK)
    throw Failure(
        fmt::format("{} on {} timed out after {} s: the other side is stuck or the link is down "
                    "(raise --timeout if it is only slow)",
                    op, l.name, l.timeout_s));
  if (e == ECONNRESET || e == EPIPE)
    throw Failure(
        fmt::format("{} on {} failed: {} (did the other side exit or crash?)", op, l.name, errno_text(e)));
  throw Failure(fmt::format("{} on {} failed: {}", op, l.name, errno_text(e)));
}

void write_all(const Link& l, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(l.fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      io_failure(l, "write", errno);
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

/// Reads exactly n bytes; false on end of stream before the first byte, Failure on end of
/// stream in the middle.
bool read_exact(const Link& l, char* p, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(l.fd, p + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      io_failure(l, "read", errno);
    }
    if (r == 0) {
      if (got == 0) return false;
      throw Failure(
          fmt::format("{} closed in the middle of a message ({} of {} bytes): did the other side exit "
                      "or crash?",
                      l.name, got, n));
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

// ---- pingpong -----------------------------------------------------------------------

json pingpong_server_tcp(const Options& o) {
  UniqueFd lfd = tcp_listen(make_address(o.bind, o.port));
  announce_ready();
  Accepted c = tcp_accept_one(lfd.get(), o.timeout_s, "pingpong-client");
  lfd.reset();  // one client per run
  set_nodelay(c.fd.get());
  set_timeouts(c.fd.get(), o.timeout_s);
  const Link link{c.fd.get(), "the connection from " + c.peer, o.timeout_s};

  std::array<char, 8> hello{};
  if (!read_exact(link, hello.data(), hello.size()) ||
      !std::equal(kHelloMagic.begin(), kHelloMagic.end(), hello.begin()))
    throw Failure(
        fmt::format("{} did not start with a pingpong-client hello: is it a locabus-bench-sock "
                    "pingpong-client --proto tcp?",
                    c.peer));
  const std::size_t size = load_le(hello.data() + 4, 4);
  if (size == 0 || size > kMaxTcpMessage)
    throw Failure(
        fmt::format("{} announced {}-byte messages; 1 to {} are allowed", c.peer, size, kMaxTcpMessage));

  std::vector<char> buf(size);
  const CpuMark cpu;
  std::uint64_t count = 0;
  double started_at = 0;
  Clock::time_point first{}, last{};
  while (read_exact(link, buf.data(), size)) {
    if (count == 0) {
      started_at = unix_now();
      first = Clock::now();
    }
    write_all(link, buf.data(), size);
    ++count;
    last = Clock::now();
  }
  const double secs = count > 0 ? seconds_between(first, last) : 0.0;
  return json{{"ok", true},
              {"mode", "pingpong-server"},
              {"proto", "tcp"},
              {"client", c.peer},
              {"size", size},
              {"count", count},
              {"seconds", secs},
              {"started_at", count > 0 ? json(started_at) : json(nullptr)},
              {"finished_at", count > 0 ? json(started_at + secs) : json(nullptr)},
              {"cpu_s", cpu.cpu_s()}};
}

json pingpong_server_udp(const Options& o) {
  UniqueFd fd = bind_socket(SOCK_DGRAM, make_address(o.bind, o.port));
  set_timeout(fd.get(), SO_RCVTIMEO, o.timeout_s);
  announce_ready();

  std::vector<char> buf(kMaxUdpPayload + 1);
  const CpuMark cpu;
  std::uint64_t count = 0;
  double started_at = 0;
  Clock::time_point first{}, last{};
  std::string client;
  for (;;) {
    sockaddr_in from{};
    socklen_t len = sizeof from;
    const ssize_t n = ::recvfrom(fd.get(), buf.data(), buf.size(), 0, as_sockaddr(from), &len);
    if (n < 0) {
      const int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) {
        if (count == 0)
          throw Failure(
              fmt::format("no datagram from a pingpong-client within {} s: start it (or raise "
                          "--timeout)",
                          o.timeout_s));
        throw Failure(
            fmt::format("{} went silent for {} s after {} round trips without sending STOP (did it "
                        "exit or crash?)",
                        client, o.timeout_s, count));
      }
      throw Failure(fmt::format("recvfrom() on {}:{} failed: {}", o.bind, o.port, errno_text(e)));
    }
    if (n == static_cast<ssize_t>(kStop.size()) && std::equal(kStop.begin(), kStop.end(), buf.begin())) {
      // Acknowledged so that the client knows it may go; a lost answer makes it ask again, and
      // then the closed port answers for us.
      (void)::sendto(fd.get(), kStop.data(), kStop.size(), 0, as_sockaddr(from), len);
      break;
    }
    if (count == 0) {
      started_at = unix_now();
      first = Clock::now();
      client = address_text(from);
    }
    while (::sendto(fd.get(), buf.data(), static_cast<std::size_t>(n), 0, as_sockaddr(from), len) < 0) {
      if (errno != EINTR)
        throw Failure(fmt::format("sendto({}) failed: {}", address_text(from), errno_text(errno)));
    }
    ++count;
    last = Clock::now();
  }
  const double secs = count > 0 ? seconds_between(first, last) : 0.0;
  return json{{"ok", true},
              {"mode", "pingpong-server"},
              {"proto", "udp"},
              {"client", count > 0 ? json(client) : json(nullptr)},
              {"count", count},
              {"seconds", secs},
              {"started_at", count > 0 ? json(started_at) : json(nullptr)},
              {"finished_at", count > 0 ? json(started_at + secs) : json(nullptr)},
              {"cpu_s", cpu.cpu_s()}};
}

json pingpong_result(const Options& o, std::vector<std::int64_t>& samples, std::uint64_t lost,
                     double started_at, double secs, const CpuMark& cpu) {
  const auto done = samples.size();
  return json{{"ok", true},
              {"mode", "pingpong-client"},
              {"proto", o.proto},
              {"size", o.size},
              {"count", done},
              {"lost", lost},
              {"warmup", o.warmup},
              {"seconds", secs},
              {"rate", per_second(static_cast<double>(done), secs)},
              {"rtt_us", latency_us(samples)},
              {"started_at", started_at},
              {"finished_at", started_at + secs},
              {"cpu_s", cpu.cpu_s()}};
}

json pingpong_client_tcp(const Options& o) {
  const Address server = make_address(o.host, o.port);
  UniqueFd fd = tcp_connect(server, o.timeout_s, "pingpong-server --proto tcp");
  set_nodelay(fd.get());
  set_timeouts(fd.get(), o.timeout_s);
  const Link link{fd.get(), "the connection to pingpong-server at " + server.text, o.timeout_s};

  std::array<char, 8> hello{};
  std::copy(kHelloMagic.begin(), kHelloMagic.end(), hello.begin());
  store_le(hello.data() + 4, o.size, 4);
  write_all(link, hello.data(), hello.size());

  std::vector<char> out(o.size), in(o.size);
  fill_pattern(out);
  const std::size_t head = std::min(kHeadBytes, o.size);
  std::uint64_t seq = 0;
  auto round_trip = [&] {
    store_le(out.data(), seq, head);
    write_all(link, out.data(), out.size());
    if (!read_exact(link, in.data(), in.size()))
      throw Failure(
          fmt::format("pingpong-server at {} closed the connection after {} round trips (did it exit or "
                      "crash?)",
                      server.text, seq));
    if (!std::equal(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(head), in.begin()))
      throw Failure(
          fmt::format("reply {} from {} is not the echo of its request (is that a locabus-bench-sock "
                      "pingpong-server?)",
                      seq, server.text));
    ++seq;
  };
  for (std::uint64_t i = 0; i < o.warmup; ++i) round_trip();

  std::vector<std::int64_t> samples;
  samples.reserve(o.count);
  const CpuMark cpu;
  const double started_at = unix_now();
  const auto start = Clock::now();
  auto t1 = start;
  for (std::uint64_t i = 0; i < o.count; ++i) {
    const auto t0 = Clock::now();
    round_trip();
    t1 = Clock::now();
    samples.push_back(ns_between(t0, t1));
  }
  return pingpong_result(o, samples, 0, started_at, seconds_between(start, t1), cpu);
}

/// The client side of UDP ping-pong: a socket connect()ed to the server, so replies come only from
/// it and a closed port is reported (ECONNREFUSED) instead of waited for.
class UdpPingPong {
 public:
  explicit UdpPingPong(const Options& o)
      : o_(o),
        server_(make_address(o.host, o.port)),
        fd_(make_socket(SOCK_DGRAM)),
        out_(o.size),
        in_(kMaxUdpPayload + 1) {
    if (::connect(fd_.get(), as_sockaddr(server_.sa), sizeof server_.sa) != 0)
      throw Failure(
          fmt::format("connect (UDP) to {} failed: {} (check --host and the routes in this namespace)",
                      server_.text, errno_text(errno)));
    set_timeout(fd_.get(), SO_RCVTIMEO, o.loss_timeout_s);
    set_timeout(fd_.get(), SO_SNDTIMEO, o.timeout_s);
    fill_pattern(out_);
    last_reply_ = Clock::now();
  }

  /// One round trip; its time in ns, or nullopt when the reply is lost.
  std::optional<std::int64_t> round_trip() {
    const std::size_t head = std::min(kHeadBytes, o_.size);
    store_le(out_.data(), seq_++, head);
    if (o_.size == kStop.size() && std::equal(kStop.begin(), kStop.end(), out_.begin())) out_[0] ^= 1;
    const auto t0 = Clock::now();
    send(out_.data(), out_.size());
    for (;;) {
      const ssize_t n = receive();
      const auto t1 = Clock::now();
      if (n == static_cast<ssize_t>(out_.size()) &&
          std::equal(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(head), in_.begin())) {
        last_reply_ = t1;
        return ns_between(t0, t1);
      }
      // n < 0: the wait ran out; else a late reply to an earlier datagram, skipped.
      if (n < 0 || t1 - t0 >= to_duration(o_.loss_timeout_s)) {
        if (seconds_between(last_reply_, t1) >= o_.timeout_s)
          throw Failure(
              fmt::format("no reply from pingpong-server at {} for {} s ({} datagrams sent): is it "
                          "running (--proto udp), and the link up? (raise --timeout if it is only slow)",
                          server_.text, o_.timeout_s, seq_));
        return std::nullopt;
      }
    }
  }

  /// Sends "STOP" until the server answers "STOP" (or its port is closed: it has gone); false if
  /// it never answered.
  bool stop() {
    for (int attempt = 0; attempt < kStopAttempts; ++attempt) {
      if (::send(fd_.get(), kStop.data(), kStop.size(), 0) < 0) {
        if (errno == ECONNREFUSED) return true;
        continue;
      }
      const auto t0 = Clock::now();
      while (Clock::now() - t0 < to_duration(o_.loss_timeout_s)) {
        const ssize_t n = ::recv(fd_.get(), in_.data(), in_.size(), 0);
        if (n < 0) {
          if (errno == ECONNREFUSED) return true;
          if (errno == EINTR) continue;
          break;
        }
        if (n == static_cast<ssize_t>(kStop.size()) && std::equal(kStop.begin(), kStop.end(), in_.begin()))
          return true;
      }
    }
    return false;
  }

  const Address& server() const { return server_; }

 private:
  void send(const char* p, std::size_t n) {
    while (::send(fd_.get(), p, n, 0) < 0) {
      const int e = errno;
      if (e == EINTR) continue;
      if (e == ECONNREFUSED) refused();
      throw Failure(fmt::format("send() to {} failed: {}", server_.text, errno_text(e)));
    }
  }

  /// A datagram's length, or -1 when --loss-timeout ran out.
  ssize_t receive() {
    for (;;) {
      const ssize_t n = ::recv(fd_.get(), in_.data(), in_.size(), 0);
      if (n >= 0) return n;
      const int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) return -1;
      if (e == ECONNREFUSED) refused();
      throw Failure(fmt::format("recv() from {} failed: {}", server_.text, errno_text(e)));
    }
  }

  [[noreturn]] void refused() const {
    throw Failure(
        fmt::format("pingpong-server at {} is not there: its port is closed (ICMP port unreachable) after "
                    "{} datagrams (did it exit or crash? is it running with --proto udp?)",
                    server_.text, seq_));
  }

  const Options& o_;
  Address server_;
  UniqueFd fd_;
  std::vector<char> out_, in_;
  std::uint64_t seq_ = 0;
  Clock::time_point last_reply_;
};

json pingpong_client_udp(const Options& o) {
  UdpPingPong pp(o);
  for (std::uint64_t i = 0; i < o.warmup; ++i) (void)pp.round_trip();

  std::vector<std::int64_t> samples;
  samples.reserve(o.count);
  std::uint64_t lost = 0;
  const CpuMark cpu;
  const double started_at = unix_now();
  const auto start = Clock::now();
  for (std::uint64_t i = 0; i < o.count; ++i) {
    if (const auto rtt = pp.round_trip())
      samples.push_back(*rtt);
    else
      ++lost;
  }
  const double secs = seconds_between(start, Clock::now());
  json result = pingpong_result(o, samples, lost, started_at, secs, cpu);
  if (!pp.stop())
    std::cerr << "locabus-bench-sock: note: pingpong-server at " << pp.server().text
              << " did not acknowledge STOP; it stops by itself after its --timeout\n";
  return result;
}

// ---- stream -------------------------------------------------------------------------

/// Checks that every message starts with its number, whatever the read boundaries.
class StreamChecker {
 public:
  explicit StreamChecker(std::size_t size) : size_(size) {}

  /// `p` holds the stream's bytes [offset, offset + n).
  void feed(const char* p, std::uint64_t offset, std::size_t n) {
    if (size_ < kHeadBytes) return;
    const std::uint64_t end = offset + n;
    std::uint64_t at = offset;
    while (at < end) {
      const std::uint64_t msg = at / size_;
      const std::uint64_t in_msg = at % size_;
      if (in_msg < kHeadBytes) {
        const std::uint64_t take = std::min<std::uint64_t>(kHeadBytes - in_msg, end - at);
        std::memcpy(head_.data() + in_msg, p + (at - offset), take);
        if (in_msg + take == kHeadBytes && load_le(head_.data(), kHeadBytes) != msg) ++corrupt_;
        if (in_msg + take < kHeadBytes) return;  // the rest of this head comes with the next read
      }
      at = (msg + 1) * size_;
    }
  }

  std::uint64_t corrupt() const { return corrupt_; }

 private:
  std::size_t size_;
  std::array<char, kHeadBytes> head_{};
  std::uint64_t corrupt_ = 0;
};

json stream_server(const Options& o) {
  UniqueFd lfd = tcp_listen(make_address(o.bind, o.port));
  announce_ready();
  Accepted c = tcp_accept_one(lfd.get(), o.timeout_s, "stream-client");
  lfd.reset();
  set_timeouts(c.fd.get(), o.timeout_s);
  const Link link{c.fd.get(), "the connection from stream-client " + c.peer, o.timeout_s};

  const std::uint64_t total = o.count * o.size;
  std::vector<char> buf(std::max(o.size, kMinReadBuffer));
  StreamChecker checker(o.size);
  const CpuMark cpu;
  std::uint64_t got = 0;
  double started_at = 0;
  Clock::time_point first{}, last{};
  while (got < total) {
    const ssize_t n = ::read(c.fd.get(), buf.data(), std::min<std::uint64_t>(buf.size(), total - got));
    if (n < 0) {
      if (errno == EINTR) continue;
      io_failure(link, "read", errno);
    }
    if (n == 0)
      throw Failure(
          fmt::format("stream-client {} closed after {} of {} bytes (did it exit or crash? do both "
                      "sides have the same --size and --count?)",
                      c.peer, got, total));
    if (got == 0) {
      started_at = unix_now();
      first = Clock::now();
    }
    checker.feed(buf.data(), got, static_cast<std::size_t>(n));
    got += static_cast<std::uint64_t>(n);
    last = Clock::now();
  }
  const double secs = seconds_between(first, last);
  const json cpu_s = cpu.cpu_s();

  // The client shuts down its side after its last message; then we tell it how much arrived.
  std::array<char, 8> tail{};
  if (read_exact(link, tail.data(), 1))
    throw Failure(
        fmt::format("stream-client {} sent more than --count {} × --size {} bytes: give both sides the "
                    "same --size and --count",
                    c.peer, o.count, o.size));
  std::array<char, 16> answer{};
  store_le(answer.data(), got, 8);
  store_le(answer.data() + 8, checker.corrupt(), 8);
  write_all(link, answer.data(), answer.size());

  json result{{"ok", true},
              {"mode", "stream-server"},
              {"proto", "tcp"},
              {"client", c.peer},
              {"size", o.size},
              {"count", o.count},
              {"bytes", got},
              {"corrupt", o.size >= kHeadBytes ? json(checker.corrupt()) : json(nullptr)},
              {"seconds", secs},
              {"rate", per_second(static_cast<double>(o.count), secs)},
              {"mbytes_per_s", per_second(static_cast<double>(got) / 1e6, secs)},
              {"started_at", started_at},
              {"finished_at", started_at + secs},
              {"cpu_s", cpu_s}};
  if (checker.corrupt() > 0) {
    result["ok"] = false;
    result["error"] = fmt::format(
        "{} of {} messages did not start with their number: do both sides have the same "
        "--size? (otherwise the data was corrupted)",
        checker.corrupt(), o.count);
  }
  return result;
}

json stream_client(const Options& o) {
  const Address server = make_address(o.host, o.port);
  UniqueFd fd = tcp_connect(server, o.timeout_s, "stream-server");
  set_timeouts(fd.get(), o.timeout_s);
  const Link link{fd.get(), "the connection to stream-server at " + server.text, o.timeout_s};

  std::vector<char> msg(o.size);
  fill_pattern(msg);
  const std::size_t head = std::min(kHeadBytes, o.size);
  const CpuMark cpu;
  const double started_at = unix_now();
  const auto start = Clock::now();
  for (std::uint64_t i = 0; i < o.count; ++i) {
    store_le(msg.data(), i, head);
    write_all(link, msg.data(), msg.size());
  }
  const double secs = seconds_between(start, Clock::now());
  const json cpu_s = cpu.cpu_s();

  // ENOTCONN: the server has reset the connection; the read below says so.
  if (::shutdown(fd.get(), SHUT_WR) != 0 && errno != ENOTCONN) io_failure(link, "shutdown", errno);
  std::array<char, 16> answer{};  // the bytes and the corrupt messages the server counted
  if (!read_exact(link, answer.data(), answer.size()))
    throw Failure(
        fmt::format("stream-server at {} closed without confirming what it received (did it exit or "
                    "crash? see its error)",
                    server.text));
  const std::uint64_t received = load_le(answer.data(), 8);
  const std::uint64_t corrupt = load_le(answer.data() + 8, 8);
  if (received != o.count * o.size)
    throw Failure(fmt::format("stream-server at {} received {} bytes, {} were sent", server.text, received,
                              o.count * o.size));
  if (corrupt > 0)
    throw Failure(
        fmt::format("stream-server at {} found {} messages without their number: give both sides the "
                    "same --size",
                    server.text, corrupt));
  return json{
      {"ok", true},      {"mode", "stream-client"},  {"proto", "tcp"},
      {"size", o.size},  {"sent", o.count},          {"bytes", o.count * o.size},
      {"seconds", secs}, {"started_at", started_at}, {"finished_at", started_at + secs},
      {"cpu_s", cpu_s},  {"received", received},     {"confirmed_s", seconds_between(start, Clock::now())}};
}

// ---- rpc ----------------------------------------------------------------------------

UniqueFd make_epoll() {
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (ep.get() < 0) throw Failure(fmt::format("epoll_create1() failed: {}", errno_text(errno)));
  return ep;
}

void epoll_set(int ep, int op, int fd, std::uint32_t events, std::uint64_t data) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = data;
  if (::epoll_ctl(ep, op, fd, &ev) != 0)
    throw Failure(fmt::format("epoll_ctl() failed: {}", errno_text(errno)));
}

/// One epoll thread serving every connection: reads, echoes each complete frame, and keeps what
/// the socket did not take until it is writable (not reading that connection meanwhile).
class RpcServer {
 public:
  explicit RpcServer(const Options& o) : o_(o) {}

  json run() {
    UniqueFd lfd = tcp_listen(make_address(o_.bind, o_.port));
    set_nonblocking(lfd.get());
    ep_ = make_epoll();
    epoll_set(ep_.get(), EPOLL_CTL_ADD, lfd.get(), EPOLLIN, kListener);
    announce_ready();

    const CpuMark cpu;
    std::array<epoll_event, 256> events{};
    while (accepted_ == 0 || open_ > 0) {
      const int n =
          ::epoll_wait(ep_.get(), events.data(), static_cast<int>(events.size()), to_ms(o_.timeout_s));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw Failure(fmt::format("epoll_wait() failed: {}", errno_text(errno)));
      }
      if (n == 0) {
        if (accepted_ == 0)
          throw Failure(fmt::format("no rpc-client connected within {} s: start it (or raise --timeout)",
                                    o_.timeout_s));
        throw Failure(
            fmt::format("no request on any of the {} open connections for {} s after {} calls: is the "
                        "client stuck? (raise --timeout if it is only slow)",
                        open_, o_.timeout_s, calls_));
      }
      for (int i = 0; i < n; ++i) {
        if (events[i].data.u64 == kListener) {
          accept_all(lfd.get());
          continue;
        }
        const int fd = static_cast<int>(events[i].data.u64);
        if (!conns_[fd]) continue;
        const std::uint32_t ev = events[i].events;
        if (!conns_[fd]->out.empty()) {
          if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) flush(fd);  // a write reports the error
        } else if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
          on_readable(fd);
        }
      }
    }
    const double secs = calls_ > 0 ? seconds_between(first_, last_) : 0.0;
    json result{{"ok", true},
                {"mode", "rpc-server"},
                {"proto", "tcp"},
                {"calls", calls_},
                {"connections", accepted_},
                {"broken", broken_},
                {"seconds", secs},
                {"calls_per_s", per_second(static_cast<double>(calls_), secs)},
                {"started_at", calls_ > 0 ? json(started_at_) : json(nullptr)},
                {"finished_at", calls_ > 0 ? json(started_at_ + secs) : json(nullptr)},
                {"cpu_s", cpu.cpu_s()}};
    if (broken_ > 0) {
      result["ok"] = false;
      result["error"] = fmt::format(
          "{} of {} connections broke (reset, or closed in the middle of a request): did the rpc-client exit "
          "or "
          "crash?",
          broken_, accepted_);
    }
    return result;
  }

 private:
  static constexpr std::uint64_t kListener = std::numeric_limits<std::uint64_t>::max();

  struct Conn {
    UniqueFd fd;
    std::vector<char> in;  // received bytes [0, in_len)
    std::size_t in_len = 0;
    std::vector<char> out;  // replies the socket has not taken yet, from out_off
    std::size_t out_off = 0;
  };

  void accept_all(int lfd) {
    for (;;) {
      UniqueFd fd(::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (fd.get() < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR || errno == ECONNABORTED) continue;
        throw Failure(
            fmt::format("accept() failed: {} (out of file descriptors? see ulimit -n)", errno_text(errno)));
      }
      set_nodelay(fd.get());
      const int key = fd.get();
      epoll_set(ep_.get(), EPOLL_CTL_ADD, key, EPOLLIN, static_cast<std::uint64_t>(key));
      if (conns_.size() <= static_cast<std::size_t>(key)) conns_.resize(static_cast<std::size_t>(key) + 1);
      conns_[key] = std::make_unique<Conn>();
      conns_[key]->fd = std::move(fd);
      conns_[key]->in.resize(kMinReadBuffer);
      ++accepted_;
      ++open_;
    }
  }

  void close_conn(int fd, bool broken) {
    conns_[fd].reset();  // close() also takes it out of the epoll set
    --open_;
    if (broken) ++broken_;
  }

  void on_readable(int fd) {
    Conn& c = *conns_[fd];
    const ssize_t n = ::read(fd, c.in.data() + c.in_len, c.in.size() - c.in_len);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      close_conn(fd, true);  // ECONNRESET and the like: the client went away
      return;
    }
    if (n == 0) {
      close_conn(fd, c.in_len != 0);
      return;
    }
    c.in_len += static_cast<std::size_t>(n);
    serve(fd);
  }

  /// Echoes the complete frames at the front of the input, and makes room for the next one.
  void serve(int fd) {
    Conn& c = *conns_[fd];
    std::size_t pos = 0;
    std::uint64_t frames = 0;
    while (c.in_len - pos >= 4) {
      const std::size_t len = load_be32(c.in.data() + pos);
      if (len > kMaxTcpMessage) {
        close_conn(fd, true);  // not one of our clients
        return;
      }
      if (c.in_len - pos < 4 + len) break;
      pos += 4 + len;
      ++frames;
    }
    if (frames > 0) {
      if (calls_ == 0) {
        started_at_ = unix_now();
        first_ = Clock::now();
      }
      calls_ += frames;
      std::size_t sent = 0;
      while (sent < pos) {
        const ssize_t w = ::write(fd, c.in.data() + sent, pos - sent);
        if (w < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) break;
          close_conn(fd, true);
          return;
        }
        sent += static_cast<std::size_t>(w);
      }
      if (sent < pos) {
        c.out.assign(c.in.begin() + static_cast<std::ptrdiff_t>(sent),
                     c.in.begin() + static_cast<std::ptrdiff_t>(pos));
        c.out_off = 0;
        epoll_set(ep_.get(), EPOLL_CTL_MOD, fd, EPOLLOUT, static_cast<std::uint64_t>(fd));
      }
      std::memmove(c.in.data(), c.in.data() + pos, c.in_len - pos);
      c.in_len -= pos;
      last_ = Clock::now();
    }
    if (c.in_len >= 4) {
      const std::size_t need = 4 + static_cast<std::size_t>(load_be32(c.in.data()));
      if (need > c.in.size()) c.in.resize(need);
    }
  }

  void flush(int fd) {
    Conn& c = *conns_[fd];
    while (c.out_off < c.out.size()) {
      const ssize_t w = ::write(fd, c.out.data() + c.out_off, c.out.size() - c.out_off);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        close_conn(fd, true);
        return;
      }
      c.out_off += static_cast<std::size_t>(w);
    }
    c.out.clear();
    c.out_off = 0;
    last_ = Clock::now();
    epoll_set(ep_.get(), EPOLL_CTL_MOD, fd, EPOLLIN, static_cast<std::uint64_t>(fd));
    serve(fd);  // frames that arrived behind the ones just flushed
  }

  const Options& o_;
  UniqueFd ep_;
  std::vector<std::unique_ptr<Conn>> conns_;  // by fd
  std::uint64_t accepted_ = 0, open_ = 0, broken_ = 0, calls_ = 0;
  double started_at_ = 0;
  Clock::time_point first_{}, last_{};
};

/// K connections, one call outstanding on each, driven by one epoll thread.
class RpcClient {
 public:
  explicit RpcClient(const Options& o) : o_(o), server_(make_address(o.host, o.port)) {}

  json run() {
    ep_ = make_epoll();
    for (int i = 0; i < o_.inflight; ++i) {
      Conn c;
      c.fd = tcp_connect(server_, o_.timeout_s, "rpc-server");
      set_nodelay(c.fd.get());
      set_nonblocking(c.fd.get());
      c.req.resize(4 + o_.size);
      store_be32(c.req.data(), static_cast<std::uint32_t>(o_.size));
      std::vector<char> payload(o_.size);
      fill_pattern(payload);
      std::copy(payload.begin(), payload.end(), c.req.begin() + 4);
      c.resp.resize(4 + o_.size);
      epoll_set(ep_.get(), EPOLL_CTL_ADD, c.fd.get(), EPOLLIN, static_cast<std::uint64_t>(i));
      conns_.push_back(std::move(c));
    }

    if (o_.warmup > 0) phase(o_.warmup, std::nullopt, false);
    samples_.reserve(o_.count > 0 ? o_.count : 1 << 20);
    const CpuMark cpu;
    const double started_at = unix_now();
    const auto start = Clock::now();
    const std::uint64_t issued = o_.count > 0 ? phase(o_.count, std::nullopt, true)
                                              : phase(0, start + to_duration(o_.duration_s), true);
    const double secs = seconds_between(start, last_done_);
    const json cpu_s = cpu.cpu_s();
    const auto completed = samples_.size();
    return json{{"ok", true},
                {"mode", "rpc-client"},
                {"proto", "tcp"},
                {"calls", issued},
                {"completed", completed},
                {"calls_per_s", per_second(static_cast<double>(completed), secs)},
                {"latency_us", latency_us(samples_)},
                {"inflight", o_.inflight},
                {"size", o_.size},
                {"warmup", o_.warmup},
                {"seconds", secs},
                {"started_at", started_at},
                {"finished_at", started_at + secs},
                {"cpu_s", cpu_s}};
  }

 private:
  struct Conn {
    UniqueFd fd;
    std::vector<char> req, resp;
    std::size_t wpos = 0, rpos = 0;
    bool want_out = false;
    Clock::time_point t0{};
    std::uint64_t done = 0;
  };

  /// Makes `limit` calls (or calls until `until`), at most one outstanding per connection, and
  /// waits for every reply; returns the calls made.
  std::uint64_t phase(std::uint64_t limit, std::optional<Clock::time_point> until, bool record) {
    limit_ = limit;
    until_ = until;
    record_ = record;
    issued_ = 0;
    outstanding_ = 0;
    last_done_ = Clock::now();
    for (std::size_t i = 0; i < conns_.size() && may_issue(); ++i) start(i);
    std::array<epoll_event, 256> events{};
    while (outstanding_ > 0) {
      const int n =
          ::epoll_wait(ep_.get(), events.data(), static_cast<int>(events.size()), to_ms(o_.timeout_s));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw Failure(fmt::format("epoll_wait() failed: {}", errno_text(errno)));
      }
      if (n == 0)
        throw Failure(
            fmt::format("no reply from rpc-server at {} for {} s ({} calls outstanding on {} connections): "
                        "is it stuck, or the link down? (raise --timeout if it is only slow)",
                        server_.text, o_.timeout_s, outstanding_, conns_.size()));
      for (int i = 0; i < n; ++i) {
        const auto idx = static_cast<std::size_t>(events[i].data.u64);
        if (events[i].events & EPOLLOUT) write_some(idx);
        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_some(idx);
      }
    }
    return issued_;
  }

  bool may_issue() const { return until_ ? Clock::now() < *until_ : issued_ < limit_; }

  void start(std::size_t idx) {
    Conn& c = conns_[idx];
    store_le(c.req.data() + 4, seq_++, std::min(kHeadBytes, o_.size));
    c.wpos = 0;
    c.rpos = 0;
    ++issued_;
    ++outstanding_;
    c.t0 = Clock::now();
    write_some(idx);
  }

  void write_some(std::size_t idx) {
    Conn& c = conns_[idx];
    while (c.wpos < c.req.size()) {
      const ssize_t w = ::write(c.fd.get(), c.req.data() + c.wpos, c.req.size() - c.wpos);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          if (!c.want_out) set_events(idx, EPOLLIN | EPOLLOUT);
          return;
        }
        broken(idx, errno);
      }
      c.wpos += static_cast<std::size_t>(w);
    }
    if (c.want_out) set_events(idx, EPOLLIN);
  }

  void read_some(std::size_t idx) {
    Conn& c = conns_[idx];
    const ssize_t n = ::read(c.fd.get(), c.resp.data() + c.rpos, c.resp.size() - c.rpos);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      broken(idx, errno);
    }
    if (n == 0) broken(idx, 0);
    const std::size_t before = c.rpos;
    c.rpos += static_cast<std::size_t>(n);
    if (before < 4 && c.rpos >= 4 && load_be32(c.resp.data()) != o_.size)
      throw Failure(
          fmt::format("rpc-server at {} answered a {}-byte reply to a {}-byte request (is it a "
                      "locabus-bench-sock rpc-server?)",
                      server_.text, load_be32(c.resp.data()), o_.size));
    if (c.rpos < c.resp.size()) return;
    if (c.wpos < c.req.size())
      throw Failure(
          fmt::format("rpc-server at {} answered before the whole request arrived (is it a "
                      "locabus-bench-sock rpc-server?)",
                      server_.text));
    const auto t1 = Clock::now();
    const auto head = static_cast<std::ptrdiff_t>(4 + std::min(kHeadBytes, o_.size));
    if (!std::equal(c.req.begin() + 4, c.req.begin() + head, c.resp.begin() + 4))
      throw Failure(
          fmt::format("a reply from rpc-server at {} is not the echo of its request (is it a "
                      "locabus-bench-sock rpc-server?)",
                      server_.text));
    if (record_) samples_.push_back(ns_between(c.t0, t1));
    last_done_ = t1;
    ++c.done;
    --outstanding_;
    if (may_issue()) start(idx);
  }

  void set_events(std::size_t idx, std::uint32_t events) {
    Conn& c = conns_[idx];
    epoll_set(ep_.get(), EPOLL_CTL_MOD, c.fd.get(), events, idx);
    c.want_out = (events & EPOLLOUT) != 0;
  }

  [[noreturn]] void broken(std::size_t idx, int e) const {
    const Conn& c = conns_[idx];
    throw Failure(fmt::format(
        "rpc-server at {} {} connection {} of {} after {} calls on it (did it exit or crash?)", server_.text,
        e == 0 ? "closed" : "broke (" + errno_text(e) + ")", idx + 1, conns_.size(), c.done));
  }

  const Options& o_;
  Address server_;
  UniqueFd ep_;
  std::vector<Conn> conns_;
  std::vector<std::int64_t> samples_;
  std::uint64_t seq_ = 0, limit_ = 0, issued_ = 0, outstanding_ = 0;
  std::optional<Clock::time_point> until_;
  bool record_ = false;
  Clock::time_point last_done_{};
};

// ---- main ---------------------------------------------------------------------------

int run_mode(const std::string& mode, const std::function<json()>& body) {
  json result;
  try {
    result = body();
  } catch (const std::exception& e) {
    result = json{{"ok", false}, {"mode", mode}, {"error", e.what()}};
  }
  const bool ok = result.value("ok", false);
  if (!ok) std::cerr << "locabus-bench-sock " << mode << ": error: " << result.value("error", "") << "\n";
  std::cout << result.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
  return ok ? kExitOk : kExitFailure;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a peer that went away is an EPIPE to report, not a silent death

  CLI::App app{
      "locabus-bench-sock: the plain TCP and UDP socket programs locabus-bench measures Locabus against\n"
      "(round-trip latency, one-way stream throughput, a request/response loop), each written and "
      "configured\n"
      "the way users of the kernel's sockets do. Each prints one JSON object on stdout; servers print\n"
      "\"ready\" on stderr once they listen. `locabus-bench-sock SUBCOMMAND --help` says what each "
      "measures."};
  app.require_subcommand(1);
  app.footer(
      "Examples (server in namespace b at 198.18.200.2, client in namespace a):\n"
      "  ip netns exec b locabus-bench-sock pingpong-server --proto tcp --port 7100 &\n"
      "  ip netns exec a locabus-bench-sock pingpong-client --proto tcp --host 198.18.200.2 --port 7100 "
      "--size 1024 --count 100000\n"
      "  ip netns exec b locabus-bench-sock stream-server --port 7101 --size 1024 --count 1000000 &\n"
      "  ip netns exec a locabus-bench-sock stream-client --host 198.18.200.2 --port 7101 --size 1024 "
      "--count 1000000\n"
      "  ip netns exec b locabus-bench-sock rpc-server --port 7102 &\n"
      "  ip netns exec a locabus-bench-sock rpc-client --host 198.18.200.2 --port 7102 --size 64 --inflight "
      "64 "
      "--duration 5\n"
      "Exit status: 0 ok; 1 the measurement failed (the JSON has \"error\"); 2 bad usage.");

  Options o;
  auto add_server = [&](CLI::App* sub) {
    sub->add_option("--port", o.port, "TCP/UDP port to listen on")->required()->check(CLI::Range(1, 65535));
    sub->add_option("--bind", o.bind, "Local IPv4 address to bind (default 0.0.0.0)")->check(CLI::ValidIPV4);
  };
  auto add_client = [&](CLI::App* sub, std::string_view server) {
    sub->add_option("--host", o.host, fmt::format("IPv4 address of the {}", server))
        ->required()
        ->check(CLI::ValidIPV4);
    sub->add_option("--port", o.port, fmt::format("Port of the {}", server))
        ->required()
        ->check(CLI::Range(1, 65535));
  };
  auto add_timeout = [&](CLI::App* sub) {
    sub->add_option(
           "--timeout", o.timeout_s,
           "Seconds any single wait (connection, data, reply) may take before the run fails (default 60)")
        ->check(CLI::PositiveNumber);
  };
  auto add_proto = [&](CLI::App* sub) {
    sub->add_option("--proto", o.proto, "tcp or udp")->required()->check(CLI::IsMember({"tcp", "udp"}));
  };
  auto add_size = [&](CLI::App* sub, std::string_view what, std::size_t max) {
    return sub->add_option("--size", o.size, std::string(what))
        ->required()
        ->check(CLI::Range(static_cast<std::size_t>(1), max));
  };
  auto add_warmup = [&](CLI::App* sub, std::string_view what) {
    sub->add_option("--warmup", o.warmup,
                    fmt::format("{} before measuring, not counted (default 1000)", what));
  };

  auto* pps = app.add_subcommand(
      "pingpong-server",
      "Echo server for pingpong-client: TCP (TCP_NODELAY; reads exactly the client's message size, writes it "
      "back; "
      "exits when the client closes) or UDP (sends every datagram back; exits on the datagram \"STOP\"). One "
      "thread, blocking sockets.");
  add_proto(pps);
  add_server(pps);
  add_timeout(pps);
  pps->footer("Example: locabus-bench-sock pingpong-server --proto tcp --port 7100");

  auto* ppc = app.add_subcommand(
      "pingpong-client",
      "Round-trip latency: sends --size bytes and waits for the echo, --count times after --warmup, one "
      "thread, "
      "blocking sockets (TCP: TCP_NODELAY, write then read exactly --size bytes; UDP: one datagram each way, "
      "a "
      "reply missing after --loss-timeout is \"lost\"). JSON: rtt_us percentiles, rate (round trips/s).");
  add_proto(ppc);
  add_client(ppc, "pingpong-server");
  add_size(ppc, "Message size in bytes (UDP: up to 65507)", kMaxTcpMessage);
  ppc->add_option("--count", o.count, "Round trips to measure")->required()->check(CLI::PositiveNumber);
  add_warmup(ppc, "Round trips");
  add_timeout(ppc);
  auto* loss =
      ppc->add_option("--loss-timeout", o.loss_timeout_s,
                      "UDP: seconds to wait for a reply before counting it lost and sending the next "
                      "(default 1)")
          ->check(CLI::PositiveNumber);
  ppc->footer(
      "Example: locabus-bench-sock pingpong-client --proto tcp --host 198.18.200.2 --port 7100 --size 1024 "
      "--count 100000");

  auto* sts = app.add_subcommand("stream-server",
                                 "Receiving end of a one-way TCP stream, and its measurement: read()s with a "
                                 "buffer of max(--size, 64 KiB) "
                                 "until it has --count × --size bytes; JSON: first to last byte, rate "
                                 "(messages/s), mbytes_per_s, messages "
                                 "whose leading number is wrong (corrupt).");
  add_server(sts);
  add_size(sts, "Message size in bytes (the same as the client's)", kMaxTcpMessage);
  sts->add_option("--count", o.count, "Messages to receive (the same as the client's)")
      ->required()
      ->check(CLI::PositiveNumber);
  add_timeout(sts);
  sts->footer("Example: locabus-bench-sock stream-server --port 7101 --size 1024 --count 1000000");

  auto* stc = app.add_subcommand("stream-client",
                                 "Sending end of a one-way TCP stream: write()s --count messages of --size "
                                 "bytes (Nagle on, as a throughput "
                                 "user leaves it), each starting with its number, then waits for the server "
                                 "to confirm it has them all.");
  add_client(stc, "stream-server");
  add_size(stc, "Message size in bytes", kMaxTcpMessage);
  stc->add_option("--count", o.count, "Messages to send")->required()->check(CLI::PositiveNumber);
  add_timeout(stc);
  stc->footer(
      "Example: locabus-bench-sock stream-client --host 198.18.200.2 --port 7101 --size 1024 --count "
      "1000000");

  auto* rps = app.add_subcommand("rpc-server",
                                 "A simple event-loop RPC server: one epoll thread serving every connection "
                                 "(TCP_NODELAY), answering each "
                                 "request (4-byte big-endian length + payload) with the same frame; exits "
                                 "when its connections are closed.");
  add_server(rps);
  add_timeout(rps);
  rps->footer("Example: locabus-bench-sock rpc-server --port 7102");

  auto* rpc = app.add_subcommand(
      "rpc-client",
      "TCP request/response calls: --inflight K connections (TCP_NODELAY), one call outstanding on each, "
      "driven "
      "by one epoll thread; latency from writing a request to reading its whole reply. JSON: calls_per_s, "
      "latency_us percentiles.");
  add_client(rpc, "rpc-server");
  add_size(rpc, "Request and reply payload in bytes (plus 4 bytes of length)", kMaxTcpMessage);
  auto* rcount =
      rpc->add_option("--count", o.count, "Calls to measure (or --duration)")->check(CLI::PositiveNumber);
  auto* rdur = rpc->add_option("--duration", o.duration_s, "Seconds to make calls for (or --count)")
                   ->check(CLI::PositiveNumber);
  rcount->excludes(rdur);
  rpc->add_option("--inflight", o.inflight, "Connections, each with one call outstanding (default 1)")
      ->check(CLI::Range(1, 4096));
  add_warmup(rpc, "Calls");
  add_timeout(rpc);
  rpc->footer(
      "Example: locabus-bench-sock rpc-client --host 198.18.200.2 --port 7102 --size 64 --inflight 64 "
      "--count "
      "100000");

  try {
    app.parse(argc, argv);
    if (ppc->parsed()) {
      if (o.proto == "udp" && o.size > kMaxUdpPayload)
        throw CLI::ValidationError("--size",
                                   fmt::format("a UDP datagram carries at most {} bytes", kMaxUdpPayload));
      if (o.proto == "tcp" && loss->count() > 0)
        throw CLI::ValidationError("--loss-timeout", "applies to --proto udp only");
    }
    if (rpc->parsed() && rcount->count() == 0 && rdur->count() == 0)
      throw CLI::RequiredError("--count or --duration");
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  if (pps->parsed())
    return run_mode("pingpong-server",
                    [&] { return o.proto == "tcp" ? pingpong_server_tcp(o) : pingpong_server_udp(o); });
  if (ppc->parsed())
    return run_mode("pingpong-client",
                    [&] { return o.proto == "tcp" ? pingpong_client_tcp(o) : pingpong_client_udp(o); });
  if (sts->parsed()) return run_mode("stream-server", [&] { return stream_server(o); });
  if (stc->parsed()) return run_mode("stream-client", [&] { return stream_client(o); });
  if (rps->parsed())
    return run_mode("rpc-server", [&] {
      RpcServer s(o);
      return s.run();
    });
  return run_mode("rpc-client", [&] {
    RpcClient c(o);
    return c.run();
  });
}
