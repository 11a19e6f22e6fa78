// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Gates for tests that need root or kernel features. Where they are missing
// the test is skipped with the reason, except under CI (CI=true or
// LOCABUS_TEST_STRICT=1), where a missing prerequisite fails the test: CI
// runs as root and must never pass by skipping.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace locabus::test {

inline bool strict_mode() {
  const char* ci = std::getenv("CI");
  const char* strict = std::getenv("LOCABUS_TEST_STRICT");
  return (ci && std::string_view(ci) == "true") || (strict && std::string_view(strict) == "1");
}

}  // namespace locabus::test

/// Skips (or, under CI, fails) the current test with `reason` when `cond` is false.
#define LOCABUS_REQUIRE(cond, reason)                                                            \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      if (::locabus::test::strict_mode()) FAIL() << "prerequisite missing under CI: " << reason; \
      GTEST_SKIP() << reason;                                                                    \
    }                                                                                            \
  } while (0)

#define LOCABUS_REQUIRE_ROOT() \
  LOCABUS_REQUIRE(::geteuid() == 0, "needs root (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN)")
