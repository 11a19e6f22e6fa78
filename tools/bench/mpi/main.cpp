// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabus-bench-mpi: --count broadcasts of --size bytes from rank 0 to every
// other rank with MPI_Bcast (Open MPI's default collective selection), the
// peer of Locabus broadcast in locabus-bench. Every receiver checks that the
// messages arrive in order, none missing. Rank 0 prints one JSON object: the
// time from the root's start until the last receiver had every message, and
// the CPU time of every rank.
//
//   mpirun -np 4 locabus-bench-mpi --count 65536 --size 1024
//
// README.md gives the mpirun command that runs the ranks in a locabus-cluster's
// namespaces.
#include <mpi.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/measure.hpp"

namespace {

using locabus::bench::Cpu;
using locabus::bench::latency_us;
using locabus::bench::rounded;
using locabus::bench::unix_now;
using nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

struct Options {
  std::uint64_t count = 0;
  std::size_t size = 0;
  bool check = false;
  double timeout_s = 60;
};

/// CLOCK_REALTIME in seconds: comparable across the namespaces' processes.
json cpu_json(double user, double sys) { return Cpu{user, sys}.json(); }

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

/// This process's rank as the launcher tells it (before MPI_Init), or -1.
int launcher_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"})
    if (const char* v = std::getenv(var)) return std::atoi(v);
  return -1;
}

/// What each rank sends rank 0 at the end (MPI_Gather as bytes: every rank
/// runs this same binary).
struct RankResult {
  double started_at = 0, finished_at = 0;
  double user = 0, sys = 0;
  std::uint64_t violations = 0, corrupted = 0;
  char host[MPI_MAX_PROCESSOR_NAME] = {};
};

/// Bounds every blocking wait: when the main thread makes no progress (a
/// message, or the next phase) for --timeout seconds, says where it was stuck
/// and exits 1 (mpirun then ends the other ranks). A thread of its own that
/// never calls MPI (MPI_THREAD_FUNNELED).
class Watchdog {
 public:
  explicit Watchdog(double timeout_s)
      : timeout_(timeout_s), thread_([this](std::stop_token st) { watch(st); }) {}

  void set_rank(int rank) { rank_.store(rank); }
  /// A new phase: `what` must outlive the watchdog (a literal).
  void phase(const char* what) {
    phase_.store(what);
    progress_.fetch_add(1, std::memory_order_relaxed);
  }
  /// Message i (1-based) of the current phase is done.
  void message(std::uint64_t i) {
    message_.store(i, std::memory_order_relaxed);
    progress_.fetch_add(1, std::memory_order_relaxed);
  }
  void set_total(std::uint64_t n) { total_ = n; }

 private:
  void watch(std::stop_token st) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lk(m);
    std::uint64_t seen = progress_.load();
    auto last = std::chrono::steady_clock::now();
    while (!cv.wait_for(lk, st, std::chrono::seconds(1), [] { return false; })) {
      if (st.stop_requested()) return;
      const auto now = std::chrono::steady_clock::now();
      if (const auto p = progress_.load(std::memory_order_relaxed); p != seen) {
        seen = p;
        last = now;
        continue;
      }
      if (std::chrono::duration<double>(now - last).count() < timeout_) continue;
      expire();
    }
  }

  [[noreturn]] void expire() {
    const int rank = rank_.load();
    const std::string where = phase_.load() == std::string_view("MPI_Bcast")
                                  ? fmt::format("MPI_Bcast (after message {} of {})", message_.load(), total_)
                                  : std::string(phase_.load());
    const std::string error = fmt::format(
        "rank {}: no progress for {} s in {}: a rank died or cannot reach the others (check mpirun's output "
        "and --mca btl_tcp_if_include); --timeout raises the bound",
        rank, timeout_, where);
    std::fprintf(stderr, "locabus-bench-mpi: %s\n", error.c_str());
    if (rank == 0) std::printf("%s\n", dump(json{{"ok", false}, {"error", error}}).c_str());
    std::fflush(nullptr);
    ::_exit(kExitFailure);
  }

  const double timeout_;
  std::atomic<int> rank_{launcher_rank()};
  std::atomic<const char*> phase_{"MPI_Init"};
  std::atomic<std::uint64_t> progress_{0}, message_{0};
  std::uint64_t total_ = 0;  // set before the phase that reports it
  std::jthread thread_;      // last: starts once the rest is initialised
};

