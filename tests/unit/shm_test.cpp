// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The local API's shared-memory data path: ring semantics (empty, full, exact
// fit, wrap with padding, every record size), region creation and attach
// validation, sealing, a hostile peer scribbling over the shared memory, the
// wakeup protocol, and a million records between two threads and between two
// processes with the blocking protocol (a lost wakeup would hang: it fails).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "api/shm.hpp"
#include "common/error.hpp"

namespace locabus::api {
namespace {

using Status = RingProducer::Status;

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s)); }

std::string text_of(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

/// A daemon-side region and a client attached to it (a second mapping of the
/// same memfd, as in two processes).
struct Pair {
  explicit Pair(std::size_t ring_bytes = 4096)
      : daemon(SharedRegion::create("test", ring_bytes)),
        client(SharedRegion::attach(daemon.duplicate_fd())) {}
  SharedRegion daemon;
  SharedRegion client;
};

layout::RingControl& control(const SharedRegion& r, std::size_t offset) {
  return *reinterpret_cast<layout::RingControl*>(r.base() + offset);
}
std::uint64_t to_client_produced(const SharedRegion& r) {
  return control(r, layout::kToClientControl).produced;
}

struct Record {
  std::uint16_t type;
  std::uint16_t aux;
  std::string payload;
};

std::vector<Record> read_all(RingConsumer& c, std::size_t max = SIZE_MAX) {
  std::vector<Record> out;
  const auto r = c.read(max, [&](std::uint16_t type, std::uint16_t aux, std::span<const std::byte> p) {
    out.push_back({type, aux, text_of(p)});
  });
  EXPECT_TRUE(r) << describe(r.error);
  EXPECT_EQ(r.records, out.size());
  return out;
}

// ---- ring semantics ------------------------------------------------------------------

TEST(ShmRing, EmptyRingHasNothingAndMaySleep) {
  Pair p;
  EXPECT_TRUE(p.client.consumer().empty());
  EXPECT_TRUE(read_all(p.client.consumer()).empty());
  EXPECT_TRUE(p.client.consumer().prepare_sleep());
  EXPECT_TRUE(p.daemon.consumer().empty());
  EXPECT_EQ(p.daemon.producer().free_bytes(), 4096u);
  EXPECT_FALSE(p.daemon.producer().publish()) << "nothing staged: nothing to publish, no wakeup";
}

TEST(ShmRing, RecordsTravelBothWaysWithTypeAuxAndTwoSpans) {
  Pair p;
  const std::string meta = "META", body = "hello, client";
  ASSERT_EQ(p.daemon.producer().try_write(2, 7, bytes_of(meta), bytes_of(body)), Status::kWritten);
  ASSERT_EQ(p.daemon.producer().try_write(3, 8, bytes_of(body)), Status::kWritten);
  EXPECT_TRUE(p.client.consumer().empty()) << "staged records are invisible before publish()";
  EXPECT_FALSE(p.daemon.producer().publish());
  auto got = read_all(p.client.consumer());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].type, 2);
  EXPECT_EQ(got[0].aux, 7);
  EXPECT_EQ(got[0].payload, meta + body);
  EXPECT_EQ(got[1].type, 3);
  EXPECT_EQ(got[1].aux, 8);
  EXPECT_EQ(got[1].payload, body);

  ASSERT_EQ(p.client.producer().try_write(1, 42, bytes_of(body)), Status::kWritten);
  EXPECT_FALSE(p.client.producer().publish());
  got = read_all(p.daemon.consumer());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].aux, 42);
  EXPECT_EQ(got[0].payload, body);
  EXPECT_TRUE(p.daemon.consumer().empty());
}

TEST(ShmRing, ReadHonoursMaxAndACallbackThatDeclines) {
  Pair p;
  auto& prod = p.daemon.producer();
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(prod.try_write(1, static_cast<std::uint16_t>(i), {}), Status::kWritten);
  (void)prod.publish();
  EXPECT_EQ(read_all(p.client.consumer(), 2).size(), 2u);
  std::vector<std::uint16_t> seen;
  const auto r =
      p.client.consumer().read(10, [&](std::uint16_t, std::uint16_t aux, std::span<const std::byte>) {
        if (aux == 3) return false;  // not now: stays in the ring
        seen.push_back(aux);
        return true;
      });
  EXPECT_TRUE(r);
  EXPECT_EQ(r.records, 1u);
  EXPECT_EQ(seen, std::vector<std::uint16_t>{2});
  const auto rest = read_all(p.client.consumer());
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].aux, 3);
  EXPECT_EQ(rest[1].aux, 4);
}

TEST(ShmRing, PeekLeavesARecordInTheRingUntilConsumedAndReleased) {
  Pair p;
  RingProducer& out = p.daemon.producer();
  RingConsumer& in = p.client.consumer();
  ASSERT_EQ(out.try_write(2, 7, bytes_of("first")), Status::kWritten);
  ASSERT_EQ(out.try_write(3, 8, bytes_of("second")), Status::kWritten);
  (void)out.publish();
  const std::size_t free_before = out.free_bytes();

  const RecordView* a = in.peek();
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->type, 2);
  EXPECT_EQ(a->aux, 7);
  EXPECT_EQ(text_of(a->payload), "first");
  EXPECT_EQ(in.peek(), a) << "peeking again returns the same record";
  EXPECT_EQ(in.unreleased(), 0U);
  in.consume();
  EXPECT_EQ(in.unreleased(), record_bytes(5));
  EXPECT_EQ(text_of(a->payload), "first") << "consumed but not released: the bytes are still ours";
  EXPECT_EQ(out.free_bytes(), free_before) << "nothing released yet";

  const RecordView* b = in.peek();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(text_of(b->payload), "second");
  EXPECT_FALSE(in.caught_up()) << "the second record is only peeked";
  in.consume();
  EXPECT_TRUE(in.caught_up());
  EXPECT_EQ(in.peek(), nullptr);
  EXPECT_FALSE(in.prepare_sleep()) << "may not sleep while holding space";
  EXPECT_FALSE(in.release()) << "the producer does not wait";
  EXPECT_EQ(in.unreleased(), 0U);
  EXPECT_EQ(out.free_bytes(), p.daemon.ring_bytes());
  EXPECT_TRUE(in.prepare_sleep());
}

TEST(ShmRing, ReadReleasesWhatPeekConsumedBefore) {
  Pair p;
  RingProducer& out = p.daemon.producer();
  RingConsumer& in = p.client.consumer();
  for (const char* s : {"a", "b", "c"}) ASSERT_EQ(out.try_write(2, 0, bytes_of(s)), Status::kWritten);
  (void)out.publish();
  ASSERT_NE(in.peek(), nullptr);
  in.consume();
  const auto rest = read_all(in);
  ASSERT_EQ(rest.size(), 2U);
  EXPECT_EQ(rest[0].payload, "b");
  EXPECT_EQ(rest[1].payload, "c");
  EXPECT_EQ(in.unreleased(), 0U);
  EXPECT_EQ(out.free_bytes(), p.daemon.ring_bytes());
}

