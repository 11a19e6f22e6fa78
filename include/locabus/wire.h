/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Locabus wire format: the one definition of every on-the-wire layout.
 *
 * This header is compiled unchanged by the BPF programs (clang -target bpf)
 * and by the C++ engine. It holds only fixed-width fields in network byte
 * order, no bool/enum/bitfield/pointer members, and asserts every size and
 * offset at compile time from C and from C++. A C++-only companion
 * (wire.hpp) adds typed accessors; it never re-declares a layout.
 *
 * See docs/PROTOCOL.md for the byte diagrams and the rules.
 */
#ifndef LOCABUS_WIRE_H
#define LOCABUS_WIRE_H

#include <linux/types.h>

#ifdef __cplusplus
#define LOCABUS_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define LOCABUS_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif
#define LOCABUS_OFFSETOF(type, member) __builtin_offsetof(type, member)

/* EtherType of every Locabus frame: IEEE 802 "local experimental 1". */
#define LOCABUS_ETH_P 0x88B5

/* Ethernet framing we run on (no VLAN tag on the wire; see PROTOCOL.md). */
#define LOCABUS_ETH_HLEN 14
#define LOCABUS_ETH_ALEN 6
#define LOCABUS_MTU 1500

/* Node ids are 16 bits; 0xFFFF addresses every node on the segment. */
#define LOCABUS_NODE_BROADCAST 0xFFFF

/* ---------------------------------------------------------------------
 * Locabus header (paper, Table 1): 16 bytes, network byte order.
 *
 *  0       1       2               4               6
 *  +-------+-------+---------------+---------------+
 *  | type  | proto |    node_to    |   node_from   |
 *  +-------+-------+---------------+---------------+
 *  8               10              12              14             16
 *  |    seq_num    |    ack_num    |      len      |    window    | csum |
 * ------------------------------------------------------------------- */
struct locabus_hdr {
  __u8 type;        /* packet type, LOCABUS_T_* */
  __u8 proto;       /* application protocol, LOCABUS_P_* */
  __be16 node_to;   /* recipient node, LOCABUS_NODE_BROADCAST = all */
  __be16 node_from; /* sending node */
  __be16 seq_num;   /* packet sequence number (packets, not bytes) */
  __be16 ack_num;   /* cumulative ack: next sequence number expected */
  __be16 len;       /* header + data, in bytes */
  __be16 window;    /* sender's current credit window, in packets */
  __be16 csum;      /* RFC 1071 checksum of header + data, csum = 0 */
};

#define LOCABUS_HDR_LEN 16
/* Data bytes per frame: 1500 - 16 = 1484, as in the paper. */
#define LOCABUS_MAX_PAYLOAD (LOCABUS_MTU - LOCABUS_HDR_LEN)
/* Largest valid value of locabus_hdr.len. */
#define LOCABUS_MAX_LEN LOCABUS_MTU
/* Smallest and largest Ethernet frame (no FCS) carrying a Locabus packet. */
#define LOCABUS_MIN_FRAME (LOCABUS_ETH_HLEN + LOCABUS_HDR_LEN)
#define LOCABUS_MAX_FRAME (LOCABUS_ETH_HLEN + LOCABUS_MAX_LEN)

LOCABUS_STATIC_ASSERT(sizeof(struct locabus_hdr) == LOCABUS_HDR_LEN, "Table 1 header is 16 bytes");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_hdr, type) == 0, "type at 0");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_hdr, proto) == 1, "proto at 1");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_hdr, node_to) == 2, "node_to at 2");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_hdr, node_from) == 4, "node_from at 4");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_hdr, seq_num) == 6, "seq_num at 6");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_hdr, ack_num) == 8, "ack_num at 8");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_hdr, len) == 10, "len at 10");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_hdr, window) == 12, "window at 12");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_hdr, csum) == 14, "csum at 14");
LOCABUS_STATIC_ASSERT(LOCABUS_MAX_PAYLOAD == 1484, "1484 data bytes at MTU 1500");

/* ---------------------------------------------------------------------
 * Locasock header (paper, Table 2): 8 bytes, first in the data of a
 * LOCABUS_P_LOCASOCK DATA packet.
 *
 *  0               2               4               6       7       8
 *  +---------------+---------------+---------------+-------+-------+
 *  |     sport     |     dport     |     ident     | frag  |nfrags |
 *  +---------------+---------------+---------------+-------+-------+
 * ------------------------------------------------------------------- */
