// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The engine never reads a clock directly: it is given one. Production uses
// SystemClock; the simulation drives a ManualClock so that every run with
// the same seed sees the same times.
#pragma once

#include <chrono>
#include <cstdint>

namespace locabus::engine {

/// Durations and instants are nanoseconds; an instant counts from the
/// clock's own origin (monotonic, not wall time).
using Nanos = std::chrono::nanoseconds;
using namespace std::chrono_literals;

class Clock {
 public:
  virtual ~Clock() = default;
  /// Monotonic time since this clock's origin. Never goes backwards.
  virtual Nanos now() const noexcept = 0;
  /// Wall-clock time since the Unix epoch. Used only for boot epochs, which
  /// must differ between two incarnations of a node.
  virtual Nanos wall() const noexcept = 0;
};

/// CLOCK_MONOTONIC and CLOCK_REALTIME.
class SystemClock final : public Clock {
 public:
  Nanos now() const noexcept override { return std::chrono::steady_clock::now().time_since_epoch(); }
  Nanos wall() const noexcept override { return std::chrono::system_clock::now().time_since_epoch(); }
};

/// A clock that moves only when told to (tests, simulation).
class ManualClock final : public Clock {
 public:
  explicit ManualClock(Nanos start = Nanos{0}, Nanos wall_origin = Nanos{1'700'000'000'000'000'000})
      : now_(start), wall_origin_(wall_origin) {}
  Nanos now() const noexcept override { return now_; }
  Nanos wall() const noexcept override { return wall_origin_ + now_; }
  /// Moves time forward to `t` (ignored if `t` is in the past).
  void advance_to(Nanos t) noexcept {
    if (t > now_) now_ = t;
  }
  void advance_by(Nanos d) noexcept { now_ += d; }

 private:
  Nanos now_;
  Nanos wall_origin_;
};

}  // namespace locabus::engine
