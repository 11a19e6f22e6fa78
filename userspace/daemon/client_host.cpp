// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon/client_host.hpp"

#include <grp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <locabus/locabus.h>
#include <locabus/wire.h>

#include "api/control.hpp"
#include "common/error.hpp"
#include "daemon/daemon.hpp"
#include "daemon/request_fields.hpp"
#include "daemon/router.hpp"

namespace locabus::daemon {

namespace {

constexpr std::size_t kMaxEventBacklog = 4096;  // queued events per slow client
constexpr std::size_t kClientBatch = 256;       // sends taken from one client per cycle
constexpr std::size_t kMaxClients = 1024;       // connections (each costs 3 fds and, open, 4 MiB)
constexpr std::size_t kMaxRefused = 64;         // refused connections kept open to read why
constexpr engine::Nanos kDrainLimit = std::chrono::seconds(60);  // a closed client's sends wait this long

// The C API's numbers are the engine's (include/locabus/locabus.h).
static_assert(static_cast<int>(engine::EventKind::joined) == LOCABUS_EV_JOINED);
static_assert(static_cast<int>(engine::EventKind::id_conflict) == LOCABUS_EV_ID_CONFLICT);
static_assert(static_cast<int>(engine::EventKind::send_failed) == LOCABUS_EV_SEND_FAILED);
static_assert(static_cast<int>(engine::EventKind::broadcast_lost) == LOCABUS_EV_BROADCAST_LOST);
static_assert(static_cast<int>(engine::Failure::unreachable) == LOCABUS_FAIL_UNREACHABLE);
static_assert(static_cast<int>(engine::Failure::shutdown) == LOCABUS_FAIL_SHUTDOWN);
static_assert(static_cast<int>(engine::Failure::released) == LOCABUS_FAIL_RELEASED);
static_assert(sizeof(locabus_event) == 56);

std::uint8_t refusal_code(engine::SendStatus s) {
  switch (s) {
    case engine::SendStatus::unknown_node: return LOCABUS_FAIL_UNKNOWN_NODE;
    case engine::SendStatus::invalid_node:
    case engine::SendStatus::too_large: return LOCABUS_FAIL_INVALID_NODE;
    case engine::SendStatus::closing: return LOCABUS_FAIL_CLOSED;
    default: return LOCABUS_FAIL_UNREACHABLE;
  }
}

locabus_event to_record(const engine::Event& e) {
  locabus_event r{};
  r.kind = static_cast<std::uint8_t>(e.kind);
  r.failure = static_cast<std::uint8_t>(e.failure);
  r.node = e.node;
  r.epoch = e.epoch;
  r.old_epoch = e.old_epoch;
  r.first_message = e.first_message;
  r.count = e.count;
  std::memcpy(r.mac, e.mac.bytes.data(), 6);
  std::memcpy(r.other_mac, e.other_mac.bytes.data(), 6);
  return r;
}

}  // namespace

ClientHost::ClientHost(const Config& cfg, EventLoop& loop, const engine::Clock& clock,
                       const Introspection& introspection, Router& router)
    : cfg_(cfg),
      loop_(loop),
      clock_(clock),
      introspection_(introspection),
      router_(router),
      path_(cfg.socket_path()) {
  if (!cfg_.api_group.empty()) {
    errno = 0;
    const group* g = ::getgrnam(cfg_.api_group.c_str());
    if (!g)
      throw Error("look up api_group '" + cfg_.api_group + "'", errno ? errno : ENOENT,
                  "create the group (groupadd) or fix api_group");
    api_gid_ = g->gr_gid;
  }

  std::error_code ec;
  std::filesystem::create_directories(path_.parent_path(), ec);
  if (ec) throw Error("create " + path_.parent_path().string(), ec.value(), privilege_hint(ec.value()));

  // A socket file may be left by a daemon that was killed. If something
  // answers on it, another daemon is using this path: refuse.
  if (std::filesystem::exists(std::filesystem::symlink_status(path_))) {
    bool live = false;
    try {
      api::connect_control(path_);
      live = true;
    } catch (const Error&) {
    }
    if (live)
      throw Error("the API socket " + path_.string() + " is in use by a running daemon", EADDRINUSE,
                  "give this daemon its own --api-socket or --run-dir");
    spdlog::info("replacing stale API socket {}", path_.string());
    std::filesystem::remove(path_, ec);
  }

  listen_ = UniqueFd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_) throw Error("create the API socket", errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string p = path_.string();
  if (p.size() >= sizeof(addr.sun_path)) throw Error("API socket path " + p + " is too long", ENAMETOOLONG);
  std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);
  const mode_t old = ::umask(0177);  // nobody can connect before chmod below
  const int r = ::bind(listen_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int bind_err = errno;
  ::umask(old);
  if (r != 0) throw Error("bind the API socket " + p, bind_err, privilege_hint(bind_err));
  if (api_gid_ && ::chown(p.c_str(), static_cast<uid_t>(-1), *api_gid_) != 0)
    throw Error("give " + p + " to group " + cfg_.api_group, errno);
  if (::chmod(p.c_str(), cfg_.api_mode) != 0) throw Error("chmod " + p, errno);
  if (::listen(listen_.get(), 64) != 0) throw Error("listen on " + p, errno);

  loop_.watch(listen_.get(), [this](std::uint32_t) { accept_clients(); });
  spdlog::info("API socket {} (mode {:04o}{})", p, cfg_.api_mode,
               api_gid_ ? ", group " + cfg_.api_group : std::string());
}

// Explicit, although closing the fds would do: cheap, and independent of
// who else might hold a duplicate.
void ClientHost::forget(ClientId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  close_endpoint(c);
  if (c.refused_until) --refused_count_;
  loop_.unwatch(c.sock.get());
  if (c.bell.fd() >= 0) loop_.unwatch(c.bell.fd());
  clients_.erase(it);
}

ClientHost::~ClientHost() {
  while (!clients_.empty()) forget(clients_.begin()->first);
  stop_accepting();
}

void ClientHost::stop_accepting() {
  if (!listen_) return;
  loop_.unwatch(listen_.get());
  listen_.reset();
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

void ClientHost::watch_socket(Client& c) {
  const ClientId id = c.id;
  loop_.watch(c.sock.get(), [this, id](std::uint32_t ev) {
    if (ev & (EPOLLHUP | EPOLLERR)) {
      if (auto it = clients_.find(id); it != clients_.end()) hangup(*it->second);
    } else {
      on_client_readable(id);
    }
  });
}

void ClientHost::watch_bell(Client& c) {
  const ClientId id = c.id;
  loop_.watch(c.bell.fd(), [this, id](std::uint32_t ev) {
    auto it = clients_.find(id);
    if (it == clients_.end()) return;
    if (ev & (EPOLLHUP | EPOLLERR))
      hangup(*it->second);
    else
      it->second->bell.drain();
  });
}

bool ClientHost::authorized(const Client& c, std::string& why) const {
  if (c.cred.uid == 0 || c.cred.uid == ::geteuid()) return true;
  if (api_gid_) {
    if (c.cred.gid == *api_gid_) return true;
    // Supplementary groups of the peer, as of connect().
    std::vector<gid_t> groups(64);
    socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(c.sock.get(), SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) != 0) {
      if (errno == ERANGE) {
        groups.resize(len / sizeof(gid_t));
        len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
        if (::getsockopt(c.sock.get(), SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) != 0) len = 0;
      } else {
        len = 0;  // never trust what a failed call left in the buffer
      }
    }
    groups.resize(len / sizeof(gid_t));
    for (gid_t g : groups)
      if (g == *api_gid_) return true;
    why = fmt::format("uid {} is neither root nor in group {}", c.cred.uid, cfg_.api_group);
  } else {
    why = fmt::format("uid {} is not root (no api_group is configured)", c.cred.uid);
  }
  return false;
}

void ClientHost::accept_clients() {
  while (listen_) {
    UniqueFd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      const int err = errno;
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        // The connection stays queued and the socket readable: stop
        // listening for a moment instead of spinning on it.
        loop_.unwatch(listen_.get());
        accept_paused_until_ = clock_.now() + std::chrono::milliseconds(200);
        spdlog::warn("API: cannot accept clients ({}); pausing for 200 ms. Raise the fd limit (LimitNOFILE)",
                     error_text(err));
      } else if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR && err != ECONNABORTED) {
        spdlog::warn("accept on the API socket: {}", error_text(err));
      }
      return;
    }
    auto c = std::make_unique<Client>();
    c->id = next_id_++;
    c->sock = std::move(fd);
    socklen_t len = sizeof(c->cred);
    if (::getsockopt(c->sock.get(), SOL_SOCKET, SO_PEERCRED, &c->cred, &len) != 0) {
      spdlog::warn("API: SO_PEERCRED failed ({}); refusing the connection", error_text(errno));
      ++counters_.refused;
      continue;
    }
    c->who = fmt::format("pid {} (uid {})", c->cred.pid, c->cred.uid);
    std::string why;
    if (!authorized(*c, why)) {
      ++counters_.refused;
      spdlog::warn("API: refused {}: {}", c->who, why);
      const nlohmann::json refusal = {
          {"ok", false},
          {"errno", EACCES},
          {"error", "not authorized: " + why},
          {"hint", "run as root, or ask the operator to add you to the daemon's api_group"}};
      try {
        api::send_control(c->sock.get(), refusal);
      } catch (const Error&) {
      }
      // Closing now would reset the connection under a request the client
      // may have sent already, and it would never read why. Keep it a
      // moment, answering every request with the refusal; few at a time.
      if (refused_count_ >= kMaxRefused) continue;
      c->refusal = refusal;
      c->refused_until = clock_.now() + std::chrono::seconds(2);
      try {
        watch_socket(*c);
      } catch (const Error&) {
        continue;
      }
      ++refused_count_;
      clients_.emplace(c->id, std::move(c));
      continue;
    }
    if (clients_.size() >= kMaxClients) {
      ++counters_.refused;
      spdlog::warn("API: refused {}: {} clients already connected", c->who, kMaxClients);
      try {
        api::send_control(c->sock.get(),
                          {{"ok", false},
                           {"errno", EUSERS},
                           {"error", fmt::format("locabusd already serves {} clients", kMaxClients)},
                           {"hint", "close endpoints you no longer use"}});
      } catch (const Error&) {
      }
      continue;
    }
    // A control reply is one message, up to api::kMaxControlMessage: the
    // send buffer must hold it whole. SO_SNDBUF is capped by
    // net.core.wmem_max (208 KiB on a default kernel); the daemon has
    // CAP_NET_ADMIN, so it forces the size past that cap.
    const int sndbuf = static_cast<int>(api::kMaxControlMessage) + (64 << 10);
    if (::setsockopt(c->sock.get(), SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) != 0)
      ::setsockopt(c->sock.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    try {
      watch_socket(*c);
    } catch (const Error& e) {
      spdlog::warn("API: cannot watch {}: {}", c->who, e.what());
      continue;
    }
    ++counters_.accepted;
    spdlog::debug("API: client {} connected: {}", c->id, c->who);
    clients_.emplace(c->id, std::move(c));
  }
}