struct locasock_hdr {
  __be16 sport; /* source port */
  __be16 dport; /* destination port */
  __be16 ident; /* fragmentation identifier (per sender datagram) */
  __u8 frag;    /* fragment number, 0 .. nfrags - 1 */
  __u8 nfrags;  /* number of fragments of the datagram, >= 1 */
};

#define LOCASOCK_HDR_LEN 8
#define LOCASOCK_FRAG_PAYLOAD (LOCABUS_MAX_PAYLOAD - LOCASOCK_HDR_LEN)

LOCABUS_STATIC_ASSERT(sizeof(struct locasock_hdr) == LOCASOCK_HDR_LEN, "Table 2 header is 8 bytes");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locasock_hdr, sport) == 0, "sport at 0");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locasock_hdr, dport) == 2, "dport at 2");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locasock_hdr, ident) == 4, "ident at 4");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locasock_hdr, frag) == 6, "frag at 6");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locasock_hdr, nfrags) == 7, "nfrags at 7");

/* ---------------------------------------------------------------------
 * Endpoint flow control (LOCABUS_P_FLOW messages, docs/PROTOCOL.md
 * "Endpoint flow control"). Over one connection, the messages for one
 * destination endpoint form a stream, named by a 32-bit key: the protocol
 * id in the top 16 bits and, for services with ports (Locasock), the
 * destination port below (0 for application protocols). Both daemons count
 * a stream's messages from 0 since the sender's last OPEN; the receiver
 * grants credit as an absolute count (CREDIT: "you may send messages
 * [0, limit)"), and names messages it will not deliver by their count
 * (REFUSE). All fields big-endian. One P_FLOW message carries one kind and
 * `count` entries of that kind.
 * ------------------------------------------------------------------- */
#define LOCABUS_FLOW_OPEN 1   /* sender: my streams to you start again from 0, generation `gen` */
#define LOCABUS_FLOW_CREDIT 2 /* receiver: entries locabus_flow_credit */
#define LOCABUS_FLOW_REFUSE 3 /* receiver: entries locabus_flow_refuse */
#define LOCABUS_FLOW_HOLD 4   /* receiver: stop broadcasting on these keys (entries locabus_flow_key) */
#define LOCABUS_FLOW_RESUME 5 /* receiver: broadcast on these keys again (entries locabus_flow_key) */

#define LOCABUS_FLOW_INITIAL_WINDOW 64 /* messages a stream may send before its first CREDIT */

/* Why a receiver refused messages (locabus_flow_refuse.reason). */
#define LOCABUS_REFUSE_NO_ENDPOINT 1 /* nobody has that protocol or port open */
#define LOCABUS_REFUSE_CLOSED 2      /* the endpoint closed before reading them */
#define LOCABUS_REFUSE_OVER_CREDIT 3 /* sent beyond the credit granted (a sender bug) */
#define LOCABUS_REFUSE_INCOMPLETE 4  /* a datagram that could not be reassembled */

struct locabus_flow_hdr {
  __u8 kind;  /* LOCABUS_FLOW_* */
  __u8 count; /* entries that follow (0 for OPEN) */
  __be16 reserved;
  __be32 gen; /* the sender's stream generation this is about */
};

struct locabus_flow_credit {
  __be32 key; /* the stream */
  __be32 reserved;
  __be64 consumed; /* messages [0, consumed) were delivered to the endpoint or refused */
  __be64 limit;    /* the sender may send messages [0, limit) of the stream */
};

struct locabus_flow_refuse {
  __be32 key;
  __u8 reason; /* LOCABUS_REFUSE_* */
  __u8 reserved[3];
  __be64 first; /* first refused message of the stream */
  __be64 count; /* consecutive messages */
};

/* A broadcast key HOLD or RESUME is about (gen is 0: broadcast streams have
 * no generations). */
struct locabus_flow_key {
  __be32 key;
  __be32 reserved;
};

#define LOCABUS_FLOW_MAX_KEYS \
  ((LOCABUS_MAX_PAYLOAD - sizeof(struct locabus_flow_hdr)) / sizeof(struct locabus_flow_key))
#define LOCABUS_FLOW_MAX_CREDITS \
  ((LOCABUS_MAX_PAYLOAD - sizeof(struct locabus_flow_hdr)) / sizeof(struct locabus_flow_credit))
#define LOCABUS_FLOW_MAX_REFUSALS \
  ((LOCABUS_MAX_PAYLOAD - sizeof(struct locabus_flow_hdr)) / sizeof(struct locabus_flow_refuse))

