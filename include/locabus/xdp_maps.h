/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Key and value layouts of the XDP fast path's BPF maps, shared by
 * bpf/locabus_xdp.bpf.c and the C++ loader. Same rules as wire.h: fixed
 * width fields, explicit padding, compile-time size checks from C and C++.
 *
 * Maps (all pinned under <bpffs>/locabus/<iface>/, see docs/FASTPATH.md):
 *   config  (.bss)  ARRAY[1]            u32 -> { struct locabus_config locabus_cfg }
 *   stats   (locabus_stats)  PERCPU_ARRAY[1]    u32 -> struct locabus_xdp_stats
 *   proto   (locabus_proto)  PERCPU_ARRAY[256]  u32 proto -> struct locabus_proto_stats
 *   peers   (locabus_peers)  HASH               struct locabus_peer_key -> struct locabus_peer
 *   xsks    (locabus_xsks)   XSKMAP             u32 slot key -> AF_XDP socket fd
 *   acks    (locabus_acks)   RINGBUF            struct locabus_ack_record, one per consumed ACK
 *   naks    (locabus_naks)   LRU_HASH           struct locabus_nak_key -> struct locabus_nak_entry
 *   conns   (locabus_conns)  ARRAY[65536], mmap u32 node -> struct locabus_conn_pub (ack_rule.h)
 * (pin name, then the map's name in the BPF object)
 */
#ifndef LOCABUS_XDP_MAPS_H
#define LOCABUS_XDP_MAPS_H

#include <linux/bpf.h>
#include <linux/types.h>

#include "ack_rule.h"
#include "wire.h"

/* ------------------------------------------------------------------ */
/* locabus_config: one entry, written by the loader before attaching.  */

/* Do not consume pure ACKs in the kernel; deliver them like data. */
#define LOCABUS_CFG_F_ACK_TO_USER (1U << 0)
/* Frames no socket claims go to the kernel stack (XDP_PASS) instead of
 * being dropped, e.g. for an AF_PACKET reader beside the XDP filter. */
#define LOCABUS_CFG_F_PASS_UNCLAIMED (1U << 1)
#define LOCABUS_CFG_F_ALL (LOCABUS_CFG_F_ACK_TO_USER | LOCABUS_CFG_F_PASS_UNCLAIMED)

struct locabus_config {
  __u16 node_id;        /* our node id (host byte order) */
  __u16 reserved0;      /* zero */
  __u32 flags;          /* LOCABUS_CFG_F_* */
  __u32 owner_pid;      /* process that owns the attachment, 0 = none */
  __u32 nak_dedup_us;   /* broadcast NAK suppression interval in microseconds, 0 = off */
  __u64 owner_start;    /* owner's start time (/proc/PID/stat field 22) */
  __u64 attached_at_ns; /* CLOCK_REALTIME of the attach, for operators */
};
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_config) == 32, "locabus_config layout");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_config, nak_dedup_us) == 12 &&
                          LOCABUS_OFFSETOF(struct locabus_config, owner_start) == 16,
                      "locabus_config field offsets");

/* The loader's default for nak_dedup_us (Options::nak_dedup_us). */
#define LOCABUS_NAK_DEDUP_US_DEFAULT 2000

/* ------------------------------------------------------------------ */
/* locabus_stats: per-CPU counters, one named field per event/reason.  */

