// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The local API's data path: a sealed memfd shared by locabusd and one client,
// holding two single-producer/single-consumer rings of variable-length
// records, plus a doorbell to wake a sleeping peer without a system call per
// message. docs/LOCAL_API_SHM.md explains the layout, the wakeup protocol and
// why the daemon never trusts what it reads from the region.
//
//   daemon                                         client (liblocabus)
//   SharedRegion::create()  -- memfd over the control socket -->  SharedRegion::attach()
//   producer()  == to_client ring  ------------------------------>  consumer()
//   consumer()  <------------------------------  to_daemon ring  ==  producer()
//   Doorbell (own end)      <------- socketpair ------->      Doorbell (peer end)
//
// Threading: each endpoint (RingProducer, RingConsumer) belongs to one thread
// at a time; the two endpoints of a ring run concurrently in different threads
// or processes. Nothing here allocates or makes system calls on the data path
// except Doorbell::ring()/drain().
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include "common/unique_fd.hpp"

namespace locabus::api {

// ---- records ----------------------------------------------------------------

/// Precedes every record in a ring, 8-byte aligned; the payload follows and is
/// padded to a multiple of 8. A record never wraps around the end of a ring.
struct RecordHeader {
  std::uint32_t length;  // payload bytes, without the header and padding
  std::uint16_t type;    // kPaddingType is reserved; see api/control.hpp for the others
  std::uint16_t aux;     // meaning depends on type (e.g. a node id)
};
static_assert(sizeof(RecordHeader) == 8 && std::is_trivially_copyable_v<RecordHeader>);

/// Type of the filler record a producer writes when the next record does not
/// fit before the end of the ring; it reaches exactly to the end. Consumers
/// skip it; producers may not write it themselves.
inline constexpr std::uint16_t kPaddingType = 0xFFFF;
inline constexpr std::size_t kRecordAlign = 8;

/// Bytes a record with `payload` bytes occupies in a ring.
constexpr std::uint64_t record_bytes(std::uint64_t payload) noexcept {
  return sizeof(RecordHeader) + ((payload + kRecordAlign - 1) & ~std::uint64_t{kRecordAlign - 1});
}

/// What a peer did wrong. Any value but kNone is final: the endpoint that saw
/// it refuses all further work (every call reports the same error), and the
/// daemon should drop the client.
enum class ProtocolError : std::uint8_t {
  kNone = 0,
  kMisalignedIndex,  // a shared index is not a multiple of 8
  kIndexOutOfRange,  // the peer's index is ahead by more than the capacity, or beyond ours
  kIndexWentBack,    // the peer's index decreased
  kTruncatedRecord,  // a record extends past the bytes the producer published
  kRecordTooLong,    // length above max_payload()
  kRecordWraps,      // a record crosses the end of the ring
  kBadPadding,       // a padding record that does not end exactly at the end of the ring
};

/// A sentence for logs: "client published a record longer than ...".
std::string_view describe(ProtocolError e) noexcept;

// ---- shared layout (visible for tests; not an API for users) ----------------

namespace layout {
inline constexpr char kMagic[8] = {'L', 'O', 'C', 'A', 'B', 'U', 'S', '1'};
inline constexpr std::uint32_t kVersion = 1;
inline constexpr std::size_t kHeaderBytes = 4096;  // the header page
/// Spacing of the shared indices and flags: two 64-byte lines, so that the
/// adjacent-line prefetcher does not make them share a line either.
inline constexpr std::size_t kLine = 128;

/// At offset 0 of the region; written once by the daemon before the client
/// can see the region; read (and validated) once by the client in attach().
struct RegionHeader {
  char magic[8];
  std::uint32_t version;
  std::uint32_t header_bytes;      // kHeaderBytes
  std::uint64_t ring_bytes;        // capacity of each ring, a power of two
  std::uint64_t region_bytes;      // header_bytes + 2 * ring_bytes, the memfd's size
  std::uint64_t to_client_offset;  // data of the ring the daemon writes
  std::uint64_t to_daemon_offset;  // data of the ring the client writes
};

/// One ring's shared indices and wakeup flags, each on its own line. The
/// indices are byte counters that only grow (wrapping at 2^64); a ring offset
/// is `index & (ring_bytes - 1)`.
struct RingControl {
  alignas(kLine) std::uint64_t produced;          // written by the producer: bytes published
  alignas(kLine) std::uint64_t consumed;          // written by the consumer: bytes released
  alignas(kLine) std::uint32_t consumer_waiting;  // set by the consumer before it sleeps
  alignas(kLine) std::uint32_t producer_waiting;  // set by the producer before it sleeps
};
static_assert(sizeof(RingControl) == 4 * kLine);

inline constexpr std::size_t kToClientControl = 512;  // offsets in the header page
inline constexpr std::size_t kToDaemonControl = kToClientControl + sizeof(RingControl);
static_assert(sizeof(RegionHeader) <= kToClientControl);
static_assert(kToDaemonControl + sizeof(RingControl) <= kHeaderBytes);
}  // namespace layout

// ---- ring endpoints -----------------------------------------------------------

namespace detail {
/// Geometry of one ring as this process knows it (never re-read from the
/// shared memory, which the peer may overwrite).
struct RingGeometry {
  layout::RingControl* control = nullptr;
  std::byte* data = nullptr;
  std::uint64_t capacity = 0;  // a power of two
  std::uint64_t max_payload = 0;
};

template <typename T>
inline std::atomic_ref<T> shared(T& v) noexcept {
  return std::atomic_ref<T>(v);
}
}  // namespace detail

/// Writes records into one ring. Records become visible to the consumer only
/// at publish(), so a batch costs one release store and one fence.
///
/// The consumer's index is read from shared memory, validated (it may only move
/// forward, and never past what was published) and then kept in a local copy;
/// a violation makes every call report ProtocolError, never a crash or a hang.
class RingProducer {
 public:
  enum class Status : std::uint8_t {
    kWritten,        // staged; visible after publish()
    kFull,           // not enough space now (publish(), then wait or retry)
    kInvalid,        // can never be written: longer than max_payload(), or kPaddingType
    kProtocolError,  // the consumer broke the protocol; see error()
  };

