// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// A hashed timing wheel for the engine's per-connection timers
// (retransmission, delayed ACK). Insert is O(1); expiry touches only the
// slots whose ticks have passed. Cancelling and re-arming are lazy: the
// owner keeps the authoritative deadline and ignores entries that no longer
// match it (see Connection's timer fields), which keeps the hot path (every
// ACK re-arms the retransmission timer) free of searches.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "common/function_ref.hpp"
#include "engine/clock.hpp"

namespace locabus::engine {

class TimerWheel {
 public:
  struct Entry {
    Nanos deadline;
    std::uint32_t owner;  // whatever the caller uses to find the timer's owner
    std::uint8_t kind;
  };

  /// `tick` is the resolution (timers fire at most one tick late plus the
  /// poll interval); `slots` is rounded up to a power of two.
  explicit TimerWheel(Nanos tick = std::chrono::milliseconds(1), std::size_t slots = 4096);

  void schedule(Nanos deadline, std::uint32_t owner, std::uint8_t kind);

  /// Calls `fire` for every entry whose deadline is <= now, in no particular
  /// order, and removes it. `fire` may schedule new entries. Returns the
  /// number fired.
  std::size_t expire(Nanos now, FunctionRef<void(const Entry&)> fire);

  /// The earliest deadline of any entry (possibly a stale one), or nullopt.
  std::optional<Nanos> next_deadline() const;

  std::size_t size() const noexcept { return size_; }

 private:
  std::int64_t tick_of(Nanos t) const noexcept { return t.count() / tick_.count(); }

  Nanos tick_;
  std::size_t mask_;
  std::vector<std::vector<Entry>> slots_;
  std::int64_t next_tick_ = 0;  // first tick whose slot has not been fully processed
  std::size_t size_ = 0;
  mutable std::optional<Nanos> cached_next_;
  mutable bool cache_valid_ = true;
  std::vector<Entry> due_;  // scratch, reused
};

}  // namespace locabus::engine
