/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * liblocabus: the C API of the Locabus client library.
 *
 * An application opens an endpoint on the local daemon (locabusd) for one
 * application protocol id, sends messages to other nodes and receives
 * theirs: reliable, in order, exactly once per connection. Membership
 * events (a node joined, died, restarted...) arrive on the same endpoint.
 *
 *   locabus_endpoint* ep;
 *   int err = locabus_open(NULL, LOCABUS_PROTO_DEFAULT, LOCABUS_OPEN_EVENTS, &ep);
 *   if (err) { fprintf(stderr, "%s\n", locabus_last_error()); return 1; }
 *   locabus_send(ep, 2, "hello", 5, -1);
 *   char buf[LOCABUS_MAX_MESSAGE]; uint16_t from;
 *   long n = locabus_recv(ep, &from, buf, sizeof buf, 1000);
 *   locabus_close(ep);
 *
 * Locasock sockets carry datagrams of up to 64 KB between ports:
 *
 *   locabus_socket* s;
 *   if (locabus_socket_open(NULL, 7000, 0, &s) < 0) { ... locabus_last_error() ... }
 *   locabus_sendto(s, 2, 7000, data, len, -1);          (to port 7000 on node 2)
 *   uint16_t node, port; unsigned flags;
 *   long n = locabus_recvfrom(s, buf, sizeof buf, &node, &port, &flags, 1000);
 *   locabus_socket_close(s);
 *
 * Every function returns 0 (or a count) on success and a negative errno
 * value on failure; locabus_last_error() has a sentence saying what failed
 * and what to do. An endpoint is not thread-safe: use it from one thread at
 * a time. Link with `pkg-config --libs locabus`. docs/API.md has more.
 */
#ifndef LOCABUS_LOCABUS_H
#define LOCABUS_LOCABUS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest message payload (one frame's data, docs/PROTOCOL.md). */
#define LOCABUS_MAX_MESSAGE 1484
/* Largest Locasock datagram (wire.h LOCASOCK_MAX_DATAGRAM). */
#define LOCABUS_MAX_DATAGRAM 65536

/* The destination node "every other node" (wire.h has the same macro):
 * locabus_send() broadcasts to the endpoints of its protocol on all other
 * nodes, locabus_sendto() to a port on all other nodes. Broadcasts do not
 * loop back to the sending node. */
#define LOCABUS_NODE_BROADCAST 0xFFFF

/* Protocol ids 0..15 belong to Locabus services (wire.h LOCABUS_P_*);
 * applications use 16..255. */
#define LOCABUS_PROTO_USER_MIN 16
#define LOCABUS_PROTO_DEFAULT 16
/* An endpoint for events only (a monitor): it sends and receives no
 * messages, and any number of them may be open. */
#define LOCABUS_PROTO_NONE 0

/* locabus_open() and locabus_socket_open() flags */
#define LOCABUS_OPEN_EVENTS (1U << 0) /* deliver membership events */

/* Flags locabus_recv_ex() and locabus_recvfrom() report */
#define LOCABUS_MSG_BROADCAST (1U << 0) /* it was sent to every node, not to us alone */

/* Timeouts, in milliseconds: -1 waits for ever, 0 never waits. */
#define LOCABUS_WAIT_FOREVER (-1)

typedef struct locabus_endpoint locabus_endpoint;
typedef struct locabus_socket locabus_socket;

/* Event kinds, in the order of the engine's EventKind. */
enum locabus_event_kind {
  LOCABUS_EV_JOINED = 0,       /* first heard from a node */
  LOCABUS_EV_RESTARTED = 1,    /* a member came back with a new boot epoch */
  LOCABUS_EV_SUSPECT = 2,      /* silent for a while; being probed */
  LOCABUS_EV_ALIVE = 3,        /* heard again after suspect or dead */
  LOCABUS_EV_DEAD = 4,         /* silent too long */
  LOCABUS_EV_LEFT = 5,         /* announced a clean shutdown */
  LOCABUS_EV_ID_CONFLICT = 6,  /* two MAC addresses claim one node id */
  LOCABUS_EV_CONNECTED = 7,    /* connection to the node established */
  LOCABUS_EV_DISCONNECTED = 8, /* connection closed (failure says why) */
  LOCABUS_EV_SEND_FAILED = 9,  /* messages to the node could not be delivered */
  LOCABUS_EV_OVERRUN = 10,     /* this endpoint read too slowly: `count` events were dropped */
  /* Broadcasts from `node` that will never arrive here: `count` consecutive
   * messages of its broadcast stream (all protocols together), from stream
   * sequence `first_message`, incarnation `epoch`; `failure` says why
   * (LOCABUS_FAIL_RELEASED, _PEER_LEFT, _PEER_RESTARTED). Every endpoint and
   * socket that can receive broadcasts gets it (docs/API.md). */
  LOCABUS_EV_BROADCAST_LOST = 11,
};

