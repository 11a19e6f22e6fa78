// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Locabus XDP fast path (docs/FASTPATH.md).
 *
 * For every frame on the cluster NIC:
 *   - other EtherTypes: XDP_PASS untouched (ARP/IPv4/IPv6 keep working);
 *   - Locabus frames are validated (lengths, checksum, type, node ids) and
 *     the bad ones dropped and counted by reason;
 *   - pure ACKs from peers that user space tracks (established
 *     connections) are consumed here when the ACK rule (locabus/ack_rule.h,
 *     shared with the simulator) allows it: only ACKs that advance inside
 *     the range user space published in locabus_conns. A consumed ACK is
 *     recorded in locabus_peers and announced on the locabus_acks ring
 *     buffer (a small record, at most one wakeup per drain); when that ring
 *     is full it is delivered to the socket instead. Every other ACK is
 *     passed to user space. NAKs from tracked peers are recorded and passed;
 *   - broadcast NAKs for our own broadcast stream that repeat a range
 *     passed to user space within nak_dedup_us are dropped (locabus_naks);
 *   - everything else is redirected into the AF_XDP socket registered for
 *     (RX queue, protocol), else the queue's default socket, else dropped.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <xdp/xdp_helpers.h>

#include <locabus/ack_rule.h>
#include <locabus/wire.h>
#include <locabus/xdp_maps.h>

/* Configuration: set before load through the skeleton, updated at run time
 * through the pinned "config" map (the object's .bss section). */
struct locabus_config locabus_cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct locabus_xdp_stats);
} locabus_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOCABUS_PROTO_IDS);
	__type(key, __u32);
	__type(value, struct locabus_proto_stats);
} locabus_proto SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LOCABUS_MAX_PEERS_DEFAULT);
	__type(key, struct locabus_peer_key);
	__type(value, struct locabus_peer);
} locabus_peers SEC(".maps");

/* One struct locabus_ack_record per consumed ACK that changed a peer's
 * record: what wakes a sender sleeping on the ring's fd. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, LOCABUS_ACK_RING_BYTES);
} locabus_acks SEC(".maps");

/* The last broadcast NAK to us passed to user space, per first sequence:
 * duplicate-NAK suppression (xdp_maps.h describes the rule). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LOCABUS_NAK_DEDUP_ENTRIES);
	__type(key, struct locabus_nak_key);
	__type(value, struct locabus_nak_entry);
} locabus_naks SEC(".maps");

/* What user space publishes per connection for the ACK rule, by node id;
 * memory-mapped by the engine (xdp_maps.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LOCABUS_CONN_ENTRIES);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct locabus_conn_pub);
} locabus_conns SEC(".maps");

/* XSKMAP keys/values have no BTF type (the kernel rejects one). */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, LOCABUS_XSK_MAP_SIZE);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} locabus_xsks SEC(".maps");

/* libxdp dispatcher: run early; on XDP_PASS continue with the next program. */
struct {
	__uint(priority, 10);
	__uint(XDP_PASS, 1);
} XDP_RUN_CONFIG(locabus_xdp);

static __always_inline void count(struct locabus_xdp_stats *st, enum locabus_counter_id id)
{
	/* The stats struct is an array of u64 counters (static assert). */
	if (st && id < LOCABUS_CTR__COUNT)
		((__u64 *)st)[id]++;
}

static __always_inline int drop(struct locabus_xdp_stats *st, enum locabus_counter_id id)
{
	count(st, id);
	return XDP_DROP;
}

/* Adds n bytes (a constant multiple of 4, at most 512: bpf_csum_diff's
 * scratch limit) at data + *off to *acc, when *rem >= n. Returns 0, or -1
 * when the packet is too short (cannot happen after the length checks, but
 * the verifier needs the comparison) or the helper fails. */
#define CSUM_CHUNK(n)                                                                              \
	do {                                                                                       \
		if (rem >= (n)) {                                                                  \
			void *p = data + off;                                                      \
			long r;                                                                    \
			if (p + (n) > end)                                                         \
				return -1;                                                         \
			r = bpf_csum_diff(NULL, 0, (__be32 *)p, (n), 0);                           \
			if (r < 0)                                                                 \
				return -1;                                                         \
			acc += (__u32)r;                                                           \
			off += (n);                                                                \
			rem -= (n);                                                                \
		}                                                                                  \
	} while (0)

/* Verifies the RFC 1071 checksum over the len bytes of Locabus header and
 * data (stored csum included): 1 if intact, 0 if not, -1 on a bounds
 * failure. len is at most LOCABUS_MAX_LEN (checked by the caller), so two
 * 512-byte chunks and a descending tail of constant sizes cover it with
 * constant-size helper calls that the verifier can bound. */