  RingProducer() = default;
  explicit RingProducer(detail::RingGeometry g) noexcept : g_(g) {}

  /// Stages one record whose payload is `a` followed by `b` (two spans, so a
  /// fixed header and a message body need no copy in between). When the
  /// record does not fit before the end of the ring, a padding record fills
  /// the rest and the record goes to offset 0; if only the padding fits, it is
  /// staged and kFull returned.
  [[nodiscard]] Status try_write(std::uint16_t type, std::uint16_t aux, std::span<const std::byte> a,
                                 std::span<const std::byte> b = {}) noexcept {
    if (error_ != ProtocolError::kNone) return Status::kProtocolError;
    const std::uint64_t length = a.size() + b.size();
    if (type == kPaddingType || length > g_.max_payload) return Status::kInvalid;
    const std::uint64_t need = record_bytes(length);
    std::uint64_t offset = staged_ & (g_.capacity - 1);
    const std::uint64_t contiguous = g_.capacity - offset;
    const std::uint64_t padding = need > contiguous ? contiguous : 0;
    if (!has_space(padding + need)) {
      if (error_ != ProtocolError::kNone) return Status::kProtocolError;
      if (padding != 0 && has_space(padding)) stage_padding(offset, padding);
      return error_ != ProtocolError::kNone ? Status::kProtocolError : Status::kFull;
    }
    if (padding != 0) {
      stage_padding(offset, padding);
      offset = 0;
    }
    std::byte* at = g_.data + offset;
    store_header(at, RecordHeader{static_cast<std::uint32_t>(length), type, aux});
    if (!a.empty()) std::memcpy(at + sizeof(RecordHeader), a.data(), a.size());
    if (!b.empty()) std::memcpy(at + sizeof(RecordHeader) + a.size(), b.data(), b.size());
    staged_ += need;
    return Status::kWritten;
  }

  /// Makes the staged records visible. Returns true when the consumer said it
  /// is going to sleep: the caller must then ring the consumer's doorbell
  /// (the flag has been cleared, so exactly one caller rings).
  [[nodiscard]] bool publish() noexcept {
    if (staged_ == published_) return false;
    published_ = staged_;
    detail::shared(g_.control->produced).store(published_, std::memory_order_release);
    // Pairs with the fence in RingConsumer::prepare_sleep(): either we see its
    // flag, or it sees our index.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    auto waiting = detail::shared(g_.control->consumer_waiting);
    if (waiting.load(std::memory_order_relaxed) == 0) return false;
    return waiting.exchange(0, std::memory_order_relaxed) != 0;
  }

