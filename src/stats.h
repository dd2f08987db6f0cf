/* A service's counters, declared once.
 *
 * CPORT__STATS is the one list of the counters each service keeps per loop.
 * It expands into the per-loop struct below, into cport_service_stats()'s
 * sum over the loops (service.c) and into a compile-time check that every
 * one is a field of the public cport_service_stats_t;
 * scripts/check-structure.sh reads it to check that docs/api/service.md
 * names each. (`active` and
 * `peak` are not here: they are one count per service, not per loop.) */
#ifndef CPORT_STATS_H
#define CPORT_STATS_H

#include <stdatomic.h>

#define CPORT__STATS(X)       \
  X(connected)                \
  X(rejected)                 \
  X(accept_errors)            \
  X(connect_failed)           \
  X(bytes_in)                 \
  X(bytes_out)                \
  X(sends)                    \
  X(packets_in)               \
  X(writes)                   \
  X(pauses)                   \
  X(queued_bytes)             \
  X(reconnects)               \
  X(disconnect_timeouts)      \
  X(disconnects_peer)         \
  X(disconnects_reset)        \
  X(disconnects_idle)         \
  X(disconnects_backpressure) \
  X(disconnects_protocol)     \
  X(disconnects_local)        \
  X(disconnects_other)        \
  X(tls_handshakes)           \
  X(tls_resumed)              \
  X(tls_failures)             \
  X(proxy_headers)            \
  X(proxy_errors)             \
  X(proxy_untrusted)

/* Each counter is written by one thread only, its service's loop, with a
 * plain load and store (no locked instruction on the hot path), and read by
 * cport_service_stats() on any thread. */
typedef struct cport__stats_s {
#define CPORT__STAT_FIELD(name) atomic_uint_least64_t name;
  CPORT__STATS(CPORT__STAT_FIELD)
#undef CPORT__STAT_FIELD
} cport__stats_t;

#define CPORT__STAT_ADD(stats, field, n)                                 \
  atomic_store_explicit(                                                 \
      &(stats)->field,                                                   \
      atomic_load_explicit(&(stats)->field, memory_order_relaxed) + (n), \
      memory_order_relaxed)

#define CPORT__STAT_SUB(stats, field, n)                                 \
  atomic_store_explicit(                                                 \
      &(stats)->field,                                                   \
      atomic_load_explicit(&(stats)->field, memory_order_relaxed) - (n), \
      memory_order_relaxed)

#endif /* CPORT_STATS_H */
