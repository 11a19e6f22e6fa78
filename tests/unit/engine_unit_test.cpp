// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Unit tests of the protocol engine's building blocks: the timer wheel, the
// message ring, the control payload codec, the configuration's validation,
// the per-connection state bound, FunctionRef, and how the engine follows its
// transport's hints (TX space, validated frames). The protocol itself is
// tested on the simulated network (tests/sim/).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <locabus/wire.hpp>

#include "common/error.hpp"
#include "common/function_ref.hpp"
#include "engine/buffers.hpp"
#include "engine/clock.hpp"
#include "engine/config.hpp"
#include "engine/connection.hpp"
#include "engine/control.hpp"
#include "engine/engine.hpp"
#include "engine/timer_wheel.hpp"
#include "engine/transport.hpp"
#include "frame_builder.hpp"

namespace locabus::engine {
namespace {

using namespace std::chrono_literals;
using Bytes = std::vector<std::byte>;

Bytes bytes(std::initializer_list<int> v) {
  Bytes out;
  for (int b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

Bytes to_vector(std::span<const std::byte> s) { return Bytes(s.begin(), s.end()); }

// ---- TimerWheel ---------------------------------------------------------------

struct Fired {
  TimerWheel::Entry entry;
  Nanos at;
};

/// Calls expire(now) and returns what fired, checking each entry was due.
std::vector<Fired> expire_all(TimerWheel& w, Nanos now) {
  std::vector<Fired> out;
  const std::size_t n = w.expire(now, [&](const TimerWheel::Entry& e) { out.push_back({e, now}); });
  EXPECT_EQ(n, out.size()) << "expire() must return the number of entries it fired";
  for (const Fired& f : out) {
    EXPECT_LE(f.entry.deadline, now) << "entry of owner " << f.entry.owner << " fired before its deadline";
  }
  return out;
}

std::vector<std::uint32_t> owners(const std::vector<Fired>& fired) {
  std::vector<std::uint32_t> out;
  for (const Fired& f : fired) out.push_back(f.entry.owner);
  std::sort(out.begin(), out.end());
  return out;
}

TEST(TimerWheel, EmptyWheelHasNoDeadlineAndFiresNothing) {
  TimerWheel w;
  EXPECT_EQ(w.size(), 0u);
  EXPECT_FALSE(w.next_deadline());
  EXPECT_TRUE(expire_all(w, 0ns).empty());
  EXPECT_TRUE(expire_all(w, 10s).empty());
  EXPECT_FALSE(w.next_deadline());
}

TEST(TimerWheel, FiresAtTheFirstExpireAtOrAfterTheDeadlineNeverBefore) {
  // Deadlines inside a tick, on tick boundaries, on both sides of one
  // revolution (64 slots x 1 ms) and several revolutions away.
  TimerWheel w(1ms, 64);
  const std::vector<Nanos> deadlines = {1ns,       500us, 999'999ns, 1ms,          1'000'001ns,
                                        2'300us,   63ms,  64ms,      64'000'001ns, 65ms,
                                        127'999us, 128ms, 200ms,     1s,           2'000'050us};
  for (std::size_t i = 0; i < deadlines.size(); ++i) {
    w.schedule(deadlines[i], static_cast<std::uint32_t>(i), static_cast<std::uint8_t>(i % 3));
  }
  EXPECT_EQ(w.size(), deadlines.size());
  std::vector<int> fire_count(deadlines.size(), 0);
  const Nanos step = 50us;
  for (Nanos now = 0ns; now <= 2100ms; now += step) {
    for (const Fired& f : expire_all(w, now)) {
      ASSERT_LT(f.entry.owner, deadlines.size());
      EXPECT_EQ(f.entry.deadline, deadlines[f.entry.owner]);
      EXPECT_EQ(f.entry.kind, f.entry.owner % 3);
      // Not late either: the first expire() with now >= deadline fires it.
      EXPECT_LT(now - f.entry.deadline, step) << "owner " << f.entry.owner << " fired late";
      ++fire_count[f.entry.owner];
    }
  }
  for (std::size_t i = 0; i < deadlines.size(); ++i) EXPECT_EQ(fire_count[i], 1) << "owner " << i;
  EXPECT_EQ(w.size(), 0u);
  EXPECT_FALSE(w.next_deadline());
}

TEST(TimerWheel, EntryExactlyAtNowFiresAndOneNanosecondLaterDoesNot) {
  TimerWheel w(1ms, 16);
  w.schedule(5ms, 1, 0);
  w.schedule(5ms + 1ns, 2, 0);
  EXPECT_TRUE(expire_all(w, 5ms - 1ns).empty());
  EXPECT_EQ(owners(expire_all(w, 5ms)), std::vector<std::uint32_t>{1});
  EXPECT_EQ(w.next_deadline(), 5ms + 1ns);
  EXPECT_EQ(owners(expire_all(w, 5ms + 1ns)), std::vector<std::uint32_t>{2});
}

TEST(TimerWheel, EntriesScheduledInThePastFireOnTheNextExpire) {
  TimerWheel w(1ms, 16);
  EXPECT_TRUE(expire_all(w, 100ms).empty());  // the wheel is now at 100 ms
  w.schedule(0ns, 1, 0);
  w.schedule(50ms, 2, 0);
  w.schedule(99'999'999ns, 3, 0);
  w.schedule(100ms, 4, 0);
  w.schedule(100ms + 1ns, 5, 0);  // not due yet
  EXPECT_EQ(w.next_deadline(), 0ns) << "the earliest deadline, even if it is in the past";
  EXPECT_EQ(owners(expire_all(w, 100ms)), (std::vector<std::uint32_t>{1, 2, 3, 4}));
  EXPECT_EQ(w.size(), 1u);
  EXPECT_EQ(w.next_deadline(), 100ms + 1ns);

  // Past entries after expiries that moved the wheel several revolutions on.
  EXPECT_EQ(owners(expire_all(w, 1s)), std::vector<std::uint32_t>{5});
  w.schedule(10ms, 6, 0);
  w.schedule(999ms, 7, 0);
  EXPECT_EQ(w.next_deadline(), 10ms);
  EXPECT_EQ(owners(expire_all(w, 1s)), (std::vector<std::uint32_t>{6, 7}));
  EXPECT_FALSE(w.next_deadline());
}

TEST(TimerWheel, NextDeadlineIsTheEarliest) {
  TimerWheel w(1ms, 16);  // one revolution = 16 ms
  w.schedule(7ms, 1, 0);
  w.schedule(3ms + 500us, 2, 0);
  w.schedule(5ms, 3, 0);
  EXPECT_EQ(w.next_deadline(), 3ms + 500us);
  EXPECT_EQ(w.size(), 3u);

  // After expiries (the cached value is no longer valid).
  EXPECT_EQ(owners(expire_all(w, 4ms)), std::vector<std::uint32_t>{2});
  EXPECT_EQ(w.next_deadline(), 5ms);
  EXPECT_EQ(owners(expire_all(w, 5ms)), std::vector<std::uint32_t>{3});
  EXPECT_EQ(w.next_deadline(), 7ms);

  // An entry in the same slot one revolution later (23 ms = 7 ms + 16 ms)
  // and one several revolutions away.
  w.schedule(23ms, 4, 0);
  w.schedule(100ms + 1ns, 5, 0);
  EXPECT_EQ(w.next_deadline(), 7ms);
  EXPECT_EQ(owners(expire_all(w, 7ms)), std::vector<std::uint32_t>{1});
  EXPECT_EQ(w.next_deadline(), 23ms);
  // Nothing due, but time moves past the slot of entry 4's tick modulo 16.
  EXPECT_TRUE(expire_all(w, 22ms).empty());
  EXPECT_EQ(w.next_deadline(), 23ms);
  EXPECT_EQ(owners(expire_all(w, 23ms)), std::vector<std::uint32_t>{4});
  // Only an entry more than one revolution away is left.
  EXPECT_EQ(w.next_deadline(), 100ms + 1ns);
  // An earlier one scheduled now must win over the far one.
  w.schedule(40ms, 6, 0);
  EXPECT_EQ(w.next_deadline(), 40ms);
  EXPECT_EQ(owners(expire_all(w, 40ms)), std::vector<std::uint32_t>{6});
  EXPECT_EQ(w.next_deadline(), 100ms + 1ns);
  // A later entry within this revolution, then expire nothing: still the earliest.
  w.schedule(50ms, 7, 0);
  EXPECT_EQ(w.next_deadline(), 50ms);
  EXPECT_EQ(owners(expire_all(w, 100ms + 1ns)), (std::vector<std::uint32_t>{5, 7}));
  EXPECT_FALSE(w.next_deadline());
  EXPECT_EQ(w.size(), 0u);
}

TEST(TimerWheel, AllEntriesMoreThanOneRevolutionAway) {
  TimerWheel w(1ms, 8);  // 8 ms per revolution
  w.schedule(1000ms, 1, 0);
  w.schedule(500ms + 3us, 2, 0);
  w.schedule(77ms, 3, 0);
  // Fire something first so that next_deadline() must search.
  w.schedule(1ms, 4, 0);
  EXPECT_EQ(owners(expire_all(w, 1ms)), std::vector<std::uint32_t>{4});
  EXPECT_EQ(w.next_deadline(), 77ms);
  EXPECT_EQ(owners(expire_all(w, 77ms)), std::vector<std::uint32_t>{3});
  EXPECT_EQ(w.next_deadline(), 500ms + 3us);
  EXPECT_TRUE(expire_all(w, 500ms).empty());
  EXPECT_EQ(w.next_deadline(), 500ms + 3us);
  EXPECT_EQ(owners(expire_all(w, 999ms)), std::vector<std::uint32_t>{2});
  EXPECT_EQ(w.next_deadline(), 1000ms);
}

TEST(TimerWheel, LongJumpForwardFiresEverythingDueExactlyOnce) {
  TimerWheel w(1ms, 4096);  // the engine's defaults: one revolution is 4.096 s
  std::mt19937_64 rng(42);
  constexpr std::uint32_t kEntries = 20'000;
  std::vector<Nanos> deadline(kEntries);
  for (std::uint32_t i = 0; i < kEntries; ++i) {
    // 0 .. 12 s: most due at 10 s, some beyond, across three revolutions.
    deadline[i] = Nanos{static_cast<std::int64_t>(rng() % 12'000'000'000ull)};
    w.schedule(deadline[i], i, 0);
  }
  const Nanos jump = 10s;
  std::vector<int> fired(kEntries, 0);
  for (const Fired& f : expire_all(w, jump)) ++fired[f.entry.owner];
  std::size_t due = 0;
  Nanos earliest_left = Nanos::max();
  for (std::uint32_t i = 0; i < kEntries; ++i) {
    if (deadline[i] <= jump) {
      ++due;
      EXPECT_EQ(fired[i], 1) << "entry " << i << " due at " << deadline[i].count() << " ns";
    } else {
      EXPECT_EQ(fired[i], 0) << "entry " << i << " not due until " << deadline[i].count() << " ns";
      earliest_left = std::min(earliest_left, deadline[i]);
    }
  }
  ASSERT_GT(due, 0u);
  ASSERT_LT(due, kEntries);
  EXPECT_EQ(w.size(), kEntries - due);
  EXPECT_EQ(w.next_deadline(), earliest_left);
  // A second jump fires the rest, once.
  for (const Fired& f : expire_all(w, 60s)) ++fired[f.entry.owner];
  for (std::uint32_t i = 0; i < kEntries; ++i) EXPECT_EQ(fired[i], 1) << "entry " << i;
  EXPECT_EQ(w.size(), 0u);
  EXPECT_FALSE(w.next_deadline());
}

TEST(TimerWheel, HandlersMayScheduleFromInsideExpire) {
  TimerWheel w(1ms, 32);
  // A periodic timer (owner 1, every 3 ms) and one-shot chains: owner 2
  // schedules an entry that is already due (it fires on the next call, not
  // in this one), owner 3 schedules one more than a revolution away.
  w.schedule(3ms, 1, 0);
  w.schedule(10ms, 2, 0);
  w.schedule(11ms, 3, 0);
  int periodic = 0;
  std::vector<std::pair<std::uint32_t, Nanos>> log;
  Nanos now = 0ns;
  auto run = [&](Nanos t) {
    now = t;
    return w.expire(now, [&](const TimerWheel::Entry& e) {
      EXPECT_LE(e.deadline, now);
      log.emplace_back(e.owner, now);
      switch (e.owner) {
        case 1:
          ++periodic;
          w.schedule(e.deadline + 3ms, 1, 0);
          break;
        case 2: w.schedule(now - 5ms, 20, 0); break;  // already due
        case 3: w.schedule(now + 40ms, 30, 0); break;
        default: break;
      }
    });
  };
  for (Nanos t = 0ns; t <= 60ms; t += 1ms) {
    const std::size_t before = log.size();
    run(t);
    // Entry 20 is due at once but fires on the next expire(), which here is
    // the same instant again.
    if (std::any_of(log.begin() + static_cast<std::ptrdiff_t>(before), log.end(),
                    [](const auto& l) { return l.first == 2; })) {
      EXPECT_EQ(w.next_deadline(), t - 5ms);
      const std::size_t mid = log.size();
      EXPECT_EQ(run(t), 1u);
      ASSERT_EQ(log.size(), mid + 1);
      EXPECT_EQ(log.back().first, 20u);
    }
  }
  EXPECT_EQ(periodic, 20);  // 3, 6, ..., 60 ms
  auto fired_at = [&](std::uint32_t owner) {
    std::vector<Nanos> at;
    for (const auto& [o, t] : log)
      if (o == owner) at.push_back(t);
    return at;
  };
  EXPECT_EQ(fired_at(2), std::vector<Nanos>{10ms});
  EXPECT_EQ(fired_at(20), std::vector<Nanos>{10ms});
  EXPECT_EQ(fired_at(3), std::vector<Nanos>{11ms});
  EXPECT_EQ(fired_at(30), std::vector<Nanos>{51ms});
  EXPECT_EQ(w.size(), 1u);  // the periodic timer's next entry
  EXPECT_EQ(w.next_deadline(), 63ms);
}

struct WheelParams {
  Nanos tick;
  std::size_t slots;
  std::uint64_t seed;
};
void PrintTo(const WheelParams& p, std::ostream* os) {
  *os << "tick " << p.tick.count() << " ns, " << p.slots << " slots, seed " << p.seed;
}

class TimerWheelModel : public ::testing::TestWithParam<WheelParams> {};

// The wheel against a reference model (a multimap from deadline to owner):
// after every operation, the same entries pending, the same ones fired, the
// same earliest deadline.
TEST_P(TimerWheelModel, AgreesWithAMultimapOverRandomOperations) {
  const WheelParams param = GetParam();
  TimerWheel w(param.tick, param.slots);
  std::multimap<Nanos, std::uint32_t> model;
  std::mt19937_64 rng(param.seed);
  const std::int64_t tick = param.tick.count();
  const std::int64_t revolution = tick * static_cast<std::int64_t>(std::bit_ceil(param.slots));
  auto below = [&](std::int64_t n) {
    return static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n));
  };
  Nanos now{0};
  std::uint32_t next_owner = 0;
  std::size_t fired_total = 0;

  auto random_deadline = [&]() -> Nanos {
    switch (below(6)) {
      case 0: return now - Nanos{below(3 * tick)};                   // in the past
      case 1: return now + Nanos{below(2 * tick)};                   // this tick or the next
      case 2: return now + Nanos{below(revolution)};                 // within a revolution
      case 3: return now + Nanos{below(4 * revolution)};             // several revolutions away
      case 4: return Nanos{(now.count() / tick + below(3)) * tick};  // on a tick boundary
      default: return now + Nanos{below(tick / 2 + 1)};
    }
  };
  auto remove_from_model = [&](const TimerWheel::Entry& e) {
    auto [lo, hi] = model.equal_range(e.deadline);
    auto it = std::find_if(lo, hi, [&](const auto& kv) { return kv.second == e.owner; });
    if (it == hi) {
      ADD_FAILURE() << "fired an entry the model does not have: owner " << e.owner << " deadline "
                    << e.deadline.count();
      return;
    }
    model.erase(it);
  };

  for (int op = 0; op < 20'000; ++op) {
    const auto choice = below(100);
    if (choice < 45) {
      const Nanos d = random_deadline();
      const std::uint32_t owner = next_owner++;
      w.schedule(d, owner, static_cast<std::uint8_t>(owner & 0xff));
      model.emplace(d, owner);
    } else {
      // Advance time: usually a little, sometimes past a revolution.
      const auto kind = below(20);
      if (kind == 0) {
        now += Nanos{below(8 * revolution)};
      } else if (kind < 4) {
        now += Nanos{below(revolution)};
      } else if (kind < 18) {
        now += Nanos{below(3 * tick)};
      }  // else: expire at the same instant again
      // Expected: every entry due now, before the handlers add more.
      std::vector<std::uint32_t> expected;
      for (auto it = model.begin(); it != model.end() && it->first <= now; ++it)
        expected.push_back(it->second);
      std::sort(expected.begin(), expected.end());
      std::vector<std::uint32_t> got;
      std::vector<std::pair<Nanos, std::uint32_t>> added;
      const std::size_t n = w.expire(now, [&](const TimerWheel::Entry& e) {
        if (e.deadline > now) ADD_FAILURE() << "owner " << e.owner << " fired early at op " << op;
        if (e.kind != (e.owner & 0xff)) ADD_FAILURE() << "owner " << e.owner << " has the wrong kind";
        got.push_back(e.owner);
        remove_from_model(e);
        // Sometimes the handler re-arms: now, later, or already due.
        if (below(4) == 0) {
          const Nanos d = random_deadline();
          const std::uint32_t owner = next_owner++;
          w.schedule(d, owner, static_cast<std::uint8_t>(owner & 0xff));
          added.emplace_back(d, owner);
        }
      });
      for (const auto& [d, owner] : added) model.emplace(d, owner);
      EXPECT_EQ(n, got.size());
      std::sort(got.begin(), got.end());
      ASSERT_EQ(got, expected) << "at op " << op << ", now " << now.count() << " ns";
      fired_total += got.size();
    }
    ASSERT_EQ(w.size(), model.size()) << "at op " << op;
    const std::optional<Nanos> want =
        model.empty() ? std::nullopt : std::optional<Nanos>(model.begin()->first);
    ASSERT_EQ(w.next_deadline(), want) << "at op " << op << ", now " << now.count() << " ns";
  }
  EXPECT_GT(fired_total, 1000u) << "the test should exercise expiry, not only scheduling";
  // Drain: far in the future everything fires exactly once.
  now += 100 * Nanos{revolution};
  std::set<std::uint32_t> left;
  for (const auto& kv : model) left.insert(kv.second);
  std::set<std::uint32_t> got;
  w.expire(now, [&](const TimerWheel::Entry& e) { EXPECT_TRUE(got.insert(e.owner).second); });
  EXPECT_EQ(got, left);
  EXPECT_EQ(w.size(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Configs, TimerWheelModel,
                         ::testing::Values(WheelParams{1ms, 4096, 1}, WheelParams{1ms, 16, 2},
                                           WheelParams{100us, 64, 3}, WheelParams{7us, 5, 4},
                                           WheelParams{1ns, 2, 5}),
                         [](const auto& p) {
                           return "tick" + std::to_string(p.param.tick.count()) + "ns_slots" +
                                  std::to_string(p.param.slots);
                         });

// ---- MessageRing ---------------------------------------------------------------

Bytes payload_of(int i, std::size_t len = 0) {
  if (len == 0) len = 1 + static_cast<std::size_t>(i % 37);
  Bytes b(len);
  for (std::size_t k = 0; k < len; ++k) b[k] = static_cast<std::byte>((i * 31 + static_cast<int>(k)) & 0xff);
  return b;
}

TEST(MessageRing, EmptyRingWithoutLimitIsFull) {
  MessageRing r;
  EXPECT_EQ(r.limit(), 0u);
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(r.free(), 0u);
  EXPECT_TRUE(r.empty());
  EXPECT_TRUE(r.full());
  r.pop_front(3);  // no storage yet: a no-op
  EXPECT_TRUE(r.empty());
}

TEST(MessageRing, FifoOrderLimitFullFree) {
  MessageRing r(5);
  EXPECT_EQ(r.limit(), 5u);
  EXPECT_EQ(r.free(), 5u);
  EXPECT_FALSE(r.full());
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(r.full());
    r.push(static_cast<std::uint8_t>(i + 10), payload_of(i));
    EXPECT_EQ(r.size(), static_cast<std::size_t>(i + 1));
    EXPECT_EQ(r.free(), static_cast<std::size_t>(4 - i));
  }
  EXPECT_TRUE(r.full());
  EXPECT_FALSE(r.empty());
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(r.at(static_cast<std::size_t>(i)).proto, i + 10);
    EXPECT_EQ(r.at(static_cast<std::size_t>(i)).data, payload_of(i));
  }
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(r.at(0).proto, i + 10);
    EXPECT_EQ(r.at(0).data, payload_of(i));
    r.pop_front();
    EXPECT_FALSE(r.full());
  }
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.free(), 5u);
}

TEST(MessageRing, GrowthPreservesOrderAcrossWrapAround) {
  MessageRing r(64);
  // Fill the first allocation (4 slots), move the head, wrap, then grow.
  int next = 0;
  int front = 0;
  for (int i = 0; i < 4; ++i) r.push(0, payload_of(next++));
  r.pop_front(3);
  front = 3;
  for (int i = 0; i < 3; ++i) r.push(0, payload_of(next++));  // wraps: head is slot 3
  ASSERT_EQ(r.size(), 4u);
  r.push(0, payload_of(next++));                               // grows 4 -> 8 with the head mid-storage
  for (int i = 0; i < 20; ++i) r.push(0, payload_of(next++));  // grows again, twice
  ASSERT_EQ(r.size(), static_cast<std::size_t>(next - front));
  for (std::size_t i = 0; i < r.size(); ++i) {
    ASSERT_EQ(r.at(i).data, payload_of(front + static_cast<int>(i))) << "position " << i;
  }
  // Interleave pushes and pops with a std::deque as the reference, up to the
  // limit, so that the ring wraps many times and grows with any head.
  std::deque<int> model;
  for (int i = front; i < next; ++i) model.push_back(i);
  std::mt19937 rng(7);
  for (int step = 0; step < 5000; ++step) {
    if (!r.full() && (rng() % 3 != 0 || r.empty())) {
      const std::uint8_t proto = static_cast<std::uint8_t>(next & 0xff);
      r.push(proto, payload_of(next));
      model.push_back(next++);
    } else {
      const std::size_t n = 1 + rng() % 4;
      r.pop_front(n);
      for (std::size_t k = 0; k < n && !model.empty(); ++k) model.pop_front();
    }
    ASSERT_EQ(r.size(), model.size());
    ASSERT_EQ(r.free(), 64 - model.size());
    ASSERT_EQ(r.full(), model.size() == 64);
    if (!model.empty()) {
      ASSERT_EQ(r.at(0).data, payload_of(model.front())) << "step " << step;
      ASSERT_EQ(r.at(r.size() - 1).data, payload_of(model.back())) << "step " << step;
    }
  }
  for (std::size_t i = 0; i < model.size(); ++i) {
    EXPECT_EQ(r.at(i).data, payload_of(model[i]));
    EXPECT_EQ(r.at(i).proto, static_cast<std::uint8_t>(model[i] & 0xff));
  }
}

TEST(MessageRing, LimitThatIsNotAPowerOfTwo) {
  MessageRing r(6);
  for (int i = 0; i < 6; ++i) r.push(0, payload_of(i));
  EXPECT_TRUE(r.full());
  r.pop_front(4);
  for (int i = 6; i < 10; ++i) r.push(0, payload_of(i));
  EXPECT_TRUE(r.full());
  for (std::size_t i = 0; i < 6; ++i) EXPECT_EQ(r.at(i).data, payload_of(4 + static_cast<int>(i)));
}

TEST(MessageRing, PopFrontN) {
  MessageRing r(16);
  for (int i = 0; i < 10; ++i) r.push(0, payload_of(i));
  r.pop_front(0);
  EXPECT_EQ(r.size(), 10u);
  r.pop_front(4);
  EXPECT_EQ(r.size(), 6u);
  EXPECT_EQ(r.at(0).data, payload_of(4));
  r.pop_front(100);  // more than there is: empties it
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.free(), 16u);
  r.push(1, payload_of(99));
  EXPECT_EQ(r.size(), 1u);
  EXPECT_EQ(r.at(0).data, payload_of(99));
}

TEST(MessageRing, ReusedSlotsHoldExactlyTheNewMessage) {
  MessageRing r(4);
  for (int i = 0; i < 4; ++i) r.push(0, payload_of(i, 1000));
  r.pop_front(4);
  r.push(2, payload_of(5, 3));  // a short message into a slot that held 1000 bytes
  r.push(3, {});                // and an empty one
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r.at(0).data, payload_of(5, 3));
  EXPECT_EQ(r.at(0).proto, 2);
  EXPECT_TRUE(r.at(1).data.empty());
  EXPECT_EQ(r.at(1).proto, 3);
}

TEST(MessageRing, ClearAndRelease) {
  MessageRing r(8);
  for (int i = 0; i < 7; ++i) r.push(0, payload_of(i));
  r.pop_front(2);
  r.clear();
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.free(), 8u);
  EXPECT_EQ(r.limit(), 8u);
  for (int i = 0; i < 8; ++i) r.push(0, payload_of(100 + i));
  EXPECT_TRUE(r.full());
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(r.at(i).data, payload_of(100 + static_cast<int>(i)));