/// Byte j (from 8 on) of every message; bytes 0..7 carry its number.
std::uint8_t pattern(std::size_t j) { return static_cast<std::uint8_t>(j * 7 + 3); }

int run(const Options& o, Watchdog& dog) {
  MPI_Comm comm = MPI_COMM_WORLD;
  int rank = 0, ranks = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &ranks);
  dog.set_rank(rank);
  dog.set_total(o.count);

  RankResult mine;
  int name_len = 0;
  MPI_Get_processor_name(mine.host, &name_len);

  std::vector<std::uint8_t> buf(o.size), want(o.size);
  for (std::size_t j = 8; j < o.size; ++j) want[j] = pattern(j);
  if (rank == 0) buf = want;
  const int n = static_cast<int>(o.size);

  dog.phase("the MPI_Barrier before the broadcasts");
  MPI_Barrier(comm);
  dog.phase("MPI_Bcast");
  const Cpu cpu0 = Cpu::now();
  mine.started_at = unix_now();
  if (rank == 0) {
    for (std::uint64_t i = 0; i < o.count; ++i) {
      std::memcpy(buf.data(), &i, sizeof i);
      MPI_Bcast(buf.data(), n, MPI_BYTE, 0, comm);
      dog.message(i + 1);
    }
  } else {
    for (std::uint64_t i = 0; i < o.count; ++i) {
      MPI_Bcast(buf.data(), n, MPI_BYTE, 0, comm);
      std::uint64_t got = 0;
      std::memcpy(&got, buf.data(), sizeof got);
      if (got != i) ++mine.violations;
      if (o.check && std::memcmp(buf.data() + 8, want.data() + 8, o.size - 8) != 0) ++mine.corrupted;
      dog.message(i + 1);
    }
  }
  mine.finished_at = unix_now();
  const Cpu cpu1 = Cpu::now();
  mine.user = cpu1.user - cpu0.user;
  mine.sys = cpu1.sys - cpu0.sys;

  dog.phase("MPI_Gather of the results");
  std::vector<RankResult> all(rank == 0 ? static_cast<std::size_t>(ranks) : 0);
  MPI_Gather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, 0, comm);
  if (rank != 0) return kExitOk;

  const double started_at = all[0].started_at;
  double finished_at = ranks > 1 ? 0 : all[0].finished_at;
  double recv_cpu = 0, total_user = 0, total_sys = 0;
  std::uint64_t violations = 0, corrupted = 0;
  json per_rank = json::array();
  for (int r = 0; r < ranks; ++r) {
    const RankResult& x = all[static_cast<std::size_t>(r)];
    if (r > 0) {
      finished_at = std::max(finished_at, x.finished_at);
      recv_cpu += x.user + x.sys;
    }
    total_user += x.user;
    total_sys += x.sys;
    violations += x.violations;
    corrupted += x.corrupted;
    per_rank.push_back({{"rank", r},
                        {"host", std::string(x.host, strnlen(x.host, sizeof x.host))},
                        {"started_at", x.started_at},
                        {"finished_at", x.finished_at},
                        {"seconds", rounded(x.finished_at - x.started_at, 6)},
                        {"cpu_s", cpu_json(x.user, x.sys)},
                        {"violations", x.violations},
                        {"corrupted", x.corrupted}});
  }
  const double seconds = finished_at - started_at;
  const double rate = seconds > 0 ? static_cast<double>(o.count) / seconds : 0;

  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int version_len = 0;
  MPI_Get_library_version(version, &version_len);
  std::string library(version, static_cast<std::size_t>(std::max(version_len, 0)));
  library = library.substr(0, library.find_first_of(",\n"));

  const bool ok = violations == 0 && corrupted == 0;
  json j{{"ranks", ranks},
         {"count", o.count},
         {"size", o.size},
         {"checked", o.check},
         {"started_at", started_at},
         {"finished_at", finished_at},
         {"seconds", rounded(seconds, 6)},
         {"rate", rounded(rate, 1)},
         {"mbytes_per_s", rounded(rate * static_cast<double>(o.size) / 1e6, 3)},
         {"receivers_cpu_s", rounded(recv_cpu, 6)},
         {"root_cpu_s", rounded(all[0].user + all[0].sys, 6)},
         {"cpu_s", cpu_json(total_user, total_sys)},
         {"per_rank", per_rank},
         {"violations", violations},
         {"corrupted", corrupted},
         {"library", library},
         {"ok", ok}};
  if (!ok)
    j["error"] = fmt::format(
        "{} message(s) arrived out of order or not at all, {} with a corrupted payload (per_rank says where)",
        violations, corrupted);
  std::cout << dump(j) << std::endl;
  if (!ok) std::cerr << "locabus-bench-mpi: " << j["error"].get<std::string>() << "\n";
  return ok ? kExitOk : kExitFailure;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "locabus-bench-mpi: MPI_Bcast of --count messages of --size bytes from rank 0 to all other ranks\n"
      "(Open MPI, default collective selection), the peer of Locabus broadcast in locabus-bench. After an\n"
      "MPI_Barrier every rank notes its start (CLOCK_REALTIME) and CPU time; rank 0 broadcasts the "
      "messages,\n"
      "message i carrying i in its first 8 bytes (then a pattern), and every other rank checks it got them\n"
      "in order, none missing. Rank 0 prints one JSON object: seconds from the root's start until the last\n"
      "receiver had every message, messages/s, and the CPU time of the root and the receivers."};
  app.set_version_flag("--version", "locabus-bench-mpi 0.1.0");
  Options o;
  app.add_option("-c,--count", o.count, "Messages to broadcast")->required()->check(CLI::PositiveNumber);
  app.add_option("-s,--size", o.size, "Bytes per message (at least 8: the message number)")
      ->required()
      ->check(CLI::Range(std::size_t{8}, static_cast<std::size_t>(INT_MAX)));
  app.add_flag("--check", o.check,
               "Receivers also compare every message's pattern (bytes 8..) and count "
               "corrupted ones (costs receiver CPU: off for timing)");
  app.add_option("-t,--timeout", o.timeout_s,
                 "Seconds a rank may wait without progress (MPI_Init, a message, the barrier, the gather) "
                 "before it fails (exit 1; default 60)")
      ->check(CLI::PositiveNumber);
  app.footer(
      "Examples:\n"
      "  mpirun -np 4 locabus-bench-mpi --count 65536 --size 1024\n"
      "  across a locabus-cluster's namespaces: tools/bench/mpi/README.md\n"
      "JSON (rank 0, stdout): ranks, count, size, started_at, finished_at, seconds, rate, mbytes_per_s,\n"
      "receivers_cpu_s, root_cpu_s, cpu_s {user, sys} (all ranks), per_rank [{rank, host, started_at,\n"
      "finished_at, seconds, cpu_s, violations, corrupted}], violations, corrupted, library, ok.\n"
      "Exit status: 0 ok; 1 a failure (violations, a rank without progress); 2 bad usage.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Every rank parses; only the first one (or a lone process) says why.
    std::ostream quiet(nullptr);
    const int rc = launcher_rank() <= 0 ? app.exit(e) : app.exit(e, quiet, quiet);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  Watchdog dog(o.timeout_s);
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int rc = kExitFailure;
  if (provided < MPI_THREAD_FUNNELED) {
    std::cerr << "locabus-bench-mpi: this MPI does not provide MPI_THREAD_FUNNELED (needed for the timeout "
                 "thread): use Open MPI 4.1 (openmpi-bin)\n";
  } else {
    rc = run(o, dog);
  }
  dog.phase("MPI_Finalize");
  MPI_Finalize();
  return rc;
}
