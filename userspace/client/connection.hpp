// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus internals: one client connection of the daemon (the control
// socket, the shared rings, the doorbell, the records read ahead). Endpoint
// and Socket (client.cpp) are one thread at a time over it; the KCCM Space
// (kccm.cpp) opens it here and drives the rings from its own threads.
#pragma once

#include <poll.h>
#include <sys/epoll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <locabus/client.hpp>

#include "api/control.hpp"
#include "api/shm.hpp"
#include "common/error.hpp"

namespace locabus {

namespace client_detail {

using Clock = std::chrono::steady_clock;

// Messages read ahead while looking for an event (and the reverse) are kept;
// beyond this many (or this many bytes of datagrams), next_event() stops
// reading ahead.
inline constexpr std::size_t kMaxStash = 4096;
inline constexpr std::size_t kMaxStashBytes = std::size_t{16} << 20;

[[noreturn]] inline void rethrow(const Error& e) {
  throw ClientError(e.what() + (e.hint().empty() ? "" : " (" + e.hint() + ")"), e.code());
}

inline std::optional<Clock::time_point> deadline_of(std::chrono::milliseconds timeout) {
  if (timeout.count() < 0) return std::nullopt;
  return Clock::now() + timeout;
}

inline int remaining_ms(const std::optional<Clock::time_point>& deadline) {
  if (!deadline) return -1;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left + 1, 1 << 30));
}

}  // namespace client_detail

using client_detail::Clock;
using client_detail::deadline_of;
using client_detail::kMaxStash;
using client_detail::kMaxStashBytes;
using client_detail::remaining_ms;
using client_detail::rethrow;

// What an Endpoint and a Socket share: the control connection, the rings,
// the doorbell, the epoll fd, and the stashes of records read ahead.
struct Connection {
  UniqueFd ctl;
  std::optional<api::SharedRegion> region;
  api::Doorbell bell;
  UniqueFd epfd;
  std::uint16_t node_id = 0;
  bool connected = true;
  const char* kind = "endpoint";  // for error messages: "open a new endpoint"
  std::deque<Message> messages;
  std::deque<Datagram> datagrams;
  std::size_t datagram_bytes = 0;
  std::deque<Event> events;
  bool lent = false;       // receive_view() lent the record at the ring's read position
  Message lent_message;    // or lent this one, read ahead before (an Endpoint)
  Datagram lent_datagram;  // (a Socket)

  [[noreturn]] void gone() {
    connected = false;
    throw ClientError(fmt::format("locabusd closed the connection (it stopped or restarted): open a new {} "
                                  "to reconnect",
                                  kind),
                      ENOTCONN);
  }
  void check_connected() {
    if (!connected) gone();
  }
  [[noreturn]] void corrupt(api::ProtocolError e) {
    connected = false;
    throw ClientError(fmt::format("the daemon's ring is corrupt ({}): open a new {}", api::describe(e), kind),
                      EPROTO);
  }

  // Connects, sends the open request `req` and attaches the ring and the
  // doorbell the reply carries. Returns the reply.
  nlohmann::json open(const std::string& socket_path, const nlohmann::json& req) {
    nlohmann::json reply;
    try {
      const std::filesystem::path path =
          socket_path.empty() ? api::default_socket_path() : std::filesystem::path(socket_path);
      ctl = api::connect_control(path);
      std::vector<UniqueFd> fds;
      reply = api::request(ctl.get(), req, &fds);
      if (fds.size() != 2)
        throw ClientError("locabusd's open reply did not carry the ring and doorbell", EPROTO);
      region.emplace(api::SharedRegion::attach(std::move(fds[0])));
      bell = api::Doorbell::adopt(std::move(fds[1]));
      node_id = reply.value("node_id", std::uint16_t{0});
    } catch (const Error& e) {
      rethrow(e);
    }
    epfd = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epfd) throw ClientError(fmt::format("epoll_create1: {}", std::strerror(errno)), errno);
    for (int fd : {bell.fd(), ctl.get()}) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      if (::epoll_ctl(epfd.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
        throw ClientError(fmt::format("epoll_ctl: {}", std::strerror(errno)), errno);
    }
    // Armed from the start, so that fd() becomes readable with the first
    // message even before any receive() (the ring is empty now).
    (void)region->consumer().prepare_sleep();
    return reply;
  }

  // Read-ahead beyond this stops next_event() from reading further.
  bool stash_full() const noexcept {
    return messages.size() + datagrams.size() >= kMaxStash || datagram_bytes >= kMaxStashBytes;
  }

