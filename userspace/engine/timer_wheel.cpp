// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "engine/timer_wheel.hpp"

#include <algorithm>
#include <bit>

namespace locabus::engine {

TimerWheel::TimerWheel(Nanos tick, std::size_t slots)
    : tick_(tick.count() > 0 ? tick : Nanos{1}),
      mask_(std::bit_ceil(std::max<std::size_t>(slots, 2)) - 1),
      slots_(mask_ + 1) {}

void TimerWheel::schedule(Nanos deadline, std::uint32_t owner, std::uint8_t kind) {
  std::int64_t t = tick_of(deadline);
  // An entry for a tick already processed goes into the next slot to be
  // processed, so it fires on the next expire() call.
  if (t < next_tick_) t = next_tick_;
  slots_[static_cast<std::size_t>(t) & mask_].push_back(Entry{deadline, owner, kind});
  ++size_;
  if (cache_valid_ && (!cached_next_ || deadline < *cached_next_)) cached_next_ = deadline;
}

std::size_t TimerWheel::expire(Nanos now, FunctionRef<void(const Entry&)> fire) {
  if (size_ == 0) {
    // Nothing to scan: jump straight to the current tick.
    next_tick_ = std::max(next_tick_, tick_of(now));
    return 0;
  }
  const std::int64_t now_tick = tick_of(now);
  // Scan each slot once at most, even after a long idle period.
  const std::int64_t last = std::min(now_tick, next_tick_ + static_cast<std::int64_t>(mask_));
  due_.clear();
  for (std::int64_t t = next_tick_; t <= last; ++t) {
    auto& slot = slots_[static_cast<std::size_t>(t) & mask_];
    if (slot.empty()) continue;
    auto keep = std::partition(slot.begin(), slot.end(), [&](const Entry& e) { return e.deadline > now; });
    due_.insert(due_.end(), keep, slot.end());
    slot.erase(keep, slot.end());
  }
  // The current tick's slot may still hold entries due later in this tick,
  // so it is scanned again next time.
  next_tick_ = std::max(next_tick_, now_tick);
  size_ -= due_.size();
  if (!due_.empty()) cache_valid_ = false;
  // Fire after the scan: handlers may schedule into the slots we scanned.
  std::vector<Entry> due;
  due.swap(due_);
  for (const Entry& e : due) fire(e);
  const std::size_t fired = due.size();
  due.clear();
  if (due_.capacity() < due.capacity()) due_.swap(due);  // keep the larger scratch buffer
  return fired;
}

std::optional<Nanos> TimerWheel::next_deadline() const {
  if (size_ == 0) return std::nullopt;
  if (cache_valid_) return cached_next_;
  // Walk the slots in time order from the first unprocessed tick; the first
  // slot holding an entry of the current round holds the earliest deadline.
  std::optional<Nanos> best;
  for (std::int64_t t = next_tick_; t <= next_tick_ + static_cast<std::int64_t>(mask_) && !best; ++t) {
    for (const Entry& e : slots_[static_cast<std::size_t>(t) & mask_]) {
      if (tick_of(e.deadline) <= t && (!best || e.deadline < *best)) best = e.deadline;
    }
  }
  if (!best) {
    // Every entry is more than one revolution away.
    for (const auto& slot : slots_) {
      for (const Entry& e : slot) {
        if (!best || e.deadline < *best) best = e.deadline;
      }
    }
  }
  cached_next_ = best;
  cache_valid_ = true;
  return best;
}

}  // namespace locabus::engine