TEST(ShmRing, ConsumedSpaceStaysTakenUntilReleaseThenWakesTheWaitingProducer) {
  Pair p;
  RingProducer& out = p.daemon.producer();
  RingConsumer& in = p.client.consumer();
  const std::string msg(100, 'x');
  std::size_t written = 0;
  while (out.try_write(2, 0, bytes_of(msg)) == Status::kWritten) ++written;
  (void)out.publish();
  ASSERT_GT(written, 10U);
  std::size_t seen = 0;
  while (const RecordView* r = in.peek()) {
    ASSERT_EQ(r->payload.size(), msg.size());
    in.consume();
    ++seen;
  }
  EXPECT_EQ(seen, written);  // (and the padding after them, skipped)
  EXPECT_EQ(out.try_write(2, 0, bytes_of(msg)), Status::kFull) << "consumed but unreleased space is not free";
  EXPECT_FALSE(in.producer_waiting());
  ASSERT_TRUE(out.prepare_sleep(msg.size()));
  EXPECT_TRUE(in.producer_waiting());
  EXPECT_TRUE(in.release()) << "the producer said it sleeps: ring it";
  EXPECT_FALSE(in.producer_waiting());
  EXPECT_EQ(out.try_write(2, 0, bytes_of(msg)), Status::kWritten);
}

TEST(ShmRing, PeekSkipsPaddingAndSeesTheRecordBehindIt) {
  Pair p;
  RingProducer& out = p.daemon.producer();
  RingConsumer& in = p.client.consumer();
  const std::string big(p.daemon.max_payload(), 'b');
  // Three maximal records leave a quarter of the ring minus headers; the
  // fourth does not fit before the end once the first is released.
  for (int i = 0; i < 3; ++i) ASSERT_EQ(out.try_write(2, 0, bytes_of(big)), Status::kWritten);
  (void)out.publish();
  for (int i = 0; i < 3; ++i) {
    ASSERT_NE(in.peek(), nullptr);
    in.consume();
  }
  (void)in.release();
  ASSERT_EQ(out.try_write(2, 0, bytes_of("small")), Status::kWritten);
  ASSERT_EQ(out.try_write(2, 9, bytes_of(big)), Status::kWritten);  // behind padding
  (void)out.publish();
  const RecordView* r = in.peek();
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(text_of(r->payload), "small");
  in.consume();
  r = in.peek();
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->aux, 9);
  EXPECT_EQ(r->payload.size(), big.size());
  EXPECT_EQ(static_cast<const void*>(r->payload.data()),
            static_cast<const void*>(p.client.base() + layout::kHeaderBytes + sizeof(RecordHeader)))
      << "the record after the padding starts the ring (to_client is the first ring)";
  in.consume();
  EXPECT_FALSE(in.release());
  EXPECT_EQ(out.free_bytes(), p.daemon.ring_bytes());
}

TEST(ShmRing, FullRingRefusesUntilTheConsumerFreesSpace) {
  Pair p;  // 4096-byte rings
  auto& prod = p.daemon.producer();
  const std::string payload(100, 'x');  // 112 bytes a record
  int written = 0;
  while (prod.try_write(1, 0, bytes_of(payload)) == Status::kWritten) ++written;
  EXPECT_EQ(written, 4096 / 112);
  EXPECT_EQ(prod.free_bytes(), 0u)
      << "the 64 bytes left at the end were staged as padding by the refused write";
  EXPECT_EQ(prod.try_write(1, 0, bytes_of(payload)), Status::kFull);
  (void)prod.publish();
  EXPECT_EQ(prod.try_write(1, 0, bytes_of(payload)), Status::kFull) << "publishing frees nothing";
  ASSERT_EQ(read_all(p.client.consumer(), 1).size(), 1u);
  EXPECT_EQ(prod.try_write(1, 0, bytes_of(payload)), Status::kWritten) << "one record read, one fits";
  EXPECT_EQ(prod.try_write(1, 0, bytes_of(payload)), Status::kFull);
}

TEST(ShmRing, ExactFitNeedsNoPadding) {
  Pair p;
  auto& prod = p.daemon.producer();
  const std::string payload(1016, 'y');  // record_bytes = 1024: four fill the ring exactly
  for (int i = 0; i < 4; ++i) ASSERT_EQ(prod.try_write(1, 0, bytes_of(payload)), Status::kWritten);
  EXPECT_EQ(prod.free_bytes(), 0u);
  EXPECT_EQ(prod.try_write(1, 0, {}), Status::kFull);
  (void)prod.publish();
  EXPECT_EQ(to_client_produced(p.daemon), 4096u);
  EXPECT_EQ(read_all(p.client.consumer()).size(), 4u);
  ASSERT_EQ(prod.try_write(1, 0, bytes_of(payload)), Status::kWritten);
  (void)prod.publish();
  EXPECT_EQ(to_client_produced(p.daemon), 4096u + 1024u) << "no padding record at an exact fit";
  const auto got = read_all(p.client.consumer());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, payload);
}

TEST(ShmRing, ARecordThatDoesNotFitBeforeTheEndWrapsBehindPadding) {
  Pair p;
  auto& prod = p.daemon.producer();
  const std::string small(1000, 's');  // 1008 bytes: four leave 64 at the end
  for (int i = 0; i < 4; ++i) ASSERT_EQ(prod.try_write(1, 0, bytes_of(small)), Status::kWritten);
  (void)prod.publish();
  ASSERT_EQ(read_all(p.client.consumer()).size(), 4u);
  const std::string next(500, 'n');
  ASSERT_EQ(prod.try_write(5, 6, bytes_of(next)), Status::kWritten);
  (void)prod.publish();
  EXPECT_EQ(to_client_produced(p.daemon), 4032u + 64u + 512u) << "64 bytes of padding, then the record at 0";
  const auto got = read_all(p.client.consumer());
  ASSERT_EQ(got.size(), 1u) << "padding is not delivered";
  EXPECT_EQ(got[0].type, 5);
  EXPECT_EQ(got[0].payload, next);
  const auto* header = reinterpret_cast<const RecordHeader*>(p.daemon.base() + layout::kHeaderBytes + 4032);
  EXPECT_EQ(header->type, kPaddingType);
  EXPECT_EQ(header->length, 64u - sizeof(RecordHeader));
}