LOCABUS_STATIC_ASSERT(sizeof(struct locabus_flow_hdr) == 8, "flow header is 8 bytes");
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_flow_key) == 8, "key entry is 8 bytes");
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_flow_credit) == 24, "credit entry is 24 bytes");
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_flow_refuse) == 24, "refuse entry is 24 bytes");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_flow_refuse, first) == 8, "first at 8");

/* ---------------------------------------------------------------------
 * Packet types (locabus_hdr.type). 0 is never valid; every value above
 * LOCABUS_T_MAX is unknown and dropped by the fast path.
 * ------------------------------------------------------------------- */
#define LOCABUS_T_DATA 1           /* data; may piggy-back ack_num/window */
#define LOCABUS_T_ACK 2            /* acknowledgement; "pure" when len == 16 */
#define LOCABUS_T_NAK 3            /* negative ack: ack_num = first missing */
#define LOCABUS_T_SYN 4            /* connect, step 1 */
#define LOCABUS_T_SYN_ACK 5        /* connect, step 2 */
#define LOCABUS_T_FIN 6            /* disconnect, step 1 */
#define LOCABUS_T_FIN_ACK 7        /* disconnect, step 2 */
#define LOCABUS_T_DISCOVER 8       /* broadcast self-discovery after boot */
#define LOCABUS_T_DISCOVER_REPLY 9 /* reply with the known-node list */
#define LOCABUS_T_PROBE 10         /* are you alive? (missing node) */
#define LOCABUS_T_PROBE_REPLY 11   /* yes */
#define LOCABUS_T_POLL 12          /* broadcast sender's poll: highest seq */
#define LOCABUS_T_HEARTBEAT 13     /* periodic liveness */
#define LOCABUS_T_MIN LOCABUS_T_DATA
#define LOCABUS_T_MAX LOCABUS_T_HEARTBEAT

/* ---------------------------------------------------------------------
 * Protocol ids (locabus_hdr.proto): which service a packet belongs to.
 * The fast path can steer ids below LOCABUS_XSK_PROTO_SLOTS (xdp_maps.h)
 * to a socket of their own; every other id goes to the default socket.
 * ------------------------------------------------------------------- */
#define LOCABUS_P_CONTROL 0  /* transport control: handshake, discovery */
#define LOCABUS_P_LOCASOCK 1 /* reliable datagrams with ports (Table 2) */
#define LOCABUS_P_KCCM 2     /* KCCM send/recv and remote calls */
#define LOCABUS_P_MONITOR 3  /* LocaMonitor statistics */
#define LOCABUS_P_SPS 4      /* single process space */
#define LOCABUS_P_MPI 5      /* MPI subset */
#define LOCABUS_P_FLOW 6     /* daemon to daemon: per-endpoint credit and refusals */
#define LOCABUS_P_MAX LOCABUS_P_FLOW

/* ---------------------------------------------------------------------
 * RFC 1071 Internet checksum.
 *
 * The checksum covers the Locabus header and its data (locabus_hdr.len
 * bytes from the start of the header, never Ethernet padding), computed
 * with the csum field taken as zero. A receiver sums the same bytes with
 * the stored csum included; the packet is intact iff that folds to 0xFFFF.
 *
 * The sums are kept in memory byte order (16-bit words loaded natively),
 * which RFC 1071 section 2(B) shows gives the same checksum bytes on any
 * host; the value returned by locabus_csum_finish() is stored into
 * locabus_hdr.csum without byte swapping.
 * ------------------------------------------------------------------- */

/* Adds a partial sum (any width up to 32 bits) into a 64-bit accumulator. */
static inline __u64 locabus_csum_add(__u64 acc, __u32 partial) { return acc + partial; }

/* Folds a 64-bit one's-complement accumulator to 16 bits (not inverted). */
static inline __u16 locabus_csum_fold(__u64 acc) {
  acc = (acc & 0xffffffffULL) + (acc >> 32);
  acc = (acc & 0xffffffffULL) + (acc >> 32);
  acc = (acc & 0xffffULL) + (acc >> 16);
  acc = (acc & 0xffffULL) + (acc >> 16);
  acc = (acc & 0xffffULL) + (acc >> 16);
  return (__u16)acc;
}

/* Sums len bytes at buf into acc, in memory byte order. For ordinary
 * memory (user space, BPF stack); the XDP program sums packet memory with
 * bpf_csum_diff() instead. An odd final byte is padded with a zero byte. */