  /// Call after try_write() returned kFull and after publish() (and ringing,
  /// if it said so). Announces that this producer waits for space, then checks
  /// again: true means "sleep on your doorbell now, the consumer will ring it
  /// when it frees space"; false means "retry now" (space appeared, records
  /// are still unpublished, or the consumer broke the protocol — try_write()
  /// will say so).
  [[nodiscard]] bool prepare_sleep(std::size_t payload_bytes) noexcept {
    if (error_ != ProtocolError::kNone || staged_ != published_) return false;
    auto waiting = detail::shared(g_.control->producer_waiting);
    waiting.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    refresh_consumed();
    if (error_ != ProtocolError::kNone || can_progress(payload_bytes)) {
      waiting.store(0, std::memory_order_relaxed);
      return false;
    }
    return true;
  }

  /// Free bytes as of the consumer's latest index (staged records count as used).
  std::size_t free_bytes() noexcept {
    refresh_consumed();
    return error_ != ProtocolError::kNone ? 0 : g_.capacity - (staged_ - consumed_);
  }
  /// Records staged but not yet published?
  bool has_unpublished() const noexcept { return staged_ != published_; }
  std::size_t capacity() const noexcept { return g_.capacity; }
  std::size_t max_payload() const noexcept { return g_.max_payload; }
  ProtocolError error() const noexcept { return error_; }

 private:
  bool has_space(std::uint64_t bytes) noexcept {
    if (g_.capacity - (staged_ - consumed_) >= bytes) return true;
    refresh_consumed();
    return error_ == ProtocolError::kNone && g_.capacity - (staged_ - consumed_) >= bytes;
  }
  bool can_progress(std::uint64_t payload) const noexcept {
    const std::uint64_t need = record_bytes(payload);
    const std::uint64_t contiguous = g_.capacity - (staged_ & (g_.capacity - 1));
    const std::uint64_t progress = need > contiguous ? contiguous : need;  // padding is progress
    return g_.capacity - (staged_ - consumed_) >= progress;
  }
  void refresh_consumed() noexcept {
    if (error_ != ProtocolError::kNone) return;
    // Read once; acquire: the consumer is done with the bytes before it.
    const std::uint64_t c = detail::shared(g_.control->consumed).load(std::memory_order_acquire);
    if (c % kRecordAlign != 0) {
      error_ = ProtocolError::kMisalignedIndex;
    } else if (c - consumed_ > published_ - consumed_) {
      // Behind our last copy (wraps to a huge value) or beyond what we published.
      error_ = c - consumed_ > (std::uint64_t{1} << 63) ? ProtocolError::kIndexWentBack
                                                        : ProtocolError::kIndexOutOfRange;
    } else {
      consumed_ = c;
    }
  }
  void stage_padding(std::uint64_t offset, std::uint64_t bytes) noexcept {
    store_header(g_.data + offset,
                 RecordHeader{static_cast<std::uint32_t>(bytes - sizeof(RecordHeader)), kPaddingType, 0});
    staged_ += bytes;
  }
  static void store_header(std::byte* at, RecordHeader h) noexcept {
    detail::shared(*reinterpret_cast<std::uint64_t*>(at))
        .store(std::bit_cast<std::uint64_t>(h), std::memory_order_relaxed);
  }

  detail::RingGeometry g_;
  std::uint64_t staged_ = 0;     // where the next record goes (ours, never read back)
  std::uint64_t published_ = 0;  // what we last stored into control->produced
  std::uint64_t consumed_ = 0;   // the consumer's index, last validated value
  ProtocolError error_ = ProtocolError::kNone;
};

/// One record as a consumer sees it. `payload` points into the ring.
struct RecordView {
  std::uint16_t type = 0;
  std::uint16_t aux = 0;
  std::span<const std::byte> payload;
};

/// Reads records from one ring. The producer's index and every record header
/// are read from shared memory exactly once, into locals, and validated before
/// use; a violation ends the read with ProtocolError (final), never a read
/// outside the ring, a crash or an endless loop.
///
/// Two ways to read: read() hands a batch to a callback and releases its
/// space; peek() / consume() / release() let the caller keep a record in the
/// ring while it uses it (no copy) and give space back when it chooses.
class RingConsumer {
 public:
  struct [[nodiscard]] ReadResult {
    std::size_t records = 0;     // records handed to the callback (padding not counted)
    bool wake_producer = false;  // ring the producer's doorbell: it waits for space
    ProtocolError error = ProtocolError::kNone;
    explicit operator bool() const noexcept { return error == ProtocolError::kNone; }
  };

