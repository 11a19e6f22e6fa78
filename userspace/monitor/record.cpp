// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "monitor/record.hpp"

#include <algorithm>
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>

#include "monitor/text.hpp"

namespace locabus::monitor {

namespace {

// Builds bytes in network byte order.
class Writer {
 public:
  explicit Writer(std::vector<std::byte>& out) : out_(out) {}
  void u8(std::uint8_t v) { out_.push_back(static_cast<std::byte>(v)); }
  void u16(std::uint16_t v) { be(v, 2); }
  void u32(std::uint32_t v) { be(v, 4); }
  void u64(std::uint64_t v) { be(v, 8); }
  /// u8 length + bytes; a string longer than kMaxName is refused, never cut.
  void str(std::string_view s, std::string_view what) {
    if (s.size() > kMaxName)
      throw std::length_error(
          fmt::format("LocaMonitor record: the {} \"{}...\" is {} bytes, over the {} a record carries; cut "
                      "names to kMaxName "
                      "when sampling (monitor::Sampler does)",
                      what, s.substr(0, 16), s.size(), kMaxName));
    u8(static_cast<std::uint8_t>(s.size()));
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out_.insert(out_.end(), p, p + s.size());
  }

 private:
  void be(std::uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) out_.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
  }
  std::vector<std::byte>& out_;
};

// Reads bytes in network byte order; every read is bounds-checked (ok()
// turns false for good at the first read past the end).
class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  bool ok() const noexcept { return ok_; }
  std::size_t left() const noexcept { return in_.size() - pos_; }
  std::uint8_t u8() { return static_cast<std::uint8_t>(be(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(be(2)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(be(4)); }
  std::uint64_t u64() { return be(8); }
  /// u8 length + bytes. A peer's bytes may be anything: what is not UTF-8
  /// becomes U+FFFD, so that every string in a table can go into JSON and
  /// Prometheus labels.
  std::string str() {
    const std::size_t n = u8();
    if (!ok_ || left() < n) return fail(), std::string{};
    std::string s = to_valid_utf8(std::string_view(reinterpret_cast<const char*>(in_.data() + pos_), n));
    pos_ += n;
    return s;
  }
  void skip(std::size_t n) {
    if (left() < n) return fail();
    pos_ += n;
  }

 private:
  void fail() noexcept {
    ok_ = false;
    pos_ = in_.size();
  }
  std::uint64_t be(std::size_t n) {
    if (!ok_ || left() < n) return fail(), 0;
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v = (v << 8) | std::to_integer<std::uint64_t>(in_[pos_ + i]);
    pos_ += n;
    return v;
  }
  std::span<const std::byte> in_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

void set_error(std::string* error, std::string text) {
  if (error) *error = std::move(text);
}

const char* section_name(RecordSection t) noexcept {
  switch (t) {
    case RecordSection::system: return "system";
    case RecordSection::cpu: return "cpu";
    case RecordSection::memory: return "memory";
    case RecordSection::locabus: return "locabus";
    case RecordSection::disk: return "disk";
    case RecordSection::filesystem: return "filesystem";
    case RecordSection::net: return "net";
  }
  return "unknown";
}

// One section: its 4-byte header and its body.
template <class Body>
std::vector<std::byte> section(RecordSection type, Body&& body) {
  std::vector<std::byte> b;
  b.reserve(128);
  Writer bw(b);
  body(bw);
  std::vector<std::byte> out;
  out.reserve(kSectionHeaderLen + b.size());
  Writer w(out);
  w.u8(static_cast<std::uint8_t>(type));
  w.u8(0);                                      // reserved
  w.u16(static_cast<std::uint16_t>(b.size()));  // bodies are at most a few hundred bytes
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

template <class T>
void write_fields(Writer& w, const T& v) {
  constexpr std::size_t n = std::size(T::kFields);
  static_assert(n <= 255, "a locabus section counts its fields in a u8");
  w.u8(static_cast<std::uint8_t>(n));
  for (const auto& f : T::kFields) w.u64(v.*f.member);
}

// Reads a u8 count and that many u64s: the ones this build knows set the
// fields in X-macro order, extra ones (a newer sender) are skipped.
template <class T>
void read_fields(Reader& r, T& v) {
  const std::size_t count = r.u8();
  std::size_t i = 0;
  for (const auto& f : T::kFields) {
    if (i++ >= count) break;
    v.*f.member = r.u64();
  }
  if (count > std::size(T::kFields)) r.skip((count - std::size(T::kFields)) * 8);
}

std::vector<std::vector<std::byte>> sections_of(const NodeStats& s) {
  std::vector<std::vector<std::byte>> out;
  out.reserve(4 + s.disks.size() + s.filesystems.size() + s.nets.size());
  out.push_back(section(RecordSection::system, [&](Writer& w) {
    w.str(s.hostname, "hostname");
    w.u32(s.cpus);
    w.u64(s.boot_time_s);
    w.u32(s.load1_milli);
    w.u32(s.load5_milli);
    w.u32(s.load15_milli);
    w.u32(s.procs_running);
    w.u32(s.procs_blocked);
    w.u32(s.processes);
    w.u32(s.threads);
  }));
  out.push_back(section(RecordSection::cpu, [&](Writer& w) {
    for (auto v : s.cpu_ms) w.u64(v);
    for (auto v : s.cpu_permille) w.u16(v);
  }));
  out.push_back(section(RecordSection::memory, [&](Writer& w) {
    for (auto v :
         {s.mem_total, s.mem_free, s.mem_available, s.mem_buffers, s.mem_cached, s.swap_total, s.swap_free})
      w.u64(v);
  }));
  out.push_back(section(RecordSection::locabus, [&](Writer& w) {
    write_fields(w, s.locabus);
    write_fields(w, s.locabus_gauges);
  }));
  for (const auto& d : s.disks)
    out.push_back(section(RecordSection::disk, [&](Writer& w) {
      w.str(d.device, "disk device");
      for (auto v : {d.reads_completed, d.writes_completed, d.read_bytes, d.written_bytes, d.io_time_ms})
        w.u64(v);
    }));
  for (const auto& f : s.filesystems)
    out.push_back(section(RecordSection::filesystem, [&](Writer& w) {
      w.str(f.mountpoint, "filesystem mountpoint");
      w.str(f.device, "filesystem device");
      w.str(f.fstype, "filesystem type");
      for (auto v : {f.size_bytes, f.free_bytes, f.avail_bytes, f.files, f.files_free}) w.u64(v);
    }));
  for (const auto& n : s.nets)
    out.push_back(section(RecordSection::net, [&](Writer& w) {
      w.str(n.device, "network interface name");
      for (auto v :
           {n.rx_bytes, n.tx_bytes, n.rx_packets, n.tx_packets, n.rx_errs, n.tx_errs, n.rx_drop, n.tx_drop})
        w.u64(v);
    }));
  return out;
}

void write_header(std::vector<std::byte>& out, const RecordHeader& h) {
  Writer w(out);
  w.u8(h.version);
  w.u8(h.flags);
  w.u8(h.part);
  w.u8(h.parts);
  w.u32(h.epoch);
  w.u32(h.seq);
  w.u64(h.sampled_at_ms);
  w.u16(h.sections_len);
  w.u16(0);  // reserved
}

}  // namespace

std::vector<std::vector<std::byte>> encode_record(const NodeStats& s, std::uint32_t epoch, std::uint32_t seq,
                                                  std::size_t max_part) {
  if (max_part < 256 || max_part > kRecordHeaderLen + 0xFFFF)
    throw std::invalid_argument(fmt::format(
        "LocaMonitor record: a part of at most {} bytes is out of range; give 256 .. {} (kMaxPartLen is {})",
        max_part, kRecordHeaderLen + 0xFFFF, kMaxPartLen));
  if (epoch == 0)
    throw std::invalid_argument(
        "LocaMonitor record: epoch 0 is refused by every receiver; draw a non-zero epoch");
  const auto sections = sections_of(s);
  const std::size_t room = max_part - kRecordHeaderLen;

  // Whole sections fill parts greedily, in order: system, cpu, memory and
  // locabus first (part 0 whenever they fit it), then disks, filesystems,
  // interfaces.
  std::vector<std::vector<std::size_t>> plan(1);  // section indexes per part
  std::size_t used = 0;
  for (std::size_t i = 0; i < sections.size(); ++i) {
    const std::size_t len = sections[i].size();
    if (len > room)
      throw std::length_error(fmt::format(
          "LocaMonitor record: a {} section of {} bytes does not fit a part of at most {} bytes ({} header); "
          "give a larger max_part",
          section_name(static_cast<RecordSection>(std::to_integer<std::uint8_t>(sections[i][0]))), len,
          max_part, kRecordHeaderLen));
    if (used + len > room) {
      plan.emplace_back();
      used = 0;
    }
    plan.back().push_back(i);
    used += len;
  }
  if (plan.size() > kMaxParts) {
    std::size_t total = 0;
    for (const auto& sec : sections) total += sec.size();
    throw std::length_error(fmt::format(
        "LocaMonitor record: {} bytes of sections ({} disks, {} filesystems, {} interfaces) need {} parts of "
        "at "
        "most {} bytes, over the {} a record may have; leave devices out at sampling",
        total, s.disks.size(), s.filesystems.size(), s.nets.size(), plan.size(), max_part, kMaxParts));
  }

  std::vector<std::vector<std::byte>> parts;
  parts.reserve(plan.size());
  for (std::size_t p = 0; p < plan.size(); ++p) {
    std::size_t len = 0;
    for (auto i : plan[p]) len += sections[i].size();
    RecordHeader h;
    h.part = static_cast<std::uint8_t>(p);
    h.parts = static_cast<std::uint8_t>(plan.size());
    h.epoch = epoch;
    h.seq = seq;
    h.sampled_at_ms = s.sampled_at_ms;
    h.sections_len = static_cast<std::uint16_t>(len);
    auto& out = parts.emplace_back();
    out.reserve(kRecordHeaderLen + len);
    write_header(out, h);
    for (auto i : plan[p]) out.insert(out.end(), sections[i].begin(), sections[i].end());
  }
  return parts;
}

std::optional<RecordPart> parse_part(std::span<const std::byte> payload, std::string* error) {
  if (payload.size() < kRecordHeaderLen) {
    set_error(error, fmt::format("LocaMonitor part of {} bytes is shorter than its {}-byte header",
                                 payload.size(), kRecordHeaderLen));
    return std::nullopt;
  }
  Reader r(payload);
  RecordPart p;
  p.header.version = r.u8();
  p.header.flags = r.u8();
  p.header.part = r.u8();
  p.header.parts = r.u8();
  p.header.epoch = r.u32();
  p.header.seq = r.u32();
  p.header.sampled_at_ms = r.u64();
  p.header.sections_len = r.u16();
  if (p.header.version != kRecordVersion) {
    set_error(error,
              fmt::format("LocaMonitor part of version {}, this build reads version {} only (upgrade it)",
                          p.header.version, kRecordVersion));
    return std::nullopt;
  }
  if (p.header.parts == 0) {
    set_error(error, "LocaMonitor part says its record has 0 parts");
    return std::nullopt;
  }
  if (p.header.part >= p.header.parts) {
    set_error(error, fmt::format("LocaMonitor part {} of a record of {} parts (part must be below parts)",
                                 p.header.part, p.header.parts));
    return std::nullopt;
  }
  if (p.header.sections_len > payload.size() - kRecordHeaderLen) {
    set_error(error, fmt::format("LocaMonitor part says {} bytes of sections but carries {}",
                                 p.header.sections_len, payload.size() - kRecordHeaderLen));
    return std::nullopt;
  }
  if (p.header.epoch == 0) {
    set_error(error, "LocaMonitor part of epoch 0 (a sender's epoch is never 0)");
    return std::nullopt;
  }
  p.sections = payload.subspan(kRecordHeaderLen, p.header.sections_len);
  return p;
}

bool decode_sections(std::span<const std::byte> sections, NodeStats& into, std::string* error) {
  Reader all(sections);
  while (all.left() > 0) {
    const std::size_t offset = sections.size() - all.left();
    if (all.left() < kSectionHeaderLen) {
      set_error(error,
                fmt::format("LocaMonitor section at offset {}: {} bytes left, shorter than a {}-byte header",
                            offset, all.left(), kSectionHeaderLen));
      return false;
    }
    const std::uint8_t type = all.u8();
    all.u8();  // reserved
    const std::size_t len = all.u16();
    if (all.left() < len) {
      set_error(error,
                fmt::format("LocaMonitor section of type {} at offset {}: body of {} bytes runs past the "
                            "end ({} bytes left)",
                            type, offset, len, all.left()));
      return false;
    }
    const auto body = sections.subspan(offset + kSectionHeaderLen, len);
    all.skip(len);
    Reader r(body);
    switch (static_cast<RecordSection>(type)) {
      case RecordSection::system: {
        NodeStats s;
        s.hostname = r.str();
        s.cpus = r.u32();
        s.boot_time_s = r.u64();
        s.load1_milli = r.u32();
        s.load5_milli = r.u32();
        s.load15_milli = r.u32();
        s.procs_running = r.u32();
        s.procs_blocked = r.u32();
        s.processes = r.u32();
        s.threads = r.u32();
        if (!r.ok()) break;
        into.hostname = std::move(s.hostname);
        into.cpus = s.cpus;
        into.boot_time_s = s.boot_time_s;
        into.load1_milli = s.load1_milli;
        into.load5_milli = s.load5_milli;
        into.load15_milli = s.load15_milli;
        into.procs_running = s.procs_running;
        into.procs_blocked = s.procs_blocked;
        into.processes = s.processes;
        into.threads = s.threads;
        break;
      }
      case RecordSection::cpu: {
        std::array<std::uint64_t, kCpuModes> ms{};
        std::array<std::uint16_t, kCpuModes> permille{};
        for (auto& v : ms) v = r.u64();
        for (auto& v : permille) v = r.u16();
        if (!r.ok()) break;
        into.cpu_ms = ms;
        into.cpu_permille = permille;
        break;
      }
      case RecordSection::memory: {
        std::array<std::uint64_t, 7> m{};
        for (auto& v : m) v = r.u64();
        if (!r.ok()) break;
        into.mem_total = m[0];
        into.mem_free = m[1];
        into.mem_available = m[2];
        into.mem_buffers = m[3];
        into.mem_cached = m[4];
        into.swap_total = m[5];
        into.swap_free = m[6];
        break;
      }
      case RecordSection::locabus: {
        LocabusCounters c;
        LocabusGauges g;
        read_fields(r, c);
        read_fields(r, g);
        if (!r.ok()) break;
        into.locabus = c;
        into.locabus_gauges = g;
        break;
      }
      case RecordSection::disk: {
        DiskStats d;
        d.device = r.str();
        for (auto* v :
             {&d.reads_completed, &d.writes_completed, &d.read_bytes, &d.written_bytes, &d.io_time_ms})
          *v = r.u64();
        if (r.ok()) into.disks.push_back(std::move(d));
        break;
      }
      case RecordSection::filesystem: {
        FilesystemStats f;
        f.mountpoint = r.str();
        f.device = r.str();
        f.fstype = r.str();
        for (auto* v : {&f.size_bytes, &f.free_bytes, &f.avail_bytes, &f.files, &f.files_free}) *v = r.u64();
        if (r.ok()) into.filesystems.push_back(std::move(f));
        break;
      }
      case RecordSection::net: {
        NetStats n;
        n.device = r.str();
        for (auto* v : {&n.rx_bytes, &n.tx_bytes, &n.rx_packets, &n.tx_packets, &n.rx_errs, &n.tx_errs,
                        &n.rx_drop, &n.tx_drop})
          *v = r.u64();
        if (r.ok()) into.nets.push_back(std::move(n));
        break;
      }
      default: continue;  // a section a newer sender added: skipped
    }
    if (!r.ok()) {
      set_error(error, fmt::format("LocaMonitor {} section at offset {}: its body of {} bytes is too short",
                                   section_name(static_cast<RecordSection>(type)), offset, len));
      return false;
    }
  }
  return true;
}

std::optional<NodeStats> decode_record(const std::vector<std::vector<std::byte>>& parts, std::string* error) {
  if (parts.empty()) {
    set_error(error, "LocaMonitor record without parts");
    return std::nullopt;
  }
  std::vector<std::optional<RecordPart>> by_index;
  RecordHeader first;
  for (const auto& payload : parts) {
    auto p = parse_part(payload, error);
    if (!p) return std::nullopt;
    if (by_index.empty()) {
      first = p->header;
      by_index.resize(first.parts);
    } else if (p->header.parts != first.parts || p->header.epoch != first.epoch ||
               p->header.seq != first.seq || p->header.sampled_at_ms != first.sampled_at_ms) {
      set_error(error,
                fmt::format("LocaMonitor record: part {} (epoch {}, seq {}, {} parts) is not of the record "
                            "of epoch {}, seq {}, {} parts",
                            p->header.part, p->header.epoch, p->header.seq, p->header.parts, first.epoch,
                            first.seq, first.parts));
      return std::nullopt;
    }
    if (by_index[p->header.part]) {
      set_error(error, fmt::format("LocaMonitor record: part {} given twice", p->header.part));
      return std::nullopt;
    }
    by_index[p->header.part] = p;
  }
  NodeStats s;
  s.sampled_at_ms = first.sampled_at_ms;
  for (std::size_t i = 0; i < by_index.size(); ++i) {
    if (!by_index[i]) {
      set_error(error, fmt::format("LocaMonitor record: part {} of {} is missing", i, by_index.size()));
      return std::nullopt;
    }
    if (!decode_sections(by_index[i]->sections, s, error)) return std::nullopt;
  }
  return s;
}

}  // namespace locabus::monitor
