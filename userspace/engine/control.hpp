// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Encoding and decoding of the control payloads declared in wire.h
// (struct locabus_hello, locabus_syn, locabus_reply, locabus_member_entry).
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "locabus/wire.hpp"

namespace locabus::engine::control {

constexpr std::uint64_t hton64(std::uint64_t v) noexcept {
  if constexpr (std::endian::native == std::endian::little) {
    return (static_cast<std::uint64_t>(wire::byteswap16(static_cast<std::uint16_t>(v))) << 48) |
           (static_cast<std::uint64_t>(wire::byteswap16(static_cast<std::uint16_t>(v >> 16))) << 32) |
           (static_cast<std::uint64_t>(wire::byteswap16(static_cast<std::uint16_t>(v >> 32))) << 16) |
           static_cast<std::uint64_t>(wire::byteswap16(static_cast<std::uint16_t>(v >> 48)));
  }
  return v;
}
constexpr std::uint64_t ntoh64(std::uint64_t v) noexcept { return hton64(v); }

struct Hello {
  std::uint8_t flags = 0;
  std::uint16_t known = 0;
  std::uint64_t epoch = 0;
};

inline locabus_hello encode(const Hello& h) noexcept {
  locabus_hello raw{};
  raw.version = LOCABUS_CTRL_VERSION;
  raw.flags = h.flags;
  raw.known = wire::hton16(h.known);
  raw.epoch = hton64(h.epoch);
  return raw;
}

/// The hello at the start of a control payload; nullopt if the payload is
/// too short or of another version.
inline std::optional<Hello> decode_hello(std::span<const std::byte> payload) noexcept {
  if (payload.size() < sizeof(locabus_hello)) return std::nullopt;
  locabus_hello raw;
  std::memcpy(&raw, payload.data(), sizeof raw);
  if (raw.version != LOCABUS_CTRL_VERSION) return std::nullopt;
  return Hello{raw.flags, wire::ntoh16(raw.known), ntoh64(raw.epoch)};
}

struct Syn {
  Hello hello;
  std::uint64_t peer_epoch = 0;
};

inline locabus_syn encode(const Syn& s) noexcept {
  locabus_syn raw{};
  raw.hello = encode(s.hello);
  raw.peer_epoch = hton64(s.peer_epoch);
  return raw;
}

inline std::optional<Syn> decode_syn(std::span<const std::byte> payload) noexcept {
  auto hello = decode_hello(payload);
  if (!hello || payload.size() < sizeof(locabus_syn)) return std::nullopt;
  locabus_syn raw;
  std::memcpy(&raw, payload.data(), sizeof raw);
  return Syn{*hello, ntoh64(raw.peer_epoch)};
}

struct MemberEntry {
  std::uint16_t node = 0;
  wire::MacAddress mac{};
  std::uint64_t epoch = 0;
};

inline constexpr std::size_t kReplyMaxEntries = LOCABUS_REPLY_MAX_ENTRIES;

/// One DISCOVER_REPLY page: header + entries, ready to send.
inline std::vector<std::byte> encode_reply(const Hello& hello, std::uint16_t offset,
                                           std::span<const MemberEntry> entries) {
  locabus_reply head{};
  head.hello = encode(hello);
  head.offset = wire::hton16(offset);
  head.count = wire::hton16(static_cast<std::uint16_t>(entries.size()));
  std::vector<std::byte> out(sizeof head + entries.size() * sizeof(locabus_member_entry));
  std::memcpy(out.data(), &head, sizeof head);
  std::size_t at = sizeof head;
  for (const MemberEntry& m : entries) {
    locabus_member_entry raw{};
    raw.node = wire::hton16(m.node);
    std::memcpy(raw.mac, m.mac.bytes.data(), sizeof raw.mac);
    raw.epoch = hton64(m.epoch);
    std::memcpy(out.data() + at, &raw, sizeof raw);
    at += sizeof raw;
  }
  return out;
}

struct Reply {
  Hello hello;
  std::uint16_t offset = 0;
  std::vector<MemberEntry> entries;
};

inline std::optional<Reply> decode_reply(std::span<const std::byte> payload) {
  auto hello = decode_hello(payload);
  if (!hello || payload.size() < sizeof(locabus_reply)) return std::nullopt;
  locabus_reply head;
  std::memcpy(&head, payload.data(), sizeof head);
  const std::size_t count = wire::ntoh16(head.count);
  if (payload.size() < sizeof head + count * sizeof(locabus_member_entry)) return std::nullopt;
  Reply r{*hello, wire::ntoh16(head.offset), {}};
  r.entries.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    locabus_member_entry raw;
    std::memcpy(&raw, payload.data() + sizeof head + i * sizeof raw, sizeof raw);
    MemberEntry m;
    m.node = wire::ntoh16(raw.node);
    std::memcpy(m.mac.bytes.data(), raw.mac, sizeof raw.mac);
    m.epoch = ntoh64(raw.epoch);
    r.entries.push_back(m);
  }
  return r;
}

// ---- broadcast streams (wire.h, "Reliable broadcast") -------------------

struct Poll {
  std::uint64_t epoch = 0;
  std::uint8_t nackers = 0;
  std::array<std::uint16_t, LOCABUS_POLL_MAX_ACKERS> ackers{};
  bool asks(std::uint16_t node) const noexcept {
    for (std::uint8_t i = 0; i < nackers; ++i) {
      if (ackers[i] == node) return true;
    }
    return false;
  }
};