TEST(ShmRing, PaddingAloneIsWrittenWhenOnlyItFits) {
  // Without this, a record needing the wrap could wait forever for space that
  // only exists once the padding itself has been consumed.
  Pair p;
  auto& prod = p.daemon.producer();
  const std::string rec(1000, 'r');
  for (int i = 0; i < 4; ++i) ASSERT_EQ(prod.try_write(1, 0, bytes_of(rec)), Status::kWritten);
  (void)prod.publish();
  ASSERT_EQ(read_all(p.client.consumer(), 1).size(), 1u);  // frees [0, 1008): not enough for 64 + 1008
  const std::string big(1016, 'b');                        // 1024 bytes
  EXPECT_EQ(prod.try_write(1, 9, bytes_of(big)), Status::kFull);
  EXPECT_TRUE(prod.has_unpublished()) << "the padding was staged";
  (void)prod.publish();
  EXPECT_EQ(to_client_produced(p.daemon), 4096u);
  EXPECT_EQ(read_all(p.client.consumer()).size(), 3u);
  EXPECT_EQ(prod.try_write(1, 9, bytes_of(big)), Status::kWritten);
  (void)prod.publish();
  const auto got = read_all(p.client.consumer());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, big);
}

TEST(ShmRing, EveryRecordSizeFromZeroToMaxBothWays) {
  Pair p(16384);
  const std::size_t max = p.daemon.max_payload();
  ASSERT_EQ(max, 16384u / 4 - 8);
  std::string pattern(max, '\0');
  for (std::size_t i = 0; i < max; ++i) pattern[i] = static_cast<char>(i * 7 + 3);
  for (SharedRegion* writer : {&p.daemon, &p.client}) {
    SharedRegion* reader = writer == &p.daemon ? &p.client : &p.daemon;
    for (std::size_t len = 0; len <= max; ++len) {
      const auto payload = bytes_of(pattern).first(len);
      const std::size_t split = len / 3;
      ASSERT_EQ(writer->producer().try_write(static_cast<std::uint16_t>(len & 0x7fff), 1,
                                             payload.first(split), payload.subspan(split)),
                Status::kWritten)
          << len;
      (void)writer->producer().publish();
      const auto got = read_all(reader->consumer());
      ASSERT_EQ(got.size(), 1u) << len;
      ASSERT_EQ(got[0].payload.size(), len);
      ASSERT_EQ(got[0].payload, pattern.substr(0, len)) << len;
    }
  }
}

TEST(ShmRing, RefusesWhatCanNeverBeWritten) {
  Pair p;
  auto& prod = p.daemon.producer();
  const std::string too_long(prod.max_payload() + 1, 'x');
  EXPECT_EQ(prod.try_write(1, 0, bytes_of(too_long)), Status::kInvalid);
  EXPECT_EQ(prod.try_write(1, 0, bytes_of(too_long).first(10), bytes_of(too_long).subspan(10)),
            Status::kInvalid);
  EXPECT_EQ(prod.try_write(kPaddingType, 0, {}), Status::kInvalid);
  EXPECT_EQ(prod.try_write(1, 0, bytes_of(too_long).first(prod.max_payload())), Status::kWritten);
}

TEST(ShmRing, DefaultRingHoldsAThousandMaximalMessages) {
  Pair p(SharedRegion::kDefaultRingBytes);
  const std::string msg(1536, 'm');
  int n = 0;
  while (p.daemon.producer().try_write(2, 0, bytes_of(msg)) == Status::kWritten) ++n;
  EXPECT_EQ(n, 1358);  // (2 MiB / 1544 bytes a record)
}

// ---- the region ------------------------------------------------------------------------

TEST(ShmRegion, CreateRejectsBadRingSizes) {
  EXPECT_THROW(SharedRegion::create("x", 0), Error);
  EXPECT_THROW(SharedRegion::create("x", 6000), Error);
  EXPECT_THROW(SharedRegion::create("x", 2048), Error);
  EXPECT_THROW(SharedRegion::create("x", SharedRegion::kMaxRingBytes * 2), Error);
  try {
    SharedRegion::create("x", 6000);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("6000"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("power of two"), std::string::npos) << e.hint();
  }
}

TEST(ShmRegion, LayoutAndSides) {
  Pair p(8192);
  EXPECT_EQ(p.daemon.side(), SharedRegion::Side::kDaemon);
  EXPECT_EQ(p.client.side(), SharedRegion::Side::kClient);
  EXPECT_EQ(p.client.ring_bytes(), 8192u);
  EXPECT_EQ(p.client.size_bytes(), 4096u + 2 * 8192u);
  EXPECT_EQ(std::memcmp(p.daemon.base(), "LOCABUS1", 8), 0);
}

TEST(ShmRegion, SealsForbidShrinkingGrowingAndResealing) {
  Pair p;
  const int fd = p.client.fd();  // the client holds the same file
  EXPECT_EQ(::ftruncate(fd, 4096), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::ftruncate(fd, 1 << 20), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::fallocate(fd, 0, 0, 1 << 20), -1) << "growing by fallocate is sealed too";
  // The daemon's mapping is intact: its rings still work.
  ASSERT_EQ(p.daemon.producer().try_write(1, 0, bytes_of("still here")), Status::kWritten);
  (void)p.daemon.producer().publish();
  EXPECT_EQ(read_all(p.client.consumer()).at(0).payload, "still here");
}

/// A memfd of `size` bytes with a copy of a valid region's header (edited by
/// `edit`) and the given seals.
UniqueFd forged_region(
    std::size_t size, int seals, void (*edit)(layout::RegionHeader&) = [](layout::RegionHeader&) {}) {
  const SharedRegion good = SharedRegion::create("good", 4096);
  layout::RegionHeader h;
  std::memcpy(&h, good.base(), sizeof h);
  edit(h);
  UniqueFd fd(::memfd_create("forged", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  EXPECT_TRUE(fd);
  EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
  EXPECT_EQ(::pwrite(fd.get(), &h, sizeof h, 0), static_cast<ssize_t>(sizeof h));
  if (seals != 0) {
    EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, seals), 0);
  }
  return fd;
}

constexpr int kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
constexpr std::size_t kGoodSize = 4096 + 2 * 4096;

std::string attach_error(UniqueFd fd) {
  try {
    SharedRegion::attach(std::move(fd));
  } catch (const Error& e) {
    return e.what();
  }
  return "(attached)";
}

TEST(ShmRegion, AttachAcceptsAForgedButCorrectRegion) {
  EXPECT_EQ(attach_error(forged_region(kGoodSize, kSeals)), "(attached)");
}

TEST(ShmRegion, AttachRefusesBadMagic) {
  EXPECT_NE(attach_error(forged_region(kGoodSize, kSeals, [](auto& h) { h.magic[7] = '2'; })).find("magic"),
            std::string::npos);
}

