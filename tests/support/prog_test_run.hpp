// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Runs an XDP program once on a crafted frame with BPF_PROG_TEST_RUN.
#pragma once

#include <gtest/gtest.h>

#include <cerrno>
#include <cstddef>
#include <vector>

#include <bpf/bpf.h>

#include "common/error.hpp"

namespace locabus::test {

struct ProgRun {
  int verdict = -1;
  std::vector<std::byte> out;  // the frame as the program left it
};

inline ProgRun prog_test_run(int prog_fd, const std::vector<std::byte>& frame) {
  ProgRun r;
  r.out.resize(frame.size() + 256);
  bpf_test_run_opts opts{};
  opts.sz = sizeof opts;
  opts.data_in = frame.data();
  opts.data_size_in = static_cast<__u32>(frame.size());
  opts.data_out = r.out.data();
  opts.data_size_out = static_cast<__u32>(r.out.size());
  opts.repeat = 1;
  const int err = bpf_prog_test_run_opts(prog_fd, &opts);
  EXPECT_EQ(err, 0) << "BPF_PROG_TEST_RUN: " << error_text(errno);
  r.verdict = static_cast<int>(opts.retval);
  r.out.resize(opts.data_size_out);
  return r;
}

}  // namespace locabus::test
