// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon/server.hpp"

#include <grp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <bitset>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <locabus/locabus.h>
#include <locabus/wire.h>

#include "api/control.hpp"
#include "api/shm.hpp"
#include "common/error.hpp"
#include "daemon/daemon.hpp"

namespace locabus::daemon {

namespace {

// epoll data: the kind in the top byte, the client id below.
constexpr std::uint64_t kListenTag = 0;
constexpr std::uint64_t kSocketKind = 1ULL << 56;
constexpr std::uint64_t kBellKind = 2ULL << 56;
constexpr std::uint64_t kIdMask = (1ULL << 56) - 1;

constexpr std::size_t kMaxEventBacklog = 4096;  // queued events per slow client
constexpr std::size_t kEngineBatch = 256;       // messages taken from the engine per cycle
constexpr std::size_t kClientBatch = 256;       // sends taken from one client per cycle
constexpr std::size_t kMaxClients = 1024;       // connections (each costs 3 fds and, open, 4 MiB)
constexpr std::size_t kMaxRefused = 64;         // refused connections kept open to read why

// The C API's numbers are the engine's (include/locabus/locabus.h).
static_assert(static_cast<int>(engine::EventKind::joined) == LOCABUS_EV_JOINED);
static_assert(static_cast<int>(engine::EventKind::id_conflict) == LOCABUS_EV_ID_CONFLICT);
static_assert(static_cast<int>(engine::EventKind::send_failed) == LOCABUS_EV_SEND_FAILED);
static_assert(static_cast<int>(engine::EventKind::broadcast_lost) == LOCABUS_EV_BROADCAST_LOST);
static_assert(static_cast<int>(engine::Failure::unreachable) == LOCABUS_FAIL_UNREACHABLE);
static_assert(static_cast<int>(engine::Failure::shutdown) == LOCABUS_FAIL_SHUTDOWN);
static_assert(static_cast<int>(engine::Failure::released) == LOCABUS_FAIL_RELEASED);
static_assert(sizeof(locabus_event) == 56);

std::uint8_t failure_code(engine::Failure f) { return static_cast<std::uint8_t>(f); }

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
  r.failure = failure_code(e.failure);
  r.node = e.node;
  r.epoch = e.epoch;
  r.old_epoch = e.old_epoch;
  r.first_message = e.first_message;
  r.count = e.count;
  std::memcpy(r.mac, e.mac.bytes.data(), 6);
  std::memcpy(r.other_mac, e.other_mac.bytes.data(), 6);
  return r;
}

void epoll_add(int ep, int fd, std::uint64_t tag) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = tag;
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) throw Error("epoll_ctl ADD", errno);
}

}  // namespace

/// One record the client's ring had no room for; delivered in order later.
struct Pending {
  std::uint16_t type = 0;
  std::uint16_t aux = 0;
  std::vector<std::byte> bytes;
};

struct Client {
  std::uint64_t id = 0;
  UniqueFd sock;
  ucred cred{};
  std::string who;  // "pid 123 (uid 1000)"

  // the endpoint, once opened
  bool open = false;
  std::uint8_t proto = 0;  // a socket: LOCABUS_P_LOCASOCK
  bool socket = false;     // a Locasock socket bound to `port`, not a protocol endpoint
  std::uint16_t port = 0;
  bool broadcast_records = false;  // understands kRecordBroadcastMessage
  /// The highest event kind it understands ("max_event_kind" in "open"; a
  /// client that does not say knows up to LOCABUS_EV_OVERRUN).
  int max_event_kind = LOCABUS_EV_OVERRUN;
  bool events = false;
  std::optional<api::SharedRegion> region;
  api::Doorbell bell;           // our end: readable when the client rings; ring() wakes the client
  bool send_blocked = false;    // the engine said would_block for the first record of the ring
  std::deque<Pending> backlog;  // records the ring had no room for
  std::optional<engine::Nanos> stalled_since;  // backlog non-empty and not moving since then
  nlohmann::json refusal;                      // not authorized: the answer to every request
  std::optional<engine::Nanos> refused_until;  // ... until the connection is closed
  bool draining = false;                       // hung up; its ring still holds sends for the engine
  std::size_t events_in_backlog = 0;
  std::uint64_t events_dropped_unreported = 0;
  std::unique_ptr<std::bitset<65536>> sent_to;  // nodes this endpoint sent to
  std::uint64_t sent = 0, received = 0, refused = 0;
};

