// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// A stand-in for locabusd on the local API, for client library tests: it
// listens on a socket in a fresh temporary directory, answers one "open"
// with a shared region and a doorbell (and the reply the test gives), and
// then writes records into the client's ring as the test says.
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

#include "api/control.hpp"
#include "api/shm.hpp"
#include "common/unique_fd.hpp"

namespace locabus::testing {

class FakeDaemon {
 public:
  explicit FakeDaemon(std::size_t ring_bytes = api::SharedRegion::kDefaultRingBytes)
      : ring_bytes_(ring_bytes) {
    char tmpl[] = "/tmp/locabus-fake-daemon-XXXXXX";
    EXPECT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    listener_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path().c_str(), sizeof addr.sun_path - 1);
    EXPECT_EQ(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listener_.get(), 1), 0);
  }
  ~FakeDaemon() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  FakeDaemon(const FakeDaemon&) = delete;
  FakeDaemon& operator=(const FakeDaemon&) = delete;

  /// The socket for EndpointOptions/SocketOptions/SpaceOptions::socket_path.
  std::string path() const { return (dir_ / "sock").string(); }
  std::size_t ring_bytes() const { return ring_bytes_; }
  /// The last "open" request the client sent.
  const nlohmann::json& request() const { return request_; }

  /// Accepts the next client (connecting in another thread), reads its
  /// request and answers `reply` with a fresh region and the doorbell.
  void serve(const nlohmann::json& reply) {
    conn_.reset(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(conn_);
    auto req = api::receive_control(conn_.get());
    ASSERT_TRUE(req);
    request_ = *req;
    region_.emplace(api::SharedRegion::create("test", ring_bytes_));
    const int fds[2] = {region_->fd(), bells_.second.fd()};
    api::send_control(conn_.get(), reply, fds);
  }

  api::RingProducer& producer() { return region_->producer(); }
  api::RingConsumer& consumer() { return region_->consumer(); }
  /// Writes one record into the client's ring and publishes it. False when
  /// the ring is full.
  bool write(std::uint16_t type, std::uint16_t aux, std::span<const std::byte> a,
             std::span<const std::byte> b = {}) {
    if (producer().try_write(type, aux, a, b) != api::RingProducer::Status::kWritten) return false;
    if (producer().publish()) bells_.first.ring();
    return true;
  }
  /// The daemon's end of the doorbell pair (ring it to wake the client).
  api::Doorbell& bell() { return bells_.first; }
  /// Did the client ring the daemon's doorbell? (Drains it.)
  bool rung() {
    pollfd p{bells_.first.fd(), POLLIN, 0};
    const bool r = ::poll(&p, 1, 0) == 1;
    bells_.first.drain();
    return r;
  }
  /// The daemon exits: its end of the control socket and the doorbell close.
  void go_away() {
    conn_.reset();
    bells_.first = api::Doorbell();
  }

 private:
  std::size_t ring_bytes_;
  std::filesystem::path dir_;
  UniqueFd listener_;
  UniqueFd conn_;  // kept open: the client takes its end for the daemon's exit
  nlohmann::json request_;
  std::optional<api::SharedRegion> region_;
  std::pair<api::Doorbell, api::Doorbell> bells_ = api::Doorbell::create_pair();  // ours, the client's
};

}  // namespace locabus::testing
