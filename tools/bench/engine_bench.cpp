// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// CPU cost of the protocol engine per delivered message, sender side and
// receiver side separately, plus the wire codec for context. Two engines
// (nodes 1 and 2) talk through an in-process loopback transport (two frame
// queues, bytes copied, no impairments), on a ManualClock that moves 1 µs
// per message so that timers behave as on a fast link. This measures the
// engine alone: no NIC, no kernel, no AF_XDP rings. docs/PERFORMANCE.md
// explains the numbers.
#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <locabus/wire.hpp>

#include "engine/buffers.hpp"
#include "engine/clock.hpp"
#include "engine/config.hpp"
#include "engine/engine.hpp"
#include "engine/transport.hpp"

namespace {

using locabus::FunctionRef;
using locabus::engine::Engine;
using locabus::engine::EngineConfig;
using locabus::engine::FrameBytes;
using locabus::engine::ManualClock;
using locabus::engine::Message;
using locabus::engine::Nanos;
using locabus::engine::Transport;
namespace wire = locabus::wire;

using Stopwatch = std::chrono::steady_clock;

constexpr std::size_t kMessageSize = 1024;
constexpr std::uint16_t kNodeA = 1;
constexpr std::uint16_t kNodeB = 2;
constexpr std::uint8_t kProto = LOCABUS_P_KCCM;
constexpr Nanos kTimePerMessage = std::chrono::microseconds(1);

// ---- loopback transport -------------------------------------------------------

/// Frames in flight in one direction: a ring of preallocated frame buffers,
/// so that the transport costs one memcpy per frame and never allocates
/// once warm (the engine's cost is what is measured, not the allocator's).
class FrameQueue {
 public:
  FrameQueue() : bufs_(1024), lens_(1024) {}

  std::size_t size() const noexcept { return count_; }
  bool empty() const noexcept { return count_ == 0; }

  void push(FrameBytes frame) {
    if (count_ == bufs_.size()) grow();
    const std::size_t i = (head_ + count_) & (bufs_.size() - 1);
    std::memcpy(bufs_[i].data(), frame.data(), frame.size());
    lens_[i] = static_cast<std::uint16_t>(frame.size());
    ++count_;
  }
  FrameBytes front() const noexcept { return FrameBytes(bufs_[head_].data(), lens_[head_]); }
  void pop() noexcept {
    head_ = (head_ + 1) & (bufs_.size() - 1);
    --count_;
  }

 private:
  void grow() {
    std::vector<std::array<std::byte, wire::kMaxFrame>> bigger(bufs_.size() * 2);
    std::vector<std::uint16_t> lens(bigger.size());
    for (std::size_t k = 0; k < count_; ++k) {
      const std::size_t i = (head_ + k) & (bufs_.size() - 1);
      bigger[k] = bufs_[i];
      lens[k] = lens_[i];
    }
    bufs_ = std::move(bigger);
    lens_ = std::move(lens);
    head_ = 0;
  }

  std::vector<std::array<std::byte, wire::kMaxFrame>> bufs_;  // size: a power of two
  std::vector<std::uint16_t> lens_;
  std::size_t head_ = 0;
  std::size_t count_ = 0;
};

/// One end of a point-to-point link: sends into the other end's queue when
/// the destination MAC is the other end's or broadcast, receives from its
/// own queue.
class LoopbackEnd final : public Transport {
 public:
  LoopbackEnd(wire::MacAddress mac, FrameQueue& rx, FrameQueue& tx, const wire::MacAddress& peer_mac)
      : mac_(mac), rx_(rx), tx_(tx), peer_mac_(peer_mac) {}

  wire::MacAddress mac() const noexcept override { return mac_; }

  std::size_t send(std::span<const FrameBytes> frames) override {
    for (const FrameBytes f : frames) {
      if (f.size() < wire::kEthHeaderLen || f.size() > wire::kMaxFrame) continue;
      wire::MacAddress dst;
      std::memcpy(dst.bytes.data(), f.data(), dst.bytes.size());
      if (dst == peer_mac_ || dst == wire::MacAddress::broadcast()) tx_.push(f);
    }
    return frames.size();
  }