static inline __u64 locabus_csum_partial(const void* buf, __u32 len, __u64 acc) {
  const __u8* p = (const __u8*)buf;
  __u32 i;

  for (i = 0; i + 1 < len; i += 2) {
    __u16 word;
    __builtin_memcpy(&word, p + i, sizeof(word));
    acc += word;
  }
  if (len & 1) {
    __u8 pad[2] = {p[len - 1], 0};
    __u16 word;
    __builtin_memcpy(&word, pad, sizeof(word));
    acc += word;
  }
  return acc;
}

/* Final step when computing: the inverted fold, ready to store in csum. */
static inline __u16 locabus_csum_finish(__u64 acc) { return (__u16)~locabus_csum_fold(acc); }

/* Checksum of a packet held in ordinary memory: hdr points at the Locabus
 * header, len is the header's len. The csum field is skipped (taken as
 * zero), so hdr->csum need not be cleared first. Returns the value to store
 * in hdr->csum. */
static inline __u16 locabus_csum_compute(const struct locabus_hdr* hdr, __u32 len) {
  const __u8* p = (const __u8*)hdr;
  __u64 acc = 0;

  acc = locabus_csum_partial(p, LOCABUS_OFFSETOF(struct locabus_hdr, csum), acc);
  if (len > LOCABUS_HDR_LEN) acc = locabus_csum_partial(p + LOCABUS_HDR_LEN, len - LOCABUS_HDR_LEN, acc);
  return locabus_csum_finish(acc);
}

/* Verification: nonzero iff the len bytes at hdr, stored csum included,
 * sum to 0xFFFF. */
static inline int locabus_csum_ok(const struct locabus_hdr* hdr, __u32 len) {
  return locabus_csum_fold(locabus_csum_partial(hdr, len, 0)) == 0xFFFF;
}

/* ---------------------------------------------------------------------
 * Control payloads: the data of LOCABUS_P_CONTROL packets (handshake,
 * membership). All start with the same 16-byte "hello"; receivers accept
 * longer payloads (later versions may append fields) and drop shorter
 * ones or another version. docs/PROTOCOL.md describes each exchange.
 * ------------------------------------------------------------------- */
#define LOCABUS_CTRL_VERSION 1

/* DISCOVER, HEARTBEAT, PROBE, PROBE_REPLY, FIN, FIN_ACK. */
struct locabus_hello {
  __u8 version; /* LOCABUS_CTRL_VERSION */
  __u8 flags;   /* LOCABUS_HELLO_F_* */
  __be16 known; /* members the sender knows (alive or suspect) */
  __be32 reserved;
  __be64 epoch; /* sender's boot epoch: ns since 1970 at start */
};
#define LOCABUS_HELLO_F_LEAVING 0x01 /* HEARTBEAT: clean shutdown */
#define LOCABUS_HELLO_F_RESET 0x02   /* FIN: "I have no such connection" */

/* SYN, SYN_ACK: the hello, then the incarnation the sender means to reach
 * (0 = whichever is running), so a SYN meant for a node's previous life is
 * not accepted by its new one. */
struct locabus_syn {
  struct locabus_hello hello;
  __be64 peer_epoch;
};

/* DISCOVER_REPLY: the hello, then one page of the sender's member list. */
struct locabus_reply {
  struct locabus_hello hello;
  __be16 offset; /* index of the first entry in the whole list */
  __be16 count;  /* entries in this frame */
  __be32 reserved;
};
struct locabus_member_entry {
  __be16 node;
  __u8 mac[LOCABUS_ETH_ALEN];
  __be64 epoch;
};
#define LOCABUS_REPLY_MAX_ENTRIES \
  ((LOCABUS_MAX_PAYLOAD - sizeof(struct locabus_reply)) / sizeof(struct locabus_member_entry))

LOCABUS_STATIC_ASSERT(sizeof(struct locabus_hello) == 16, "hello is 16 bytes");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_hello, epoch) == 8, "epoch at 8");
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_syn) == 24, "syn is 24 bytes");
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_reply) == 24, "reply header is 24 bytes");
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_member_entry) == 16, "member entry is 16 bytes");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_member_entry, epoch) == 8, "entry epoch at 8");