/* Why sends failed or a connection ended (engine Failure, plus send
 * refusals the daemon reports asynchronously). */
enum locabus_failure {
  LOCABUS_FAIL_NONE = 0,
  LOCABUS_FAIL_UNREACHABLE = 1,        /* no answer after every retransmission */
  LOCABUS_FAIL_PEER_DEAD = 2,          /* the failure detector declared it dead */
  LOCABUS_FAIL_PEER_RESTARTED = 3,     /* it restarted; what was pending is lost */
  LOCABUS_FAIL_PEER_LEFT = 4,          /* it shut down cleanly */
  LOCABUS_FAIL_PEER_RESET = 5,         /* it had no such connection */
  LOCABUS_FAIL_CLOSED = 6,             /* closed locally before it went out */
  LOCABUS_FAIL_SHUTDOWN = 7,           /* the local daemon is shutting down */
  LOCABUS_FAIL_RELEASED = 8,           /* broadcast_lost: the sender had freed them (it had counted us out) */
  LOCABUS_FAIL_NO_ENDPOINT = 9,        /* nobody had that protocol (or socket port) open on the node */
  LOCABUS_FAIL_ENDPOINT_CLOSED = 10,   /* the receiving endpoint closed before reading them */
  LOCABUS_FAIL_DROPPED = 11,           /* the receiving daemon could not deliver them (a datagram it could
                                          not reassemble, or sent beyond the credit it granted) */
  LOCABUS_FAIL_CONNECTION_CLOSED = 12, /* the connection closed before the receiving endpoint read them */
  LOCABUS_FAIL_UNKNOWN_NODE = 16,      /* never heard from that node: wait for it to join */
  LOCABUS_FAIL_INVALID_NODE = 17,      /* our own id (or a message too large for the engine) */
};

/* One membership or delivery event; 56 bytes, the same layout in the
 * daemon's shared ring. */
struct locabus_event {
  uint8_t kind;    /* enum locabus_event_kind */
  uint8_t failure; /* enum locabus_failure */
  uint16_t node;
  uint32_t reserved;
  uint64_t epoch;         /* the member's boot epoch (restarted: the new one; broadcast_lost: the
                             incarnation whose stream lost them) */
  uint64_t old_epoch;     /* restarted: the previous one */
  uint64_t first_message; /* send_failed: first failed message number (see below);
                             broadcast_lost: stream sequence of the first lost message (0..65535) */
  uint64_t count;         /* send_failed: how many; overrun: events dropped; broadcast_lost: how many
                             consecutive stream sequences (the range may wrap past 65535) */
  uint8_t mac[6];         /* the member's MAC (id_conflict: first claimant) */
  uint8_t other_mac[6];   /* id_conflict: second claimant */
  uint32_t reserved2;
};

/* A peer as the local daemon sees it. */
struct locabus_peer_info {
  uint16_t node;
  uint8_t mac[6];
  char member_state[12]; /* "alive", "suspect", "dead", "left", "joining" */
  char conn_state[16];   /* "established", "closed", ... */
  uint64_t epoch;
  uint64_t rtt_us; /* smoothed round-trip time, 0 before a sample */
  uint64_t retransmits;
  uint32_t in_flight;
  uint32_t peer_window; /* credit the peer last advertised */
};

/* Opens an endpoint on the daemon listening at `socket_path` (NULL: the
 * LOCABUS_SOCKET environment variable, else /run/locabus/locabusd.sock) for
 * protocol `proto` (16..255, one endpoint per protocol per node; or
 * LOCABUS_PROTO_NONE with LOCABUS_OPEN_EVENTS for a monitor).
 * 0 or -errno: -ENOENT/-ECONNREFUSED no daemon, -EACCES not allowed,
 * -EADDRINUSE protocol taken, -EINVAL bad argument. */
int locabus_open(const char* socket_path, uint8_t proto, unsigned flags, locabus_endpoint** out);

/* Closes the endpoint and frees it. NULL is ignored. */
void locabus_close(locabus_endpoint* ep);

/* Our node id. */
uint16_t locabus_node_id(const locabus_endpoint* ep);

