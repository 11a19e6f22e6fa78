// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus, C API of KCCM (the end of locabus/locabus.h) over locabus/kccm.hpp.
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <locabus/locabus.h>
#include <locabus/kccm.hpp>

#include "client/c_api_common.hpp"
#include "client/kccm_core.hpp"

using locabus::capi::fail;
using locabus::capi::guarded;
using locabus::capi::ms;
namespace kccm = locabus::kccm;

struct locabus_kccm {
  explicit locabus_kccm(kccm::Space s) : space(std::move(s)) {}
  // Declared before the space, so destroyed after it: once the space is
  // closed they have nothing left to unregister.
  std::mutex mu;
  std::map<std::string, kccm::Registration, std::less<>> regs;
  kccm::Space space;
};

struct locabus_kccm_reply {
  std::vector<std::byte> data;
  std::optional<std::string> error;
};

namespace {

std::span<const std::byte> arg_of(const void* arg, size_t len) {
  return {static_cast<const std::byte*>(arg), len};
}

// Copies a Reply into a C result (data: the result, or the NUL-terminated
// sentence saying what failed). Throws std::bad_alloc.
void fill(locabus_kccm_result* out, const kccm::Reply& r) {
  *out = {};
  out->status = static_cast<int>(r.status);
  out->node = r.node;
  const bool ok = r.status == kccm::Status::ok;
  const std::size_t len = ok ? r.data.size() : r.message.size();
  void* p = std::malloc(len + 1);
  if (p == nullptr) throw std::bad_alloc();
  if (len) std::memcpy(p, ok ? static_cast<const void*>(r.data.data()) : r.message.data(), len);
  static_cast<char*>(p)[len] = '\0';
  out->data = p;
  out->len = len;
}

kccm::CallOptions call_options(int timeout_ms) {
  kccm::CallOptions o;
  // < 0: the space's default deadline; 0 would mean that too in C++, and a
  // call has at least 1 ms.
  if (timeout_ms >= 0) o.timeout = std::chrono::milliseconds(std::max(timeout_ms, 1));
  return o;
}

bool bad_call(const char* fn, const locabus_kccm* k, const char* name, const void* arg, size_t len, int* r) {
  if (k && name && (arg || !len)) return false;
  *r = fail(EINVAL, std::string(fn) + ": NULL argument");
  return true;
}

}  // namespace

