// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon/flow.hpp"

#include <endian.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <random>

#include <fmt/format.h>

#include "common/error.hpp"

namespace locabus::daemon {

namespace {

template <typename T>
T load(std::span<const std::byte> b, std::size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}

std::uint32_t be32(std::uint32_t v) { return htobe32(v); }
std::uint64_t be64(std::uint64_t v) { return htobe64(v); }

}  // namespace

void FlowConfig::validate() const {
  if (window < LOCABUS_FLOW_INITIAL_WINDOW || window < LOCASOCK_MAX_FRAGS || window > (1u << 20))
    throw Error(fmt::format("endpoint_window {} is out of range", window), EINVAL,
                fmt::format("use {}..{} messages", LOCABUS_FLOW_INITIAL_WINDOW, 1u << 20));
}

std::uint8_t refusal_failure(std::uint8_t reason) noexcept {
  switch (reason) {
    case LOCABUS_REFUSE_NO_ENDPOINT: return LOCABUS_FAIL_NO_ENDPOINT;
    case LOCABUS_REFUSE_CLOSED: return LOCABUS_FAIL_ENDPOINT_CLOSED;
    default: return LOCABUS_FAIL_DROPPED;
  }
}

FlowControl::FlowControl(const engine::Clock& clock, const FlowConfig& config)
    : clock_(clock), config_(config) {
  config_.validate();
  // Generations must differ from those of this daemon's previous lives:
  // a peer may still hold messages of one (a slow endpoint's backlog, a
  // partial datagram) and refuse or credit them after we restarted.
  next_gen_ = config_.first_gen;
  while (next_gen_ == 0) next_gen_ = static_cast<std::uint32_t>(std::random_device{}());
}

// ---- sending side -------------------------------------------------------------------

bool FlowControl::has_credit(std::uint16_t node, StreamKey key, std::size_t n) const noexcept {
  auto p = tx_.find(node);
  if (p == tx_.end() || !p->second.open) return n <= LOCABUS_FLOW_INITIAL_WINDOW;
  auto s = p->second.streams.find(key);
  if (s == p->second.streams.end()) return n <= LOCABUS_FLOW_INITIAL_WINDOW;
  return s->second.sent + n <= s->second.limit;
}

engine::SendStatus FlowControl::ensure_open(std::uint16_t node, Send send) {
  TxPeer& p = tx_[node];
  if (p.open) return engine::SendStatus::ok;
  p.gen = next_gen_++;
  if (next_gen_ == 0) next_gen_ = 1;  // 0 is no generation (a peer that never opened)
  locabus_flow_hdr h{};
  h.kind = LOCABUS_FLOW_OPEN;
  h.gen = be32(p.gen);
  const auto st = send(node, std::as_bytes(std::span(&h, 1)));
  if (st != engine::SendStatus::ok) return st;
  p.open = true;
  p.streams.clear();
  ++counters_.opens_sent;
  return st;
}

void FlowControl::sent(std::uint16_t node, StreamKey key, Origin origin, std::uint64_t engine_id) {
  TxStream& s = tx_[node].streams[key];
  ++s.sent;
  s.inflight.push_back(InFlight{origin.client, origin.message, engine_id, false});
}

// Reports the messages in q[from, to) that are not reported yet, one
// ClientFailure per run of one client's consecutive messages. A datagram's
// fragments share a number and lie next to each other: a message is
// reported whole and once, even when its fragments fail in parts (the
// engine failed the last ones, a reset the first; two refusals).
void FlowControl::report(std::uint16_t node, std::deque<InFlight>& q, std::size_t from, std::size_t to,
                         std::uint8_t failure, Fail fail) {
  to = std::min(to, q.size());
  if (from >= to) return;
  auto same = [&](std::size_t i, std::size_t j) {
    return q[i].client == q[j].client && q[i].message == q[j].message;
  };
  while (from > 0 && same(from - 1, from)) --from;
  while (to < q.size() && same(to - 1, to)) ++to;
  ClientFailure run{};
  bool have = false;
  auto flush = [&] {
    if (!have) return;
    if (run.client != 0) {
      ++counters_.failures_reported;
      fail(run);
    }
    have = false;
  };
  for (std::size_t i = from; i < to;) {
    std::size_t end = i;
    bool reported = false;
    for (; end < to && same(i, end); ++end) {
      reported = reported || q[end].failed;
      q[end].failed = true;
    }
    const InFlight& f = q[i];
    i = end;
    if (reported) continue;
    if (have && f.client == run.client && f.message == run.first + run.count) {
      ++run.count;
      continue;
    }
    flush();
    run = ClientFailure{f.client, node, f.message, 1, failure};
    have = true;
  }
  flush();
}

// ---- receiving side -----------------------------------------------------------------

StreamTag FlowControl::arrived(std::uint16_t node, StreamKey key, bool& over_credit) {
  RxPeer& p = rx_[node];
  RxStream& s = p.streams[key];
  // Beyond what the sender was told (granted may be ahead of it, not sent yet).
  over_credit = s.received >= s.advertised;
  if (over_credit) ++counters_.over_credit;
  if (s.received == 0 && s.granted < s.consumed + config_.window) {
    // A new stream starts with the initial window only; its first message
    // opens the whole window at once, so that messages a service keeps
    // before its reader takes them (a KCCM receive queue) can use all of it
    // rather than stall at the initial window.
    s.granted = s.consumed + config_.window;
    p.credit_due.insert(key);
    dirty_.insert(node);
  }
  return StreamTag{node, key, p.gen, s.received++, 1};
}

void FlowControl::done(RxPeer& p, StreamKey key, RxStream& s, std::uint64_t first, std::uint64_t count) {
  const std::uint64_t end = first + count;
  if (first <= s.consumed) {
    s.consumed = std::max(s.consumed, end);
  } else {
    // Out of order: kept as ranges, merged with their neighbours, so that
    // a run (a sender's messages beyond its credit, refused one by one)
    // takes one entry.
    auto next = s.ahead.upper_bound(first);
    auto at = next;
    if (next != s.ahead.begin() && std::prev(next)->second >= first) {
      at = std::prev(next);
      at->second = std::max(at->second, end);
    } else {
      at = s.ahead.emplace_hint(next, first, end);
    }
    while (next != s.ahead.end() && next->first <= at->second) {
      at->second = std::max(at->second, next->second);
      next = s.ahead.erase(next);
    }
  }
  while (!s.ahead.empty() && s.ahead.begin()->first <= s.consumed) {
    s.consumed = std::max(s.consumed, s.ahead.begin()->second);
    s.ahead.erase(s.ahead.begin());
  }
  // Grant more once a quarter of the window came back: consumed + window.
  // A stream that went quiet is confirmed a moment later, so that the
  // sender forgets what was delivered.
  const std::uint64_t limit = s.consumed + config_.window;
  if (limit >= s.advertised + config_.window / 4) {
    s.granted = std::max(s.granted, limit);
    p.credit_due.insert(key);
  } else if (s.consumed > s.confirmed && s.consumed == s.received) {
    s.granted = std::max(s.granted, limit);
    p.confirm_due.insert(key);
    if (!confirm_at_) confirm_at_ = clock_.now() + config_.confirm_delay;
  }
}

void FlowControl::consumed(const StreamTag& tag) {
  if (tag.count == 0) return;
  auto p = rx_.find(tag.node);
  if (p == rx_.end() || p->second.gen != tag.gen) return;  // an earlier generation: nothing to credit
  auto s = p->second.streams.find(tag.key);
  if (s == p->second.streams.end()) return;
  done(p->second, tag.key, s->second, tag.first, tag.count);
  if (!p->second.credit_due.empty() || !p->second.confirm_due.empty()) dirty_.insert(tag.node);
}

void FlowControl::refuse(const StreamTag& tag, std::uint8_t reason) {
  if (tag.count == 0) return;
  counters_.refused_messages += tag.count;
  auto p = rx_.find(tag.node);
  if (p == rx_.end() || p->second.gen != tag.gen) return;  // the sender has forgotten them already
  RxPeer& peer = p->second;
  Refusal* last = peer.refusals.empty() ? nullptr : &peer.refusals.back();
  if (last && last->key == tag.key && last->reason == reason && last->first + last->count == tag.first)
    last->count += tag.count;
  else
    peer.refusals.push_back(Refusal{tag.key, reason, tag.first, tag.count});
  if (auto s = peer.streams.find(tag.key); s != peer.streams.end())
    done(peer, tag.key, s->second, tag.first, tag.count);
  dirty_.insert(tag.node);
}

// ---- both ---------------------------------------------------------------------------

void FlowControl::on_message(std::uint16_t node, std::span<const std::byte> payload, Fail fail) {
  if (payload.size() < sizeof(locabus_flow_hdr)) {
    ++counters_.malformed;
    return;
  }
  const auto h = load<locabus_flow_hdr>(payload, 0);
  const std::uint32_t gen = be32toh(h.gen);
  const auto entries = payload.subspan(sizeof h);
  switch (h.kind) {
    case LOCABUS_FLOW_OPEN: {
      // The peer's streams to us start again from 0. What we owed the old
      // generation (credit, refusals) it no longer wants.
      ++counters_.opens_received;
      RxPeer& p = rx_[node];
      p = RxPeer{};
      p.gen = gen;
      return;
    }
    case LOCABUS_FLOW_CREDIT:
      if (entries.size() != std::size_t{h.count} * sizeof(locabus_flow_credit)) break;
      return on_credit(node, gen, entries);
    case LOCABUS_FLOW_REFUSE:
      if (entries.size() != std::size_t{h.count} * sizeof(locabus_flow_refuse)) break;
      return on_refuse(node, gen, entries, fail);
    case LOCABUS_FLOW_HOLD:
    case LOCABUS_FLOW_RESUME:
      if (entries.size() != std::size_t{h.count} * sizeof(locabus_flow_key)) break;
      return on_hold(node, h.kind == LOCABUS_FLOW_HOLD, entries);
    default: break;
  }
  ++counters_.malformed;
}

void FlowControl::on_credit(std::uint16_t node, std::uint32_t gen, std::span<const std::byte> entries) {
  auto p = tx_.find(node);
  for (std::size_t at = 0; at < entries.size(); at += sizeof(locabus_flow_credit)) {
    ++counters_.credits_received;
    if (p == tx_.end() || p->second.gen != gen || !p->second.open) continue;  // an earlier generation
    const auto e = load<locabus_flow_credit>(entries, at);
    auto s = p->second.streams.find(be32toh(e.key));
    if (s == p->second.streams.end()) continue;
    TxStream& st = s->second;
    const std::uint64_t consumed = std::min<std::uint64_t>(be64toh(e.consumed), st.sent);
    st.limit = std::max<std::uint64_t>(st.limit, be64toh(e.limit));
    while (st.confirmed < consumed && !st.inflight.empty()) {
      st.inflight.pop_front();
      ++st.confirmed;
    }
  }
}

void FlowControl::on_refuse(std::uint16_t node, std::uint32_t gen, std::span<const std::byte> entries,
                            Fail fail) {
  auto p = tx_.find(node);
  for (std::size_t at = 0; at < entries.size(); at += sizeof(locabus_flow_refuse)) {
    ++counters_.refusals_received;
    if (p == tx_.end() || p->second.gen != gen || !p->second.open) continue;
    const auto e = load<locabus_flow_refuse>(entries, at);
    auto s = p->second.streams.find(be32toh(e.key));
    if (s == p->second.streams.end()) continue;
    TxStream& st = s->second;
    const std::uint64_t first = be64toh(e.first), count = be64toh(e.count);
    if (first >= st.sent || count == 0) continue;
    const std::uint64_t end = count > st.sent - first ? st.sent : first + count;  // no wrap-around
    if (end <= st.confirmed) continue;
    const std::uint64_t from = std::max(first, st.confirmed) - st.confirmed;
    const std::uint64_t to = end - st.confirmed;
    report(node, st.inflight, from, to, refusal_failure(e.reason), fail);
  }
}

void FlowControl::on_send_failed(std::uint16_t node, std::uint64_t first, std::uint64_t count,
                                 std::uint8_t failure, Fail fail) {
  auto p = tx_.find(node);
  if (p == tx_.end()) return;
  for (auto& [key, st] : p->second.streams) {
    auto& q = st.inflight;
    // Engine ids grow along the stream: the failed ones are one run.
    auto lo =
        std::partition_point(q.begin(), q.end(), [&](const InFlight& f) { return f.engine_id < first; });
    auto hi =
        std::partition_point(lo, q.end(), [&](const InFlight& f) { return f.engine_id < first + count; });
    if (lo != hi)
      report(node, q, static_cast<std::size_t>(lo - q.begin()), static_cast<std::size_t>(hi - q.begin()),
             failure, fail);
  }
}

// ---- broadcast holds ----------------------------------------------------------------

namespace {
// A HOLD is said again this often while its reader stays full and the node
// keeps broadcasting to it (a HOLD lost with a connection that ended).
constexpr engine::Nanos kHoldRepeat = std::chrono::milliseconds(50);
}  // namespace

void FlowControl::hold(std::uint16_t node, StreamKey key) {
  HoldState& h = holds_[{node, key}];
  const engine::Nanos now = clock_.now();
  if (h.held && h.told && now - h.sent_at < kHoldRepeat) return;
  h.held = true;
  h.told = false;
  hold_dirty_ = true;
}

void FlowControl::release(std::uint16_t node, StreamKey key) {
  auto it = holds_.find({node, key});
  if (it == holds_.end() || !it->second.held) return;
  it->second.held = false;
  it->second.told = false;
  hold_dirty_ = true;
}

std::vector<std::pair<std::uint16_t, StreamKey>> FlowControl::holding() const {
  std::vector<std::pair<std::uint16_t, StreamKey>> v;
  for (const auto& [k, h] : holds_)
    if (h.held) v.push_back(k);
  return v;
}

bool FlowControl::broadcast_held(StreamKey key) const noexcept {
  auto it = held_by_.find(key);
  return it != held_by_.end() && !it->second.empty();
}

void FlowControl::on_hold(std::uint16_t node, bool hold, std::span<const std::byte> entries) {
  for (std::size_t at = 0; at < entries.size(); at += sizeof(locabus_flow_key)) {
    const StreamKey key = be32toh(load<locabus_flow_key>(entries, at).key);
    if (hold) {
      ++counters_.holds_received;
      held_by_[key].insert(node);
    } else if (auto it = held_by_.find(key); it != held_by_.end()) {
      it->second.erase(node);
      if (it->second.empty()) held_by_.erase(it);
    }
  }
}

int FlowControl::flush_holds(Send send) {
  if (!hold_dirty_) return 0;
  hold_dirty_ = false;
  int sent = 0;
  // Per node: one HOLD message and one RESUME message with their keys.
  std::map<std::uint16_t, std::pair<std::vector<StreamKey>, std::vector<StreamKey>>> due;
  for (const auto& [k, h] : holds_)
    if (!h.told) (h.held ? due[k.first].first : due[k.first].second).push_back(k.second);
  for (const auto& [node, lists] : due) {
    for (const bool hold : {true, false}) {
      const auto& keys = hold ? lists.first : lists.second;
      for (std::size_t from = 0; from < keys.size(); from += LOCABUS_FLOW_MAX_KEYS) {
        const std::size_t n = std::min<std::size_t>(keys.size() - from, LOCABUS_FLOW_MAX_KEYS);
        std::array<std::byte, LOCABUS_MAX_PAYLOAD> buf{};
        locabus_flow_hdr h{};
        h.kind = hold ? LOCABUS_FLOW_HOLD : LOCABUS_FLOW_RESUME;
        h.count = static_cast<std::uint8_t>(n);
        std::memcpy(buf.data(), &h, sizeof h);
        for (std::size_t i = 0; i < n; ++i) {
          locabus_flow_key e{};
          e.key = be32(keys[from + i]);
          std::memcpy(buf.data() + sizeof h + i * sizeof e, &e, sizeof e);
        }
        const auto st = send(node, std::span(buf.data(), sizeof h + n * sizeof(locabus_flow_key)));
        if (st == engine::SendStatus::would_block) {
          hold_dirty_ = true;  // later
          continue;
        }
        // Sent, or the node cannot be reached (its holds end with it).
        for (std::size_t i = 0; i < n; ++i) {
          auto it = holds_.find({node, keys[from + i]});
          if (it == holds_.end()) continue;
          it->second.told = true;
          it->second.sent_at = clock_.now();
          if (!it->second.held) holds_.erase(it);
        }
        if (st == engine::SendStatus::ok) {
          ++sent;
          (hold ? counters_.holds_sent : counters_.resumes_sent) += n;
        }
      }
    }
  }
  return sent;
}

void FlowControl::on_reset(std::uint16_t node, std::uint8_t failure, Fail fail) {
  // Broadcast holds with that node end: it forgets ours, we forget its (a
  // reader still full asks again with the next broadcast that arrives).
  for (auto it = held_by_.begin(); it != held_by_.end();) {
    it->second.erase(node);
    it = it->second.empty() ? held_by_.erase(it) : std::next(it);
  }
  std::erase_if(holds_, [&](const auto& h) { return h.first.first == node; });
  // The peer saw the connection end as well and starts its streams to us
  // again with an OPEN: what we kept of the old ones (counts, refusals and
  // credit not sent yet) nobody needs. Its old messages still waiting for a
  // reader are not credited (consumed() and refuse() find no generation).
  rx_.erase(node);
  dirty_.erase(node);
  auto p = tx_.find(node);
  if (p == tx_.end()) return;
  for (auto& [key, st] : p->second.streams) report(node, st.inflight, 0, st.inflight.size(), failure, fail);
  tx_.erase(p);  // the next send opens a new generation
}

int FlowControl::flush(Send send) {
  int sent = flush_holds(send);
  const bool confirm_now = confirm_at_ && clock_.now() >= *confirm_at_;
  if (confirm_now) confirm_at_.reset();
  for (auto it = dirty_.begin(); it != dirty_.end();) {
    const std::uint16_t node = *it;
    auto pit = rx_.find(node);
    if (pit == rx_.end()) {
      it = dirty_.erase(it);
      continue;
    }
    RxPeer& p = pit->second;
    bool blocked = false;
    // would_block: later. Anything else (unreachable, unknown_node,
    // closing): the connection is gone or going, and the peer starts its
    // streams again (on_reset, OPEN); what was due is dropped, not tried
    // again on every pass for ever.
    auto gone = [&](engine::SendStatus st) {
      blocked = true;
      if (st == engine::SendStatus::would_block) return;
      counters_.dropped += p.refusals.size() + p.credit_due.size() + p.confirm_due.size();
      p.refusals.clear();
      p.credit_due.clear();
      p.confirm_due.clear();
    };
    if (confirm_now) {
      p.credit_due.insert(p.confirm_due.begin(), p.confirm_due.end());
      p.confirm_due.clear();
    }
    // Refusals first: a credit's `consumed` covers them, and the sender
    // forgets what a credit confirms.
    while (!p.refusals.empty() && !blocked) {
      std::array<std::byte, LOCABUS_MAX_PAYLOAD> buf{};
      const std::size_t n = std::min<std::size_t>(p.refusals.size(), LOCABUS_FLOW_MAX_REFUSALS);
      locabus_flow_hdr h{};
      h.kind = LOCABUS_FLOW_REFUSE;
      h.count = static_cast<std::uint8_t>(n);
      h.gen = be32(p.gen);
      std::memcpy(buf.data(), &h, sizeof h);
      for (std::size_t i = 0; i < n; ++i) {
        locabus_flow_refuse e{};
        e.key = be32(p.refusals[i].key);
        e.reason = p.refusals[i].reason;
        e.first = be64(p.refusals[i].first);
        e.count = be64(p.refusals[i].count);
        std::memcpy(buf.data() + sizeof h + i * sizeof e, &e, sizeof e);
      }
      if (const auto st = send(node, std::span(buf.data(), sizeof h + n * sizeof(locabus_flow_refuse)));
          st != engine::SendStatus::ok) {
        gone(st);
        break;
      }
      ++sent;
      counters_.refusals_sent += n;
      p.refusals.erase(p.refusals.begin(), p.refusals.begin() + static_cast<std::ptrdiff_t>(n));
    }
    while (!blocked && !p.credit_due.empty()) {
      std::array<std::byte, LOCABUS_MAX_PAYLOAD> buf{};
      std::size_t n = 0;
      locabus_flow_hdr h{};
      h.kind = LOCABUS_FLOW_CREDIT;
      h.gen = be32(p.gen);
      auto k = p.credit_due.begin();
      for (; k != p.credit_due.end() && n < LOCABUS_FLOW_MAX_CREDITS; ++k) {
        auto s = p.streams.find(*k);
        if (s == p.streams.end()) continue;
        locabus_flow_credit e{};
        e.key = be32(*k);
        e.consumed = be64(s->second.consumed);
        e.limit = be64(s->second.granted);
        std::memcpy(buf.data() + sizeof h + n * sizeof e, &e, sizeof e);
        ++n;
      }
      h.count = static_cast<std::uint8_t>(n);
      std::memcpy(buf.data(), &h, sizeof h);
      if (n > 0) {
        if (const auto st = send(node, std::span(buf.data(), sizeof h + n * sizeof(locabus_flow_credit)));
            st != engine::SendStatus::ok) {
          gone(st);
          break;
        }
      }
      // Advertised now: what the sender knows.
      for (auto j = p.credit_due.begin(); j != k; ++j)
        if (auto s = p.streams.find(*j); s != p.streams.end()) {
          s->second.advertised = s->second.granted;
          s->second.confirmed = s->second.consumed;
          p.confirm_due.erase(*j);
        }
      p.credit_due.erase(p.credit_due.begin(), k);
      if (n > 0) {
        ++sent;
        counters_.credits_sent += n;
      }
    }
    if (!p.refusals.empty() || !p.credit_due.empty() || !p.confirm_due.empty()) {
      if (!p.confirm_due.empty() && !confirm_at_) confirm_at_ = clock_.now() + config_.confirm_delay;
      ++it;  // later
    } else {
      it = dirty_.erase(it);
    }
  }
  return sent;
}

std::size_t FlowControl::unconfirmed() const noexcept {
  std::size_t n = 0;
  for (const auto& [node, p] : tx_)
    for (const auto& [key, s] : p.streams) n += s.inflight.size();
  return n;
}

std::size_t FlowControl::receiver_entries() const noexcept {
  std::size_t n = 0;
  for (const auto& [node, p] : rx_) {
    n += p.refusals.size();
    for (const auto& [key, s] : p.streams) n += s.ahead.size();
  }
  return n;
}

std::size_t FlowControl::streams() const noexcept {
  std::size_t n = 0;
  for (const auto& [node, p] : tx_) n += p.streams.size();
  for (const auto& [node, p] : rx_) n += p.streams.size();
  return n;
}

}  // namespace locabus::daemon