/* Queues `len` bytes (<= LOCABUS_MAX_MESSAGE) for `node`. Waits up to
 * timeout_ms while the endpoint's send ring is full. Delivery failures are
 * reported later as LOCABUS_EV_SEND_FAILED events. `node`
 * LOCABUS_NODE_BROADCAST sends to this protocol's endpoints on every other
 * node (they see LOCABUS_MSG_BROADCAST in locabus_recv_ex()).
 * 0, -EAGAIN (ring full), -EMSGSIZE, -ENOTCONN (the daemon went away: close
 * and open again). */
int locabus_send(locabus_endpoint* ep, uint16_t node, const void* data, size_t len, int timeout_ms);

/* Receives one message into buf; *from gets the sender. Returns its
 * length, or -EAGAIN (none within timeout_ms), -EMSGSIZE (cap too small:
 * the message is kept), -ENOTCONN (the daemon went away). */
long locabus_recv(locabus_endpoint* ep, uint16_t* from, void* buf, size_t cap, int timeout_ms);

/* locabus_recv(), and *flags (if not NULL) gets LOCABUS_MSG_BROADCAST when
 * the message was a broadcast, else 0. */
long locabus_recv_ex(locabus_endpoint* ep, uint16_t* from, void* buf, size_t cap, unsigned* flags,
                     int timeout_ms);

/* Receives one message without copying it: *data (not NULL) points at it
 * inside the endpoint's receive ring, *from and *flags (each may be NULL)
 * are as in locabus_recv_ex(). *data stays valid until the next
 * locabus_recv*(), locabus_next_event() or locabus_recv_release() on `ep`,
 * or locabus_close(); hold it briefly, the daemon cannot reuse that space
 * meanwhile. Returns its length, or -EAGAIN (none within timeout_ms),
 * -ENOTCONN (the daemon went away). */
long locabus_recv_view(locabus_endpoint* ep, uint16_t* from, const void** data, unsigned* flags,
                       int timeout_ms);

/* Ends the view locabus_recv_view() returned now (optional: the next call
 * ends it anyway). NULL is ignored. */
void locabus_recv_release(locabus_endpoint* ep);

/* Takes the next membership event: 1 when *out was filled, 0 when there is
 * none now, or -ENOTCONN. Never blocks. */
int locabus_next_event(locabus_endpoint* ep, struct locabus_event* out);

/* A file descriptor for poll/epoll: readable when locabus_recv() or
 * locabus_next_event() may have something (or the daemon went away).
 * Edge-like: call them until they report nothing before waiting again. */
int locabus_fd(const locabus_endpoint* ep);

/* Fills up to `cap` peers; *count gets how many the daemon knows (which may
 * exceed cap). 0 or -errno. */
int locabus_peers(locabus_endpoint* ep, struct locabus_peer_info* out, size_t cap, size_t* count);

/* ---- Locasock sockets (docs/API.md, "Sockets") ----
 * Datagrams of up to LOCABUS_MAX_DATAGRAM bytes between ports: reliable, in
 * order per sending socket and destination, each delivered whole or not at
 * all. A datagram for a port nobody bound on the destination node is
 * dropped there (as UDP does). */

/* Opens a socket on the daemon at `socket_path` (NULL: as locabus_open())
 * bound to `port` (1..65535, one socket per port per node), or with port 0
 * to a free ephemeral port (49152..65535) the daemon picks:
 * locabus_socket_port() says which. flags: LOCABUS_OPEN_EVENTS for
 * membership events. 0 or -errno: -EADDRINUSE port taken, -EMSGSIZE the
 * daemon's ring_bytes is too small for 64 KB datagrams, and as
 * locabus_open(). */
int locabus_socket_open(const char* socket_path, uint16_t port, unsigned flags, locabus_socket** out);

/* Closes the socket and frees it (datagrams already accepted are still
 * sent). NULL is ignored. */
void locabus_socket_close(locabus_socket* s);

/* The port the socket is bound to; our node id. */
uint16_t locabus_socket_port(const locabus_socket* s);
uint16_t locabus_socket_node_id(const locabus_socket* s);

/* Queues a datagram of `len` bytes (<= LOCABUS_MAX_DATAGRAM) for port `port`
 * on `node` (LOCABUS_NODE_BROADCAST: on every other node). Waits up to
 * timeout_ms while the socket's send ring is full. An unknown or unreachable
 * node is reported later as a LOCABUS_EV_SEND_FAILED event.
 * 0, -EAGAIN (ring full), -EMSGSIZE (over LOCABUS_MAX_DATAGRAM), -EINVAL
 * (port 0), -ENOTCONN (the daemon went away). */