void ClientHost::reply(Client& c, const nlohmann::json& msg, std::span<const int> fds) {
  api::send_control(c.sock.get(), msg, fds);  // Error: the caller drops the client
}

bool ClientHost::doomed(ClientId id) const {
  return std::find(doomed_.begin(), doomed_.end(), id) != doomed_.end();
}

// The client's service forgets it; what still waited for it will never be
// read: its senders are told.
void ClientHost::close_endpoint(Client& c) {
  if (!c.owner) return;
  for (const Pending& p : c.backlog) {
    if (p.tag.count == 0) continue;
    counters_.refused_on_close += p.tag.count;
    router_.refuse(p.tag, LOCABUS_REFUSE_CLOSED);
  }
  c.backlog.clear();
  const bool had_broadcasts = c.broadcast_backlog != 0;
  c.broadcast_backlog = 0;
  c.events_in_backlog = 0;
  if (had_broadcasts) router_.unpark();  // streams parked and holds asked for it end
  Service* s = c.owner;
  c.owner = nullptr;
  s->close(c.id);
}

void ClientHost::drop(ClientId id, const std::string& why) {
  auto it = clients_.find(id);
  if (it == clients_.end() || doomed(id)) return;
  Client& c = *it->second;
  if (c.open()) {
    spdlog::info("API: {} of {} closed: {}", c.what, c.who, why);
    close_endpoint(c);
  } else {
    spdlog::debug("API: client {} ({}) gone: {}", id, c.who, why);
  }
  doomed_.push_back(id);
}