  RingConsumer() = default;
  explicit RingConsumer(detail::RingGeometry g) noexcept : g_(g) {}

  /// Hands up to `max` records to `fn(type, aux, payload)`, then releases
  /// their space (and any consumed before) in one store. `fn` may return
  /// void, or bool: false leaves that record in the ring (it comes again
  /// next time) and stops.
  ///
  /// `payload` points into the shared memory: the peer can change those
  /// bytes at any time (a buggy or hostile client, not a correct one), so
  /// copy before validating what you parse from it, or parse it so that
  /// changing bytes cannot hurt. It is valid until read() returns.
  /// If `fn` throws, the records before count as read (their space is
  /// released by the next read() or release()) and that one comes again.
  template <typename F>
  ReadResult read(std::size_t max, F&& fn) {
    ReadResult r;
    while (r.records < max) {
      const RecordView* rec = peek();
      if (rec == nullptr) break;
      if constexpr (std::is_same_v<
                        std::invoke_result_t<F&, std::uint16_t, std::uint16_t, std::span<const std::byte>>,
                        bool>) {
        if (!fn(rec->type, rec->aux, rec->payload)) break;
      } else {
        fn(rec->type, rec->aux, rec->payload);
      }
      consume();
      ++r.records;
    }
    r.error = error_;
    if (read_ != consumed_) r.wake_producer = release();
    return r;
  }

  /// The next record, left in the ring: nullptr when nothing more is
  /// published, or when the producer broke the protocol (see error()).
  /// Calls before consume() return the same record without reading the
  /// ring again. Its payload (same caveat as read()'s) stays valid, and the
  /// producer cannot reuse its space, until it is consume()d and then
  /// release()d: a caller may lend it out that long.
  const RecordView* peek() noexcept {
    if (peeked_bytes_ != 0) return &peeked_;
    while (error_ == ProtocolError::kNone) {
      if (read_ == produced_) {
        refresh_produced();
        if (read_ == produced_ || error_ != ProtocolError::kNone) break;
      }
      const std::uint64_t offset = read_ & (g_.capacity - 1);
      const std::uint64_t published = produced_ - read_;     // >= 8: both are multiples of 8
      const RecordHeader h = load_header(g_.data + offset);  // one read
      const std::uint64_t bytes = record_bytes(h.length);
      if (h.type == kPaddingType) {
        if (bytes != g_.capacity - offset) {
          error_ = ProtocolError::kBadPadding;
        } else if (bytes > published) {
          error_ = ProtocolError::kTruncatedRecord;
        } else {
          read_ += bytes;  // padding is consumed at once
        }
        continue;
      }
      if (h.length > g_.max_payload) {
        error_ = ProtocolError::kRecordTooLong;
      } else if (bytes > g_.capacity - offset) {
        error_ = ProtocolError::kRecordWraps;
      } else if (bytes > published) {
        error_ = ProtocolError::kTruncatedRecord;
      } else {
        peeked_ = RecordView{h.type, h.aux, {g_.data + offset + sizeof(RecordHeader), h.length}};
        peeked_bytes_ = bytes;
        return &peeked_;
      }
    }
    return nullptr;
  }

  /// Moves past the record peek() returned (which must have returned one).
  /// Its space stays reserved, and its payload valid, until release().
  void consume() noexcept {
    read_ += peeked_bytes_;
    peeked_bytes_ = 0;
  }

  /// Gives the space of every consumed record back to the producer, in one
  /// store. Returns true when the producer waits for space: the caller must
  /// then ring its doorbell (exactly one caller sees true).
  [[nodiscard]] bool release() noexcept {
    if (read_ == consumed_) return false;
    consumed_ = read_;
    detail::shared(g_.control->consumed).store(read_, std::memory_order_release);
    // Pairs with the fence in RingProducer::prepare_sleep().
    std::atomic_thread_fence(std::memory_order_seq_cst);
    auto waiting = detail::shared(g_.control->producer_waiting);
    if (waiting.load(std::memory_order_relaxed) == 0) return false;
    return waiting.exchange(0, std::memory_order_relaxed) != 0;
  }

