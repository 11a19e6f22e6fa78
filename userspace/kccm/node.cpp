// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "kccm/node.hpp"

#include <endian.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "api/control.hpp"
#include "common/version.hpp"

namespace locabus::kccm {

namespace {

template <typename T>
T load(std::span<const std::byte> b, std::size_t at = 0) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}

template <typename T>
std::span<const std::byte> bytes_of(const T& v) {
  return std::as_bytes(std::span(&v, 1));
}

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

std::string_view text_of(std::span<const std::byte> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

constexpr std::string_view kEcho = "echo";
constexpr std::string_view kNodeInfo = "node.info";

/// The first number in a /proc file (uptime), or the first three (loadavg).
std::vector<double> read_numbers(const char* path, std::size_t n) {
  std::ifstream in(path);
  std::vector<double> v;
  double x = 0;
  while (v.size() < n && in >> x) v.push_back(x);
  return v;
}

}  // namespace

// ---- the frame ----------------------------------------------------------------------

std::optional<Frame> parse_frame(std::span<const std::byte> d, std::string* why) {
  auto bad = [&](std::string what) -> std::optional<Frame> {
    if (why) *why = std::move(what);
    return std::nullopt;
  };
  if (d.size() < kHeaderLen) return bad(fmt::format("{} bytes: shorter than the 32-byte header", d.size()));
  kccm_hdr h;
  std::memcpy(&h, d.data(), sizeof h);
  Frame f;
  f.type = h.type;
  f.flags = h.flags;
  f.status = h.status;
  f.tag = be32toh(h.tag);
  f.instance = be32toh(h.instance);
  f.deadline_ms = be32toh(h.deadline_ms);
  f.caller = be64toh(h.caller);
  f.call_id = be64toh(h.call_id);
  const auto rest = d.subspan(kHeaderLen);
  switch (f.type) {
    case KCCM_T_DATA:
    case KCCM_T_REPLY:
      if (h.name_len != 0) return bad(fmt::format("type {} with a name ({} bytes)", f.type, h.name_len));
      f.body = rest;
      break;
    case KCCM_T_CALL:
      if (h.name_len == 0 || h.name_len > kMaxName)
        return bad(fmt::format("a CALL whose name_len is {} (1..{})", h.name_len, kMaxName));
      if (h.name_len > rest.size())
        return bad(fmt::format("a CALL whose {}-byte name runs past its {} bytes", h.name_len, d.size()));
      if (f.deadline_ms == 0) return bad("a CALL with deadline 0");
      f.name = text_of(rest.first(h.name_len));
      f.body = rest.subspan(h.name_len);
      break;
    default: return bad(fmt::format("unknown type {}", f.type));
  }
  if (f.body.size() > kMaxData)
    return bad(fmt::format("a {}-byte body (at most {})", f.body.size(), kMaxData));
  return f;
}

void write_frame(const Frame& f, std::vector<std::byte>& out) {
  kccm_hdr h{};
  h.type = f.type;
  h.flags = f.flags;
  h.status = f.status;
  h.name_len = static_cast<__u8>(f.name.size());
  h.tag = htobe32(f.tag);
  h.instance = htobe32(f.instance);
  h.deadline_ms = htobe32(f.deadline_ms);
  h.caller = htobe64(f.caller);
  h.call_id = htobe64(f.call_id);
  out.resize(kHeaderLen + f.name.size() + f.body.size());
  std::memcpy(out.data(), &h, sizeof h);
  if (!f.name.empty()) std::memcpy(out.data() + kHeaderLen, f.name.data(), f.name.size());
  if (!f.body.empty()) std::memcpy(out.data() + kHeaderLen + f.name.size(), f.body.data(), f.body.size());
}

// ---- the node -----------------------------------------------------------------------

Node::Node(Host& host, const NodeConfig& config) : host_(host), config_(config), instance_(config.instance) {
  while (instance_ == 0) instance_ = static_cast<std::uint32_t>(std::random_device{}());
  started_ = host_.now();
  frame_.reserve(LOCASOCK_MAX_DATAGRAM);
}

void Node::waiter_gone(ClientId client) {
  if (auto c = clients_.find(client); c != clients_.end() && c->second.waiters > 0) --c->second.waiters;
}

Node::Space* Node::space_ptr(std::uint16_t space) {
  auto it = spaces_.find(space);
  return it == spaces_.end() ? nullptr : &it->second;
}

std::optional<ClientId> Node::client_of(std::uint16_t space) const {
  auto it = spaces_.find(space);
  if (it == spaces_.end()) return std::nullopt;
  for (ClientId c : it->second.clients)
    if (auto s = clients_.find(c); s != clients_.end() && !s->second.leaving) return c;
  return std::nullopt;
}

std::optional<std::uint16_t> Node::space_of(ClientId client) const {
  auto it = clients_.find(client);
  return it == clients_.end() ? std::nullopt : std::optional<std::uint16_t>(it->second.space);
}

std::size_t Node::queued_messages() const noexcept {
  std::size_t n = 0;
  for (const auto& [id, s] : spaces_) n += s.queue.size();
  return n;
}

std::size_t Node::waiters() const noexcept {
  std::size_t n = 0;
  for (const auto& [id, s] : spaces_) n += s.waiters.size();
  return n;
}

std::size_t Node::handlers() const noexcept {
  std::size_t n = 0;
  for (const auto& [id, s] : spaces_) n += s.handlers.size();
  return n;
}

// ---- clients ------------------------------------------------------------------------

void Node::attach(ClientId client, std::uint16_t space) {
  clients_[client] = ClientState{space, false};
  spaces_[space].clients.push_back(client);
}

void Node::leave(ClientId client) {
  auto c = clients_.find(client);
  if (c == clients_.end() || c->second.leaving) return;
  c->second.leaving = true;
  c->second.waiters = 0;
  Space* s = space_ptr(c->second.space);
  if (!s) return;
  std::erase_if(s->waiters, [&](const Waiter& w) { return w.client == client; });
  std::erase_if(s->handlers, [&](const auto& h) { return h.second.client == client; });
}

void Node::detach(ClientId client) {
  auto c = clients_.find(client);
  if (c == clients_.end()) return;
  leave(client);
  const std::uint16_t space = c->second.space;
  // Calls its handlers were answering: their callers are told now rather
  // than at their deadline.
  std::vector<std::uint64_t> mine;
  for (const auto& [ref, r] : refs_)
    if (r.handler == client) mine.push_back(ref);
  std::sort(mine.begin(), mine.end());  // in call order
  for (const std::uint64_t ref : mine) {
    auto it = refs_.find(ref);
    const Ref& r = it->second;
    const std::string text =
        fmt::format("handler {} in space {} on node {} exited during the call (its process, {}, detached)",
                    r.name, r.space, config_.node, host_.who(client));
    ++stats_.handler_exited;
    answer(CallFrom{r.origin, r.space, r.instance, r.caller, r.call_id}, LOCABUS_KCCM_HANDLER_EXITED,
           bytes_of(std::string_view(text)), StreamTag{}, true);
    erase_ref(it);
  }
  clients_.erase(c);
  Space* s = space_ptr(space);
  if (!s) return;
  std::erase(s->clients, client);
  if (!s->clients.empty()) return;
  // The last client of the space: nobody will take what is queued.
  for (const Message& m : s->queue) {
    queued_bytes_ -= m.data.size();
    if (m.local) {
      ++stats_.dropped_on_close;
    } else {
      ++stats_.refused_on_close;
      host_.refuse(m.flow, LOCABUS_REFUSE_CLOSED);
    }
  }
  spaces_.erase(space);
}

// ---- records ------------------------------------------------------------------------

Outcome Node::on_record(ClientId client, std::uint16_t type, std::uint16_t aux,
                        std::span<const std::byte> payload, std::uint64_t message) {
  auto c = clients_.find(client);
  if (c == clients_.end())
    return Outcome{Outcome::broken, 0, {}, "a KCCM record from a client that is not attached"};
  const std::uint16_t space = c->second.space;
  const bool leaving = c->second.leaving;
  // What this client's requests answer goes to its backlog when it does not
  // read its ring: its further records wait until it does (its listener
  // reads whatever its writers wait for, so this never deadlocks).
  if (!leaving && host_.backlog(client) >= config_.max_backlog) {
    ++stats_.backlog_blocked;
    return Outcome{Outcome::blocked, 0, engine::SendStatus::would_block, {}};
  }
  Space& s = spaces_[space];
  switch (type) {
    case api::kRecordKccmSend: return send_record(client, space, aux, payload, message);
    case api::kRecordKccmCall: return call_record(client, space, aux, payload, message);
    case api::kRecordKccmReply: return reply_record(client, payload);
    case api::kRecordKccmRecv:
      if (leaving) return {};  // nobody reads the answer
      return recv_record(client, s, payload);
    case api::kRecordKccmCancel:
      if (leaving) return {};
      return cancel_record(client, s, payload);
    case api::kRecordKccmRegister:
    case api::kRecordKccmUnregister:
      if (leaving) return {};
      return register_record(client, space, s, aux, payload, type == api::kRecordKccmUnregister);
    default: break;
  }
  return Outcome{Outcome::broken, 0, {}, fmt::format("record type {} is not a KCCM request", type)};
}

Outcome Node::send_record(ClientId client, std::uint16_t space, std::uint16_t node,
                          std::span<const std::byte> payload, std::uint64_t message) {
  if (payload.size() < sizeof(api::KccmTagHeader) || payload.size() - sizeof(api::KccmTagHeader) > kMaxData)
    return Outcome{Outcome::broken, 0, {}, "a KCCM send that is not a tag header and at most 65440 bytes"};
  const auto h = load<api::KccmTagHeader>(payload);
  const auto data = payload.subspan(sizeof h);
  if (node == LOCABUS_NODE_BROADCAST)
    return Outcome{Outcome::refused, node, engine::SendStatus::invalid_node, {}};
  if (node == config_.node) {
    Space& s = spaces_[space];
    if (s.local_queued >= config_.window)
      return Outcome{Outcome::blocked, node, engine::SendStatus::would_block, {}};
    ++stats_.local_sends;
    arrive(s, config_.node, h.tag, true, StreamTag{}, data);
    return {};
  }
  Frame f;
  f.type = KCCM_T_DATA;
  f.tag = h.tag;
  f.body = data;
  write_frame(f, frame_);
  const engine::SendStatus st = host_.send(node, space, frame_, Origin{client, message});
  if (st == engine::SendStatus::would_block) return Outcome{Outcome::blocked, node, st, {}};
  if (st != engine::SendStatus::ok) return Outcome{Outcome::refused, node, st, {}};
  ++stats_.sends;
  return {};
}

Outcome Node::recv_record(ClientId client, Space& s, std::span<const std::byte> payload) {
  if (payload.size() != sizeof(api::KccmRecvRequest))
    return Outcome{Outcome::broken, 0, {}, "a KCCM receive that is not a KccmRecvRequest"};
  const auto r = load<api::KccmRecvRequest>(payload);
  const Waiter w{client, r.waiter, r.node, (r.flags & api::kKccmAnyTag) != 0, r.tag};
  auto it = std::find_if(s.queue.begin(), s.queue.end(), [&](const Message& m) { return w.matches(m); });
  if (it == s.queue.end()) {
    ClientState& c = clients_[client];
    if (c.waiters >= config_.max_waiters)
      return Outcome{
          Outcome::broken,
          0,
          {},
          fmt::format("more than {} receives waiting at once in space {} (a receive that timed out "
                      "must be cancelled)",
                      config_.max_waiters, c.space)};
    ++c.waiters;
    s.waiters.push_back(w);
    return {};
  }
  const api::KccmMessageHeader mh{w.id, it->tag, 0};
  host_.deliver(client, api::kRecordKccmMessage, it->node, bytes_of(mh), it->data, it->flow);
  ++stats_.taken;
  queued_bytes_ -= it->data.size();
  if (it->local) --s.local_queued;
  s.queue.erase(it);
  return {};
}

Outcome Node::cancel_record(ClientId client, Space& s, std::span<const std::byte> payload) {
  if (payload.size() != sizeof(api::KccmWaiter))
    return Outcome{Outcome::broken, 0, {}, "a KCCM cancel that is not a KccmWaiter"};
  const auto w = load<api::KccmWaiter>(payload);
  // Removed if it still waits; if its message was handed over, that record
  // is in the client's ring (or backlog) before this answer.
  auto it = std::find_if(s.waiters.begin(), s.waiters.end(),
                         [&](const Waiter& x) { return x.client == client && x.id == w.waiter; });
  if (it != s.waiters.end()) {
    s.waiters.erase(it);
    waiter_gone(client);
  }
  ++stats_.cancels;
  host_.deliver(client, api::kRecordKccmCancelled, 0, bytes_of(w), {}, StreamTag{});
  return {};
}

void Node::ack(ClientId client, std::int32_t err, std::string_view text) {
  const api::KccmAck a{err, 0};
  host_.deliver(client, api::kRecordKccmAck, 0, bytes_of(a), bytes_of(text), StreamTag{});
}

Outcome Node::register_record(ClientId client, std::uint16_t space, Space& s, std::uint16_t kind,
                              std::span<const std::byte> payload, bool unregister) {
  const std::string name(text_of(payload.first(std::min(payload.size(), kMaxName + 1))));
  if (payload.empty() || payload.size() > kMaxName) {
    ++stats_.register_refused;
    ack(client, EINVAL,
        fmt::format("a handler name is 1..{} bytes; this one has {}", kMaxName, payload.size()));
    return {};
  }
  auto it = s.handlers.find(name);
  if (unregister) {
    if (it == s.handlers.end() || it->second.client != client) {
      ++stats_.register_refused;
      ack(client, ENOENT,
          fmt::format("handler {} is not registered by this process in space {}", name, space));
      return {};
    }
    s.handlers.erase(it);
    ack(client, 0, {});
    return {};
  }
  if (kind != LOCABUS_KCCM_LONG && kind != LOCABUS_KCCM_SHORT) {
    ++stats_.register_refused;
    ack(client, EINVAL, fmt::format("handler kind {} is neither long (0) nor short (1)", kind));
    return {};
  }
  if (it != s.handlers.end()) {
    ++stats_.register_refused;
    ack(client, EEXIST,
        fmt::format("handler {} is already registered in space {} by {}", name, space,
                    host_.who(it->second.client)));
    return {};
  }
  s.handlers.emplace(name, Registered{client, kind});
  ++stats_.registered;
  ack(client, 0, {});
  return {};
}

Outcome Node::call_record(ClientId client, std::uint16_t space, std::uint16_t node,
                          std::span<const std::byte> payload, std::uint64_t message) {
  api::KccmCallHeader h{};
  if (payload.size() >= sizeof h) h = load<api::KccmCallHeader>(payload);
  if (payload.size() < sizeof h || h.name_len == 0 || h.name_len > kMaxName ||
      payload.size() - sizeof h < h.name_len || payload.size() - sizeof h - h.name_len > kMaxData ||
      h.deadline_ms == 0)
    return Outcome{Outcome::broken,
                   0,
                   {},
                   "a KCCM call that is not a KccmCallHeader (deadline >= 1), a 1..63-byte name and at most "
                   "65440 bytes"};
  // Copy the name: the client can still write its ring.
  const std::string name(text_of(payload.subspan(sizeof h, h.name_len)));
  const auto arg = payload.subspan(sizeof h + h.name_len);
  const std::uint8_t flags = h.flags & KCCM_F_ONEWAY;
  const CallFrom from{config_.node, space, instance_, client, h.call_id};
  if (node == config_.node) {
    ++stats_.calls_local;
    dispatch(from, flags, h.deadline_ms, name, arg, StreamTag{});
    return {};
  }
  const bool every = node == LOCABUS_NODE_BROADCAST;
  Frame f;
  f.type = KCCM_T_CALL;
  f.flags = static_cast<std::uint8_t>(flags | (every ? KCCM_F_BCAST : 0));
  f.instance = instance_;
  f.deadline_ms = h.deadline_ms;
  f.caller = client;
  f.call_id = h.call_id;
  f.name = name;
  f.body = arg;
  write_frame(f, frame_);
  const engine::SendStatus st =
      every ? host_.broadcast(space, frame_) : host_.send(node, space, frame_, Origin{client, message});
  if (st == engine::SendStatus::would_block) return Outcome{Outcome::blocked, node, st, {}};
  if (st != engine::SendStatus::ok) return Outcome{Outcome::refused, node, st, {}};
  if (!every) {
    ++stats_.calls_out;
    return {};
  }
  ++stats_.calls_broadcast;
  // The nodes called, before any result: every peer believed alive, and this one.
  std::vector<std::uint16_t> nodes(alive_.begin(), alive_.end());
  nodes.insert(std::upper_bound(nodes.begin(), nodes.end(), config_.node), config_.node);
  nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
  const api::KccmStartedHeader sh{h.call_id, static_cast<std::uint32_t>(nodes.size()), 0};
  host_.deliver(client, api::kRecordKccmCallStarted, 0, bytes_of(sh), std::as_bytes(std::span(nodes)),
                StreamTag{});
  dispatch(from, static_cast<std::uint8_t>(flags | KCCM_F_BCAST), h.deadline_ms, name, arg, StreamTag{});
  return {};
}

Outcome Node::reply_record(ClientId client, std::span<const std::byte> payload) {
  if (payload.size() < sizeof(api::KccmReplyHeader) ||
      payload.size() - sizeof(api::KccmReplyHeader) > kMaxData)
    return Outcome{
        Outcome::broken, 0, {}, "a KCCM reply that is not a KccmReplyHeader and at most 65440 bytes"};
  const auto h = load<api::KccmReplyHeader>(payload);
  auto it = refs_.find(h.ref);
  if (it == refs_.end() || it->second.handler != client) {
    ++stats_.late_replies;  // expired, its origin gone, or a ref this client never had
    return {};
  }
  const Ref& r = it->second;
  const engine::SendStatus st = answer(CallFrom{r.origin, r.space, r.instance, r.caller, r.call_id}, h.status,
                                       payload.subspan(sizeof h), StreamTag{}, false);
  if (st == engine::SendStatus::would_block) return Outcome{Outcome::blocked, r.origin, st, {}};
  erase_ref(it);
  return {};
}

// ---- messages and calls -------------------------------------------------------------

void Node::arrive(Space& s, std::uint16_t node, std::uint32_t tag, bool local, const StreamTag& flow,
                  std::span<const std::byte> data) {
  auto w = std::find_if(s.waiters.begin(), s.waiters.end(), [&](const Waiter& x) {
    return (x.node == kAnyNode || x.node == node) && (x.any_tag || x.tag == tag);
  });
  if (w != s.waiters.end()) {
    const api::KccmMessageHeader mh{w->id, tag, 0};
    const ClientId client = w->client;
    s.waiters.erase(w);
    waiter_gone(client);
    ++stats_.handed_over;
    host_.deliver(client, api::kRecordKccmMessage, node, bytes_of(mh), data, flow);
    return;
  }
  s.queue.push_back(Message{node, tag, local, flow, {data.begin(), data.end()}});
  queued_bytes_ += data.size();
  if (local) ++s.local_queued;
  ++stats_.queued;
}

void Node::dispatch(const CallFrom& from, std::uint8_t flags, std::uint32_t deadline_ms,
                    std::string_view name, std::span<const std::byte> arg, const StreamTag& tag) {
  const bool oneway = (flags & KCCM_F_ONEWAY) != 0;
  if (Space* s = space_ptr(from.space)) {
    if (auto h = s->handlers.find(name); h != s->handlers.end()) {
      std::uint64_t ref = 0;  // one-way: no reply wanted
      if (!oneway) {
        if (refs_.size() >= config_.max_refs) {
          ++stats_.overloaded;
          const std::string text = fmt::format("node {} is answering {} calls already; try again later",
                                               config_.node, refs_.size());
          answer(from, LOCABUS_KCCM_OVERLOADED, bytes_of(std::string_view(text)), tag, true);
          return;
        }
        ref = next_ref_++;
        const engine::Nanos expiry = host_.now() + std::chrono::milliseconds(deadline_ms) + config_.ref_grace;
        refs_.emplace(ref, Ref{from.node, from.space, from.instance, from.caller, from.call_id,
                               h->second.client, std::string(name), expiry});
        expiry_.emplace(expiry, ref);
      }
      std::array<std::byte, sizeof(api::KccmInvokeHeader) + kMaxName> head;
      const api::KccmInvokeHeader ih{ref, deadline_ms, flags, static_cast<std::uint8_t>(name.size()), 0};
      std::memcpy(head.data(), &ih, sizeof ih);
      std::memcpy(head.data() + sizeof ih, name.data(), name.size());
      ++stats_.invokes;
      host_.deliver(h->second.client, api::kRecordKccmInvoke, from.node,
                    std::span<const std::byte>(head.data(), sizeof ih + name.size()), arg, tag);
      return;
    }
  }
  if (name == kEcho || name == kNodeInfo) {
    ++stats_.builtin;
    if (oneway) {
      host_.consume(tag);
      return;
    }
    if (name == kEcho) {
      answer(from, LOCABUS_KCCM_OK, arg, tag, true);
    } else {
      const std::string info = node_info();
      answer(from, LOCABUS_KCCM_OK, bytes_of(std::string_view(info)), tag, true);
    }
    return;
  }
  // One-way calls hear of it too: the caller's library reports it.
  ++stats_.no_such_handler;
  const std::string text =
      fmt::format("no handler {} in space {} on node {}", name, from.space, config_.node);
  answer(from, LOCABUS_KCCM_NO_SUCH_HANDLER, bytes_of(std::string_view(text)), tag, true);
}

engine::SendStatus Node::answer(const CallFrom& from, std::uint8_t status, std::span<const std::byte> body,
                                const StreamTag& tag, bool queue) {
  if (from.node == config_.node) {
    auto c = clients_.find(from.caller);
    if (c == clients_.end() || c->second.leaving || c->second.space != from.space) {
      ++stats_.results_unclaimed;
      host_.consume(tag);
      return engine::SendStatus::ok;
    }
    const api::KccmResultHeader rh{from.call_id, status, {}};
    ++stats_.results;
    host_.deliver(from.caller, api::kRecordKccmResult, config_.node, bytes_of(rh), body, tag);
    return engine::SendStatus::ok;
  }
  Frame f;
  f.type = KCCM_T_REPLY;
  f.status = status;
  f.instance = from.instance;
  f.caller = from.caller;
  f.call_id = from.call_id;
  f.body = body;
  write_frame(f, frame_);
  const engine::SendStatus st = host_.send(from.node, from.space, frame_, Origin{0, 0});
  if (st == engine::SendStatus::ok) {
    ++stats_.replies_out;
    host_.consume(tag);
    return st;
  }
  if (st == engine::SendStatus::would_block) {
    if (!queue) return st;
    if (pending_.size() >= config_.max_pending_replies) {
      ++stats_.replies_dropped;
      host_.consume(tag);
      return engine::SendStatus::ok;
    }
    // The CALL stays unconsumed until its REPLY is out: a caller's node
    // cannot make us hold more than its credit's worth.
    pending_.push_back(PendingReply{from.node, from.space, tag, frame_});
    return engine::SendStatus::ok;
  }
  ++stats_.reply_failures;  // the node is gone or unknown: its daemon fails the call
  host_.consume(tag);
  return st;
}

// ---- the network --------------------------------------------------------------------

void Node::on_frame(std::uint16_t node, std::uint16_t space, bool broadcast,
                    std::span<const std::byte> datagram, const StreamTag& tag) {
  const std::optional<Frame> f = parse_frame(datagram);
  // A DATA or REPLY is never broadcast: refused like a malformed frame.
  if (!f || (broadcast && f->type != KCCM_T_CALL)) {
    ++stats_.bad_frames;
    host_.refuse(tag, LOCABUS_REFUSE_INCOMPLETE);
    return;
  }
  switch (f->type) {
    case KCCM_T_DATA: {
      ++stats_.messages_in;
      Space* s = space_ptr(space);
      if (!s || !client_of(space)) {
        ++stats_.no_endpoint;
        host_.refuse(tag, LOCABUS_REFUSE_NO_ENDPOINT);
        return;
      }
      arrive(*s, node, f->tag, false, tag, f->body);
      return;
    }
    case KCCM_T_CALL:
      ++stats_.calls_in;
      dispatch(CallFrom{node, space, f->instance, f->caller, f->call_id},
               static_cast<std::uint8_t>(f->flags & (KCCM_F_ONEWAY | KCCM_F_BCAST)), f->deadline_ms, f->name,
               f->body, tag);
      return;
    default: break;
  }
  // REPLY: to one of our clients of this life, attached to that space.
  auto c = clients_.find(f->caller);
  if (f->instance != instance_ || c == clients_.end() || c->second.leaving || c->second.space != space) {
    ++stats_.replies_refused;
    host_.refuse(tag, LOCABUS_REFUSE_CLOSED);
    return;
  }
  const api::KccmResultHeader rh{f->call_id, f->status, {}};
  ++stats_.results;
  host_.deliver(f->caller, api::kRecordKccmResult, node, bytes_of(rh), f->body, tag);
}

void Node::set_alive(std::uint16_t node, bool alive) {
  if (node == config_.node || node == LOCABUS_NODE_BROADCAST) return;
  if (alive) {
    alive_.insert(node);
  } else {
    alive_.erase(node);
  }
}

void Node::forget_node(std::uint16_t node) {
  for (auto it = refs_.begin(); it != refs_.end();) {
    if (it->second.origin == node && node != config_.node) {
      ++stats_.refs_forgotten;
      expiry_.erase({it->second.expiry, it->first});
      it = refs_.erase(it);
    } else {
      ++it;
    }
  }
  const auto before = pending_.size();
  std::erase_if(pending_, [&](const PendingReply& p) { return p.node == node; });
  stats_.replies_dropped += before - pending_.size();
}

void Node::erase_ref(std::unordered_map<std::uint64_t, Ref>::iterator it) {
  expiry_.erase({it->second.expiry, it->first});
  refs_.erase(it);
}

// ---- time ---------------------------------------------------------------------------

int Node::do_work() {
  int work = 0;
  const engine::Nanos now = host_.now();
  while (!expiry_.empty() && expiry_.begin()->first <= now) {
    refs_.erase(expiry_.begin()->second);
    expiry_.erase(expiry_.begin());
    ++stats_.refs_expired;
    ++work;
  }
  for (auto it = pending_.begin(); it != pending_.end();) {
    const engine::SendStatus st = host_.send(it->node, it->space, it->frame, Origin{0, 0});
    if (st == engine::SendStatus::would_block) {
      ++it;
      continue;
    }
    if (st == engine::SendStatus::ok) {
      ++stats_.replies_out;
    } else {
      ++stats_.reply_failures;
    }
    host_.consume(it->call);
    it = pending_.erase(it);
    ++work;
  }
  return work;
}

std::optional<engine::Nanos> Node::next_deadline() const {
  if (expiry_.empty()) return std::nullopt;
  return expiry_.begin()->first;
}

std::string Node::node_info() const {
  nlohmann::json j;
  j["node"] = config_.node;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  j["hostname"] = std::string(host);
  const auto up = read_numbers("/proc/uptime", 1);
  j["uptime_s"] = up.empty() ? 0.0 : up[0];
  j["load"] = read_numbers("/proc/loadavg", 3);
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  j["cpus"] = cpus > 0 ? cpus : static_cast<long>(std::thread::hardware_concurrency());
  j["version"] = kVersion;
  j["daemon_uptime_s"] = std::chrono::duration<double>(host_.now() - started_).count();
  return j.dump();
}

}  // namespace locabus::kccm