// A client that closed its endpoint (or exited) may have left sends in its
// ring: they were accepted by liblocabus, so hand them to the service first.
void ClientHost::hangup(Client& c) {
  if (c.draining) return;
  bool pending = false;
  if (c.open() && !doomed(c.id)) {
    try {
      pump_to_engine(c);
      pending = c.send_blocked || !c.region->consumer().empty();
    } catch (const ClientFault&) {
    }
  }
  if (!pending) return drop(c.id, "connection closed");
  // Keep the ring until the service has taken every send (or refused it:
  // an unreachable peer fails them), for at most kDrainLimit: a receiver
  // that stopped reading grants no credit, and nobody is left to wait for
  // it. Nobody will read what waits for this client.
  c.draining = true;
  c.draining_until = clock_.now() + kDrainLimit;
  for (const Pending& p : c.backlog)
    if (p.tag.count) {
      counters_.refused_on_close += p.tag.count;
      router_.refuse(p.tag, LOCABUS_REFUSE_CLOSED);
    }
  c.backlog.clear();
  const bool had_broadcasts = c.broadcast_backlog != 0;
  c.broadcast_backlog = 0;
  c.events_in_backlog = 0;
  if (had_broadcasts) router_.unpark();
  c.owner->unbind(c.id);
  loop_.unwatch(c.sock.get());
  loop_.unwatch(c.bell.fd());
  spdlog::info("API: {} closed {}; queueing its remaining sends", c.who, c.what);
}