  r.release();
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.limit(), 8u);
  r.pop_front();                                               // no storage again
  for (int i = 0; i < 8; ++i) r.push(0, payload_of(200 + i));  // grows from nothing
  EXPECT_TRUE(r.full());
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(r.at(i).data, payload_of(200 + static_cast<int>(i)));
}

// ---- control payloads ------------------------------------------------------------

TEST(ControlCodec, Hton64IsBigEndian) {
  constexpr std::uint64_t v = 0x0102030405060708ull;
  std::uint64_t n = control::hton64(v);
  std::array<std::uint8_t, 8> mem{};
  std::memcpy(mem.data(), &n, 8);
  EXPECT_EQ(mem, (std::array<std::uint8_t, 8>{1, 2, 3, 4, 5, 6, 7, 8}));
  if constexpr (std::endian::native == std::endian::little) {
    static_assert(control::hton64(0x0102030405060708ull) == 0x0807060504030201ull);
  }
  static_assert(control::ntoh64(control::hton64(0xdeadbeefcafef00dull)) == 0xdeadbeefcafef00dull);
  for (std::uint64_t x : {0ull, 1ull, 0xffull, 0x8000000000000000ull, 0xffffffffffffffffull,
                          0x00ff00ff00ff00ffull, 1'700'000'000'123'456'789ull}) {
    EXPECT_EQ(control::ntoh64(control::hton64(x)), x);
  }
  n = control::hton64(0xff);
  std::memcpy(mem.data(), &n, 8);
  EXPECT_EQ(mem, (std::array<std::uint8_t, 8>{0, 0, 0, 0, 0, 0, 0, 0xff}));
}

