// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabusctl monitor: LocaMonitor's cluster table as the local locabusd
// keeps it (docs/MONITOR.md): a table, --json, --least-loaded, and --watch,
// a live view that redraws in place like top (plain ANSI sequences, no
// curses; one frame per interval when stdout is not a terminal).
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <locabus/client.hpp>

#include "api/control.hpp"
#include "client/monitor_rows.hpp"
#include "commands.hpp"
#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace locabus::ctl {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct MonitorOptions {
  std::string socket;  // empty: $LOCABUS_SOCKET or the default
  bool json = false;
  bool least_loaded = false;
  bool watch = false;
  double interval_s = 1.0;
  std::uint64_t count = 0;  // --watch: stop after this many frames (0: until q)
};

// ---- the request ------------------------------------------------------------------

// The daemon's "monitor" object: the whole table, asked for in pages over
// one connection (or only the least-loaded node). Throws Error with the
// daemon's reason and hint (monitor off: ENOTSUP), or saying what to do.
json fetch(const MonitorOptions& o, bool least_loaded_only, bool devices = true) {
  const std::filesystem::path path =
      o.socket.empty() ? api::default_socket_path() : std::filesystem::path(o.socket);
  UniqueFd fd = api::connect_control(path);
  json req{{"op", "monitor"}};
  if (least_loaded_only) req["least_loaded_only"] = true;
  if (!devices) req["devices"] = false;  // the table shows no per-device lists
  const auto ask = [&](const json& r) {
    json reply;
    try {
      reply = api::request(fd.get(), r);
    } catch (const Error& e) {
      if (e.code() == EINVAL && std::string_view(e.what()).find("unknown request") != std::string_view::npos)
        throw Error("locabusd at " + path.string() + " does not know the 'monitor' request", ENOTSUP,
                    "it is older than LocaMonitor: run the locabusd that came with this locabusctl");
      throw;
    }
    auto it = reply.find("monitor");
    if (it == reply.end() || !it->is_object())
      throw Error("locabusd's answer to 'monitor' has no \"monitor\" object", EPROTO,
                  "locabusctl and locabusd are of different versions: use the ones built together");
    return std::move(*it);
  };
  return least_loaded_only ? ask(req) : monitor_rows::fetch_pages(ask, std::move(req));
}

// ---- rendering --------------------------------------------------------------------

