// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "engine/clock.hpp"

namespace locabus::engine {

/// A bounded FIFO of messages (a peer's send queue or receive queue). Slot
/// storage grows on demand up to `limit` and is then reused, so a quiet
/// peer costs almost nothing and a busy one allocates only while warming up.
class MessageRing {
 public:
  struct Slot {
    std::uint8_t proto = 0;
    std::uint8_t marks = 0;        // the owner's per-message state (a send queue's kSacked, ...)
    std::uint32_t sent_order = 0;  // a send queue's last transmission: Connection::tx_order then
    Nanos sent_at{0};              // a send queue's last transmission (0 = never sent)
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
    s.marks = 0;
    s.sent_order = 0;
    s.sent_at = Nanos{0};
    s.data.assign(data.begin(), data.end());
    ++count_;
  }

  /// Appends by swapping buffers with `data`: no copy; `data` gets the
  /// slot's old storage back for reuse. The caller checks full() first.
  void push_swap(std::uint8_t proto, std::vector<std::byte>& data) {
    assert(!full());
    if (count_ == slots_.size()) grow();
    Slot& s = slots_[(head_ + count_) % slots_.size()];
    s.proto = proto;
    s.marks = 0;
    s.sent_order = 0;
    s.sent_at = Nanos{0};
    s.data.swap(data);
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

/// Frames a selective-repeat receiver holds ahead of a gap, by sequence
/// number: slot seq & mask, so every held sequence must lie within
/// `capacity` (a power of two, at least the window) of the next expected
/// one. Storage is allocated on the first gap and reused.
class ReorderBuffer {
 public:
  explicit ReorderBuffer(std::size_t capacity = 0) : mask_(capacity ? capacity - 1 : 0), cap_(capacity) {
    assert((capacity & (capacity - 1)) == 0);
  }

  std::size_t size() const noexcept { return count_; }
  bool empty() const noexcept { return count_ == 0; }
  /// Payload bytes held.
  std::size_t bytes() const noexcept { return bytes_; }

  bool has(std::uint16_t seq) const noexcept {
    return count_ != 0 && present_[seq & mask_] && seqs_[seq & mask_] == seq;
  }
  /// Holds a copy of `data` for `seq`. The caller checks has() first.
  void put(std::uint16_t seq, std::uint8_t proto, std::span<const std::byte> data) {
    if (slots_.empty()) {
      slots_.resize(cap_);
      present_.assign(cap_, 0);
      seqs_.assign(cap_, 0);
    }
    const std::size_t i = seq & mask_;
    assert(!present_[i]);
    slots_[i].proto = proto;
    slots_[i].data.assign(data.begin(), data.end());
    present_[i] = 1;
    seqs_[i] = seq;
    ++count_;
    bytes_ += data.size();
  }
  /// The frame held for `seq` (has(seq) must hold).
  MessageRing::Slot& at(std::uint16_t seq) noexcept { return slots_[seq & mask_]; }
  /// Forgets `seq` (after its data was taken, e.g. with push_swap()).
  void erase(std::uint16_t seq, std::size_t payload_bytes) noexcept {
    const std::size_t i = seq & mask_;
    if (!present_[i]) return;
    present_[i] = 0;
    --count_;
    bytes_ -= std::min(bytes_, payload_bytes);
  }
  /// Drops everything and gives the storage back.
  void release() noexcept {
    std::vector<MessageRing::Slot>().swap(slots_);
    std::vector<std::uint8_t>().swap(present_);
    std::vector<std::uint16_t>().swap(seqs_);
    count_ = 0;
    bytes_ = 0;
  }

 private:
  std::size_t mask_;
  std::size_t cap_;
  std::vector<MessageRing::Slot> slots_;
  std::vector<std::uint8_t> present_;
  std::vector<std::uint16_t> seqs_;
  std::size_t count_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace locabus::engine