TEST(ControlCodec, HelloBytesInNetworkOrder) {
  const control::Hello h{0x03, 0x0102, 0x1122334455667788ull};
  const locabus_hello raw = control::encode(h);
  // Computed by hand from wire.h: version, flags, known (BE16), reserved
  // (4 zero bytes), epoch (BE64).
  const Bytes expected =
      bytes({0x01, 0x03, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88});
  EXPECT_EQ(to_vector(control::bytes_of(raw)), expected);
  // And a payload written by hand decodes to the same values.
  const auto back = control::decode_hello(expected);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->flags, 0x03);
  EXPECT_EQ(back->known, 0x0102);
  EXPECT_EQ(back->epoch, 0x1122334455667788ull);
}

TEST(ControlCodec, HelloRoundTripAndRejections) {
  for (const control::Hello h : {control::Hello{}, control::Hello{LOCABUS_HELLO_F_LEAVING, 7, 1},
                                 control::Hello{0xff, 0xffff, 0xffffffffffffffffull}}) {
    const locabus_hello raw = control::encode(h);
    const auto back = control::decode_hello(control::bytes_of(raw));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->flags, h.flags);
    EXPECT_EQ(back->known, h.known);
    EXPECT_EQ(back->epoch, h.epoch);
  }
  const locabus_hello raw = control::encode(control::Hello{0, 3, 99});
  Bytes p = to_vector(control::bytes_of(raw));
  // Longer payloads are accepted (later versions may append fields).
  Bytes longer = p;
  longer.resize(40, std::byte{0xee});
  ASSERT_TRUE(control::decode_hello(longer));
  EXPECT_EQ(control::decode_hello(longer)->epoch, 99u);
  // Shorter ones are not, down to empty.
  for (std::size_t n = 0; n < p.size(); ++n) {
    EXPECT_FALSE(control::decode_hello(std::span(p).first(n))) << n << " bytes";
  }
  // Nor another version.
  for (int v : {0, 2, 0xff}) {
    Bytes other = p;
    other[0] = static_cast<std::byte>(v);
    EXPECT_FALSE(control::decode_hello(other)) << "version " << v;
    EXPECT_FALSE(control::decode_syn(other)) << "version " << v;
  }
}