// Binary units: 1536 -> "1.5K" (K = 1024).
std::string bytes_text(double b) {
  static constexpr std::string_view kUnits[] = {"B", "K", "M", "G", "T", "P", "E"};
  std::size_t u = 0;
  while (b >= 1024 && u + 1 < std::size(kUnits)) {
    b /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{:.0f}B", b);
  return b < 9.95 ? fmt::format("{:.1f}{}", b, kUnits[u]) : fmt::format("{:.0f}{}", b, kUnits[u]);
}

std::string age_text(std::uint64_t ms) {
  if (ms < 10'000) return fmt::format("{:.1f}s", static_cast<double>(ms) / 1000.0);
  const std::uint64_t s = ms / 1000;
  if (s < 100) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  if (s < 100 * 3600) return fmt::format("{}h{:02}m", s / 3600, s / 60 % 60);
  return fmt::format("{}d", s / 86400);
}

double load_per_cpu(const NodeLoad& n) { return n.load1 / (n.cpus ? n.cpus : 1); }

struct Column {
  std::string_view title;
  bool right;  // right-aligned (numbers)
};
constexpr Column kColumns[] = {
    {"", false},
    {"NODE", true},
    {"HOST", false},
    {"STATE", false},
    {"AGE", true},
    {"CPU%", true},
    {"LOAD 1 5 15", false},
    {"LOAD/CPU", true},
    {"MEM USED/TOTAL", true},
    {"SWAP", true},
    {"NET RX/s TX/s", false},
    {"PROCS", true},
};
constexpr std::size_t kHostWidth = 20;

std::vector<std::string> row_cells(const NodeLoad& n, std::optional<std::uint16_t> least) {
  std::string mark;
  mark += n.self ? '*' : ' ';
  mark += least && *least == n.node ? '>' : ' ';
  std::string host(n.hostname);
  if (host.size() > kHostWidth) {
    std::size_t cut = kHostWidth - 1;  // between UTF-8 characters
    while (cut > 0 && (static_cast<unsigned char>(host[cut]) & 0xC0) == 0x80) --cut;
    host = host.substr(0, cut) + "~";
  }
  const double mem_used = static_cast<double>(n.mem_total - std::min(n.mem_available, n.mem_total));
  const double swap_used = static_cast<double>(n.swap_total - std::min(n.swap_free, n.swap_total));
  return {mark,
          std::to_string(n.node),
          host.empty() ? "-" : host,
          n.state == LOCABUS_NODE_ALIVE ? "alive" : "stale",
          age_text(n.age_ms),
          fmt::format("{:.1f}", n.cpu_busy_percent),
          fmt::format("{:5.2f} {:5.2f} {:5.2f}", n.load1, n.load5, n.load15),
          fmt::format("{:.2f}", load_per_cpu(n)),
          bytes_text(mem_used) + "/" + bytes_text(static_cast<double>(n.mem_total)),
          n.swap_total ? bytes_text(swap_used) + "/" + bytes_text(static_cast<double>(n.swap_total)) : "-",
          fmt::format("{:>6} {:>6}", bytes_text(n.net_rx_bytes_per_s), bytes_text(n.net_tx_bytes_per_s)),
          std::to_string(n.processes)};
}

// The table's lines (header first), columns as wide as their widest cell.
std::vector<std::string> table_lines(const std::vector<NodeLoad>& rows, std::optional<std::uint16_t> least) {
  std::vector<std::vector<std::string>> cells;
  cells.emplace_back();
  for (const auto& c : kColumns) cells.back().emplace_back(c.title);
  for (const auto& n : rows) cells.push_back(row_cells(n, least));
  std::vector<std::size_t> width(std::size(kColumns), 0);
  for (const auto& r : cells)
    for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  std::vector<std::string> lines;
  for (const auto& r : cells) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (i > 1) line += "  ";
      const std::size_t pad = width[i] - r[i].size();
      if (kColumns[i].right) line.append(pad, ' ');
      line += r[i];
      if (!kColumns[i].right && i + 1 < r.size()) line.append(pad, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    lines.push_back(std::move(line));
  }
  return lines;
}

std::string summary_line(const json& m, const std::vector<NodeLoad>& rows) {
  const auto alive = std::count_if(rows.begin(), rows.end(),
                                   [](const NodeLoad& n) { return n.state == LOCABUS_NODE_ALIVE; });
  return fmt::format(
      "LocaMonitor on node {}: {} node(s), {} alive, {} stale; sampled every {} ms, sent at "
      "least every {} ms, stale after {} ms",
      m.value("node", 0), rows.size(), alive, static_cast<std::ptrdiff_t>(rows.size()) - alive,
      m.value("sample_ms", 0), m.value("broadcast_ms", 0), m.value("stale_ms", 0));
}

std::string footer_line(const json& m, std::optional<std::uint16_t> least) {
  const std::string rule = m.value("rule", std::string());
  return fmt::format("* this node   > least loaded: {}{}",
                     least ? fmt::format("node {}", *least) : std::string("none (no node is alive)"),
                     rule.empty() ? "" : " (" + rule + ")");
}

// Everything a frame shows, line by line, from one "monitor" object.
struct Frame {
  std::string summary;
  std::vector<std::string> table;  // header first
  std::string footer;
};

Frame frame_of(const json& m) {
  const auto rows = monitor_rows::nodes(m);
  const auto least = monitor_rows::least_loaded(m);
  return {summary_line(m, rows), table_lines(rows, least), footer_line(m, least)};
}

int run_once(const MonitorOptions& o) {
  const json m = fetch(o, false, o.json);
  if (o.json) {
    std::cout << m.dump(2) << "\n";
    return 0;
  }
  const Frame f = frame_of(m);
  std::cout << f.summary << "\n\n";
  for (const auto& l : f.table) std::cout << l << "\n";
  std::cout << "\n" << f.footer << "\n";
  return 0;
}

int run_least_loaded(const MonitorOptions& o) {
  const json m = fetch(o, true);
  const auto least = monitor_rows::least_loaded(m);
  if (o.json)
    std::cout << json{{"least_loaded", least ? json(*least) : json(nullptr)}}.dump() << "\n";
  else if (least)
    std::cout << *least << "\n";
  if (!least) {
    std::cerr << fmt::format(
        "locabusctl: no node is alive in LocaMonitor's table on node {} (the daemon may have just "
        "started: ask again after its first sample; `locabusctl monitor` shows the table)\n",
        m.value("node", 0));
    return 1;
  }
  return 0;
}

// ---- --watch ----------------------------------------------------------------------

// Signals reach the loop through a pipe (the handler only writes a byte),
// so poll() wakes at once and nothing but write() runs in the handler. A
// second SIGINT/SIGTERM/SIGHUP while the loop is stuck (a daemon that does
// not answer) restores the terminal from the handler and exits.
volatile std::sig_atomic_t g_stop_signal = 0;
int g_signal_pipe = -1;
struct termios g_saved_termios;
volatile std::sig_atomic_t g_termios_saved = 0;
volatile std::sig_atomic_t g_alt_screen = 0;
constexpr char kLeaveScreen[] = "\x1b[?25h\x1b[?1049l";

void on_signal(int sig) {
  const int saved_errno = errno;
  if (sig != SIGWINCH) {
    if (g_stop_signal != 0) {
      if (g_termios_saved) ::tcsetattr(STDIN_FILENO, TCSANOW, &g_saved_termios);
      if (g_alt_screen) (void)!::write(STDOUT_FILENO, kLeaveScreen, sizeof kLeaveScreen - 1);
      ::_exit(128 + sig);
    }
    g_stop_signal = sig;
  }
  const char c = sig == SIGWINCH ? 'w' : 's';
  if (g_signal_pipe >= 0) (void)!::write(g_signal_pipe, &c, 1);
  errno = saved_errno;
}

// Installs on_signal for the watch's signals (no SA_RESTART: a blocked call
// returns EINTR) and puts the old handlers back when destroyed.
class SignalGuard {
 public:
  explicit SignalGuard(bool winch) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
      throw Error("create the signal pipe for --watch", errno, "too many open files? raise `ulimit -n`");
    read_ = UniqueFd(fds[0]);
    write_ = UniqueFd(fds[1]);
    g_signal_pipe = write_.get();
    g_stop_signal = 0;
    std::vector<int> sigs = {SIGINT, SIGTERM, SIGHUP};
    if (winch) sigs.push_back(SIGWINCH);
    for (int s : sigs) {
      struct sigaction sa {};
      sa.sa_handler = on_signal;
      sigemptyset(&sa.sa_mask);
      struct sigaction old {};
      if (::sigaction(s, &sa, &old) == 0) old_.emplace_back(s, old);
    }
  }
  ~SignalGuard() {
    for (const auto& [s, old] : old_) ::sigaction(s, &old, nullptr);
    g_signal_pipe = -1;
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

  int fd() const noexcept { return read_.get(); }
  // What arrived: true when a stop signal is among it (false: only SIGWINCH).
  bool drain() const noexcept {
    char buf[64];
    bool stop = false;
    for (ssize_t n; (n = ::read(read_.get(), buf, sizeof buf)) > 0;)
      for (ssize_t i = 0; i < n; ++i) stop |= buf[i] == 's';
    return stop;
  }

 private:
  UniqueFd read_, write_;
  std::vector<std::pair<int, struct sigaction>> old_;
};

// stdin in non-canonical mode without echo, so keys act at once; the
// saved settings come back when it is destroyed (exceptions included) and
// from on_signal. Ctrl-C still raises SIGINT (ISIG stays on).
class RawTerminal {
 public:
  RawTerminal() {
    if (::tcgetattr(STDIN_FILENO, &g_saved_termios) != 0)
      throw Error("read the terminal's settings (tcgetattr on stdin)", errno);
    struct termios raw = g_saved_termios;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 1;  // read() after poll() returns what is there
    raw.c_cc[VTIME] = 0;
    g_termios_saved = 1;
    if (::tcsetattr(STDIN_FILENO, TCSANOW, &raw) != 0) {
      g_termios_saved = 0;
      throw Error("put the terminal in non-canonical mode (tcsetattr on stdin)", errno);
    }
  }
  ~RawTerminal() {
    ::tcsetattr(STDIN_FILENO, TCSANOW, &g_saved_termios);
    g_termios_saved = 0;
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;
};

void write_all(std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = ::write(STDOUT_FILENO, s.data(), s.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error("write to stdout", errno);
    }
    s.remove_prefix(static_cast<std::size_t>(n));
  }
}

// The alternate screen (the shell's screen comes back on exit) with the
// cursor hidden.
class AltScreen {
 public:
  AltScreen() {
    write_all("\x1b[?1049h\x1b[?25l");
    g_alt_screen = 1;
  }
  ~AltScreen() {
    g_alt_screen = 0;
    try {
      write_all(kLeaveScreen);
    } catch (const Error&) {
    }
  }
  AltScreen(const AltScreen&) = delete;
  AltScreen& operator=(const AltScreen&) = delete;
};

struct TermSize {
  std::size_t rows = 0, cols = 0;  // 0: unknown
};
TermSize term_size() {
  winsize ws{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) != 0) return {};
  return {ws.ws_row, ws.ws_col};
}

std::string clock_text() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

// One frame's text. On a terminal it fits the screen: lines cut to its
// width, rows beyond its height left out (and counted).
std::string render_watch(const MonitorOptions& o, const std::optional<Frame>& f, const std::string& error,
                         bool tty) {
  std::vector<std::string> lines;
  lines.push_back(fmt::format("locabusctl monitor   {}   every {:g}s{}", clock_text(), o.interval_s,
                              tty ? "   (q quits)" : ""));
  if (f) lines.push_back(f->summary);
  if (!error.empty()) lines.push_back("error: " + error + " (trying again every interval)");
  if (f) lines.emplace_back();
  std::vector<std::string> tail;
  if (f) {
    tail.emplace_back();
    tail.push_back(f->footer);
  }
  std::vector<std::string> table = f ? f->table : std::vector<std::string>{};
  const TermSize ts = tty ? term_size() : TermSize{};
  const std::size_t room = ts.rows > lines.size() + tail.size() ? ts.rows - lines.size() - tail.size() : 0;
  if (ts.rows && table.size() > room && table.size() > 1) {
    const std::size_t keep = std::max<std::size_t>(room, 2) - 1;  // the header, rows, and "... more"
    const std::size_t hidden = table.size() - keep;
    table.resize(keep);
    table.push_back(fmt::format("... {} more node(s): a taller terminal, or --json", hidden));
  }
  lines.insert(lines.end(), table.begin(), table.end());
  lines.insert(lines.end(), tail.begin(), tail.end());
  std::string out = tty ? "\x1b[H\x1b[2J" : "";
  for (std::size_t i = 0; i < lines.size(); ++i) {
    std::string_view l = lines[i];
    if (ts.cols && l.size() > ts.cols) l = l.substr(0, ts.cols);
    out += l;
    if (!tty || i + 1 < lines.size()) out += '\n';  // the last line of a screen: no scroll
  }
  return out;
}

// What ended the watch.
struct WatchEnd {
  int status = 0;
  int signal = 0;  // re-raised after the terminal was restored (SIGTERM, SIGHUP)
};

WatchEnd watch_loop(const MonitorOptions& o, bool tty, const SignalGuard& signals, bool keys) {
  const auto interval =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.interval_s));
  bool stdin_open = keys;
  for (std::uint64_t frames = 0;;) {
    std::optional<Frame> f;
    std::string error;
    try {
      const json m = fetch(o, false, o.json);
      if (o.json) {
        write_all(m.dump() + "\n");
      } else {
        f = frame_of(m);
      }
    } catch (const Error& e) {
      // The first frame fails like the command without --watch; later ones
      // say what is wrong and try again (the daemon may be restarting).
      if (frames == 0 || e.code() == ENOTSUP) throw;
      error = std::string(e.what()) + (e.hint().empty() ? "" : "; " + e.hint());
    }
    if (!o.json || !error.empty()) {
      if (o.json)
        std::cerr << "locabusctl: " << error << "\n";
      else
        write_all(render_watch(o, f, error, tty) + (tty ? "" : "\n"));
    }
    ++frames;
    if (o.count && frames >= o.count) return {error.empty() ? 0 : 1, 0};  // the last frame failed: 1

    // Wait for the interval, a key or a signal.
    const auto next = Clock::now() + interval;
    for (bool redraw = false; !redraw;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count();
      if (left <= 0) break;
      pollfd p[2] = {{signals.fd(), POLLIN, 0}, {stdin_open ? STDIN_FILENO : -1, POLLIN, 0}};
      const int n = ::poll(p, 2, static_cast<int>(left));
      if (n < 0 && errno != EINTR) throw Error("poll stdin and the signal pipe", errno);
      if (g_stop_signal != 0 || (n > 0 && (p[0].revents & POLLIN) && signals.drain())) {
        const int sig = g_stop_signal;
        // Ctrl-C is a way to quit the view, like q; others end it as that signal.
        return sig == SIGINT ? WatchEnd{} : WatchEnd{0, sig};
      }
      if (n > 0 && (p[0].revents & POLLIN)) redraw = true;  // SIGWINCH: draw for the new size now
      if (n > 0 && p[1].revents) {
        char keys_read[32];
        const ssize_t k = ::read(STDIN_FILENO, keys_read, sizeof keys_read);
        if (k <= 0 && !(k < 0 && errno == EINTR)) {
          stdin_open = false;  // no more keys (end of input or hangup): only signals end the view
          continue;
        }
        for (ssize_t i = 0; i < k; ++i) {
          const char c = keys_read[i];
          if (c == 'q' || c == 'Q' || c == '\x03' || c == '\x04') return {};
          if (c == ' ' || c == 'r' || c == '\f') redraw = true;  // refresh now
        }
      }
    }
  }
}

