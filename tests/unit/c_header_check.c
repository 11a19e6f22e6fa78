/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Compiled as C11 with -pedantic: the shared headers (and their static
 * asserts) must be valid C. Reports what C sees, for the C++ test to compare. */
#include <locabus/wire.h>
#include <locabus/xdp_maps.h>

#include "c_header_check.h"

void locabus_c_get_layout(struct locabus_c_layout* out) {
  out->hdr_size = sizeof(struct locabus_hdr);
  out->hdr_csum_offset = LOCABUS_OFFSETOF(struct locabus_hdr, csum);
  out->locasock_size = sizeof(struct locasock_hdr);
  out->config_size = sizeof(struct locabus_config);
  out->stats_size = sizeof(struct locabus_xdp_stats);
  out->peer_size = sizeof(struct locabus_peer);
  out->proto_stats_size = sizeof(struct locabus_proto_stats);
}

unsigned short locabus_c_checksum(const void* packet, unsigned len) {
  return locabus_csum_compute((const struct locabus_hdr*)packet, len);
}
