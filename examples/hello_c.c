/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* hello_c NODE [TEXT]: sends TEXT to NODE through the local locabusd and
 * prints what comes back within a second. Build: cc hello_c.c $(pkg-config --cflags --libs locabus) */
#include <locabus/locabus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char** argv) {
  if (argc < 2) return fprintf(stderr, "usage: %s NODE [TEXT]\n", argv[0]), 2;
  const char* text = argc > 2 ? argv[2] : "hello";
  locabus_endpoint* ep;
  if (locabus_open(NULL, 17, 0, &ep) < 0) return fprintf(stderr, "%s\n", locabus_last_error()), 1;
  if (locabus_send(ep, (uint16_t)atoi(argv[1]), text, strlen(text), 5000) < 0)
    return fprintf(stderr, "%s\n", locabus_last_error()), locabus_close(ep), 1;
  char buf[LOCABUS_MAX_MESSAGE];
  uint16_t from;
  long n = locabus_recv(ep, &from, buf, sizeof buf, 1000);
  if (n >= 0) printf("node %u: %.*s\n", from, (int)n, buf);
  locabus_close(ep);
  return 0;
}