void ClientHost::on_client_readable(ClientId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  for (int i = 0; i < 16; ++i) {  // bounded: one chatty client cannot starve the rest
    std::optional<nlohmann::json> req;
    bool timed_out = false;
    try {
      req = api::receive_control(c.sock.get(), nullptr, std::chrono::milliseconds(0), &timed_out);
    } catch (const Error& e) {
      ++counters_.protocol_errors;
      return drop(id, e.what());
    }
    if (timed_out) return;
    if (!req) return hangup(c);
    try {
      handle_request(c, *req);
    } catch (const Error& e) {
      // An endpoint keeps what it had queued, as on any hangup.
      spdlog::warn("API: reply to {} failed: {}", c.who, e.what());
      return hangup(c);
    } catch (const std::exception& e) {  // e.g. nlohmann::json::type_error: never the daemon's end
      ++counters_.protocol_errors;
      spdlog::warn("API: bad request from {}: {}", c.who, e.what());
      return hangup(c);
    }
  }
}

void ClientHost::handle_request(Client& c, const nlohmann::json& req) {
  if (c.refused_until) return reply(c, c.refusal);
  // Fields of the wrong type are refused, not guessed at.
  for (const auto& [key, ok] :
       {std::pair{"op", req.contains("op") && req["op"].is_string()},
        std::pair{"version", !req.contains("version") || req["version"].is_number_integer()},
        std::pair{"proto", !req.contains("proto") || req["proto"].is_number_integer()},
        std::pair{"events", !req.contains("events") || req["events"].is_boolean()},
        std::pair{"port", !req.contains("port") || req["port"].is_number_integer()},
        std::pair{"broadcast_records",
                  !req.contains("broadcast_records") || req["broadcast_records"].is_boolean()},
        std::pair{"max_event_kind",
                  !req.contains("max_event_kind") || req["max_event_kind"].is_number_integer()}})
    if (!ok)
      return reply(c, {{"ok", false},
                       {"errno", EINVAL},
                       {"error", fmt::format("request field '{}' is missing or has the wrong type", key)},
                       {"hint", "see docs/API.md for the requests"}});
  const std::string op = str_field(req, "op");
  auto fail = [&](int err, const std::string& what, const std::string& hint = {}) {
    reply(c, {{"ok", false}, {"errno", err}, {"error", what}, {"hint", hint}});
  };
  if (op == "status") return reply(c, {{"ok", true}, {"status", introspection_.status()}});
  if (op == "peers") return reply(c, {{"ok", true}, {"peers", introspection_.peers()}});
  if (op == "counters") return reply(c, {{"ok", true}, {"counters", introspection_.counters()}});
  if (op != "open") {
    // Requests of the services (e.g. "monitor").
    if (auto answer = router_.control(op, req, c.id)) return reply(c, *answer);
    return fail(EINVAL, "unknown request '" + op + "'", "see docs/API.md for the requests");
  }

  const std::int64_t version = int_field(req, "version", 0);
  if (version != api::kProtocolVersion)
    return fail(EPROTO,
                fmt::format("protocol version {} is not supported (this daemon speaks {})", version,
                            api::kProtocolVersion),
                "use a liblocabus that matches the daemon");
  if (c.open() || c.draining)
    return fail(EISCONN, "this connection already has an endpoint", "open another connection");
  Service* service = router_.service_for(req);
  if (!service)
    return fail(EINVAL, "no service of this daemon takes this open request",
                "see docs/API.md for the requests");
  OpenResult r = service->open(c.id, req);
  if (r.refused) return fail(r.refused->err, r.refused->error, r.refused->hint);

  try {
    c.region.emplace(api::SharedRegion::create(fmt::format("locabus-c{}", c.id), cfg_.ring_bytes));
    auto [mine, theirs] = api::Doorbell::create_pair();
    c.bell = std::move(mine);
    c.events = bool_field(req, "events");
    c.max_event_kind = static_cast<int>(std::clamp<std::int64_t>(
        int_field(req, "max_event_kind", LOCABUS_EV_OVERRUN), LOCABUS_EV_OVERRUN, 255));
    c.receives = r.receives;
    c.what = r.what;
    c.info = r.reply;
    watch_bell(c);
    nlohmann::json answer = r.reply;
    answer["ok"] = true;
    answer["node_id"] = router_.node_id();
    answer["ring_bytes"] = cfg_.ring_bytes;
    const int fds[2] = {c.region->fd(), theirs.fd()};
    reply(c, answer, fds);
  } catch (...) {
    service->close(c.id);  // the binding goes with the client
    throw;
  }
  c.owner = service;
  spdlog::info("API: {} opened {}{}", c.who, c.what, c.events ? " with events" : "");
}

