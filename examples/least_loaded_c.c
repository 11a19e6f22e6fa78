/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* least_loaded_c: the cluster's load as the local locabusd's LocaMonitor
 * knows it (one request to the daemon, no network round trip), and the node
 * a job should go to. Build: cc least_loaded_c.c $(pkg-config --cflags --libs locabus) */
#include <locabus/locabus.h>
#include <stdio.h>

int main(void) {
  struct locabus_node_load rows[64];
  size_t count = 0;
  if (locabus_monitor_nodes(NULL, rows, 64, &count) < 0)
    return fprintf(stderr, "%s\n", locabus_last_error()), 1;
  for (size_t i = 0; i < count && i < 64; ++i)
    printf("node %u%s %-5s %s: load %.2f on %u CPUs, %llu MiB available\n", rows[i].node,
           rows[i].self ? "*" : "", rows[i].state == LOCABUS_NODE_ALIVE ? "alive" : "stale", rows[i].hostname,
           rows[i].load1, rows[i].cpus, (unsigned long long)(rows[i].mem_available >> 20));
  uint16_t node;
  if (locabus_monitor_least_loaded(NULL, &node) < 0) return fprintf(stderr, "%s\n", locabus_last_error()), 1;
  printf("least loaded: node %u\n", node);
  return 0;
}