  std::size_t receive(std::size_t max, FunctionRef<void(FrameBytes)> on_frame) override {
    std::size_t n = 0;
    while (n < max && !rx_.empty()) {
      on_frame(rx_.front());  // the engine sends only into the other queue
      rx_.pop();
      ++n;
    }
    return n;
  }

 private:
  wire::MacAddress mac_;
  FrameQueue& rx_;
  FrameQueue& tx_;
  wire::MacAddress peer_mac_;
};

// ---- two connected engines ------------------------------------------------------

class EnginePair {
 public:
  explicit EnginePair(const EngineConfig& base = {}) {
    EngineConfig ca = base;
    ca.node_id = kNodeA;
    EngineConfig cb = base;
    cb.node_id = kNodeB;
    a_ = std::make_unique<Engine>(ca, end_a_, clock_, 1);
    b_ = std::make_unique<Engine>(cb, end_b_, clock_, 2);
    payload_.resize(kMessageSize);
    for (std::size_t i = 0; i < payload_.size(); ++i) payload_[i] = static_cast<std::byte>(i * 7);
  }

  Engine& a() noexcept { return *a_; }
  Engine& b() noexcept { return *b_; }
  ManualClock& clock() noexcept { return clock_; }
  FrameQueue& to_a() noexcept { return to_a_; }
  FrameQueue& to_b() noexcept { return to_b_; }
  std::span<const std::byte> payload() const noexcept { return payload_; }

  /// Discovery, then one message from A to B and back to idle. Returns an
  /// error message, or nothing when A and B are connected.
  std::optional<std::string> connect() {
    using locabus::engine::ConnState;
    using locabus::engine::MemberState;
    auto alive = [](const Engine& e, std::uint16_t node) {
      const auto p = e.peer(node);
      return p && p->member == MemberState::alive;
    };
    // DISCOVER goes out within 50 ms of start, heartbeats within 500 ms.
    for (int ms = 0; ms < 5000 && !(alive(*a_, kNodeB) && alive(*b_, kNodeA)); ++ms) {
      clock_.advance_by(std::chrono::milliseconds(1));
      pump();
    }
    if (!alive(*a_, kNodeB) || !alive(*b_, kNodeA)) return "the engines did not discover each other";
    if (!a_->send(kNodeB, kProto, payload_)) return "the first send failed";
    std::size_t got = 0;
    for (int i = 0; i < 1000 && got == 0; ++i) {
      clock_.advance_by(kTimePerMessage);
      pump();
      got += b_->receive(16, [](const Message&) {});
    }
    if (got != 1) return "the first message did not arrive";
    pump();
    const auto pa = a_->peer(kNodeB);
    const auto pb = b_->peer(kNodeA);
    if (!pa || pa->conn != ConnState::established || !pb || pb->conn != ConnState::established) {
      return "the connection is not established";
    }
    return std::nullopt;
  }

  /// Runs both engines until neither has anything to do.
  void pump() {
    for (int round = 0; round < 100'000; ++round) {
      int work = a_->do_work();
      work += b_->do_work();
      if (work == 0 && to_a_.empty() && to_b_.empty()) return;
    }
  }

 private:
  static constexpr wire::MacAddress kMacA{{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}};
  static constexpr wire::MacAddress kMacB{{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}};

  ManualClock clock_;
  FrameQueue to_a_;
  FrameQueue to_b_;
  LoopbackEnd end_a_{kMacA, to_a_, to_b_, kMacB};
  LoopbackEnd end_b_{kMacB, to_b_, to_a_, kMacA};
  std::unique_ptr<Engine> a_;
  std::unique_ptr<Engine> b_;
  std::vector<std::byte> payload_;
};

/// What each engine benchmark measures: the calls of one side, or both.
enum class Side { sender, receiver, both };

/// Sums payload bytes the application sees, so nothing is optimized away.
struct Sink {
  std::size_t messages = 0;
  std::uint64_t check = 0;
  void operator()(const Message& m) {
    ++messages;
    check += m.payload.size() + static_cast<std::uint8_t>(m.payload[m.payload.size() / 2]);
  }
};

/// One iteration = `batch` messages of 1 KB from A to B, all delivered to
/// B's application and acknowledged to A:
///   1. A: send() x batch, do_work()        (frames into B's queue)
///   2. B: do_work() + receive() until idle (deliveries, ACKs into A's queue)
///   3. A: do_work() until its queue is empty (ACKs free A's send queue)
/// `side` says which steps are timed (manual time): sender = 1 and 3,
/// receiver = 2, both = 1 to 3. The untimed steps run exactly the same.
void engine_benchmark(benchmark::State& state, Side side) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  EnginePair pair;
  if (auto err = pair.connect()) {
    state.SkipWithError(err->c_str());
    return;
  }
  Engine& a = pair.a();
  Engine& b = pair.b();
  const auto payload = pair.payload();
  Sink sink;
  const bool time_sender = side != Side::receiver;
  const bool time_receiver = side != Side::sender;
  const auto before_a = a.peer(kNodeB)->counters;
  std::chrono::nanoseconds timed{0};
  std::size_t sent = 0;