TEST(ControlCodec, SynRoundTripAndLayout) {
  const control::Syn s{{0x01, 5, 0x0a0b0c0d0e0f1011ull}, 0x2122232425262728ull};
  const locabus_syn raw = control::encode(s);
  const Bytes b = to_vector(control::bytes_of(raw));
  ASSERT_EQ(b.size(), 24u);
  EXPECT_EQ(b[0], std::byte{LOCABUS_CTRL_VERSION});
  EXPECT_EQ(Bytes(b.begin() + 16, b.end()), bytes({0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28}));
  const auto back = control::decode_syn(b);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->hello.flags, 0x01);
  EXPECT_EQ(back->hello.known, 5);
  EXPECT_EQ(back->hello.epoch, 0x0a0b0c0d0e0f1011ull);
  EXPECT_EQ(back->peer_epoch, 0x2122232425262728ull);
  // A SYN starts with a hello, so decode_hello reads it too.
  ASSERT_TRUE(control::decode_hello(b));
  EXPECT_EQ(control::decode_hello(b)->epoch, 0x0a0b0c0d0e0f1011ull);
  // A bare hello (or anything shorter than 24 bytes) is not a SYN.
  for (std::size_t n = 0; n < b.size(); ++n) {
    EXPECT_FALSE(control::decode_syn(std::span(b).first(n))) << n << " bytes";
  }
}