void ClientHost::publish(Client& c) {
  if (c.region->producer().publish()) c.bell.ring();
}

// Client -> service. A send the service cannot take yet (would_block) stays
// in the ring and is retried first next time, so order is preserved.
int ClientHost::pump_to_engine(Client& c) {
  auto& in = c.region->consumer();
  c.send_blocked = false;
  std::string bad_record;
  const auto r = in.read(
      kClientBatch, [&](std::uint16_t type, std::uint16_t aux, std::span<const std::byte> payload) -> bool {
        // The payload is in memory the client can still write; services copy
        // what they keep before returning, so a misbehaving client garbles
        // only its own message.
        const RecordResult res = c.owner->on_record(c.id, type, aux, payload, c.sent);
        switch (res.kind) {
          case RecordResult::would_block: c.send_blocked = true; return false;
          case RecordResult::fault: bad_record = res.error; return false;
          case RecordResult::refused: {
            ++c.sent;
            ++c.refused;
            ++counters_.send_refused;
            if (c.draining) return true;  // nobody is left to tell
            locabus_event ev{};
            ev.kind = LOCABUS_EV_SEND_FAILED;
            ev.failure = refusal_code(res.status);
            ev.node = res.node;
            ev.first_message = c.sent - 1;
            ev.count = 1;
            deliver_event(c, ev);
            return true;
          }
          case RecordResult::accepted: break;
        }
        ++c.sent;
        ++counters_.records_in;
        return true;
      });
  if (!r) throw ClientFault(std::string(api::describe(r.error)));
  if (!bad_record.empty()) throw ClientFault(bad_record);
  if (r.wake_producer) c.bell.ring();
  if (r.records == 0 && !c.send_blocked && arm_sleep_ && !in.prepare_sleep())
    return 1;  // arrived meanwhile: go again
  return static_cast<int>(r.records);
}