TEST(ShmRegion, AttachRefusesAnotherVersion) {
  EXPECT_NE(attach_error(forged_region(kGoodSize, kSeals, [](auto& h) { h.version = 2; })).find("version 2"),
            std::string::npos);
}

TEST(ShmRegion, AttachRefusesInconsistentSizes) {
  // File larger than the header says.
  EXPECT_NE(attach_error(forged_region(kGoodSize + 4096, kSeals)).find("inconsistent"), std::string::npos);
  // Header claims bigger rings than the file has.
  EXPECT_NE(attach_error(forged_region(kGoodSize, kSeals, [](auto& h) { h.ring_bytes = 8192; }))
                .find("inconsistent"),
            std::string::npos);
  // Not a power of two.
  EXPECT_NE(attach_error(forged_region(kGoodSize, kSeals, [](auto& h) { h.ring_bytes = 4095; }))
                .find("inconsistent"),
            std::string::npos);
  // Ring offsets elsewhere.
  EXPECT_NE(attach_error(forged_region(kGoodSize, kSeals, [](auto& h) { h.to_daemon_offset = 4096; }))
                .find("inconsistent"),
            std::string::npos);
  // Too small to be any region (would be read past its end).
  EXPECT_NE(attach_error(forged_region(100, kSeals)).find("size 100"), std::string::npos);
}

TEST(ShmRegion, AttachRefusesMissingSeals) {
  EXPECT_NE(attach_error(forged_region(kGoodSize, 0)).find("not sealed"), std::string::npos);
  EXPECT_NE(attach_error(forged_region(kGoodSize, F_SEAL_GROW | F_SEAL_SEAL)).find("not sealed"),
            std::string::npos);
  EXPECT_NE(attach_error(forged_region(kGoodSize, F_SEAL_SHRINK | F_SEAL_GROW)).find("not sealed"),
            std::string::npos);
}

TEST(ShmRegion, AttachRefusesWhatIsNotAMemfd) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd r(fds[0]), w(fds[1]);
  EXPECT_NE(attach_error(std::move(r)).find("not a memfd"), std::string::npos);
  EXPECT_NE(attach_error(UniqueFd()).find("fstat"), std::string::npos);
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  EXPECT_NE(attach_error(std::move(devnull)).find("not a memfd"), std::string::npos);
}

// ---- a hostile peer -------------------------------------------------------------------------

/// Targeted violations: each is detected by the daemon's consumer and is final.
struct Violation {
  const char* name;
  ProtocolError expected;
  void (*inflict)(SharedRegion& client);
};

layout::RingControl& to_daemon_control(SharedRegion& r) { return control(r, layout::kToDaemonControl); }
layout::RingControl& to_client_control(SharedRegion& r) { return control(r, layout::kToClientControl); }
RecordHeader& to_daemon_record(SharedRegion& r, std::size_t offset) {
  return *reinterpret_cast<RecordHeader*>(r.base() + layout::kHeaderBytes + r.ring_bytes() + offset);
}

const Violation kConsumerViolations[] = {
    {"misaligned index", ProtocolError::kMisalignedIndex,
     [](SharedRegion& c) { to_daemon_control(c).produced = 12; }},
    {"index beyond capacity", ProtocolError::kIndexOutOfRange,
     [](SharedRegion& c) { to_daemon_control(c).produced = 4096 + 8; }},
    {"index far ahead", ProtocolError::kIndexOutOfRange,
     [](SharedRegion& c) { to_daemon_control(c).produced = std::uint64_t{1} << 40; }},
    {"index behind", ProtocolError::kIndexWentBack,
     [](SharedRegion& c) { to_daemon_control(c).produced = ~std::uint64_t{7}; }},
    {"record too long", ProtocolError::kRecordTooLong,
     [](SharedRegion& c) {
       to_daemon_record(c, 0) = {4096 / 4, 1, 0};
       to_daemon_control(c).produced = 4096;
     }},
    {"record length 4 GB", ProtocolError::kRecordTooLong,
     [](SharedRegion& c) {
       to_daemon_record(c, 0) = {0xFFFFFFFFu, 1, 0};
       to_daemon_control(c).produced = 8;
     }},
    {"record past the published index", ProtocolError::kTruncatedRecord,
     [](SharedRegion& c) {
       to_daemon_record(c, 0) = {100, 1, 0};
       to_daemon_control(c).produced = 64;
     }},
    {"padding not to the end", ProtocolError::kBadPadding,
     [](SharedRegion& c) {
       to_daemon_record(c, 0) = {100, kPaddingType, 0};
       to_daemon_control(c).produced = 4096;
     }},
    {"padding past the published index", ProtocolError::kTruncatedRecord,
     [](SharedRegion& c) {
       to_daemon_record(c, 0) = {4096 - 8, kPaddingType, 0};
       to_daemon_control(c).produced = 8;
     }},
};

TEST(ShmHostile, EachConsumerSideViolationIsReportedAndFinal) {
  for (const auto& v : kConsumerViolations) {
    SCOPED_TRACE(v.name);
    Pair p;
    v.inflict(p.client);
    auto& cons = p.daemon.consumer();
    bool called = false;
    const auto r = cons.read(100, [&](auto, auto, auto) { called = true; });
    EXPECT_FALSE(r);
    EXPECT_EQ(r.error, v.expected) << describe(r.error);
    EXPECT_FALSE(called);
    // Final: repairing the shared memory does not revive the endpoint.
    to_daemon_control(p.client).produced = 0;
    const auto again = cons.read(100, [&](auto, auto, auto) { called = true; });
    EXPECT_EQ(again.error, v.expected);
    EXPECT_FALSE(cons.prepare_sleep());
    EXPECT_FALSE(describe(r.error).empty());
  }
}

TEST(ShmHostile, RecordCrossingTheEndIsReported) {
  Pair p;
  // Honest traffic to move the indices near the end, then a forged record there.
  auto& cprod = p.client.producer();
  const std::string rec(1000, 'r');
  for (int i = 0; i < 4; ++i) ASSERT_EQ(cprod.try_write(1, 0, bytes_of(rec)), Status::kWritten);
  (void)cprod.publish();
  ASSERT_EQ(read_all(p.daemon.consumer()).size(), 4u);  // consumed 4032
  to_daemon_record(p.client, 4032) = {100, 1, 0};
  to_daemon_control(p.client).produced = 4032 + 112;
  const auto r = p.daemon.consumer().read(10, [](auto, auto, auto) {});
  EXPECT_EQ(r.error, ProtocolError::kRecordWraps);
}

