/* The receive buffer; recv_buf.h describes it. */
#include <string.h>

#include "common.h"
#include "recv_buf.h"

/* First capacity of a session's buffer, which then doubles. */
#define RECV_MIN 4096


/* Room for `need` bytes; need <= limit. */
static int recv_reserve(cport__rbuf_t** kept, size_t limit, size_t need) {
  cport__rbuf_t* b = *kept;
  size_t cap = b != NULL ? b->cap : 0;
  if (need <= cap)
    return 0;
  if (cap == 0)
    cap = RECV_MIN;
  while (cap < need) cap = cap > limit / 2 ? limit : cap * 2;
  if (cap > limit)
    cap = limit;
  b = cport__realloc(b, sizeof(*b) + cap);
  if (b == NULL)
    return UV_ENOMEM;
  if (*kept == NULL)
    b->len = 0;
  b->cap = cap;
  *kept = b;
  return 0;
}


static void recv_drop_front(cport__rbuf_t** kept, size_t n) {
  cport__rbuf_t* b = *kept;
  b->len -= n;
  if (b->len == 0)
    cport__recv_clear(kept);
  else if (n > 0)
    memmove(b->bytes, b->bytes + n, b->len);
}


static int recv_keep(cport__rbuf_t** kept,
                     size_t limit,
                     const uint8_t* data,
                     size_t len) {
  size_t have = cport__recv_kept(*kept);
  int rc = recv_reserve(kept, limit, have + len);
  if (rc != 0)
    return rc;
  memcpy((*kept)->bytes + have, data, len);
  (*kept)->len = have + len;
  return 0;
}


int cport__recv_feed(cport__rbuf_t** kept,
                     size_t limit,
                     const uint8_t* data,
                     size_t len,
                     const cport__recv_ops_t* ops,
                     void* ctx) {
  size_t consumed = 0;
  int rc;
  if (len == 0 && *kept != NULL) {
    rc = ops->consume(ctx, (*kept)->bytes, (*kept)->len, &consumed);
    if (rc != 0)
      return rc;
    recv_drop_front(kept, consumed);
    return 0;
  }
  /* Kept bytes first: append new ones behind them (only as many as the
   * consumer says it needs, when it can tell, and no more than the limit
   * allows at a time) and present the whole again. */
  while (*kept != NULL && len > 0) {
    size_t have = (*kept)->len;
    size_t take = len;
    size_t want = ops->need != NULL ? ops->need(ctx, (*kept)->bytes, have) : 0;
    if (want != 0 && want < take)
      take = want;
    if (take > limit - have)
      take = limit - have;
    rc = recv_keep(kept, limit, data, take);
    if (rc != 0) {
      cport__recv_clear(kept);
      return rc;
    }
    data += take;
    len -= take;
    rc = ops->consume(ctx, (*kept)->bytes, (*kept)->len, &consumed);
    if (rc != 0)
      return rc;
    recv_drop_front(kept, consumed);
    if (*kept != NULL && (*kept)->len >= limit) {
      cport__recv_clear(kept);
      return CPORT_ERECVFULL;
    }
  }
  if (len == 0)
    return 0;
  /* Nothing kept: the consumer reads the shared buffer itself. */
  rc = ops->consume(ctx, data, len, &consumed);
  if (rc != 0)
    return rc;
  data += consumed;
  len -= consumed;
  if (len == 0)
    return 0;
  if (len >= limit)
    return CPORT_ERECVFULL;
  rc = recv_keep(kept, limit, data, len);
  if (rc != 0)
    cport__recv_clear(kept);
  return rc;
}


void cport__recv_clear(cport__rbuf_t** kept) {
  cport__free(*kept);
  *kept = NULL;
}