std::vector<control::MemberEntry> members(std::size_t n) {
  std::vector<control::MemberEntry> out;
  for (std::size_t i = 0; i < n; ++i) {
    control::MemberEntry m;
    m.node = static_cast<std::uint16_t>(0x0100 + i);
    m.mac = wire::MacAddress{
        {0x02, 0x00, 0xaa, 0xbb, static_cast<std::uint8_t>(i >> 8), static_cast<std::uint8_t>(i)}};
    m.epoch = 0x1000000000000000ull + i * 0x0101;
    out.push_back(m);
  }
  return out;
}

TEST(ControlCodec, ReplyWithNoEntries) {
  const control::Hello h{0, 0, 42};
  const Bytes b = control::encode_reply(h, 0x0304, {});
  ASSERT_EQ(b.size(), sizeof(locabus_reply));
  ASSERT_EQ(b.size(), 24u);
  // offset (BE16) at 16, count (BE16) at 18, 4 reserved bytes.
  EXPECT_EQ(Bytes(b.begin() + 16, b.end()), bytes({0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}));
  const auto r = control::decode_reply(b);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->hello.epoch, 42u);
  EXPECT_EQ(r->offset, 0x0304);
  EXPECT_TRUE(r->entries.empty());
  // Shorter than the reply header: rejected, even if it holds a hello.
  for (std::size_t n = 0; n < b.size(); ++n) {
    EXPECT_FALSE(control::decode_reply(std::span(b).first(n))) << n << " bytes";
  }
}