TEST(ShmHostile, ProducerSideViolationsAreReportedAndFinal) {
  struct Case {
    const char* name;
    ProtocolError expected;
    std::uint64_t consumed;
  };
  // The daemon fills the ring (36 records of 112 bytes and 64 bytes of
  // padding), publishes, and must then read the client's consumed index.
  const Case cases[] = {
      {"misaligned", ProtocolError::kMisalignedIndex, 4},
      {"beyond published", ProtocolError::kIndexOutOfRange, 36 * 112 + 64 + 8},
      {"far ahead", ProtocolError::kIndexOutOfRange, std::uint64_t{1} << 50},
      {"went back", ProtocolError::kIndexWentBack, ~std::uint64_t{7}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    Pair p;
    auto& prod = p.daemon.producer();
    const std::string rec(100, 'p');
    // Fill the ring so that the producer must look at the consumer's index.
    while (prod.try_write(1, 0, bytes_of(rec)) == Status::kWritten) {
    }
    (void)prod.publish();
    to_client_control(p.client).consumed = c.consumed;
    EXPECT_EQ(prod.try_write(1, 0, bytes_of(rec)), Status::kProtocolError);
    EXPECT_EQ(prod.error(), c.expected) << describe(prod.error());
    EXPECT_EQ(prod.try_write(1, 0, {}), Status::kProtocolError) << "final";
    EXPECT_FALSE(prod.prepare_sleep(0));
    EXPECT_EQ(prod.free_bytes(), 0u);
  }
}

TEST(ShmHostile, TheDaemonNeverReadsBackItsOwnIndices) {
  Pair p;
  // A client overwriting the daemon's own indices changes nothing for the daemon.
  to_client_control(p.client).produced = 12345;
  to_daemon_control(p.client).consumed = 999;
  std::memset(p.client.base(), 0xAB, sizeof(layout::RegionHeader));
  ASSERT_EQ(p.daemon.producer().try_write(1, 0, bytes_of("a")), Status::kWritten);
  (void)p.daemon.producer().publish();
  ASSERT_EQ(p.client.producer().try_write(1, 0, bytes_of("b")), Status::kWritten);
  (void)p.client.producer().publish();
  const auto got = read_all(p.daemon.consumer());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, "b");
  EXPECT_EQ(p.daemon.producer().error(), ProtocolError::kNone);
}

/// One random hostile session: an honest-looking client that also scribbles
/// random values into the indices, flags, record headers and anywhere else in
/// the region, while `victim` keeps using its endpoints. The victim must
/// never hand out a payload outside its ring, never hang (every call is
/// bounded), and once it reports an error it must keep reporting it.
struct HostileStats {
  int sessions_with_error = 0;
  int flag_only_sessions_with_error = 0;  // must stay 0: flags cannot break a ring
  std::uint64_t records_delivered = 0;
};

void hostile_session(std::uint32_t seed, bool daemon_is_victim, HostileStats& stats) {
  Pair p(4096);
  SharedRegion& victim = daemon_is_victim ? p.daemon : p.client;
  SharedRegion& attacker = daemon_is_victim ? p.client : p.daemon;
  std::mt19937_64 rng(seed);
  auto pick = [&](std::uint64_t n) { return n == 0 ? 0 : rng() % n; };
  const std::byte* ring_begin =
      victim.base() + layout::kHeaderBytes + (daemon_is_victim ? victim.ring_bytes() : 0);
  const std::byte* ring_end = ring_begin + victim.ring_bytes();
  const std::size_t attack_ring_offset = layout::kHeaderBytes + (daemon_is_victim ? victim.ring_bytes() : 0);
  const std::size_t attack_control = daemon_is_victim ? layout::kToDaemonControl : layout::kToClientControl;
  const std::size_t victim_out_control =
      daemon_is_victim ? layout::kToClientControl : layout::kToDaemonControl;
  std::array<std::byte, 1024> junk{};
  for (auto& b : junk) b = static_cast<std::byte>(rng());

  auto random_value = [&](std::uint64_t near) -> std::uint64_t {
    switch (pick(6)) {
      case 0: return rng();
      case 1: return near + 8 * (pick(1024) - 512);
      case 2: return near + pick(16);
      case 3: return near + 4096 * (pick(3) + 1);
      case 4: return near - 8;
      default: return pick(1 << 13);
    }
  };
  const bool flags_only = seed % 4 == 0;
  std::optional<ProtocolError> consumer_error, producer_error;
  for (int round = 0; round < 60; ++round) {
    auto& actrl = *reinterpret_cast<layout::RingControl*>(attacker.base() + attack_control);
    auto& octrl = *reinterpret_cast<layout::RingControl*>(attacker.base() + victim_out_control);
    // One seed in four only plays with the wakeup flags (besides honest
    // traffic): that may cost spurious wakeups, never an error.
    const std::uint64_t action = flags_only ? std::array{0, 1, 2, 6}[pick(4)] : pick(9);
    switch (action) {
      case 0:
      case 1: {  // honest writes
        const int n = static_cast<int>(pick(8));
        for (int i = 0; i < n; ++i) {
          (void)attacker.producer().try_write(static_cast<std::uint16_t>(pick(10)), 0,
                                              std::span(junk).first(pick(attacker.max_payload() + 1)));
        }
        (void)attacker.producer().publish();
        break;
      }
      case 2: {  // honest reads
        (void)attacker.consumer().read(pick(16), [](auto, auto, auto) {});
        break;
      }
      case 3: actrl.produced = random_value(actrl.produced); break;
      case 4: octrl.consumed = random_value(octrl.consumed); break;
      case 5: {  // a record header somewhere in the ring the victim reads
        auto& h = *reinterpret_cast<RecordHeader*>(attacker.base() + attack_ring_offset + 8 * pick(4096 / 8));
        const std::uint32_t lengths[] = {0,    1,    7,    8,           1016,
                                         1017, 4088, 4096, 0xFFFFFFF8u, static_cast<std::uint32_t>(rng())};
        h.length = lengths[pick(std::size(lengths))];
        h.type = pick(3) == 0 ? kPaddingType : static_cast<std::uint16_t>(rng());
        h.aux = static_cast<std::uint16_t>(rng());
        break;
      }
      case 6: {  // random flags
        actrl.consumer_waiting = static_cast<std::uint32_t>(rng());
        octrl.producer_waiting = static_cast<std::uint32_t>(rng());
        break;
      }
      case 7: {  // random bytes anywhere, including the header and the victim's own indices
        const std::size_t off = pick(attacker.size_bytes() - 64);
        std::memcpy(attacker.base() + off, junk.data() + pick(junk.size() - 64), 1 + pick(63));
        break;
      }
      default: break;
    }
    // The victim works.
    auto& cons = victim.consumer();
    const auto r = cons.read(pick(64), [&](std::uint16_t, std::uint16_t, std::span<const std::byte> payload) {
      // Inside the ring the victim reads, always.
      ASSERT_GE(payload.data(), ring_begin);
      ASSERT_LE(payload.data() + payload.size(), ring_end);
      ASSERT_LE(payload.size(), victim.max_payload());
      ++stats.records_delivered;
    });
    if (consumer_error) {
      ASSERT_EQ(r.error, *consumer_error) << "errors are final";
    }
    if (!r) consumer_error = r.error;
    (void)cons.empty();
    (void)cons.prepare_sleep();
    auto& prod = victim.producer();
    const int n = static_cast<int>(pick(6));
    for (int i = 0; i < n; ++i) {
      const auto st = prod.try_write(1, 2, std::span(junk).first(pick(victim.max_payload() + 1)));
      if (producer_error) {
        ASSERT_EQ(st, Status::kProtocolError);
      }
      if (st == Status::kProtocolError) producer_error = prod.error();
      ASSERT_NE(st, Status::kInvalid);
    }
    (void)prod.publish();
    (void)prod.prepare_sleep(pick(victim.max_payload()));
    ASSERT_LE(prod.free_bytes(), victim.ring_bytes());
  }
  if (consumer_error || producer_error) {
    ++stats.sessions_with_error;
    if (flags_only) ++stats.flag_only_sessions_with_error;
  }
}

