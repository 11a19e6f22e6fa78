// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// liblocabus: KCCM (the programming model of the KCCM papers) over Locabus.
//
//   auto space = locabus::kccm::Space::open(42);       // space 42 on the local locabusd
//   auto reg = space.register_handler("sum", [](const locabus::kccm::CallInfo&,
//                                               std::span<const std::byte> arg) {
//     return locabus::kccm::bytes(std::to_string(add_up(arg)));
//   });
//   auto reply = space.call(2, "sum", "1 2 3").get();  // a std::future<Reply>
//   if (reply) std::cout << reply.text() << "\n"; else std::cerr << reply.error() << "\n";
//
//   space.send(2, 7, "hello");                          // tag 7 to node 2
//   if (auto m = space.recv(locabus::kccm::kAnyNode, 7, std::chrono::seconds(1))) ...
//
// A Space is one attachment to a space (a 16-bit id the application picks,
// like a port) on the local daemon: its tags, handlers and calls are seen
// only by the same space. All its member functions may be called from any
// thread at once. A listener thread per Space reads what the daemon
// delivers; long handlers run on its worker pool, short ones in the
// listener. docs/API.md "KCCM" has the rules; locabus/locabus.h the C API.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <locabus/locabus.h>
#include <locabus/client.hpp>

namespace locabus::kccm {

inline constexpr std::uint16_t kAnyNode = LOCABUS_KCCM_ANY_NODE;
inline constexpr std::size_t kMaxData = LOCABUS_KCCM_MAX_DATA;
inline constexpr std::size_t kMaxName = LOCABUS_KCCM_MAX_NAME;

/// How a call ended (enum locabus_kccm_status).
enum class Status : std::uint8_t {
  ok = LOCABUS_KCCM_OK,
  no_such_handler = LOCABUS_KCCM_NO_SUCH_HANDLER,
  handler_failed = LOCABUS_KCCM_HANDLER_FAILED,
  node_dead = LOCABUS_KCCM_NODE_DEAD,
  node_restarted = LOCABUS_KCCM_NODE_RESTARTED,
  deadline_exceeded = LOCABUS_KCCM_DEADLINE_EXCEEDED,
  overloaded = LOCABUS_KCCM_OVERLOADED,
  no_such_node = LOCABUS_KCCM_NO_SUCH_NODE,
  disconnected = LOCABUS_KCCM_DISCONNECTED,
  too_large = LOCABUS_KCCM_TOO_LARGE,
  handler_exited = LOCABUS_KCCM_HANDLER_EXITED,
};
/// "ok", "no_such_handler", ...
std::string_view to_string(Status s) noexcept;

/// Bytes of a string, for arguments and results.
inline std::vector<std::byte> bytes(std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return {p, p + s.size()};
}

/// The outcome of a call on one node: a result, or an error with its cause.
struct Reply {
  std::uint16_t node = 0;  // the node that answered (or failed)
  Status status = Status::ok;
  std::vector<std::byte> data;  // the result (ok), else empty
  std::string message;          // not ok: what failed, e.g. "handler sum threw: bad input"

  explicit operator bool() const noexcept { return status == Status::ok; }
  std::string_view text() const noexcept { return {reinterpret_cast<const char*>(data.data()), data.size()}; }
  /// "node 2: deadline_exceeded: no result within 1000 ms"
  std::string error() const;
};

/// The outcome of call_all(): one Reply per node that answered or failed
/// (ordered by node), and the nodes that had not answered by the deadline.
struct BroadcastReply {
  std::vector<Reply> replies;
  std::vector<std::uint16_t> missing;
  bool all_ok() const noexcept;
};

/// What a handler learns about its call.
struct CallInfo {
  std::uint16_t node = 0;  // the calling node
  std::uint16_t space = 0;
  std::string_view handler;               // the name it was called by
  std::chrono::milliseconds deadline{0};  // left to the caller's deadline when the call arrived
  bool oneway = false;                    // nobody waits for the result
  bool broadcast = false;                 // one of the calls of a call_all()
};

/// A handler returns the result; an exception fails the call
/// (handler_failed, with what() in Reply::message).
using Handler = std::function<std::vector<std::byte>(const CallInfo&, std::span<const std::byte> arg)>;

enum class HandlerKind {
  long_running,  // on the worker pool (bounded queue: overloaded when full)
  short_inline,  // in the listener thread: it must be short (a watchdog logs slow ones)
};

struct CallOptions {
  /// The call's deadline from now; 0: SpaceOptions::default_deadline.
  std::chrono::milliseconds timeout{0};
};

/// A received tagged message.
struct Received {
  std::uint16_t node = 0;
  std::uint32_t tag = 0;
  std::vector<std::byte> data;
  std::string_view text() const noexcept { return {reinterpret_cast<const char*>(data.data()), data.size()}; }
};

struct SpaceOptions {
  /// Empty: $LOCABUS_SOCKET, else /run/locabus/locabusd.sock.
  std::string socket_path;
  /// Worker threads for long handlers (started on the first registration).
  unsigned workers = 4;
  /// Long calls waiting for a worker, at most; beyond, callers get overloaded.
  std::size_t queue = 1024;
  /// A call's deadline when CallOptions gives none. Every call has one.
  std::chrono::milliseconds default_deadline{10000};
  /// The watchdog logs (stderr, or `log`) a short handler running longer.
  std::chrono::milliseconds short_warn{100};
  /// Where the library's warnings go; empty: stderr.
  std::function<void(std::string_view)> log;
  /// post() calls that could not run (the handler missing, the node dead...);
  /// runs in the listener. Empty: they are logged.
  std::function<void(const Reply&)> on_post_failure;
};

class Space;

/// A registered handler; unregisters when destroyed (or release()d).
class Registration {
 public:
  Registration() = default;
  Registration(Registration&&) noexcept;
  Registration& operator=(Registration&&) noexcept;
  ~Registration();
  const std::string& name() const noexcept { return name_; }
  /// Unregisters now (waits until no call of it runs). Never throws.
  void reset() noexcept;
  /// Keeps the handler registered for the Space's lifetime.
  void release() noexcept { space_.reset(); }

