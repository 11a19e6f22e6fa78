// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabus-call: what main.cpp (calls) and serve.cpp (--serve) share.
#pragma once

#include <chrono>
#include <csignal>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include <locabus/kccm.hpp>

namespace locabus::call {

/// --node all: call_all() (the node id no single node has).
inline constexpr std::uint16_t kAllNodes = LOCABUS_KCCM_ANY_NODE;

// Exit statuses (--help lists them).
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;        // no call made: no daemon, bad argument, --serve lost its daemon
inline constexpr int kExitMixed = 3;        // failures of more than one cause (--node all, --count)
inline constexpr int kExitMismatch = 4;     // --count of echo: a result differed from the argument
inline constexpr int kExitStatusBase = 10;  // + the failure's status (enum locabus_kccm_status)

/// 0 for ok, else 10 + the status number.
inline int exit_code(kccm::Status s) {
  return s == kccm::Status::ok ? kExitOk : kExitStatusBase + static_cast<int>(s);
}

struct Options {
  std::string socket_path;
  std::uint16_t space = 0;
  std::string node_text;  // empty: this node; "all"; or an id
  double timeout_s = 0;   // 0: the library's default deadline (10 s)
  bool json = false;
  bool quiet = false;
  std::string handler;
  std::string arg;
  std::size_t size = 0;  // --size: a generated argument of this many bytes
  // --count / --duration
  std::uint64_t count = 0;
  double duration_s = 0;
  unsigned inflight = 1;
  bool keep_going = false;
  double pause_s = 0.05;  // --keep-going: a slot whose call failed waits this long
  double interval_s = 0;
  // --serve
  std::string serve;  // the handlers: NAME[=BEHAVIOUR],...
  bool short_handlers = false;
  unsigned workers = 4;

  bool serving() const { return !serve.empty(); }
  bool counting() const { return count > 0 || duration_s > 0; }
};

/// What went wrong before or around the calls; main() prints it and exits 1.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Set by SIGINT/SIGTERM (install_stop_handlers()).
extern volatile std::sig_atomic_t g_stop;
void install_stop_handlers();

/// What to do about a failed call, for the line under the error.
std::string_view hint(kccm::Status s);

/// `locabus-call --serve`: registers the handlers and serves until
/// SIGINT/SIGTERM (0) or until the daemon goes away (1).
int serve(const Options& o);

}  // namespace locabus::call
