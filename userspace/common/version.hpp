// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Locabus's version, from the project() line of the top CMakeLists.txt: the
// one place every program and report (locabusd status, node.info) takes it from.
#pragma once

namespace locabus {

inline constexpr const char* kVersion = LOCABUS_VERSION_STRING;

}  // namespace locabus
