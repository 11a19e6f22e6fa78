// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "sim/sim_network.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <iterator>
#include <limits>
#include <stdexcept>

namespace locabus::sim {
namespace {

constexpr std::uint64_t kFnvOffset = 14695981039346656037ull;
constexpr std::uint64_t kFnvPrime = 1099511628211ull;

std::uint64_t fnv_bytes(std::uint64_t h, std::span<const std::byte> bytes) noexcept {
  for (std::byte b : bytes) {
    h ^= static_cast<std::uint8_t>(b);
    h *= kFnvPrime;
  }
  return h;
}

// Little-endian byte by byte, so the digest does not depend on the host.
std::uint64_t fnv_u64(std::uint64_t h, std::uint64_t v, int bytes) noexcept {
  for (int i = 0; i < bytes; ++i) {
    h ^= (v >> (8 * i)) & 0xff;
    h *= kFnvPrime;
  }
  return h;
}

std::uint64_t mac_key(const wire::MacAddress& mac) noexcept {
  std::uint64_t k = 0;
  for (std::uint8_t b : mac.bytes) k = (k << 8) | b;
  return k;
}

std::uint64_t link_key(std::uint32_t from, std::uint32_t to) noexcept {
  return (std::uint64_t{from} << 32) | to;
}

void validate(const LinkParams& p) {
  for (double v : {p.loss, p.duplicate, p.corrupt, p.reorder})
    if (!(v >= 0.0 && v <= 1.0)) throw std::invalid_argument("LinkParams: probabilities must be in [0, 1]");
  if (p.delay < engine::Nanos{0} || p.jitter < engine::Nanos{0} || p.reorder_delay < engine::Nanos{0})
    throw std::invalid_argument("LinkParams: delays must not be negative");
}

// Bytes [first, end) of the frame that a corruption may touch: the Locabus
// header and the len bytes it claims, clamped to the frame; the whole frame
// when it is too short to hold a header.
std::pair<std::size_t, std::size_t> corruptible_region(std::span<const std::byte> f) noexcept {
  if (f.size() < wire::kMinFrame) return {0, f.size()};
  const std::size_t len =
      std::max<std::size_t>(wire::Header::read(f.subspan(wire::kEthHeaderLen)).len(), wire::kHeaderLen);
  return {wire::kEthHeaderLen, std::min(f.size(), wire::kEthHeaderLen + len)};
}

std::string_view kind_name(EventKind k, DropReason r) noexcept {
  switch (k) {
    case EventKind::send: return "send";
    case EventKind::refuse: return "refuse";
    case EventKind::duplicate: return "duplicate";
    case EventKind::corrupt: return "corrupt";
    case EventKind::reorder: return "reorder";
    case EventKind::deliver: return "deliver";
    case EventKind::drop: break;
  }
  switch (r) {
    case DropReason::loss: return "drop:loss";
    case DropReason::partition: return "drop:partition";
    case DropReason::port_down: return "drop:down";
    case DropReason::unknown_dst: return "drop:unknown";
    case DropReason::overflow: return "drop:overflow";
    case DropReason::none: break;
  }
  return "drop";
}

std::string port_name(std::uint32_t p) {
  return p == SimNetwork::kNoPort ? std::string("-") : std::to_string(p);
}

std::string node_name(std::uint16_t n) {
  return n == wire::kBroadcast ? std::string("*") : std::to_string(n);
}

}  // namespace

struct SimNetwork::PortState {
  PortState(SimNetwork& net, Port id, wire::MacAddress mac) : transport(SimTransport::Key{}, net, id, mac) {}