ApiServer::ApiServer(const Config& cfg, engine::Engine& engine, const engine::Clock& clock,
                     const Introspection& introspection)
    : cfg_(cfg),
      engine_(engine),
      clock_(clock),
      introspection_(introspection),
      path_(cfg.socket_path()),
      bus_(std::make_unique<locasock::EngineBus>(engine)),
      service_(std::make_unique<locasock::Service>(*bus_, clock)) {
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

  epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) throw Error("epoll_create1", errno);
  epoll_add(epoll_.get(), listen_.get(), kListenTag);
  spdlog::info("API socket {} (mode {:04o}{})", p, cfg_.api_mode,
               api_gid_ ? ", group " + cfg_.api_group : std::string());
}

// Explicit, although closing the fds would do: cheap, and independent of
// who else might hold a duplicate.
void ApiServer::forget(std::uint64_t id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  if (c.refused_until) --refused_count_;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.sock.get(), nullptr);
  if (c.bell.fd() >= 0) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.bell.fd(), nullptr);
  clients_.erase(it);
}

ApiServer::~ApiServer() {
  while (!clients_.empty()) forget(clients_.begin()->first);
  stop_accepting();
}

void ApiServer::stop_accepting() {
  if (!listen_) return;
  listen_.reset();
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

std::size_t ApiServer::client_count() const noexcept { return clients_.size(); }

bool ApiServer::authorized(const Client& c, std::string& why) const {
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

void ApiServer::accept_clients() {
  while (listen_) {
    UniqueFd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      const int err = errno;
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        // The connection stays queued and the socket readable: stop
        // listening for a moment instead of spinning on it.
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listen_.get(), nullptr);
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
        epoll_add(epoll_.get(), c->sock.get(), kSocketKind | c->id);
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
    const int sndbuf = 1 << 20;
    ::setsockopt(c->sock.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    try {
      epoll_add(epoll_.get(), c->sock.get(), kSocketKind | c->id);
    } catch (const Error& e) {
      spdlog::warn("API: cannot watch {}: {}", c->who, e.what());
      continue;
    }
    ++counters_.accepted;
    spdlog::debug("API: client {} connected: {}", c->id, c->who);
    clients_.emplace(c->id, std::move(c));
  }
}

void ApiServer::reply(Client& c, const nlohmann::json& msg, std::span<const int> fds) {
  api::send_control(c.sock.get(), msg, fds);  // Error: the caller drops the client
}

std::string ApiServer::what(const Client& c) {
  return c.socket ? fmt::format("socket port {}", c.port) : fmt::format("endpoint protocol {}", c.proto);
}

// Frees the client's protocol id or port for others.
void ApiServer::unbind(Client& c) {
  if (c.socket) {
    if (auto it = by_port_.find(c.port); it != by_port_.end() && it->second == &c) by_port_.erase(it);
  } else if (c.proto != LOCABUS_PROTO_NONE && by_proto_[c.proto] == &c) {
    by_proto_[c.proto] = nullptr;
  }
}

void ApiServer::drop(std::uint64_t id, const std::string& why) {
  auto it = clients_.find(id);
  if (it == clients_.end() || std::find(doomed_.begin(), doomed_.end(), id) != doomed_.end()) return;
  Client& c = *it->second;
  if (c.open) {
    spdlog::info("API: {} of {} closed: {}", what(c), c.who, why);
    unbind(c);
  } else {
    spdlog::debug("API: client {} ({}) gone: {}", id, c.who, why);
  }
  doomed_.push_back(id);
}

// A client that closed its endpoint (or exited) may have left sends in its
// ring: they were accepted by liblocabus, so hand them to the engine first.
void ApiServer::hangup(Client& c) {
  if (c.draining) return;
  bool pending = false;
  if (c.open && std::find(doomed_.begin(), doomed_.end(), c.id) == doomed_.end()) {
    try {
      pump_to_engine(c);
      pending = c.send_blocked || !c.region->consumer().empty();
    } catch (const ClientFault&) {
    }
  }
  if (!pending) return drop(c.id, "connection closed");
  // Keep the ring until the engine has taken every send (or refused it:
  // an unreachable peer fails them, so this ends).
  c.draining = true;
  c.stalled_since.reset();
  unbind(c);
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.sock.get(), nullptr);
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.bell.fd(), nullptr);
  spdlog::info("API: {} closed {}; queueing its remaining sends", c.who, what(c));
}