  // Keeps a record read ahead of the one looked for: messages and
  // datagrams for a later receive(), events for next_event().
  void stash(const api::RecordView& rec) {
    const auto p = rec.payload;
    if (rec.type == api::kRecordMessage || rec.type == api::kRecordBroadcastMessage) {
      messages.push_back(Message{rec.aux, rec.type == api::kRecordBroadcastMessage, {p.begin(), p.end()}});
    } else if (rec.type == api::kRecordDatagram && p.size() >= sizeof(api::DatagramHeader)) {
      Datagram d;
      static_cast<DatagramInfo&>(d) = datagram_info(p);
      d.data.assign(p.begin() + sizeof(api::DatagramHeader), p.end());
      datagram_bytes += d.data.size();
      datagrams.push_back(std::move(d));
    } else if (rec.type == api::kRecordEvent && p.size() == sizeof(locabus_event)) {
      Event e;
      std::memcpy(static_cast<locabus_event*>(&e), p.data(), sizeof(locabus_event));
      if (events.size() >= kMaxStash) events.pop_front();  // an application that never reads events
      events.push_back(e);
    }
  }

  static DatagramInfo datagram_info(std::span<const std::byte> p) noexcept {
    api::DatagramHeader h;
    std::memcpy(&h, p.data(), sizeof h);
    return DatagramInfo{h.node, h.port, (h.flags & api::kDatagramBroadcast) != 0};
  }

  // The record the last receive_view() lent out is done with.
  void return_lent() {
    if (!lent) return;
    region->consumer().consume();
    lent = false;
    released_enough();
  }

  // Gives the space of consumed records back to the daemon.
  void release() {
    if (region->consumer().release() && !bell.ring()) gone();
  }

  // release_view(): the lent record goes back at once. Never throws: a
  // daemon that went away is reported by the next call.
  void release_lent() noexcept {
    if (!lent || !connected) return;
    region->consumer().consume();
    lent = false;
    if (region->consumer().release() && !bell.ring()) connected = false;
  }

  // After a record was consumed: releases in batches rather than per
  // record (each release is a store and a full fence, and moves a cache
  // line to the daemon), but at once when the daemon waits for space, when
  // everything seen is consumed (the end of the daemon's batch: the
  // application may now sleep or stop reading), or when an eighth of the
  // ring is held.
  void released_enough() {
    auto& in = region->consumer();
    if (in.caught_up() || in.producer_waiting() || in.unreleased() >= in.capacity() / 8) release();
  }

  // Moves up to `max` records from the ring into the stashes.
  std::size_t fill(std::size_t max) {
    return_lent();
    auto r = region->consumer().read(
        max, [&](std::uint16_t type, std::uint16_t aux, std::span<const std::byte> p) {
          stash({type, aux, p});
        });
    if (!r) corrupt(r.error);
    if (r.wake_producer && !bell.ring()) gone();
    return r.records;
  }

  // The next record of type `a` or `b` in the ring, left there (peeked):
  // the records before it are stashed. nullptr when the ring has none now.
  const api::RecordView* peek(std::uint16_t a, std::uint16_t b) {
    auto& in = region->consumer();
    for (;;) {
      const api::RecordView* rec = in.peek();
      if (rec == nullptr) {
        if (in.error() != api::ProtocolError::kNone) corrupt(in.error());
        return nullptr;
      }
      if ((rec->type == a || rec->type == b) &&
          (rec->type != api::kRecordDatagram || rec->payload.size() >= sizeof(api::DatagramHeader)))
        return rec;
      stash(*rec);
      in.consume();
      released_enough();
    }
  }

  // The ring was empty: consume old doorbell rings (so that fd() is not
  // left readable), look once more, and check that the daemon is still
  // there (a dead daemon publishes nothing). False: read again.
  bool quiet() {
    release();  // a consumer holding space may not sleep
    bell.drain();
    if (!region->consumer().empty()) return false;
    pollfd p{ctl.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) gone();  // nothing is ever sent unasked: the end of the connection
    return true;
  }

  // Sleeps until the daemon rings, the control socket reports its end, or
  // the deadline passes. False on timeout.
  bool wait(const std::optional<Clock::time_point>& deadline) {
    pollfd p[2] = {{bell.fd(), POLLIN, 0}, {ctl.get(), POLLIN, 0}};
    int n;
    do n = ::poll(p, 2, remaining_ms(deadline));
    while (n < 0 && errno == EINTR);
    if (n < 0) throw ClientError(fmt::format("poll: {}", std::strerror(errno)), errno);
    if (p[1].revents) gone();  // nothing is ever sent unasked: only the end of the connection
    if (p[0].revents & (POLLHUP | POLLERR)) gone();
    if (p[0].revents & POLLIN) bell.drain();
    return n > 0;
  }

