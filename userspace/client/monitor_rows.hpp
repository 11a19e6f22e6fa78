// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus internals, also used by locabusctl monitor: the "monitor"
// control reply's rows (monitor::to_json, userspace/monitor/table.hpp) read
// into locabus_node_load, defensively: a missing or mistyped field is a
// ClientError(EPROTO) naming it.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <locabus/locabus.h>
#include <locabus/client.hpp>
#include <nlohmann/json.hpp>

namespace locabus::monitor_rows {

using nlohmann::json;

inline constexpr const char* kVersionHint =
    "liblocabus and locabusd are of different versions? use the library that came with the daemon";

// The whole "monitor" object for `req`, asked for in pages ("from" 0, then
// each reply's "next": docs/API.md, "LocaMonitor") through `ask`, which sends
// one request and returns its reply's "monitor" object. The rows of every
// page come in one "nodes" array, the other fields from the last page. Each
// page holds whole rows as they were when it was answered; a node that
// joins meanwhile below the page reached shows up next time. A daemon that
// does not page answers the first request whole (no "next").
template <class Ask>
json fetch_pages(Ask&& ask, json req) {
  std::uint32_t from = 0;
  json nodes = json::array(), last;
  for (;;) {
    req["from"] = from;
    json m = ask(req);
    if (auto it = m.find("nodes"); it != m.end()) {
      if (!it->is_array())
        throw ClientError(
            fmt::format("locabusd's \"monitor\" reply: nodes is not an array ({})", kVersionHint), EPROTO);
      for (auto& row : *it) nodes.push_back(std::move(row));
    }
    auto next = m.find("next");
    if (next == m.end()) {
      last = std::move(m);
      break;
    }
    // A page always holds a row, so "next" moves on: at most 65,536 pages.
    if (!next->is_number_unsigned() || next->get<std::uint64_t>() <= from ||
        next->get<std::uint64_t>() > 65535)
      throw ClientError(fmt::format("locabusd's \"monitor\" reply: next is {} after a page from {} ({})",
                                    next->dump(), from, kVersionHint),
                        EPROTO);
    from = next->get<std::uint32_t>();
  }
  last["nodes"] = std::move(nodes);
  return last;
}

// Reads one row's fields, naming what is missing or of the wrong type.
class RowReader {
 public:
  RowReader(const json& row, std::size_t index) : row_(row), index_(index) {}

  const json& at(std::string_view path) const {
    const json* j = &row_;
    std::size_t start = 0;
    for (;;) {
      const auto dot = path.find('.', start);
      const std::string key(path.substr(start, dot == std::string_view::npos ? path.npos : dot - start));
      if (!j->is_object()) bad(path, "is missing");
      auto it = j->find(key);
      if (it == j->end()) bad(path, "is missing");
      j = &*it;
      if (dot == std::string_view::npos) return *j;
      start = dot + 1;
    }
  }

  double real(std::string_view path) const { return real_of(at(path), path); }

  std::uint64_t count(std::string_view path,
                      std::uint64_t max = std::numeric_limits<std::uint64_t>::max()) const {
    const json& j = at(path);
    std::uint64_t v = 0;
    if (j.is_number_unsigned()) {
      v = j.get<std::uint64_t>();
    } else if (j.is_number_integer()) {
      const auto s = j.get<std::int64_t>();
      if (s < 0) bad(path, fmt::format("is negative ({})", s));
      v = static_cast<std::uint64_t>(s);
    } else if (j.is_number_float()) {
      const double d = j.get<double>();
      if (!(d >= 0) || d >= 18446744073709551616.0) bad(path, fmt::format("is out of range ({})", d));
      v = static_cast<std::uint64_t>(d);
    } else {
      bad(path, "is not a number");
    }
    if (v > max) bad(path, fmt::format("is out of range ({} > {})", v, max));
    return v;
  }

  bool flag(std::string_view path) const {
    const json& j = at(path);
    if (!j.is_boolean()) bad(path, "is not true or false");
    return j.get<bool>();
  }

  std::string text(std::string_view path) const {
    const json& j = at(path);
    if (!j.is_string()) bad(path, "is not a string");
    return j.get<std::string>();
  }

  double element(std::string_view path, std::size_t i, std::size_t size) const {
    const json& j = at(path);
    if (!j.is_array() || j.size() != size) bad(path, fmt::format("is not an array of {} numbers", size));
    return real_of(j[i], fmt::format("{}[{}]", path, i));
  }

