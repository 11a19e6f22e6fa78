// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabus-cat: netcat for Locasock datagrams. Sends stdin (a datagram per
// line, or binary blocks) to a port on one node or on every node, prints what
// arrives, and for tests and benchmarks generates and checks numbered
// datagrams. Uses only the public liblocabus API (locabus/client.hpp).
//
//   locabus-cat --port 7000 --listen                      # print what arrives on port 7000
//   echo hi | locabus-cat --to 2 --dport 7000             # one datagram to node 2
//   locabus-cat --broadcast --dport 7000 --generate 65536 --size 1024 --json
//   locabus-cat --port 7000 --expect 65536 --sequence --timeout 120 --json
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <locabus/client.hpp>

namespace {

using Clock = std::chrono::steady_clock;
using locabus::Datagram;
using locabus::SendStatus;
using locabus::Socket;
using nlohmann::json;

constexpr std::size_t kSeqBytes = 8;

struct Options {
  std::string socket_path;
  std::uint16_t port = 0;
  int to = -1;  // -1: not given
  bool broadcast = false;
  std::uint16_t dport = 0;
  bool listen = false;
  std::uint64_t count = 0;  // 0: no limit
  double timeout_s = 0;     // 0: none
  std::size_t chunk = 0;    // 0: lines
  std::uint64_t generate = 0;
  std::size_t size = 1024;
  std::size_t check_size = 0;  // --expect: the size every datagram must have (0: any)
  std::uint64_t expect = 0;
  bool sequence = false;
  bool json = false;
  bool raw = false;
  std::size_t wait_peers = 0;
  bool quiet = false;

  bool sending() const { return to >= 0 || broadcast; }
  bool receiving() const { return listen || expect > 0; }
};

/// What went wrong; main() prints it and exits 1.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string dest_name(std::uint16_t node) {
  return node == LOCABUS_NODE_BROADCAST ? "every node" : fmt::format("node {}", node);
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/// Unix time in seconds of a steady-clock instant (namespaces share the
/// clock: locabus-bench compares these across processes).
double unix_time(Clock::time_point t) {
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  return now - seconds_since(t);
}
json unix_time_or_null(const std::optional<Clock::time_point>& t) {
  return t ? json(unix_time(*t)) : json(nullptr);
}

// ---- the numbered payload ----------------------------------------------------------

// Bytes 0..7: the sequence number, little-endian; then a pattern derived from
// it, so that the receiver can check order, gaps, duplicates and contents.
std::byte pattern_byte(std::uint64_t seq, std::size_t i) {
  return static_cast<std::byte>((seq * 131 + i * 7 + (i >> 8)) & 0xff);
}

void fill_sequenced(std::vector<std::byte>& buf, std::uint64_t seq) {
  for (std::size_t i = 0; i < kSeqBytes && i < buf.size(); ++i)
    buf[i] = static_cast<std::byte>(seq >> (8 * i));
  for (std::size_t i = kSeqBytes; i < buf.size(); ++i) buf[i] = pattern_byte(seq, i);
}

// ---- receiving ------------------------------------------------------------------------

/// Counts what arrives and, with --sequence, checks it.
class Receiver {
 public:
  explicit Receiver(const Options& o) : o_(o) {}

  /// A Datagram or a DatagramView (lent by the library: the receive loop
  /// reads in place, no copy and no allocation per datagram).
  template <class D>
  void on(const D& d) {
    if (!first_) first_ = Clock::now();
    last_ = Clock::now();
    ++received_;
    bytes_ += d.data.size();
    if (d.broadcast) ++broadcasts_;
    if (o_.sequence) {
      check(d);
    } else if (o_.raw) {
      std::fwrite(d.data.data(), 1, d.data.size(), stdout);
      std::fflush(stdout);
    } else if (o_.json) {
      json j{{"node", d.node},
             {"port", d.port},
             {"broadcast", d.broadcast},
             {"size", d.data.size()},
             {"text", std::string(d.text())}};
      std::cout << j.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
    } else {
      std::string text(d.text());
      if (!text.empty() && text.back() == '\n') text.pop_back();
      std::cout << d.node << ":" << d.port << ": " << text << std::endl;
    }
  }