  /// Bytes consumed but not released.
  std::size_t unreleased() const noexcept { return read_ - consumed_; }
  /// Everything this consumer has seen published is consumed (no shared
  /// read: more may have been published since).
  bool caught_up() const noexcept { return read_ == produced_; }
  /// The producer said it waits for space (a hint, read without ordering:
  /// a consumer that holds space should release() it soon).
  bool producer_waiting() const noexcept {
    return detail::shared(g_.control->producer_waiting).load(std::memory_order_relaxed) != 0;
  }

  /// True when nothing is published beyond what this consumer consumed
  /// (checks the shared index; a garbage index counts as "not empty" so that
  /// the next read() reports it).
  bool empty() noexcept {
    if (produced_ != read_) return false;
    refresh_produced();
    return produced_ == read_ && error_ == ProtocolError::kNone;
  }

  /// Call when read() or peek() found nothing, after release(). Announces
  /// that this consumer is about to sleep, then checks again: true means
  /// "sleep on your doorbell now, the producer will ring it when it
  /// publishes"; false means "read again" (or release() first: a consumer
  /// holding space may not sleep, the producer might be waiting for it).
  [[nodiscard]] bool prepare_sleep() noexcept {
    if (error_ != ProtocolError::kNone || produced_ != read_ || read_ != consumed_) return false;
    auto waiting = detail::shared(g_.control->consumer_waiting);
    waiting.store(1, std::memory_order_relaxed);
    // Pairs with the fence in RingProducer::publish().
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!empty()) {
      waiting.store(0, std::memory_order_relaxed);
      return false;
    }
    return true;
  }

  std::size_t capacity() const noexcept { return g_.capacity; }
  std::size_t max_payload() const noexcept { return g_.max_payload; }
  ProtocolError error() const noexcept { return error_; }

 private:
  void refresh_produced() noexcept {
    if (error_ != ProtocolError::kNone) return;
    // Read once; acquire: the records before it are written.
    const std::uint64_t p = detail::shared(g_.control->produced).load(std::memory_order_acquire);
    if (p % kRecordAlign != 0) {
      error_ = ProtocolError::kMisalignedIndex;
    } else if (p - consumed_ > g_.capacity) {
      error_ = p - consumed_ > (std::uint64_t{1} << 63) ? ProtocolError::kIndexWentBack
                                                        : ProtocolError::kIndexOutOfRange;
    } else if (p - consumed_ < produced_ - consumed_) {
      error_ = ProtocolError::kIndexWentBack;
    } else {
      produced_ = p;
    }
  }
  static RecordHeader load_header(std::byte* at) noexcept {
    return std::bit_cast<RecordHeader>(
        detail::shared(*reinterpret_cast<std::uint64_t*>(at)).load(std::memory_order_relaxed));
  }

  detail::RingGeometry g_;
  std::uint64_t consumed_ = 0;  // ours: what we released (never read back)
  std::uint64_t read_ = 0;      // ours: what we consumed, consumed_ <= read_ <= produced_
  std::uint64_t produced_ = 0;  // the producer's index, last validated value
  RecordView peeked_;           // the record at read_, when peeked_bytes_ != 0
  std::uint64_t peeked_bytes_ = 0;
  ProtocolError error_ = ProtocolError::kNone;
};

// ---- the region -----------------------------------------------------------------

/// An mmap'ed range; unmapped on destruction. Move-only.
class Mapping {
 public:
  Mapping() noexcept = default;
  Mapping(void* addr, std::size_t size) noexcept : addr_(addr), size_(size) {}
  Mapping(Mapping&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  std::byte* data() const noexcept { return static_cast<std::byte*>(addr_); }
  std::size_t size() const noexcept { return size_; }
  void reset() noexcept;

 private:
  void* addr_ = nullptr;
  std::size_t size_ = 0;
};

/// The shared memory of one client connection: a header page and two rings.
/// The daemon create()s it and passes fd() to the client (SCM_RIGHTS), which
/// attach()es. Each side sees its own two endpoints: producer() writes the
/// ring towards the peer, consumer() reads the ring from the peer.
class SharedRegion {
 public:
  enum class Side : std::uint8_t { kDaemon, kClient };

