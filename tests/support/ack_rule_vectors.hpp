// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Test vectors for the fast path's ACK rule (locabus/ack_rule.h). The same
// table runs against the function itself and the simulator's fast path
// (tests/unit/ack_rule_test.cpp) and against the XDP program in the kernel
// through BPF_PROG_TEST_RUN (tests/bpf/xdp_prog_test.cpp).
#pragma once

#include <cstdint>
#include <span>

#include <locabus/ack_rule.h>

namespace locabus::test {

struct AckRuleVector {
  const char* what;
  locabus_conn_pub pub;   // what user space published
  bool rec_valid;         // the kernel has consumed an ACK on this connection...
  std::uint16_t rec_ack;  // ...and this was the newest
  std::uint16_t ack;      // the pure ACK that arrives
  locabus_ack_verdict verdict;
};

inline constexpr std::uint16_t kPub = LOCABUS_CONN_F_PUBLISHED;
inline constexpr std::uint16_t kPubAll = LOCABUS_CONN_F_PUBLISHED | LOCABUS_CONN_F_PASS_ALL;

inline constexpr AckRuleVector kAckRuleVectors[] = {
    {"nothing published: pass", {100, 200, 0, 0}, false, 0, 150, LOCABUS_ACK_PASS_UNPUBLISHED},
    {"advances inside [una, max]: consume", {100, 200, kPub, 1}, false, 0, 150, LOCABUS_ACK_CONSUME},
    {"acknowledges exactly max: consume", {100, 200, kPub, 1}, false, 0, 200, LOCABUS_ACK_CONSUME},
    {"equal to una (duplicate, window update): pass",
     {100, 200, kPub, 1},
     false,
     0,
     100,
     LOCABUS_ACK_PASS_BEHIND},
    {"beyond max: pass", {100, 200, kPub, 1}, false, 0, 201, LOCABUS_ACK_PASS_RANGE},
    {"behind una: pass", {100, 200, kPub, 1}, false, 0, 99, LOCABUS_ACK_PASS_RANGE},
    {"half the space away: pass", {100, 200, kPub, 1}, false, 0, 100 + 0x8000, LOCABUS_ACK_PASS_RANGE},
    {"pass-all (a probe is out): pass even an advancing one",
     {100, 200, kPubAll, 1},
     false,
     0,
     150,
     LOCABUS_ACK_PASS_ALL},
    {"equal to the consumed record: pass", {100, 200, kPub, 1}, true, 150, 150, LOCABUS_ACK_PASS_BEHIND},
    {"behind the consumed record: pass", {100, 200, kPub, 1}, true, 150, 120, LOCABUS_ACK_PASS_BEHIND},
    {"past the consumed record: consume", {100, 200, kPub, 1}, true, 150, 151, LOCABUS_ACK_CONSUME},
    {"record behind una (user space moved on): judged by una",
     {300, 400, kPub, 1},
     true,
     150,
     301,
     LOCABUS_ACK_CONSUME},
    // Issue 11, seen 1: ~41,000 frames of request/response moved una by
    // piggy-backed ACKs the kernel never saw; the record says 200. A fresh
    // ACK must not look old in serial arithmetic.
    {"record 41,000 behind after piggy-backed traffic: the fresh ACK is consumed",
     {41200, 41210, kPub, 1},
     true,
     200,
     41210,
     LOCABUS_ACK_CONSUME},
    {"the same with una == max (all acknowledged): duplicate passed",
     {41210, 41210, kPub, 1},
     true,
     200,
     41210,
     LOCABUS_ACK_PASS_BEHIND},
    {"across the wrap: consume", {65530, 10, kPub, 1}, true, 65534, 3, LOCABUS_ACK_CONSUME},
    {"across the wrap, behind the record: pass",
     {65530, 10, kPub, 1},
     true,
     3,
     65535,
     LOCABUS_ACK_PASS_BEHIND},
    {"record beyond max (an earlier connection's): ignored",
     {1000, 1100, kPub, 1},
     true,
     5000,
     1050,
     LOCABUS_ACK_CONSUME},
};

}  // namespace locabus::test
