/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The fast path's ACK rule: may the kernel consume a pure ACK from a tracked
 * peer, or must it pass the frame to user space?
 *
 * This one function is compiled into the XDP program (bpf/locabus_xdp.bpf.c)
 * and into the simulator's model of the fast path (userspace/sim), and the
 * same test vectors run through both (tests/support/ack_rule_vectors.hpp).
 * Nothing else decides what the kernel consumes.
 *
 * The rule. User space publishes, per peer, the unacknowledged range of its
 * connection [una, max] (una = the oldest sequence not yet acknowledged as
 * the engine knows it, from every ACK it has seen, piggy-backed ones
 * included; max = one past the newest sequence it may have sent) and
 * whether it needs to see every ACK (a window probe or a retransmission
 * timeout is outstanding). The kernel keeps its own record of the newest ACK
 * it consumed. A pure ACK is consumed only when it moves the acknowledgment
 * forward inside the published range:
 *
 *   known = the kernel's recorded ACK if it lies in [una, max], else una
 *   consume  iff  published, not pass-all, known < ack <= max (serial order)
 *
 * and the kernel then records it and announces it on the acks ring (or, if
 * the ring is full, delivers the frame after all). Everything else reaches
 * user space: duplicates, window updates (same ACK, new window), answers to
 * probes, ACKs of an earlier connection or beyond what was sent. A consumed
 * ACK therefore always carries news and always reaches the engine; a passed
 * one costs an AF_XDP frame but can never be lost. A kernel record left
 * behind by a long exchange of piggy-backed ACKs (which the kernel never
 * sees) lies outside [una, max] and is ignored instead of making fresh
 * ACKs look old.
 */
#ifndef LOCABUS_ACK_RULE_H
#define LOCABUS_ACK_RULE_H

#include <linux/types.h>

#ifdef __bpf__
#define LOCABUS_ACK_RULE_INLINE static __attribute__((always_inline)) inline
#else
#define LOCABUS_ACK_RULE_INLINE static inline
#endif

/* ------------------------------------------------------------------ */
/* What user space publishes for one peer (the locabus_conns map: one
 * 8-byte entry per node id, memory-mapped, written with one 64-bit store so
 * the kernel always reads a consistent snapshot). */

/* The entry describes an established connection; without it every pure ACK
 * from the peer is passed. */
#define LOCABUS_CONN_F_PUBLISHED (1U << 0)
/* User space must see every ACK now (window probe, retransmission timeout). */
#define LOCABUS_CONN_F_PASS_ALL (1U << 1)

struct locabus_conn_pub {
  __u16 una;   /* oldest unacknowledged sequence (host byte order) */
  __u16 max;   /* one past the newest sequence that may be in flight */
  __u16 flags; /* LOCABUS_CONN_F_* */
  __u16 gen;   /* bumped by user space on every change (for observers) */
};

/* ------------------------------------------------------------------ */
/* The decision. */

enum locabus_ack_verdict {
  LOCABUS_ACK_CONSUME = 0,          /* advances inside [una, max]: record and announce */
  LOCABUS_ACK_PASS_UNPUBLISHED = 1, /* no published connection state */
  LOCABUS_ACK_PASS_ALL = 2,         /* user space asked for every ACK (probe, timeout) */
  LOCABUS_ACK_PASS_BEHIND = 3,      /* at or behind what is known: duplicate, window update */
  LOCABUS_ACK_PASS_RANGE = 4,       /* beyond max: an ACK for what was never sent */
};

/* a - b in serial arithmetic, as a signed distance. */
LOCABUS_ACK_RULE_INLINE __s16 locabus_seq_dist(__u16 a, __u16 b) { return (__s16)(__u16)(a - b); }

/* pub: the published entry (a snapshot). rec_valid/rec_ack: the kernel's
 * record of the newest ACK it consumed on this connection. ack: the frame's
 * ack_num (host order). */
LOCABUS_ACK_RULE_INLINE enum locabus_ack_verdict locabus_ack_decide(const struct locabus_conn_pub* pub,
                                                                    __u32 rec_valid, __u16 rec_ack,
                                                                    __u16 ack) {
  __u16 known = pub->una;

  if (!(pub->flags & LOCABUS_CONN_F_PUBLISHED)) return LOCABUS_ACK_PASS_UNPUBLISHED;
  if (pub->flags & LOCABUS_CONN_F_PASS_ALL) return LOCABUS_ACK_PASS_ALL;
  /* The record counts only while it lies in [una, max]. */
  if (rec_valid && locabus_seq_dist(rec_ack, pub->una) >= 0 && locabus_seq_dist(pub->max, rec_ack) >= 0)
    known = rec_ack;
  if (locabus_seq_dist(ack, pub->max) > 0) return LOCABUS_ACK_PASS_RANGE;
  if (locabus_seq_dist(ack, known) <= 0) {
    /* Behind una (by serial order) is out of range too: an earlier
     * connection's, or a reordered old one. */
    return locabus_seq_dist(ack, pub->una) < 0 ? LOCABUS_ACK_PASS_RANGE : LOCABUS_ACK_PASS_BEHIND;
  }
  return LOCABUS_ACK_CONSUME;
}

#endif /* LOCABUS_ACK_RULE_H */