  bool expired(const std::optional<Clock::time_point>& deadline) const {
    return deadline && Clock::now() >= *deadline;
  }

  // Writes one record (payload a + b) into the ring towards the daemon,
  // waiting up to `timeout` while it is full.
  SendStatus write(std::uint16_t type, std::uint16_t aux, std::span<const std::byte> a,
                   std::span<const std::byte> b, std::chrono::milliseconds timeout) {
    const auto deadline = deadline_of(timeout);
    auto& out = region->producer();
    for (;;) {
      switch (out.try_write(type, aux, a, b)) {
        case api::RingProducer::Status::kWritten:
          if (out.publish() && !bell.ring()) gone();
          return SendStatus::ok;
        case api::RingProducer::Status::kFull: break;
        case api::RingProducer::Status::kInvalid: return SendStatus::too_large;
        case api::RingProducer::Status::kProtocolError: corrupt(out.error());
      }
      if (out.publish() && !bell.ring()) gone();  // e.g. padding staged by the full try_write
      if (timeout.count() == 0 || expired(deadline)) {
        pollfd p{ctl.get(), POLLIN, 0};  // a full ring may mean a dead daemon
        if (::poll(&p, 1, 0) > 0) gone();
        return SendStatus::would_block;
      }
      if (out.prepare_sleep(a.size() + b.size()) && !wait(deadline)) return SendStatus::would_block;
    }
  }

  enum class Found { nothing, stashed, in_ring };

  // Waits up to `timeout` for a message (types `a`, `b`) or a datagram:
  // stashed when `queue` has one (it comes first: it was read ahead), else
  // in_ring with the record in *rec, left in the ring for the caller to copy
  // from (or lend out) and then consume().
  template <typename Queue>
  Found await(Queue& queue, std::uint16_t a, std::uint16_t b, std::chrono::milliseconds timeout,
              const api::RecordView** rec) {
    return_lent();
    const auto deadline = deadline_of(timeout);
    for (;;) {
      if (!queue.empty()) return Found::stashed;
      check_connected();
      if ((*rec = peek(a, b)) != nullptr) return Found::in_ring;
      if (!queue.empty() || !quiet()) continue;
      // Armed before returning too, so that fd() becomes readable when the
      // daemon publishes (the edge-triggered contract).
      if (!region->consumer().prepare_sleep()) continue;
      if (timeout.count() == 0 || expired(deadline)) return Found::nothing;
      if (!wait(deadline)) {
        if ((*rec = peek(a, b)) != nullptr) return Found::in_ring;  // one last look
        return queue.empty() ? Found::nothing : Found::stashed;
      }
    }
  }

  // After the caller took the record await() found in the ring.
  void consume() {
    region->consumer().consume();
    released_enough();
  }

  std::optional<Event> wait_event(std::chrono::milliseconds timeout) {
    const auto deadline = deadline_of(timeout);
    for (;;) {
      if (!events.empty()) {
        Event e = events.front();
        events.pop_front();
        return e;
      }
      check_connected();
      if (stash_full()) {
        // Unread messages fill the stash and the events are behind them in
        // the ring: only receive() can make progress.
        if (timeout.count() == 0 || expired(deadline)) return std::nullopt;
        const int left = remaining_ms(deadline);
        ::poll(nullptr, 0, left < 0 ? 10 : std::min(left, 10));
        continue;
      }
      if (fill(64) > 0 || !quiet()) continue;
      if (!region->consumer().prepare_sleep()) continue;
      if (timeout.count() == 0 || expired(deadline)) return std::nullopt;
      if (!wait(deadline)) {
        fill(64);
        if (events.empty()) return std::nullopt;
      }
    }
  }

  std::vector<Peer> peers() {
    check_connected();
    nlohmann::json reply;
    try {
      reply = api::request(ctl.get(), {{"op", "peers"}});
    } catch (const Error& e) {
      if (e.code() == ECONNRESET || e.code() == EPIPE) gone();
      rethrow(e);
    }
    std::vector<Peer> out;
    for (const auto& j : reply.value("peers", nlohmann::json::array())) {
      Peer p;
      p.node = j.value("node", std::uint16_t{0});
      p.mac = j.value("mac", std::string());
      p.state = j.value("state", std::string());
      p.connection = j.value("connection", std::string());
      p.epoch = j.value("epoch", std::uint64_t{0});
      p.rtt = std::chrono::microseconds(j.value("rtt_us", std::int64_t{0}));
      p.retransmits = j.value("retransmits", std::uint64_t{0});
      p.in_flight = j.value("in_flight", std::uint32_t{0});
      p.window = j.value("window", std::uint32_t{0});
      out.push_back(std::move(p));
    }
    return out;
  }
};

}  // namespace locabus