/* ---------------------------------------------------------------------
 * Reliable broadcast (docs/PROTOCOL.md, "Reliable broadcast").
 *
 * Every node owns one broadcast stream, numbered with seq_num in its own
 * 16-bit sequence space. The frames of a stream:
 *
 *  DATA  node_to 0xFFFF, seq_num = stream sequence, ack_num = the oldest
 *        sequence the sender still holds ("low"; a receiver behind it can
 *        no longer be repaired and skips ahead), window = the low 16 bits
 *        of the sender's boot epoch (an incarnation tag).
 *  POLL  node_to 0xFFFF, seq_num = the stream's next sequence (everything
 *        before it has been sent), ack_num = low, window = incarnation tag;
 *        data: a locabus_poll naming the members that must acknowledge.
 *  ACK   node_to = the stream's sender, ack_num = the receiver's next
 *        expected sequence (cumulative), window = its free receive slots;
 *        data: a locabus_bcast_ctl (first = count = 0).
 *  NAK   node_to 0xFFFF (every node hears it, so others hold theirs back),
 *        ack_num = the receiver's next expected sequence (cumulative),
 *        window = free receive slots; data: a locabus_bcast_ctl naming the
 *        stream and the missing range [first, first + count).
 *
 * Unicast ACK frames never carry data (len == 16); an ACK with data is
 * always about a broadcast stream, and so is a NAK to 0xFFFF. A unicast
 * NAK (to one node) carries a locabus_nak_ranges (below).
 * ------------------------------------------------------------------- */
#define LOCABUS_POLL_MAX_ACKERS 4

struct locabus_poll {
  __u8 version; /* LOCABUS_CTRL_VERSION */
  __u8 nackers; /* entries used in ackers[], 0 .. LOCABUS_POLL_MAX_ACKERS */
  __be16 reserved0;
  __be32 reserved1;
  __be64 epoch;                           /* the sender's boot epoch: the stream's incarnation */
  __be16 ackers[LOCABUS_POLL_MAX_ACKERS]; /* members asked to ACK now */
};

struct locabus_bcast_ctl {
  __u8 version;  /* LOCABUS_CTRL_VERSION */
  __u8 flags;    /* zero */
  __be16 stream; /* the node whose broadcast stream this is about */
  __be16 first;  /* NAK: first missing sequence; ACK: 0 */
  __be16 count;  /* NAK: missing sequences from first (>= 1); ACK: 0 */
  __be64 epoch;  /* the stream's incarnation (its sender's boot epoch) */
};

LOCABUS_STATIC_ASSERT(sizeof(struct locabus_poll) == 24, "poll is 24 bytes");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_poll, epoch) == 8, "poll epoch at 8");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_poll, ackers) == 16, "poll ackers at 16");
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_bcast_ctl) == 16, "broadcast ack/nak is 16 bytes");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_bcast_ctl, stream) == 2, "stream at 2");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_bcast_ctl, first) == 4, "first at 4");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_bcast_ctl, count) == 6, "count at 6");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_bcast_ctl, epoch) == 8, "ctl epoch at 8");

/* ---------------------------------------------------------------------
 * Reliable unicast: selective repeat (docs/PROTOCOL.md, "Selective
 * repeat").
 *
 *  DATA  window = the sender's receive credit for the reverse direction
 *        (<= 32767), with LOCABUS_WINDOW_ACK_REQ or'ed in when the sender
 *        asks for an acknowledgment at once (a retransmission, a probe, the
 *        last frame before it must wait for ACKs).
 *  NAK   to one node: ack_num = the receiver's next expected sequence
 *        (cumulative, as in an ACK), window = its credit; data: a
 *        locabus_nak_ranges naming the sequences it is missing between
 *        ack_num and `high`. Everything else in [ack_num, high) is held by
 *        the receiver and need not be sent again.
 * ------------------------------------------------------------------- */
#define LOCABUS_WINDOW_ACK_REQ 0x8000 /* DATA only: acknowledge at once */
#define LOCABUS_WINDOW_MASK 0x7FFF    /* the credit itself */
#define LOCABUS_NAK_MAX_RANGES 256

struct locabus_seq_range {
  __be16 first; /* first missing sequence */
  __be16 count; /* missing sequences from first, >= 1 */
};

struct locabus_nak_ranges {
  __u8 version; /* LOCABUS_CTRL_VERSION */
  __u8 flags;   /* zero */
  __be16 count; /* ranges that follow, 1 .. LOCABUS_NAK_MAX_RANGES */
  __be16 high;  /* one past the highest sequence the receiver holds */
  __be16 reserved;
  /* then `count` struct locabus_seq_range, ascending, inside [ack_num, high) */
};

