/* The receive buffer: the bytes a session's
 * consumer (on_recv, or the packet layer) left unconsumed, kept until more
 * arrive.
 *
 * Reads land in a buffer the loop shares between its sessions; the consumer
 * sees them there, without a copy. Only what it leaves is copied into the
 * session's own buffer, which is allocated when the first byte is kept,
 * grows by doubling up to the limit and is freed as soon as it empties, so
 * an idle session keeps no receive memory.
 *
 * It has no libuv or session knowledge, so that tests and the fuzzer can
 * drive it directly with any split of a stream. */
#ifndef CPORT_RECV_BUF_H
#define CPORT_RECV_BUF_H

#include <stddef.h>
#include <stdint.h>

/* A consumer's answer meaning "deliver nothing more": the session is gone
 * (or the consumer closed it). Kept bytes are left as they are. */
#define CPORT__RECV_STOP (-1)

typedef struct cport__rbuf_s {
  size_t len;
  size_t cap;
  uint8_t bytes[];
} cport__rbuf_t;

typedef struct cport__recv_ops_s {
  /* Consume bytes from the front of `data`: set `*consumed` to how many
   * (0..len) and return 0, or return CPORT__RECV_STOP. (A count apart from
   * the status, because a long is 32 bits on 64-bit Windows.) */
  int (*consume)(void* ctx, const uint8_t* data, size_t len, size_t* consumed);
  /* How many more bytes, beyond the `len` kept ones, the consumer must see
   * before it can consume any of them; 0 when it cannot tell, or could
   * consume now. Lets a framer gather just the rest of a split message,
   * after which the following ones are consumed from the shared read
   * without a copy. NULL: cannot tell (on_recv). */
  size_t (*need)(void* ctx, const uint8_t* data, size_t len);
} cport__recv_ops_t;

/* Deliver `len` new bytes at `data` behind whatever `*kept` holds, calling
 * ops->consume until everything is consumed or kept. With `len` 0, present
 * the kept bytes alone again (after a pause). `*kept` is NULL while nothing
 * is kept.
 * Returns: 0; CPORT__RECV_STOP when the consumer said so; CPORT_ERECVFULL
 *          when `limit` bytes or more are kept and the consumer took none of
 *          them (waiting for more cannot help); UV_ENOMEM. After an error
 *          the bytes not yet delivered are dropped. */
int cport__recv_feed(cport__rbuf_t** kept,
                     size_t limit,
                     const uint8_t* data,
                     size_t len,
                     const cport__recv_ops_t* ops,
                     void* ctx);

/* Bytes kept. */
static inline size_t cport__recv_kept(const cport__rbuf_t* kept) {
  return kept != NULL ? kept->len : 0;
}

/* Drop the kept bytes and their memory. */
void cport__recv_clear(cport__rbuf_t** kept);

#endif /* CPORT_RECV_BUF_H */