TEST(ControlCodec, ReplyEntryLayout) {
  const auto list = members(2);
  const Bytes b = control::encode_reply(control::Hello{0, 2, 1}, 0, list);
  ASSERT_EQ(b.size(), 24u + 2 * 16u);
  EXPECT_EQ(Bytes(b.begin() + 18, b.begin() + 20), bytes({0x00, 0x02}));  // count
  // Second entry: node 0x0101 BE, MAC, epoch 0x1000000000000101 BE.
  EXPECT_EQ(Bytes(b.begin() + 40, b.end()), bytes({0x01, 0x01, 0x02, 0x00, 0xaa, 0xbb, 0x00, 0x01, 0x10, 0x00,
                                                   0x00, 0x00, 0x00, 0x00, 0x01, 0x01}));
}

TEST(ControlCodec, ReplyWithTheMostEntriesAFrameHolds) {
  static_assert(control::kReplyMaxEntries == 91, "(1484 - 24) / 16");
  const auto list = members(control::kReplyMaxEntries);
  const Bytes b = control::encode_reply(control::Hello{0, 91, 7}, 182, list);
  EXPECT_EQ(b.size(), 24u + 91u * 16u);
  EXPECT_LE(b.size(), wire::kMaxPayload);
  EXPECT_GT(b.size() + sizeof(locabus_member_entry), wire::kMaxPayload) << "one more would not fit";
  // It fits in a frame and survives the frame codec.
  std::array<std::byte, wire::kMaxFrame> frame{};
  wire::Header hdr;
  hdr.set_type(wire::PacketType::discover_reply).set_proto(wire::Protocol::control).set_node_to(1);
  const std::size_t n = wire::encode_frame(frame, wire::MacAddress::broadcast(), wire::MacAddress{}, hdr, b);
  ASSERT_GT(n, 0u);
  const auto view = wire::decode_frame(std::span(frame).first(n));
  ASSERT_TRUE(view);
  const auto r = control::decode_reply(view->payload);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->offset, 182);
  ASSERT_EQ(r->entries.size(), list.size());
  for (std::size_t i = 0; i < list.size(); ++i) {
    EXPECT_EQ(r->entries[i].node, list[i].node);
    EXPECT_EQ(r->entries[i].mac, list[i].mac);
    EXPECT_EQ(r->entries[i].epoch, list[i].epoch);
  }
}

TEST(ControlCodec, PollRoundTripLayoutAndRejections) {
  control::Poll p;
  p.epoch = 0x0102030405060708ULL;
  p.nackers = 2;
  p.ackers[0] = 0x0A0B;
  p.ackers[1] = 7;
  const locabus_poll raw = control::encode(p);
  const auto bytes = control::bytes_of(raw);
  ASSERT_EQ(bytes.size(), 24u);
  EXPECT_EQ(bytes[0], std::byte{LOCABUS_CTRL_VERSION});
  EXPECT_EQ(bytes[1], std::byte{2});
  EXPECT_EQ(bytes[8], std::byte{1});  // epoch big-endian at 8
  EXPECT_EQ(bytes[15], std::byte{8});
  EXPECT_EQ(bytes[16], std::byte{0x0A});  // ackers[0] at 16
  EXPECT_EQ(bytes[17], std::byte{0x0B});
  auto back = control::decode_poll(bytes);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->epoch, p.epoch);
  EXPECT_TRUE(back->asks(0x0A0B));
  EXPECT_TRUE(back->asks(7));
  EXPECT_FALSE(back->asks(8));
  EXPECT_FALSE(control::decode_poll(bytes.first(23)));
  std::vector<std::byte> bad(bytes.begin(), bytes.end());
  bad[1] = std::byte{5};  // more ackers than fit
  EXPECT_FALSE(control::decode_poll(bad));
  bad[1] = std::byte{2};
  bad[0] = std::byte{2};  // another version
  EXPECT_FALSE(control::decode_poll(bad));
}

TEST(ControlCodec, BroadcastAckNakRoundTripAndLayout) {
  const control::BcastCtl c{0x1234, 0xFFFE, 3, 42};
  const locabus_bcast_ctl raw = control::encode(c);
  const auto bytes = control::bytes_of(raw);
  ASSERT_EQ(bytes.size(), 16u);
  EXPECT_EQ(bytes[2], std::byte{0x12});  // stream at 2
  EXPECT_EQ(bytes[4], std::byte{0xFF});  // first at 4
  EXPECT_EQ(bytes[5], std::byte{0xFE});
  EXPECT_EQ(bytes[7], std::byte{3});  // count at 6
  EXPECT_EQ(bytes[15], std::byte{42});
  auto back = control::decode_bcast_ctl(bytes);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->stream, 0x1234);
  EXPECT_EQ(back->first, 0xFFFE);
  EXPECT_EQ(back->count, 3);
  EXPECT_EQ(back->epoch, 42u);
  EXPECT_FALSE(control::decode_bcast_ctl(bytes.first(15)));
}

TEST(ControlCodec, TruncatedEntryListIsRejected) {
  const Bytes b = control::encode_reply(control::Hello{0, 3, 9}, 0, members(3));
  ASSERT_TRUE(control::decode_reply(b));
  // Any cut into the entries.
  for (std::size_t n = sizeof(locabus_reply); n < b.size(); ++n) {
    EXPECT_FALSE(control::decode_reply(std::span(b).first(n))) << n << " of " << b.size() << " bytes";
  }
  // A count larger than the entries present.
  Bytes lying = b;
  lying[19] = std::byte{4};
  EXPECT_FALSE(control::decode_reply(lying));
  lying[18] = std::byte{0xff};
  lying[19] = std::byte{0xff};
  EXPECT_FALSE(control::decode_reply(lying));
  // A smaller count reads only that many (trailing bytes are allowed).
  Bytes fewer = b;
  fewer[19] = std::byte{1};
  const auto r = control::decode_reply(fewer);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->entries.size(), 1u);
  // Wrong version.
  Bytes other = b;
  other[0] = std::byte{2};
  EXPECT_FALSE(control::decode_reply(other));
}

