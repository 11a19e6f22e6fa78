// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus, C API (locabus/locabus.h) over the C++ API.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include <locabus/locabus.h>
#include <locabus/client.hpp>

#include "client/c_api_common.hpp"

std::string& locabus::capi::last_error() noexcept {
  thread_local std::string error = "no error";
  return error;
}

struct locabus_endpoint {
  locabus::Endpoint ep;
};

struct locabus_socket {
  locabus::Socket sock;
};

namespace {

using locabus::capi::fail;
using locabus::capi::guarded;
using locabus::capi::ms;

void copy_str(char* dst, std::size_t cap, const std::string& src) {
  const std::size_t n = std::min(cap - 1, src.size());
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

}  // namespace

extern "C" {

int locabus_open(const char* socket_path, uint8_t proto, unsigned flags, locabus_endpoint** out) {
  if (!out) return fail(EINVAL, "locabus_open: out is NULL");
  *out = nullptr;
  if (flags & ~LOCABUS_OPEN_EVENTS) return fail(EINVAL, "locabus_open: unknown flags");
  return guarded([&] {
    locabus::EndpointOptions o;
    if (socket_path) o.socket_path = socket_path;
    o.protocol = proto;
    o.events = (flags & LOCABUS_OPEN_EVENTS) != 0;
    // Owned by the caller until locabus_close().
    *out = std::make_unique<locabus_endpoint>(locabus_endpoint{locabus::Endpoint::open(o)}).release();
    return 0;
  });
}

void locabus_close(locabus_endpoint* ep) { std::unique_ptr<locabus_endpoint> owned(ep); }

uint16_t locabus_node_id(const locabus_endpoint* ep) { return ep ? ep->ep.node_id() : 0; }

int locabus_send(locabus_endpoint* ep, uint16_t node, const void* data, size_t len, int timeout_ms) {
  if (!ep || (!data && len)) return fail(EINVAL, "locabus_send: NULL argument");
  return guarded([&] {
    switch (ep->ep.send(node, std::span(static_cast<const std::byte*>(data), len), ms(timeout_ms))) {
      case locabus::SendStatus::ok: return 0;
      case locabus::SendStatus::would_block:
        return fail(EAGAIN, "the send ring to locabusd is full (the peer or the daemon is slower): retry");
      case locabus::SendStatus::too_large:
        return fail(EMSGSIZE, "message over LOCABUS_MAX_MESSAGE (1484) bytes");
      case locabus::SendStatus::invalid_node: return fail(EINVAL, "invalid destination node");
    }
    return fail(EIO, "unexpected send status");
  });
}

long locabus_recv_ex(locabus_endpoint* ep, uint16_t* from, void* buf, size_t cap, unsigned* flags,
                     int timeout_ms) {
  if (!ep || (!buf && cap)) return fail(EINVAL, "locabus_recv: NULL argument");
  long result = 0;
  const int r = guarded([&] {
    std::uint16_t node = 0;
    bool broadcast = false;
    auto n =
        ep->ep.receive_into(std::span(static_cast<std::byte*>(buf), cap), node, broadcast, ms(timeout_ms));
    if (!n) return fail(EAGAIN, "no message arrived within the timeout");
    if (from) *from = node;
    if (flags) *flags = broadcast ? LOCABUS_MSG_BROADCAST : 0;
    result = static_cast<long>(*n);
    return 0;
  });
  return r < 0 ? r : result;
}

long locabus_recv(locabus_endpoint* ep, uint16_t* from, void* buf, size_t cap, int timeout_ms) {
  return locabus_recv_ex(ep, from, buf, cap, nullptr, timeout_ms);
}

long locabus_recv_view(locabus_endpoint* ep, uint16_t* from, const void** data, unsigned* flags,
                       int timeout_ms) {
  if (!ep || !data) return fail(EINVAL, "locabus_recv_view: NULL argument");
  long result = 0;
  const int r = guarded([&] {
    auto v = ep->ep.receive_view(ms(timeout_ms));
    if (!v) return fail(EAGAIN, "no message arrived within the timeout");
    *data = v->data.data();
    if (from) *from = v->node;
    if (flags) *flags = v->broadcast ? LOCABUS_MSG_BROADCAST : 0;
    result = static_cast<long>(v->data.size());
    return 0;
  });
  return r < 0 ? r : result;
}

void locabus_recv_release(locabus_endpoint* ep) {
  if (ep) ep->ep.release_view();
}

int locabus_next_event(locabus_endpoint* ep, struct locabus_event* out) {
  if (!ep || !out) return fail(EINVAL, "locabus_next_event: NULL argument");
  return guarded([&] {
    auto e = ep->ep.next_event();
    if (!e) return 0;
    *out = *e;
    return 1;
  });
}

int locabus_fd(const locabus_endpoint* ep) { return ep ? ep->ep.fd() : -EINVAL; }

int locabus_peers(locabus_endpoint* ep, struct locabus_peer_info* out, size_t cap, size_t* count) {
  if (!ep || (!out && cap)) return fail(EINVAL, "locabus_peers: NULL argument");
  return guarded([&] {
    const auto peers = ep->ep.peers();
    if (count) *count = peers.size();
    for (std::size_t i = 0; i < peers.size() && i < cap; ++i) {
      const auto& p = peers[i];
      locabus_peer_info& o = out[i];
      o = {};
      o.node = p.node;
      unsigned b[6] = {};
      if (std::sscanf(p.mac.c_str(), "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) == 6)
        for (int k = 0; k < 6; ++k) o.mac[k] = static_cast<std::uint8_t>(b[k]);
      copy_str(o.member_state, sizeof o.member_state, p.state);
      copy_str(o.conn_state, sizeof o.conn_state, p.connection);
      o.epoch = p.epoch;
      o.rtt_us = static_cast<std::uint64_t>(p.rtt.count());
      o.retransmits = p.retransmits;
      o.in_flight = p.in_flight;
      o.peer_window = p.window;
    }
    return 0;
  });
}

// ---- sockets ------------------------------------------------------------------------

int locabus_socket_open(const char* socket_path, uint16_t port, unsigned flags, locabus_socket** out) {
  if (!out) return fail(EINVAL, "locabus_socket_open: out is NULL");
  *out = nullptr;
  if (flags & ~LOCABUS_OPEN_EVENTS) return fail(EINVAL, "locabus_socket_open: unknown flags");
  return guarded([&] {
    locabus::SocketOptions o;
    if (socket_path) o.socket_path = socket_path;
    o.events = (flags & LOCABUS_OPEN_EVENTS) != 0;
    // Owned by the caller until locabus_socket_close().
    *out = std::make_unique<locabus_socket>(locabus_socket{locabus::Socket::bind(port, o)}).release();
    return 0;
  });
}

void locabus_socket_close(locabus_socket* s) { std::unique_ptr<locabus_socket> owned(s); }

uint16_t locabus_socket_port(const locabus_socket* s) { return s ? s->sock.local_port() : 0; }
uint16_t locabus_socket_node_id(const locabus_socket* s) { return s ? s->sock.node_id() : 0; }

int locabus_sendto(locabus_socket* s, uint16_t node, uint16_t port, const void* data, size_t len,
                   int timeout_ms) {
  if (!s || (!data && len)) return fail(EINVAL, "locabus_sendto: NULL argument");
  return guarded([&] {
    switch (
        s->sock.send_to(node, port, std::span(static_cast<const std::byte*>(data), len), ms(timeout_ms))) {
      case locabus::SendStatus::ok: return 0;
      case locabus::SendStatus::would_block:
        return fail(EAGAIN, "the send ring to locabusd is full (the peer or the daemon is slower): retry");
      case locabus::SendStatus::too_large:
        return fail(EMSGSIZE, "a " + std::to_string(len) +
                                  "-byte datagram is over LOCABUS_MAX_DATAGRAM (65536 bytes): split it");
      case locabus::SendStatus::invalid_node: return fail(EINVAL, "invalid destination node");
    }
    return fail(EIO, "unexpected send status");
  });
}

int locabus_broadcast_to(locabus_socket* s, uint16_t port, const void* data, size_t len, int timeout_ms) {
  return locabus_sendto(s, LOCABUS_NODE_BROADCAST, port, data, len, timeout_ms);
}

long locabus_recvfrom(locabus_socket* s, void* buf, size_t cap, uint16_t* node, uint16_t* port,
                      unsigned* flags, int timeout_ms) {
  if (!s || (!buf && cap)) return fail(EINVAL, "locabus_recvfrom: NULL argument");
  long result = 0;
  const int r = guarded([&] {
    locabus::DatagramInfo from;
    auto n = s->sock.receive_into(std::span(static_cast<std::byte*>(buf), cap), from, ms(timeout_ms));
    if (!n) return fail(EAGAIN, "no datagram arrived within the timeout");
    if (node) *node = from.node;
    if (port) *port = from.port;
    if (flags) *flags = from.broadcast ? LOCABUS_MSG_BROADCAST : 0;
    result = static_cast<long>(*n);
    return 0;
  });
  return r < 0 ? r : result;
}

long locabus_recvfrom_view(locabus_socket* s, const void** data, uint16_t* node, uint16_t* port,
                           unsigned* flags, int timeout_ms) {
  if (!s || !data) return fail(EINVAL, "locabus_recvfrom_view: NULL argument");
  long result = 0;
  const int r = guarded([&] {
    auto v = s->sock.receive_view(ms(timeout_ms));
    if (!v) return fail(EAGAIN, "no datagram arrived within the timeout");
    *data = v->data.data();
    if (node) *node = v->node;
    if (port) *port = v->port;
    if (flags) *flags = v->broadcast ? LOCABUS_MSG_BROADCAST : 0;
    result = static_cast<long>(v->data.size());
    return 0;
  });
  return r < 0 ? r : result;
}

void locabus_socket_recv_release(locabus_socket* s) {
  if (s) s->sock.release_view();
}

int locabus_socket_next_event(locabus_socket* s, struct locabus_event* out) {
  if (!s || !out) return fail(EINVAL, "locabus_socket_next_event: NULL argument");
  return guarded([&] {
    auto e = s->sock.next_event();
    if (!e) return 0;
    *out = *e;
    return 1;
  });
}

int locabus_socket_fd(const locabus_socket* s) { return s ? s->sock.fd() : -EINVAL; }

const char* locabus_last_error(void) { return locabus::capi::last_error().c_str(); }

const char* locabus_event_kind_name(int kind) {
  static const char* const names[] = {"joined",       "restarted",   "suspect",     "alive",
                                      "dead",         "left",        "id_conflict", "connected",
                                      "disconnected", "send_failed", "overrun",     "broadcast_lost"};
  static_assert(std::size(names) == LOCABUS_EV_BROADCAST_LOST + 1, "a name for every event kind");
  return kind >= 0 && kind < static_cast<int>(std::size(names)) ? names[kind] : "unknown";
}

const char* locabus_failure_name(int failure) {
  switch (failure) {
    case LOCABUS_FAIL_NONE: return "none";
    case LOCABUS_FAIL_UNREACHABLE: return "unreachable";
    case LOCABUS_FAIL_PEER_DEAD: return "peer_dead";
    case LOCABUS_FAIL_PEER_RESTARTED: return "peer_restarted";
    case LOCABUS_FAIL_PEER_LEFT: return "peer_left";
    case LOCABUS_FAIL_PEER_RESET: return "peer_reset";
    case LOCABUS_FAIL_CLOSED: return "closed";
    case LOCABUS_FAIL_SHUTDOWN: return "shutdown";
    case LOCABUS_FAIL_RELEASED: return "released";
    case LOCABUS_FAIL_NO_ENDPOINT: return "no_endpoint";
    case LOCABUS_FAIL_ENDPOINT_CLOSED: return "endpoint_closed";
    case LOCABUS_FAIL_DROPPED: return "dropped";
    case LOCABUS_FAIL_CONNECTION_CLOSED: return "connection_closed";
    case LOCABUS_FAIL_UNKNOWN_NODE: return "unknown_node";
    case LOCABUS_FAIL_INVALID_NODE: return "invalid_node";
    default: return "unknown";
  }
}

}  // extern "C"
