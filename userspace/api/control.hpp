// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The local API's control channel: JSON requests and replies over a Unix
// SOCK_SEQPACKET socket (one message per datagram, file descriptors passed
// with SCM_RIGHTS). Data goes through shared-memory rings (api/shm.hpp);
// docs/API.md lists the requests.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/unique_fd.hpp"

namespace locabus::api {

/// Bumped on incompatible changes; the daemon refuses other versions.
inline constexpr int kProtocolVersion = 1;
/// Largest control message (a peers list of ~4000 peers).
inline constexpr std::size_t kMaxControlMessage = 1 << 20;
inline constexpr const char* kDefaultRunDir = "/run/locabus";
inline constexpr const char* kSocketName = "locabusd.sock";
inline constexpr const char* kSocketEnv = "LOCABUS_SOCKET";

/// $LOCABUS_SOCKET, else /run/locabus/locabusd.sock.
std::filesystem::path default_socket_path();

/// Record types in the shared rings (docs/LOCAL_API_SHM.md, "Record types").
enum RecordType : std::uint16_t {
  kRecordSend = 1,     // client -> daemon: aux = destination node (0xFFFF: broadcast), payload = message
  kRecordMessage = 2,  // daemon -> client: aux = source node, payload = message
  kRecordEvent = 3,    // daemon -> client: payload = struct locabus_event
  /// daemon -> client: aux = source node, payload = a message from the
  /// source's broadcast stream. Only to clients that asked for it in "open"
  /// ("broadcast_records": true); others get such messages as kRecordMessage.
  kRecordBroadcastMessage = 4,
  kRecordDatagramSend = 5,  // client -> daemon (socket): payload = DatagramHeader + datagram
  kRecordDatagram = 6,      // daemon -> client (socket): payload = DatagramHeader + datagram