/* X(name, description). Order is the counter index; append only. */
#define LOCABUS_XDP_COUNTERS(X)                                                                          \
  X(rx_locabus, "Locabus frames seen (EtherType 0x88B5), any verdict")                                   \
  X(pass_other, "other EtherTypes passed to the kernel stack untouched")                                 \
  X(redirected, "frames redirected to an AF_XDP socket")                                                 \
  X(passed_unclaimed, "unclaimed frames passed to the stack (PASS_UNCLAIMED set)")                       \
  X(ack_consumed, "pure ACKs from tracked peers consumed: they advanced inside the published range")     \
  X(ack_pass_behind, "tracked peers' pure ACKs passed: at or behind the known ACK (dup, window update)") \
  X(nak_recorded, "unicast NAKs from tracked peers recorded in locabus_peers (and passed on)")           \
  X(ack_untracked, "pure ACKs from peers user space does not track, delivered")                          \
  X(drop_short, "dropped: frame shorter than Ethernet + Locabus header")                                 \
  X(drop_len_small, "dropped: len field smaller than the Locabus header")                                \
  X(drop_len_max, "dropped: len field larger than the 1500-byte maximum")                                \
  X(drop_len_frame, "dropped: len field larger than the frame")                                          \
  X(drop_csum, "dropped: checksum mismatch")                                                             \
  X(drop_type, "dropped: unknown packet type")                                                           \
  X(drop_src, "dropped: node_from is the broadcast id")                                                  \
  X(drop_not_ours, "dropped: node_to neither our node id nor broadcast")                                 \
  X(drop_own, "dropped: our own frame looped back (or a node id clash)")                                 \
  X(drop_no_socket, "dropped: no AF_XDP socket registered for the frame")                                \
  X(ack_ring_out, "consumed ACKs that changed ack/window, announced on the acks ring")                   \
  X(ack_ring_full, "tracked peers' pure ACKs delivered: the acks ring was full")                         \
  X(nak_dup_dropped, "broadcast NAKs to us for a range already NAKed within nak_dedup_us, dropped")      \
  X(nak_bcast_passed, "broadcast NAKs to us passed to user space (and recorded in locabus_naks)")        \
  X(ack_pass_all, "tracked peers' pure ACKs passed: user space asked for all (probe or timeout)")        \
  X(ack_pass_range, "tracked peers' pure ACKs passed: outside the published unacknowledged range")       \
  X(ack_pass_unpublished, "tracked peers' pure ACKs passed: no connection state published")

#define LOCABUS_X_ENUM(name, desc) LOCABUS_CTR_##name,
enum locabus_counter_id { LOCABUS_XDP_COUNTERS(LOCABUS_X_ENUM) LOCABUS_CTR__COUNT };
#undef LOCABUS_X_ENUM

#define LOCABUS_X_FIELD(name, desc) __u64 name;
struct locabus_xdp_stats {
  LOCABUS_XDP_COUNTERS(LOCABUS_X_FIELD)
};
#undef LOCABUS_X_FIELD
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_xdp_stats) == LOCABUS_CTR__COUNT * sizeof(__u64),
                      "locabus_xdp_stats is an array of u64 counters");

/* ------------------------------------------------------------------ */
/* locabus_proto: per-CPU, per protocol id, where its frames went.     */
#define LOCABUS_PROTO_IDS 256
struct locabus_proto_stats {
  __u64 to_proto_socket;   /* redirected to the protocol's own socket */
  __u64 to_default_socket; /* redirected to the default socket */
  __u64 no_socket;         /* dropped (or passed): no socket registered */
  __u64 bytes;             /* frame bytes of all of the above */
};
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_proto_stats) == 32, "locabus_proto_stats layout");

/* ------------------------------------------------------------------ */
/* locabus_peers: what the kernel learnt from ACK/NAK frames, for each peer
 * user space tracks. User space creates an entry when a connection is
 * established and deletes it when the connection ends or is reset; the XDP
 * program only updates existing entries. */
#define LOCABUS_MAX_PEERS_DEFAULT 4096

/* ack_num/ack_window hold a received pure ACK. */
#define LOCABUS_PEER_F_ACK_VALID (1U << 0)
/* nak_ack/nak_seq hold a received NAK. */
#define LOCABUS_PEER_F_NAK_VALID (1U << 1)

struct locabus_peer_key {
  __u32 node_id; /* peer's node id (host byte order, < 0xFFFF) */
};
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_peer_key) == 4, "locabus_peer_key layout");

