// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// C++ view of the Locabus wire format. Layouts come only from wire.h; this
// header adds enum classes, byte-order accessors and a frame codec that
// applies the same validation rules as the XDP fast path (for user-space
// receive paths such as AF_PACKET, and for tests).
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "wire.h"

namespace locabus::wire {

inline constexpr std::uint16_t kEtherType = LOCABUS_ETH_P;
inline constexpr std::uint16_t kBroadcast = LOCABUS_NODE_BROADCAST;
inline constexpr std::size_t kEthHeaderLen = LOCABUS_ETH_HLEN;
inline constexpr std::size_t kHeaderLen = LOCABUS_HDR_LEN;
inline constexpr std::size_t kMaxPayload = LOCABUS_MAX_PAYLOAD;
inline constexpr std::size_t kMaxLen = LOCABUS_MAX_LEN;
inline constexpr std::size_t kMinFrame = LOCABUS_MIN_FRAME;
inline constexpr std::size_t kMaxFrame = LOCABUS_MAX_FRAME;

enum class PacketType : std::uint8_t {
  data = LOCABUS_T_DATA,
  ack = LOCABUS_T_ACK,
  nak = LOCABUS_T_NAK,
  syn = LOCABUS_T_SYN,
  syn_ack = LOCABUS_T_SYN_ACK,
  fin = LOCABUS_T_FIN,
  fin_ack = LOCABUS_T_FIN_ACK,
  discover = LOCABUS_T_DISCOVER,
  discover_reply = LOCABUS_T_DISCOVER_REPLY,
  probe = LOCABUS_T_PROBE,
  probe_reply = LOCABUS_T_PROBE_REPLY,
  poll = LOCABUS_T_POLL,
  heartbeat = LOCABUS_T_HEARTBEAT,
};

enum class Protocol : std::uint8_t {
  control = LOCABUS_P_CONTROL,
  locasock = LOCABUS_P_LOCASOCK,
  kccm = LOCABUS_P_KCCM,
  monitor = LOCABUS_P_MONITOR,
  sps = LOCABUS_P_SPS,
  mpi = LOCABUS_P_MPI,
  flow = LOCABUS_P_FLOW,
};

constexpr bool is_known_type(std::uint8_t t) noexcept { return t >= LOCABUS_T_MIN && t <= LOCABUS_T_MAX; }

/// Lower-case name ("data", "syn_ack", ...), or "unknown".
std::string_view to_string(PacketType t) noexcept;
/// Lower-case name ("control", "kccm", ...), or "unknown".
std::string_view to_string(Protocol p) noexcept;
/// Parses a name as printed by to_string(); nullopt if it is not one.
std::optional<PacketType> parse_packet_type(std::string_view name) noexcept;
/// Parses a protocol name or a decimal id 0..255; nullopt if neither.
std::optional<Protocol> parse_protocol(std::string_view name) noexcept;

// ---- byte order --------------------------------------------------------

constexpr std::uint16_t byteswap16(std::uint16_t v) noexcept {
  return static_cast<std::uint16_t>((v >> 8) | (v << 8));
}
/// Network (big-endian) to host order.
constexpr std::uint16_t ntoh16(std::uint16_t v) noexcept {
  if constexpr (std::endian::native == std::endian::little) return byteswap16(v);
  return v;
}
/// Host to network order.
constexpr std::uint16_t hton16(std::uint16_t v) noexcept { return ntoh16(v); }

/// 16-bit sequence numbers compare in serial-number arithmetic.
constexpr bool seq_before(std::uint16_t a, std::uint16_t b) noexcept {
  return static_cast<std::int16_t>(static_cast<std::uint16_t>(a - b)) < 0;
}

// ---- checksum ----------------------------------------------------------

/// RFC 1071 checksum of `bytes` (a Locabus header followed by its data) with
/// the csum field (bytes 14-15) taken as zero, in host order: store it with
/// hton16(), or use Header::set_csum().
std::uint16_t checksum(std::span<const std::byte> bytes) noexcept;
/// True when `bytes` (header + data, stored csum included) are intact.
bool checksum_ok(std::span<const std::byte> bytes) noexcept;

// ---- header accessors ---------------------------------------------------

/// Typed accessors over a `struct locabus_hdr` value (network order inside).
class Header {
 public:
  Header() = default;
  explicit Header(const locabus_hdr& raw) noexcept : raw_(raw) {}