// ---- EngineConfig ----------------------------------------------------------------

TEST(EngineConfig, DefaultsAreValid) {
  EXPECT_NO_THROW(EngineConfig{}.validate());
  // And the documented extremes.
  EngineConfig c;
  c.window = engine::kMaxWindow;
  c.send_buffer = 32767;
  c.node_id = 0xFFFE;
  EXPECT_NO_THROW(c.validate());
  c.window = engine::kMaxWindow + 1;
  EXPECT_THROW(c.validate(), Error) << "two windows must fit between an old and a new connection";
  c.window = engine::kMaxWindow;
  c.window = 1;
  c.send_buffer = 1;
  c.receive_buffer = 1;
  c.ack_every = 1;
  c.node_id = 0;
  c.rx_batch = 1;
  c.tx_batch = 1;
  EXPECT_NO_THROW(c.validate());
}

struct BadSetting {
  const char* name;  // what the message must mention
  std::function<void(EngineConfig&)> change;
};

TEST(EngineConfig, EachInvalidSettingThrowsNamingIt) {
  const std::vector<BadSetting> cases = {
      {"node_id", [](EngineConfig& c) { c.node_id = 0xFFFF; }},
      {"window", [](EngineConfig& c) { c.window = 0; }},
      {"window", [](EngineConfig& c) { c.window = 32768; }},
      {"send_buffer", [](EngineConfig& c) { c.send_buffer = 0; }},
      {"send_buffer", [](EngineConfig& c) { c.send_buffer = 40000; }},
      {"receive_buffer", [](EngineConfig& c) { c.receive_buffer = 0; }},
      {"ack_every", [](EngineConfig& c) { c.ack_every = 0; }},
      {"rto_min", [](EngineConfig& c) { c.rto_min = c.ack_delay; }},
      {"rto_min", [](EngineConfig& c) { c.ack_delay = c.rto_min + 1ms; }},
      {"rto_initial", [](EngineConfig& c) { c.rto_initial = c.rto_min - 1ns; }},
      {"rto_max", [](EngineConfig& c) { c.rto_max = c.rto_initial - 1ns; }},
      {"max_retransmits", [](EngineConfig& c) { c.max_retransmits = 0; }},
      {"discover_interval", [](EngineConfig& c) { c.discover_interval = 0ns; }},
      {"heartbeat_interval", [](EngineConfig& c) { c.heartbeat_interval = -1ms; }},
      {"probe_interval", [](EngineConfig& c) { c.probe_interval = 0ns; }},
      {"suspect_after", [](EngineConfig& c) { c.suspect_after = c.heartbeat_interval; }},
      {"dead_after", [](EngineConfig& c) { c.dead_after = c.suspect_after; }},
      {"rx_batch", [](EngineConfig& c) { c.rx_batch = 0; }},
      {"tx_batch", [](EngineConfig& c) { c.tx_batch = 0; }},
      {"broadcast_buffer", [](EngineConfig& c) { c.broadcast_buffer = 0; }},
      {"broadcast_buffer", [](EngineConfig& c) { c.broadcast_buffer = 16385; }},
      {"broadcast_receive_buffer", [](EngineConfig& c) { c.broadcast_receive_buffer = 0; }},
      {"broadcast_receive_buffer", [](EngineConfig& c) { c.broadcast_receive_buffer = 20000; }},
      {"poll_every", [](EngineConfig& c) { c.poll_every = 0; }},
      {"poll_ackers", [](EngineConfig& c) { c.poll_ackers = 0; }},
      {"poll_ackers", [](EngineConfig& c) { c.poll_ackers = 5; }},
      {"poll_interval", [](EngineConfig& c) { c.poll_interval = 0ns; }},
      {"poll_interval_max", [](EngineConfig& c) { c.poll_interval_max = c.poll_interval - 1ns; }},
      {"bcast_nak_delay", [](EngineConfig& c) { c.bcast_nak_delay = 0ns; }},
      {"bcast_repair_wait", [](EngineConfig& c) { c.bcast_repair_wait = 0ns; }},
      {"bcast_repair_holdoff", [](EngineConfig& c) { c.bcast_repair_holdoff = -1ns; }},
  };
  for (const BadSetting& bad : cases) {
    EngineConfig c;
    bad.change(c);
    try {
      c.validate();
      ADD_FAILURE() << "no exception for a bad " << bad.name;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad.name), std::string::npos)
          << "message does not name " << bad.name << ": " << e.what();
      EXPECT_FALSE(e.hint().empty()) << bad.name;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a locabus::Error for a bad " << bad.name << ": " << e.what();
    }
  }
}

/// A transport that has nothing to say.
class NullTransport final : public Transport {
 public:
  wire::MacAddress mac() const noexcept override { return wire::MacAddress{{2, 0, 0, 0, 0, 1}}; }
  std::size_t send(std::span<const FrameBytes> frames) override { return frames.size(); }
  std::size_t receive(std::size_t, FunctionRef<void(FrameBytes)>) override { return 0; }
};

TEST(EngineConfig, TheEngineValidatesItsConfig) {
  NullTransport t;
  ManualClock clock;
  EngineConfig c;
  c.window = 0;
  EXPECT_THROW(Engine(c, t, clock, 1), Error);
  EXPECT_NO_THROW(Engine(EngineConfig{}, t, clock, 1));
}

// ---- the engine and its transport's hints ------------------------------------------

/// Refuses every frame it is offered; feeds the frames in `rx` once.
class StubbornTransport final : public Transport {
 public:
  StubbornTransport(bool signals, bool validated) : signals_(signals), validated_(validated) {}
  wire::MacAddress mac() const noexcept override { return wire::MacAddress{{2, 0, 0, 0, 0, 1}}; }
  std::size_t send(std::span<const FrameBytes> frames) override {
    offered += frames.size();
    return 0;
  }
  std::size_t receive(std::size_t max, FunctionRef<void(FrameBytes)> on_frame) override {
    std::size_t n = 0;
    for (; n < max && !rx.empty(); ++n) {
      on_frame(rx.front());
      rx.pop_front();
    }
    return n;
  }
  bool signals_tx_space() const noexcept override { return signals_; }
  bool frames_validated() const noexcept override { return validated_; }