struct locabus_peer {
  struct bpf_spin_lock lock; /* taken by XDP; read with BPF_F_LOCK */
  __u32 flags;               /* LOCABUS_PEER_F_* */
  __u64 last_heard_ns;       /* CLOCK_MONOTONIC of the last ACK or NAK */
  __u64 acks;                /* pure ACKs consumed */
  __u64 passed_acks;         /* pure ACKs passed to user space (ack_rule.h) */
  __u64 naks;                /* NAKs seen */
  __u64 last_nak_ns;         /* CLOCK_MONOTONIC of the last NAK */
  __u16 ack_num;             /* the newest consumed cumulative ACK */
  __u16 ack_window;          /* window advertised with that ACK */
  __u16 nak_ack;             /* last NAK's ack_num: first missing seq */
  __u16 nak_seq;             /* last NAK's seq_num */
};
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_peer) == 56, "locabus_peer layout");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_peer, last_heard_ns) == 8,
                      "locabus_peer: no hidden padding after the lock");

/* ------------------------------------------------------------------ */
/* locabus_acks: a BPF ring buffer. For every pure ACK it consumes (by
 * ack_rule.h only ACKs that advance inside the published range, so every
 * consumed ACK is news) the program writes one record here, so that a
 * sender sleeping in poll()/epoll on the ring's fd wakes up. The kernel
 * wakes the consumer only when it had caught up (adaptive notification): at
 * most one wakeup per drain. When the ring is full the ACK is not consumed
 * but delivered to the AF_XDP socket like any frame (counter ack_ring_full). */
#define LOCABUS_ACK_RING_BYTES (256 * 1024) /* a power of two, a multiple of the page size */

struct locabus_ack_record {
  __u16 node_id;  /* the peer that sent the ACK (host byte order) */
  __u16 ack_num;  /* its cumulative ACK (host byte order) */
  __u16 window;   /* the window it advertised with it */
  __u16 reserved; /* zero */
};
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_ack_record) == 8, "locabus_ack_record layout");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_ack_record, node_id) == 0 &&
                          LOCABUS_OFFSETOF(struct locabus_ack_record, ack_num) == 2 &&
                          LOCABUS_OFFSETOF(struct locabus_ack_record, window) == 4,
                      "locabus_ack_record field offsets");

/* ------------------------------------------------------------------ */
/* locabus_conns: what user space publishes about each connection for the
 * ACK rule (ack_rule.h): an ARRAY indexed by node id, created with
 * BPF_F_MMAPABLE so the engine updates an entry with one 64-bit store, no
 * system call. The program reads an entry with one 64-bit load. */
#define LOCABUS_CONN_ENTRIES 65536

LOCABUS_STATIC_ASSERT(sizeof(struct locabus_conn_pub) == 8, "locabus_conn_pub is one 64-bit word");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_conn_pub, una) == 0 &&
                          LOCABUS_OFFSETOF(struct locabus_conn_pub, max) == 2 &&
                          LOCABUS_OFFSETOF(struct locabus_conn_pub, flags) == 4 &&
                          LOCABUS_OFFSETOF(struct locabus_conn_pub, gen) == 6,
                      "locabus_conn_pub field offsets");

/* ------------------------------------------------------------------ */
/* locabus_naks: duplicate-NAK suppression for our broadcast stream.
 *
 * Every receiver of a broadcast stream hears every other receiver's NAKs
 * (they go to 0xFFFF), so a loss seen by many receivers can bring the
 * stream's sender the same NAK many times. For a well-formed broadcast NAK
 * to us (ctl.stream == locabus_cfg.node_id) while nak_dedup_us != 0, the
 * program looks up the range [first, first + count) of the last such NAK
 * with the same `first` that was passed to user space:
 *
 *   dropped (nak_dup_dropped)  iff an entry for `first` exists, its epoch
 *       equals the NAK's, now - passed_ns < nak_dedup_us, and the NAK's
 *       count <= the entry's count (the range is the same or a prefix);
 *   passed otherwise; if it then reaches user space (redirected, or passed
 *       to the stack), the entry for `first` becomes {now, count, epoch}
 *       (nak_bcast_passed).
 *
 * Only passed NAKs refresh passed_ns, so duplicates cannot extend the
 * suppression: a NAK is let through again nak_dedup_us after the last one
 * that was passed. The match is exact on `first`: a NAK whose range lies
 * inside an earlier-starting range that was passed ([5, 8) after [3, 10))
 * is passed. The table is an LRU: an evicted entry only means a NAK passes. */
