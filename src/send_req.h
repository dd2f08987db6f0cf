/* Send requests (one per send, owning its bytes) and the per-loop pool they
 * come from. A request is one heap block: the uv_write_t, a little bookkeeping
 * and the bytes it owns until the kernel has them. */
#ifndef CPORT_SEND_REQ_H
#define CPORT_SEND_REQ_H

#include "common.h"
#include "msg.h"
#include "queue.h"

/* Requests whose bytes fit one of these capacities are recycled through the
 * loop's pool; bigger ones are allocated to size and freed after use. The
 * smallest class holds no bytes at all (a shared buffer's request); each
 * other is at most four times the one below, so a request never holds
 * more than four times its bytes; the largest matches the loop's read
 * chunk, so an echo of anything one read returns never reaches malloc
 * once the pool is warm. */
#define CPORT__SEND_CLASSES 7
/* Bytes of free requests one class may keep, so that a burst of queued
 * sends does not pin its peak memory for the life of the loop. */
#define CPORT__SEND_POOL_CLASS_BYTES (512 * 1024)

typedef struct cport__send_req_s cport__send_req_t;

struct cport__send_req_s {
  uv_write_t req;
  /* In a loop's mailbox while another thread hands it over (msg.run set,
   * the session in req.data); else msg.node links it into a session's send
   * queue or the pool's free list. */
  cport__msg_t msg;
  /* Bytes of the send, and how many of them a direct write already took. */
  uint32_t len;
  uint32_t off;
  /* In the first request of a uv_write: how many requests it carries (the
   * head of the session's send queue). */
  uint32_t nbatch;
  /* Size class index, or CPORT__SEND_CLASSES for an unpooled request. */
  uint16_t cls;
  /* What a request queued by another thread asks of its loop
   * (cport__send_op_t); CPORT__OP_SEND everywhere else. */
  uint16_t op;
  /* A shared buffer whose bytes this request sends instead of data[], with
   * one reference of its own, or NULL. */
  cport_buf_t* buf;
  uint8_t data[];
};

/* What a request in a loop's mailbox asks of its session. */
typedef enum {
  CPORT__OP_SEND = 0,   /* data[0, len) are bytes to send */
  CPORT__OP_DISCONNECT, /* graceful disconnect; data holds the cause text,
                           len its length, or 0 for the default cause */
  CPORT__OP_SENDQ,      /* forced close with CPORT_ESENDQ (at most one per
                           session) */
  CPORT__OP_RESUME      /* the packets a session kept when it used up its
                           packet_budget, and reading again (at most one
                           per session at a time) */
} cport__send_op_t;

/* A zero-filled pool is empty and ready. */
typedef struct cport__send_pool_s {
  cport__queue_t free[CPORT__SEND_CLASSES];
  unsigned count[CPORT__SEND_CLASSES];
} cport__send_pool_t;

/* A request with room for `len` bytes (len <= UINT32_MAX), from the pool
 * when one is free. Thread: the pool's loop. Returns NULL when out of
 * memory. */
CPORT__NODISCARD cport__send_req_t* cport__send_req_get(
    cport__send_pool_t* pool, size_t len);

/* A request with room for `len` bytes outside any pool, for threads that
 * do not own one (len <= UINT32_MAX). It can still be given back to a
 * loop's pool, which frees it. Thread: any. Returns NULL when out of
 * memory. */
CPORT__NODISCARD cport__send_req_t* cport__send_req_alloc(size_t len);

/* What a send costs its session against send_queue_limit: the memory it
 * holds, that is the request's block (header and room for `room` bytes, as
 * the pool or malloc gives it: `pooled` for the pool) and, for a shared
 * buffer, the buffer's `shared_len` bytes, which the request keeps alive.
 * Charging the bytes alone let a queue of 1-byte sends hold 500 times its
 * limit. Thread: any. */
size_t cport__send_req_cost(size_t room, size_t shared_len, int pooled);

/* The cost of request `r` (cport__send_req_cost as it was made). */
size_t cport__send_req_charge(const cport__send_req_t* r);

/* The bytes the request sends: its own, or its shared buffer's. */
static inline uint8_t* cport__send_req_bytes(cport__send_req_t* r) {
  return r->buf != NULL ? cport_buf_data(r->buf) : r->data;
}

/* Give a request back (dropping its buffer reference, if any): kept for reuse
 * while its class has room, freed otherwise. Thread: the pool's loop. */
void cport__send_req_put(cport__send_pool_t* pool, cport__send_req_t* r);

/* Free every cached request (loop shutdown). */
void cport__send_pool_clear(cport__send_pool_t* pool);

/* Bytes held by free requests (for tests). */
size_t cport__send_pool_cached(const cport__send_pool_t* pool);

#endif /* CPORT_SEND_REQ_H */
