// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The daemon loop's fd set: an epoll set the daemon sleeps on (with the
// transport's fd and the signalfd), to which the client host and services
// add and remove fds at run time, and the children services spawned (the
// daemon reaps them on SIGCHLD and tells whoever watches them).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>

#include "common/unique_fd.hpp"

namespace locabus::daemon {

class EventLoop {
 public:
  using Handler = std::function<void(std::uint32_t events)>;

  EventLoop();  // throws Error
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  /// Readable when a watched fd is ready: for poll() in the daemon's idle strategy.
  int fd() const noexcept { return epoll_.get(); }

  /// Calls `on_ready` from dispatch() while `fd` is ready for `events`
  /// (EPOLLIN when 0; EPOLLHUP and EPOLLERR always). Replaces an earlier
  /// watch of the same fd. Throws Error.
  void watch(int fd, Handler on_ready, std::uint32_t events = 0);
  /// Stops watching `fd` (before closing it). Unknown fds are ignored.
  void unwatch(int fd) noexcept;
  bool watching(int fd) const noexcept { return handlers_.contains(fd); }

  /// Runs the handlers of ready fds, without waiting. Returns how many ran.
  int dispatch();

  /// Calls `on_exit` with its wait status when child `pid` exits.
  void watch_child(pid_t pid, std::function<void(int status)> on_exit);
  /// Reaps every exited child (SIGCHLD): the watched ones' handlers run;
  /// others are logged. Returns how many were reaped.
  int reap_children();
  std::size_t children() const noexcept { return children_.size(); }

 private:
  UniqueFd epoll_;
  // Handlers live in shared_ptrs so that one may unwatch (itself or
  // another fd) while dispatch() runs it.
  std::unordered_map<int, std::shared_ptr<Handler>> handlers_;
  std::map<pid_t, std::function<void(int)>> children_;
};

}  // namespace locabus::daemon
