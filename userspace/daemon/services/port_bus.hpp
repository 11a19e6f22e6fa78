// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locasock::Bus over the router, for services that frame their messages
// the Locasock way (Locasock itself, KCCM): every fragment of the datagram
// being sent goes on the flow-control stream (its protocol, `port`), with
// `origin` for the failures the router reports.
#pragma once

#include "daemon/service.hpp"
#include "locasock/locasock.hpp"

namespace locabus::daemon {

class PortBus final : public locasock::Bus {
 public:
  PortBus(ServiceHost& host, std::uint8_t proto) : host_(host), proto_(proto) {}
  engine::SendStatus can_send(std::uint16_t node, std::size_t messages) const override {
    return host_.can_send(node, stream_key(proto_, port), messages);
  }
  engine::SendStatus can_broadcast(std::size_t messages) const override {
    return host_.can_broadcast(stream_key(proto_, port), messages);
  }
  engine::SendResult send(std::uint16_t node, std::uint8_t proto,
                          std::span<const std::byte> payload) override {
    return host_.send(node, stream_key(proto, port), payload, origin);
  }
  engine::SendResult broadcast(std::uint8_t proto, std::span<const std::byte> payload) override {
    return host_.broadcast(stream_key(proto, port), payload);
  }

  /// The datagram being sent: its destination port (Locasock) or space
  /// (KCCM), and who sent it.
  std::uint16_t port = 0;
  Origin origin;

 private:
  ServiceHost& host_;
  std::uint8_t proto_;
};

}  // namespace locabus::daemon
