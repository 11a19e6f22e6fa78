// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Typed fields of a control request (docs/API.md), for the client host and
// the services' open(): a field of the wrong type reads as absent (the
// client host refuses wrongly typed fields before any service sees them).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace locabus::daemon {

inline std::string str_field(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}
inline std::int64_t int_field(const nlohmann::json& j, const char* key, std::int64_t absent) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<std::int64_t>() : absent;
}
inline bool bool_field(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

}  // namespace locabus::daemon