  static constexpr std::size_t kDefaultRingBytes = std::size_t{2} << 20;
  static constexpr std::size_t kMinRingBytes = 4096;
  static constexpr std::size_t kMaxRingBytes = std::size_t{1} << 30;

  /// Largest payload of a ring of `ring_bytes`: a quarter of the ring minus a
  /// record header, so that a maximal record never waits for a ring drained to
  /// nearly empty. The default ring holds 1,358 records of 1,536 bytes.
  static constexpr std::size_t max_payload_for(std::size_t ring_bytes) noexcept {
    return ring_bytes / 4 - sizeof(RecordHeader);
  }

  /// Daemon side: a new sealed memfd ("locabus:<name>") of one header page and
  /// two rings of `ring_bytes` each (a power of two in [kMinRingBytes,
  /// kMaxRingBytes]), mapped and initialised. Throws Error.
  static SharedRegion create(std::string_view name, std::size_t ring_bytes = kDefaultRingBytes);

  /// Client side: maps a region received from the daemon after checking that
  /// it is a memfd sealed against shrinking, growing and further sealing, and
  /// that its header (magic, version, sizes) matches its size. Throws Error.
  static SharedRegion attach(UniqueFd fd);

  SharedRegion(SharedRegion&&) noexcept = default;
  SharedRegion& operator=(SharedRegion&&) noexcept = default;
  ~SharedRegion() = default;

  /// The memfd, to pass to the client.
  int fd() const noexcept { return fd_.get(); }
  /// A close-on-exec duplicate of fd(). Throws Error.
  UniqueFd duplicate_fd() const;

  Side side() const noexcept { return side_; }
  std::size_t ring_bytes() const noexcept { return ring_bytes_; }
  std::size_t size_bytes() const noexcept { return map_.size(); }
  std::size_t max_payload() const noexcept { return max_payload_for(ring_bytes_); }

  /// The ring this side writes: to_client for the daemon, to_daemon for the client.
  /// References stay valid while this region lives (not across a move).
  RingProducer& producer() noexcept { return producer_; }
  /// The ring this side reads: to_daemon for the daemon, to_client for the client.
  RingConsumer& consumer() noexcept { return consumer_; }

  /// The mapping, for tests that play a hostile peer.
  std::byte* base() const noexcept { return map_.data(); }

 private:
  SharedRegion(UniqueFd fd, Mapping map, Side side, std::size_t ring_bytes) noexcept;

  UniqueFd fd_;
  Mapping map_;
  Side side_ = Side::kDaemon;
  std::size_t ring_bytes_ = 0;
  RingProducer producer_;
  RingConsumer consumer_;
};

// ---- wakeups --------------------------------------------------------------------

/// One side's end of a wakeup channel between the daemon and a client: a Unix
/// stream socketpair. fd() becomes readable when the peer ring()s; drain()
/// consumes the pending rings. Each side sleeps on its own end only.
///
/// Not an eventfd: an eventfd shared with a client is one open file
/// description, so the client could clear its O_NONBLOCK and saturate the
/// counter, and the daemon's next write() would block forever. A socketpair
/// gives each side its own description, and every call here passes
/// MSG_DONTWAIT, so no peer can make ring() or drain() block. When the peer
/// closes its end, fd() reports POLLHUP (handle it: a level-triggered poll
/// returns at once from then on). docs/LOCAL_API_SHM.md has the numbers.
class Doorbell {
 public:
  /// Both ends: keep .first, send .second's fd() to the peer. Throws Error.
  static std::pair<Doorbell, Doorbell> create_pair();
  /// An end received from the peer; checks that it is a Unix stream socket.
  /// Throws Error.
  static Doorbell adopt(UniqueFd fd);

  Doorbell() noexcept = default;

  /// Wakes the peer. Never blocks: when the peer's queue is full it has
  /// wakeups pending anyway. Returns false when the peer has gone.
  bool ring() const noexcept;
  /// Consumes pending wakeups (at most 1024 per call, in one recv() unless
  /// more are queued, so a peer that rings without pause cannot keep us here);
  /// returns how many.
  std::size_t drain() const noexcept;
  int fd() const noexcept { return fd_.get(); }
  UniqueFd release() noexcept { return UniqueFd(fd_.release()); }

 private:
  explicit Doorbell(UniqueFd fd) noexcept : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace locabus::api