void ApiServer::on_client_readable(std::uint64_t id) {
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

namespace {
// Typed fields of a request; a wrong type reads as absent (and is refused).
std::string str_field(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}
std::int64_t int_field(const nlohmann::json& j, const char* key, std::int64_t absent) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<std::int64_t>() : absent;
}
bool bool_field(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}
}  // namespace

void ApiServer::handle_request(Client& c, const nlohmann::json& req) {
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
  if (op != "open") return fail(EINVAL, "unknown request '" + op + "'", "see docs/API.md for the requests");

  const std::int64_t version = int_field(req, "version", 0);
  if (version != api::kProtocolVersion)
    return fail(EPROTO,
                fmt::format("protocol version {} is not supported (this daemon speaks {})", version,
                            api::kProtocolVersion),
                "use a liblocabus that matches the daemon");
  if (c.open) return fail(EISCONN, "this connection already has an endpoint", "open another connection");
  if (req.contains("port")) return open_socket(c, req);
  const std::int64_t proto = int_field(req, "proto", -1);
  const bool monitor = proto == LOCABUS_PROTO_NONE;
  if (monitor && !bool_field(req, "events"))
    return fail(EINVAL, "an endpoint without a protocol exists only for events",
                "set events, or pick a protocol");
  if (!monitor && (proto < LOCABUS_PROTO_USER_MIN || proto > 255))
    return fail(EINVAL, fmt::format("protocol {} is not an application protocol", proto),
                fmt::format("use {}..255; lower ids belong to Locabus services", LOCABUS_PROTO_USER_MIN));
  if (Client* holder = monitor ? nullptr : by_proto_[proto])
    return fail(EADDRINUSE, fmt::format("protocol {} is already open by {}", proto, holder->who),
                "close that endpoint or use another protocol id");

  c.region.emplace(api::SharedRegion::create(fmt::format("locabus-ep{}", c.id), cfg_.ring_bytes));
  auto [mine, theirs] = api::Doorbell::create_pair();
  c.bell = std::move(mine);
  c.proto = static_cast<std::uint8_t>(proto);
  c.events = bool_field(req, "events");
  c.broadcast_records = bool_field(req, "broadcast_records");
  c.max_event_kind = static_cast<int>(std::clamp<std::int64_t>(
      int_field(req, "max_event_kind", LOCABUS_EV_OVERRUN), LOCABUS_EV_OVERRUN, 255));
  c.sent_to = std::make_unique<std::bitset<65536>>();
  epoll_add(epoll_.get(), c.bell.fd(), kBellKind | c.id);
  const int fds[2] = {c.region->fd(), theirs.fd()};
  reply(c, {{"ok", true}, {"node_id", engine_.node_id()}, {"proto", proto}, {"ring_bytes", cfg_.ring_bytes}},
        fds);
  c.open = true;
  if (!monitor) by_proto_[proto] = &c;
  spdlog::info("API: {} opened protocol {}{}", c.who, proto, c.events ? " with events" : "");
}