int run_watch(const MonitorOptions& o) {
  const bool tty = ::isatty(STDOUT_FILENO) == 1 && !o.json;
  const bool keys = tty && ::isatty(STDIN_FILENO) == 1;
  WatchEnd end;
  {
    SignalGuard signals(tty);
    std::optional<RawTerminal> raw;
    if (keys) raw.emplace();
    std::optional<AltScreen> screen;
    if (tty) screen.emplace();
    end = watch_loop(o, tty, signals, keys);
  }  // the terminal is restored here, also when watch_loop throws
  if (end.signal) {
    std::signal(end.signal, SIG_DFL);
    std::raise(end.signal);
  }
  return end.status;
}

}  // namespace

void register_monitor_command(CLI::App& app) {
  auto o = std::make_shared<MonitorOptions>();
  auto* cmd = app.add_subcommand(
      "monitor",
      "LocaMonitor: every node's load as the local locabusd knows it (CPU, load, memory, swap, network, "
      "processes), the least-loaded node, and a live view (--watch)");
  cmd->add_option("-s,--socket", o->socket,
                  "locabusd's API socket (default: $LOCABUS_SOCKET, else /run/locabus/locabusd.sock)");
  cmd->add_flag("--json", o->json,
                "Print the daemon's \"monitor\" object as it sent it (with --watch: one line per frame; "
                "with --least-loaded: {\"least_loaded\": N})");
  auto* least = cmd->add_flag("--least-loaded", o->least_loaded,
                              "Print only the least-loaded alive node's id (exit 1 when no node is alive)");
  auto* watch = cmd->add_flag("-w,--watch", o->watch,
                              "A live view redrawn in place every --interval, like top (q or Ctrl-C quits); "
                              "when stdout is not a terminal, one frame per interval, separated by a blank "
                              "line");
  cmd->add_option("-n,--interval", o->interval_s, "Seconds between frames of --watch (default 1)")
      ->check(CLI::Range(0.1, 3600.0))
      ->needs(watch);
  cmd->add_option("--count", o->count, "Stop --watch after this many frames")
      ->check(CLI::PositiveNumber)
      ->needs(watch);
  least->excludes(watch);
  cmd->footer(
      "Columns: * marks this node, > the least-loaded one; AGE since the node's last record; CPU% busy "
      "over its last sampling interval; LOAD/CPU = 1-minute load per CPU (the least-loaded rule's first "
      "key); memory and rates in binary units (K = 1024 bytes). Stale rows (silent too long, dead or "
      "left) are never least loaded.\nThe same table is in RUN_DIR/monitor/NODE (key=value lines) and, "
      "with metrics_address, at http://HOST:PORT/metrics (docs/METRICS.md).");
  cmd->callback([o] {
    int rc = 0;
    if (o->least_loaded)
      rc = run_least_loaded(*o);
    else if (o->watch)
      rc = run_watch(*o);
    else
      rc = run_once(*o);
    if (rc) throw CLI::RuntimeError(rc);
  });
}

}  // namespace locabus::ctl
