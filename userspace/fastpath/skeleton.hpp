// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#pragma once

#include <bpf/libbpf.h>

#include <cerrno>
#include <memory>
#include <string>

#include "common/error.hpp"

namespace locabus::bpf {

/// Owns a `bpftool gen skeleton` object: opened on construction, destroyed
/// (programs detached, maps closed) with it. Load it directly with load(), or
/// hand object() to libxdp, which loads it when attaching.
template <typename Skel, Skel* (*OpenOpts)(const bpf_object_open_opts*), int (*Load)(Skel*),
          void (*Destroy)(Skel*)>
class Skeleton {
 public:
  explicit Skeleton(std::string what) : what_(std::move(what)) {
    errno = 0;
    skel_.reset(OpenOpts(nullptr));
    if (!skel_) throw Error("open BPF object " + what_, errno ? errno : EINVAL);
  }

  void load() {
    const int err = Load(skel_.get());
    if (err)
      throw Error("load BPF object " + what_ + " into the kernel", err,
                  privilege_hint(err).empty() ? "run with LOCABUS_LOG=debug to see the verifier log"
                                              : privilege_hint(err));
  }

  Skel* operator->() const noexcept { return skel_.get(); }
  Skel* get() const noexcept { return skel_.get(); }
  bpf_object* object() const noexcept { return skel_->obj; }

 private:
  struct Deleter {
    void operator()(Skel* s) const noexcept { Destroy(s); }
  };
  std::string what_;
  std::unique_ptr<Skel, Deleter> skel_;
};

}  // namespace locabus::bpf
