// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabus-call --serve: handlers in a process, for trying calls out and for
// the end-to-end tests ("a handler in a client process on another node").
//
//   upper  returns its argument upper-cased
//   sleep  sleeps for its argument in milliseconds (decimal), then returns "slept N ms"
//   fail   throws: the caller gets handler_failed with "fail: ARGUMENT"
//   echo   returns its argument (as the daemon's built-in echo, but in this process)
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "call.hpp"

namespace locabus::call {
namespace {

using nlohmann::json;

struct Served {
  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> failed{0};
};

std::string_view as_text(std::span<const std::byte> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

std::vector<std::byte> upper(std::span<const std::byte> arg) {
  std::vector<std::byte> out(arg.begin(), arg.end());
  for (auto& c : out)
    c = static_cast<std::byte>(std::toupper(static_cast<unsigned char>(std::to_integer<unsigned char>(c))));
  return out;
}

std::vector<std::byte> sleep_for(std::span<const std::byte> arg) {
  const auto text = as_text(arg);
  unsigned ms = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || ms > 3'600'000)
    throw std::invalid_argument(
        fmt::format("sleep: the argument must be milliseconds (0..3600000), not '{}'", text));
  // In slices, so that SIGTERM does not wait for a long sleep to end.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!g_stop && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
        until - std::chrono::steady_clock::now(), std::chrono::milliseconds(50)));
  return kccm::bytes(fmt::format("slept {} ms", ms));
}

/// The handler for a behaviour name, counting its calls in `served`.
kccm::Handler make_handler(const std::string& behaviour, std::shared_ptr<Served> served) {
  std::function<std::vector<std::byte>(std::span<const std::byte>)> f;
  if (behaviour == "upper") {
    f = upper;
  } else if (behaviour == "sleep") {
    f = sleep_for;
  } else if (behaviour == "fail") {
    f = [](std::span<const std::byte> arg) -> std::vector<std::byte> {
      throw std::runtime_error(fmt::format("fail: {}", as_text(arg)));
    };
  } else if (behaviour == "echo") {
    f = [](std::span<const std::byte> arg) { return std::vector<std::byte>(arg.begin(), arg.end()); };
  } else {
    throw Failure(
        fmt::format("--serve: no behaviour '{}' (there are upper, sleep, fail and echo)", behaviour));
  }
  return
      [f = std::move(f), served = std::move(served)](const kccm::CallInfo&, std::span<const std::byte> arg) {
        served->calls.fetch_add(1, std::memory_order_relaxed);
        try {
          return f(arg);
        } catch (...) {
          served->failed.fetch_add(1, std::memory_order_relaxed);
          throw;
        }
      };
}

/// "upper,slow=sleep" -> {{"upper","upper"},{"slow","sleep"}}.
std::vector<std::pair<std::string, std::string>> parse_serve_list(const std::string& list) {
  std::vector<std::pair<std::string, std::string>> out;
  std::size_t pos = 0;
  while (pos <= list.size()) {
    const auto comma = std::min(list.find(',', pos), list.size());
    const std::string item = list.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    const auto eq = item.find('=');
    std::string name = item.substr(0, eq);
    std::string behaviour = eq == std::string::npos ? name : item.substr(eq + 1);
    if (name.empty() || name.size() > kccm::kMaxName)
      throw Failure(fmt::format("--serve: '{}' is not a handler name (1..{} bytes)", name, kccm::kMaxName));
    out.emplace_back(std::move(name), std::move(behaviour));
  }
  if (out.empty()) throw Failure("--serve: no handler named");
  return out;
}

}  // namespace

int serve(const Options& o) {
  const auto handlers = parse_serve_list(o.serve);
  auto served = std::make_shared<Served>();
  std::vector<kccm::Handler> fns;  // built (and checked) before connecting
  for (const auto& [name, behaviour] : handlers) fns.push_back(make_handler(behaviour, served));

  kccm::SpaceOptions so;
  so.socket_path = o.socket_path;
  so.workers = o.workers;
  auto space = kccm::Space::open(o.space, so);
  install_stop_handlers();
  std::vector<kccm::Registration> regs;
  const auto kind = o.short_handlers ? kccm::HandlerKind::short_inline : kccm::HandlerKind::long_running;
  std::vector<std::string> names;
  for (std::size_t i = 0; i < handlers.size(); ++i) {
    regs.push_back(space.register_handler(handlers[i].first, std::move(fns[i]), kind));
    names.push_back(handlers[i].second == handlers[i].first
                        ? handlers[i].first
                        : fmt::format("{} ({})", handlers[i].first, handlers[i].second));
  }
  // The "ready" line: the handlers can be called from now on.
  if (o.json) {
    json j{
        {"serving", json::array()}, {"space", space.space()}, {"node", space.node_id()}, {"pid", ::getpid()}};
    for (const auto& [name, behaviour] : handlers)
      j["serving"].push_back({{"name", name}, {"behaviour", behaviour}});
    std::cout << j.dump() << std::endl;
  } else {
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    std::cout << fmt::format("serving {} in space {} on node {} ({} handlers; SIGINT or SIGTERM stops)", list,
                             space.space(), space.node_id(), o.short_handlers ? "short" : "long")
              << std::endl;
  }

  while (!g_stop && space.connected()) {
    while (auto e = space.next_event())
      if (!o.quiet && !o.json) std::cerr << "locabus-call: " << e->to_string() << "\n";
    ::poll(nullptr, 0, 100);
  }
  const bool lost = !g_stop && !space.connected();
  regs.clear();  // unregisters; waits for the calls that still run
  const auto calls = served->calls.load(), failed = served->failed.load();
  if (lost) {
    std::cerr << fmt::format(
        "locabus-call: the daemon went away (it stopped or restarted) after {} call(s) served; start "
        "locabus-call --serve again once it is back\n",
        calls);
    return kExitError;
  }
  if (!o.quiet)
    std::cerr << fmt::format("locabus-call: served {} call(s), {} of them failed\n", calls, failed);
  return kExitOk;
}

}  // namespace locabus::call
