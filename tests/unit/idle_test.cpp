// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Idle strategies: blocking really sleeps (no CPU while idle) and wakes for
// readable fds, wake() and deadlines.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <thread>

#include "engine/idle.hpp"

namespace locabus::engine {
namespace {

using namespace std::chrono_literals;

/// Reads a pipe: one unit of work per byte; optionally a fixed deadline.
class PipeAgent final : public Agent {
 public:
  explicit PipeAgent(int fd) : fd_(fd) {}
  int do_work() override {
    char buf[64];
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n > 0) bytes += static_cast<std::size_t>(n);
    ++cycles;
    if (bytes >= stop_after && runner) runner->stop();
    return n > 0 ? static_cast<int>(n) : 0;
  }
  std::optional<Nanos> next_deadline() const override { return deadline; }
  std::string_view name() const noexcept override { return "pipe"; }

  std::size_t bytes = 0, cycles = 0, stop_after = 1;
  std::optional<Nanos> deadline;
  AgentRunner* runner = nullptr;

 private:
  int fd_;
};

struct Pipe {
  int fds[2];
  Pipe() { EXPECT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0); }
  ~Pipe() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
};

Nanos cpu_time() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return std::chrono::seconds(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         std::chrono::microseconds(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

TEST(BlockingIdle, SleepsUntilTheFdIsReadable) {
  Pipe p;
  SystemClock clock;
  PipeAgent agent(p.fds[0]);
  BlockingIdle idle(clock, {p.fds[0], -1});
  AgentRunner runner(agent, idle);
  agent.runner = &runner;
  agent.stop_after = 3;
  std::thread writer([&] {
    std::this_thread::sleep_for(150ms);
    EXPECT_EQ(::write(p.fds[1], "abc", 3), 3);
  });
  const Nanos cpu0 = cpu_time();
  runner.run();
  const Nanos cpu = cpu_time() - cpu0;
  writer.join();
  EXPECT_EQ(agent.bytes, 3u);
  EXPECT_GE(idle.sleeps(), 1u);
  // A busy loop would have spun for the whole 150 ms; blocking uses almost nothing.
  EXPECT_LT(agent.cycles, 10u) << "the runner spun instead of sleeping";
  EXPECT_LT(cpu, 50ms) << "idle must not use CPU";
}

TEST(BlockingIdle, WakeEndsAWaitWithoutDeadline) {
  Pipe p;
  SystemClock clock;
  PipeAgent agent(p.fds[0]);
  BlockingIdle idle(clock, {});  // the pipe is not watched: only wake() can end the wait
  AgentRunner runner(agent, idle);
  std::thread stopper([&] {
    std::this_thread::sleep_for(50ms);
    runner.stop();
    idle.wake();
  });
  runner.run();
  stopper.join();
  EXPECT_FALSE(runner.running());
  EXPECT_GE(idle.sleeps(), 1u);
}

TEST(BlockingIdle, ReturnsAtTheDeadline) {
  Pipe p;
  SystemClock clock;
  PipeAgent agent(p.fds[0]);
  agent.deadline = clock.now() + 30ms;
  BlockingIdle idle(clock, {p.fds[0]});
  AgentRunner runner(agent, idle);
  EXPECT_EQ(runner.run_once(), 0);
  EXPECT_GE(clock.now(), *agent.deadline) << "woke before the deadline";
  EXPECT_EQ(idle.sleeps(), 1u);
  // A deadline already passed: no sleep at all.
  EXPECT_EQ(runner.run_once(), 0);
  EXPECT_EQ(idle.sleeps(), 1u);
}

// The bounded spin: after work, idle() keeps returning at once (the runner
// polls again) for `spin`, then sleeps as before. Without work since, it never
// spins: an idle daemon uses no CPU.
TEST(BlockingIdle, SpinsOnlyForTheSpinTimeAfterWork) {
  Pipe p;
  ManualClock clock;
  BlockingIdle idle(clock, {p.fds[0]}, 50us);
  // Never worked: sleeps (here until the deadline, 1 ms).
  idle.idle(clock.now() + 1ms);
  EXPECT_EQ(idle.sleeps(), 1u);
  idle.reset();  // work done
  for (int i = 0; i < 100; ++i) idle.idle(clock.now() + 1ms);
  EXPECT_EQ(idle.sleeps(), 1u) << "slept within the spin time";
  clock.advance_by(49us);
  idle.idle(clock.now() + 1ms);
  EXPECT_EQ(idle.sleeps(), 1u);
  clock.advance_by(1us);
  EXPECT_TRUE(idle.spinning());
  idle.idle(std::nullopt);  // the spin is over: one more cycle to prepare, no sleep yet
  EXPECT_EQ(idle.sleeps(), 1u);
  EXPECT_FALSE(idle.spinning());
  ASSERT_EQ(::write(p.fds[1], "x", 1), 1);  // readable: the sleep ends at once
  idle.idle(std::nullopt);
  EXPECT_EQ(idle.sleeps(), 2u) << "did not sleep after the spin time";
  idle.idle(std::nullopt);  // and keeps sleeping until the next work
  EXPECT_EQ(idle.sleeps(), 3u);
}

TEST(BlockingIdle, AnIdleRunnerWithASpinUsesNoCpu) {
  Pipe p;
  SystemClock clock;
  PipeAgent agent(p.fds[0]);
  BlockingIdle idle(clock, {p.fds[0]}, 200us);
  AgentRunner runner(agent, idle);
  agent.runner = &runner;
  agent.stop_after = 2;
  std::thread writer([&] {
    ASSERT_EQ(::write(p.fds[1], "a", 1), 1);
    std::this_thread::sleep_for(200ms);
    ASSERT_EQ(::write(p.fds[1], "b", 1), 1);
  });
  const Nanos cpu0 = cpu_time();
  runner.run();
  const Nanos cpu = cpu_time() - cpu0;
  writer.join();
  EXPECT_EQ(agent.bytes, 2u);
  // One spin of 200 us after the first byte, then asleep for ~200 ms.
  EXPECT_LE(idle.sleeps(), 3u);
  EXPECT_LT(cpu, 20ms) << "spun past the spin time";
}

TEST(AgentRunner, DoesNotIdleAfterWork) {
  Pipe p;
  SystemClock clock;
  PipeAgent agent(p.fds[0]);
  BlockingIdle idle(clock, {p.fds[0]});
  AgentRunner runner(agent, idle);
  ASSERT_EQ(::write(p.fds[1], "x", 1), 1);
  EXPECT_EQ(runner.run_once(), 1);
  EXPECT_EQ(idle.sleeps(), 0u);
}

}  // namespace
}  // namespace locabus::engine