static __always_inline int csum_verify(struct xdp_md *ctx, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 off = LOCABUS_ETH_HLEN;
	__u32 rem = len & 0x7ff;
	__u64 acc = 0;

	if (len > LOCABUS_MAX_LEN)
		return -1;

	CSUM_CHUNK(512);
	CSUM_CHUNK(512);
	CSUM_CHUNK(256);
	CSUM_CHUNK(128);
	CSUM_CHUNK(64);
	CSUM_CHUNK(32);
	CSUM_CHUNK(16);
	CSUM_CHUNK(8);
	CSUM_CHUNK(4);
	if (rem >= 2) {
		__u16 *w = data + off;
		if ((void *)(w + 1) > end)
			return -1;
		acc += *w;
		off += 2;
		rem -= 2;
	}
	if (rem) {
		__u8 *b = data + off;
		if ((void *)(b + 1) > end)
			return -1;
			/* The odd byte is the first byte of a word padded with zero. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		acc += *b;
#else
		acc += (__u16)*b << 8;
#endif
	}
	return locabus_csum_fold(acc) == 0xFFFF;
}

/* The kernel's record of a peer, present only while user space tracks it
 * (an established connection). The program never creates entries: peers it
 * does not know about cannot fill the table, and ACKs that user space needs
 * (the last step of a handshake) reach it. */
static __always_inline struct locabus_peer *peer_lookup(__u16 node)
{
	struct locabus_peer_key key = {.node_id = node};

	return bpf_map_lookup_elem(&locabus_peers, &key);
}

/* The published state of the connection to node, read with one 64-bit load
 * so that it is one consistent snapshot of what user space stored. */
static __always_inline struct locabus_conn_pub conn_snapshot(__u16 node)
{
	struct locabus_conn_pub pub = {};
	__u32 key = node;
	__u64 *word = bpf_map_lookup_elem(&locabus_conns, &key);

	if (word) {
		__u64 v = *(volatile __u64 *)word;

		__builtin_memcpy(&pub, &v, sizeof(pub));
	}
	return pub;
}

/* A pure ACK from a tracked peer: the ACK rule decides, under the record's
 * lock, against the newest ACK consumed so far; a consumed one becomes the
 * record. Counts nothing: the caller decides what became of the frame. */
static __always_inline enum locabus_ack_verdict
consume_ack(struct locabus_peer *peer, const struct locabus_conn_pub *pub, __u16 ack, __u16 window)
{
	__u64 now = bpf_ktime_get_ns(); /* no helper calls under the lock */
	enum locabus_ack_verdict v;

	bpf_spin_lock(&peer->lock);
	peer->last_heard_ns = now;
	v = locabus_ack_decide(pub, peer->flags & LOCABUS_PEER_F_ACK_VALID, peer->ack_num, ack);
	if (v == LOCABUS_ACK_CONSUME) {
		peer->acks++;
		peer->ack_num = ack;
		peer->ack_window = window;
		peer->flags |= LOCABUS_PEER_F_ACK_VALID;
	} else {
		peer->passed_acks++;
	}
	bpf_spin_unlock(&peer->lock);
	return v;
}

static __always_inline void record_nak(struct locabus_xdp_stats *st, struct locabus_peer *peer,
				       const struct locabus_hdr *h)
{
	__u16 ack = bpf_ntohs(h->ack_num);
	__u16 seq = bpf_ntohs(h->seq_num);
	__u64 now = bpf_ktime_get_ns();

	bpf_spin_lock(&peer->lock);
	peer->last_heard_ns = now;
	peer->last_nak_ns = now;
	peer->naks++;
	peer->nak_ack = ack;
	peer->nak_seq = seq;
	peer->flags |= LOCABUS_PEER_F_NAK_VALID;
	bpf_spin_unlock(&peer->lock);
	count(st, LOCABUS_CTR_nak_recorded);
}

/* A broadcast NAK for our stream, as the dedup check saw it. */
struct bcast_nak {
	struct locabus_nak_key key;
	struct locabus_nak_entry entry; /* what to record if it is passed */
};

enum nak_dedup {
	NAK_UNTOUCHED, /* not a well-formed broadcast NAK to us, or dedup off */
	NAK_DUPLICATE, /* the range was passed up within the interval: drop */
	NAK_NEW,       /* pass, and record in locabus_naks if it reaches user space */
};

/* Decides about a broadcast NAK (the caller checked type and node_to) of
 * len bytes. Malformed ones (short, another version, count 0) and NAKs for
 * other streams are left alone: user space counts or uses them. */
static __always_inline enum nak_dedup nak_dedup_check(struct xdp_md *ctx, __u32 len, __u16 our_id,
						      __u32 interval_us, struct bcast_nak *n)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct locabus_bcast_ctl *ctl = data + LOCABUS_ETH_HLEN + LOCABUS_HDR_LEN;
	struct locabus_nak_entry *old;
	__u16 count;
	__u64 now;

	if (!interval_us || len < LOCABUS_HDR_LEN + sizeof(*ctl))
		return NAK_UNTOUCHED;
	if ((void *)(ctl + 1) > end) /* cannot fail after len <= frame length */
		return NAK_UNTOUCHED;
	count = bpf_ntohs(ctl->count);
	if (ctl->version != LOCABUS_CTRL_VERSION || count == 0 || bpf_ntohs(ctl->stream) != our_id)
		return NAK_UNTOUCHED;

	now = bpf_ktime_get_ns();
	n->key.first = bpf_ntohs(ctl->first);
	n->key.reserved = 0;
	n->entry.passed_ns = now;
	n->entry.count = count;
	n->entry.reserved0 = 0;
	n->entry.reserved1 = 0;
	n->entry.epoch = bpf_be64_to_cpu(ctl->epoch);

	old = bpf_map_lookup_elem(&locabus_naks, &n->key);
	if (old && old->epoch == n->entry.epoch &&
	    now - old->passed_ns < (__u64)interval_us * 1000 && count <= old->count)
		return NAK_DUPLICATE;
	return NAK_NEW;
}

/* Redirects to the socket of (queue, proto), else the queue's default
 * socket. With no socket the frame is dropped, or passed when configured. */
static __always_inline int deliver(struct xdp_md *ctx, struct locabus_xdp_stats *st, __u8 proto,
				   __u32 flags)
{
	__u32 queue = ctx->rx_queue_index;
	__u32 pkey = proto;
	struct locabus_proto_stats *ps = bpf_map_lookup_elem(&locabus_proto, &pkey);
	__u64 bytes = ctx->data_end - ctx->data;

	if (ps)
		ps->bytes += bytes;
	if (queue < LOCABUS_MAX_QUEUES) {
		/* Fallback action XDP_ABORTED (0) on an empty slot: try the next. */
		if (proto < LOCABUS_XSK_PROTO_SLOTS &&
		    bpf_redirect_map(&locabus_xsks, locabus_xsk_key(queue, proto), 0) ==
			    XDP_REDIRECT) {
			if (ps)
				ps->to_proto_socket++;
			count(st, LOCABUS_CTR_redirected);
			return XDP_REDIRECT;
		}
		if (bpf_redirect_map(&locabus_xsks,
				     locabus_xsk_key(queue, LOCABUS_XSK_DEFAULT_SLOT),
				     0) == XDP_REDIRECT) {
			if (ps)
				ps->to_default_socket++;
			count(st, LOCABUS_CTR_redirected);
			return XDP_REDIRECT;
		}
	}
	if (ps)
		ps->no_socket++;
	if (flags & LOCABUS_CFG_F_PASS_UNCLAIMED) {
		count(st, LOCABUS_CTR_passed_unclaimed);
		return XDP_PASS;
	}
	return drop(st, LOCABUS_CTR_drop_no_socket);
}

SEC("xdp")
int locabus_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct locabus_hdr *h;
	struct locabus_xdp_stats *st;
	__u32 zero = 0, frame_len, len, flags;
	__u16 node_to, node_from, our_id;
	enum nak_dedup dedup = NAK_UNTOUCHED;
	struct bcast_nak nak = {};
	int verdict;

	st = bpf_map_lookup_elem(&locabus_stats, &zero);

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(LOCABUS_ETH_P)) {
		count(st, LOCABUS_CTR_pass_other);
		return XDP_PASS;
	}
	count(st, LOCABUS_CTR_rx_locabus);

	h = (void *)(eth + 1);
	if ((void *)(h + 1) > end)
		return drop(st, LOCABUS_CTR_drop_short);

	/* Frames may carry Ethernet padding beyond len: the check is len <=
	 * what the frame holds, never equality. */
	frame_len = (__u32)(end - data) - LOCABUS_ETH_HLEN;
	len = bpf_ntohs(h->len);
	if (len < LOCABUS_HDR_LEN)
		return drop(st, LOCABUS_CTR_drop_len_small);
	if (len > LOCABUS_MAX_LEN)
		return drop(st, LOCABUS_CTR_drop_len_max);
	if (len > frame_len)
		return drop(st, LOCABUS_CTR_drop_len_frame);

	/* Checksum before any field is trusted, so corruption is counted as
	 * such and not as whatever a flipped bit happens to look like. */
	if (csum_verify(ctx, len) != 1)
		return drop(st, LOCABUS_CTR_drop_csum);

	/* csum_verify() is inlined but the verifier wants h re-checked. */
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	h = data + LOCABUS_ETH_HLEN;
	if ((void *)(h + 1) > end)
		return drop(st, LOCABUS_CTR_drop_short);

	if (h->type < LOCABUS_T_MIN || h->type > LOCABUS_T_MAX)
		return drop(st, LOCABUS_CTR_drop_type);

	node_to = bpf_ntohs(h->node_to);
	node_from = bpf_ntohs(h->node_from);
	our_id = locabus_cfg.node_id;
	flags = locabus_cfg.flags;
	if (node_from == LOCABUS_NODE_BROADCAST)
		return drop(st, LOCABUS_CTR_drop_src);
	if (node_to != our_id && node_to != LOCABUS_NODE_BROADCAST)
		return drop(st, LOCABUS_CTR_drop_not_ours);
	if (node_from == our_id)
		return drop(st, LOCABUS_CTR_drop_own);

	if (h->type == LOCABUS_T_ACK && len == LOCABUS_HDR_LEN && node_to == our_id &&
	    !(flags & LOCABUS_CFG_F_ACK_TO_USER)) {
		struct locabus_peer *peer = peer_lookup(node_from);

		if (peer) {
			__u16 ack = bpf_ntohs(h->ack_num);
			__u16 window = bpf_ntohs(h->window);
			struct locabus_conn_pub pub = conn_snapshot(node_from);
			enum locabus_ack_verdict v = consume_ack(peer, &pub, ack, window);
			struct locabus_ack_record rec = {
				.node_id = node_from,
				.ack_num = ack,
				.window = window,
			};

			switch (v) {
			case LOCABUS_ACK_CONSUME:
				break;
			case LOCABUS_ACK_PASS_ALL:
				count(st, LOCABUS_CTR_ack_pass_all);
				return deliver(ctx, st, h->proto, flags);
			case LOCABUS_ACK_PASS_RANGE:
				count(st, LOCABUS_CTR_ack_pass_range);
				return deliver(ctx, st, h->proto, flags);
			case LOCABUS_ACK_PASS_UNPUBLISHED:
				count(st, LOCABUS_CTR_ack_pass_unpublished);
				return deliver(ctx, st, h->proto, flags);
			default:
				count(st, LOCABUS_CTR_ack_pass_behind);
				return deliver(ctx, st, h->proto, flags);
			}
			/* Default flags: the kernel wakes the reader only if it
			 * had caught up with the ring. */
			if (bpf_ringbuf_output(&locabus_acks, &rec, sizeof(rec), 0) != 0) {
				/* Nobody would hear of this ACK: let it reach user
				 * space the ordinary way. */
				count(st, LOCABUS_CTR_ack_ring_full);
				return deliver(ctx, st, h->proto, flags);
			}
			count(st, LOCABUS_CTR_ack_ring_out);
			return drop(st, LOCABUS_CTR_ack_consumed);
		}
		/* Not tracked (yet): user space handles it, e.g. a handshake's ACK. */
		count(st, LOCABUS_CTR_ack_untracked);
	}
	if (h->type == LOCABUS_T_NAK) {
		struct locabus_peer *peer;

		if (node_to == LOCABUS_NODE_BROADCAST) {
			dedup = nak_dedup_check(ctx, len, our_id, locabus_cfg.nak_dedup_us, &nak);
			if (dedup == NAK_DUPLICATE)
				return drop(st, LOCABUS_CTR_nak_dup_dropped);
		}
		/* The connection's record holds unicast NAKs only: a broadcast
		 * NAK names a position in a broadcast stream, not in it. */
		peer = node_to == our_id ? peer_lookup(node_from) : NULL;
		if (peer)
			record_nak(st, peer, h);
	}

	verdict = deliver(ctx, st, h->proto, flags);
	if (dedup == NAK_NEW && verdict != XDP_DROP) {
		/* It reached user space: repeats within the interval are dropped. */
		bpf_map_update_elem(&locabus_naks, &nak.key, &nak.entry, BPF_ANY);
		count(st, LOCABUS_CTR_nak_bcast_passed);
	}
	return verdict;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
