// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "common/error.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace locabus {
namespace {
ErrorTextHook g_hook = nullptr;

std::string compose(const std::string& what, int err) {
  if (err == 0) return what;
  return what + ": " + error_text(err);
}
}  // namespace

Error::Error(const std::string& what, int err, std::string hint)
    : std::runtime_error(compose(what, err)), code_(std::abs(err)), hint_(std::move(hint)) {
  if (hint_.empty()) hint_ = privilege_hint(code_);
}

std::string error_text(int err) {
  err = std::abs(err);
  // libxdp has its own codes above the errno range (the fast path installs
  // the hook that names them; the client library does not link libxdp).
  if (g_hook) {
    std::string text = g_hook(err);
    if (!text.empty()) return text;
  }
  return std::strerror(err);
}

void set_error_text_hook(ErrorTextHook hook) noexcept { g_hook = hook; }

std::string privilege_hint(int err) {
  switch (std::abs(err)) {
    case EPERM:
    case EACCES:
      return "this needs CAP_NET_ADMIN and CAP_BPF (and CAP_SYS_ADMIN to mount bpffs): run it as root";
    default: return {};
  }
}

}  // namespace locabus
