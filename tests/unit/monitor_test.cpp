// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// LocaMonitor's record and table (monitor/record.hpp, table.hpp): the
// record's round trip and split into parts, what a receiver refuses and
// skips, and the table's reassembly, epochs, rates, expiry, limits and
// rules (least loaded, significant change), driven on a made-up clock.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/monitor_rows.hpp"
#include "monitor/record.hpp"
#include "monitor/stats.hpp"
#include "monitor/table.hpp"
#include "monitor/text.hpp"

namespace locabus::monitor {
namespace {

using namespace std::chrono_literals;
using Bytes = std::vector<std::byte>;
using Parts = std::vector<Bytes>;

// Every field distinct and non-zero, so a field lost or swapped shows.
NodeStats full_node(std::size_t disks = 4, std::size_t filesystems = 6, std::size_t nets = 4) {
  NodeStats s;
  s.sampled_at_ms = 1'765'000'000'123ULL;
  s.hostname = "node-a.cluster.example";
  s.cpus = 16;
  for (std::size_t i = 0; i < kCpuModes; ++i) {
    s.cpu_ms[i] = 1'000'000'000'000ULL + i * 7919;
    s.cpu_permille[i] = static_cast<std::uint16_t>(10 + i);
  }
  s.load1_milli = 1500;
  s.load5_milli = 1250;
  s.load15_milli = 990;
  s.boot_time_s = 1'764'000'000;
  s.mem_total = 64ULL << 30;
  s.mem_free = 10ULL << 30;
  s.mem_available = 40ULL << 30;
  s.mem_buffers = 1ULL << 30;
  s.mem_cached = 20ULL << 30;
  s.swap_total = 8ULL << 30;
  s.swap_free = 7ULL << 30;
  s.procs_running = 3;
  s.procs_blocked = 1;
  s.processes = 412;
  s.threads = 1234;
  for (std::size_t i = 0; i < disks; ++i)
    s.disks.push_back(DiskStats{"nvme" + std::to_string(i) + "n1", 100 + i, 200 + i, (1ULL << 40) + i,
                                (1ULL << 41) + i, 5000 + i});
  for (std::size_t i = 0; i < filesystems; ++i)
    s.filesystems.push_back(
        FilesystemStats{"/srv/data" + std::to_string(i), "/dev/mapper/vg0-data" + std::to_string(i), "ext4",
                        (1ULL << 42) + i, (1ULL << 40) + i, (1ULL << 39) + i, 1'000'000 + i, 900'000 + i});
  for (std::size_t i = 0; i < nets; ++i)
    s.nets.push_back(NetStats{"eth" + std::to_string(i), (1ULL << 50) + i, (1ULL << 49) + i, 1000 + i,
                              2000 + i, 3 + i, 4 + i, 5 + i, 6 + i});
  std::uint64_t v = 1;
  for (const auto& f : LocabusCounters::kFields) s.locabus.*f.member = (v++) * 1'000'003;
  for (const auto& f : LocabusGauges::kFields) s.locabus_gauges.*f.member = (v++) * 17;
  return s;
}

std::uint64_t be(const Bytes& b, std::size_t at, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = (v << 8) | std::to_integer<std::uint64_t>(b.at(at + i));
  return v;
}
void put_be(Bytes& b, std::size_t at, std::uint64_t v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) b.at(at + i) = static_cast<std::byte>((v >> (8 * (n - 1 - i))) & 0xFF);
}
void append_be(Bytes& b, std::uint64_t v, std::size_t n) {
  b.resize(b.size() + n);
  put_be(b, b.size() - n, v, n);
}

// The section types of a part, in order.
std::vector<int> section_types(const Bytes& part) {
  std::vector<int> out;
  std::size_t at = kRecordHeaderLen;
  const std::size_t end = kRecordHeaderLen + be(part, 20, 2);
  while (at < end) {
    out.push_back(static_cast<int>(be(part, at, 1)));
    at += kSectionHeaderLen + be(part, at + 2, 2);
  }
  EXPECT_EQ(at, end);
  return out;
}

// A part with `sections` appended after the header of `like` (sections_len set).
Bytes with_sections(const Bytes& like, const Bytes& extra) {
  Bytes b = like;
  b.insert(b.end(), extra.begin(), extra.end());
  put_be(b, 20, be(like, 20, 2) + extra.size(), 2);
  return b;
}

Bytes section(std::uint8_t type, const Bytes& body) {
  Bytes b;
  append_be(b, type, 1);
  append_be(b, 0, 1);
  append_be(b, body.size(), 2);
  b.insert(b.end(), body.begin(), body.end());
  return b;
}

TEST(MonitorStats, EqualityComparesEveryField) {
  const NodeStats a = full_node();
  NodeStats b = a;
  EXPECT_EQ(a, b);
  for (const auto& f : LocabusCounters::kFields) {
    NodeStats c = a;
    c.locabus.*f.member += 1;
    EXPECT_NE(a, c) << f.field.name;
  }
  for (const auto& f : LocabusGauges::kFields) {
    NodeStats c = a;
    c.locabus_gauges.*f.member += 1;
    EXPECT_NE(a, c) << f.field.name;
  }
  b.threads += 1;
  EXPECT_NE(a, b);
  b = a;
  b.filesystems[5].fstype = "xfs";
  EXPECT_NE(a, b);
  b = a;
  b.cpu_permille[7] += 1;
  EXPECT_NE(a, b);
}

TEST(MonitorStats, CpuBusyAndLoadPerCpu) {
  NodeStats s;
  EXPECT_EQ(s.cpu_busy_percent(), 0.0);  // no interval yet
  s.cpu_permille = {300, 0, 100, 500, 50, 20, 30, 0};
  EXPECT_DOUBLE_EQ(s.cpu_busy_percent(), 45.0);
  s.cpu_permille = {0, 0, 0, 1000, 0, 0, 0, 0};
  EXPECT_DOUBLE_EQ(s.cpu_busy_percent(), 0.0);
  s.load1_milli = 3000;
  EXPECT_DOUBLE_EQ(s.load_per_cpu(), 3.0);  // cpus 0 counts as 1
  s.cpus = 4;
  EXPECT_DOUBLE_EQ(s.load_per_cpu(), 0.75);
}

TEST(MonitorRecord, RoundTripEveryField) {
  const NodeStats s = full_node();
  const Parts parts = encode_record(s, 0xA1B2C3D4, 77);
  ASSERT_EQ(parts.size(), 1u);
  const Bytes& p = parts[0];
  ASSERT_LE(p.size(), kMaxPartLen);
  // The header, byte for byte, network order.
  EXPECT_EQ(be(p, 0, 1), kRecordVersion);
  EXPECT_EQ(be(p, 1, 1), 0u);
  EXPECT_EQ(be(p, 2, 1), 0u);
  EXPECT_EQ(be(p, 3, 1), 1u);
  EXPECT_EQ(be(p, 4, 4), 0xA1B2C3D4u);
  EXPECT_EQ(be(p, 8, 4), 77u);
  EXPECT_EQ(be(p, 12, 8), s.sampled_at_ms);
  EXPECT_EQ(be(p, 20, 2), p.size() - kRecordHeaderLen);
  EXPECT_EQ(be(p, 22, 2), 0u);
  EXPECT_EQ(section_types(p), (std::vector<int>{1, 2, 3, 4, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7}));
  // The system section's body: hostname as u8 length + bytes, then cpus.
  EXPECT_EQ(be(p, kRecordHeaderLen + 4, 1), s.hostname.size());
  EXPECT_EQ(be(p, kRecordHeaderLen + 5 + s.hostname.size(), 4), s.cpus);

  std::string error;
  const auto back = decode_record(parts, &error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(*back, s);

  const auto parsed = parse_part(p, &error);
  ASSERT_TRUE(parsed) << error;
  EXPECT_EQ(parsed->header.epoch, 0xA1B2C3D4u);
  EXPECT_EQ(parsed->header.seq, 77u);
  EXPECT_EQ(parsed->header.parts, 1u);
  EXPECT_EQ(parsed->header.sampled_at_ms, s.sampled_at_ms);
}

TEST(MonitorRecord, EmptyAndLongestNames) {
  NodeStats s = full_node(1, 1, 1);
  s.hostname.clear();
  s.filesystems[0].mountpoint = std::string(kMaxName, 'm');
  s.filesystems[0].device = std::string(kMaxName, 'd');
  s.nets[0].device = std::string(kMaxName, 'n');
  const auto back = decode_record(encode_record(s, 1, 1));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, s);
  s.nets[0].device = std::string(kMaxName + 1, 'n');  // never cut silently
  try {
    encode_record(s, 1, 1);
    FAIL() << "a name over kMaxName was encoded";
  } catch (const std::length_error& e) {
    EXPECT_NE(std::string(e.what()).find("65 bytes"), std::string::npos) << e.what();
  }
}

TEST(MonitorRecord, BigNodeSplitsIntoPartsDecodedInAnyOrder) {
  NodeStats s = full_node(40, 30, 300);
  for (std::size_t i = 0; i < s.nets.size(); ++i)
    s.nets[i].device = "veth" + std::to_string(i) + std::string(40, 'x');
  const Parts parts = encode_record(s, 9, 3);
  ASSERT_GT(parts.size(), 10u);
  ASSERT_LE(parts.size(), 40u);
  std::size_t sections = 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    EXPECT_LE(parts[i].size(), kMaxPartLen) << "part " << i;
    EXPECT_GT(parts[i].size(), kRecordHeaderLen);
    EXPECT_EQ(be(parts[i], 2, 1), i);
    EXPECT_EQ(be(parts[i], 3, 1), parts.size());
    // Every part carries the same header but part and sections_len.
    EXPECT_EQ(be(parts[i], 4, 16), be(parts[0], 4, 16));
    const auto types = section_types(parts[i]);
    sections += types.size();
    if (i == 0) {
      ASSERT_GE(types.size(), 4u);
      EXPECT_EQ(std::vector<int>(types.begin(), types.begin() + 4), (std::vector<int>{1, 2, 3, 4}));
    } else {
      EXPECT_TRUE(std::all_of(types.begin(), types.end(), [](int t) { return t >= 5; }));
    }
    // Greedy: the next part's first section would not have fitted this one.
    if (i + 1 < parts.size()) {
      const std::size_t next_first = kSectionHeaderLen + be(parts[i + 1], kRecordHeaderLen + 2, 2);
      EXPECT_GT(parts[i].size() + next_first, kMaxPartLen);
    }
  }
  EXPECT_EQ(sections, 4u + 40 + 30 + 300);

  Parts shuffled = parts;
  std::reverse(shuffled.begin(), shuffled.end());
  std::string error;
  auto back = decode_record(shuffled, &error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(*back, s);
  std::mt19937 rng(15);
  for (int round = 0; round < 5; ++round) {
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    back = decode_record(shuffled, &error);
    ASSERT_TRUE(back) << error;
    EXPECT_EQ(*back, s);
  }
  // A part missing, or one given twice, is said.
  Parts missing(parts.begin() + 1, parts.end());
  EXPECT_FALSE(decode_record(missing, &error));
  EXPECT_NE(error.find("part 0 of"), std::string::npos) << error;
  missing.push_back(parts[1]);
  EXPECT_FALSE(decode_record(missing, &error));
  EXPECT_NE(error.find("given twice"), std::string::npos) << error;
}

TEST(MonitorRecord, SmallPartsStillCarryTheRecord) {
  const NodeStats s = full_node();
  const Parts parts = encode_record(s, 5, 1, 256);
  ASSERT_GE(parts.size(), 3u);
  ASSERT_LE(parts.size(), 12u);
  for (const auto& p : parts) EXPECT_LE(p.size(), 256u);
  const auto back = decode_record(parts);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, s);
  EXPECT_THROW(encode_record(s, 5, 1, 255), std::invalid_argument);
  EXPECT_THROW(encode_record(s, 0, 1), std::invalid_argument);
}

TEST(MonitorRecord, MoreThanMaxPartsIsAnError) {
  NodeStats s = full_node(0, 0, 0);
  for (int i = 0; i < 600; ++i) s.nets.push_back(NetStats{"eth" + std::to_string(i) + std::string(50, 'p')});
  EXPECT_NO_THROW(encode_record(s, 1, 1));  // about 90 bytes each: 600 fit in about 40 full parts
  try {
    encode_record(s, 1, 1, 256);  // 2 per part: 300+ parts
    FAIL() << "a record of more than kMaxParts parts was encoded";
  } catch (const std::length_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("600 interfaces"), std::string::npos) << what;
    EXPECT_NE(what.find("over the 255"), std::string::npos) << what;
  }
}

TEST(MonitorRecord, ParsePartRefusals) {
  const Bytes good = encode_record(full_node(), 3, 4)[0];
  std::string error;
  ASSERT_TRUE(parse_part(good, &error)) << error;
  struct Case {
    const char* name;
    Bytes payload;
    const char* says;
  };
  std::vector<Case> cases;
  cases.push_back({"short", Bytes(good.begin(), good.begin() + 23), "shorter than its 24-byte header"});
  Bytes b = good;
  put_be(b, 0, 2, 1);
  cases.push_back({"version", b, "version 2"});
  b = good;
  put_be(b, 3, 0, 1);
  cases.push_back({"parts 0", b, "0 parts"});
  b = good;
  put_be(b, 2, 1, 1);
  cases.push_back({"part >= parts", b, "part 1 of a record of 1 parts"});
  b = good;
  put_be(b, 20, good.size() - kRecordHeaderLen + 1, 2);
  cases.push_back({"sections_len", b, "bytes of sections but carries"});
  b = good;
  put_be(b, 4, 0, 4);
  cases.push_back({"epoch 0", b, "epoch 0"});
  for (const auto& c : cases) {
    error.clear();
    EXPECT_FALSE(parse_part(c.payload, &error)) << c.name;
    EXPECT_NE(error.find(c.says), std::string::npos) << c.name << ": " << error;
    EXPECT_FALSE(parse_part(c.payload)) << c.name;  // without an error string too
  }
  // Only the header: a valid part without sections.
  Bytes header_only(good.begin(), good.begin() + kRecordHeaderLen);
  put_be(header_only, 20, 0, 2);
  EXPECT_TRUE(parse_part(header_only));
}

TEST(MonitorRecord, UnknownSectionsSkippedBrokenOnesRefused) {
  const NodeStats s = full_node();
  const Bytes good = encode_record(s, 3, 4)[0];
  const Bytes extended = with_sections(good, section(99, Bytes(13, std::byte{0x5A})));
  std::string error;
  auto back = decode_record({extended}, &error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(*back, s);

  // A section running past the end.
  Bytes broken = with_sections(good, section(7, Bytes(10)));
  put_be(broken, broken.size() - 10 - 2, 11, 2);  // its length says 11
  EXPECT_FALSE(decode_record({broken}, &error));
  EXPECT_NE(error.find("runs past the end"), std::string::npos) << error;
  // A known section whose body is too short (a disk of 10 bytes).
  Bytes short_disk = with_sections(good, section(5, Bytes(10)));
  EXPECT_FALSE(decode_record({short_disk}, &error));
  EXPECT_NE(error.find("disk section"), std::string::npos) << error;
  EXPECT_NE(error.find("too short"), std::string::npos) << error;
  // Three stray bytes: not even a section header.
  Bytes stray = good;
  stray.insert(stray.end(), 3, std::byte{1});
  put_be(stray, 20, be(good, 20, 2) + 3, 2);
  EXPECT_FALSE(decode_record({stray}, &error));
  EXPECT_NE(error.find("shorter than a 4-byte header"), std::string::npos) << error;
  // A longer body of a known section (a newer minor version): the known fields are read.
  NodeStats into;
  Bytes net_body;
  append_be(net_body, 4, 1);
  for (char c : std::string("eth9")) net_body.push_back(static_cast<std::byte>(c));
  for (int i = 1; i <= 8; ++i) append_be(net_body, static_cast<std::uint64_t>(i), 8);
  append_be(net_body, 0xDEAD, 8);  // a field this build does not know
  ASSERT_TRUE(decode_sections(section(7, net_body), into, &error)) << error;
  ASSERT_EQ(into.nets.size(), 1u);
  EXPECT_EQ(into.nets[0], (NetStats{"eth9", 1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(MonitorRecord, LocabusCountsAreForwardCompatible) {
  constexpr std::size_t kc = std::size(LocabusCounters::kFields), kg = std::size(LocabusGauges::kFields);
  // A newer sender: two more counters and one more gauge than this build knows.
  Bytes body;
  append_be(body, kc + 2, 1);
  for (std::size_t i = 0; i < kc + 2; ++i) append_be(body, 100 + i, 8);
  append_be(body, kg + 1, 1);
  for (std::size_t i = 0; i < kg + 1; ++i) append_be(body, 200 + i, 8);
  NodeStats s;
  std::string error;
  ASSERT_TRUE(decode_sections(section(4, body), s, &error)) << error;
  std::size_t i = 0;
  for (const auto& f : LocabusCounters::kFields) EXPECT_EQ(s.locabus.*f.member, 100 + i++) << f.field.name;
  i = 0;
  for (const auto& f : LocabusGauges::kFields)
    EXPECT_EQ(s.locabus_gauges.*f.member, 200 + i++) << f.field.name;
  // An older sender: fewer fields; the rest stay 0.
  body.clear();
  append_be(body, 2, 1);
  append_be(body, 11, 8);
  append_be(body, 12, 8);
  append_be(body, 1, 1);
  append_be(body, 21, 8);
  NodeStats old;
  ASSERT_TRUE(decode_sections(section(4, body), old, &error)) << error;
  EXPECT_EQ(old.locabus.tx_frames, 11u);
  EXPECT_EQ(old.locabus.rx_frames, 12u);
  EXPECT_EQ(old.locabus.retransmits, 0u);
  EXPECT_EQ(old.locabus_gauges.members, 21u);
  EXPECT_EQ(old.locabus_gauges.clients, 0u);
  // A count that says more than the body holds.
  body.clear();
  append_be(body, 3, 1);
  append_be(body, 1, 8);
  EXPECT_FALSE(decode_sections(section(4, body), old, &error));
  EXPECT_NE(error.find("locabus section"), std::string::npos) << error;
}

// ---- Table ----

constexpr TableLimits kLimits{15s, 60s, 65535};

struct Feed {
  Table& t;
  Applied all(std::uint16_t node, const Parts& parts, Nanos now) {
    Applied last = Applied::malformed;
    for (const auto& p : parts) {
      std::string error;
      last = t.apply(node, p, now, &error);
      if (last != Applied::complete && last != Applied::partial)
        ADD_FAILURE() << to_string(last) << ": " << error;
    }
    return last;
  }
};

NodeStats at(std::uint64_t ms, NodeStats s = full_node()) {
  s.sampled_at_ms = ms;
  return s;
}

TEST(MonitorTable, PartialThenComplete) {
  Table t(1, kLimits);
  const NodeStats s = full_node(40, 30, 300);
  const Parts parts = encode_record(s, 7, 1);
  ASSERT_GT(parts.size(), 2u);
  for (std::size_t i = parts.size() - 1; i > 0; --i) {  // any order
    EXPECT_EQ(t.apply(2, parts[i], 1s), Applied::partial) << i;
    EXPECT_FALSE(t.row(2, 1s));
  }
  EXPECT_TRUE(t.rows(1s).empty());
  EXPECT_EQ(t.apply(2, parts[0], 2s), Applied::complete);
  const auto row = t.row(2, 5s);
  ASSERT_TRUE(row);
  EXPECT_EQ(row->stats, s);
  EXPECT_EQ(row->epoch, 7u);
  EXPECT_EQ(row->seq, 1u);
  EXPECT_EQ(row->age, 3s);
  EXPECT_FALSE(row->self);
  EXPECT_EQ(row->state, NodeState::alive);
}

TEST(MonitorTable, DuplicatesAndOldOnesDropped) {
  Table t(1, kLimits);
  Feed f{t};
  const Parts p5 = encode_record(at(5000), 7, 5);
  EXPECT_EQ(f.all(2, p5, 1s), Applied::complete);
  std::string error;
  EXPECT_EQ(t.apply(2, p5[0], 2s, &error), Applied::old);  // the same seq again
  EXPECT_NE(error.find("already has seq 5"), std::string::npos) << error;
  EXPECT_EQ(t.apply(2, encode_record(at(4000), 7, 4)[0], 2s), Applied::old);
  EXPECT_EQ(t.row(2, 2s)->stats.sampled_at_ms, 5000u);

  // A newer seq starts a record; a part of a still newer one drops it.
  const Parts big6 = encode_record(at(6000, full_node(40, 30, 300)), 7, 6);
  const Parts big7 = encode_record(at(7000, full_node(40, 30, 300)), 7, 7);
  EXPECT_EQ(t.apply(2, big6[0], 3s), Applied::partial);
  EXPECT_EQ(t.apply(2, big6[0], 3s, &error), Applied::old);  // a part twice
  EXPECT_NE(error.find("arrived twice"), std::string::npos) << error;
  EXPECT_EQ(t.apply(2, big7[1], 3s), Applied::partial);
  EXPECT_EQ(t.apply(2, big6[1], 3s, &error), Applied::old);  // seq 6 was dropped for 7
  EXPECT_NE(error.find("seq 7 is being assembled"), std::string::npos) << error;
  for (std::size_t i = 0; i < big7.size(); ++i) {
    if (i != 1) {
      EXPECT_EQ(t.apply(2, big7[i], 4s), i + 1 == big7.size() ? Applied::complete : Applied::partial);
    }
  }
  EXPECT_EQ(t.row(2, 4s)->seq, 7u);
  EXPECT_EQ(t.row(2, 4s)->stats.nets.size(), 300u);

  // A part whose parts count disagrees with its record's.
  const Parts big8 = encode_record(at(8000, full_node(40, 30, 300)), 7, 8);
  EXPECT_EQ(t.apply(2, big8[0], 5s), Applied::partial);
  Bytes liar = big8[1];
  put_be(liar, 3, big8.size() + 1, 1);
  EXPECT_EQ(t.apply(2, liar, 5s, &error), Applied::malformed);
  EXPECT_NE(error.find("parts"), std::string::npos) << error;
  Bytes junk(10);
  EXPECT_EQ(t.apply(2, junk, 5s, &error), Applied::malformed);
  EXPECT_NE(error.find("shorter than its"), std::string::npos) << error;
}

NodeStats traffic(std::uint64_t ms, std::uint64_t eth_rx, std::uint64_t eth_tx, std::uint64_t read,
                  std::uint64_t written) {
  NodeStats s = full_node(1, 1, 0);
  s.sampled_at_ms = ms;
  s.nets.push_back(NetStats{"lo", 1'000'000'000 + ms * 1000, 1'000'000'000 + ms * 1000, ms, ms});
  s.nets.push_back(NetStats{"eth0", eth_rx, eth_tx, eth_rx / 100, eth_tx / 100});
  s.disks[0].read_bytes = read;
  s.disks[0].written_bytes = written;
  return s;
}

TEST(MonitorTable, RatesExactAndRestartResetsThem) {
  Table t(1, kLimits);
  Feed f{t};
  f.all(2, encode_record(traffic(10'000, 100'000, 900'000, 4096, 0), 7, 1), 1s);
  EXPECT_EQ(t.row(2, 1s)->rates.net_rx_bytes_per_s, 0.0);  // one record: no rates
  NodeStats second = traffic(12'000, 300'000, 500'000, 4096 + 8192, 1 << 20);
  second.nets.push_back(NetStats{"eth1", 1ULL << 40, 1ULL << 40});  // came now: no baseline
  f.all(2, encode_record(second, 7, 2), 3s);
  auto r = t.row(2, 3s)->rates;
  EXPECT_DOUBLE_EQ(r.net_rx_bytes_per_s, 100'000.0);  // 200,000 bytes in 2 s, loopback left out
  EXPECT_DOUBLE_EQ(r.net_tx_bytes_per_s, 0.0);        // went backwards (a reset): 0
  EXPECT_DOUBLE_EQ(r.net_rx_packets_per_s, 1000.0);
  EXPECT_DOUBLE_EQ(r.net_tx_packets_per_s, 0.0);
  EXPECT_DOUBLE_EQ(r.disk_read_bytes_per_s, 4096.0);
  EXPECT_DOUBLE_EQ(r.disk_write_bytes_per_s, 524'288.0);

  // The node restarts: a new epoch replaces the row, rates start over.
  f.all(2, encode_record(traffic(13'000, 10, 10, 0, 0), 8, 1), 4s);
  auto row = t.row(2, 4s);
  EXPECT_EQ(row->epoch, 8u);
  EXPECT_EQ(row->seq, 1u);
  EXPECT_EQ(row->rates.net_rx_bytes_per_s, 0.0);
  EXPECT_EQ(row->rates.disk_read_bytes_per_s, 0.0);
  f.all(2, encode_record(traffic(14'000, 5010, 10, 1000, 0), 8, 2), 5s);
  row = t.row(2, 5s);
  EXPECT_DOUBLE_EQ(row->rates.net_rx_bytes_per_s, 5000.0);
  EXPECT_DOUBLE_EQ(row->rates.disk_read_bytes_per_s, 1000.0);
  // A restart while a record is being assembled: the half record is dropped.
  const Parts half = encode_record(at(14'500, full_node(40, 30, 300)), 8, 3);
  EXPECT_EQ(t.apply(2, half[0], 5s), Applied::partial);
  EXPECT_EQ(f.all(2, encode_record(traffic(14'600, 0, 0, 0, 0), 9, 1), 5s), Applied::complete);
  EXPECT_EQ(t.row(2, 5s)->epoch, 9u);
  EXPECT_EQ(t.apply(2, half[1], 5s), Applied::partial);  // epoch 8 again: a new record to assemble
  EXPECT_EQ(t.row(2, 5s)->epoch, 9u);
  // The old epoch's seq numbers do not count in the new one: seq 2 of epoch 7 replaces.
  EXPECT_EQ(f.all(2, encode_record(traffic(15'000, 0, 0, 0, 0), 7, 3), 6s), Applied::complete);
  EXPECT_EQ(t.row(2, 6s)->epoch, 7u);
}

TEST(MonitorTable, StaleRemovedAliveAgainAndNextExpiry) {
  Table t(1, kLimits);
  Feed f{t};
  EXPECT_FALSE(t.next_expiry());
  const Nanos t0 = 100s;
  f.all(2, encode_record(at(1000), 7, 1), t0);
  f.all(3, encode_record(at(1000), 9, 1), t0 + 5s);
  EXPECT_EQ(t.next_expiry(), t0 + 15s);
  EXPECT_TRUE(t.expire(t0 + 15s - 1ns).empty());
  EXPECT_EQ(t.row(2, t0 + 15s - 1ns)->state, NodeState::alive);
  EXPECT_EQ(t.expire(t0 + 15s), (std::vector<std::uint16_t>{2}));
  EXPECT_EQ(t.row(2, t0 + 15s)->state, NodeState::stale);
  EXPECT_EQ(t.row(2, t0 + 15s)->age, 15s);
  EXPECT_EQ(t.next_expiry(), t0 + 20s);  // node 3 goes stale next
  EXPECT_EQ(t.expire(t0 + 20s), (std::vector<std::uint16_t>{3}));
  EXPECT_EQ(t.next_expiry(), t0 + 60s);  // then node 2 is removed
  EXPECT_TRUE(t.expire(t0 + 60s - 1ns).empty());
  EXPECT_EQ(t.expire(t0 + 60s), (std::vector<std::uint16_t>{2}));
  EXPECT_FALSE(t.row(2, t0 + 60s));
  EXPECT_EQ(t.size(), 1u);
  // A stale node that sends again is alive again.
  f.all(3, encode_record(at(2000), 9, 2), t0 + 61s);
  EXPECT_EQ(t.row(3, t0 + 61s)->state, NodeState::alive);
  EXPECT_EQ(t.next_expiry(), t0 + 76s);
  // The membership says it left: stale at once, removed remove_after after it was last heard.
  t.mark_stale(3, t0 + 62s);
  EXPECT_EQ(t.row(3, t0 + 62s)->state, NodeState::stale);
  EXPECT_EQ(t.next_expiry(), t0 + 121s);
  EXPECT_TRUE(t.expire(t0 + 62s).empty());  // already stale: nothing changes
  EXPECT_EQ(t.expire(t0 + 121s), (std::vector<std::uint16_t>{3}));
  EXPECT_FALSE(t.next_expiry());
  t.mark_stale(4, t0);  // unknown node: nothing
  EXPECT_EQ(t.size(), 0u);
}

TEST(MonitorTable, UnfinishedRecordsGoAfterRemoveAfter) {
  Table t(1, kLimits);
  const Parts big = encode_record(full_node(40, 30, 300), 7, 1);
  EXPECT_EQ(t.apply(2, big[0], 10s), Applied::partial);
  EXPECT_EQ(t.next_expiry(), 70s);
  EXPECT_TRUE(t.expire(70s).empty());  // never shown, so not reported
  EXPECT_EQ(t.size(), 0u);
}

TEST(MonitorTable, MaxNodes) {
  Table t(1, TableLimits{15s, 60s, 2});
  Feed f{t};
  f.all(2, encode_record(at(1), 7, 1), 1s);
  f.all(3, encode_record(at(1), 7, 1), 1s);
  std::string error;
  EXPECT_EQ(t.apply(4, encode_record(at(1), 7, 1)[0], 1s, &error), Applied::full);
  EXPECT_NE(error.find("limit of 2 nodes"), std::string::npos) << error;
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.apply(3, encode_record(at(2), 7, 2)[0], 2s), Applied::complete);  // known ones go on
}

TEST(MonitorTable, SelfRow) {
  Table t(5, kLimits);
  NodeStats s = traffic(1000, 0, 0, 0, 0);
  t.set_local(s, 42, 1, 1s);
  t.set_local(traffic(3000, 2000, 0, 0, 0), 42, 2, 3s);
  auto row = t.row(5, 4s);
  ASSERT_TRUE(row);
  EXPECT_TRUE(row->self);
  EXPECT_EQ(row->seq, 2u);
  EXPECT_EQ(row->age, 1s);
  EXPECT_DOUBLE_EQ(row->rates.net_rx_bytes_per_s, 1000.0);
  std::string error;
  EXPECT_EQ(t.apply(5, encode_record(s, 42, 9)[0], 4s, &error), Applied::old);
  EXPECT_EQ(t.row(5, 4s)->seq, 2u);
  EXPECT_TRUE(t.expire(1000s).empty());
  t.mark_stale(5, 1000s);
  EXPECT_EQ(t.row(5, 1000s)->state, NodeState::alive);
  EXPECT_FALSE(t.next_expiry());
  EXPECT_EQ(t.rows(5s).size(), 1u);
}

NodeView view(std::uint16_t node, std::uint32_t load1_milli, std::uint32_t cpus, std::uint64_t avail,
              NodeState state = NodeState::alive) {
  NodeView v;
  v.node = node;
  v.state = state;
  v.stats.load1_milli = load1_milli;
  v.stats.cpus = cpus;
  v.stats.mem_available = avail;
  return v;
}

// ---- paging the "monitor" control reply ---------------------------------------------

std::vector<NodeView> rows_to_page() {
  std::vector<NodeView> rows;
  for (const std::uint16_t n : {1, 2, 5, 9, 10, 300, 65534}) {
    NodeView v = view(n, 100u * n % 4000, 2, std::uint64_t{1} << 30);
    v.stats.hostname = std::string(n % 7 * 10, 'h');
    for (std::uint16_t d = 0; d < n % 5; ++d) v.stats.disks.push_back({"sd" + std::string(1, char('a' + d))});
    rows.push_back(std::move(v));
  }
  return rows;
}

TEST(MonitorPaging, PagesCoverTheTableInOrderWithinTheirBounds) {
  const auto rows = rows_to_page();
  nlohmann::json all;
  const Page whole = page(rows, 0, 65535, SIZE_MAX, true, all);
  ASSERT_EQ(all.size(), rows.size());
  EXPECT_FALSE(whole.next);
  EXPECT_EQ(whole.rows, rows.size());
  EXPECT_EQ(whole.bytes, all.dump().size());
  for (std::size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(all[i], to_json(rows[i]));

  // Every budget from nothing to more than the whole: greedy pages, each
  // within the budget unless a single row is larger, together the table (a
  // row larger than the budget as a flagged summary).
  for (std::size_t budget = 1; budget <= whole.bytes + 2; budget += 1 + whole.bytes / 150) {
    nlohmann::json expected = nlohmann::json::array();
    for (const NodeView& v : rows) {
      nlohmann::json j = to_json(v);
      if (j.dump().size() > budget) {
        for (const char* key : {"disks", "filesystems", "nets", "cpu_seconds"}) j.erase(key);
        j["devices_omitted"] = true;
      }
      expected.push_back(std::move(j));
    }
    for (const std::size_t limit : {std::size_t{1}, std::size_t{3}, std::size_t{65535}}) {
      nlohmann::json joined = nlohmann::json::array();
      std::uint32_t from = 0;
      std::size_t pages = 0;
      for (;;) {
        nlohmann::json nodes;
        const Page p = page(rows, from, limit, budget, true, nodes);
        ++pages;
        ASSERT_GE(nodes.size(), 1u) << "a page while rows are left holds one";
        EXPECT_EQ(p.rows, nodes.size());
        EXPECT_EQ(p.bytes, nodes.dump().size());
        EXPECT_LE(nodes.size(), limit);
        if (nodes.size() > 1) {
          EXPECT_LE(p.bytes, budget) << "budget " << budget;
        }
        if (p.next) {
          // The row left out would not have fitted.
          EXPECT_TRUE(nodes.size() == limit ||
                      p.bytes + expected[joined.size() + nodes.size()].dump().size() + 1 > budget);
          EXPECT_GT(*p.next, from);
        }
        for (auto& r : nodes) joined.push_back(r);
        if (!p.next) break;
        from = *p.next;
        ASSERT_LE(pages, rows.size());
      }
      EXPECT_EQ(joined, expected) << "budget " << budget << ", limit " << limit;
    }
  }

  // From an id between rows, beyond the last; a summary.
  nlohmann::json nodes;
  EXPECT_EQ(page(rows, 3, 2, SIZE_MAX, true, nodes).next, std::optional<std::uint16_t>(10));
  EXPECT_EQ(nodes[0]["node"], 5);
  EXPECT_FALSE(page(rows, 65535, 2, SIZE_MAX, true, nodes).next);
  EXPECT_EQ(nodes, nlohmann::json::array());
  const Page brief = page(rows, 0, 65535, SIZE_MAX, false, nodes);
  EXPECT_LT(brief.bytes, whole.bytes);
  for (const auto& r : nodes)
    for (const char* key : {"disks", "filesystems", "nets", "cpu_seconds"})
      EXPECT_FALSE(r.contains(key)) << key;
}

TEST(MonitorPaging, ARowTooLargeForAPageOnItsOwnComesAsAFlaggedSummary) {
  auto rows = rows_to_page();
  NodeView& big = rows[2];  // node 5
  for (int d = 0; d < 400; ++d) big.stats.nets.push_back({std::string(kMaxName, char('a' + d % 26))});
  const std::size_t big_bytes = to_json(big).dump().size();
  const std::size_t budget = big_bytes / 2;
  nlohmann::json joined = nlohmann::json::array();
  std::uint32_t from = 0;
  for (;;) {
    nlohmann::json nodes;
    const Page p = page(rows, from, 65535, budget, true, nodes);
    EXPECT_LE(p.bytes, budget);
    for (auto& r : nodes) joined.push_back(r);
    if (!p.next) break;
    from = *p.next;
  }
  ASSERT_EQ(joined.size(), rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (i == 2) {
      EXPECT_EQ(joined[i].value("devices_omitted", false), true);
      EXPECT_FALSE(joined[i].contains("nets"));
      auto summary = to_json(big);
      for (const char* key : {"disks", "filesystems", "nets", "cpu_seconds"}) summary.erase(key);
      summary["devices_omitted"] = true;
      EXPECT_EQ(joined[i], summary);
    } else {
      EXPECT_EQ(joined[i], to_json(rows[i])) << "row " << i;
    }
  }
}

TEST(MonitorPaging, ClientJoinsThePagesAndRefusesOnesThatDoNotMoveOn) {
  const auto rows = rows_to_page();
  nlohmann::json all;
  (void)page(rows, 0, 65535, SIZE_MAX, true, all);
  // A daemon answering pages of 2 rows.
  std::vector<nlohmann::json> asked;
  const auto daemon = [&](const nlohmann::json& req) {
    asked.push_back(req);
    nlohmann::json m{{"node", 1}, {"least_loaded", asked.size()}};
    const Page p = page(rows, req.at("from").get<std::uint32_t>(), 2, SIZE_MAX, true, m["nodes"]);
    if (p.next) m["next"] = *p.next;
    return m;
  };
  const nlohmann::json merged = monitor_rows::fetch_pages(daemon, {{"op", "monitor"}, {"devices", true}});
  EXPECT_EQ(merged.at("nodes"), all);
  EXPECT_FALSE(merged.contains("next"));
  EXPECT_EQ(merged.at("least_loaded"), 4) << "the other fields come from the last page";
  ASSERT_EQ(asked.size(), 4u);
  for (std::size_t i = 0; i < asked.size(); ++i) {
    EXPECT_EQ(asked[i].at("op"), "monitor");
    EXPECT_EQ(asked[i].at("devices"), true);
    EXPECT_EQ(asked[i].at("from"), std::vector<int>({0, 5, 10, 65534})[i]);
  }

  // A daemon that does not page answers the first request whole.
  int calls = 0;
  const auto old_daemon = [&](const nlohmann::json&) {
    ++calls;
    return nlohmann::json{{"nodes", all}};
  };
  EXPECT_EQ(monitor_rows::fetch_pages(old_daemon, {{"op", "monitor"}}).at("nodes"), all);
  EXPECT_EQ(calls, 1);

  // Replies that would loop or are not rows: EPROTO, not a hang.
  const auto refused = [](const nlohmann::json& reply) {
    try {
      monitor_rows::fetch_pages([&](const nlohmann::json&) { return reply; }, {{"op", "monitor"}});
    } catch (const ClientError& e) {
      return e.code();
    }
    return 0;
  };
  EXPECT_EQ(refused({{"nodes", nlohmann::json::array()}, {"next", 0}}), EPROTO);
  EXPECT_EQ(refused({{"nodes", nlohmann::json::array()}, {"next", "5"}}), EPROTO);
  EXPECT_EQ(refused({{"nodes", nlohmann::json::array()}, {"next", 65536}}), EPROTO);
  EXPECT_EQ(refused({{"nodes", nlohmann::json::object()}}), EPROTO);
}

TEST(MonitorRules, LeastLoaded) {
  using V = std::vector<NodeView>;
  // 0.51 and 0.53 per CPU are one step of 0.05: memory decides.
  EXPECT_EQ(least_loaded(V{view(1, 510, 1, 1000), view(2, 530, 1, 2000)}), 2);
  // 0.50 and 0.56 are not: load decides.
  EXPECT_EQ(least_loaded(V{view(1, 500, 1, 1000), view(2, 560, 1, 2000)}), 1);
  // Per CPU: 2.0 on 4 CPUs (0.5) beats 0.6 on 1.
  EXPECT_EQ(least_loaded(V{view(1, 600, 1, 9000), view(2, 2000, 4, 1000)}), 2);
  // Bucket edges: 0.549 and 0.50 tie, 0.55 does not.
  EXPECT_EQ(least_loaded(V{view(1, 500, 1, 1000), view(2, 549, 1, 2000)}), 2);
  EXPECT_EQ(least_loaded(V{view(1, 500, 1, 1000), view(2, 550, 1, 2000)}), 1);
  // Same bucket, same memory: the lowest id.
  EXPECT_EQ(least_loaded(V{view(3, 100, 2, 5000), view(2, 120, 2, 5000), view(4, 110, 2, 5000)}), 2);
  // Stale nodes are left out however idle.
  EXPECT_EQ(least_loaded(V{view(1, 0, 8, 1 << 30, NodeState::stale), view(2, 4000, 1, 10)}), 2);
  EXPECT_EQ(least_loaded(V{view(1, 0, 8, 1 << 30, NodeState::stale)}), std::nullopt);
  EXPECT_EQ(least_loaded(V{}), std::nullopt);

  Table t(1, kLimits);
  NodeStats busy = at(1);
  busy.load1_milli = 16'000;  // 1.0 per CPU
  NodeStats idle = at(1);
  idle.load1_milli = 0;
  t.set_local(busy, 1, 1, 0s);
  Feed{t}.all(2, encode_record(idle, 7, 1), 0s);
  EXPECT_EQ(t.least_loaded(), 2);
  t.mark_stale(2, 1s);
  EXPECT_EQ(t.least_loaded(), 1);
}

// count() and least_loaded() walk the rows in place (the gauges and the
// least_loaded_only request, at every scrape): they must say what rows() says.
TEST(MonitorTable, CountAndLeastLoadedInPlaceMatchRows) {
  Table t(1, kLimits);
  NodeStats self = at(1);
  self.load1_milli = 16'000;
  t.set_local(self, 1, 1, 0s);
  for (std::uint16_t node = 2; node <= 40; ++node) {
    NodeStats s = at(1);
    s.load1_milli = 1000u * (node % 7);
    s.mem_available = 1000u * node;
    Feed{t}.all(node, encode_record(s, node, 1), 0s);
  }
  // A node with only some parts of its first record: in size(), not in rows().
  NodeStats big = at(1);
  for (int i = 0; i < 400; ++i)
    big.filesystems.push_back(FilesystemStats{"/m" + std::to_string(i), "d", "x"});
  const Parts parts = encode_record(big, 9, 1);
  ASSERT_GT(parts.size(), 1u);
  EXPECT_EQ(t.apply(50, parts[0], 0s), Applied::partial);
  for (std::uint16_t node = 2; node <= 40; node += 3) t.mark_stale(node, 1s);
  const auto check = [&](Nanos now) {
    const auto rows = t.rows(now);
    std::size_t stale = 0, alive = 0;
    for (const auto& r : rows) (r.state == NodeState::stale ? stale : alive) += 1;
    EXPECT_EQ(t.count(NodeState::stale), stale);
    EXPECT_EQ(t.count(NodeState::alive), alive);
    EXPECT_EQ(t.least_loaded(), least_loaded(rows));
  };
  check(1s);
  EXPECT_EQ(t.count(NodeState::stale), 13u);
  EXPECT_EQ(t.count(NodeState::alive), 27u);  // self and 26 others; node 50 is not shown
  EXPECT_EQ(t.size(), 41u);
  t.expire(20s);  // every other node silent past stale_after
  check(20s);
  EXPECT_EQ(t.count(NodeState::stale), 39u);
  EXPECT_EQ(t.least_loaded(), 1);
}

TEST(MonitorRules, SignificantChangeThresholds) {
  NodeStats base;
  base.cpus = 4;
  base.cpu_permille = {200, 0, 100, 700, 0, 0, 0, 0};  // 30 % busy
  base.load1_milli = 2000;                             // 0.5 per CPU
  base.mem_total = 1000 * 1000;
  base.mem_available = 500 * 1000;
  base.swap_total = 2000;
  base.swap_free = 1500;
  base.filesystems.push_back(FilesystemStats{"/", "/dev/sda1", "ext4", 10'000, 4'000, 3'000});
  base.disks.push_back(DiskStats{"sda"});
  base.nets.push_back(NetStats{"eth0"});
  EXPECT_FALSE(significant_change(base, base));

  NodeStats n = base;
  n.cpu_permille = {299, 0, 100, 601, 0, 0, 0, 0};  // 39.9 %
  EXPECT_FALSE(significant_change(base, n));
  n.cpu_permille = {300, 0, 100, 600, 0, 0, 0, 0};  // 40 %
  EXPECT_TRUE(significant_change(base, n));
  n.cpu_permille = {100, 0, 100, 800, 0, 0, 0, 0};  // 20 %: down counts too
  EXPECT_TRUE(significant_change(base, n));

  n = base;
  n.load1_milli = 2999;  // 0.74975 per CPU
  EXPECT_FALSE(significant_change(base, n));
  n.load1_milli = 3000;  // 0.75
  EXPECT_TRUE(significant_change(base, n));
  n.load1_milli = 1000;  // 0.25
  EXPECT_TRUE(significant_change(base, n));

  n = base;
  n.mem_available = 500 * 1000 + 49'999;
  EXPECT_FALSE(significant_change(base, n));
  n.mem_available = 500 * 1000 - 50'000;
  EXPECT_TRUE(significant_change(base, n));

  n = base;
  n.swap_free = 1500 - 99;  // used 500 -> 599: 4.95 %
  EXPECT_FALSE(significant_change(base, n));
  n.swap_free = 1500 - 100;  // 5 %
  EXPECT_TRUE(significant_change(base, n));

  n = base;
  n.filesystems[0].free_bytes = 4'000 - 499;  // use 60 % -> 64.99 %
  EXPECT_FALSE(significant_change(base, n));
  n.filesystems[0].free_bytes = 4'000 - 500;  // 65 %
  EXPECT_TRUE(significant_change(base, n));

  n = base;
  n.disks.push_back(DiskStats{"sdb"});
  EXPECT_TRUE(significant_change(base, n));
  n = base;
  n.filesystems.clear();
  EXPECT_TRUE(significant_change(base, n));
  n = base;
  n.nets[0].device = "eth1";
  EXPECT_TRUE(significant_change(base, n));
  n = base;  // counters moving is not a reason
  n.nets[0].rx_bytes = 1ULL << 40;
  n.disks[0].read_bytes = 1ULL << 40;
  EXPECT_FALSE(significant_change(base, n));
}

TEST(MonitorTable, MemoryOf256TypicalNodes) {
  Table t(0, kLimits);
  Feed f{t};
  for (std::uint16_t node = 1; node <= 256; ++node) {
    f.all(node, encode_record(at(1000), 7, 1), 1s);
    f.all(node, encode_record(at(2000), 7, 2), 2s);  // rows with a previous record too
  }
  ASSERT_EQ(t.size(), 256u);
  const std::size_t bytes = t.memory_bytes();
  // Floor: two NodeStats and their device vectors per row.
  const std::size_t floor =
      256 * 2 *
      (sizeof(NodeStats) + 4 * sizeof(DiskStats) + 6 * sizeof(FilesystemStats) + 4 * sizeof(NetStats));
  EXPECT_GE(bytes, floor);
  EXPECT_LE(bytes, 2u << 20) << "256 typical nodes take " << bytes << " bytes";
  RecordProperty("memory_bytes_256_nodes", std::to_string(bytes));
}

TEST(MonitorTable, Json) {
  Table t(1, kLimits);
  Feed{t}.all(2, encode_record(full_node(), 7, 3), 1s);
  const auto j = to_json(*t.row(2, 2500ms));
  EXPECT_EQ(j["node"], 2);
  EXPECT_EQ(j["self"], false);
  EXPECT_EQ(j["state"], "alive");
  EXPECT_EQ(j["age_ms"], 1500);
  EXPECT_EQ(j["epoch"], 7);
  EXPECT_EQ(j["seq"], 3);
  EXPECT_EQ(j["hostname"], "node-a.cluster.example");
  EXPECT_TRUE(j["cpu_busy_percent"].is_number_float());
  EXPECT_DOUBLE_EQ(j["cpu_percent"]["idle"].get<double>(), 1.3);
  EXPECT_DOUBLE_EQ(j["cpu_seconds"]["user"].get<double>(), 1'000'000'000.0);
  EXPECT_EQ(j["cpu_percent"].size(), kCpuModes);
  EXPECT_EQ(j["load"], nlohmann::json::array({1.5, 1.25, 0.99}));
  EXPECT_DOUBLE_EQ(j["load_per_cpu"].get<double>(), 1.5 / 16);
  EXPECT_TRUE(j["memory"]["total"].is_number_unsigned());
  EXPECT_EQ(j["memory"]["available"], 40ULL << 30);
  EXPECT_EQ(j["swap"]["free"], 7ULL << 30);
  EXPECT_EQ(j["rates"].size(), 6u);
  EXPECT_TRUE(j["rates"]["net_rx_bytes_per_s"].is_number_float());
  EXPECT_EQ(j["disks"].size(), 4u);
  EXPECT_EQ(j["disks"][0]["device"], "nvme0n1");
  EXPECT_EQ(j["filesystems"][5]["files_free"], 900'005);
  EXPECT_EQ(j["nets"][3]["tx_drop"], 9);
  EXPECT_EQ(j["locabus"].size(), std::size(LocabusCounters::kFields) + std::size(LocabusGauges::kFields));
  EXPECT_EQ(j["locabus"]["tx_frames"], 1'000'003);
  for (const char* key :
       {"sampled_at_ms", "cpus", "processes", "threads", "procs_running", "procs_blocked", "boot_time_s"})
    EXPECT_TRUE(j[key].is_number_unsigned()) << key;
}

// ---------------------------------------------------------------------------
// Hostile or buggy peers (the review's attacks).

/// True if `s` is well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF).
bool is_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
}

// Bytes a peer (or /proc/mounts, or sethostname()) may carry that are not UTF-8.
const std::string kBad[] = {"\xff", "caf\xe9", "a\xc3", "\xed\xa0\x80", "\xc0\xaf", "\xf5\x80\x80\x80"};

TEST(MonitorReview, Utf8Helpers) {
  // Against the test's own checker, on every short byte string of a few
  // interesting bytes and on random ones.
  const unsigned char interesting[] = {0x00, 0x41, 0x7F, 0x80, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0,
                                       0xA0, 0xED, 0x9F, 0xEF, 0xF0, 0x90, 0xF4, 0x8F, 0xF5, 0xFF};
  std::mt19937 rng(15);
  for (int i = 0; i < 200'000; ++i) {
    std::string s(rng() % 6, '\0');
    for (auto& c : s) c = static_cast<char>(i % 2 ? interesting[rng() % std::size(interesting)] : rng());
    ASSERT_EQ(valid_utf8(s), is_utf8(s)) << testing::PrintToString(s);
    const std::string fixed = to_valid_utf8(s);
    ASSERT_TRUE(is_utf8(fixed)) << testing::PrintToString(s);
    if (is_utf8(s)) {
      ASSERT_EQ(fixed, s);
    }
    ASSERT_LE(fixed.size(), 3 * s.size());
    for (std::size_t max = 0; max <= fixed.size(); ++max) {
      const auto p = utf8_prefix(fixed, max);
      ASSERT_TRUE(is_utf8(p));
      ASSERT_LE(p.size(), max);
      ASSERT_GT(p.size() + 4, std::min(max, fixed.size()));  // at most one character short
      ASSERT_EQ(fixed.substr(0, p.size()), p);
    }
  }
  EXPECT_EQ(to_valid_utf8("a\xff\xc3\xa9\xed\xa0\x80"),
            "a\xEF\xBF\xBD\xc3\xa9\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8_prefix("ab\xe2\x82\xac", 4), "ab");
  EXPECT_EQ(utf8_prefix("ab\xe2\x82\xac", 5), "ab\xe2\x82\xac");
}

TEST(MonitorReview, JsonOfInvalidUtf8DumpsValidUtf8) {
  NodeView v;
  v.node = 3;
  v.epoch = 1;
  v.stats = full_node(2, 2, 2);
  v.stats.hostname = "h\xff\xfeost";
  v.stats.disks[0].device = "sd\xc3";
  v.stats.filesystems[0].mountpoint = "/mnt/caf\xe9";
  v.stats.filesystems[1].device = "/dev/\xed\xa0\x80";
  v.stats.filesystems[1].fstype = "\xc0\xaf";
  v.stats.nets[0].device = "eth\x80";
  v.stats.nets[1].device = "d\xc3\xa9j\xc3\xa0";  // valid UTF-8: kept as it is
  std::string text;
  ASSERT_NO_THROW(text = to_json(v).dump()) << "the daemon's \"monitor\" reply would throw";
  EXPECT_TRUE(is_utf8(text));
  const auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["hostname"], "h\xEF\xBF\xBD\xEF\xBF\xBDost");  // each bad byte one U+FFFD
  EXPECT_EQ(j["disks"][0]["device"], "sd\xEF\xBF\xBD");
  EXPECT_EQ(j["filesystems"][0]["mountpoint"], "/mnt/caf\xEF\xBF\xBD");
  EXPECT_EQ(j["nets"][1]["device"], "d\xc3\xa9j\xc3\xa0");
  EXPECT_EQ(j["disks"][1]["device"], v.stats.disks[1].device);
}

TEST(MonitorReview, PeerStringsAreValidUtf8InTheTable) {
  Table t(1, kLimits);
  NodeStats s = full_node(1, 1, 1);
  for (const auto& bad : kBad) {
    ASSERT_TRUE(is_utf8("ok \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
    ASSERT_FALSE(is_utf8(bad)) << bad;
  }
  static std::uint32_t seq = 0;
  for (const auto& bad : kBad) {
    s.hostname = bad;
    s.disks[0].device = bad;
    s.filesystems[0].mountpoint = bad + bad;
    s.filesystems[0].device = bad;
    s.filesystems[0].fstype = bad;
    s.nets[0].device = "x" + bad;
    ASSERT_EQ(Feed{t}.all(2, encode_record(s, 7, ++seq), 1s), Applied::complete);
    const auto row = t.row(2, 1s);
    ASSERT_TRUE(row);
    const auto& r = row->stats;
    for (const std::string* str : {&r.hostname, &r.disks[0].device, &r.filesystems[0].mountpoint,
                                   &r.filesystems[0].device, &r.filesystems[0].fstype, &r.nets[0].device})
      EXPECT_TRUE(is_utf8(*str)) << "from " << bad;
    EXPECT_NO_THROW((void)to_json(*row).dump());
  }
  // The node's own sample (set_local: the simulation's hook bypasses the sampler) too.
  s.hostname = "me\xff";
  t.set_local(s, 9, 1, 1s);
  EXPECT_EQ(t.row(1, 1s)->stats.hostname, "me\xEF\xBF\xBD");
}

TEST(MonitorReview, RatesDoNotWrapOnHugeIncreases) {
  Table t(1, kLimits);
  Feed f{t};
  NodeStats a = full_node(0, 0, 0);
  a.sampled_at_ms = 1000;
  a.nets = {NetStats{"eth0", 0, 0, 0, 0}, NetStats{"eth1", 0, 0, 0, 0}};
  a.disks = {DiskStats{"sda", 0, 0, 0, 0, 0}, DiskStats{"sdb", 0, 0, 0, 0, 0}};
  NodeStats b = a;
  b.sampled_at_ms = 2000;
  for (auto& n : b.nets) n.rx_bytes = n.tx_bytes = n.rx_packets = n.tx_packets = 1ULL << 63;
  for (auto& d : b.disks) d.read_bytes = d.written_bytes = 1ULL << 63;
  f.all(2, encode_record(a, 7, 1), 1s);
  f.all(2, encode_record(b, 7, 2), 2s);
  const auto r = t.row(2, 2s)->rates;
  const double want = 2.0 * 9223372036854775808.0;  // 2^64 in 1 s: not 0 (a u64 sum wraps)
  for (double v : {r.net_rx_bytes_per_s, r.net_tx_bytes_per_s, r.net_rx_packets_per_s, r.net_tx_packets_per_s,
                   r.disk_read_bytes_per_s, r.disk_write_bytes_per_s}) {
    EXPECT_DOUBLE_EQ(v, want);
  }
  EXPECT_NO_THROW((void)to_json(*t.row(2, 2s)).dump());
}

TEST(MonitorReview, DuplicateDevicesCountedOnceInRates) {
  // A record is not trusted to name each device once: the rates use the first
  // of each name (as the exposition renders only the first).
  Table t(1, kLimits);
  Feed f{t};
  NodeStats a = full_node(0, 0, 0);
  a.sampled_at_ms = 1000;
  a.nets = {NetStats{"eth0", 100}, NetStats{"eth0", 100}};
  a.disks = {DiskStats{"sda", 0, 0, 100}, DiskStats{"sda", 0, 0, 100}};
  NodeStats b = a;
  b.sampled_at_ms = 2000;
  b.nets = {NetStats{"eth0", 1100}, NetStats{"eth0", 1100}};
  b.disks = {DiskStats{"sda", 0, 0, 600}, DiskStats{"sda", 0, 0, 600}};
  f.all(2, encode_record(a, 7, 1), 1s);
  f.all(2, encode_record(b, 7, 2), 2s);
  const auto r = t.row(2, 2s)->rates;
  EXPECT_DOUBLE_EQ(r.net_rx_bytes_per_s, 1000.0);
  EXPECT_DOUBLE_EQ(r.disk_read_bytes_per_s, 500.0);
}

// The most devices a record of kMaxParts parts can carry: disk sections with
// empty names (45 bytes), each with a name no earlier record had.
NodeStats many_disks(std::uint64_t ms, std::size_t n, std::size_t offset) {
  NodeStats s;
  s.sampled_at_ms = ms;
  s.disks.reserve(n);
  for (std::size_t i = 0; i < n; ++i) s.disks.push_back(DiskStats{std::to_string(i + offset), 1, 1, 1, 1, 1});
  return s;
}

TEST(MonitorReview, RatesOfAHugeRecordAreNotQuadratic) {
  Table t(1, kLimits);
  Feed f{t};
  // ~8,000 devices: as many as 255 parts of small disk sections hold.
  const std::size_t n = 7000;
  const Parts p1 = encode_record(many_disks(1000, n, 0), 7, 1);
  const Parts p2 = encode_record(many_disks(2000, n, n), 7, 2);  // every name new: each lookup misses
  ASSERT_LE(p1.size(), kMaxParts);
  f.all(2, p1, 1s);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) {
    Table u(1, kLimits);
    Feed g{u};
    g.all(2, p1, 1s);
    g.all(2, p2, 2s);
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("3 x two records of %zu disks each: %.1f ms\n", n, ms);
  // Linear work is a few ms; comparing every name with every other (61 M
  // string comparisons a record) took ~300 ms per record.
  EXPECT_LT(ms, 150.0);
}

TEST(MonitorReview, HostilePeerCannotGrowTheTable) {
  // One peer: epochs flapping between two values (two daemons with one node
  // id), seqs interleaved, parts repeated with other contents, parts counts
  // that disagree, each part as large as a broadcast message. Pending parts
  // are of one record at a time, so the row stays under one record's bytes.
  Table t(1, kLimits);
  std::mt19937 rng(15);
  Bytes payload(kMaxPartLen);
  for (int i = 0; i < 50'000; ++i) {
    std::fill(payload.begin(), payload.end(), std::byte{0});
    payload[0] = std::byte{kRecordVersion};
    const std::uint8_t parts = static_cast<std::uint8_t>(1 + rng() % 255);
    put_be(payload, 2, rng() % parts, 1);
    put_be(payload, 3, parts, 1);
    put_be(payload, 4, 1 + rng() % 2, 4);     // epoch 1 or 2
    put_be(payload, 8, 1 + rng() % 1000, 4);  // seq
    put_be(payload, 12, rng(), 8);
    const std::size_t len = rng() % (kMaxPartLen - kRecordHeaderLen + 1);
    put_be(payload, 20, len, 2);
    for (std::size_t k = kRecordHeaderLen; k < kRecordHeaderLen + len; ++k)
      payload[k] = static_cast<std::byte>(rng());
    (void)t.apply(static_cast<std::uint16_t>(2 + rng() % 3), payload, Nanos(i), nullptr);
    if (const auto row = t.row(2, Nanos(i))) (void)to_json(*row).dump();
  }
  EXPECT_LE(t.size(), 3u);
  EXPECT_LE(t.memory_bytes(), 3 * (kMaxParts * (kMaxPartLen + 64) + (64u << 10)));
}

TEST(MonitorReview, SignificantChangeWhenATotalDropsToZero) {
  NodeStats last = full_node(1, 1, 1);
  NodeStats now = last;
  EXPECT_FALSE(significant_change(last, now));
  // swapoff: 1 GiB of 8 GiB was used, now there is no swap at all.
  now.swap_total = now.swap_free = 0;
  EXPECT_TRUE(significant_change(last, now));
  EXPECT_TRUE(significant_change(now, last)) << "swapon the other way";
  // /proc/meminfo unreadable in this sample: every memory field 0.
  now = last;
  now.mem_total = now.mem_available = 0;
  EXPECT_TRUE(significant_change(last, now));
  EXPECT_TRUE(significant_change(now, last));
  // Both 0 all along: nothing moved.
  last.swap_total = last.swap_free = last.mem_total = last.mem_available = 0;
  now = last;
  EXPECT_FALSE(significant_change(last, now));
  // Nothing at all (a sampler that read nothing), and cpus 0: no division by zero.
  EXPECT_FALSE(significant_change(NodeStats{}, NodeStats{}));
}

TEST(MonitorReview, LeastLoadedIgnoresRowOrder) {
  std::vector<NodeView> rows(40);
  std::mt19937 rng(15);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    rows[i].node = static_cast<std::uint16_t>(1000 - i * 7);
    rows[i].state = i % 5 == 0 ? NodeState::stale : NodeState::alive;
    rows[i].stats.cpus = static_cast<std::uint32_t>(rng() % 3);  // 0 counts as 1
    rows[i].stats.load1_milli = rng() % 2 ? UINT32_MAX : static_cast<std::uint32_t>(rng() % 200);
    rows[i].stats.mem_available = rng() % 2 ? UINT64_MAX : rng() % 3;
  }
  const auto want = least_loaded(rows);
  ASSERT_TRUE(want);
  for (int i = 0; i < 100; ++i) {
    std::shuffle(rows.begin(), rows.end(), rng);
    ASSERT_EQ(least_loaded(rows), want);
  }
  for (auto& r : rows) r.state = NodeState::stale;
  EXPECT_FALSE(least_loaded(rows));
}

}  // namespace
}  // namespace locabus::monitor