int locabus_sendto(locabus_socket* s, uint16_t node, uint16_t port, const void* data, size_t len,
                   int timeout_ms);

/* locabus_sendto(s, LOCABUS_NODE_BROADCAST, port, ...): to port `port` on
 * every other node (not this one). */
int locabus_broadcast_to(locabus_socket* s, uint16_t port, const void* data, size_t len, int timeout_ms);

/* Receives one datagram into buf. *node and *port get the sender's node and
 * port, *flags LOCABUS_MSG_BROADCAST or 0 (each may be NULL). Returns its
 * length, or -EAGAIN (none within timeout_ms), -EMSGSIZE (cap too small:
 * the datagram is kept), -ENOTCONN (the daemon went away). */
long locabus_recvfrom(locabus_socket* s, void* buf, size_t cap, uint16_t* node, uint16_t* port,
                      unsigned* flags, int timeout_ms);

/* Receives one datagram without copying it, with the lifetime rules of
 * locabus_recv_view() (ended by the next locabus_recvfrom*(),
 * locabus_socket_next_event(), locabus_socket_recv_release() or
 * locabus_socket_close()). *data must not be NULL; node, port, flags as in
 * locabus_recvfrom(). Returns its length, or -EAGAIN, -ENOTCONN. */
long locabus_recvfrom_view(locabus_socket* s, const void** data, uint16_t* node, uint16_t* port,
                           unsigned* flags, int timeout_ms);

/* Ends the view locabus_recvfrom_view() returned now. NULL is ignored. */
void locabus_socket_recv_release(locabus_socket* s);

/* As locabus_next_event(): 1 when *out was filled, 0 when there is none
 * now, or -ENOTCONN. send_failed events always; the rest with
 * LOCABUS_OPEN_EVENTS. Never blocks. */
int locabus_socket_next_event(locabus_socket* s, struct locabus_event* out);

/* As locabus_fd(): readable when locabus_recvfrom() or
 * locabus_socket_next_event() may have something (edge-like). */
int locabus_socket_fd(const locabus_socket* s);

/* The last error of the calling thread as a sentence (never NULL). */
const char* locabus_last_error(void);

/* Name of an event kind or failure, e.g. "joined", "peer_restarted". */
const char* locabus_event_kind_name(int kind);
const char* locabus_failure_name(int failure);

/* ---------------------------------------------------------------------
 * KCCM (docs/API.md "KCCM", docs/KCCM.md): tagged send/receive and remote
 * calls within a space, a 16-bit id an application picks (like a port).
 *
 *   locabus_kccm* k;
 *   if (locabus_kccm_open(NULL, 42, NULL, &k) < 0) { ... locabus_last_error() ... }
 *   struct locabus_kccm_result r;
 *   locabus_kccm_call(k, 2, "echo", "hi", 2, 1000, &r);   (r.status, r.data, r.len)
 *   locabus_kccm_result_free(&r);
 *   locabus_kccm_close(k);
 * ------------------------------------------------------------------- */

typedef struct locabus_kccm locabus_kccm;

/* How a call ended (the same numbers travel in KCCM REPLY headers). */
enum locabus_kccm_status {
  LOCABUS_KCCM_OK = 0,
  LOCABUS_KCCM_NO_SUCH_HANDLER = 1,   /* nobody registered that name in the space on that node */
  LOCABUS_KCCM_HANDLER_FAILED = 2,    /* the handler threw or returned an error: the text says what */
  LOCABUS_KCCM_NODE_DEAD = 3,         /* the node died, left or stopped answering during the call */
  LOCABUS_KCCM_NODE_RESTARTED = 4,    /* the node restarted during the call */
  LOCABUS_KCCM_DEADLINE_EXCEEDED = 5, /* no result by the call's deadline */
  LOCABUS_KCCM_OVERLOADED = 6,        /* the handler's queue was full */
  LOCABUS_KCCM_NO_SUCH_NODE = 7,      /* never heard from that node (or not a node id) */
  LOCABUS_KCCM_DISCONNECTED = 8,      /* the local daemon went away: open the space again */
  LOCABUS_KCCM_TOO_LARGE = 9,         /* over LOCABUS_KCCM_MAX_DATA bytes, or a name over 63 */
  LOCABUS_KCCM_HANDLER_EXITED = 10,   /* the process that had the handler exited during the call */
};

