// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "monitor/stats.hpp"

#include <algorithm>

#include "monitor/text.hpp"

namespace locabus::monitor {

namespace {

template <class T>
bool fields_equal(const T& a, const T& b) noexcept {
  for (const auto& f : T::kFields)
    if (a.*f.member != b.*f.member) return false;
  return true;
}

/// The length of the well-formed character at s[i], 0 if none starts there.
std::size_t utf8_char_len(std::string_view s, std::size_t i) noexcept {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range (RFC 3629, section 4)
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlong forms
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;  // no overlong forms
    if (c == 0xF4) hi = 0x8F;  // at most U+10FFFF
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  const auto second = static_cast<unsigned char>(s[i + 1]);
  if (second < lo || second > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  return n;
}

}  // namespace

bool valid_utf8(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_char_len(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string to_valid_utf8(std::string_view s) {
  if (valid_utf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_char_len(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
      ++i;
    } else {
      out.append(s, i, n);
      i += n;
    }
  }
  return out;
}

std::string_view utf8_prefix(std::string_view s, std::size_t max) noexcept {
  if (s.size() <= max) return s;
  std::size_t end = max;
  // Back off continuation bytes to the start of the character that max cuts.
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return s.substr(0, end);
}

bool NodeStats::operator==(const NodeStats& o) const {
  return sampled_at_ms == o.sampled_at_ms && hostname == o.hostname && cpus == o.cpus && cpu_ms == o.cpu_ms &&
         cpu_permille == o.cpu_permille && load1_milli == o.load1_milli && load5_milli == o.load5_milli &&
         load15_milli == o.load15_milli && boot_time_s == o.boot_time_s && mem_total == o.mem_total &&
         mem_free == o.mem_free && mem_available == o.mem_available && mem_buffers == o.mem_buffers &&
         mem_cached == o.mem_cached && swap_total == o.swap_total && swap_free == o.swap_free &&
         procs_running == o.procs_running && procs_blocked == o.procs_blocked && processes == o.processes &&
         threads == o.threads && disks == o.disks && filesystems == o.filesystems && nets == o.nets &&
         fields_equal(locabus, o.locabus) && fields_equal(locabus_gauges, o.locabus_gauges);
}

double NodeStats::cpu_busy_percent() const noexcept {
  unsigned total = 0;
  for (auto p : cpu_permille) total += p;
  if (total == 0) return 0.0;  // no interval yet
  const int idle = cpu_permille[static_cast<std::size_t>(CpuMode::idle)] +
                   cpu_permille[static_cast<std::size_t>(CpuMode::iowait)];
  return std::clamp(100.0 - idle / 10.0, 0.0, 100.0);
}

double NodeStats::load_per_cpu() const noexcept { return load1() / std::max<std::uint32_t>(cpus, 1); }

}  // namespace locabus::monitor