// "open" with a "port": a Locasock socket (docs/API.md, "Sockets").
void ApiServer::open_socket(Client& c, const nlohmann::json& req) {
  auto fail = [&](int err, const std::string& what, const std::string& hint = {}) {
    reply(c, {{"ok", false}, {"errno", err}, {"error", what}, {"hint", hint}});
  };
  if (req.contains("proto") && int_field(req, "proto", -1) != LOCABUS_P_LOCASOCK)
    return fail(EINVAL, "a socket is opened with a port and no protocol (or protocol 1, Locasock)",
                "see docs/API.md for the open request");
  const std::int64_t asked = int_field(req, "port", -1);
  if (asked < 0 || asked > 65535)
    return fail(EINVAL, fmt::format("port {} is not a port", asked),
                "use 1..65535, or 0 for an ephemeral port");
  if (api::SharedRegion::max_payload_for(cfg_.ring_bytes) < api::kMaxDatagramRecord)
    return fail(EMSGSIZE,
                fmt::format("this daemon's rings ({} bytes) are too small for {}-byte datagrams",
                            cfg_.ring_bytes, api::kMaxDatagram),
                fmt::format("set ring_bytes to at least {} in locabusd's configuration",
                            std::bit_ceil(4 * (api::kMaxDatagramRecord + sizeof(api::RecordHeader)))));
  std::uint16_t port = static_cast<std::uint16_t>(asked);
  if (port == 0) {
    // The next free one after the last one given, so that a port just
    // closed is not handed out again at once.
    constexpr unsigned range = api::kEphemeralPortLast - api::kEphemeralPortFirst + 1;
    for (unsigned i = 0; i < range && port == 0; ++i) {
      const auto candidate =
          static_cast<std::uint16_t>(api::kEphemeralPortFirst + (next_ephemeral_ + i) % range);
      if (!by_port_.contains(candidate)) {
        port = candidate;
        next_ephemeral_ = (next_ephemeral_ + i + 1) % range;
      }
    }
    if (port == 0)
      return fail(EADDRINUSE,
                  fmt::format("no free ephemeral port: all of {}..{} are bound", api::kEphemeralPortFirst,
                              api::kEphemeralPortLast),
                  "close sockets, or bind an explicit port");
  } else if (auto it = by_port_.find(port); it != by_port_.end()) {
    return fail(EADDRINUSE, fmt::format("port {} is already bound by {}", port, it->second->who),
                "close that socket, use another port, or 0 for an ephemeral one");
  }

  c.region.emplace(api::SharedRegion::create(fmt::format("locabus-sock{}", c.id), cfg_.ring_bytes));
  auto [mine, theirs] = api::Doorbell::create_pair();
  c.bell = std::move(mine);
  c.socket = true;
  c.proto = LOCABUS_P_LOCASOCK;
  c.port = port;
  c.events = bool_field(req, "events");
  c.max_event_kind = static_cast<int>(std::clamp<std::int64_t>(
      int_field(req, "max_event_kind", LOCABUS_EV_OVERRUN), LOCABUS_EV_OVERRUN, 255));
  c.sent_to = std::make_unique<std::bitset<65536>>();
  epoll_add(epoll_.get(), c.bell.fd(), kBellKind | c.id);
  const int fds[2] = {c.region->fd(), theirs.fd()};
  reply(c,
        {{"ok", true},
         {"node_id", engine_.node_id()},
         {"port", port},
         {"max_datagram", api::kMaxDatagram},
         {"ring_bytes", cfg_.ring_bytes}},
        fds);
  c.open = true;
  by_port_[port] = &c;
  spdlog::info("API: {} bound socket port {}{}", c.who, port, c.events ? " with events" : "");
}

void ApiServer::publish(Client& c) {
  if (c.region->producer().publish()) c.bell.ring();
}

// A send the engine refused at once: a send_failed event tells the client.
void ApiServer::refused(Client& c, std::uint16_t node, engine::SendStatus status) {
  ++c.refused;
  ++counters_.send_refused;
  if (c.draining) return;  // nobody is left to tell
  locabus_event ev{};
  ev.kind = LOCABUS_EV_SEND_FAILED;
  ev.failure = refusal_code(status);
  ev.node = node;
  ev.first_message = c.sent;
  ev.count = 1;
  deliver_event(c, ev);
}

// Client -> engine. A send the engine cannot queue yet (would_block) stays
// in the ring and is retried first next time, so order is preserved.
int ApiServer::pump_to_engine(Client& c) {
  auto& in = c.region->consumer();
  c.send_blocked = false;
  const char* bad_record = nullptr;
  const auto r = in.read(
      kClientBatch, [&](std::uint16_t type, std::uint16_t aux, std::span<const std::byte> payload) -> bool {
        std::uint16_t node = aux;
        engine::SendResult res;
        // The payload is in memory the client can still write; the engine copies
        // it before send() returns (the Locasock service copies each fragment), so
        // a misbehaving client garbles only its own message.
        if (c.socket) {
          if (type != api::kRecordDatagramSend || payload.size() < sizeof(api::DatagramHeader) ||
              payload.size() > api::kMaxDatagramRecord) {
            bad_record = "a record that is not a datagram of at most 65536 bytes";
            return false;
          }
          api::DatagramHeader h;
          std::memcpy(&h, payload.data(), sizeof h);  // read once
          node = h.node;
          res.status = service_->send(node, c.port, h.port, payload.subspan(sizeof h));
        } else {
          if (type != api::kRecordSend || payload.size() > wire::kMaxPayload ||
              c.proto == LOCABUS_PROTO_NONE) {
            bad_record = "a record that is not a send of at most 1484 bytes";
            return false;
          }
          res = node == LOCABUS_NODE_BROADCAST ? engine_.broadcast(c.proto, payload)
                                               : engine_.send(node, c.proto, payload);
        }
        if (res.status == engine::SendStatus::would_block) {
          c.send_blocked = true;
          return false;
        }
        ++c.sent;
        if (res) {
          ++(c.socket ? counters_.datagrams_in : counters_.messages_in);
          c.sent_to->set(node);
        } else {
          refused(c, node, res.status);
        }
        return true;
      });
  if (!r) throw ClientFault(std::string(api::describe(r.error)));
  if (bad_record) throw ClientFault(bad_record);
  if (r.wake_producer) c.bell.ring();
  if (r.records == 0 && !c.send_blocked && !in.prepare_sleep()) return 1;  // arrived meanwhile: go again
  return static_cast<int>(r.records);
}