  bool done() const {
    const std::uint64_t want = o_.expect ? o_.expect : o_.count;
    return want && received_ >= want;
  }
  std::uint64_t received() const { return received_; }
  std::uint64_t errors() const { return errors_; }
  const std::string& first_error() const { return first_error_; }
  std::uint64_t bytes() const { return bytes_; }

  // Progress on stderr about once a second (with --expect).
  void progress(Clock::time_point now) {
    if (o_.quiet || !o_.expect || now - last_progress_ < std::chrono::seconds(1)) return;
    const double secs = std::chrono::duration<double>(now - last_progress_).count();
    std::cerr << fmt::format("locabus-cat: received {}/{} ({:.0f} datagrams/s){}\n", received_, o_.expect,
                             (received_ - at_last_progress_) / secs,
                             errors_ ? fmt::format(", {} error(s)", errors_) : "");
    last_progress_ = now;
    at_last_progress_ = received_;
  }

  json summary(double total_seconds, bool timed_out) const {
    const double secs = first_ ? std::chrono::duration<double>(last_ - *first_).count() : 0.0;
    json sources = json::array();
    for (const auto& [key, next] : next_)
      sources.push_back({{"node", key.first}, {"port", key.second}, {"next", next}});
    const std::uint64_t want = o_.expect ? o_.expect : o_.count;
    return {{"ok", ok(timed_out)},
            {"received", received_},
            {"expected", want},
            {"bytes", bytes_},
            {"broadcast", broadcasts_},
            {"seconds", secs},
            {"total_seconds", total_seconds},
            {"started_at", unix_time_or_null(first_)},
            {"finished_at", first_ ? json(unix_time(last_)) : json(nullptr)},
            {"rate", secs > 0 ? received_ / secs : 0.0},
            {"mbytes_per_s", secs > 0 ? bytes_ / secs / 1e6 : 0.0},
            {"errors", errors_},
            {"first_error", first_error_.empty() ? json(nullptr) : json(first_error_)},
            {"timed_out", timed_out},
            {"sources", sources}};
  }

  bool ok(bool timed_out) const {
    return errors_ == 0 && !timed_out && (done() || (!o_.expect && !o_.count));
  }

 private:
  void error(const std::string& what) {
    if (errors_++ == 0) first_error_ = what;
    if (errors_ <= 5 && !o_.quiet) std::cerr << "locabus-cat: " << what << "\n";
  }

  template <class D>
  void check(const D& d) {
    // Formatted only for an error: nothing allocated per datagram.
    const auto from = [&] { return fmt::format("node {} port {}", d.node, d.port); };
    if (d.data.size() < kSeqBytes)
      return error(fmt::format("from {}: a {}-byte datagram has no sequence number", from(), d.data.size()));
    std::uint64_t seq = 0;
    for (std::size_t i = 0; i < kSeqBytes; ++i) seq |= static_cast<std::uint64_t>(d.data[i]) << (8 * i);
    std::uint64_t& next = next_[{d.node, d.port}];
    if (seq > next) {
      error(fmt::format("from {}: datagram {} where {} was expected ({} missing)", from(), seq, next,
                        seq - next));
    } else if (seq < next) {
      error(fmt::format("from {}: datagram {} again or out of order (expected {})", from(), seq, next));
    }
    if (seq >= next) next = seq + 1;
    if (o_.check_size && d.data.size() != o_.check_size)
      return error(fmt::format("from {}: datagram {} has {} bytes, not {}", from(), seq, d.data.size(),
                               o_.check_size));
    // The expected bytes, made as --generate makes them, compared in one memcmp.
    expected_.resize(d.data.size());
    fill_sequenced(expected_, seq);
    if (std::memcmp(d.data.data() + kSeqBytes, expected_.data() + kSeqBytes, d.data.size() - kSeqBytes) !=
        0) {
      std::size_t i = kSeqBytes;
      while (d.data[i] == expected_[i]) ++i;
      return error(fmt::format("from {}: datagram {} is corrupt at byte {}", from(), seq, i));
    }
  }

