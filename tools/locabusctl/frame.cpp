// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// locabusctl frame send|recv: raw Locabus frames, for diagnostics and demos.
#include <csignal>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <locabus/wire.hpp>

#include "commands.hpp"
#include "common/error.hpp"
#include "fastpath/fastpath.hpp"
#include "fastpath/netdev.hpp"
#include "fastpath/packet_socket.hpp"
#include "fastpath/xsk.hpp"

namespace locabus::ctl {
namespace {

using nlohmann::json;

volatile std::sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

// SIGINT/SIGTERM interrupt poll() (no SA_RESTART) and end the receive loop.
void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

std::uint8_t type_option(const std::string& text) {
  if (auto t = wire::parse_packet_type(text)) return static_cast<std::uint8_t>(*t);
  try {
    const unsigned long v = std::stoul(text, nullptr, 0);
    if (v <= 255) return static_cast<std::uint8_t>(v);
  } catch (const std::exception&) {
  }
  throw CLI::ValidationError("--type", "'" + text + "' is neither a packet type name nor a number 0..255");
}

std::uint8_t proto_option(const std::string& text) {
  if (auto p = wire::parse_protocol(text)) return static_cast<std::uint8_t>(*p);
  throw CLI::ValidationError("--proto", "'" + text + "' is neither a protocol name nor a number 0..255");
}

std::string printable(std::span<const std::byte> data, std::size_t max = 48) {
  std::string out;
  for (std::size_t i = 0; i < data.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(data[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '.';
  }
  if (data.size() > max) out += "...";
  return out;
}

std::string hex(std::span<const std::byte> data) {
  std::string out;
  out.reserve(data.size() * 2);
  for (std::byte b : data) out += fmt::format("{:02x}", static_cast<unsigned>(b));
  return out;
}

std::string type_name(std::uint8_t t) {
  return wire::is_known_type(t) ? std::string(wire::to_string(static_cast<wire::PacketType>(t)))
                                : fmt::format("type{}", t);
}

std::string proto_name(std::uint8_t p) {
  const auto n = wire::to_string(static_cast<wire::Protocol>(p));
  return n == "unknown" ? fmt::format("proto{}", p) : std::string(n);
}

struct SendOptions {
  Target target;
  std::string to, from, type = "data", proto = "control", dst_mac, payload;
  std::uint16_t seq = 0, ack = 0, window = 0;
  std::size_t size = 0;
  unsigned count = 1;
  bool bad_csum = false;
  int len = -1;
  std::size_t pad_to = 0;
};

void do_send(const SendOptions& o) {
  // Options first, so a typo is reported before anything touches the system.
  const std::uint8_t type = type_option(o.type);
  const std::uint8_t proto = proto_option(o.proto);
  const std::uint16_t to =
      o.to == "broadcast" || o.to == "all" ? wire::kBroadcast : node_id_option(o.to, "--to");
  std::optional<std::uint16_t> from_opt;
  if (!o.from.empty()) from_opt = node_id_option(o.from, "--from");
  wire::MacAddress dst = wire::MacAddress::broadcast();
  if (!o.dst_mac.empty()) {
    auto m = wire::MacAddress::parse(o.dst_mac);
    if (!m) throw CLI::ValidationError("--dst-mac", "'" + o.dst_mac + "' is not aa:bb:cc:dd:ee:ff");
    dst = *m;
  }

  const net::Interface ifc = net::lookup_interface(o.target.iface);
  std::uint16_t from = 0;
  if (from_opt) {
    from = *from_opt;
  } else {
    try {  // the node id the fast path runs with, else the address rule
      const auto dir = pin_dir_of(o.target);
      from = fastpath::Maps::open_pinned(dir).config().node_id;
    } catch (const Error&) {
      from = net::default_node_id(ifc);
    }
  }
  std::vector<std::byte> payload;
  if (o.size) {
    payload.resize(o.size);
    for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<std::byte>('a' + i % 26);
  } else {
    for (char c : o.payload) payload.push_back(static_cast<std::byte>(c));
  }
  if (payload.size() > wire::kMaxPayload)
    throw Error(fmt::format("payload of {} bytes is over the {}-byte maximum of one frame", payload.size(),
                            wire::kMaxPayload));

  net::PacketSocket sock(o.target.iface);
  std::vector<std::byte> frame(std::max<std::size_t>(wire::kMaxFrame, o.pad_to));
  for (unsigned i = 0; i < o.count; ++i) {
    wire::Header h;
    h.set_type_raw(type)
        .set_proto_raw(proto)
        .set_node_to(to)
        .set_node_from(from)
        .set_seq(static_cast<std::uint16_t>(o.seq + i))
        .set_ack(o.ack)
        .set_window(o.window);
    std::size_t n = wire::encode_frame(frame, dst, ifc.mac, h, payload);
    auto packet = std::span(frame).subspan(wire::kEthHeaderLen);
    h = wire::Header::read(packet);
    if (o.len >= 0) {  // a deliberately wrong len, with a checksum that matches it where possible
      h.set_len(static_cast<std::uint16_t>(o.len)).set_csum(0);
      h.write(packet);
      const std::size_t covered =
          std::min<std::size_t>(static_cast<std::size_t>(o.len), n - wire::kEthHeaderLen);
      h.set_csum(wire::checksum(packet.first(std::max(covered, wire::kHeaderLen))));
    }
    if (o.bad_csum) h.set_csum(static_cast<std::uint16_t>(h.csum() ^ 0x5a5a));
    h.write(packet);
    if (o.pad_to > n) {
      std::memset(frame.data() + n, 0, o.pad_to - n);
      n = o.pad_to;
    }
    sock.send(std::span(frame).first(n));
  }
  if (o.target.json)
    std::cout << json{{"iface", o.target.iface}, {"sent", o.count}, {"to", to}, {"from", from}}.dump()
              << "\n";
  else
    fmt::print("sent {} frame(s) on {}: {} {} -> {} ({} payload bytes{})\n", o.count, o.target.iface,
               type_name(type), from, to == wire::kBroadcast ? "broadcast" : std::to_string(to),
               payload.size(), o.bad_csum ? ", corrupted checksum" : "");
}

struct RecvOptions {
  Target target;
  std::uint32_t queue = 0;
  std::string proto;  // empty: default socket
  unsigned count = 0;
  double timeout = 0;
};

int do_recv(const RecvOptions& o) {
  const std::uint32_t slot = o.proto.empty() ? LOCABUS_XSK_DEFAULT_SLOT : proto_option(o.proto);
  if (!o.proto.empty() && slot >= LOCABUS_XSK_PROTO_SLOTS)
    throw Error(fmt::format("protocol {} cannot have a socket of its own (only ids below {})", slot,
                            LOCABUS_XSK_PROTO_SLOTS),
                0, "leave out --proto to receive on the default socket");
  const auto dir = pin_dir_of(o.target);
  auto maps = fastpath::Maps::open_pinned(dir);
  xsk::Options xo;
  xo.queue = o.queue;
  xsk::Socket sock(o.target.iface, xo);
  xsk::Registration reg(maps, sock, slot);
  install_stop_handlers();
  if (!o.target.json)
    fmt::print(stderr, "listening on {} queue {} ({} socket, {} mode){}\n", o.target.iface, o.queue,
               o.proto.empty() ? "default" : proto_name(static_cast<std::uint8_t>(slot)),
               sock.zero_copy() ? "zero-copy" : "copy",
               o.count ? fmt::format(", until {} frame(s) arrive", o.count) : std::string{});

  using clock = std::chrono::steady_clock;
  const auto deadline =
      clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(o.timeout));
  unsigned got = 0;
  while (!g_stop && (o.count == 0 || got < o.count)) {
    auto wait = std::chrono::milliseconds(-1);
    if (o.timeout > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
      if (left.count() <= 0) break;
      wait = left;
    }
    if (!sock.wait_readable(wait)) continue;
    sock.receive(64, [&](std::span<const std::byte> frame) {
      ++got;
      const auto d = wire::decode_frame(frame);
      if (!d) {  // the fast path validated it; this would be a bug
        fmt::print("invalid frame ({} bytes): {}\n", frame.size(), wire::to_string(d.error()));
        return;
      }
      const auto& h = d->header;
      if (o.target.json) {
        std::cout << json{{"type", type_name(h.type_raw())},
                          {"proto", proto_name(h.proto())},
                          {"from", h.node_from()},
                          {"to", h.node_to()},
                          {"seq", h.seq()},
                          {"ack", h.ack()},
                          {"window", h.window()},
                          {"len", h.len()},
                          {"src_mac", d->src.to_string()},
                          {"payload_hex", hex(d->payload)},
                          {"payload_text", printable(d->payload, d->payload.size())}}
                         .dump()
                  << std::endl;
      } else {
        fmt::print("{} -> {}  {:<8} {:<8} seq={} ack={} win={} len={}  \"{}\"\n", h.node_from(),
                   h.node_to() == wire::kBroadcast ? "all" : std::to_string(h.node_to()),
                   type_name(h.type_raw()), proto_name(h.proto()), h.seq(), h.ack(), h.window(), h.len(),
                   printable(d->payload));
        std::fflush(stdout);
      }
    });
  }
  if (o.count && got < o.count) {
    fmt::print(stderr, "locabusctl: received {} of {} frame(s) before {}\n", got, o.count,
               g_stop ? "being stopped" : "the timeout");
    return 1;
  }
  return 0;
}

}  // namespace

void register_frame_commands(CLI::App& app) {
  auto* frame = app.add_subcommand("frame", "Send and receive raw Locabus frames (diagnostics)");
  frame->require_subcommand(1);

  {
    auto* cmd = frame->add_subcommand(
        "send",
        "Inject Locabus frames with AF_PACKET (valid by default; options make them invalid on purpose)");
    auto o = std::make_shared<SendOptions>();
    add_target_options(*cmd, o->target);
    cmd->add_option("--to", o->to, "Destination node id, or 'broadcast'")->required();
    cmd->add_option("--from", o->from, "Source node id (default: the fast path's node id on this interface)");
    cmd->add_option("--type", o->type, "Packet type name (data, ack, nak, ...) or number")
        ->capture_default_str();
    cmd->add_option("--proto", o->proto, "Protocol name (control, locasock, kccm, ...) or number")
        ->capture_default_str();
    cmd->add_option("--seq", o->seq, "Sequence number of the first frame (then +1 per frame)");
    cmd->add_option("--ack", o->ack, "ack_num");
    cmd->add_option("--window", o->window, "window");
    auto* payload = cmd->add_option("--payload", o->payload, "Payload text");
    cmd->add_option("--size", o->size, "Payload of N generated bytes")->excludes(payload);
    cmd->add_option("--count", o->count, "Number of frames")->check(CLI::Range(1u, 10'000'000u));
    cmd->add_option("--dst-mac", o->dst_mac, "Destination MAC (default ff:ff:ff:ff:ff:ff)");
    cmd->add_flag("--bad-csum", o->bad_csum, "Corrupt the checksum");
    cmd->add_option("--len", o->len, "Write this value into the len field (checksum kept consistent)")
        ->check(CLI::Range(0, 65535));
    cmd->add_option("--pad-to", o->pad_to, "Pad the frame with zeros to this many bytes")
        ->check(CLI::Range(0, 9000));
    cmd->callback([o] { do_send(*o); });
  }
  {
    auto* cmd = frame->add_subcommand(
        "recv", "Receive frames through an AF_XDP socket registered with the fast path, and print them");
    auto o = std::make_shared<RecvOptions>();
    add_target_options(*cmd, o->target);
    cmd->add_option("--queue", o->queue, "RX queue")->capture_default_str();
    cmd->add_option("--proto", o->proto,
                    "Register as this protocol's socket (default: the queue's default socket)");
    cmd->add_option("--count", o->count, "Exit after N frames (exit status 1 if fewer arrive)");
    cmd->add_option("--timeout", o->timeout, "Give up after this many seconds (default: never)");
    cmd->callback([o] {
      if (int rc = do_recv(*o)) throw CLI::RuntimeError(rc);
    });
  }
}

}  // namespace locabus::ctl
