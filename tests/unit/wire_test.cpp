// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

#include <locabus/xdp_maps.h>
#include <locabus/wire.hpp>

#include "c_header_check.h"
#include "frame_builder.hpp"

namespace locabus::wire {
namespace {

std::vector<std::byte> bytes(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

std::vector<std::byte> from_hex(std::string_view hex) {
  std::vector<std::byte> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<std::byte>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

TEST(WireLayout, Table1HeaderFieldsAtPaperOffsets) {
  EXPECT_EQ(sizeof(locabus_hdr), 16u);
  EXPECT_EQ(offsetof(locabus_hdr, type), 0u);
  EXPECT_EQ(offsetof(locabus_hdr, proto), 1u);
  EXPECT_EQ(offsetof(locabus_hdr, node_to), 2u);
  EXPECT_EQ(offsetof(locabus_hdr, node_from), 4u);
  EXPECT_EQ(offsetof(locabus_hdr, seq_num), 6u);
  EXPECT_EQ(offsetof(locabus_hdr, ack_num), 8u);
  EXPECT_EQ(offsetof(locabus_hdr, len), 10u);
  EXPECT_EQ(offsetof(locabus_hdr, window), 12u);
  EXPECT_EQ(offsetof(locabus_hdr, csum), 14u);
  EXPECT_EQ(kMaxPayload, 1484u);
  EXPECT_EQ(kEtherType, 0x88B5);
  EXPECT_EQ(kBroadcast, 0xFFFF);
}

TEST(WireLayout, Table2LocasockHeader) {
  EXPECT_EQ(sizeof(locasock_hdr), 8u);
  EXPECT_EQ(offsetof(locasock_hdr, ident), 4u);
  EXPECT_EQ(offsetof(locasock_hdr, frag), 6u);
  EXPECT_EQ(offsetof(locasock_hdr, nfrags), 7u);
}

TEST(WireLayout, CAndCxxAgreeOnEveryLayout) {
  locabus_c_layout c{};
  locabus_c_get_layout(&c);
  EXPECT_EQ(c.hdr_size, sizeof(locabus_hdr));
  EXPECT_EQ(c.hdr_csum_offset, offsetof(locabus_hdr, csum));
  EXPECT_EQ(c.locasock_size, sizeof(locasock_hdr));
  EXPECT_EQ(c.config_size, sizeof(locabus_config));
  EXPECT_EQ(c.stats_size, sizeof(locabus_xdp_stats));
  EXPECT_EQ(c.peer_size, sizeof(locabus_peer));
  EXPECT_EQ(c.proto_stats_size, sizeof(locabus_proto_stats));
}

TEST(ByteOrder, HeaderFieldsAreBigEndianOnTheWire) {
  Header h;
  h.set_type(PacketType::syn_ack)
      .set_proto(Protocol::kccm)
      .set_node_to(0x0102)
      .set_node_from(0x0a0b)
      .set_seq(0x1234)
      .set_ack(0xfffe)
      .set_len(0x0010)
      .set_window(0x0400)
      .set_csum(0xbeef);
  std::array<std::byte, 16> raw{};
  h.write(raw);
  EXPECT_EQ(std::vector<std::byte>(raw.begin(), raw.end()), from_hex("05020102"
                                                                     "0a0b1234"
                                                                     "fffe0010"
                                                                     "0400beef"));
  const Header back = Header::read(raw);
  EXPECT_EQ(back.type(), PacketType::syn_ack);
  EXPECT_EQ(back.proto(), LOCABUS_P_KCCM);
  EXPECT_EQ(back.node_to(), 0x0102);
  EXPECT_EQ(back.node_from(), 0x0a0b);
  EXPECT_EQ(back.seq(), 0x1234);
  EXPECT_EQ(back.ack(), 0xfffe);
  EXPECT_EQ(back.len(), 16);
  EXPECT_EQ(back.window(), 0x0400);
  EXPECT_EQ(back.csum(), 0xbeef);
}

TEST(ByteOrder, Helpers) {
  EXPECT_EQ(byteswap16(0x1234), 0x3412);
  const std::uint16_t net = hton16(0x88B5);
  std::array<unsigned char, 2> b;
  std::memcpy(b.data(), &net, 2);
  EXPECT_EQ(b[0], 0x88);
  EXPECT_EQ(b[1], 0xB5);
  EXPECT_EQ(ntoh16(hton16(0xabcd)), 0xabcd);
}

TEST(ByteOrder, LocasockHeaderRoundTrip) {
  LocasockHeader s;
  s.set_sport(7).set_dport(0x1f90).set_ident(0xabcd).set_frag(3).set_nfrags(44);
  std::array<std::byte, 8> raw{};
  s.write(raw);
  EXPECT_EQ(std::vector<std::byte>(raw.begin(), raw.end()), from_hex("00071f90abcd032c"));
  const auto back = LocasockHeader::read(raw);
  EXPECT_EQ(back.sport(), 7);
  EXPECT_EQ(back.dport(), 0x1f90);
  EXPECT_EQ(back.ident(), 0xabcd);
  EXPECT_EQ(back.frag(), 3);
  EXPECT_EQ(back.nfrags(), 44);
}

TEST(Sequence, SerialNumberComparisonWraps) {
  EXPECT_TRUE(seq_before(1, 2));
  EXPECT_FALSE(seq_before(2, 1));
  EXPECT_FALSE(seq_before(5, 5));
  EXPECT_TRUE(seq_before(65530, 4));  // across the wrap
  EXPECT_FALSE(seq_before(4, 65530));
}

// RFC 1071 section 3 worked example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2,
// checksum 220d (computed independently with a big-endian word sum).
TEST(Checksum, Rfc1071WorkedExample) {
  const auto data = bytes({0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7});
  const __u64 acc = locabus_csum_partial(data.data(), static_cast<__u32>(data.size()), 0);
  EXPECT_EQ(ntoh16(locabus_csum_fold(acc)), 0xddf2);
  EXPECT_EQ(ntoh16(locabus_csum_finish(acc)), 0x220d);
}

TEST(Checksum, OddLengthPadsWithZero) {
  const auto odd = bytes({0x12, 0x34, 0x56});
  const auto even = bytes({0x12, 0x34, 0x56, 0x00});
  EXPECT_EQ(locabus_csum_fold(locabus_csum_partial(odd.data(), 3, 0)),
            locabus_csum_fold(locabus_csum_partial(even.data(), 4, 0)));
}

struct KnownPacket {
  std::string_view header_hex;  // the 16 header bytes, csum included
  std::size_t payload_kind;     // 0: "hello", 1: none, 2: 0..255 x5 + 01 02 03
  std::uint16_t csum;
};

std::vector<std::byte> payload_of(std::size_t kind) {
  std::vector<std::byte> p;
  if (kind == 0)
    for (char c : std::string_view("hello")) p.push_back(static_cast<std::byte>(c));
  if (kind == 2) {
    for (int r = 0; r < 5; ++r)
      for (int i = 0; i < 256; ++i) p.push_back(static_cast<std::byte>(i));
    for (int i = 1; i <= 3; ++i) p.push_back(static_cast<std::byte>(i));
  }
  return p;
}

// Vectors computed outside this code base (Python, big-endian word sums).
TEST(Checksum, KnownLocabusPackets) {
  const KnownPacket vectors[] = {
      {"0102000200010005000000150400b70e", 0, 0xb70e},
      {"020001020a0b0000fffe00100400eee3", 1, 0xeee3},
      {"0101ffff1234ffff000705130003226d", 2, 0x226d},
  };
  for (const auto& v : vectors) {
    auto pkt = from_hex(v.header_hex);
    const auto payload = payload_of(v.payload_kind);
    pkt.insert(pkt.end(), payload.begin(), payload.end());
    SCOPED_TRACE(v.header_hex);
    EXPECT_EQ(checksum(pkt), v.csum) << "C++ computation";
    EXPECT_TRUE(checksum_ok(pkt));
    EXPECT_EQ(ntoh16(locabus_c_checksum(pkt.data(), static_cast<unsigned>(pkt.size()))), v.csum)
        << "C computation";
    pkt[3] ^= std::byte{0x01};
    EXPECT_FALSE(checksum_ok(pkt)) << "a flipped bit must be detected";
  }
}

TEST(Checksum, StoredValueIgnoredWhenComputing) {
  auto pkt = from_hex("0102000200010005000000150400ffff");
  const auto payload = payload_of(0);
  pkt.insert(pkt.end(), payload.begin(), payload.end());
  EXPECT_EQ(checksum(pkt), 0xb70e);
}

TEST(Names, EveryTypeAndProtocolRoundTrips) {
  for (int t = LOCABUS_T_MIN; t <= LOCABUS_T_MAX; ++t) {
    const auto type = static_cast<PacketType>(t);
    EXPECT_NE(to_string(type), "unknown") << t;
    EXPECT_EQ(parse_packet_type(to_string(type)), type);
  }
  for (int p = 0; p <= LOCABUS_P_MAX; ++p) {
    const auto proto = static_cast<Protocol>(p);
    EXPECT_NE(to_string(proto), "unknown") << p;
    EXPECT_EQ(parse_protocol(to_string(proto)), proto);
  }
  EXPECT_EQ(parse_protocol("200"), static_cast<Protocol>(200));
  EXPECT_FALSE(parse_protocol("256"));
  EXPECT_FALSE(parse_packet_type("bogus"));
  EXPECT_FALSE(is_known_type(0));
  EXPECT_FALSE(is_known_type(LOCABUS_T_MAX + 1));
}

TEST(Mac, ParseAndPrint) {
  const auto m = MacAddress::parse("02:ab:cd:00:11:ff");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->to_string(), "02:ab:cd:00:11:ff");
  EXPECT_FALSE(MacAddress::parse("02:ab:cd:00:11"));
  EXPECT_FALSE(MacAddress::parse("02-ab-cd-00-11-ff"));
  EXPECT_FALSE(MacAddress::parse("zz:ab:cd:00:11:ff"));
}

TEST(Codec, EncodeDecodeRoundTripEverySize) {
  std::vector<std::byte> frame(kMaxFrame);
  const MacAddress dst{{1, 2, 3, 4, 5, 6}}, src{{6, 5, 4, 3, 2, 1}};
  for (std::size_t n : {0, 1, 2, 3, 4, 63, 64, 65, 511, 512, 513, 1023, 1024, 1483, 1484}) {
    std::vector<std::byte> payload(n);
    for (std::size_t i = 0; i < n; ++i) payload[i] = static_cast<std::byte>(i * 13);
    Header h;
    h.set_type(PacketType::data)
        .set_proto(Protocol::mpi)
        .set_node_to(9)
        .set_node_from(3)
        .set_seq(65535)
        .set_ack(1)
        .set_window(1024);
    const std::size_t size = encode_frame(frame, dst, src, h, payload);
    ASSERT_EQ(size, kEthHeaderLen + kHeaderLen + n);
    const auto d = decode_frame(std::span(frame).first(size));
    ASSERT_TRUE(d) << n << ": " << to_string(d.error());
    EXPECT_EQ(d->dst, dst);
    EXPECT_EQ(d->src, src);
    EXPECT_EQ(d->header.len(), kHeaderLen + n);
    EXPECT_EQ(d->header.seq(), 65535);
    EXPECT_EQ(d->header.proto(), LOCABUS_P_MPI);
    EXPECT_TRUE(std::equal(payload.begin(), payload.end(), d->payload.begin(), d->payload.end()));
  }
}

TEST(Codec, EncodeRefusesOversizeAndSmallBuffers) {
  std::vector<std::byte> frame(kMaxFrame);
  std::vector<std::byte> too_big(kMaxPayload + 1);
  EXPECT_EQ(encode_frame(frame, MacAddress::broadcast(), MacAddress{}, Header{}, too_big), 0u);
  std::vector<std::byte> small(kMinFrame - 1);
  EXPECT_EQ(encode_frame(small, MacAddress::broadcast(), MacAddress{}, Header{}, {}), 0u);
}

TEST(Codec, DecodeRejectsWithTheFastPathsReasons) {
  using test::FrameBuilder;
  EXPECT_EQ(decode_frame(test::other_frame(0x0800)).error(), FrameError::not_locabus);
  EXPECT_EQ(decode_frame(FrameBuilder().payload("x").truncate(kMinFrame - 1).build()).error(),
            FrameError::short_frame);
  EXPECT_EQ(decode_frame(FrameBuilder().len(15).build()).error(), FrameError::len_small);
  EXPECT_EQ(decode_frame(FrameBuilder().payload_size(1485).build()).error(), FrameError::len_max);
  EXPECT_EQ(decode_frame(FrameBuilder().payload("abc").len(40).build()).error(), FrameError::len_frame);
  EXPECT_EQ(decode_frame(FrameBuilder().payload("abc").corrupt_csum().build()).error(), FrameError::bad_csum);
  EXPECT_EQ(decode_frame(FrameBuilder().payload("abc").flip_payload_bit(1).build()).error(),
            FrameError::bad_csum);
  EXPECT_EQ(decode_frame(FrameBuilder().type_raw(0).build()).error(), FrameError::unknown_type);
  EXPECT_EQ(decode_frame(FrameBuilder().type_raw(LOCABUS_T_MAX + 1).build()).error(),
            FrameError::unknown_type);
  EXPECT_EQ(decode_frame(FrameBuilder().from(kBroadcast).build()).error(), FrameError::bad_src);
  // Ethernet padding after len is not part of the packet.
  const auto padded = FrameBuilder().payload("hi").pad_to(60).build();
  const auto d = decode_frame(padded);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->payload.size(), 2u);
}

}  // namespace
}  // namespace locabus::wire