extern "C" {

void locabus_kccm_reply_set(locabus_kccm_reply* reply, const void* data, size_t len) {
  if (!reply) return;
  const auto* p = static_cast<const std::byte*>(data);
  reply->data.assign(p, p + (data ? len : 0));
  reply->error.reset();
}

void locabus_kccm_reply_error(locabus_kccm_reply* reply, const char* message) {
  if (!reply) return;
  reply->data.clear();
  reply->error = message ? message : "failed";
}

int locabus_kccm_open(const char* socket_path, uint16_t space, const struct locabus_kccm_options* options,
                      locabus_kccm** out) {
  if (!out) return fail(EINVAL, "locabus_kccm_open: out is NULL");
  *out = nullptr;
  return guarded([&] {
    kccm::SpaceOptions o;
    if (socket_path) o.socket_path = socket_path;
    if (options) {
      if (options->workers) o.workers = options->workers;
      if (options->queue) o.queue = options->queue;
      if (options->default_timeout_ms > 0)
        o.default_deadline = std::chrono::milliseconds(options->default_timeout_ms);
      if (options->short_warn_ms > 0) o.short_warn = std::chrono::milliseconds(options->short_warn_ms);
    }
    // Owned by the caller until locabus_kccm_close().
    *out = std::make_unique<locabus_kccm>(kccm::Space::open(space, o)).release();
    return 0;
  });
}

void locabus_kccm_close(locabus_kccm* k) { std::unique_ptr<locabus_kccm> owned(k); }

uint16_t locabus_kccm_node_id(const locabus_kccm* k) { return k ? k->space.node_id() : 0; }

int locabus_kccm_send(locabus_kccm* k, uint16_t node, uint32_t tag, const void* data, size_t len,
                      int timeout_ms, uint64_t* message_no) {
  if (!k || (!data && len)) return fail(EINVAL, "locabus_kccm_send: NULL argument");
  return guarded([&] {
    switch (k->space.send(node, tag, arg_of(data, len), ms(timeout_ms), message_no)) {
      case locabus::SendStatus::ok: return 0;
      case locabus::SendStatus::would_block:
        return fail(EAGAIN,
                    "the send ring to locabusd is full (the daemon or the receivers are slower): retry");
      case locabus::SendStatus::too_large:
        return fail(EMSGSIZE, "a " + std::to_string(len) +
                                  "-byte message is over LOCABUS_KCCM_MAX_DATA (65440 bytes): split it");
      case locabus::SendStatus::invalid_node: return fail(EINVAL, "invalid destination node");
    }
    return fail(EIO, "unexpected send status");
  });
}

long locabus_kccm_recv(locabus_kccm* k, uint16_t node, uint32_t tag, unsigned flags, uint16_t* from,
                       uint32_t* tag_out, void* buf, size_t cap, int timeout_ms) {
  if (!k || (!buf && cap)) return fail(EINVAL, "locabus_kccm_recv: NULL argument");
  if (flags & ~LOCABUS_KCCM_ANY_TAG) return fail(EINVAL, "locabus_kccm_recv: unknown flags");
  long result = 0;
  const int r = guarded([&] {
    auto m = k->space.recv(node, (flags & LOCABUS_KCCM_ANY_TAG) ? std::nullopt : std::optional<uint32_t>(tag),
                           ms(timeout_ms));
    if (!m) return fail(EAGAIN, "no message arrived within the timeout");
    if (m->data.size() > cap)
      return fail(EMSGSIZE, "a " + std::to_string(m->data.size()) + "-byte message from node " +
                                std::to_string(m->node) + " did not fit a " + std::to_string(cap) +
                                "-byte buffer and is lost: pass LOCABUS_KCCM_MAX_DATA bytes");
    if (!m->data.empty()) std::memcpy(buf, m->data.data(), m->data.size());
    if (from) *from = m->node;
    if (tag_out) *tag_out = m->tag;
    result = static_cast<long>(m->data.size());
    return 0;
  });
  return r < 0 ? r : result;
}

int locabus_kccm_register(locabus_kccm* k, const char* name, int kind, locabus_kccm_handler handler,
                          void* ctx) {
  if (!k || !name || !handler) return fail(EINVAL, "locabus_kccm_register: NULL argument");
  if (kind != LOCABUS_KCCM_LONG && kind != LOCABUS_KCCM_SHORT)
    return fail(EINVAL, "locabus_kccm_register: kind is LOCABUS_KCCM_LONG or LOCABUS_KCCM_SHORT");
  return guarded([&] {
    kccm::Handler h = [handler, ctx](const kccm::CallInfo& info, std::span<const std::byte> arg) {
      const std::string called(info.handler);
      const locabus_kccm_call_info ci{info.node, info.space, called.c_str(), info.deadline.count(),
                                      info.oneway};
      locabus_kccm_reply r;
      handler(ctx, &ci, arg.data(), arg.size(), &r);
      if (r.error) throw locabus::kccm_internal::HandlerFailure(*r.error);
      return std::move(r.data);
    };
    auto reg = k->space.register_handler(
        name, std::move(h),
        kind == LOCABUS_KCCM_SHORT ? kccm::HandlerKind::short_inline : kccm::HandlerKind::long_running);
    std::lock_guard lk(k->mu);
    k->regs.insert_or_assign(name, std::move(reg));
    return 0;
  });
}

int locabus_kccm_unregister(locabus_kccm* k, const char* name) {
  if (!k || !name) return fail(EINVAL, "locabus_kccm_unregister: NULL argument");
  return guarded([&] {
    kccm::Registration reg;
    {
      std::lock_guard lk(k->mu);
      auto it = k->regs.find(std::string_view(name));
      if (it == k->regs.end())
        return fail(ENOENT, std::string("handler ") + name + " is not registered by this process in space " +
                                std::to_string(k->space.space()));
      reg = std::move(it->second);
      k->regs.erase(it);
    }
    reg.reset();  // waits for its running calls: not under the lock
    return 0;
  });
}

int locabus_kccm_call(locabus_kccm* k, uint16_t node, const char* name, const void* arg, size_t len,
                      int timeout_ms, struct locabus_kccm_result* out) {
  int r = 0;
  if (bad_call("locabus_kccm_call", k, name, arg, len, &r)) return r;
  if (!out) return fail(EINVAL, "locabus_kccm_call: out is NULL");
  *out = {};
  if (k->space.in_listener())
    return fail(EDEADLK,
                "locabus_kccm_call waits for the listener thread, and was called from it (a short handler or "
                "a callback): use locabus_kccm_call_async there, or call from another thread");
  return guarded([&] {
    const kccm::Reply reply = k->space.call(node, name, arg_of(arg, len), call_options(timeout_ms)).get();
    fill(out, reply);
    return 0;
  });
}

int locabus_kccm_call_async(locabus_kccm* k, uint16_t node, const char* name, const void* arg, size_t len,
                            int timeout_ms, locabus_kccm_done done, void* ctx) {
  int r = 0;
  if (bad_call("locabus_kccm_call_async", k, name, arg, len, &r)) return r;
  if (!done) return fail(EINVAL, "locabus_kccm_call_async: done is NULL");
  return guarded([&] {
    k->space.call(
        node, name, arg_of(arg, len),
        [done, ctx](kccm::Reply reply) {
          locabus_kccm_result res{};
          fill(&res, reply);
          done(ctx, &res);
          locabus_kccm_result_free(&res);
        },
        call_options(timeout_ms));
    return 0;
  });
}

int locabus_kccm_post(locabus_kccm* k, uint16_t node, const char* name, const void* arg, size_t len,
                      locabus_kccm_done on_failure, void* ctx) {
  int r = 0;
  if (bad_call("locabus_kccm_post", k, name, arg, len, &r)) return r;
  return guarded([&] {
    std::function<void(const kccm::Reply&)> f;
    if (on_failure)
      f = [on_failure, ctx](const kccm::Reply& reply) {
        locabus_kccm_result res{};
        fill(&res, reply);
        on_failure(ctx, &res);
        locabus_kccm_result_free(&res);
      };
    k->space.post(node, name, arg_of(arg, len), std::move(f));  // empty: written to stderr
    return 0;
  });
}

int locabus_kccm_call_all(locabus_kccm* k, const char* name, const void* arg, size_t len, int timeout_ms,
                          struct locabus_kccm_result** results, size_t* n, uint16_t** missing,
                          size_t* nmissing) {
  int r = 0;
  if (bad_call("locabus_kccm_call_all", k, name, arg, len, &r)) return r;
  if (!results || !n || !missing || !nmissing) return fail(EINVAL, "locabus_kccm_call_all: NULL argument");
  *results = nullptr;
  *missing = nullptr;
  *n = *nmissing = 0;
  if (k->space.in_listener())
    return fail(
        EDEADLK,
        "locabus_kccm_call_all waits for the listener thread, and was called from it (a short handler "
        "or a callback): call from another thread");
  return guarded([&] {
    const kccm::BroadcastReply all =
        k->space.call_all(name, arg_of(arg, len), call_options(timeout_ms)).get();
    std::unique_ptr<locabus_kccm_result[], void (*)(locabus_kccm_result*)> res(
        static_cast<locabus_kccm_result*>(std::calloc(all.replies.size() + 1, sizeof(locabus_kccm_result))),
        [](locabus_kccm_result* p) { std::free(p); });
    std::unique_ptr<uint16_t, void (*)(uint16_t*)> miss(
        static_cast<uint16_t*>(std::calloc(all.missing.size() + 1, sizeof(uint16_t))),
        [](uint16_t* p) { std::free(p); });
    if (!res || !miss) throw std::bad_alloc();
    std::size_t filled = 0;
    try {
      for (; filled < all.replies.size(); ++filled) fill(&res[filled], all.replies[filled]);
    } catch (...) {
      for (std::size_t i = 0; i < filled; ++i) locabus_kccm_result_free(&res[i]);
      throw;
    }
    std::copy(all.missing.begin(), all.missing.end(), miss.get());
    *n = all.replies.size();
    *nmissing = all.missing.size();
    *results = res.release();
    *missing = miss.release();
    return 0;
  });
}

void locabus_kccm_result_free(struct locabus_kccm_result* r) {
  if (!r) return;
  std::free(r->data);
  r->data = nullptr;
  r->len = 0;
}

void locabus_kccm_results_free(struct locabus_kccm_result* r, size_t n) {
  if (!r) return;
  for (size_t i = 0; i < n; ++i) locabus_kccm_result_free(&r[i]);
  std::free(r);
}

int locabus_kccm_next_event(locabus_kccm* k, struct locabus_event* out) {
  if (!k || !out) return fail(EINVAL, "locabus_kccm_next_event: NULL argument");
  return guarded([&] {
    if (auto e = k->space.next_event()) {
      *out = *e;
      return 1;
    }
    if (!k->space.connected())
      return fail(ENOTCONN, "locabusd closed the connection (it stopped or restarted): open the space again");
    return 0;
  });
}

const char* locabus_kccm_status_name(int status) {
  static const char* const names[] = {
      "ok",         "no_such_handler", "handler_failed", "node_dead", "node_restarted", "deadline_exceeded",
      "overloaded", "no_such_node",    "disconnected",   "too_large", "handler_exited"};
  static_assert(std::size(names) == LOCABUS_KCCM_HANDLER_EXITED + 1, "a name for every status");
  return status >= 0 && status < static_cast<int>(std::size(names)) ? names[status] : "unknown";
}

}  // extern "C"
