// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus internals: what the C API's files share (the calling thread's
// last error, turning C++ exceptions into -errno).
#pragma once

#include <cerrno>
#include <chrono>
#include <new>
#include <string>

#include <locabus/client.hpp>

namespace locabus::capi {

/// The calling thread's last error (locabus_last_error()).
std::string& last_error() noexcept;

/// Records `what` as the last error; returns -err.
inline int fail(int err, std::string what) {
  last_error() = std::move(what);
  return -err;
}

/// Runs f(), turning exceptions into -errno with the last error set.
template <typename F>
int guarded(F&& f) {
  try {
    return f();
  } catch (const ClientError& e) {
    return fail(e.code() ? e.code() : EIO, e.what());
  } catch (const std::bad_alloc&) {
    return fail(ENOMEM, "out of memory");
  } catch (const std::exception& e) {
    return fail(EIO, e.what());
  }
}

/// A C timeout (< 0: forever) as the C++ API's.
inline std::chrono::milliseconds ms(int timeout_ms) {
  return std::chrono::milliseconds(timeout_ms < 0 ? -1 : timeout_ms);
}

}  // namespace locabus::capi
