/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#pragma once
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
struct locabus_c_layout {
  size_t hdr_size, hdr_csum_offset, locasock_size, config_size, stats_size, peer_size, proto_stats_size;
};
void locabus_c_get_layout(struct locabus_c_layout* out);
/* locabus_csum_compute() compiled as C; memory byte order. */
unsigned short locabus_c_checksum(const void* packet, unsigned len);
#ifdef __cplusplus
}
#endif
