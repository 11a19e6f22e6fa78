// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Agents and idle strategies (the Aeron model): an agent does a bounded
// amount of non-blocking work per do_work() call and says how much it did;
// what to do when it did nothing (block on an fd, yield, spin) is decided
// outside it, so "no CPU when idle" and "busy-poll when asked" are the same
// engine code.
#pragma once

#include <optional>
#include <string_view>

#include "engine/clock.hpp"

namespace locabus::engine {

class Agent {
 public:
  virtual ~Agent() = default;
  /// Does what is ready now without blocking; returns the amount of work
  /// done (0 = idle).
  virtual int do_work() = 0;
  /// The earliest instant at which do_work() has something to do even if
  /// no frame arrives (the next timer), if any.
  virtual std::optional<Nanos> next_deadline() const = 0;
  virtual std::string_view name() const noexcept = 0;
};

}  // namespace locabus::engine