LOCABUS_STATIC_ASSERT(sizeof(struct locabus_seq_range) == 4, "a NAK range is 4 bytes");
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_nak_ranges) == 8, "the NAK ranges header is 8 bytes");
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_nak_ranges) +
                              LOCABUS_NAK_MAX_RANGES * sizeof(struct locabus_seq_range) <=
                          LOCABUS_MAX_PAYLOAD,
                      "a full NAK fits one frame");

/* Largest Locasock datagram: 64 KB, in at most 45 fragments of
 * LOCASOCK_FRAG_PAYLOAD bytes. */
#define LOCASOCK_MAX_DATAGRAM 65536
#define LOCASOCK_MAX_FRAGS ((LOCASOCK_MAX_DATAGRAM + LOCASOCK_FRAG_PAYLOAD - 1) / LOCASOCK_FRAG_PAYLOAD)
LOCABUS_STATIC_ASSERT(LOCASOCK_MAX_FRAGS == 45 && LOCASOCK_MAX_FRAGS <= 255, "64 KB in 45 fragments");

/* ---------------------------------------------------------------------
 * KCCM (docs/KCCM.md, docs/PROTOCOL.md "KCCM"). A KCCM message travels as
 * one Locasock-framed datagram of protocol LOCABUS_P_KCCM (the Locasock
 * header, fragmentation and reassembly of LOCABUS_P_LOCASOCK, with
 * sport = dport = the KCCM space), whose data starts with this header.
 *
 *  0       1       2       3       4               8              12
 *  +-------+-------+-------+-------+---------------+---------------+
 *  | type  | flags |status |namelen|      tag      |   instance    |
 *  +-------+-------+-------+-------+---------------+---------------+
 *  |  deadline_ms  |            caller             |    call_id ...
 *  +---------------+-------------------------------+----------------
 *  12             16                              24              32
 *
 * DATA:  tag; the body is the message.
 * CALL:  name_len bytes of handler name, then the argument; flags
 *        KCCM_F_ONEWAY (no result wanted), KCCM_F_BCAST (sent to every node);
 *        instance, caller and call_id name the call for its REPLY;
 *        deadline_ms: time left to the caller's deadline when sent (>= 1).
 * REPLY: status (enum locabus_kccm_status in locabus.h); instance, caller,
 *        call_id copied from the CALL; the body is the result (status 0)
 *        or a UTF-8 sentence saying what failed.
 * ------------------------------------------------------------------- */
#define KCCM_T_DATA 1
#define KCCM_T_CALL 2
#define KCCM_T_REPLY 3

#define KCCM_F_ONEWAY (1U << 0)
#define KCCM_F_BCAST (1U << 1)

struct kccm_hdr {
  __u8 type;          /* KCCM_T_* */
  __u8 flags;         /* KCCM_F_* (CALL) */
  __u8 status;        /* REPLY: enum locabus_kccm_status */
  __u8 name_len;      /* CALL: handler name bytes after the header, 1..KCCM_MAX_NAME */
  __be32 tag;         /* DATA: the message's tag */
  __be32 instance;    /* CALL, REPLY: the calling daemon's random instance number */
  __be32 deadline_ms; /* CALL: milliseconds left to the caller's deadline */
  __be64 caller;      /* CALL, REPLY: the calling client, as its daemon numbers clients */
  __be64 call_id;     /* CALL, REPLY: the caller's number for the call */
};

#define KCCM_HDR_LEN 32
#define KCCM_MAX_NAME 63
/* Largest message, argument or result: a datagram holds the header, the
 * longest name and this many bytes. */
#define KCCM_MAX_DATA (LOCASOCK_MAX_DATAGRAM - KCCM_HDR_LEN - 64)

LOCABUS_STATIC_ASSERT(sizeof(struct kccm_hdr) == KCCM_HDR_LEN, "the KCCM header is 32 bytes");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct kccm_hdr, tag) == 4, "tag at 4");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct kccm_hdr, instance) == 8, "instance at 8");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct kccm_hdr, deadline_ms) == 12, "deadline_ms at 12");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct kccm_hdr, caller) == 16, "caller at 16");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct kccm_hdr, call_id) == 24, "call_id at 24");
LOCABUS_STATIC_ASSERT(KCCM_HDR_LEN + 64 + KCCM_MAX_DATA == LOCASOCK_MAX_DATAGRAM,
                      "a KCCM message fits a datagram");

#endif /* LOCABUS_WIRE_H */