  /// Reads the 16 bytes at the start of `bytes` (size must be >= 16).
  static Header read(std::span<const std::byte> bytes) noexcept {
    locabus_hdr h;
    std::memcpy(&h, bytes.data(), sizeof h);
    return Header(h);
  }
  /// Writes the 16 bytes to the start of `out` (size must be >= 16).
  void write(std::span<std::byte> out) const noexcept { std::memcpy(out.data(), &raw_, sizeof raw_); }

  std::uint8_t type_raw() const noexcept { return raw_.type; }
  std::optional<PacketType> type() const noexcept {
    if (!is_known_type(raw_.type)) return std::nullopt;
    return static_cast<PacketType>(raw_.type);
  }
  std::uint8_t proto() const noexcept { return raw_.proto; }
  std::uint16_t node_to() const noexcept { return ntoh16(raw_.node_to); }
  std::uint16_t node_from() const noexcept { return ntoh16(raw_.node_from); }
  std::uint16_t seq() const noexcept { return ntoh16(raw_.seq_num); }
  std::uint16_t ack() const noexcept { return ntoh16(raw_.ack_num); }
  std::uint16_t len() const noexcept { return ntoh16(raw_.len); }
  std::uint16_t window() const noexcept { return ntoh16(raw_.window); }
  std::uint16_t csum() const noexcept { return ntoh16(raw_.csum); }
  std::size_t payload_len() const noexcept { return len() > kHeaderLen ? len() - kHeaderLen : 0; }

  Header& set_type(PacketType t) noexcept { return set_type_raw(static_cast<std::uint8_t>(t)); }
  Header& set_type_raw(std::uint8_t t) noexcept {
    raw_.type = t;
    return *this;
  }
  Header& set_proto(Protocol p) noexcept { return set_proto_raw(static_cast<std::uint8_t>(p)); }
  Header& set_proto_raw(std::uint8_t p) noexcept {
    raw_.proto = p;
    return *this;
  }
  Header& set_node_to(std::uint16_t v) noexcept {
    raw_.node_to = hton16(v);
    return *this;
  }
  Header& set_node_from(std::uint16_t v) noexcept {
    raw_.node_from = hton16(v);
    return *this;
  }
  Header& set_seq(std::uint16_t v) noexcept {
    raw_.seq_num = hton16(v);
    return *this;
  }
  Header& set_ack(std::uint16_t v) noexcept {
    raw_.ack_num = hton16(v);
    return *this;
  }
  Header& set_len(std::uint16_t v) noexcept {
    raw_.len = hton16(v);
    return *this;
  }
  Header& set_window(std::uint16_t v) noexcept {
    raw_.window = hton16(v);
    return *this;
  }
  Header& set_csum(std::uint16_t v) noexcept {
    raw_.csum = hton16(v);
    return *this;
  }

  const locabus_hdr& raw() const noexcept { return raw_; }

 private:
  locabus_hdr raw_{};
};

/// Typed accessors over a `struct locasock_hdr` value.
class LocasockHeader {
 public:
  LocasockHeader() = default;
  explicit LocasockHeader(const locasock_hdr& raw) noexcept : raw_(raw) {}
  static LocasockHeader read(std::span<const std::byte> bytes) noexcept {
    locasock_hdr h;
    std::memcpy(&h, bytes.data(), sizeof h);
    return LocasockHeader(h);
  }
  void write(std::span<std::byte> out) const noexcept { std::memcpy(out.data(), &raw_, sizeof raw_); }

  std::uint16_t sport() const noexcept { return ntoh16(raw_.sport); }
  std::uint16_t dport() const noexcept { return ntoh16(raw_.dport); }
  std::uint16_t ident() const noexcept { return ntoh16(raw_.ident); }
  std::uint8_t frag() const noexcept { return raw_.frag; }
  std::uint8_t nfrags() const noexcept { return raw_.nfrags; }

