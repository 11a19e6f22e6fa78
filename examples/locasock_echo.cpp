// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locasock_echo: Locasock sockets in a page (docs/API.md, "Sockets").
//
//   locasock_echo serve [PORT]        echo every datagram back to its sender (default port 7007)
//   locasock_echo NODE [PORT] [TEXT]  send TEXT to PORT on NODE (0xFFFF: every other node), print the echoes
#include <cstdlib>
#include <iostream>
#include <string>

#include <locabus/client.hpp>

int main(int argc, char** argv) try {
  using namespace std::chrono_literals;
  if (argc < 2) return std::cerr << "usage: locasock_echo serve [PORT] | NODE [PORT] [TEXT]\n", 2;
  const std::string what = argv[1];
  const auto port = static_cast<std::uint16_t>(argc > 2 ? std::stoi(argv[2]) : 7007);

  if (what == "serve") {
    auto sock = locabus::Socket::bind(port);
    std::cout << "node " << sock.node_id() << " port " << sock.local_port() << ": echoing\n" << std::flush;
    while (auto d = sock.receive()) {  // blocks; the loop ends only with an error (ClientError)
      std::cout << d->node << ":" << d->port << (d->broadcast ? " (broadcast)" : "") << " " << d->data.size()
                << " bytes\n"
                << std::flush;
      sock.send_to(d->node, d->port, d->data);
    }
    return 0;
  }

  const auto node = static_cast<std::uint16_t>(std::stoul(what, nullptr, 0));
  auto sock = locabus::Socket::bind(0);  // an ephemeral port: where the echoes come back to
  const std::string text = argc > 3 ? argv[3] : "hello";
  if (sock.send_to(node, port, text) != locabus::SendStatus::ok) return std::cerr << "not sent\n", 1;
  int echoes = 0;
  // One echo from a node, or one from each node that serves for a broadcast.
  while (auto d = sock.receive(node == LOCABUS_NODE_BROADCAST ? 2s : 5s)) {
    std::cout << "node " << d->node << " port " << d->port << ": " << d->text() << "\n";
    ++echoes;
    if (node != LOCABUS_NODE_BROADCAST) break;
  }
  if (echoes == 0) return std::cerr << "no echo (is `locasock_echo serve` running there?)\n", 1;
  return 0;
} catch (const locabus::ClientError& e) {
  std::cerr << e.what() << "\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << "locasock_echo: " << e.what() << "\n";
  return 2;
}
