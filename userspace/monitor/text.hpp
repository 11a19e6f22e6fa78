// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// UTF-8 for the monitor's strings. Hostnames (sethostname() takes any
// bytes), mount points (/proc/self/mounts) and every string of a peer's
// record may be any bytes, while JSON (nlohmann::json::dump throws on
// invalid UTF-8) and Prometheus label values must be valid UTF-8: the
// sampler, the record's decoder and the renderers pass them through here.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace locabus::monitor {

/// True if `s` is well-formed UTF-8 (no overlong forms, no surrogates, at
/// most U+10FFFF).
bool valid_utf8(std::string_view s) noexcept;

/// `s` with each byte that does not begin a well-formed character replaced
/// by U+FFFD (as Go's and Python's "replace" do, one per byte); `s` itself
/// when it is valid.
std::string to_valid_utf8(std::string_view s);

/// The longest prefix of `s` of at most `max` bytes that does not end
/// inside a character (`s` valid UTF-8).
std::string_view utf8_prefix(std::string_view s, std::size_t max) noexcept;

}  // namespace locabus::monitor