/* Largest message, argument or result (KCCM_MAX_DATA in wire.h). */
#define LOCABUS_KCCM_MAX_DATA 65440
/* Longest handler name. */
#define LOCABUS_KCCM_MAX_NAME 63
/* recv filters */
#define LOCABUS_KCCM_ANY_NODE 0xFFFF
#define LOCABUS_KCCM_ANY_TAG (1U << 0) /* recv flag: any tag (the tag argument is ignored) */
/* locabus_kccm_register() kinds */
#define LOCABUS_KCCM_LONG 0  /* runs on the space's worker pool */
#define LOCABUS_KCCM_SHORT 1 /* runs inline in the listener: it must be short */

struct locabus_kccm_options {
  unsigned workers;       /* worker threads for long handlers; 0: 4 */
  unsigned queue;         /* long calls waiting for a worker, at most; 0: 1024 (then: overloaded) */
  int default_timeout_ms; /* a call's deadline when the call gives none (timeout_ms < 0); 0: 10000 */
  int short_warn_ms;      /* the watchdog logs short handlers running longer; 0: 100 */
};

/* A call's outcome. data/len: the result (status OK) or NUL-terminated
 * text saying what failed (any other status); owned by the library until
 * locabus_kccm_result_free(). */
struct locabus_kccm_result {
  int status; /* enum locabus_kccm_status */
  uint16_t node;
  uint16_t reserved;
  void* data;
  size_t len;
};

/* What a handler learns about its call. */
struct locabus_kccm_call_info {
  uint16_t node; /* the calling node */
  uint16_t space;
  const char* handler; /* the name it was called by */
  int64_t deadline_ms; /* milliseconds left to the caller's deadline when it arrived */
  int oneway;          /* nobody waits for the result */
};

/* A handler: fills the result with locabus_kccm_reply() (copied) or fails
 * with locabus_kccm_reply_error(); returning without either gives an empty
 * result. Runs on a worker thread (LOCABUS_KCCM_LONG) or in the listener
 * (LOCABUS_KCCM_SHORT). */
typedef struct locabus_kccm_reply locabus_kccm_reply;
typedef void (*locabus_kccm_handler)(void* ctx, const struct locabus_kccm_call_info* info, const void* arg,
                                     size_t len, locabus_kccm_reply* reply);
void locabus_kccm_reply_set(locabus_kccm_reply* reply, const void* data, size_t len);
void locabus_kccm_reply_error(locabus_kccm_reply* reply, const char* message);

/* Attaches to `space` (0..65535) on the daemon at `socket_path` (NULL: as
 * locabus_open()). options may be NULL. 0 or -errno. */
int locabus_kccm_open(const char* socket_path, uint16_t space, const struct locabus_kccm_options* options,
                      locabus_kccm** out);
/* Stops the listener and the workers (waiting for running handlers),
 * fails calls still pending (DISCONNECTED) and detaches. NULL is ignored. */
void locabus_kccm_close(locabus_kccm* k);
uint16_t locabus_kccm_node_id(const locabus_kccm* k);

/* Tagged messages. send: 0, -EAGAIN (ring full for timeout_ms), -EMSGSIZE,
 * -ENOTCONN; a message that cannot be delivered comes back as a
 * send_failed event (locabus_kccm_next_event()) naming *message_no (may be
 * NULL). recv: the oldest queued message from `node` (LOCABUS_KCCM_ANY_NODE:
 * any) with `tag` (flags LOCABUS_KCCM_ANY_TAG: any), else waits up to
 * timeout_ms (-1: forever); its length, -EAGAIN on timeout, -EMSGSIZE when
 * cap is too small (the message is lost to this call: pass
 * LOCABUS_KCCM_MAX_DATA bytes), -ENOTCONN. */
int locabus_kccm_send(locabus_kccm* k, uint16_t node, uint32_t tag, const void* data, size_t len,
                      int timeout_ms, uint64_t* message_no);
long locabus_kccm_recv(locabus_kccm* k, uint16_t node, uint32_t tag, unsigned flags, uint16_t* from,
                       uint32_t* tag_out, void* buf, size_t cap, int timeout_ms);

/* Handlers, by name (1..63 bytes) in this space on this node: 0, -EEXIST
 * (registered by this or another process on the node), -EINVAL, -ENOTCONN. */
int locabus_kccm_register(locabus_kccm* k, const char* name, int kind, locabus_kccm_handler handler,
                          void* ctx);
