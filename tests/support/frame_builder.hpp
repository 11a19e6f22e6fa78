// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// A fluent builder of Ethernet frames for tests: valid Locabus frames by
// default, broken on purpose by the mutators, and a few non-Locabus frames.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include <locabus/wire.hpp>

namespace locabus::test {

class FrameBuilder {
 public:
  FrameBuilder& type(wire::PacketType t) { return type_raw(static_cast<std::uint8_t>(t)); }
  FrameBuilder& type_raw(std::uint8_t t) {
    hdr_.set_type_raw(t);
    return *this;
  }
  FrameBuilder& proto(wire::Protocol p) { return proto_raw(static_cast<std::uint8_t>(p)); }
  FrameBuilder& proto_raw(std::uint8_t p) {
    hdr_.set_proto_raw(p);
    return *this;
  }
  FrameBuilder& to(std::uint16_t n) {
    hdr_.set_node_to(n);
    return *this;
  }
  FrameBuilder& from(std::uint16_t n) {
    hdr_.set_node_from(n);
    return *this;
  }
  FrameBuilder& seq(std::uint16_t v) {
    hdr_.set_seq(v);
    return *this;
  }
  FrameBuilder& ack(std::uint16_t v) {
    hdr_.set_ack(v);
    return *this;
  }
  FrameBuilder& window(std::uint16_t v) {
    hdr_.set_window(v);
    return *this;
  }
  FrameBuilder& dst(const wire::MacAddress& m) {
    dst_ = m;
    return *this;
  }
  FrameBuilder& src(const wire::MacAddress& m) {
    src_ = m;
    return *this;
  }
  FrameBuilder& payload(std::string_view text) {
    payload_.assign(reinterpret_cast<const std::byte*>(text.data()),
                    reinterpret_cast<const std::byte*>(text.data()) + text.size());
    return *this;
  }
  /// `n` bytes of a repeating pattern.
  FrameBuilder& payload_size(std::size_t n) {
    payload_.resize(n);
    for (std::size_t i = 0; i < n; ++i) payload_[i] = static_cast<std::byte>((i * 7 + 3) & 0xff);
    return *this;
  }

  // ---- mutations applied after encoding ----
  /// Writes this len (checksum recomputed over what the frame holds, so only
  /// the length rule is broken).
  FrameBuilder& len(std::uint16_t v) {
    len_ = v;
    return *this;
  }
  FrameBuilder& corrupt_csum() {
    corrupt_csum_ = true;
    return *this;
  }
  /// Flips one payload bit after the checksum was computed.
  FrameBuilder& flip_payload_bit(std::size_t byte) {
    flip_ = byte;
    return *this;
  }
  /// Cuts the frame to `n` bytes.
  FrameBuilder& truncate(std::size_t n) {
    truncate_ = n;
    return *this;
  }
  /// Appends zero bytes up to `n` (Ethernet minimum-size padding is 60).
  FrameBuilder& pad_to(std::size_t n) {
    pad_to_ = n;
    return *this;
  }

  std::vector<std::byte> build() const {
    std::vector<std::byte> f(wire::kEthHeaderLen + wire::kHeaderLen + payload_.size());
    if (payload_.size() <= wire::kMaxPayload) {
      wire::encode_frame(f, dst_, src_, hdr_, payload_);
    } else {  // oversize on purpose: encode by hand
      std::memcpy(f.data(), dst_.bytes.data(), 6);
      std::memcpy(f.data() + 6, src_.bytes.data(), 6);
      const std::uint16_t et = wire::hton16(wire::kEtherType);
      std::memcpy(f.data() + 12, &et, 2);
      std::memcpy(f.data() + wire::kEthHeaderLen + wire::kHeaderLen, payload_.data(), payload_.size());
      wire::Header h = hdr_;
      h.set_len(static_cast<std::uint16_t>(wire::kHeaderLen + payload_.size())).set_csum(0);
      auto pkt = std::span(f).subspan(wire::kEthHeaderLen);
      h.write(pkt);
      h.set_csum(wire::checksum(pkt));
      h.write(pkt);
    }
    auto pkt = std::span(f).subspan(wire::kEthHeaderLen);
    wire::Header h = wire::Header::read(pkt);
    if (len_) {
      h.set_len(*len_).set_csum(0);
      h.write(pkt);
      const std::size_t covered = std::min<std::size_t>(*len_, pkt.size());
      h.set_csum(wire::checksum(pkt.first(std::max(covered, wire::kHeaderLen))));
      h.write(pkt);
    }
    if (corrupt_csum_) {
      h.set_csum(static_cast<std::uint16_t>(h.csum() ^ 0x0101));
      h.write(pkt);
    }
    if (flip_) pkt[wire::kHeaderLen + *flip_] ^= std::byte{0x10};
    if (pad_to_ > f.size()) f.resize(pad_to_, pad_fill_);
    if (truncate_) f.resize(*truncate_);
    return f;
  }

 private:
  wire::Header hdr_ = wire::Header().set_type(wire::PacketType::data).set_node_to(2).set_node_from(1);
  wire::MacAddress dst_ = wire::MacAddress::broadcast();
  wire::MacAddress src_{{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}};
  std::vector<std::byte> payload_;
  std::optional<std::uint16_t> len_;
  bool corrupt_csum_ = false;
  std::optional<std::size_t> flip_;
  std::optional<std::size_t> truncate_;
  std::size_t pad_to_ = 0;
  std::byte pad_fill_{0xA5};
};

/// A minimal frame of another EtherType (ARP 0x0806, IPv4 0x0800, IPv6 0x86DD).
inline std::vector<std::byte> other_frame(std::uint16_t ethertype, std::size_t size = 64) {
  std::vector<std::byte> f(size, std::byte{0});
  for (int i = 0; i < 6; ++i) f[i] = std::byte{0xff};
  f[6] = std::byte{0x02};
  f[11] = std::byte{0x09};
  f[12] = static_cast<std::byte>(ethertype >> 8);
  f[13] = static_cast<std::byte>(ethertype & 0xff);
  f[14] = std::byte{ethertype == 0x0800   ? std::uint8_t{0x45}
                    : ethertype == 0x86DD ? std::uint8_t{0x60}
                                          : std::uint8_t{0x00}};
  return f;
}

}  // namespace locabus::test