#define LOCABUS_NAK_DEDUP_ENTRIES 4096

struct locabus_nak_key {
  __u16 first;    /* first missing sequence (host byte order) */
  __u16 reserved; /* zero */
};
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_nak_key) == 4, "locabus_nak_key layout");

struct locabus_nak_entry {
  __u64 passed_ns; /* CLOCK_MONOTONIC when it was passed to user space */
  __u16 count;     /* its count: the range was [first, first + count) */
  __u16 reserved0; /* zero */
  __u32 reserved1; /* zero */
  __u64 epoch;     /* the stream incarnation it named (host byte order) */
};
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_nak_entry) == 24, "locabus_nak_entry layout");
LOCABUS_STATIC_ASSERT(LOCABUS_OFFSETOF(struct locabus_nak_entry, count) == 8 &&
                          LOCABUS_OFFSETOF(struct locabus_nak_entry, epoch) == 16,
                      "locabus_nak_entry field offsets");

/* ------------------------------------------------------------------ */
/* locabus_xsks: AF_XDP sockets, by RX queue and protocol.             */

/* Protocol ids 0 .. LOCABUS_XSK_PROTO_SLOTS-1 may have a socket of their
 * own; slot LOCABUS_XSK_DEFAULT_SLOT is the default socket of a queue. */
#define LOCABUS_XSK_PROTO_SLOTS 16
#define LOCABUS_XSK_DEFAULT_SLOT LOCABUS_XSK_PROTO_SLOTS
#define LOCABUS_XSK_SLOTS_PER_QUEUE (LOCABUS_XSK_PROTO_SLOTS + 1)
#define LOCABUS_MAX_QUEUES 64
#define LOCABUS_XSK_MAP_SIZE (LOCABUS_MAX_QUEUES * LOCABUS_XSK_SLOTS_PER_QUEUE)

/* XSKMAP key of the socket for (RX queue, slot). */
static inline __u32 locabus_xsk_key(__u32 queue, __u32 slot) {
  return queue * LOCABUS_XSK_SLOTS_PER_QUEUE + slot;
}

LOCABUS_STATIC_ASSERT(LOCABUS_P_MAX < LOCABUS_XSK_PROTO_SLOTS,
                      "every defined protocol can have a socket of its own");

/* ---------------------------------------------------------------------
 * The chaos program (bpf/locabus_chaos.bpf.c): fault injection on a veth,
 * since these kernels have no netem. One entry each, index 0.
 * ------------------------------------------------------------------- */
#define LOCABUS_CHAOS_PPM 1000000 /* probabilities are parts per million */

struct locabus_chaos_config {
  __u32 enabled;     /* 0: every frame passes untouched */
  __u32 drop_ppm;    /* Locabus frames dropped, per million */
  __u32 corrupt_ppm; /* of the rest, frames with one bit flipped after the Ethernet header */
  __u32 type_mask;   /* bit t set: only packet type t is affected; 0: all types */
  __u64 seed;        /* changing it restarts every CPU's random sequence */
};

struct locabus_chaos_state { /* per CPU */
  __u64 rng;                 /* xorshift64* state */
  __u64 seed;                /* the seed rng was derived from */
};

struct locabus_chaos_stats { /* per CPU */
  __u64 seen;                /* Locabus frames looked at */
  __u64 dropped;
  __u64 corrupted;
  __u64 passed; /* corrupted ones included */
};

LOCABUS_STATIC_ASSERT(sizeof(struct locabus_chaos_config) == 24, "chaos config is 24 bytes");
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_chaos_state) == 16, "chaos state is 16 bytes");
LOCABUS_STATIC_ASSERT(sizeof(struct locabus_chaos_stats) == 32, "chaos stats are 32 bytes");

#endif /* LOCABUS_XDP_MAPS_H */
