// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus, LocaMonitor: the local daemon's cluster load table through the
// "monitor" control request (docs/API.md, "LocaMonitor"), in C++
// (locabus/client.hpp) and C (the end of locabus/locabus.h). One connection
// per call: the request needs no endpoint.
#include <cerrno>
#include <filesystem>
#include <string>

#include <fmt/format.h>
#include <locabus/locabus.h>
#include <locabus/client.hpp>
#include <nlohmann/json.hpp>

#include "api/control.hpp"
#include "client/c_api_common.hpp"
#include "client/monitor_rows.hpp"
#include "common/error.hpp"

namespace locabus {
namespace {

using nlohmann::json;

[[noreturn]] void rethrow_client(const Error& e) {
  throw ClientError(e.what() + (e.hint().empty() ? "" : " (" + e.hint() + ")"), e.code());
}

// The daemon's "monitor" object for `req`; the whole table in pages over
// one connection when `paged`.
json ask_monitor(const std::string& socket_path, json req, bool paged) {
  try {
    const std::filesystem::path path =
        socket_path.empty() ? api::default_socket_path() : std::filesystem::path(socket_path);
    UniqueFd fd = api::connect_control(path);
    const auto ask = [&](const json& r) {
      json reply = api::request(fd.get(), r);
      auto it = reply.find("monitor");
      if (it == reply.end() || !it->is_object())
        throw ClientError(fmt::format("locabusd's answer to 'monitor' has no \"monitor\" object ({})",
                                      monitor_rows::kVersionHint),
                          EPROTO);
      return std::move(*it);
    };
    return paged ? monitor_rows::fetch_pages(ask, std::move(req)) : ask(req);
  } catch (const Error& e) {
    rethrow_client(e);
  }
}

}  // namespace

std::vector<NodeLoad> monitor_nodes(const std::string& socket_path) {
  // The rows' summary only (no per-device lists): what a NodeLoad holds.
  return monitor_rows::nodes(ask_monitor(socket_path, {{"op", "monitor"}, {"devices", false}}, true));
}

std::optional<std::uint16_t> least_loaded(const std::string& socket_path) {
  return monitor_rows::least_loaded(
      ask_monitor(socket_path, {{"op", "monitor"}, {"least_loaded_only", true}}, false));
}

std::string monitor_json(const std::string& socket_path) {
  return ask_monitor(socket_path, {{"op", "monitor"}}, true).dump();
}

}  // namespace locabus

using locabus::capi::fail;
using locabus::capi::guarded;

extern "C" {

int locabus_monitor_nodes(const char* socket_path, struct locabus_node_load* rows, size_t max,
                          size_t* count) {
  if (!rows && max) return fail(EINVAL, "locabus_monitor_nodes: rows is NULL but max is not 0");
  return guarded([&] {
    const auto all = locabus::monitor_nodes(socket_path ? socket_path : "");
    if (count) *count = all.size();
    for (std::size_t i = 0; i < all.size() && i < max; ++i) rows[i] = all[i];
    return 0;
  });
}

int locabus_monitor_least_loaded(const char* socket_path, uint16_t* node) {
  if (!node) return fail(EINVAL, "locabus_monitor_least_loaded: node is NULL");
  return guarded([&] {
    const auto n = locabus::least_loaded(socket_path ? socket_path : "");
    if (!n)
      return fail(ENOENT,
                  "no node is alive in LocaMonitor's table (the daemon may have just started: ask again "
                  "after its first sample; `locabusctl monitor` shows the table)");
    *node = *n;
    return 0;
  });
}

}  // extern "C"
