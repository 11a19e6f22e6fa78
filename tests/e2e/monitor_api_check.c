/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Checks liblocabus's LocaMonitor C API against a running daemon
 * (tests/e2e/monitor_e2e_test.sh): locabus_monitor_nodes() and
 * locabus_monitor_least_loaded(), their counts, truncation, argument errors
 * and the error without a daemon.
 *
 *   monitor_api_check [ROWS]   (LOCABUS_SOCKET names the local daemon)
 *
 * Prints "ok"/"FAIL" lines, then one line for the test to compare with
 * `locabusctl monitor --json`:
 *   rows=N alive=A self=S least_loaded=L
 * Exits 1 if a check failed (or the table does not have ROWS rows). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <locabus/locabus.h>

enum { kCap = 256 };

static int failures = 0;

static void check(int ok, const char* what) {
  printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

int main(int argc, char** argv) {
  const long want = argc > 1 ? strtol(argv[1], NULL, 10) : -1;
  static struct locabus_node_load rows[kCap];
  size_t count = 0;

  int rc = locabus_monitor_nodes(NULL, NULL, 0, &count);
  if (rc != 0) {
    fprintf(stderr, "monitor_api_check: locabus_monitor_nodes: %s (%d)\n", locabus_last_error(), rc);
    return 1;
  }
  check(count > 0, "locabus_monitor_nodes with max 0 counts the rows");

  rc = locabus_monitor_nodes(NULL, rows, kCap, &count);
  check(rc == 0 && count <= kCap, "locabus_monitor_nodes fills the rows");
  if (rc != 0 || count > kCap) return 1;
  if (want >= 0) {
    char what[96];
    snprintf(what, sizeof what, "the table has %ld rows (it has %zu)", want, count);
    check(count == (size_t)want, what);
  }

  size_t alive = 0, selves = 0;
  unsigned self = 0;
  int sane = 1, ordered = 1;
  for (size_t i = 0; i < count; ++i) {
    const struct locabus_node_load* n = &rows[i];
    if (memchr(n->hostname, '\0', sizeof n->hostname) == NULL) sane = 0;
    if (n->state != LOCABUS_NODE_ALIVE && n->state != LOCABUS_NODE_STALE) sane = 0;
    if (n->cpus == 0 || n->mem_total == 0 || n->mem_available > n->mem_total) sane = 0;
    if (!(n->cpu_busy_percent >= 0 && n->cpu_busy_percent <= 100.0001)) sane = 0;
    if (!(n->load1 >= 0 && n->load5 >= 0 && n->load15 >= 0)) sane = 0;
    if (!(isfinite(n->net_rx_bytes_per_s) && n->net_rx_bytes_per_s >= 0)) sane = 0;
    if (!(isfinite(n->net_tx_bytes_per_s) && n->net_tx_bytes_per_s >= 0)) sane = 0;
    if (n->swap_free > n->swap_total || n->processes == 0) sane = 0;
    if (i > 0 && rows[i - 1].node >= n->node) ordered = 0;
    if (n->state == LOCABUS_NODE_ALIVE) ++alive;
    if (n->self) {
      ++selves;
      self = n->node;
      if (n->state != LOCABUS_NODE_ALIVE) sane = 0; /* its own row is always alive */
    }
  }
  check(sane, "every row is plausible (hostname NUL-terminated, state, cpus, memory, load, rates)");
  check(ordered, "rows come by node id");
  check(selves == 1, "exactly one row is this node's");

  /* Fewer slots than rows: the count still says how many there are, and
   * nothing is written past max. */
  if (count > 1) {
    struct locabus_node_load two[2];
    memset(&two[1], 0xA5, sizeof two[1]);
    size_t n = 0;
    rc = locabus_monitor_nodes(NULL, two, 1, &n);
    const unsigned char* p = (const unsigned char*)&two[1];
    int untouched = 1;
    for (size_t i = 0; i < sizeof two[1]; ++i) untouched &= p[i] == 0xA5;
    check(rc == 0 && n == count && two[0].node == rows[0].node && untouched,
          "max 1 fills one row and counts them all");
  }

  uint16_t least = 0xFFFF;
  rc = locabus_monitor_least_loaded(NULL, &least);
  int least_alive = 0;
  for (size_t i = 0; i < count; ++i)
    if (rows[i].node == least && rows[i].state == LOCABUS_NODE_ALIVE) least_alive = 1;
  check(rc == 0 && least_alive, "locabus_monitor_least_loaded names an alive node of the table");

  check(locabus_monitor_least_loaded(NULL, NULL) == -EINVAL, "a NULL node is -EINVAL");
  check(locabus_monitor_nodes(NULL, NULL, 3, &count) == -EINVAL, "NULL rows with max 3 is -EINVAL");
  rc = locabus_monitor_nodes("/nonexistent/locabusd.sock", rows, kCap, &count);
  check(rc == -ENOENT && strstr(locabus_last_error(), "is locabusd running") != NULL,
        "no daemon: -ENOENT and a message saying what to do");

  printf("rows=%zu alive=%zu self=%u least_loaded=%u\n", count, alive, self, (unsigned)least);
  return failures ? 1 : 0;
}