  [[noreturn]] void bad(std::string_view path, std::string_view what) const {
    std::string where = fmt::format("row {}", index_);
    if (auto it = row_.find("node"); it != row_.end() && it->is_number_integer())
      where += fmt::format(" (node {})", it->get<std::int64_t>());
    throw ClientError(fmt::format("locabusd's monitor table is malformed: {}: field \"{}\" {} ({})", where,
                                  path, what, kVersionHint),
                      EPROTO);
  }

 private:
  double real_of(const json& j, std::string_view path) const {
    if (!j.is_number()) bad(path, "is not a number");
    const double d = j.get<double>();
    if (!std::isfinite(d)) bad(path, "is not finite");
    return d;
  }

  const json& row_;
  std::size_t index_;
};

inline NodeLoad node_load(const json& row, std::size_t index) {
  const RowReader r(row, index);
  if (!row.is_object()) r.bad("node", "is missing (the row is not an object)");
  NodeLoad n{};
  n.node = static_cast<std::uint16_t>(r.count("node", 0xFFFE));
  const std::string state = r.text("state");
  if (state == "alive")
    n.state = LOCABUS_NODE_ALIVE;
  else if (state == "stale")
    n.state = LOCABUS_NODE_STALE;
  else
    r.bad("state", fmt::format("is \"{}\", neither \"alive\" nor \"stale\"", state));
  n.self = r.flag("self") ? 1 : 0;
  n.cpus = static_cast<std::uint32_t>(r.count("cpus", std::numeric_limits<std::uint32_t>::max()));
  n.age_ms = r.count("age_ms");
  n.cpu_busy_percent = r.real("cpu_busy_percent");
  n.load1 = r.element("load", 0, 3);
  n.load5 = r.element("load", 1, 3);
  n.load15 = r.element("load", 2, 3);
  n.mem_total = r.count("memory.total");
  n.mem_available = r.count("memory.available");
  n.swap_total = r.count("swap.total");
  n.swap_free = r.count("swap.free");
  n.net_rx_bytes_per_s = r.real("rates.net_rx_bytes_per_s");
  n.net_tx_bytes_per_s = r.real("rates.net_tx_bytes_per_s");
  n.processes = static_cast<std::uint32_t>(r.count("processes", std::numeric_limits<std::uint32_t>::max()));
  n.procs_running =
      static_cast<std::uint32_t>(r.count("procs_running", std::numeric_limits<std::uint32_t>::max()));
  const std::string host = r.text("hostname");
  std::size_t len = std::min(host.size(), sizeof n.hostname - 1);
  // Cut between UTF-8 characters (the daemon sends valid UTF-8), not inside one.
  if (len < host.size())
    while (len > 0 && (static_cast<unsigned char>(host[len]) & 0xC0) == 0x80) --len;
  std::memcpy(n.hostname, host.data(), len);
  n.hostname[len] = '\0';
  return n;
}

/// Every row of a "monitor" object, by node id as the daemon sent them.
inline std::vector<NodeLoad> nodes(const json& monitor) {
  auto it = monitor.find("nodes");
  if (it == monitor.end() || !it->is_array())
    throw ClientError(fmt::format("locabusd's monitor answer has no \"nodes\" array ({})", kVersionHint),
                      EPROTO);
  std::vector<NodeLoad> rows;
  rows.reserve(it->size());
  for (std::size_t i = 0; i < it->size(); ++i) rows.push_back(node_load((*it)[i], i));
  return rows;
}

/// A "monitor" object's least_loaded: nullopt for null (no node alive).
inline std::optional<std::uint16_t> least_loaded(const json& monitor) {
  auto it = monitor.find("least_loaded");
  if (it == monitor.end())
    throw ClientError(
        fmt::format("locabusd's monitor answer has no \"least_loaded\" field ({})", kVersionHint), EPROTO);
  if (it->is_null()) return std::nullopt;
  if (!it->is_number_integer() || it->get<std::int64_t>() < 0 || it->get<std::int64_t>() > 0xFFFE)
    throw ClientError(fmt::format("locabusd's monitor answer has a bad \"least_loaded\": {}", it->dump()),
                      EPROTO);
  return static_cast<std::uint16_t>(it->get<std::int64_t>());
}

}  // namespace locabus::monitor_rows
