// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Internal to the engine: 16-bit serial-number arithmetic on sequence
// numbers (wire::seq_before is the comparison).
#pragma once

#include <cstddef>
#include <cstdint>

#include "locabus/wire.hpp"

namespace locabus::engine {

inline std::uint16_t seq_add(std::uint16_t s, std::size_t n) noexcept {
  return static_cast<std::uint16_t>(s + static_cast<std::uint16_t>(n));
}
inline std::uint16_t seq_diff(std::uint16_t later, std::uint16_t earlier) noexcept {
  return static_cast<std::uint16_t>(later - earlier);
}
/// a <= x <= b in serial arithmetic.
inline bool seq_between(std::uint16_t a, std::uint16_t x, std::uint16_t b) noexcept {
  return !wire::seq_before(x, a) && !wire::seq_before(b, x);
}

}  // namespace locabus::engine