  LocasockHeader& set_sport(std::uint16_t v) noexcept {
    raw_.sport = hton16(v);
    return *this;
  }
  LocasockHeader& set_dport(std::uint16_t v) noexcept {
    raw_.dport = hton16(v);
    return *this;
  }
  LocasockHeader& set_ident(std::uint16_t v) noexcept {
    raw_.ident = hton16(v);
    return *this;
  }
  LocasockHeader& set_frag(std::uint8_t v) noexcept {
    raw_.frag = v;
    return *this;
  }
  LocasockHeader& set_nfrags(std::uint8_t v) noexcept {
    raw_.nfrags = v;
    return *this;
  }

  const locasock_hdr& raw() const noexcept { return raw_; }

 private:
  locasock_hdr raw_{};
};

// ---- frames --------------------------------------------------------------

struct MacAddress {
  std::array<std::uint8_t, LOCABUS_ETH_ALEN> bytes{};

  static constexpr MacAddress broadcast() noexcept {
    return MacAddress{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
  }
  /// "aa:bb:cc:dd:ee:ff"; nullopt if malformed.
  static std::optional<MacAddress> parse(std::string_view text) noexcept;
  std::string to_string() const;
  friend bool operator==(const MacAddress&, const MacAddress&) = default;
};

/// Why a frame is not a valid Locabus frame. The order and meaning match the
/// XDP program's drop reasons (xdp_maps.h: drop_short ... drop_src).
/// X(name, description); the engine counts them by name (engine.rx_invalid).
#define LOCABUS_FRAME_ERRORS(X)                                                                            \
  X(not_locabus, "not a Locabus frame")                   /* EtherType is not 0x88B5 (XDP passes these) */ \
  X(short_frame, "frame shorter than the Locabus header") /* shorter than Ethernet + Locabus header */     \
  X(len_small, "len smaller than the header")             /* len < 16 */                                   \
  X(len_max, "len larger than the maximum")               /* len > 1500 */                                 \
  X(len_frame, "len larger than the frame")               /* len > bytes after the Ethernet header */      \
  X(bad_csum, "bad checksum")                                                                              \
  X(unknown_type, "unknown packet type")                                                                   \
  X(bad_src, "broadcast source node id") /* node_from == 0xFFFF */

enum class FrameError : std::uint8_t {
#define LOCABUS_X_ENUM(name, desc) name,
  LOCABUS_FRAME_ERRORS(LOCABUS_X_ENUM)
#undef LOCABUS_X_ENUM
};
#define LOCABUS_X_ONE(name, desc) +1
inline constexpr std::size_t kFrameErrors = 0 LOCABUS_FRAME_ERRORS(LOCABUS_X_ONE);
#undef LOCABUS_X_ONE
/// Its description ("bad checksum").
std::string_view to_string(FrameError e) noexcept;

/// A validated frame; spans point into the caller's buffer.
struct FrameView {
  MacAddress dst;
  MacAddress src;
  Header header;
  std::span<const std::byte> payload;  // exactly header.len() - 16 bytes
};

/// Result of decode_frame(): a frame or the first rule it breaks.
class DecodeResult {
 public:
  DecodeResult(FrameView v) noexcept : view_(v) {}    // NOLINT(google-explicit-constructor)
  DecodeResult(FrameError e) noexcept : error_(e) {}  // NOLINT(google-explicit-constructor)
  explicit operator bool() const noexcept { return view_.has_value(); }
  const FrameView& operator*() const noexcept { return *view_; }
  const FrameView* operator->() const noexcept { return &*view_; }
  FrameError error() const noexcept { return error_; }

 private:
  std::optional<FrameView> view_;
  FrameError error_{};
};

/// Whether decode_frame() verifies the checksum. `skip` is only for frames
/// the XDP fast path has verified already (engine::Transport::frames_validated).
enum class ChecksumCheck : std::uint8_t { verify, skip };

/// Validates an Ethernet frame with the fast path's rules, in its order
/// (lengths, checksum, type, source). Node-id filtering is the receiver's
/// job: it depends on the local node id.
DecodeResult decode_frame(std::span<const std::byte> frame,
                          ChecksumCheck check = ChecksumCheck::verify) noexcept;

/// Encodes Ethernet header + `hdr` + `payload` into `out`, filling in len and
/// csum. Returns the frame size, or 0 if `out` is too small or the payload
/// is over kMaxPayload.
std::size_t encode_frame(std::span<std::byte> out, const MacAddress& dst, const MacAddress& src, Header hdr,
                         std::span<const std::byte> payload) noexcept;

}  // namespace locabus::wire
