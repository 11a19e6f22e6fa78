// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Internal to the engine: the record kept for every known node.
#pragma once

#include "engine/engine.hpp"

namespace locabus::engine {

struct Engine::Peer {
  Peer(std::uint16_t node_id, const wire::MacAddress& addr, std::uint32_t idx, const EngineConfig& c)
      : node(node_id), index(idx), mac(addr), tx(c.send_buffer), rx(c.receive_buffer) {}

  std::uint16_t node;
  std::uint32_t index;  // in Engine::peers_, the timer-wheel owner id
  wire::MacAddress mac;

  // membership
  MemberState member = MemberState::joining;
  std::uint64_t epoch = 0;  // 0 = not known yet (heard only frames without one)
  Nanos last_heard{0};
  Nanos next_probe{0};
  Nanos last_reply{-1};         // when we last sent it our member list
  Nanos last_list_request{-1};  // when we last asked it for its list
  std::uint8_t probes = 0;
  bool conflict_reported = false;

  // reliable unicast
  Connection conn;
  MessageRing tx;  // queued by send(): [snd_una, snd_una + size) in sequence space
  MessageRing rx;  // delivered in order, waiting for receive()
  std::uint64_t next_message = 0;
  bool tx_ready = false;  // in Engine::tx_ready_
  PeerCounters counters;
};

}  // namespace locabus::engine