TEST(ShmHostile, RandomScribblingNeverCrashesOrHangsTheDaemon) {
  HostileStats stats;
  constexpr std::uint32_t kSeeds = 3000;
  for (std::uint32_t seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    hostile_session(seed, /*daemon_is_victim=*/true, stats);
    if (HasFatalFailure()) return;
  }
  // Most sessions end with the client caught; scribbling only flags never does.
  EXPECT_GT(stats.sessions_with_error, static_cast<int>(kSeeds / 2));
  EXPECT_EQ(stats.flag_only_sessions_with_error, 0);
  EXPECT_GT(stats.records_delivered, 0u);
  std::printf("hostile client: %d of %u sessions caught, %llu records delivered\n", stats.sessions_with_error,
              kSeeds, static_cast<unsigned long long>(stats.records_delivered));
}

TEST(ShmHostile, TheClientSurvivesAGarbageDaemonToo) {
  HostileStats stats;
  for (std::uint32_t seed = 1; seed <= 1000; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    hostile_session(seed, /*daemon_is_victim=*/false, stats);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(stats.sessions_with_error, 0);
}

// ---- wakeups ----------------------------------------------------------------------------------

TEST(ShmWakeup, ProducerRingsOnlyAConsumerThatSaidItSleeps) {
  Pair p;
  auto& prod = p.daemon.producer();
  auto& cons = p.client.consumer();
  ASSERT_EQ(prod.try_write(1, 0, {}), Status::kWritten);
  EXPECT_FALSE(prod.publish()) << "consumer not waiting";
  EXPECT_FALSE(cons.prepare_sleep()) << "not empty: must not sleep";
  EXPECT_EQ(read_all(cons).size(), 1u);
  EXPECT_TRUE(cons.prepare_sleep());
  ASSERT_EQ(prod.try_write(1, 0, {}), Status::kWritten);
  EXPECT_TRUE(prod.publish()) << "consumer waits: ring its doorbell";
  ASSERT_EQ(prod.try_write(1, 0, {}), Status::kWritten);
  EXPECT_FALSE(prod.publish()) << "flag cleared: one ring per sleep";
}

TEST(ShmWakeup, ConsumerRingsOnlyAProducerThatSaidItSleeps) {
  Pair p;
  auto& prod = p.client.producer();
  auto& cons = p.daemon.consumer();
  const std::string rec(500, 'w');
  while (prod.try_write(1, 0, bytes_of(rec)) == Status::kWritten) {
  }
  EXPECT_FALSE(prod.prepare_sleep(rec.size())) << "unpublished records: publish first";
  (void)prod.publish();
  EXPECT_TRUE(prod.prepare_sleep(rec.size()));
  auto r = cons.read(1, [](auto, auto, auto) {});
  EXPECT_TRUE(r.wake_producer);
  r = cons.read(1, [](auto, auto, auto) {});
  EXPECT_FALSE(r.wake_producer) << "flag cleared";
  EXPECT_FALSE(prod.prepare_sleep(rec.size())) << "space now: retry, do not sleep";
  EXPECT_EQ(prod.try_write(1, 0, bytes_of(rec)), Status::kWritten);
}

/// The core of the wakeup protocol is a store-buffering litmus test: the
/// sleeper stores its flag and then loads the index, the waker stores the
/// index and then loads the flag. Without the seq_cst fences, x86 may satisfy
/// both loads before both stores and each side misses the other: a lost
/// wakeup. These tests run the two halves of one handoff at the same moment
/// on two threads, many times with varying skew, and check after each round
/// that a side which decided to sleep was woken. (With the fences replaced by
/// compiler-only fences, they fail within a fraction of a second on x86.)
class SpinBarrier {
 public:
  void arrive_and_wait() {
    const std::uint64_t target = (arrivals_.fetch_add(1, std::memory_order_acq_rel) / 2 + 1) * 2;
    for (int spins = 0; arrivals_.load(std::memory_order_acquire) < target; ++spins) {
      if (spins > 4096) std::this_thread::yield();  // the other thread is not running: let it
    }
  }

 private:
  std::atomic<std::uint64_t> arrivals_{0};
};

void skew(std::uint32_t n) {
  for (std::uint32_t i = 0; i < n; ++i) asm volatile("" ::: "memory");
}

/// Runs `rounds` handoffs (at most `budget`): both threads call `setup`-free
/// halves at once; returns the rounds where the sleeper slept and the waker
/// did not wake it.
template <typename Sleeper, typename Waker, typename Reset>
std::uint64_t litmus(std::uint64_t rounds, std::chrono::seconds budget, Sleeper sleeper, Waker waker,
                     Reset reset, std::uint64_t* ran) {
  SpinBarrier start, done;
  std::atomic<bool> stop{false};
  bool woke = false;
  std::thread other([&] {
    std::mt19937 rng(7);
    for (;;) {
      start.arrive_and_wait();
      if (stop.load(std::memory_order_relaxed)) return;
      skew(rng() % 1024);
      woke = waker();
      done.arrive_and_wait();
    }
  });
  std::mt19937 rng(11);
  std::uint64_t lost = 0, i = 0;
  const auto deadline = std::chrono::steady_clock::now() + budget;
  for (; i < rounds && (i % 1024 != 0 || std::chrono::steady_clock::now() < deadline); ++i) {
    start.arrive_and_wait();
    skew(rng() % 1024);
    const bool slept = sleeper();
    done.arrive_and_wait();
    if (slept && !woke) ++lost;
    reset();
  }
  stop = true;
  start.arrive_and_wait();
  other.join();
  *ran = i;
  return lost;
}

TEST(ShmWakeup, NoLostWakeupWhenTheConsumerSleepsAsTheProducerPublishes) {
  Pair p;
  auto& prod = p.daemon.producer();
  auto& cons = p.client.consumer();
  std::uint64_t ran = 0;
  const std::uint64_t lost = litmus(
      2'000'000, std::chrono::seconds(3), [&] { return cons.prepare_sleep(); },
      [&] {
        EXPECT_EQ(prod.try_write(1, 0, {}), Status::kWritten);
        return prod.publish();
      },
      [&] { ASSERT_EQ(read_all(cons).size(), 1u); }, &ran);
  EXPECT_EQ(lost, 0u) << "of " << ran << " rounds";
  EXPECT_GT(ran, 1000u);
  std::printf("%llu handoffs, %llu lost\n", static_cast<unsigned long long>(ran),
              static_cast<unsigned long long>(lost));
}

TEST(ShmWakeup, NoLostWakeupWhenTheProducerSleepsAsTheConsumerFreesSpace) {
  Pair p;
  auto& prod = p.daemon.producer();
  auto& cons = p.client.consumer();
  const std::string rec(1016, 'f');  // 1024 bytes: four fill the ring exactly
  for (int i = 0; i < 4; ++i) ASSERT_EQ(prod.try_write(1, 0, bytes_of(rec)), Status::kWritten);
  (void)prod.publish();
  std::uint64_t ran = 0;
  const std::uint64_t lost = litmus(
      2'000'000, std::chrono::seconds(3), [&] { return prod.prepare_sleep(rec.size()); },
      [&] { return cons.read(1, [](auto, auto, auto) {}).wake_producer; },
      [&] {
        ASSERT_EQ(prod.try_write(1, 0, bytes_of(rec)), Status::kWritten);  // full again
        (void)prod.publish();
      },
      &ran);
  EXPECT_EQ(lost, 0u) << "of " << ran << " rounds";
  EXPECT_GT(ran, 1000u);
  std::printf("%llu handoffs, %llu lost\n", static_cast<unsigned long long>(ran),
              static_cast<unsigned long long>(lost));
}

TEST(ShmDoorbell, RingWakesThePeerAndDrainConsumes) {
  auto [mine, theirs] = Doorbell::create_pair();
  auto readable = [](const Doorbell& d) {
    pollfd pfd{d.fd(), POLLIN, 0};
    return ::poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN) != 0;
  };
  EXPECT_FALSE(readable(theirs));
  EXPECT_TRUE(mine.ring());
  EXPECT_TRUE(mine.ring());
  EXPECT_TRUE(readable(theirs));
  EXPECT_FALSE(readable(mine));
  EXPECT_EQ(theirs.drain(), 2u);
  EXPECT_FALSE(readable(theirs));
  EXPECT_EQ(theirs.drain(), 0u);
}

