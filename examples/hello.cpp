// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// hello NODE [TEXT]: the C++ API in ten lines (see README.md).
#include <iostream>
#include <locabus/client.hpp>

int main(int argc, char** argv) try {
  if (argc < 2) return std::cerr << "usage: hello NODE [TEXT]\n", 2;
  auto ep = locabus::Endpoint::open(17);
  ep.send(static_cast<std::uint16_t>(std::stoi(argv[1])), argc > 2 ? argv[2] : "hello");
  if (auto reply = ep.receive(std::chrono::seconds(1)))
    std::cout << "node " << reply->node << ": " << reply->text() << "\n";
} catch (const locabus::ClientError& e) {
  std::cerr << e.what() << "\n";
  return 1;
}
