// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "daemon/loop.hpp"

#include <sys/epoll.h>
#include <sys/wait.h>

#include <cerrno>

#include <spdlog/spdlog.h>

#include "common/error.hpp"

namespace locabus::daemon {

EventLoop::EventLoop() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
  if (!epoll_) throw Error("create the daemon's epoll set", errno, "raise the fd limit (LimitNOFILE)");
}

void EventLoop::watch(int fd, Handler on_ready, std::uint32_t events) {
  epoll_event ev{};
  ev.events = events ? events : EPOLLIN;
  ev.data.fd = fd;
  const bool known = handlers_.contains(fd);
  if (::epoll_ctl(epoll_.get(), known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0)
    throw Error("watch fd " + std::to_string(fd) + " in the daemon loop", errno);
  handlers_[fd] = std::make_shared<Handler>(std::move(on_ready));
}

void EventLoop::unwatch(int fd) noexcept {
  auto it = handlers_.find(fd);
  if (it == handlers_.end()) return;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  handlers_.erase(it);
}

int EventLoop::dispatch() {
  epoll_event evs[64];
  const int n = ::epoll_wait(epoll_.get(), evs, 64, 0);
  int ran = 0;
  for (int i = 0; i < n; ++i) {
    auto it = handlers_.find(evs[i].data.fd);
    if (it == handlers_.end()) continue;  // unwatched by an earlier handler of this pass
    const std::shared_ptr<Handler> h = it->second;
    (*h)(evs[i].events);
    ++ran;
  }
  return ran;
}

void EventLoop::watch_child(pid_t pid, std::function<void(int status)> on_exit) {
  children_[pid] = std::move(on_exit);
}

int EventLoop::reap_children() {
  int reaped = 0;
  for (;;) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    ++reaped;
    auto it = children_.find(pid);
    if (it == children_.end()) {
      spdlog::debug("reaped child {} nobody watched (status {:#x})", pid, status);
      continue;
    }
    auto on_exit = std::move(it->second);
    children_.erase(it);
    on_exit(status);
  }
  return reaped;
}

}  // namespace locabus::daemon