bool ApiServer::write_record(Client& c, std::uint16_t type, std::uint16_t aux,
                             std::span<const std::byte> bytes, std::span<const std::byte> more) {
  switch (c.region->producer().try_write(type, aux, bytes, more)) {
    case api::RingProducer::Status::kWritten: return true;
    case api::RingProducer::Status::kFull: return false;
    case api::RingProducer::Status::kInvalid:
      throw ClientFault(
          fmt::format("a record of {} bytes does not fit the ring", bytes.size() + more.size()));
    case api::RingProducer::Status::kProtocolError: break;
  }
  throw ClientFault(std::string(api::describe(c.region->producer().error())));
}

// Backlog -> client ring.
int ApiServer::pump_to_client(Client& c) {
  int work = 0;
  while (!c.backlog.empty()) {
    Pending& p = c.backlog.front();
    if (!write_record(c, p.type, p.aux, p.bytes)) break;
    if (p.type == api::kRecordEvent) --c.events_in_backlog;
    c.backlog.pop_front();
    ++work;
  }
  if (work || c.backlog.empty()) c.stalled_since.reset();
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

void ApiServer::deliver_event(Client& c, const locabus_event& ev) {
  const auto bytes = std::as_bytes(std::span(&ev, 1));
  ++counters_.events_out;
  if (c.backlog.empty() && write_record(c, api::kRecordEvent, ev.node, bytes)) return;
  if (c.events_in_backlog >= kMaxEventBacklog) {
    --counters_.events_out;
    ++c.events_dropped_unreported;
    ++counters_.events_dropped;
    return;
  }
  c.backlog.push_back(Pending{api::kRecordEvent, ev.node, {bytes.begin(), bytes.end()}});
  ++c.events_in_backlog;
}

void ApiServer::on_event(const engine::Event& e) {
  // What a node that died, left or restarted had sent of a datagram will
  // never be completed.
  if (e.kind == engine::EventKind::dead || e.kind == engine::EventKind::left ||
      e.kind == engine::EventKind::restarted)
    service_->drop_node(e.node);
  const locabus_event rec = to_record(e);
  for (auto& [id, cp] : clients_) {
    Client& c = *cp;
    if (!c.open || c.draining) continue;
    if (rec.kind > c.max_event_kind) continue;  // a client from before that kind existed
    // send_failed: to whoever sent to that node. broadcast_lost: to whoever
    // can receive broadcasts (every endpoint with a protocol, every socket:
    // which protocol or port the lost messages were for is unknowable) and
    // to monitors. The rest (membership and connection events) to endpoints
    // opened with events.
    bool wanted = c.events;
    if (e.kind == engine::EventKind::send_failed) wanted = c.sent_to->test(e.node);
    if (e.kind == engine::EventKind::broadcast_lost) wanted = c.events || c.proto != LOCABUS_PROTO_NONE;
    if (!wanted) continue;
    try {
      deliver_event(c, rec);
      publish(c);
    } catch (const ClientFault& f) {
      fault(c, f);
    }
  }
}

void ApiServer::fault(Client& c, const ClientFault& f) {
  ++counters_.protocol_errors;
  spdlog::warn("API: {} broke the ring protocol ({}); closing its endpoint", c.who, f.what());
  drop(c.id, "protocol error");
}

// Queues a record for the client: into its ring when nothing waits before
// it, else at the end of its backlog. The caller publishes.
void ApiServer::deliver(Client& c, std::uint16_t type, std::uint16_t aux, std::span<const std::byte> head,
                        std::span<const std::byte> body) {
  try {
    if (c.backlog.empty() && write_record(c, type, aux, head, body)) return;
  } catch (const ClientFault& f) {
    fault(c, f);
    return;
  }
  Pending p{type, aux, {}};
  p.bytes.reserve(head.size() + body.size());
  p.bytes.insert(p.bytes.end(), head.begin(), head.end());
  p.bytes.insert(p.bytes.end(), body.begin(), body.end());
  c.backlog.push_back(std::move(p));
}

// Engine -> clients, routed by protocol id, and for Locasock by port. Not
// while any client has a backlog: the engine then keeps the messages, its
// receive buffers fill and the credit window slows the senders down
// (end-to-end back-pressure).
int ApiServer::receive_from_engine() {
  for (auto& [id, c] : clients_)
    if (c->open && !c->draining && c->backlog.size() > c->events_in_backlog) return 0;
  std::vector<Client*> touched;
  auto touch = [&](Client* c) {
    if (std::find(touched.begin(), touched.end(), c) == touched.end()) touched.push_back(c);
  };
  const std::size_t n = engine_.receive(kEngineBatch, [&](const engine::Message& m) {
    if (m.proto == LOCABUS_P_LOCASOCK) {
      service_->on_message(m, [&](const locasock::Datagram& d) {
        auto it = by_port_.find(d.dport);
        if (it == by_port_.end()) {
          ++counters_.locasock_no_port;
          return;
        }
        Client* c = it->second;
        ++counters_.datagrams_out;
        ++c->received;
        touch(c);
        const api::DatagramHeader h{d.node, d.sport, d.broadcast ? api::kDatagramBroadcast : std::uint16_t{0},
                                    0};
        deliver(*c, api::kRecordDatagram, 0, std::as_bytes(std::span(&h, 1)), d.data);
      });
      return;
    }
    Client* c = by_proto_[m.proto];
    if (!c) {
      ++counters_.rx_no_endpoint;
      return;
    }
    ++counters_.messages_out;
    ++c->received;
    touch(c);
    deliver(*c, m.broadcast && c->broadcast_records ? api::kRecordBroadcastMessage : api::kRecordMessage,
            m.node, m.payload);
  });
  int work = static_cast<int>(n);
  for (Client* c : touched) {
    if (std::find(doomed_.begin(), doomed_.end(), c->id) != doomed_.end()) continue;
    publish(*c);
    // Either the client rings when it frees space, or space is there now
    // and the next cycle moves the backlog.
    if (!c->backlog.empty() && !c->region->producer().prepare_sleep(c->backlog.front().bytes.size())) ++work;
  }
  return work;
}

int ApiServer::do_work() {
  int work = 0;
  if (accept_paused_until_ && clock_.now() >= *accept_paused_until_ && listen_) {
    accept_paused_until_.reset();
    try {
      epoll_add(epoll_.get(), listen_.get(), kListenTag);
    } catch (const Error& e) {
      spdlog::warn("API: cannot listen again: {}", e.what());
      accept_paused_until_ = clock_.now() + std::chrono::milliseconds(200);
    }
  }
  epoll_event evs[64];
  const int n = ::epoll_wait(epoll_.get(), evs, 64, 0);
  for (int i = 0; i < n; ++i) {
    const std::uint64_t tag = evs[i].data.u64;
    const std::uint64_t id = tag & kIdMask;
    ++work;
    if (tag == kListenTag) {
      accept_clients();
    } else if ((tag & ~kIdMask) == kSocketKind) {
      if (evs[i].events & (EPOLLHUP | EPOLLERR)) {
        if (auto it = clients_.find(id); it != clients_.end()) hangup(*it->second);
      } else {
        on_client_readable(id);
      }
    } else if ((tag & ~kIdMask) == kBellKind) {
      if (evs[i].events & (EPOLLHUP | EPOLLERR)) {
        if (auto it = clients_.find(id); it != clients_.end()) hangup(*it->second);
      } else if (auto it = clients_.find(id); it != clients_.end()) {
        it->second->bell.drain();
      }
    }
  }
  for (auto& [id, cp] : clients_) {
    Client& c = *cp;
    if (!c.open || std::find(doomed_.begin(), doomed_.end(), id) != doomed_.end()) continue;
    try {
      if (c.draining) {
        work += pump_to_engine(c);
        if (!c.send_blocked && c.region->consumer().empty()) drop(id, "connection closed, its sends queued");
        continue;
      }
      work += pump_to_client(c);
      work += pump_to_engine(c);
    } catch (const ClientFault& f) {
      fault(c, f);
    }
  }
  work += receive_from_engine();
  // Reassembly timeouts: the daemon's idle strategy wakes up for them
  // (next_deadline()).
  if (const auto d = service_->next_deadline(); d && clock_.now() >= *d)
    work += static_cast<int>(service_->expire());
  drop_stalled();
  for (std::uint64_t id : doomed_) forget(id);
  doomed_.clear();
  return work;
}

// A client that stops reading holds up delivery to every endpoint of this
// node (see receive_from_engine): after stall_timeout it is disconnected.
void ApiServer::drop_stalled() {
  const engine::Nanos now = clock_.now();
  for (auto& [id, c] : clients_)
    if (c->refused_until && now >= *c->refused_until) drop(id, "refused");
  for (auto& [id, c] : clients_) {
    if (!c->open || c->draining || c->backlog.size() == c->events_in_backlog) continue;
    if (!c->stalled_since) {
      c->stalled_since = now;
    } else if (now - *c->stalled_since >= cfg_.stall_timeout) {
      ++counters_.stalled;
      spdlog::warn("API: {} has not read its messages for {} ms while others wait; closing its endpoint",
                   c->who, std::chrono::duration_cast<std::chrono::milliseconds>(cfg_.stall_timeout).count());
      drop(id, "stalled");
    }
  }
}

std::optional<engine::Nanos> ApiServer::next_deadline() const {
  std::optional<engine::Nanos> next = service_->next_deadline();
  if (accept_paused_until_ && (!next || *accept_paused_until_ < *next)) next = accept_paused_until_;
  for (const auto& [id, c] : clients_)
    if (c->refused_until && (!next || *c->refused_until < *next)) next = c->refused_until;
  for (const auto& [id, c] : clients_)
    if (!c->draining && c->stalled_since && (!next || *c->stalled_since + cfg_.stall_timeout < *next))
      next = *c->stalled_since + cfg_.stall_timeout;
  return next;
}

nlohmann::json ApiServer::locasock_counters() const {
  const auto& st = service_->stats();
  return {{"sockets", by_port_.size()},
          {"no_port", counters_.locasock_no_port},
          {"datagrams_sent", st.datagrams_sent},
          {"fragments_sent", st.fragments_sent},
          {"send_refused", st.send_refused},
          {"send_incomplete", st.send_incomplete},
          {"fragments_received", st.fragments_received},
          {"datagrams_delivered", st.datagrams_delivered},
          {"malformed", st.malformed},
          {"duplicates", st.duplicates},
          {"reassembly_replaced", st.reassembly_replaced},
          {"reassembly_timeouts", st.reassembly_timeouts},
          {"reassembly_evicted", st.reassembly_evicted},
          {"reassembly_dropped", st.reassembly_dropped},
          {"reassembly_bytes", service_->reassembly_bytes()},
          {"partial_datagrams", service_->partial_datagrams()}};
}

nlohmann::json ApiServer::counters() const {
  nlohmann::json eps = nlohmann::json::array();
  for (const auto& [id, c] : clients_) {
    if (!c->open) continue;
    nlohmann::json ep = {{"proto", c->proto},     {"pid", c->cred.pid},
                         {"uid", c->cred.uid},    {"events", c->events},
                         {"sent", c->sent},       {"received", c->received},
                         {"refused", c->refused}, {"backlog", c->backlog.size()}};
    if (c->socket) ep["port"] = c->port;
    eps.push_back(std::move(ep));
  }
  return {{"clients", clients_.size()},
          {"accepted", counters_.accepted},
          {"refused", counters_.refused},
          {"protocol_errors", counters_.protocol_errors},
          {"rx_no_endpoint", counters_.rx_no_endpoint},
          {"messages_in", counters_.messages_in},
          {"messages_out", counters_.messages_out},
          {"send_refused", counters_.send_refused},
          {"events_out", counters_.events_out},
          {"events_dropped", counters_.events_dropped},
          {"stalled", counters_.stalled},
          {"datagrams_in", counters_.datagrams_in},
          {"datagrams_out", counters_.datagrams_out},
          {"locasock_no_port", counters_.locasock_no_port},
          {"sockets", by_port_.size()},
          {"endpoints", eps}};
}

}  // namespace locabus::daemon