  const std::uint64_t frames_before = a.stats().tx_frames + b.stats().tx_frames;
  bool refused = false;

  for (auto _ : state) {
    std::chrono::nanoseconds it{0};
    // 1. sender: queue and transmit
    auto t0 = Stopwatch::now();
    std::size_t accepted = 0;
    for (std::size_t i = 0; i < batch; ++i) accepted += a.send(kNodeB, kProto, payload) ? 1 : 0;
    a.do_work();
    auto t1 = Stopwatch::now();
    if (time_sender) it += t1 - t0;
    sent += accepted;
    if (accepted != batch) {
      refused = true;
      state.SkipWithError("send() refused a message: the window or the send queue is stuck");
      break;
    }

    // 2. receiver: take the frames, deliver, acknowledge
    t0 = Stopwatch::now();
    while (!pair.to_b().empty() || b.receivable() > 0) {
      b.do_work();
      b.receive(std::numeric_limits<std::size_t>::max(), sink);
    }
    t1 = Stopwatch::now();
    if (time_receiver) it += t1 - t0;

    // 3. sender: the ACKs
    t0 = Stopwatch::now();
    while (!pair.to_a().empty()) a.do_work();
    t1 = Stopwatch::now();
    if (time_sender) it += t1 - t0;

    timed += it;
    state.SetIterationTime(std::chrono::duration<double>(it).count());
    pair.clock().advance_by(kTimePerMessage * static_cast<std::int64_t>(batch));
  }

  if (refused) return;
  // Everything sent must have been delivered, without retransmissions (the
  // loopback loses nothing), or the numbers would measure something else.
  pair.pump();
  b.receive(std::numeric_limits<std::size_t>::max(), sink);
  const auto after_a = a.peer(kNodeB)->counters;
  if (sink.messages != sent) {
    state.SkipWithError(
        ("delivered " + std::to_string(sink.messages) + " of " + std::to_string(sent)).c_str());
    return;
  }
  const auto items = static_cast<std::int64_t>(sent);
  state.SetItemsProcessed(items);
  state.SetBytesProcessed(items * static_cast<std::int64_t>(kMessageSize));
  state.counters["ns_per_msg"] =
      benchmark::Counter(static_cast<double>(timed.count()) / static_cast<double>(sent));
  const std::uint64_t frames = a.stats().tx_frames + b.stats().tx_frames - frames_before;
  state.counters["frames_per_msg"] =
      benchmark::Counter(static_cast<double>(frames) / static_cast<double>(sent));
  state.counters["retransmits"] =
      benchmark::Counter(static_cast<double>(after_a.retransmits - before_a.retransmits));
  benchmark::DoNotOptimize(sink.check);
}

void BM_EngineSender(benchmark::State& state) { engine_benchmark(state, Side::sender); }
void BM_EngineReceiver(benchmark::State& state) { engine_benchmark(state, Side::receiver); }
void BM_EngineBoth(benchmark::State& state) { engine_benchmark(state, Side::both); }

BENCHMARK(BM_EngineSender)->Arg(1)->Arg(16)->Arg(256)->UseManualTime();
BENCHMARK(BM_EngineReceiver)->Arg(1)->Arg(16)->Arg(256)->UseManualTime();
BENCHMARK(BM_EngineBoth)->Arg(1)->Arg(16)->Arg(256)->UseManualTime();

// ---- the parts, for context ---------------------------------------------------------

