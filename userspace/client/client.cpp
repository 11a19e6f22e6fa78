// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus, C++ API: the client side of the local API (api/control.hpp for
// the control socket, api/shm.hpp for the data rings).
#include <locabus/client.hpp>

#include <bit>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "client/connection.hpp"

namespace locabus {

std::string Event::to_string() const {
  switch (kind) {
    case LOCABUS_EV_SEND_FAILED:
      return count == 1 ? fmt::format("message {} to node {} failed: {}", first_message, node, failure_name())
                        : fmt::format("messages {}..{} to node {} failed: {}", first_message,
                                      first_message + count - 1, node, failure_name());
    case LOCABUS_EV_OVERRUN: return fmt::format("{} event(s) dropped: this endpoint read too slowly", count);
    case LOCABUS_EV_BROADCAST_LOST:
      return fmt::format("{} broadcast message(s) from node {} lost (stream sequences {}..{}, epoch {}): {}",
                         count, node, first_message, static_cast<std::uint16_t>(first_message + count - 1),
                         epoch, failure_name());
    case LOCABUS_EV_DISCONNECTED:
      return fmt::format("node {} disconnected{}", node,
                         failure ? fmt::format(" ({})", failure_name()) : std::string());
    default: return fmt::format("node {} {}", node, kind_name());
  }
}

// ---- Endpoint ----------------------------------------------------------------------

struct Endpoint::Impl : Connection {
  std::uint8_t proto = 0;
};

Endpoint::Endpoint(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Endpoint::Endpoint(Endpoint&&) noexcept = default;
Endpoint& Endpoint::operator=(Endpoint&&) noexcept = default;
// Sends still in the ring were accepted: the daemon queues them to the
// engine after the connection closes (it keeps the ring until then).
Endpoint::~Endpoint() = default;

Endpoint Endpoint::open(const EndpointOptions& options) {
  auto impl = std::make_unique<Impl>();
  if (options.protocol == LOCABUS_PROTO_NONE && !options.events)
    throw ClientError("an endpoint without a protocol exists only for events: set events", EINVAL);
  if (options.protocol != LOCABUS_PROTO_NONE && options.protocol < LOCABUS_PROTO_USER_MIN)
    throw ClientError(fmt::format("protocol {} is reserved for Locabus services: use {}..255",
                                  options.protocol, LOCABUS_PROTO_USER_MIN),
                      EINVAL);
  impl->open(options.socket_path, {{"op", "open"},
                                   {"version", api::kProtocolVersion},
                                   {"proto", options.protocol},
                                   {"events", options.events},
                                   {"broadcast_records", true},
                                   {"max_event_kind", LOCABUS_EV_BROADCAST_LOST}});
  impl->proto = options.protocol;
  return Endpoint(std::move(impl));
}

std::uint16_t Endpoint::node_id() const noexcept { return impl_->node_id; }
std::uint8_t Endpoint::protocol() const noexcept { return impl_->proto; }
int Endpoint::fd() const noexcept { return impl_->epfd.get(); }
bool Endpoint::connected() const noexcept { return impl_->connected; }

SendStatus Endpoint::send(std::uint16_t node, std::span<const std::byte> data,
                          std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  m.check_connected();
  if (m.proto == LOCABUS_PROTO_NONE)
    throw ClientError("this endpoint was opened for events only (protocol 0): it cannot send", EINVAL);
  if (data.size() > LOCABUS_MAX_MESSAGE) return SendStatus::too_large;
  return m.write(api::kRecordSend, node, data, {}, timeout);
}

std::optional<Message> Endpoint::receive(std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  const api::RecordView* rec = nullptr;
  switch (m.await(m.messages, api::kRecordMessage, api::kRecordBroadcastMessage, timeout, &rec)) {
    case Connection::Found::nothing: return std::nullopt;
    case Connection::Found::stashed: {
      Message msg = std::move(m.messages.front());
      m.messages.pop_front();
      return msg;
    }
    case Connection::Found::in_ring: break;
  }
  Message msg{
      rec->aux, rec->type == api::kRecordBroadcastMessage, {rec->payload.begin(), rec->payload.end()}};
  m.consume();
  return msg;
}

std::optional<std::size_t> Endpoint::receive_into(std::span<std::byte> buffer, std::uint16_t& from,
                                                  std::chrono::milliseconds timeout) {
  bool broadcast = false;
  return receive_into(buffer, from, broadcast, timeout);
}

std::optional<std::size_t> Endpoint::receive_into(std::span<std::byte> buffer, std::uint16_t& from,
                                                  bool& broadcast, std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  const api::RecordView* rec = nullptr;
  const auto found = m.await(m.messages, api::kRecordMessage, api::kRecordBroadcastMessage, timeout, &rec);
  if (found == Connection::Found::nothing) return std::nullopt;
  // From the ring straight into the caller's buffer when nothing was read ahead.
  const bool stashed = found == Connection::Found::stashed;
  const std::span<const std::byte> data =
      stashed ? std::span<const std::byte>(m.messages.front().data) : rec->payload;
  if (data.size() > buffer.size())
    throw ClientError(
        fmt::format("a {}-byte message does not fit a {}-byte buffer", data.size(), buffer.size()), EMSGSIZE);
  if (!data.empty()) std::memcpy(buffer.data(), data.data(), data.size());
  const std::size_t n = data.size();
  if (stashed) {
    from = m.messages.front().node;
    broadcast = m.messages.front().broadcast;
    m.messages.pop_front();
  } else {
    from = rec->aux;
    broadcast = rec->type == api::kRecordBroadcastMessage;
    m.consume();
  }
  return n;
}

std::optional<MessageView> Endpoint::receive_view(std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  const api::RecordView* rec = nullptr;
  switch (m.await(m.messages, api::kRecordMessage, api::kRecordBroadcastMessage, timeout, &rec)) {
    case Connection::Found::nothing: return std::nullopt;
    case Connection::Found::stashed:
      m.lent_message = std::move(m.messages.front());
      m.messages.pop_front();
      return MessageView{m.lent_message.node, m.lent_message.broadcast, m.lent_message.data};
    case Connection::Found::in_ring: break;
  }
  m.lent = true;  // consumed by the next call (return_lent)
  return MessageView{rec->aux, rec->type == api::kRecordBroadcastMessage, rec->payload};
}

void Endpoint::release_view() noexcept { impl_->release_lent(); }

std::optional<Event> Endpoint::next_event() { return impl_->wait_event(std::chrono::milliseconds(0)); }
std::optional<Event> Endpoint::wait_event(std::chrono::milliseconds timeout) {
  return impl_->wait_event(timeout);
}
std::vector<Peer> Endpoint::peers() { return impl_->peers(); }

// ---- Socket ------------------------------------------------------------------------

struct Socket::Impl : Connection {
  std::uint16_t port = 0;

  Datagram pop() {
    Datagram d = std::move(datagrams.front());
    datagrams.pop_front();
    datagram_bytes -= d.data.size();
    return d;
  }
};

Socket::Socket(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Socket::Socket(Socket&&) noexcept = default;
Socket& Socket::operator=(Socket&&) noexcept = default;
Socket::~Socket() = default;

Socket Socket::bind(std::uint16_t port, const SocketOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->kind = "socket";
  const auto reply = impl->open(options.socket_path, {{"op", "open"},
                                                      {"version", api::kProtocolVersion},
                                                      {"port", port},
                                                      {"events", options.events},
                                                      {"max_event_kind", LOCABUS_EV_BROADCAST_LOST}});
  impl->port = reply.value("port", std::uint16_t{0});
  if (impl->port == 0 || (port != 0 && impl->port != port))
    throw ClientError(fmt::format("locabusd bound port {} where {} was asked for: is it the same release?",
                                  impl->port, port),
                      EPROTO);
  if (impl->region->max_payload() < api::kMaxDatagramRecord)
    throw ClientError(fmt::format("locabusd's rings ({} bytes) are too small for {}-byte datagrams: set "
                                  "ring_bytes to at least {} in its configuration",
                                  impl->region->ring_bytes(), api::kMaxDatagram,
                                  std::bit_ceil(4 * (api::kMaxDatagramRecord + sizeof(api::RecordHeader)))),
                      EMSGSIZE);
  return Socket(std::move(impl));
}

std::uint16_t Socket::local_port() const noexcept { return impl_->port; }
std::uint16_t Socket::node_id() const noexcept { return impl_->node_id; }
int Socket::fd() const noexcept { return impl_->epfd.get(); }
bool Socket::connected() const noexcept { return impl_->connected; }

SendStatus Socket::send_to(std::uint16_t node, std::uint16_t port, std::span<const std::byte> data,
                           std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  m.check_connected();
  if (port == 0) throw ClientError("port 0 is not a destination: give the port the receiver bound", EINVAL);
  if (data.size() > LOCABUS_MAX_DATAGRAM) return SendStatus::too_large;
  const api::DatagramHeader h{node, port, 0, 0};
  return m.write(api::kRecordDatagramSend, 0, std::as_bytes(std::span(&h, 1)), data, timeout);
}

SendStatus Socket::broadcast(std::uint16_t port, std::span<const std::byte> data,
                             std::chrono::milliseconds timeout) {
  return send_to(LOCABUS_NODE_BROADCAST, port, data, timeout);
}

std::optional<Datagram> Socket::receive(std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  const api::RecordView* rec = nullptr;
  switch (m.await(m.datagrams, api::kRecordDatagram, api::kRecordDatagram, timeout, &rec)) {
    case Connection::Found::nothing: return std::nullopt;
    case Connection::Found::stashed: return m.pop();
    case Connection::Found::in_ring: break;
  }
  Datagram d;
  static_cast<DatagramInfo&>(d) = Connection::datagram_info(rec->payload);
  d.data.assign(rec->payload.begin() + sizeof(api::DatagramHeader), rec->payload.end());
  m.consume();
  return d;
}

std::optional<std::size_t> Socket::receive_into(std::span<std::byte> buffer, DatagramInfo& from,
                                                std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  const api::RecordView* rec = nullptr;
  const auto found = m.await(m.datagrams, api::kRecordDatagram, api::kRecordDatagram, timeout, &rec);
  if (found == Connection::Found::nothing) return std::nullopt;
  const bool stashed = found == Connection::Found::stashed;
  const std::span<const std::byte> data = stashed ? std::span<const std::byte>(m.datagrams.front().data)
                                                  : rec->payload.subspan(sizeof(api::DatagramHeader));
  if (data.size() > buffer.size())
    throw ClientError(
        fmt::format("a {}-byte datagram does not fit a {}-byte buffer", data.size(), buffer.size()),
        EMSGSIZE);
  if (!data.empty()) std::memcpy(buffer.data(), data.data(), data.size());
  const std::size_t n = data.size();
  if (stashed) {
    from = m.datagrams.front();
    m.pop();
  } else {
    from = Connection::datagram_info(rec->payload);
    m.consume();
  }
  return n;
}

std::optional<DatagramView> Socket::receive_view(std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  const api::RecordView* rec = nullptr;
  switch (m.await(m.datagrams, api::kRecordDatagram, api::kRecordDatagram, timeout, &rec)) {
    case Connection::Found::nothing: return std::nullopt;
    case Connection::Found::stashed: {
      m.lent_datagram = m.pop();
      DatagramView v;
      static_cast<DatagramInfo&>(v) = m.lent_datagram;
      v.data = m.lent_datagram.data;
      return v;
    }
    case Connection::Found::in_ring: break;
  }
  m.lent = true;  // consumed by the next call (return_lent)
  DatagramView v;
  static_cast<DatagramInfo&>(v) = Connection::datagram_info(rec->payload);
  v.data = rec->payload.subspan(sizeof(api::DatagramHeader));
  return v;
}

void Socket::release_view() noexcept { impl_->release_lent(); }

std::optional<Event> Socket::next_event() { return impl_->wait_event(std::chrono::milliseconds(0)); }
std::optional<Event> Socket::wait_event(std::chrono::milliseconds timeout) {
  return impl_->wait_event(timeout);
}
std::vector<Peer> Socket::peers() { return impl_->peers(); }

}  // namespace locabus