TEST(ShmDoorbell, AHostilePeerCannotMakeItBlock) {
  auto [mine, theirs] = Doorbell::create_pair();
  // The peer clears O_NONBLOCK on its end and never reads: our rings still return.
  ASSERT_EQ(::fcntl(theirs.fd(), F_SETFL, 0), 0);
  ASSERT_EQ(::fcntl(mine.fd(), F_SETFL, 0), 0) << "even if ours loses O_NONBLOCK";
  for (int i = 0; i < 100000; ++i) ASSERT_TRUE(mine.ring());
  // The queue is bounded (the rest were refused with EAGAIN: rings pending anyway).
  const std::size_t pending = theirs.drain();
  EXPECT_GT(pending, 0u);
  EXPECT_LE(pending, 1024u) << "drain() is bounded";
  // A peer ringing without pause cannot keep drain() looping either.
  std::atomic<bool> stop{false};
  std::thread ringer([&, &bell = mine] {
    while (!stop.load(std::memory_order_relaxed)) bell.ring();
  });
  for (int i = 0; i < 100; ++i) EXPECT_LE(theirs.drain(), 1024u);
  stop = true;
  ringer.join();
  // Nothing pending for us: drain returns at once even on a blocking socket.
  EXPECT_EQ(mine.drain(), 0u);
}

TEST(ShmDoorbell, PeerGoneIsVisible) {
  auto [mine, theirs] = Doorbell::create_pair();
  { Doorbell gone = std::move(theirs); }
  EXPECT_FALSE(mine.ring());
  pollfd pfd{mine.fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 0), 1);
  EXPECT_NE(pfd.revents & POLLHUP, 0);
}

TEST(ShmDoorbell, AdoptChecksTheSocket) {
  auto [mine, theirs] = Doorbell::create_pair();
  EXPECT_NO_THROW(Doorbell::adopt(theirs.release()));
  EXPECT_THROW(Doorbell::adopt(UniqueFd(::eventfd(0, EFD_CLOEXEC))), Error);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd keep(sv[1]);
  EXPECT_THROW(Doorbell::adopt(UniqueFd(sv[0])), Error);
  EXPECT_THROW(Doorbell::adopt(UniqueFd()), Error);
}

// ---- stress: the blocking protocol between two threads and two processes ----------------------

/// What both sides of the stress test agree on: record i has a size, a type
/// and contents derived from (seed, i).
class Traffic {
 public:
  Traffic(std::uint64_t seed, std::size_t max_payload) : max_(max_payload) {
    std::mt19937_64 rng(seed);
    pattern_.resize(1 << 16);
    for (auto& b : pattern_) b = static_cast<std::byte>(rng());
  }
  /// Mostly messages up to 1.5 KB, sometimes up to the maximum, sometimes tiny.
  std::size_t size(std::uint64_t i) const {
    const std::uint64_t h = mix(i);
    switch (h % 16) {
      case 0: return (h >> 8) % (max_ + 1);
      case 1: return (h >> 8) % 9;
      default: return (h >> 8) % 1501;
    }
  }
  std::uint16_t type(std::uint64_t i) const { return static_cast<std::uint16_t>(mix(i) >> 48) % 1000; }
  /// Bytes after the 8-byte sequence number.
  std::span<const std::byte> body(std::uint64_t i, std::size_t len) const {
    return std::span(pattern_).subspan((mix(i) >> 20) % (pattern_.size() - max_), len);
  }

 private:
  static std::uint64_t mix(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  }
  std::size_t max_;
  std::vector<std::byte> pattern_;
};

struct PeerStats {
  std::string failure;  // empty: success
  std::uint64_t sleeps = 0, rings = 0, full = 0;
};