int locabus_kccm_unregister(locabus_kccm* k, const char* name);

/* Calls `name` on `node` (this node included) and waits for the result,
 * at most timeout_ms (< 0: the default deadline). Returns 0 when *out was
 * filled (out->status says how it ended), -errno when the call could not
 * be made (-EINVAL, -ENOTCONN; -EDEADLK from a short handler or a callback,
 * which run in the listener that completes calls: use locabus_kccm_call_async). */
int locabus_kccm_call(locabus_kccm* k, uint16_t node, const char* name, const void* arg, size_t len,
                      int timeout_ms, struct locabus_kccm_result* out);
/* The same without waiting: `done` runs in the listener thread (it must be
 * short) with the result, which is freed after it returns. */
typedef void (*locabus_kccm_done)(void* ctx, const struct locabus_kccm_result* result);
int locabus_kccm_call_async(locabus_kccm* k, uint16_t node, const char* name, const void* arg, size_t len,
                            int timeout_ms, locabus_kccm_done done, void* ctx);
/* One-way (the paper's asynchronous remote call): no result. 0 or -errno.
 * If it cannot run (no handler, node dead, overloaded...), `on_failure`
 * runs in the listener with why (NULL: the failure is written to stderr). */
int locabus_kccm_post(locabus_kccm* k, uint16_t node, const char* name, const void* arg, size_t len,
                      locabus_kccm_done on_failure, void* ctx);
/* Calls `name` on every node (this one included) and gathers the results
 * until all answered or the deadline: *results (count *n, free with
 * locabus_kccm_results_free()) has one per node that answered or failed;
 * *missing (count *nmissing, free()) the nodes that did not answer. -EDEADLK
 * as locabus_kccm_call(). */
int locabus_kccm_call_all(locabus_kccm* k, const char* name, const void* arg, size_t len, int timeout_ms,
                          struct locabus_kccm_result** results, size_t* n, uint16_t** missing,
                          size_t* nmissing);
void locabus_kccm_result_free(struct locabus_kccm_result* r);
void locabus_kccm_results_free(struct locabus_kccm_result* r, size_t n);

/* Membership and send_failed events of the space's connection; 1 when *out
 * was filled, 0 when there is none, -ENOTCONN. Never blocks. */
int locabus_kccm_next_event(locabus_kccm* k, struct locabus_event* out);

/* "ok", "no_such_handler", "deadline_exceeded"... */
const char* locabus_kccm_status_name(int status);

/* ---------------------------------------------------------------------
 * LocaMonitor (docs/MONITOR.md): every daemon keeps the whole cluster's
 * load table. These read the local daemon's copy: one request on its
 * control socket, no network round trip.
 * ------------------------------------------------------------------- */
enum locabus_node_state {
  LOCABUS_NODE_ALIVE = 0, /* a record within the monitor's stale time */
  LOCABUS_NODE_STALE = 1, /* silent too long, or it died or left */
};

/* One node's row, a summary of what docs/API.md's "monitor" request gives. */
struct locabus_node_load {
  uint16_t node;
  uint8_t state;           /* enum locabus_node_state */
  uint8_t self;            /* 1: the node of the daemon asked */
  uint32_t cpus;           /* online CPUs */
  uint64_t age_ms;         /* since its last record arrived */
  double cpu_busy_percent; /* over its last sampling interval */
  double load1, load5, load15;
  uint64_t mem_total, mem_available;             /* bytes */
  uint64_t swap_total, swap_free;                /* bytes */
  double net_rx_bytes_per_s, net_tx_bytes_per_s; /* all interfaces but loopback */
  uint32_t processes;
  uint32_t procs_running;
  char hostname[64]; /* NUL-terminated, cut to 63 bytes */
};

/* Copies up to `max` rows of the cluster table (by node id) into `rows`;
 * *count gets the number of rows the table has (more than `max` means
 * some were left out). socket_path NULL: the default. 0, -ENOTSUP when
 * the daemon runs without the monitor, or -errno. */
int locabus_monitor_nodes(const char* socket_path, struct locabus_node_load* rows, size_t max, size_t* count);
/* The least-loaded alive node by docs/MONITOR.md's rule (lowest load1 per
 * CPU in steps of 0.05, then most available memory, then lowest id) into
 * *node. 0, -ENOENT when no node is alive, -ENOTSUP, or -errno. */
int locabus_monitor_least_loaded(const char* socket_path, uint16_t* node);

#ifdef __cplusplus
}
#endif

#endif /* LOCABUS_LOCABUS_H */
