/* Shared buffers: one heap block each, the count and length first, the bytes
 * right behind them, so that a buffer costs one allocation and the bytes
 * need no pointer of their own.
 *
 * Design notes. A reference is only ever taken by someone who already holds
 * one, so the increment needs no ordering: it cannot race the free. Each
 * decrement releases, so that everything its thread did with the buffer
 * happens before the free, and the last one also acquires, so that the
 * freeing thread sees all of that. This is the pattern of every counted
 * object in cport (service.c), and what ThreadSanitizer checks in
 * tests/test_buf.c. */
#include <stdatomic.h>
#include <string.h>

#include "common.h"

struct cport_buf_s {
  atomic_uint refs;
  /* At most UINT32_MAX, the most a uv_buf_t holds on Windows. */
  uint32_t len;
};

/* The bytes start at the first multiple of 8 after the header, so that an
 * application may lay out 8-byte fields in them; the block itself comes
 * from malloc, which aligns at least that much. */
#define BUF_ALIGN 8
#define BUF_HEADER_SIZE \
  ((sizeof(struct cport_buf_s) + BUF_ALIGN - 1) / BUF_ALIGN * BUF_ALIGN)

#define BUF_BYTES(buf) ((uint8_t*)(buf) + BUF_HEADER_SIZE)


int cport_buf_create(cport_buf_t** out, size_t len) {
  cport_buf_t* buf;
  if (out == NULL || len == 0 || len > UINT32_MAX)
    return UV_EINVAL;
  buf = cport__malloc(BUF_HEADER_SIZE + len);
  if (buf == NULL)
    return UV_ENOMEM;
  assert(((uintptr_t)BUF_BYTES(buf) & (BUF_ALIGN - 1)) == 0);
  atomic_init(&buf->refs, 1);
  buf->len = (uint32_t)len;
  *out = buf;
  return 0;
}


int cport_buf_from(cport_buf_t** out, const void* data, size_t len) {
  cport_buf_t* buf;
  int rc;
  if (out == NULL || data == NULL)
    return UV_EINVAL;
  rc = cport_buf_create(&buf, len);
  if (rc != 0)
    return rc;
  memcpy(BUF_BYTES(buf), data, len);
  *out = buf;
  return 0;
}


uint8_t* cport_buf_data(cport_buf_t* buf) {
  return buf != NULL ? BUF_BYTES(buf) : NULL;
}


size_t cport_buf_len(const cport_buf_t* buf) {
  return buf != NULL ? buf->len : 0;
}


void cport_buf_ref(cport_buf_t* buf) {
  if (buf != NULL)
    atomic_fetch_add_explicit(&buf->refs, 1, memory_order_relaxed);
}


void cport_buf_unref(cport_buf_t* buf) {
  if (buf != NULL &&
      atomic_fetch_sub_explicit(&buf->refs, 1, memory_order_acq_rel) == 1)
    cport__free(buf);
}