bool ClientHost::write_record(Client& c, std::uint16_t type, std::uint16_t aux,
                              std::span<const std::byte> bytes, std::span<const std::byte> more) {
  switch (c.region->producer().try_write(type, aux, bytes, more)) {
    case api::RingProducer::Status::kWritten: ++counters_.records_out; return true;
    case api::RingProducer::Status::kFull: return false;
    case api::RingProducer::Status::kInvalid:
      throw ClientFault(
          fmt::format("a record of {} bytes does not fit the ring", bytes.size() + more.size()));
    case api::RingProducer::Status::kProtocolError: break;
  }
  throw ClientFault(std::string(api::describe(c.region->producer().error())));
}

// Backlog -> client ring. What enters the ring is consumed: credit for its sender.
int ClientHost::pump_to_client(Client& c) {
  int work = 0;
  bool broadcast_moved = false;
  while (!c.backlog.empty()) {
    Pending& p = c.backlog.front();
    if (!write_record(c, p.type, p.aux, p.bytes)) break;
    if (p.type == api::kRecordEvent) --c.events_in_backlog;
    if (p.broadcast) {
      --c.broadcast_backlog;
      broadcast_moved = true;
    }
    router_.consumed(p.tag);
    c.backlog.pop_front();
    ++work;
  }
  if (broadcast_moved) router_.unpark();
  if (c.backlog.empty() && c.events_dropped_unreported) {
    locabus_event ev{};
    ev.kind = LOCABUS_EV_OVERRUN;
    ev.count = c.events_dropped_unreported;
    if (write_record(c, api::kRecordEvent, 0, std::as_bytes(std::span(&ev, 1))))
      c.events_dropped_unreported = 0;
  }
  publish(c);
  if (!c.backlog.empty() && !c.region->producer().prepare_sleep(c.backlog.front().bytes.size()))
    ++work;  // space appeared meanwhile: go again
  return work;
}

void ClientHost::deliver_event(Client& c, const locabus_event& ev) {
  const auto bytes = std::as_bytes(std::span(&ev, 1));
  ++counters_.events_out;
  if (c.backlog.empty() && write_record(c, api::kRecordEvent, ev.node, bytes)) return;
  if (c.events_in_backlog >= kMaxEventBacklog) {
    --counters_.events_out;
    ++c.events_dropped_unreported;
    ++counters_.events_dropped;
    return;
  }
  c.backlog.push_back(Pending{api::kRecordEvent, ev.node, false, {}, {bytes.begin(), bytes.end()}});
  ++c.events_in_backlog;
}

