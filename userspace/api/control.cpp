// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include "api/control.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/error.hpp"

namespace locabus::api {

std::filesystem::path default_socket_path() {
  if (const char* env = std::getenv(kSocketEnv); env && *env) return env;
  return std::filesystem::path(kDefaultRunDir) / kSocketName;
}

UniqueFd connect_control(const std::filesystem::path& socket) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = socket.string();
  if (path.size() >= sizeof(addr.sun_path))
    throw Error("connect to locabusd at " + path, ENAMETOOLONG, "use a shorter socket path");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) throw Error("create a Unix socket", errno);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    std::string hint;
    if (err == ENOENT || err == ECONNREFUSED)
      hint = "is locabusd running? Start it, or point LOCABUS_SOCKET / --socket at its API socket";
    else if (err == EACCES || err == EPERM)
      hint = "the socket is restricted to root and the daemon's api_group: run as root or join that group";
    throw Error("connect to locabusd at " + path, err, hint);
  }
  return fd;
}

void send_control(int fd, const nlohmann::json& msg, std::span<const int> fds) {
  const std::string text = msg.dump();
  if (text.size() > kMaxControlMessage)
    throw Error("send a control message: " + std::to_string(text.size()) + " bytes is over the limit");
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  std::vector<std::byte> cbuf;
  if (!fds.empty()) {
    cbuf.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    mh.msg_control = cbuf.data();
    mh.msg_controllen = cbuf.size();
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do n = ::sendmsg(fd, &mh, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    const int err = errno;
    throw Error("send a control message", err,
                err == EPIPE || err == ECONNRESET ? "the other side closed the connection" : "");
  }
}

std::optional<nlohmann::json> receive_control(int fd, std::vector<UniqueFd>* fds,
                                              std::optional<std::chrono::milliseconds> timeout,
                                              bool* timed_out) {
  if (timed_out) *timed_out = false;
  if (timeout) {
    pollfd p{fd, POLLIN, 0};
    int r;
    do r = ::poll(&p, 1, static_cast<int>(timeout->count()));
    while (r < 0 && errno == EINTR);
    if (r < 0) throw Error("wait for a control message", errno);
    if (r == 0) {
      if (timed_out) *timed_out = true;
      return std::nullopt;
    }
  }
  std::string buf(kMaxControlMessage, '\0');
  iovec iov{buf.data(), buf.size()};
  alignas(cmsghdr) std::byte cbuf[CMSG_SPACE(sizeof(int) * 8)];
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof(cbuf);
  ssize_t n;
  do n = ::recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == ECONNRESET) return std::nullopt;
    throw Error("receive a control message", errno);
  }
  // Take ownership of passed fds first, so they are closed on any error.
  std::vector<UniqueFd> got;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int f;
      std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      got.emplace_back(f);
    }
  }
  if (n == 0) return std::nullopt;  // orderly shutdown
  if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) throw Error("receive a control message: it was truncated");
  buf.resize(static_cast<std::size_t>(n));
  auto msg = nlohmann::json::parse(buf, nullptr, /*allow_exceptions=*/false);
  if (msg.is_discarded() || !msg.is_object())
    throw Error("receive a control message: it is not a JSON object");
  if (fds) *fds = std::move(got);
  return msg;
}

nlohmann::json request(int fd, const nlohmann::json& req, std::vector<UniqueFd>* fds,
                       std::chrono::milliseconds timeout) {
  try {
    send_control(fd, req, {});
  } catch (const Error& e) {
    // The daemon may have refused the connection (and closed it) before
    // our request: its reason is waiting to be read.
    std::optional<nlohmann::json> refusal;
    try {
      refusal = receive_control(fd, nullptr, std::chrono::milliseconds(0));
    } catch (const Error&) {
    }
    if (!refusal || refusal->value("ok", true)) throw;
    throw Error("locabusd refused the connection: " + refusal->value("error", std::string("no reason given")),
                refusal->value("errno", 0), refusal->value("hint", std::string()));
  }
  bool timed_out = false;
  auto reply = receive_control(fd, fds, timeout, &timed_out);
  const std::string op = req.value("op", std::string("request"));
  if (timed_out)
    throw Error("locabusd did not answer '" + op + "' within " + std::to_string(timeout.count()) + " ms",
                ETIMEDOUT, "the daemon may be overloaded or stuck; check its log");
  if (!reply)
    throw Error("locabusd closed the connection during '" + op + "'", ECONNRESET,
                "the daemon stopped or restarted: connect again");
  if (!reply->value("ok", false)) {
    const int code = reply->value("errno", 0);
    throw Error("locabusd refused '" + op + "': " + reply->value("error", std::string("no reason given")),
                code, reply->value("hint", std::string()));
  }
  return std::move(*reply);
}

}  // namespace locabus::api
