// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Locasock's Bus over the protocol engine: unicast messages on the peer's
// connection, broadcast messages on this node's broadcast stream.
#pragma once

#include "engine/engine.hpp"
#include "locasock/locasock.hpp"

namespace locabus::locasock {

class EngineBus final : public Bus {
 public:
  /// The engine must outlive the bus.
  explicit EngineBus(engine::Engine& engine) noexcept : engine_(engine) {}

  engine::SendStatus can_send(std::uint16_t node, std::size_t messages) const override {
    return engine_.can_send(node, messages);
  }
  engine::SendStatus can_broadcast(std::size_t messages) const override {
    return engine_.can_broadcast(messages);
  }
  engine::SendResult send(std::uint16_t node, std::uint8_t proto,
                          std::span<const std::byte> payload) override {
    return engine_.send(node, proto, payload);
  }
  engine::SendResult broadcast(std::uint8_t proto, std::span<const std::byte> payload) override {
    return engine_.broadcast(proto, payload);
  }

 private:
  engine::Engine& engine_;
};

}  // namespace locabus::locasock