void ClientHost::failed(const ClientFailure& f) {
  auto it = clients_.find(f.client);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  c.failed += f.count;
  if (!c.open() || c.draining || doomed(c.id)) return;  // nobody is left to tell
  ++counters_.send_failures;
  locabus_event ev{};
  ev.kind = LOCABUS_EV_SEND_FAILED;
  ev.failure = f.failure;
  ev.node = f.node;
  ev.first_message = f.first;
  ev.count = f.count;
  try {
    deliver_event(c, ev);
    touched_.push_back(c.id);
  } catch (const ClientFault& e) {
    fault(c, e);
  }
}

void ClientHost::on_event(const engine::Event& e) {
  const locabus_event rec = to_record(e);
  for (auto& [id, cp] : clients_) {
    Client& c = *cp;
    if (!c.open() || c.draining || doomed(id)) continue;
    if (rec.kind > c.max_event_kind) continue;  // a client from before that kind existed
    // broadcast_lost: to whoever can receive broadcasts (which protocol or
    // port the lost messages were for is unknowable) and to monitors. The
    // rest (membership and connection events) to clients opened with
    // events. send_failed never comes here: the router names each
    // client's own messages (failed()).
    bool wanted = c.events;
    if (e.kind == engine::EventKind::send_failed) continue;
    if (e.kind == engine::EventKind::broadcast_lost) wanted = c.events || c.receives;
    if (!wanted) continue;
    try {
      deliver_event(c, rec);
      publish(c);
    } catch (const ClientFault& f) {
      fault(c, f);
    }
  }
}

void ClientHost::fault(Client& c, const ClientFault& f) {
  ++counters_.protocol_errors;
  spdlog::warn("API: {} broke the ring protocol ({}); closing its endpoint", c.who, f.what());
  drop(c.id, "protocol error");
}

// Queues a record for the client: into its ring when nothing waits before
// it, else at the end of its backlog. Published at the end of the pass.
void ClientHost::deliver(ClientId id, std::uint16_t type, std::uint16_t aux, std::span<const std::byte> head,
                         std::span<const std::byte> body, const StreamTag& tag, bool broadcast) {
  auto it = clients_.find(id);
  Client* c = it == clients_.end() ? nullptr : it->second.get();
  if (!c || !c->open() || c->draining || doomed(id)) {
    if (tag.count) {
      counters_.refused_on_close += tag.count;
      router_.refuse(tag, LOCABUS_REFUSE_CLOSED);
    }
    return;
  }
  ++c->received;
  touched_.push_back(id);
  try {
    if (c->backlog.empty() && write_record(*c, type, aux, head, body)) {
      router_.consumed(tag);
      return;
    }
  } catch (const ClientFault& f) {
    fault(*c, f);  // closes the endpoint; this record was never queued: refuse it too
    if (tag.count) router_.refuse(tag, LOCABUS_REFUSE_CLOSED);
    return;
  }
  Pending p{type, aux, broadcast, tag, {}};
  p.bytes.reserve(head.size() + body.size());
  p.bytes.insert(p.bytes.end(), head.begin(), head.end());
  p.bytes.insert(p.bytes.end(), body.begin(), body.end());
  c->backlog.push_back(std::move(p));
  if (broadcast) ++c->broadcast_backlog;
  ++counters_.backlogged;
}

std::size_t ClientHost::broadcast_backlog(ClientId id) const {
  auto it = clients_.find(id);
  return it == clients_.end() ? 0 : it->second->broadcast_backlog;
}

std::size_t ClientHost::backlog(ClientId id) const {
  auto it = clients_.find(id);
  return it == clients_.end() ? 0 : it->second->backlog.size();
}

std::string ClientHost::who(ClientId id) const {
  auto it = clients_.find(id);
  return it == clients_.end() ? fmt::format("client {}", id) : it->second->who;
}

