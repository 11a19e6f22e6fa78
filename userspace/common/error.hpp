// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#pragma once

#include <stdexcept>
#include <string>

namespace locabus {

/// The exception thrown at setup boundaries (loading, attaching, opening
/// sockets). what() says what failed and why; hint() says what to do.
class Error : public std::runtime_error {
 public:
  /// `what` names the operation and its object ("attach XDP to eth1"); `err`
  /// is an errno value (0 if none) whose text is appended; `hint` is advice.
  Error(const std::string& what, int err = 0, std::string hint = {});

  int code() const noexcept { return code_; }
  const std::string& hint() const noexcept { return hint_; }

 private:
  int code_;
  std::string hint_;
};

/// Text for an errno value, also for libbpf/libxdp negative error codes.
std::string error_text(int err);

/// Names error codes beyond errno (e.g. libxdp's); returns "" for others.
using ErrorTextHook = std::string (*)(int err);
/// Installed by the fast path library at start-up.
void set_error_text_hook(ErrorTextHook hook) noexcept;

/// Hint for common errno values of privileged operations ("run as root").
std::string privilege_hint(int err);

}  // namespace locabus
