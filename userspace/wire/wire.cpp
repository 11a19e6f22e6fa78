// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <locabus/wire.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>

namespace locabus::wire {
namespace {

constexpr std::array<std::pair<PacketType, std::string_view>, 13> kTypeNames{{
    {PacketType::data, "data"},
    {PacketType::ack, "ack"},
    {PacketType::nak, "nak"},
    {PacketType::syn, "syn"},
    {PacketType::syn_ack, "syn_ack"},
    {PacketType::fin, "fin"},
    {PacketType::fin_ack, "fin_ack"},
    {PacketType::discover, "discover"},
    {PacketType::discover_reply, "discover_reply"},
    {PacketType::probe, "probe"},
    {PacketType::probe_reply, "probe_reply"},
    {PacketType::poll, "poll"},
    {PacketType::heartbeat, "heartbeat"},
}};
static_assert(kTypeNames.size() == LOCABUS_T_MAX - LOCABUS_T_MIN + 1, "a name for every packet type");

constexpr std::array<std::pair<Protocol, std::string_view>, 7> kProtoNames{{
    {Protocol::control, "control"},
    {Protocol::locasock, "locasock"},
    {Protocol::kccm, "kccm"},
    {Protocol::monitor, "monitor"},
    {Protocol::sps, "sps"},
    {Protocol::mpi, "mpi"},
    {Protocol::flow, "flow"},
}};
static_assert(kProtoNames.size() == LOCABUS_P_MAX + 1, "a name for every protocol id");

std::uint16_t read_u16_raw(const std::byte* p) noexcept {
  std::uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

std::string_view to_string(PacketType t) noexcept {
  for (const auto& [value, name] : kTypeNames)
    if (value == t) return name;
  return "unknown";
}

std::string_view to_string(Protocol p) noexcept {
  for (const auto& [value, name] : kProtoNames)
    if (value == p) return name;
  return "unknown";
}

std::optional<PacketType> parse_packet_type(std::string_view name) noexcept {
  for (const auto& [value, n] : kTypeNames)
    if (n == name) return value;
  return std::nullopt;
}

std::optional<Protocol> parse_protocol(std::string_view name) noexcept {
  for (const auto& [value, n] : kProtoNames)
    if (n == name) return value;
  unsigned id = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), id);
  if (ec == std::errc{} && end == name.data() + name.size() && id <= 255) return static_cast<Protocol>(id);
  return std::nullopt;
}

std::uint16_t checksum(std::span<const std::byte> bytes) noexcept {
  // The C helper sums in memory order; the stored value read back with
  // ntoh16 is the checksum in host order.
  __u64 acc = 0;
  const std::size_t csum_off = LOCABUS_OFFSETOF(struct locabus_hdr, csum);
  const std::size_t head = std::min(bytes.size(), csum_off);
  acc = locabus_csum_partial(bytes.data(), static_cast<__u32>(head), acc);
  if (bytes.size() > kHeaderLen)
    acc = locabus_csum_partial(bytes.data() + kHeaderLen, static_cast<__u32>(bytes.size() - kHeaderLen), acc);
  return ntoh16(locabus_csum_finish(acc));
}

bool checksum_ok(std::span<const std::byte> bytes) noexcept {
  return locabus_csum_fold(locabus_csum_partial(bytes.data(), static_cast<__u32>(bytes.size()), 0)) == 0xFFFF;
}

std::optional<MacAddress> MacAddress::parse(std::string_view text) noexcept {
  MacAddress mac;
  if (text.size() != 17) return std::nullopt;
  for (std::size_t i = 0; i < mac.bytes.size(); ++i) {
    const char* first = text.data() + i * 3;
    if (i < 5 && first[2] != ':') return std::nullopt;
    auto [end, ec] = std::from_chars(first, first + 2, mac.bytes[i], 16);
    if (ec != std::errc{} || end != first + 2) return std::nullopt;
  }
  return mac;
}

std::string MacAddress::to_string() const {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", bytes[0], bytes[1], bytes[2], bytes[3],
                bytes[4], bytes[5]);
  return buf;
}

std::string_view to_string(FrameError e) noexcept {
  switch (e) {
#define LOCABUS_X_CASE(name, desc) \
  case FrameError::name: return desc;
    LOCABUS_FRAME_ERRORS(LOCABUS_X_CASE)
#undef LOCABUS_X_CASE
  }
  return "unknown error";
}

DecodeResult decode_frame(std::span<const std::byte> frame, ChecksumCheck check) noexcept {
  if (frame.size() < kEthHeaderLen || ntoh16(read_u16_raw(frame.data() + 2 * LOCABUS_ETH_ALEN)) != kEtherType)
    return FrameError::not_locabus;
  if (frame.size() < kMinFrame) return FrameError::short_frame;
  const auto packet = frame.subspan(kEthHeaderLen);
  const Header h = Header::read(packet);
  if (h.len() < kHeaderLen) return FrameError::len_small;
  if (h.len() > kMaxLen) return FrameError::len_max;
  if (h.len() > packet.size()) return FrameError::len_frame;
  if (check == ChecksumCheck::verify && !checksum_ok(packet.first(h.len()))) return FrameError::bad_csum;
  if (!is_known_type(h.type_raw())) return FrameError::unknown_type;
  if (h.node_from() == kBroadcast) return FrameError::bad_src;

  FrameView v;
  std::memcpy(v.dst.bytes.data(), frame.data(), LOCABUS_ETH_ALEN);
  std::memcpy(v.src.bytes.data(), frame.data() + LOCABUS_ETH_ALEN, LOCABUS_ETH_ALEN);
  v.header = h;
  v.payload = packet.subspan(kHeaderLen, h.len() - kHeaderLen);
  return v;
}

std::size_t encode_frame(std::span<std::byte> out, const MacAddress& dst, const MacAddress& src, Header hdr,
                         std::span<const std::byte> payload) noexcept {
  if (payload.size() > kMaxPayload) return 0;
  const std::size_t size = kEthHeaderLen + kHeaderLen + payload.size();
  if (out.size() < size) return 0;
  std::memcpy(out.data(), dst.bytes.data(), LOCABUS_ETH_ALEN);
  std::memcpy(out.data() + LOCABUS_ETH_ALEN, src.bytes.data(), LOCABUS_ETH_ALEN);
  const std::uint16_t ethertype = hton16(kEtherType);
  std::memcpy(out.data() + 2 * LOCABUS_ETH_ALEN, &ethertype, sizeof ethertype);

  auto packet = out.subspan(kEthHeaderLen, kHeaderLen + payload.size());
  if (!payload.empty()) std::memcpy(packet.data() + kHeaderLen, payload.data(), payload.size());
  hdr.set_len(static_cast<std::uint16_t>(packet.size())).set_csum(0);
  hdr.write(packet);
  hdr.set_csum(checksum(packet));
  hdr.write(packet);
  return size;
}

}  // namespace locabus::wire
