// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The LocaMonitor record (docs/PROTOCOL.md, "LocaMonitor"): one node's
// sample as broadcast messages of protocol LOCABUS_P_MONITOR, one part per
// broadcast frame. Versioned; a sample that does not fit one frame is split
// into parts (whole sections each), never truncated.
//
// Every part: a 24-byte header, network byte order,
//
//   0       1       2       3       4               8              12
//   +-------+-------+-------+-------+---------------+---------------+
//   |version| flags | part  | parts |     epoch     |      seq      |
//   +-------+-------+-------+-------+---------------+---------------+
//   |         sampled_at_ms         |  sections_len |   reserved    |
//   +-------------------------------+---------------+---------------+
//   12                              20              22              24
//
// then sections_len bytes of sections, each a 4-byte header (u8 type, u8
// reserved 0, u16 length of the body) and its body. Section types are
// RecordSection; a receiver skips types it does not know (a newer minor
// addition), and refuses a part whose version is not kRecordVersion.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "monitor/stats.hpp"

namespace locabus::monitor {

inline constexpr std::uint8_t kRecordVersion = 1;
inline constexpr std::size_t kRecordHeaderLen = 24;
inline constexpr std::size_t kSectionHeaderLen = 4;
/// One part fills at most one broadcast message (LOCABUS_MAX_PAYLOAD).
inline constexpr std::size_t kMaxPartLen = 1484;
/// A record is at most this many parts (more devices than fit are an error
/// at encoding, reported, not cut; 255 parts is ~370 KB, far beyond any node).
inline constexpr std::size_t kMaxParts = 255;

enum class RecordSection : std::uint8_t {
  system = 1,      // hostname, cpus, boot time, load, processes (in part 0)
  cpu = 2,         // cpu_ms[8] (u64) and cpu_permille[8] (u16) (in part 0)
  memory = 3,      // mem_* and swap_* (u64) (in part 0)
  locabus = 4,     // counters then gauges, each a u8 count then u64s, in X-macro order (in part 0)
  disk = 5,        // one device
  filesystem = 6,  // one filesystem
  net = 7,         // one interface
};

struct RecordHeader {
  std::uint8_t version = kRecordVersion;
  std::uint8_t flags = 0;
  std::uint8_t part = 0;    // 0 .. parts-1
  std::uint8_t parts = 1;   // >= 1
  std::uint32_t epoch = 0;  // the sender's daemon life (random, never 0)
  std::uint32_t seq = 0;    // the sample's number in that life (from 1)
  std::uint64_t sampled_at_ms = 0;
  std::uint16_t sections_len = 0;
};

/// The parts of one sample, each at most max_part bytes (>= 256). Throws
/// std::length_error when it would need more than kMaxParts parts.
std::vector<std::vector<std::byte>> encode_record(const NodeStats& s, std::uint32_t epoch, std::uint32_t seq,
                                                  std::size_t max_part = kMaxPartLen);

/// A parsed part: its header and its sections (a view into the payload).
struct RecordPart {
  RecordHeader header;
  std::span<const std::byte> sections;
};

/// Parses one part. nullopt (and `error` says why, when given) if it is
/// shorter than its header, of another version, part >= parts, parts 0,
/// sections_len beyond the payload, or epoch 0.
std::optional<RecordPart> parse_part(std::span<const std::byte> payload, std::string* error = nullptr);

/// Adds a part's sections to `into` (a part-0 section replaces the fields it
/// carries; device sections are appended). false (and `error`) if a section
/// runs past the end or a known section's body is too short; unknown
/// section types are skipped.
bool decode_sections(std::span<const std::byte> sections, NodeStats& into, std::string* error = nullptr);

/// A whole record from its parts in any order (for tests and tools).
std::optional<NodeStats> decode_record(const std::vector<std::vector<std::byte>>& parts,
                                       std::string* error = nullptr);

}  // namespace locabus::monitor
