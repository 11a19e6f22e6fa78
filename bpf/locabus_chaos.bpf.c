// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Chaos: seeded fault injection for Locabus frames on a veth (these kernels
 * have no netem). Attached to the host side of a node's veth pair, it drops
 * a configured share of the Locabus frames the node sends and flips one bit
 * in another share; every other EtherType passes untouched. Settings live
 * in a map and can change while it runs (locabusctl chaos set).
 *
 * The random sequence is xorshift64* per CPU, derived from the seed and the
 * CPU number, so a run pinned to one CPU is repeatable.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <locabus/wire.h>
#include <locabus/xdp_maps.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct locabus_chaos_config);
} locabus_chaos_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct locabus_chaos_state);
} locabus_chaos_rng SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct locabus_chaos_stats);
} locabus_chaos_stats SEC(".maps");

static __always_inline __u64 splitmix64(__u64 x)
{
	x += 0x9E3779B97F4A7C15ULL;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
	return x ^ (x >> 31);
}

static __always_inline __u64 next_random(struct locabus_chaos_state *st)
{
	__u64 x = st->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	st->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

SEC("xdp")
int locabus_chaos(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct locabus_chaos_config *cfg;
	struct locabus_chaos_state *st;
	struct locabus_chaos_stats *stats;
	__u32 key = 0;
	__u64 len, off, r;
	__u8 *byte;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(LOCABUS_ETH_P))
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&locabus_chaos_cfg, &key);
	st = bpf_map_lookup_elem(&locabus_chaos_rng, &key);
	stats = bpf_map_lookup_elem(&locabus_chaos_stats, &key);
	if (!cfg || !st || !stats)
		return XDP_PASS;
	stats->seen++;
	if (!cfg->enabled)
		goto pass;
	if (cfg->type_mask) {
		struct locabus_hdr *hdr = (void *)(eth + 1);

		if ((void *)(hdr + 1) > data_end || hdr->type >= 32 ||
		    !(cfg->type_mask & (1U << hdr->type)))
			goto pass;
	}
	if (st->seed != cfg->seed || st->rng == 0) {
		st->seed = cfg->seed;
		st->rng = splitmix64(cfg->seed + bpf_get_smp_processor_id()) | 1;
	}
	if (next_random(st) % LOCABUS_CHAOS_PPM < cfg->drop_ppm) {
		stats->dropped++;
		return XDP_DROP;
	}
	if (next_random(st) % LOCABUS_CHAOS_PPM < cfg->corrupt_ppm) {
		len = (__u64)(data_end - data);
		if (len <= LOCABUS_ETH_HLEN)
			goto pass;
		r = next_random(st);
		off = LOCABUS_ETH_HLEN + (r >> 8) % (len - LOCABUS_ETH_HLEN);
		off &= 0x7ff; /* frames are < 2048 bytes; bounds the offset for the verifier */
		byte = (__u8 *)data + off;
		if ((void *)(byte + 1) > data_end)
			goto pass;
		*byte ^= (__u8)(1U << (r & 7));
		stats->corrupted++;
	}
pass:
	stats->passed++;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
