// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "engine/idle.hpp"

#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "common/error.hpp"

namespace locabus::engine {

void BusySpinIdle::idle(std::optional<Nanos>) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

void YieldIdle::idle(std::optional<Nanos>) { sched_yield(); }

BlockingIdle::BlockingIdle(const Clock& clock, std::vector<int> fds, Nanos spin)
    : clock_(clock), fds_(std::move(fds)), wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)), spin_(spin) {
  if (!wake_fd_) throw Error("create the idle strategy's eventfd", errno, "check the process's fd limit");
  fds_.erase(std::remove(fds_.begin(), fds_.end(), -1), fds_.end());
}

void BlockingIdle::wake() noexcept {
  const std::uint64_t one = 1;
  // A full counter already means "wake up"; nothing else can go wrong here.
  [[maybe_unused]] const ssize_t n = ::write(wake_fd_.get(), &one, sizeof one);
}

void BlockingIdle::reset() noexcept {
  if (spin_.count() > 0) {
    last_work_ = clock_.now();
    spinning_ = true;
  }
}

void BlockingIdle::idle(std::optional<Nanos> deadline) {
  if (spinning_) {
    if (clock_.now() - last_work_ < spin_) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      return;
    }
    spinning_ = false;
    return;  // one more duty cycle, in which the caller prepares to sleep
  }
  int timeout_ms = -1;
  if (deadline) {
    const Nanos left = *deadline - clock_.now();
    if (left.count() <= 0) return;
    // Round up: waking a little late is fine, waking early just spins.
    timeout_ms = static_cast<int>(std::min<std::int64_t>((left.count() + 999'999) / 1'000'000, 60'000));
  }
  std::vector<pollfd> pfds;
  pfds.reserve(fds_.size() + 1);
  pfds.push_back({wake_fd_.get(), POLLIN, 0});
  for (int fd : fds_) pfds.push_back({fd, POLLIN, 0});
  ++sleeps_;
  const int n = ::poll(pfds.data(), pfds.size(), timeout_ms);
  if (n > 0 && (pfds[0].revents & POLLIN)) {
    std::uint64_t count;
    [[maybe_unused]] const ssize_t r = ::read(wake_fd_.get(), &count, sizeof count);
  }
  // EINTR (a signal, e.g. SIGTERM for shutdown) simply ends this wait.
}

void AgentRunner::run() {
  while (running()) run_once();
}

int AgentRunner::run_once() {
  const int work = agent_.do_work();
  if (work > 0) {
    idle_.reset();
  } else if (running()) {
    idle_.idle(agent_.next_deadline());
  }
  return work;
}

}  // namespace locabus::engine