  // KCCM (docs/KCCM.md "Records"): a client opened with "kccm": space.
  kRecordKccmSend = 10,        // c -> d: aux = node; KccmTagHeader + message
  kRecordKccmRecv = 11,        // c -> d: KccmRecvRequest
  kRecordKccmCancel = 12,      // c -> d: KccmWaiter (a recv that timed out)
  kRecordKccmRegister = 13,    // c -> d: aux = LOCABUS_KCCM_LONG/SHORT; the name (answered by kRecordKccmAck)
  kRecordKccmUnregister = 14,  // c -> d: the name (answered by kRecordKccmAck)
  kRecordKccmCall = 15,        // c -> d: aux = node (0xFFFF: every node); KccmCallHeader + name + argument
  kRecordKccmReply = 16,       // c -> d: KccmReplyHeader + result or error text
  kRecordKccmMessage = 20,     // d -> c: aux = source node; KccmMessageHeader + message
  kRecordKccmCancelled = 21,   // d -> c: KccmWaiter: the cancelled recv got nothing
  kRecordKccmInvoke = 22,      // d -> c: aux = calling node; KccmInvokeHeader + name + argument
  kRecordKccmResult = 23,      // d -> c: aux = answering node; KccmResultHeader + result or error text
  kRecordKccmCallStarted = 24,  // d -> c: KccmStartedHeader + count x u16 nodes (a call to every node)
  kRecordKccmAck = 25,          // d -> c: KccmAck + error text (register, unregister; in request order)
};

// KCCM record payload headers, host byte order, 8-byte multiples.
struct KccmTagHeader {
  std::uint32_t tag;
  std::uint32_t reserved;  // 0
};
inline constexpr std::uint16_t kKccmAnyTag = 1;  // KccmRecvRequest::flags
struct KccmRecvRequest {
  std::uint64_t waiter;  // the client's number for this receive
  std::uint16_t node;    // LOCABUS_KCCM_ANY_NODE: any
  std::uint16_t flags;   // kKccmAnyTag
  std::uint32_t tag;
};
struct KccmWaiter {
  std::uint64_t waiter;
};
struct KccmCallHeader {
  std::uint64_t call_id;      // the client's number for the call (unique while it is pending)
  std::uint32_t deadline_ms;  // >= 1
  std::uint8_t flags;         // KCCM_F_ONEWAY
  std::uint8_t name_len;      // 1..KCCM_MAX_NAME, the name follows
  std::uint16_t reserved;
};
struct KccmReplyHeader {
  std::uint64_t ref;    // KccmInvokeHeader::ref of the call answered
  std::uint8_t status;  // enum locabus_kccm_status
  std::uint8_t reserved[7];
};
struct KccmMessageHeader {
  std::uint64_t waiter;  // the receive it answers
  std::uint32_t tag;
  std::uint32_t reserved;
};
struct KccmInvokeHeader {
  std::uint64_t ref;          // the daemon's number for the call (0: one-way, do not reply)
  std::uint32_t deadline_ms;  // left to the caller's deadline when it arrived
  std::uint8_t flags;         // KCCM_F_ONEWAY, KCCM_F_BCAST
  std::uint8_t name_len;      // the name follows, then the argument
  std::uint16_t reserved;
};
struct KccmResultHeader {
  std::uint64_t call_id;
  std::uint8_t status;  // enum locabus_kccm_status
  std::uint8_t reserved[7];
};
struct KccmStartedHeader {
  std::uint64_t call_id;
  std::uint32_t count;  // nodes that follow (u16 each): those the call went to, this node included
  std::uint32_t reserved;
};
struct KccmAck {
  std::int32_t err;  // 0, or an errno value (EEXIST, EINVAL, ENOENT); the text follows
  std::uint32_t reserved;
};
static_assert(sizeof(KccmTagHeader) == 8 && sizeof(KccmRecvRequest) == 16 && sizeof(KccmWaiter) == 8);
static_assert(sizeof(KccmCallHeader) == 16 && sizeof(KccmReplyHeader) == 16 &&
              sizeof(KccmMessageHeader) == 16);
static_assert(sizeof(KccmInvokeHeader) == 16 && sizeof(KccmResultHeader) == 16 &&
              sizeof(KccmStartedHeader) == 16);
static_assert(sizeof(KccmAck) == 8);
/// The largest KCCM record payload (a call: header, longest name, largest argument).
inline constexpr std::size_t kMaxKccmRecord = sizeof(KccmCallHeader) + 64 + 65440;

/// Starts the payload of kRecordDatagramSend and kRecordDatagram, in host
/// byte order (both ends are on one machine). aux is 0.
///   kRecordDatagramSend: node = destination (0xFFFF: every other node), port = destination port
///   kRecordDatagram:     node = source, port = source port, flags = kDatagramBroadcast if it was
///                        broadcast
struct DatagramHeader {
  std::uint16_t node;
  std::uint16_t port;
  std::uint16_t flags;
  std::uint16_t reserved;  // 0
};
static_assert(sizeof(DatagramHeader) == 8);
inline constexpr std::uint16_t kDatagramBroadcast = 1;
/// Largest datagram (LOCASOCK_MAX_DATAGRAM), and so the largest datagram record payload.
inline constexpr std::size_t kMaxDatagram = 65536;
inline constexpr std::size_t kMaxDatagramRecord = sizeof(DatagramHeader) + kMaxDatagram;
/// Ephemeral Locasock ports: what "open" with port 0 binds.
inline constexpr std::uint16_t kEphemeralPortFirst = 49152;
inline constexpr std::uint16_t kEphemeralPortLast = 65535;

/// Connects to the daemon's socket. Throws Error with a hint (is locabusd
/// running? are you in its group?).
UniqueFd connect_control(const std::filesystem::path& socket);

/// Sends one JSON message with optional fds. Throws Error.
void send_control(int fd, const nlohmann::json& msg, std::span<const int> fds = {});

/// Receives one JSON message (and any fds passed with it). nullopt when the
/// peer closed the connection, or when nothing arrived within `timeout`
/// (then *timed_out is set). Throws Error on a malformed message.
std::optional<nlohmann::json> receive_control(int fd, std::vector<UniqueFd>* fds = nullptr,
                                              std::optional<std::chrono::milliseconds> timeout = {},
                                              bool* timed_out = nullptr);

/// Sends `req` and waits for the reply. Throws Error when the daemon
/// closed the connection, timed out, or answered {"ok": false, "error": ...}.
nlohmann::json request(int fd, const nlohmann::json& req, std::vector<UniqueFd>* fds = nullptr,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace locabus::api