void ClientHost::listen_again() {
  if (!accept_paused_until_ || clock_.now() < *accept_paused_until_ || !listen_) return;
  accept_paused_until_.reset();
  try {
    loop_.watch(listen_.get(), [this](std::uint32_t) { accept_clients(); });
  } catch (const Error& e) {
    spdlog::warn("API: cannot listen again: {}", e.what());
    accept_paused_until_ = clock_.now() + std::chrono::milliseconds(200);
  }
}

int ClientHost::do_work(bool arm_sleep) {
  arm_sleep_ = arm_sleep;
  int work = 0;
  listen_again();
  for (auto& [id, cp] : clients_) {
    Client& c = *cp;
    if (!c.open() || doomed(id)) continue;
    try {
      if (c.draining) {
        work += pump_to_engine(c);
        if (!c.send_blocked && c.region->consumer().empty()) {
          drop(id, "connection closed, its sends queued");
        } else if (clock_.now() >= c.draining_until) {
          ++counters_.drain_abandoned;
          spdlog::warn(
              "API: {} closed {} {} s ago with sends its destination has not taken (a receiver that "
              "does not read); discarding them",
              c.who, c.what, std::chrono::duration_cast<std::chrono::seconds>(kDrainLimit).count());
          drop(id, "closed, its last sends discarded after the drain limit");
        }
        continue;
      }
      work += pump_to_client(c);
      work += pump_to_engine(c);
    } catch (const ClientFault& f) {
      fault(c, f);
    }
  }
  return work;
}

int ClientHost::finish_pass() {
  int work = 0;
  std::sort(touched_.begin(), touched_.end());
  touched_.erase(std::unique(touched_.begin(), touched_.end()), touched_.end());
  for (ClientId id : touched_) {
    auto it = clients_.find(id);
    if (it == clients_.end() || doomed(id) || !it->second->open()) continue;
    Client& c = *it->second;
    publish(c);
    // Either the client rings when it frees space, or space is there now
    // and the next cycle moves the backlog.
    if (!c.backlog.empty() && !c.region->producer().prepare_sleep(c.backlog.front().bytes.size())) ++work;
  }
  touched_.clear();
  expire_refused();
  for (ClientId id : doomed_) forget(id);
  doomed_.clear();
  return work;
}

void ClientHost::expire_refused() {
  const engine::Nanos now = clock_.now();
  for (auto& [id, c] : clients_)
    if (c->refused_until && now >= *c->refused_until) drop(id, "refused");
}

std::optional<engine::Nanos> ClientHost::next_deadline() const {
  std::optional<engine::Nanos> next = accept_paused_until_;
  for (const auto& [id, c] : clients_) {
    if (c->refused_until && (!next || *c->refused_until < *next)) next = c->refused_until;
    if (c->draining && (!next || c->draining_until < *next)) next = c->draining_until;
  }
  return next;
}

void ClientHost::counters(CounterGroups& out) const {
  nlohmann::json eps = nlohmann::json::array();
  for (const auto& [id, c] : clients_) {
    if (!c->open()) continue;
    nlohmann::json ep = c->info;
    ep.update(c->owner->describe(id));
    ep.update({{"service", c->owner->name()},
               {"pid", c->cred.pid},
               {"uid", c->cred.uid},
               {"events", c->events},
               {"sent", c->sent},
               {"received", c->received},
               {"refused", c->refused},
               {"failed", c->failed},
               {"backlog", c->backlog.size()}});
    eps.push_back(std::move(ep));
  }
  static constexpr CounterField kClients{"clients", "clients connected", CounterKind::gauge};
  CounterGroup g = json_group("api", "the local API: clients, rings, backlogs, events",
                              nlohmann::json{{"endpoints", std::move(eps)}});
  g.add(kClients, clients_.size()).add(counters_);
  out.push_back(std::move(g));
}

}  // namespace locabus::daemon