inline locabus_poll encode(const Poll& p) noexcept {
  locabus_poll raw{};
  raw.version = LOCABUS_CTRL_VERSION;
  raw.nackers = p.nackers;
  raw.epoch = hton64(p.epoch);
  for (std::uint8_t i = 0; i < p.nackers && i < LOCABUS_POLL_MAX_ACKERS; ++i)
    raw.ackers[i] = wire::hton16(p.ackers[i]);
  return raw;
}

/// nullopt if too short, of another version, or naming more ackers than fit.
inline std::optional<Poll> decode_poll(std::span<const std::byte> payload) noexcept {
  if (payload.size() < sizeof(locabus_poll)) return std::nullopt;
  locabus_poll raw;
  std::memcpy(&raw, payload.data(), sizeof raw);
  if (raw.version != LOCABUS_CTRL_VERSION || raw.nackers > LOCABUS_POLL_MAX_ACKERS) return std::nullopt;
  Poll p;
  p.epoch = ntoh64(raw.epoch);
  p.nackers = raw.nackers;
  for (std::uint8_t i = 0; i < p.nackers; ++i) p.ackers[i] = wire::ntoh16(raw.ackers[i]);
  return p;
}

/// The data of a broadcast stream's ACK or NAK.
struct BcastCtl {
  std::uint16_t stream = 0;
  std::uint16_t first = 0;
  std::uint16_t count = 0;
  std::uint64_t epoch = 0;
};

inline locabus_bcast_ctl encode(const BcastCtl& c) noexcept {
  locabus_bcast_ctl raw{};
  raw.version = LOCABUS_CTRL_VERSION;
  raw.stream = wire::hton16(c.stream);
  raw.first = wire::hton16(c.first);
  raw.count = wire::hton16(c.count);
  raw.epoch = hton64(c.epoch);
  return raw;
}

inline std::optional<BcastCtl> decode_bcast_ctl(std::span<const std::byte> payload) noexcept {
  if (payload.size() < sizeof(locabus_bcast_ctl)) return std::nullopt;
  locabus_bcast_ctl raw;
  std::memcpy(&raw, payload.data(), sizeof raw);
  if (raw.version != LOCABUS_CTRL_VERSION) return std::nullopt;
  return BcastCtl{wire::ntoh16(raw.stream), wire::ntoh16(raw.first), wire::ntoh16(raw.count),
                  ntoh64(raw.epoch)};
}

// ---- selective repeat (wire.h, "Reliable unicast: selective repeat") ------

struct SeqRange {
  std::uint16_t first = 0;
  std::uint16_t count = 0;
  friend bool operator==(const SeqRange&, const SeqRange&) = default;
};

/// A unicast NAK's data: ready-to-send bytes. At most LOCABUS_NAK_MAX_RANGES
/// ranges are encoded (the caller truncates and lowers `high` to match).
inline std::size_t encode_nak(std::uint16_t high, std::span<const SeqRange> ranges,
                              std::span<std::byte> out) noexcept {
  const std::size_t n = std::min<std::size_t>(ranges.size(), LOCABUS_NAK_MAX_RANGES);
  const std::size_t bytes = sizeof(locabus_nak_ranges) + n * sizeof(locabus_seq_range);
  if (out.size() < bytes) return 0;
  locabus_nak_ranges head{};
  head.version = LOCABUS_CTRL_VERSION;
  head.count = wire::hton16(static_cast<std::uint16_t>(n));
  head.high = wire::hton16(high);
  std::memcpy(out.data(), &head, sizeof head);
  for (std::size_t i = 0; i < n; ++i) {
    const locabus_seq_range r{wire::hton16(ranges[i].first), wire::hton16(ranges[i].count)};
    std::memcpy(out.data() + sizeof head + i * sizeof r, &r, sizeof r);
  }
  return bytes;
}

struct NakRanges {
  std::uint16_t high = 0;
  std::vector<SeqRange> ranges;
};

/// nullopt if too short, of another version, with no ranges or more than
/// LOCABUS_NAK_MAX_RANGES, or with an empty range. Ranges are not checked
/// against each other: the receiver of a NAK checks them against its state.
inline std::optional<NakRanges> decode_nak(std::span<const std::byte> payload) {
  if (payload.size() < sizeof(locabus_nak_ranges)) return std::nullopt;
  locabus_nak_ranges head;
  std::memcpy(&head, payload.data(), sizeof head);
  const std::size_t n = wire::ntoh16(head.count);
  if (head.version != LOCABUS_CTRL_VERSION || n == 0 || n > LOCABUS_NAK_MAX_RANGES ||
      payload.size() < sizeof head + n * sizeof(locabus_seq_range)) {
    return std::nullopt;
  }
  NakRanges out{wire::ntoh16(head.high), {}};
  out.ranges.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    locabus_seq_range r;
    std::memcpy(&r, payload.data() + sizeof head + i * sizeof r, sizeof r);
    const SeqRange sr{wire::ntoh16(r.first), wire::ntoh16(r.count)};
    if (sr.count == 0) return std::nullopt;
    out.ranges.push_back(sr);
  }
  return out;
}

template <typename T>
std::span<const std::byte> bytes_of(const T& v) noexcept {
  return std::as_bytes(std::span<const T, 1>(&v, 1));
}

}  // namespace locabus::engine::control