  std::size_t offered = 0;
  std::deque<Bytes> rx;

 private:
  bool signals_, validated_;
};

TEST(EngineTransport, RefusedFramesWaitForATransportThatSignalsSpace) {
  for (const bool signals : {false, true}) {
    SCOPED_TRACE(signals ? "signals TX space" : "does not signal");
    StubbornTransport t(signals, false);
    ManualClock clock;
    Engine e(EngineConfig{}, t, clock, 1);
    clock.advance_by(100ms);  // discovery is due: a DISCOVER to send
    e.do_work();
    ASSERT_GT(t.offered, 0u);
    const auto d = e.next_deadline();
    ASSERT_TRUE(d);
    if (signals) {
      // Sleep until wait_fd() says so, with a backstop: no busy loop.
      EXPECT_GT(*d, clock.now());
      EXPECT_LE(*d, clock.now() + 1ms);
    } else {
      EXPECT_EQ(*d, clock.now()) << "offer them again at once";
    }
  }
}

TEST(EngineTransport, FramesTheFastPathValidatedSkipTheChecksum) {
  // A frame with a bad checksum can only come from a transport that does not
  // validate; from one that does, the engine trusts it and does not sum.
  const Bytes bad = test::FrameBuilder()
                        .type(wire::PacketType::heartbeat)
                        .from(2)
                        .to(wire::kBroadcast)
                        .corrupt_csum()
                        .build();
  for (const bool validated : {false, true}) {
    SCOPED_TRACE(validated ? "validated" : "not validated");
    StubbornTransport t(false, validated);
    t.rx.push_back(bad);
    ManualClock clock;
    Engine e(EngineConfig{}, t, clock, 1);
    e.do_work();
    EXPECT_EQ(e.stats().rx_frames, 1u);
    EXPECT_EQ(e.stats().rx_invalid[static_cast<std::size_t>(wire::FrameError::bad_csum)],
              validated ? 0u : 1u);
  }
}

// ---- per-connection state --------------------------------------------------------

TEST(Connection, StateFitsThePapersBound) {
  // The header static_asserts this too; the test records the size.
  std::cout << "sizeof(engine::Connection) = " << sizeof(Connection) << " bytes (bound "
            << kConnectionStateLimit << ")\n";
  ::testing::Test::RecordProperty("connection_bytes", static_cast<int>(sizeof(Connection)));
  EXPECT_EQ(kConnectionStateLimit, 160u);
  EXPECT_LE(sizeof(Connection), kConnectionStateLimit);
}

// ---- FunctionRef ---------------------------------------------------------------------

int twice(int x) { return 2 * x; }
int apply(FunctionRef<int(int)> f, int x) { return f(x); }

TEST(FunctionRef, CallsThroughToALambdaWithCaptures) {
  int calls = 0;
  int base = 100;
  auto add = [&calls, base](int x) {
    ++calls;
    return base + x;
  };
  EXPECT_EQ(apply(add, 5), 105);
  EXPECT_EQ(apply(add, -5), 95);
  EXPECT_EQ(calls, 2) << "the referenced lambda is called, not a copy";

  // A mutable lambda keeps its state across calls through the reference.
  int counter = 0;
  auto next = [counter]() mutable { return ++counter; };
  FunctionRef<int()> ref = next;
  EXPECT_EQ(ref(), 1);
  EXPECT_EQ(ref(), 2);
  EXPECT_EQ(next(), 3);
  EXPECT_EQ(counter, 0);
}

TEST(FunctionRef, CallsThroughToFunctionPointers) {
  int (*fp)(int) = &twice;
  FunctionRef<int(int)> ref = fp;
  EXPECT_EQ(ref(21), 42);
  EXPECT_EQ(apply(&twice, 8), 16);  // the temporary pointer lives for the call
  // A different pointer, through the same kind of reference.
  int (*neg)(int) = [](int x) { return -x; };
  EXPECT_EQ(apply(neg, 8), -8);
  // A plain function name, and a reference made from a temporary pointer
  // that outlives it: function pointers are held by value.
  EXPECT_EQ(apply(twice, 5), 10);
  FunctionRef<int(int)> kept = &twice;
  EXPECT_EQ(kept(4), 8);
}

TEST(FunctionRef, ArgumentsAndResults) {
  // References pass through without copies; results convert.
  std::string s = "abc";
  FunctionRef<void(std::string&)> append = [](std::string& t) { t += "d"; };
  append(s);
  EXPECT_EQ(s, "abcd");
  auto len = [](const std::string& t) { return t.size(); };
  FunctionRef<long(const std::string&)> as_long = len;
  EXPECT_EQ(as_long(s), 4);
  // Copies refer to the same callable.
  int hits = 0;
  auto hit = [&hits] { ++hits; };
  FunctionRef<void()> a = hit;
  FunctionRef<void()> b = a;
  a();
  b();
  EXPECT_EQ(hits, 2);
  EXPECT_EQ(sizeof(FunctionRef<void()>), 2 * sizeof(void*));
}

// ---- events -------------------------------------------------------------------

TEST(EngineEvents, BroadcastLostNamesTheRangeTheIncarnationAndWhy) {
  Event e{EventKind::broadcast_lost, 7};
  e.epoch = 1700;
  e.failure = Failure::released;
  e.first_message = 100;
  e.count = 37;
  EXPECT_EQ(to_string(e.kind), "broadcast_lost");
  EXPECT_EQ(to_string(Failure::released), "released");
  const std::string text = e.to_string();
  EXPECT_NE(text.find("37 broadcast message(s) from node 7 lost (stream sequences 100..136, epoch 1700)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("freed"), std::string::npos) << text;
  // A range that wraps past 65535 names its last sequence as the stream does.
  e.first_message = 65530;
  e.count = 10;
  e.failure = Failure::peer_left;
  EXPECT_NE(e.to_string().find("stream sequences 65530..3, epoch 1700): node 7 left first"),
            std::string::npos)
      << e.to_string();
  e.failure = Failure::peer_restarted;
  EXPECT_NE(e.to_string().find("node 7 restarted first"), std::string::npos) << e.to_string();
  // The local API's numbers (locabus.h): 10 is the daemon's overrun.
  EXPECT_EQ(static_cast<int>(EventKind::broadcast_lost), 11);
  EXPECT_EQ(static_cast<int>(Failure::released), 8);
}

}  // namespace
}  // namespace locabus::engine