 private:
  friend class Space;
  struct SpaceRef;
  Registration(std::shared_ptr<SpaceRef> space, std::string name)
      : space_(std::move(space)), name_(std::move(name)) {}
  std::shared_ptr<SpaceRef> space_;
  std::string name_;
};

class Space {
 public:
  /// Attaches to `space` on the daemon. Throws ClientError (as
  /// Endpoint::open; EMSGSIZE when the daemon's rings are too small for
  /// 64 KB messages).
  static Space open(std::uint16_t space, const SpaceOptions& options = {});

  Space(Space&&) noexcept;
  Space& operator=(Space&&) noexcept;
  /// Stops the listener and the workers (waiting for running handlers),
  /// fails calls still pending with disconnected, detaches.
  ~Space();

  std::uint16_t node_id() const noexcept;
  std::uint16_t space() const noexcept;

  // ---- send / receive (KCCM's synchronous model)
  /// Queues a message with `tag` for `node` (this node included), waiting
  /// up to `timeout` while the ring to the daemon is full. A message that
  /// cannot be delivered comes back as a send_failed event naming
  /// *message_no. Throws ClientError(ENOTCONN) when the daemon went away.
  SendStatus send(std::uint16_t node, std::uint32_t tag, std::span<const std::byte> data,
                  std::chrono::milliseconds timeout = kForever, std::uint64_t* message_no = nullptr);
  SendStatus send(std::uint16_t node, std::uint32_t tag, std::string_view text,
                  std::chrono::milliseconds timeout = kForever) {
    return send(node, tag, std::as_bytes(std::span(text.data(), text.size())), timeout);
  }
  /// The oldest queued message from `node` (kAnyNode: any) with `tag`
  /// (nullopt: any) in this space on this node; if none is there, waits up
  /// to `timeout` and takes the first that matches. nullopt on timeout.
  /// Per (sender, tag), messages come in the order they were sent. Throws
  /// ClientError(ENOTCONN) when the daemon went away.
  std::optional<Received> recv(std::uint16_t node = kAnyNode, std::optional<std::uint32_t> tag = std::nullopt,
                               std::chrono::milliseconds timeout = kForever);

  // ---- handlers
  /// Registers `name` (1..63 bytes) in this space on this node. Throws
  /// ClientError: EEXIST when it is registered already (the message names
  /// the holder), EINVAL for a bad name, ENOTCONN.
  Registration register_handler(std::string name, Handler handler,
                                HandlerKind kind = HandlerKind::long_running);

  // ---- calls (every one has a deadline; none waits forever)
  /// Calls `handler` on `node` (this node included).
  std::future<Reply> call(std::uint16_t node, std::string_view handler, std::span<const std::byte> arg,
                          CallOptions options = {});
  std::future<Reply> call(std::uint16_t node, std::string_view handler, std::string_view arg = {},
                          CallOptions options = {}) {
    return call(node, handler, std::as_bytes(std::span(arg.data(), arg.size())), options);
  }
  /// The same; `done` runs in the listener thread (keep it short) with the reply.
  void call(std::uint16_t node, std::string_view handler, std::span<const std::byte> arg,
            std::function<void(Reply)> done, CallOptions options = {});
  /// One-way (no result); failures go to SpaceOptions::on_post_failure.
  void post(std::uint16_t node, std::string_view handler, std::span<const std::byte> arg);
  /// The same; failures go to `on_failure` (run in the listener) instead.
  void post(std::uint16_t node, std::string_view handler, std::span<const std::byte> arg,
            std::function<void(const Reply&)> on_failure);
  /// Calls `handler` on every node (this one included), over Locabus
  /// broadcast, and gathers the replies until every node answered or the
  /// deadline passed.
  std::future<BroadcastReply> call_all(std::string_view handler, std::span<const std::byte> arg,
                                       CallOptions options = {});
  std::future<BroadcastReply> call_all(std::string_view handler, std::string_view arg = {},
                                       CallOptions options = {}) {
    return call_all(handler, std::as_bytes(std::span(arg.data(), arg.size())), options);
  }

  /// Membership and send_failed events (bounded queue; never blocks).
  std::optional<Event> next_event();
  /// False once the daemon has gone away.
  bool connected() const noexcept;
  /// True on this Space's listener thread (short handlers, call()
  /// callbacks, on_post_failure): waiting there for a call's future would
  /// wait forever, since the listener completes calls and enforces their
  /// deadlines. recv() and register_handler() throw EDEADLK there.
  bool in_listener() const noexcept;

  struct Impl;

 private:
  explicit Space(std::shared_ptr<Impl> impl) noexcept;
  std::shared_ptr<Impl> impl_;
};

}  // namespace locabus::kccm