struct FrameFixture {
  std::vector<std::byte> payload = std::vector<std::byte>(kMessageSize, std::byte{0x5a});
  std::array<std::byte, wire::kMaxFrame> frame{};
  wire::MacAddress dst{{0x02, 0, 0, 0, 0, 2}};
  wire::MacAddress src{{0x02, 0, 0, 0, 0, 1}};
  wire::Header hdr;
  std::size_t len = 0;

  FrameFixture() {
    for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<std::byte>(i * 13);
    hdr.set_type(wire::PacketType::data).set_proto(wire::Protocol::kccm).set_node_to(2).set_node_from(1);
    hdr.set_seq(100).set_ack(200).set_window(1024);
    len = wire::encode_frame(frame, dst, src, hdr, payload);
  }
};

void set_rates(benchmark::State& state) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(kMessageSize));
}

/// Ethernet + Locabus header, payload copy, checksum.
void BM_WireEncodeFrame(benchmark::State& state) {
  FrameFixture f;
  for (auto _ : state) {
    f.hdr.set_seq(static_cast<std::uint16_t>(f.hdr.seq() + 1));
    benchmark::DoNotOptimize(wire::encode_frame(f.frame, f.dst, f.src, f.hdr, f.payload));
    benchmark::ClobberMemory();
  }
  set_rates(state);
}
BENCHMARK(BM_WireEncodeFrame);

/// Length checks, checksum verification, header parse (no copy).
void BM_WireDecodeFrame(benchmark::State& state) {
  FrameFixture f;
  if (!wire::decode_frame(std::span(f.frame).first(f.len))) {
    state.SkipWithError("the fixture frame does not decode");
    return;
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(f.frame.data());
    const auto r = wire::decode_frame(std::span(f.frame).first(f.len));
    benchmark::DoNotOptimize(r);
  }
  set_rates(state);
}
BENCHMARK(BM_WireDecodeFrame);

/// encode_frame + decode_frame of one 1 KB frame: the codec's share of a
/// message's trip.
void BM_WireEncodeDecode(benchmark::State& state) {
  FrameFixture f;
  for (auto _ : state) {
    f.hdr.set_seq(static_cast<std::uint16_t>(f.hdr.seq() + 1));
    const std::size_t n = wire::encode_frame(f.frame, f.dst, f.src, f.hdr, f.payload);
    const auto r = wire::decode_frame(std::span(f.frame).first(n));
    benchmark::DoNotOptimize(r);
  }
  set_rates(state);
}
BENCHMARK(BM_WireEncodeDecode);

/// The RFC 1071 checksum alone over header + 1 KB.
void BM_WireChecksum(benchmark::State& state) {
  FrameFixture f;
  const auto packet = std::span(f.frame).subspan(wire::kEthHeaderLen, wire::kHeaderLen + kMessageSize);
  for (auto _ : state) {
    benchmark::DoNotOptimize(f.frame.data());
    benchmark::DoNotOptimize(wire::checksum(packet));
  }
  set_rates(state);
}
BENCHMARK(BM_WireChecksum);

/// A plain 1 KB memcpy: the unit every copy of a message costs.
void BM_Memcpy1K(benchmark::State& state) {
  std::vector<std::byte> from(kMessageSize, std::byte{1});
  std::vector<std::byte> to(kMessageSize);
  for (auto _ : state) {
    benchmark::DoNotOptimize(from.data());
    std::memcpy(to.data(), from.data(), kMessageSize);
    benchmark::ClobberMemory();
  }
  set_rates(state);
}
BENCHMARK(BM_Memcpy1K);

/// MessageRing push + pop of 1 KB into warm slots (the engine's send and
/// receive queues).
void BM_MessageRingPushPop(benchmark::State& state) {
  locabus::engine::MessageRing ring(2048);
  std::vector<std::byte> payload(kMessageSize, std::byte{7});
  for (int i = 0; i < 2048; ++i) ring.push(kProto, payload);  // warm every slot
  ring.clear();
  for (auto _ : state) {
    ring.push(kProto, payload);
    benchmark::DoNotOptimize(ring.at(0).data.data());
    ring.pop_front();
  }
  set_rates(state);
}
BENCHMARK(BM_MessageRingPushPop);

}  // namespace

BENCHMARK_MAIN();