  const Options& o_;
  std::uint64_t received_ = 0, bytes_ = 0, broadcasts_ = 0, errors_ = 0;
  std::string first_error_;
  std::vector<std::byte> expected_;  // check()'s scratch: the payload a datagram should have
  std::map<std::pair<std::uint16_t, std::uint16_t>, std::uint64_t> next_;  // per source: expected sequence
  std::optional<Clock::time_point> first_;
  Clock::time_point last_{};
  Clock::time_point last_progress_ = Clock::now();
  std::uint64_t at_last_progress_ = 0;
};

// ---- sending --------------------------------------------------------------------------

/// Where stdin's datagrams come from: lines or blocks of --chunk bytes.
class StdinSource {
 public:
  explicit StdinSource(std::size_t chunk) : chunk_(chunk) {}

  /// Reads what is available (blocking read() when `block`); false at EOF
  /// with nothing left.
  bool read_more() {
    char buf[65536];
    ssize_t n;
    do n = ::read(STDIN_FILENO, buf, sizeof buf);
    while (n < 0 && errno == EINTR);
    if (n < 0) throw Failure(fmt::format("read stdin: {}", std::strerror(errno)));
    if (n == 0) {
      eof_ = true;
      return false;
    }
    pending_.insert(pending_.end(), reinterpret_cast<std::byte*>(buf), reinterpret_cast<std::byte*>(buf) + n);
    return true;
  }

  /// The next complete datagram, if there is one.
  std::optional<std::vector<std::byte>> next() {
    if (chunk_) {
      if (pending_.size() >= chunk_ || (eof_ && !pending_.empty()))
        return take(std::min(chunk_, pending_.size()), 0);
      return std::nullopt;
    }
    auto nl = std::find(pending_.begin(), pending_.end(), std::byte{'\n'});
    if (nl != pending_.end()) return take(static_cast<std::size_t>(nl - pending_.begin()), 1);
    if (pending_.size() > LOCABUS_MAX_DATAGRAM)
      throw Failure(fmt::format("line {} is longer than {} bytes: send binary data with --chunk", line_ + 1,
                                LOCABUS_MAX_DATAGRAM));
    if (eof_ && !pending_.empty()) return take(pending_.size(), 0);
    return std::nullopt;
  }

  bool eof() const { return eof_; }
  bool exhausted() const { return eof_ && pending_.empty(); }

 private:
  std::vector<std::byte> take(std::size_t n, std::size_t skip) {
    ++line_;
    std::vector<std::byte> out(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n + skip));
    return out;
  }

  std::size_t chunk_;
  std::vector<std::byte> pending_;
  bool eof_ = false;
  std::uint64_t line_ = 0;
};

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
}

void wait_for_peers(Socket& s, std::size_t want, double timeout_s) {
  const auto until = Clock::now() + to_ms(timeout_s > 0 ? timeout_s : 60);
  for (;;) {
    std::size_t alive = 0;
    for (const auto& p : s.peers()) alive += p.state == "alive";
    if (alive >= want) return;
    if (Clock::now() >= until)
      throw Failure(
          fmt::format("only {} of {} peers are alive after {}s: are their daemons up? `locabusctl "
                      "peers` lists what this node sees",
                      alive, want, timeout_s > 0 ? timeout_s : 60));
    ::poll(nullptr, 0, 100);
  }
}

