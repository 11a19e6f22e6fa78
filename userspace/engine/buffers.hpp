// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace locabus::engine {

/// A bounded FIFO of messages (a peer's send queue or receive queue). Slot
/// storage grows on demand up to `limit` and is then reused, so a quiet
/// peer costs almost nothing and a busy one allocates only while warming up.
class MessageRing {
 public:
  struct Slot {
    std::uint8_t proto = 0;
    std::vector<std::byte> data;
  };

  explicit MessageRing(std::size_t limit = 0) : limit_(limit) {}

  std::size_t size() const noexcept { return count_; }
  std::size_t limit() const noexcept { return limit_; }
  std::size_t free() const noexcept { return limit_ - count_; }
  bool empty() const noexcept { return count_ == 0; }
  bool full() const noexcept { return count_ >= limit_; }

  /// The i-th message from the front (0 = oldest).
  Slot& at(std::size_t i) noexcept {
    assert(i < count_);
    return slots_[(head_ + i) % slots_.size()];
  }
  const Slot& at(std::size_t i) const noexcept {
    assert(i < count_);
    return slots_[(head_ + i) % slots_.size()];
  }

  /// Appends a copy of `data`. The caller checks full() first.
  void push(std::uint8_t proto, std::span<const std::byte> data) {
    assert(!full());
    if (count_ == slots_.size()) grow();
    Slot& s = slots_[(head_ + count_) % slots_.size()];
    s.proto = proto;
    s.data.assign(data.begin(), data.end());
    ++count_;
  }

  /// Drops the n oldest messages (their storage is kept for reuse).
  void pop_front(std::size_t n = 1) noexcept {
    n = std::min(n, count_);
    if (slots_.empty()) return;
    head_ = (head_ + n) % slots_.size();
    count_ -= n;
  }

  void clear() noexcept {
    head_ = 0;
    count_ = 0;
  }

  /// Gives the storage back (a peer that went away).
  void release() noexcept {
    clear();
    std::vector<Slot>().swap(slots_);
  }

 private:
  void grow() {
    std::vector<Slot> bigger(std::min(limit_, std::max<std::size_t>(4, slots_.size() * 2)));
    for (std::size_t i = 0; i < count_; ++i) bigger[i] = std::move(slots_[(head_ + i) % slots_.size()]);
    slots_ = std::move(bigger);
    head_ = 0;
  }

  std::vector<Slot> slots_;
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  std::size_t limit_;
};

}  // namespace locabus::engine