  SimTransport transport;
  bool up = true;
  std::deque<FramePtr> rx;
  std::optional<std::size_t> tx_budget;
  std::size_t tx_used = 0;
  std::uint32_t group = 0;  // meaningful while partitioned_
  double egress_loss = 0;   // dropped before the fan-out: every receiver misses it
  // set_ingress_limit: the bottleneck's service time, queue bound, and the
  // departure times of the copies in it (ascending).
  std::optional<engine::Nanos> ingress_per_frame;
  std::size_t ingress_limit = 0;
  std::deque<engine::Nanos> ingress;
  std::size_t ingress_peak = 0;
};

namespace {
constexpr std::uint32_t kIsolated = 0xFFFF'FFFF;
}

// ---- SimTransport -----------------------------------------------------------

std::size_t SimTransport::send(std::span<const engine::FrameBytes> frames) {
  return net_.send_from(port_, frames);
}

std::size_t SimTransport::receive(std::size_t max, FunctionRef<void(engine::FrameBytes)> on_frame) {
  return net_.receive_on(port_, max, on_frame);
}

bool SimTransport::consume(engine::FrameBytes frame) {
  if (!consume_acks_) return false;
  const wire::DecodeResult r = wire::decode_frame(frame);
  if (!r || r->header.type() != wire::PacketType::ack || r->header.len() != wire::kHeaderLen) return false;
  const std::uint16_t from = r->header.node_from();
  if (!tracked_.count(from)) return false;  // untracked: the engine sees it (as XDP does)
  const locabus_conn_pub pub = published(from);
  AckRecord& rec = acks_[from];
  const locabus_ack_verdict v = locabus_ack_decide(&pub, rec.valid, rec.ack, r->header.ack());
  ++verdicts_.at(v);
  if (v != LOCABUS_ACK_CONSUME) return false;
  rec = AckRecord{r->header.ack(), r->header.window(), true, true};
  return true;
}

void SimTransport::publish_conn(std::uint16_t node, const locabus_conn_pub& pub) {
  if (tracked_.count(node)) published_[node] = pub;
}

std::size_t SimTransport::poll_acks(
    FunctionRef<void(std::uint16_t node, std::uint16_t ack, std::uint16_t window)> on_ack) {
  std::size_t n = 0;
  for (auto& [node, rec] : acks_) {
    if (!rec.changed || !tracked_.count(node)) continue;
    rec.changed = false;
    on_ack(node, rec.ack, rec.window);
    ++n;
  }
  return n;
}

void SimTransport::track_peer(std::uint16_t node) {
  ++counters_.track_calls;
  tracked_.insert(node);
  // As the fast path does: a new connection starts a new record, unpublished.
  acks_.erase(node);
  published_.erase(node);
}

void SimTransport::forget_peer(std::uint16_t node) {
  ++counters_.forget_calls;
  tracked_.erase(node);
  acks_.erase(node);
  published_.erase(node);
}

void SimTransport::counters(CounterGroups& out) const {
  // Named as the XDP program's counters of the same verdicts (xdp_maps.h).
  static constexpr CounterField kVerdicts[] = {
      {"ack_consumed", "pure ACKs from tracked peers consumed (the ACK rule's verdict)",
       CounterKind::counter},
      {"ack_pass_unpublished", "tracked peers' pure ACKs passed: no connection state published",
       CounterKind::counter},
      {"ack_pass_all", "tracked peers' pure ACKs passed: the engine asked for all", CounterKind::counter},
      {"ack_pass_behind", "tracked peers' pure ACKs passed: at or behind the known ACK",
       CounterKind::counter},
      {"ack_pass_range", "tracked peers' pure ACKs passed: outside the published range",
       CounterKind::counter},
  };
  static_assert(std::size(kVerdicts) == std::tuple_size_v<decltype(verdicts_)>);
  CounterGroup& g = out.emplace_back("transport", "a port of the simulated network");
  g.add(counters_);
  g.add(kVerdicts, verdicts_);
  g.add({"tracked", "peers tracked now (track_peer minus forget_peer)", CounterKind::gauge}, tracked_.size());
  g.info.emplace_back("mode", "simulated");
}

// ---- SimNetwork: setup ------------------------------------------------------

SimNetwork::SimNetwork(std::uint64_t seed) : rng_(seed), digest_(kFnvOffset) {}

SimNetwork::~SimNetwork() = default;

SimNetwork::Port SimNetwork::add_port(wire::MacAddress mac) {
  const auto id = static_cast<Port>(ports_.size());
  if (id == kNoPort) throw std::length_error("SimNetwork: too many ports");
  ports_.push_back(std::make_unique<PortState>(*this, id, mac));
  ports_.back()->group = kIsolated;
  ports_by_mac_[mac_key(mac)].push_back(id);
  return id;
}

void SimNetwork::set_egress_loss(Port port, double p) {
  if (!(p >= 0 && p <= 1)) throw std::invalid_argument("SimNetwork: egress loss must be in [0, 1]");
  port_state(port).egress_loss = p;
}

SimNetwork::PortState& SimNetwork::port_state(Port port) {
  if (port >= ports_.size()) throw std::out_of_range(fmt::format("SimNetwork: no port {}", port));
  return *ports_[port];
}

const SimNetwork::PortState& SimNetwork::port_state(Port port) const {
  if (port >= ports_.size()) throw std::out_of_range(fmt::format("SimNetwork: no port {}", port));
  return *ports_[port];
}

SimTransport& SimNetwork::transport(Port port) { return port_state(port).transport; }
const SimTransport& SimNetwork::transport(Port port) const { return port_state(port).transport; }

void SimNetwork::set_default_link(const LinkParams& params) {
  validate(params);
  default_link_ = params;
}

void SimNetwork::set_link(Port from, Port to, const LinkParams& params) {
  port_state(from);
  port_state(to);
  validate(params);
  links_[link_key(from, to)] = params;
}

LinkParams SimNetwork::link(Port from, Port to) const {
  port_state(from);
  port_state(to);
  return link_ref(from, to);
}

const LinkParams& SimNetwork::link_ref(Port from, Port to) const {
  if (links_.empty()) return default_link_;
  const auto it = links_.find(link_key(from, to));
  return it == links_.end() ? default_link_ : it->second;
}

void SimNetwork::partition(const std::vector<std::vector<Port>>& groups) {
  std::vector<std::uint32_t> group_of(ports_.size(), kIsolated);
  for (std::size_t g = 0; g < groups.size(); ++g) {
    for (Port p : groups[g]) {
      port_state(p);
      if (group_of[p] != kIsolated)
        throw std::invalid_argument(fmt::format("SimNetwork::partition: port {} is in two groups", p));
      group_of[p] = static_cast<std::uint32_t>(g);
    }
  }
  for (std::size_t p = 0; p < ports_.size(); ++p) ports_[p]->group = group_of[p];
  partitioned_ = true;
}

bool SimNetwork::blocked(Port from, Port to) const noexcept {
  if (!partitioned_) return false;
  const std::uint32_t g = ports_[from]->group;
  return g == kIsolated || g != ports_[to]->group;
}

void SimNetwork::set_up(Port port, bool up) {
  PortState& p = port_state(port);
  p.up = up;
  if (!up) {
    p.rx.clear();
    p.transport.tracked_.clear();
    p.transport.acks_.clear();
    p.transport.published_.clear();
  }
}

bool SimNetwork::is_up(Port port) const { return port_state(port).up; }

void SimNetwork::set_tx_budget(Port port, std::optional<std::size_t> frames_per_step) {
  PortState& p = port_state(port);
  p.tx_budget = frames_per_step;
  p.tx_used = 0;
}

void SimNetwork::reset_tx_budgets() noexcept {
  for (auto& p : ports_) p->tx_used = 0;
}

// ---- randomness ---------------------------------------------------------------

double SimNetwork::uniform01() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

bool SimNetwork::chance(double p) {
  // No draw for the certain cases: an unimpaired link costs no randomness.
  if (p <= 0.0) return false;
  if (p >= 1.0) return true;
  return uniform01() < p;
}

std::uint64_t SimNetwork::uniform_below(std::uint64_t n) {
  // Rejection sampling: exact, and the same sequence on every platform.
  const std::uint64_t limit =
      std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t v;
  do v = rng_();
  while (v >= limit);
  return v % n;
}

engine::Nanos SimNetwork::uniform_nanos(engine::Nanos max) {
  if (max <= engine::Nanos{0}) return engine::Nanos{0};
  // max.count() <= INT64_MAX, so + 1 cannot overflow.
  return engine::Nanos{static_cast<std::int64_t>(uniform_below(static_cast<std::uint64_t>(max.count()) + 1))};
}

// ---- sending ------------------------------------------------------------------

SimNetwork::FramePtr SimNetwork::make_frame(engine::FrameBytes bytes) {
  auto f = std::make_shared<Frame>();
  f->bytes.assign(bytes.begin(), bytes.end());
  f->hash = fnv_bytes(kFnvOffset, f->bytes);
  return f;
}

std::size_t SimNetwork::send_from(Port from, std::span<const engine::FrameBytes> frames) {
  PortState& p = *ports_[from];
  if (!p.up) {
    for (const auto& bytes : frames) {
      ++stats_.port_down;
      record(EventKind::drop, DropReason::port_down, from, kNoPort, make_frame(bytes));
    }
    return frames.size();
  }
  std::size_t accepted = frames.size();
  if (p.tx_budget) {
    accepted = std::min(accepted, *p.tx_budget - std::min(*p.tx_budget, p.tx_used));
    p.tx_used += accepted;
  }
  for (std::size_t i = 0; i < accepted; ++i) send_one(from, frames[i]);
  for (std::size_t i = accepted; i < frames.size(); ++i) {
    ++stats_.tx_refused;
    record(EventKind::refuse, DropReason::none, from, kNoPort, make_frame(frames[i]));
  }
  return accepted;
}

void SimNetwork::send_one(Port from, engine::FrameBytes bytes) {
  const FramePtr frame = make_frame(bytes);
  ++stats_.sent;
  if (send_tap_) send_tap_(from, frame->bytes, now());
  record(EventKind::send, DropReason::none, from, kNoPort, frame);
  if (const double egress = ports_[from]->egress_loss; egress > 0 && chance(egress)) {
    ++stats_.egress_lost;
    record(EventKind::drop, DropReason::loss, from, kNoPort, frame);
    return;
  }

  wire::MacAddress dst;
  if (bytes.size() >= dst.bytes.size()) std::memcpy(dst.bytes.data(), bytes.data(), dst.bytes.size());
  if (bytes.size() >= dst.bytes.size() && dst == wire::MacAddress::broadcast()) {
    for (Port to = 0; to < ports_.size(); ++to)
      if (to != from) route(from, to, frame);
    return;
  }
  bool routed = false;
  if (bytes.size() >= dst.bytes.size()) {
    if (const auto it = ports_by_mac_.find(mac_key(dst)); it != ports_by_mac_.end()) {
      for (Port to : it->second) {
        if (to == from) continue;
        routed = true;
        route(from, to, frame);
      }
    }
  }
  if (!routed) {
    ++stats_.unknown_dst;
    record(EventKind::drop, DropReason::unknown_dst, from, kNoPort, frame);
  }
}

void SimNetwork::route(Port from, Port to, const FramePtr& frame) {
  if (!ports_[to]->up) {
    ++stats_.port_down;
    record(EventKind::drop, DropReason::port_down, from, to, frame);
    return;
  }
  if (blocked(from, to)) {
    ++stats_.partitioned;
    record(EventKind::drop, DropReason::partition, from, to, frame);
    return;
  }
  const LinkParams& lp = link_ref(from, to);
  int copies = 1;
  if (chance(lp.duplicate)) {
    copies = 2;
    ++stats_.duplicated;
    record(EventKind::duplicate, DropReason::none, from, to, frame);
  }
  for (int c = 0; c < copies; ++c) {
    if (chance(lp.loss)) {
      ++stats_.lost;
      record(EventKind::drop, DropReason::loss, from, to, frame);
      continue;
    }
    FramePtr copy = frame;
    if (chance(lp.corrupt)) {
      copy = corrupt_copy(frame);
      if (copy != frame) {
        ++stats_.corrupted;
        record(EventKind::corrupt, DropReason::none, from, to, copy);
      }
    }
    engine::Nanos at = now() + lp.delay + uniform_nanos(lp.jitter);
    if (chance(lp.reorder)) {
      at += lp.reorder_delay;
      ++stats_.reordered;
      record(EventKind::reorder, DropReason::none, from, to, copy);
    }
    PortState& dst = *ports_[to];
    if (dst.ingress_per_frame) {
      while (!dst.ingress.empty() && dst.ingress.front() <= at) dst.ingress.pop_front();
      if (dst.ingress.size() >= dst.ingress_limit) {
        ++stats_.overflow;
        record(EventKind::drop, DropReason::overflow, from, to, copy);
        continue;
      }
      const engine::Nanos start = dst.ingress.empty() ? at : std::max(at, dst.ingress.back());
      at = start + *dst.ingress_per_frame;
      dst.ingress.push_back(at);
      dst.ingress_peak = std::max(dst.ingress_peak, dst.ingress.size());
    }
    in_flight_.push(InFlight{at, next_order_++, from, to, std::move(copy)});
  }
}

void SimNetwork::set_ingress_limit(Port port, std::optional<engine::Nanos> per_frame,
                                   std::size_t queue_frames) {
  if (per_frame && (per_frame->count() <= 0 || queue_frames == 0))
    throw std::invalid_argument("an ingress limit needs a positive time per frame and room for a frame");
  PortState& p = port_state(port);
  p.ingress_per_frame = per_frame;
  p.ingress_limit = queue_frames;
  p.ingress.clear();
}

std::size_t SimNetwork::ingress_queued(Port port) const {
  const PortState& p = port_state(port);
  return static_cast<std::size_t>(
      std::count_if(p.ingress.begin(), p.ingress.end(), [&](engine::Nanos t) { return t > now(); }));
}

std::size_t SimNetwork::ingress_peak(Port port) const { return port_state(port).ingress_peak; }

SimNetwork::FramePtr SimNetwork::corrupt_copy(const FramePtr& frame) {
  const auto [first, end] = corruptible_region(frame->bytes);
  if (first >= end) return frame;  // an empty frame has no bit to flip
  auto out = std::make_shared<Frame>(*frame);
  const bool was_valid = static_cast<bool>(wire::decode_frame(frame->bytes));
  const std::uint64_t bits = std::uint64_t{end - first} * 8;
  // A flip in the len field can shrink the checksummed range so that the
  // checksum happens to hold (2^-16); redraw then, so that corruption is
  // always something the receiver's validation can see. Any other single
  // bit flip always breaks the RFC 1071 sum.
  for (int attempt = 0;; ++attempt) {
    const std::uint64_t bit = uniform_below(bits);
    const std::size_t byte = first + static_cast<std::size_t>(bit / 8);
    const auto mask = static_cast<std::byte>(1u << (bit % 8));
    out->bytes[byte] ^= mask;
    if (!was_valid || !wire::decode_frame(out->bytes) || attempt >= 64) break;
    out->bytes[byte] ^= mask;
  }
  out->hash = fnv_bytes(kFnvOffset, out->bytes);
  return out;
}

// ---- delivering ---------------------------------------------------------------

std::optional<engine::Nanos> SimNetwork::next_delivery() const {
  if (in_flight_.empty()) return std::nullopt;
  return in_flight_.top().at;
}

std::size_t SimNetwork::deliver_until(engine::Nanos t) {
  std::size_t delivered = 0;
  while (!in_flight_.empty() && in_flight_.top().at <= t) {
    InFlight ev = in_flight_.top();
    in_flight_.pop();
    clock_.advance_to(ev.at);
    PortState& dst = *ports_[ev.to];
    if (!dst.up) {
      ++stats_.port_down;
      record(EventKind::drop, DropReason::port_down, ev.from, ev.to, ev.frame);
      continue;
    }
    if (blocked(ev.from, ev.to)) {
      ++stats_.partitioned;
      record(EventKind::drop, DropReason::partition, ev.from, ev.to, ev.frame);
      continue;
    }
    ++stats_.delivered;
    ++delivered;
    record(EventKind::deliver, DropReason::none, ev.from, ev.to, ev.frame);
    if (tap_) tap_(ev.from, ev.to, ev.frame->bytes, ev.at);
    if (dst.transport.consume(ev.frame->bytes)) continue;
    dst.rx.push_back(std::move(ev.frame));
  }
  clock_.advance_to(t);
  return delivered;
}

bool SimNetwork::rx_pending(Port port) const {
  // A consumed ACK waiting for poll_acks() wakes the node too, as the fast
  // path's ACK ring wakes a real one.
  const PortState& p = port_state(port);
  return !p.rx.empty() || p.transport.acks_pending();
}
std::size_t SimNetwork::rx_queued(Port port) const { return port_state(port).rx.size(); }

std::size_t SimNetwork::receive_on(Port port, std::size_t max,
                                   FunctionRef<void(engine::FrameBytes)> on_frame) {
  PortState& p = *ports_[port];
  std::size_t n = 0;
  // Pop before calling: the callback may send, or even take the port down.
  while (n < max && p.up && !p.rx.empty()) {
    const FramePtr frame = std::move(p.rx.front());
    p.rx.pop_front();
    ++n;
    on_frame(frame->bytes);
  }
  return n;
}

// ---- trace --------------------------------------------------------------------

void SimNetwork::record(EventKind kind, DropReason reason, Port from, Port to, const FramePtr& frame) {
  const engine::Nanos at = now();
  std::uint64_t h = digest_;
  h = fnv_u64(h, static_cast<std::uint8_t>(kind), 1);
  h = fnv_u64(h, static_cast<std::uint8_t>(reason), 1);
  h = fnv_u64(h, static_cast<std::uint64_t>(at.count()), 8);
  h = fnv_u64(h, from, 4);
  h = fnv_u64(h, to, 4);
  digest_ = fnv_u64(h, frame->hash, 8);

  TraceRecord r{at, kind, reason, from, to, frame};
  if (trace_sink_) trace_sink_(format(r));
  if (ring_capacity_ == 0) return;
  if (ring_.size() < ring_capacity_) {
    ring_.push_back(std::move(r));
  } else {
    ring_[ring_next_] = std::move(r);
    ring_next_ = (ring_next_ + 1) % ring_capacity_;
  }
}

void SimNetwork::set_trace_capacity(std::size_t events) {
  std::vector<TraceRecord> ordered;
  ordered.reserve(ring_.size());
  for (std::size_t i = 0; i < ring_.size(); ++i)
    ordered.push_back(std::move(ring_[(ring_next_ + i) % ring_.size()]));
  if (ordered.size() > events)
    ordered.erase(ordered.begin(), ordered.end() - static_cast<std::ptrdiff_t>(events));
  ring_ = std::move(ordered);
  ring_capacity_ = events;
  ring_next_ = 0;
}

std::string SimNetwork::format(const TraceRecord& r) const {
  const auto ns = r.at.count();
  std::string line = fmt::format("{:>10}.{:03}us {:<14} {:>4}->{:<4} ", ns / 1000, ns % 1000,
                                 kind_name(r.kind, r.reason), port_name(r.from), port_name(r.to));
  const auto f = wire::decode_frame(r.frame->bytes);
  if (!f) {
    line += fmt::format("invalid: {}", wire::to_string(f.error()));
    return line;
  }
  const wire::Header& h = f->header;
  const auto type = h.type();
  const std::string_view proto = wire::to_string(static_cast<wire::Protocol>(h.proto()));
  line += fmt::format("{} {}->{} seq={} ack={} len={} win={} proto={}",
                      type ? wire::to_string(*type) : std::string_view("unknown"), node_name(h.node_from()),
                      node_name(h.node_to()), h.seq(), h.ack(), h.len(), h.window(),
                      proto == "unknown" ? std::to_string(h.proto()) : std::string(proto));
  return line;
}

std::vector<std::string> SimNetwork::recent_trace() const {
  std::vector<std::string> lines;
  lines.reserve(ring_.size());
  for (std::size_t i = 0; i < ring_.size(); ++i)
    lines.push_back(format(ring_[(ring_next_ + i) % ring_.size()]));
  return lines;
}

std::string SimNetwork::format_recent_trace(std::size_t last_n) const {
  const std::size_t n = std::min(last_n, ring_.size());
  std::string out;
  for (std::size_t i = ring_.size() - n; i < ring_.size(); ++i) {
    out += format(ring_[(ring_next_ + i) % ring_.size()]);
    out += '\n';
  }
  return out;
}

}  // namespace locabus::sim