int run(const Options& o) {
  locabus::SocketOptions so;
  so.socket_path = o.socket_path;
  Socket s = Socket::bind(o.port, so);
  if (!o.quiet && !o.json && o.receiving())
    std::cerr << fmt::format("locabus-cat: node {} port {}\n", s.node_id(), s.local_port());
  if (o.sending() && o.wait_peers) wait_for_peers(s, o.wait_peers, o.timeout_s);

  const auto start = Clock::now();
  const bool has_deadline = o.timeout_s > 0;
  const Clock::time_point deadline = start + to_ms(o.timeout_s);
  const auto dest = o.broadcast ? std::uint16_t{LOCABUS_NODE_BROADCAST} : static_cast<std::uint16_t>(o.to);
  Receiver rx(o);
  StdinSource in(o.chunk);

  // Sending state: the datagram waiting for ring space, and what was sent.
  std::optional<std::vector<std::byte>> out;
  std::vector<std::byte> gen(o.generate ? o.size : 0);
  std::uint64_t sent = 0, sent_bytes = 0, failed = 0;
  std::optional<Clock::time_point> send_blocked_since;
  auto last_send_progress = start;
  bool send_done = !o.sending();
  std::optional<Clock::time_point> send_finished;

  auto next_datagram = [&]() -> bool {
    if (out) return true;
    if (o.generate) {
      if (sent >= o.generate) return false;
      fill_sequenced(gen, sent);
      out = gen;
      return true;
    }
    out = in.next();
    return out.has_value();
  };
  auto poll_events = [&] {
    while (auto e = s.next_event()) {
      if (e->kind != LOCABUS_EV_SEND_FAILED) continue;
      failed += e->count;
      if (!o.quiet) std::cerr << "locabus-cat: " << e->to_string() << "\n";
    }
  };

  for (;;) {
    // Send as much as the ring takes now; while receiving too, never wait
    // long for ring space (the datagrams arriving must be read meanwhile).
    while (!send_done && next_datagram()) {
      const auto wait = o.receiving() ? std::chrono::milliseconds(10) : std::chrono::milliseconds(100);
      const SendStatus st = s.send_to(dest, o.dport, *out, wait);
      if (st == SendStatus::too_large)
        throw Failure(fmt::format("a {}-byte datagram is over the limit of {} bytes", out->size(),
                                  LOCABUS_MAX_DATAGRAM));
      if (st == SendStatus::would_block) {
        if (!send_blocked_since) send_blocked_since = Clock::now();
        const double waited = seconds_since(*send_blocked_since);
        if (o.timeout_s > 0 && waited >= o.timeout_s)
          throw Failure(
              fmt::format("datagram {} could not be queued within {}s: {} is not keeping up (check "
                          "`locabusctl peers` and `locabusctl counters`)",
                          sent, o.timeout_s, dest_name(dest)));
        if (o.receiving()) break;
        poll_events();
        continue;
      }
      send_blocked_since.reset();
      ++sent;
      sent_bytes += out->size();
      out.reset();
      if (o.generate && !o.quiet && Clock::now() - last_send_progress >= std::chrono::seconds(1)) {
        last_send_progress = Clock::now();
        std::cerr << fmt::format("locabus-cat: sent {}/{}\n", sent, o.generate);
      }
    }
    if (!send_done && (o.generate ? sent >= o.generate : in.exhausted())) {
      send_done = true;
      send_finished = Clock::now();
    }
    poll_events();

    if (o.receiving()) {
      while (auto d = s.receive_view(std::chrono::milliseconds(0))) {
        rx.on(*d);
        if (rx.done()) break;
      }
      rx.progress(Clock::now());
      if (rx.done()) break;
    } else if (send_done) {
      break;
    }
    if (has_deadline && Clock::now() >= deadline) break;

    // Wait for a datagram, stdin, ring space (retried soon) or a deadline.
    pollfd p[2] = {{s.fd(), POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
    const bool want_stdin = o.sending() && !o.generate && !send_done && !out && !in.eof();
    int wait_ms = 1000;
    if (out) wait_ms = 10;
    if (has_deadline) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      wait_ms = static_cast<int>(std::clamp<std::int64_t>(left + 1, 0, wait_ms));
    }
    if (!o.receiving() && want_stdin) {
      in.read_more();  // only stdin to wait for: a blocking read
      continue;
    }
    const int n = ::poll(p, want_stdin ? 2 : 1, wait_ms);
    if (n < 0 && errno != EINTR) throw Failure(fmt::format("poll: {}", std::strerror(errno)));
    if (want_stdin && n > 0 && (p[1].revents & (POLLIN | POLLHUP))) in.read_more();
  }

  const double total = seconds_since(start);
  const bool timed_out = o.receiving() ? !rx.done() && (o.expect || o.count) : !send_done;
  poll_events();
  if (o.sending()) {
    const double secs = std::chrono::duration<double>(send_finished.value_or(Clock::now()) - start).count();
    if (o.json && (o.generate || !o.receiving())) {
      std::cout << json{{"to", dest},
                        {"dport", o.dport},
                        {"port", s.local_port()},
                        {"sent", sent},
                        {"bytes", sent_bytes},
                        {"seconds", secs},
                        {"started_at", unix_time(start)},
                        {"finished_at", unix_time(send_finished.value_or(Clock::now()))},
                        {"rate", secs > 0 ? sent / secs : 0.0},
                        {"mbytes_per_s", secs > 0 ? sent_bytes / secs / 1e6 : 0.0},
                        {"failed", failed}}
                       .dump()
                << std::endl;
    } else if (o.generate && !o.quiet) {
      std::cerr << fmt::format(
          "locabus-cat: queued {} datagram(s) of {} bytes for {} port {} in {:.3f}s ({:.0f}/s)\n", sent,
          o.size, dest_name(dest), o.dport, secs, secs > 0 ? sent / secs : 0.0);
    }
  }
  if (o.receiving()) {
    if (o.expect && o.json) std::cout << rx.summary(total, timed_out).dump() << std::endl;
    if (o.expect && !o.json && !o.quiet) {
      const auto j = rx.summary(total, timed_out);
      std::cerr << fmt::format(
          "locabus-cat: received {}/{} datagram(s), {} bytes, in {:.3f}s ({:.0f}/s, {:.1f} MB/s), "
          "{} error(s)\n",
          rx.received(), o.expect, rx.bytes(), j["seconds"].get<double>(), j["rate"].get<double>(),
          j["mbytes_per_s"].get<double>(), rx.errors());
    }
    if (timed_out && !o.quiet)
      std::cerr << fmt::format("locabus-cat: timed out after {}s with {}/{} datagram(s)\n", o.timeout_s,
                               rx.received(), o.expect ? o.expect : o.count);
    if (!rx.ok(timed_out)) return 1;
  } else if (timed_out) {
    std::cerr << fmt::format("locabus-cat: timed out after {}s with {} datagram(s) sent\n", o.timeout_s,
                             sent);
    return 1;
  }
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "locabus-cat: send and receive Locasock datagrams through the local locabusd.\n"
      "Sends stdin (one datagram per line, or --chunk blocks) to --dport on node --to or on every\n"
      "other node (--broadcast), prints what arrives on --port (--listen), and generates and\n"
      "checks numbered datagrams for tests (--generate, --expect --sequence)."};
  app.set_version_flag("--version", "locabus-cat 0.1.0");
  Options o;
  app.add_option("-s,--socket", o.socket_path,
                 "locabusd's API socket (default: $LOCABUS_SOCKET, else /run/locabus/locabusd.sock)");
  app.add_option("-p,--port", o.port, "Local port to bind (default 0: an ephemeral port the daemon picks)");
  auto* to = app.add_option("--to", o.to, "Send to this node")->check(CLI::Range(0, 0xFFFE));
  auto* bc = app.add_flag("--broadcast", o.broadcast,
                          "Send to every other node (not this one: broadcasts do not loop back)");
  to->excludes(bc);
  auto* dport = app.add_option("--dport", o.dport, "Destination port")->check(CLI::Range(1, 65535));
  app.add_flag("-l,--listen", o.listen,
               "Print datagrams that arrive: 'node:port: text' per datagram (JSON lines with --json)");
  app.add_option("--count", o.count, "With --listen: stop after this many datagrams")
      ->check(CLI::PositiveNumber);
  app.add_option("--timeout", o.timeout_s,
                 "Seconds: stop listening or expecting after this long (exit 1 if --count/--expect were not "
                 "met); when sending, the longest wait for ring space")
      ->check(CLI::PositiveNumber);
  auto* chunk =
      app.add_option("--chunk", o.chunk, "Send stdin in binary blocks of N bytes (1..65536), not lines")
          ->check(CLI::Range(1, LOCABUS_MAX_DATAGRAM));
  auto* gen =
      app.add_option("--generate", o.generate,
                     "Send N numbered datagrams (bytes 0-7: the number, little-endian; then a pattern) "
                     "instead of stdin")
          ->check(CLI::PositiveNumber);
  app.add_option(
         "--size", o.size,
         "Bytes per --generate datagram (8..65536, default 1024); with --expect --sequence: check the "
         "size too")
      ->check(CLI::Range(8, LOCABUS_MAX_DATAGRAM));
  gen->excludes(chunk);
  auto* expect =
      app.add_option("--expect", o.expect,
                     "Receive N datagrams, print progress to stderr every second and a summary; exit 1 "
                     "on any violation or on timeout")
          ->check(CLI::PositiveNumber);
  app.add_flag("--sequence", o.sequence,
               "With --expect: check --generate datagrams per source (node, port): in order, no gap, no "
               "duplicate, intact payload")
      ->needs(expect);
  app.add_flag("--json", o.json,
               "JSON: one object per datagram with --listen, a summary with --generate/--expect");
  app.add_flag("--raw", o.raw, "With --listen: write the datagrams' bytes only (for binary data)");
  app.add_option("--wait-peers", o.wait_peers, "Before sending, wait until this many peers are alive");
  app.add_flag("-q,--quiet", o.quiet, "No progress or errors on stderr (the exit status still tells)");
  app.footer(
      "Examples:\n"
      "  locabus-cat --port 7000 --listen\n"
      "  echo hello | locabus-cat --to 2 --dport 7000\n"
      "  locabus-cat --broadcast --dport 7000 --generate 65536 --size 1024 --json\n"
      "  locabus-cat --port 7000 --expect 65536 --sequence --timeout 120 --json\n"
      "Exit status: 0 ok, 1 error, violation or timeout, 2 bad usage. docs/API.md describes sockets.");
  try {
    app.parse(argc, argv);
    if (o.sending() && dport->count() == 0)
      throw CLI::ValidationError("--dport", "--to/--broadcast need --dport");
    if (!o.sending() && dport->count()) throw CLI::ValidationError("--dport", "needs --to or --broadcast");
    if (o.generate && !o.sending()) throw CLI::ValidationError("--generate", "needs --to or --broadcast");
    if (!o.sending() && !o.receiving())
      throw CLI::ValidationError("locabus-cat",
                                 "nothing to do: give --to/--broadcast (send), --listen or --expect");
    if (o.sequence && o.raw)
      throw CLI::ValidationError("--raw", "--raw prints datagrams; --sequence checks them");
    if (o.expect && o.count) throw CLI::ValidationError("--count", "use --expect or --count, not both");
    if (app.get_option("--size")->count() && o.expect) o.check_size = o.size;
    return run(o);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const locabus::ClientError& e) {
    std::cerr << "locabus-cat: error: " << e.what() << "\n";
    return 1;
  } catch (const Failure& e) {
    std::cerr << "locabus-cat: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "locabus-cat: error: " << e.what() << "\n";
    return 1;
  }
}