/// One side: sends `count` records on its producer and receives `count` on its
/// consumer, sleeping on its doorbell (poll) whenever neither can progress.
/// A lost wakeup shows as a poll that times out: that is a failure.
PeerStats run_peer(SharedRegion& region, const Doorbell& bell, const Traffic& out, const Traffic& in,
                   std::uint64_t count) {
  PeerStats s;
  auto& prod = region.producer();
  auto& cons = region.consumer();
  std::uint64_t sent = 0, received = 0;
  bool peer_closed = false;  // its doorbell hung up: what it published before is still to be read
  auto fail = [&](std::string what) {
    s.failure = what + " (sent " + std::to_string(sent) + ", received " + std::to_string(received) + ")";
    return s;
  };
  while (sent < count || received < count) {
    bool progress = false;
    while (sent < count) {
      const std::size_t len = out.size(sent);
      const std::uint64_t seq = sent;
      const auto seq_bytes = std::as_bytes(std::span(&seq, 1));
      const auto st = len >= 8 ? prod.try_write(out.type(sent), 0, seq_bytes, out.body(sent, len - 8))
                               : prod.try_write(out.type(sent), 0, out.body(sent, len));
      if (st == Status::kWritten) {
        ++sent;
        progress = true;
        if (sent % 64 == 0 && prod.publish() && (++s.rings, !bell.ring())) return fail("peer gone");
        continue;
      }
      if (st != Status::kFull) return fail("try_write: " + std::string(describe(prod.error())));
      ++s.full;
      break;
    }
    if (prod.publish()) {
      ++s.rings;
      if (!bell.ring()) return fail("peer gone");
    }
    std::string bad;
    const auto r = cons.read(256, [&](std::uint16_t type, std::uint16_t aux, std::span<const std::byte> p) {
      const std::size_t len = in.size(received);
      if (!bad.empty()) return;
      if (type != in.type(received) || aux != 0 || p.size() != len) {
        bad = "record " + std::to_string(received) + ": type/aux/size " + std::to_string(type) + "/" +
              std::to_string(aux) + "/" + std::to_string(p.size()) + ", expected size " + std::to_string(len);
      } else if (len >= 8) {
        std::uint64_t seq;
        std::memcpy(&seq, p.data(), 8);
        if (seq != received || std::memcmp(p.data() + 8, in.body(received, len - 8).data(), len - 8) != 0) {
          bad = "record " + std::to_string(received) + ": wrong contents or order (seq " +
                std::to_string(seq) + ")";
        }
      } else if (std::memcmp(p.data(), in.body(received, len).data(), len) != 0) {
        bad = "record " + std::to_string(received) + ": wrong contents";
      }
      ++received;
    });
    if (!r) return fail("read: " + std::string(describe(r.error)));
    if (!bad.empty()) return fail(bad);
    if (r.wake_producer) {
      ++s.rings;
      if (!bell.ring()) return fail("peer gone");
    }
    if (r.records > 0) progress = true;
    if (progress) continue;
    // Neither direction can move: announce the sleep, check again, sleep.
    bool sleep = true;
    if (sent < count) sleep = prod.prepare_sleep(out.size(sent));
    if (sleep && received < count) sleep = cons.prepare_sleep();
    if (!sleep) continue;
    // A peer that finished rings and closes: POLLHUP may come with its last
    // records. Only a peer that closed with nothing more to read is a failure.
    if (peer_closed) return fail("the peer closed its doorbell");
    ++s.sleeps;
    pollfd pfd{bell.fd(), POLLIN, 0};
    const int n = ::poll(&pfd, 1, 30'000);
    if (n == 0) return fail("lost wakeup: nothing rang the doorbell for 30 s");
    if (n < 0 && errno != EINTR) return fail("poll: " + std::string(std::strerror(errno)));
    if (n > 0 && (pfd.revents & (POLLHUP | POLLERR)) != 0) peer_closed = true;
    bell.drain();
  }
  return s;
}

constexpr std::uint64_t kStressRecords = 1'000'000;

TEST(ShmStress, AMillionRecordsEachWayBetweenTwoThreads) {
  Pair p(65536);                         // small rings: many wraps, full rings and sleeps
  auto bells = Doorbell::create_pair();  // (not a structured binding: lambdas capture it)
  const Doorbell& daemon_bell = bells.first;
  const Doorbell& client_bell = bells.second;
  const Traffic to_daemon(1, p.daemon.max_payload()), to_client(2, p.daemon.max_payload());
  PeerStats client_stats;
  const auto start = std::chrono::steady_clock::now();
  std::thread client(
      [&] { client_stats = run_peer(p.client, client_bell, to_daemon, to_client, kStressRecords); });
  const PeerStats daemon_stats = run_peer(p.daemon, daemon_bell, to_client, to_daemon, kStressRecords);
  client.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(daemon_stats.failure, "");
  EXPECT_EQ(client_stats.failure, "");
  std::printf(
      "2 x %llu records in %.2f s; daemon slept %llu times, rang %llu, full %llu; client slept %llu, "
      "rang %llu, full %llu\n",
      static_cast<unsigned long long>(kStressRecords), secs,
      static_cast<unsigned long long>(daemon_stats.sleeps),
      static_cast<unsigned long long>(daemon_stats.rings), static_cast<unsigned long long>(daemon_stats.full),
      static_cast<unsigned long long>(client_stats.sleeps),
      static_cast<unsigned long long>(client_stats.rings),
      static_cast<unsigned long long>(client_stats.full));
  EXPECT_GT(daemon_stats.full + client_stats.full, 0u)
      << "the rings never filled: the test did not test much";
}

TEST(ShmStress, AMillionRecordsEachWayBetweenTwoProcesses) {
  SharedRegion daemon = SharedRegion::create("fork", 65536);
  auto [daemon_bell, client_bell] = Doorbell::create_pair();
  const Traffic to_daemon(3, daemon.max_payload()), to_client(4, daemon.max_payload());
  UniqueFd region_fd = daemon.duplicate_fd();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0) << std::strerror(errno);
  if (pid == 0) {
    // The client process: its own mapping of the memfd, its end of the doorbell.
    ::alarm(600);
    int code = 0;
    try {
      SharedRegion client = SharedRegion::attach(std::move(region_fd));
      const PeerStats s = run_peer(client, client_bell, to_daemon, to_client, kStressRecords);
      if (!s.failure.empty()) {
        std::fprintf(stderr, "client: %s\n", s.failure.c_str());
        code = 1;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "client: %s\n", e.what());
      code = 2;
    }
    std::fflush(stderr);
    ::_exit(code);
  }
  region_fd.reset();
  client_bell = Doorbell();  // the child has its copy
  const PeerStats s = run_peer(daemon, daemon_bell, to_client, to_daemon, kStressRecords);
  EXPECT_EQ(s.failure, "");
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "client process died: status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::printf("across processes: daemon slept %llu times, rang %llu\n",
              static_cast<unsigned long long>(s.sleeps), static_cast<unsigned long long>(s.rings));
}

}  // namespace
}  // namespace locabus::api
