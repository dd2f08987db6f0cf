/* Send requests and their per-loop pool.
 *
 * Every send owns its bytes until the kernel has them, which costs one heap
 * block per send. Recycling the blocks per loop makes that block nearly
 * free: no malloc, no page faults from an allocator that trims its heap
 * after a large free and grows it again on the next send. The pool is only
 * touched from its loop's thread, so it needs no lock. */
#include "send_req.h"

static const uint32_t class_size[CPORT__SEND_CLASSES] = {
    0, 64, 256, 1024, 4096, 16384, 65536};


static uint32_t send_class(size_t len) {
  uint32_t c;
  for (c = 0; c < CPORT__SEND_CLASSES; c++)
    if (len <= class_size[c])
      return c;
  return CPORT__SEND_CLASSES;
}


/* The bytes of a pooled request's block of class `c`. */
static size_t class_block(uint32_t c) {
  return sizeof(cport__send_req_t) + class_size[c];
}


size_t cport__send_req_cost(size_t room, size_t shared_len, int pooled) {
  uint32_t c = pooled ? send_class(room) : CPORT__SEND_CLASSES;
  return (c < CPORT__SEND_CLASSES ? class_block(c)
                                  : sizeof(cport__send_req_t) + room) +
         shared_len;
}


size_t cport__send_req_charge(const cport__send_req_t* r) {
  /* A request of a shared buffer has no room of its own; any other holds
   * its bytes. */
  size_t room = r->buf != NULL ? 0 : r->len;
  size_t shared_len = r->buf != NULL ? r->len : 0;
  return r->cls < CPORT__SEND_CLASSES
             ? class_block(r->cls) + shared_len
             : sizeof(cport__send_req_t) + room + shared_len;
}


cport__send_req_t* cport__send_req_get(cport__send_pool_t* pool, size_t len) {
  uint32_t c = send_class(len);
  cport__send_req_t* r;
  if (c < CPORT__SEND_CLASSES && !cport__queue_empty(&pool->free[c])) {
    r = cport__container_of(cport__queue_pop(&pool->free[c]),
                            cport__send_req_t, msg.node);
    pool->count[c]--;
  } else {
    r = cport__malloc(sizeof(*r) +
                      (c < CPORT__SEND_CLASSES ? class_size[c] : len));
    if (r == NULL)
      return NULL;
    r->cls = (uint16_t)c;
  }
  r->msg.node.next = r->msg.node.prev = NULL;
  r->msg.run = NULL;
  r->len = (uint32_t)len;
  r->off = 0;
  r->nbatch = 0;
  r->op = CPORT__OP_SEND;
  r->buf = NULL;
  return r;
}


cport__send_req_t* cport__send_req_alloc(size_t len) {
  cport__send_req_t* r = cport__malloc(sizeof(*r) + len);
  if (r == NULL)
    return NULL;
  r->msg.node.next = r->msg.node.prev = NULL;
  r->msg.run = NULL;
  r->len = (uint32_t)len;
  r->off = 0;
  r->nbatch = 0;
  r->cls = CPORT__SEND_CLASSES;
  r->op = CPORT__OP_SEND;
  r->buf = NULL;
  return r;
}


void cport__send_req_put(cport__send_pool_t* pool, cport__send_req_t* r) {
  uint32_t c = r->cls;
  if (r->buf != NULL) {
    cport_buf_unref(r->buf);
    r->buf = NULL;
  }
  if (c < CPORT__SEND_CLASSES && (size_t)(pool->count[c] + 1) * class_block(c) <=
                                     CPORT__SEND_POOL_CLASS_BYTES) {
    /* Last in, first out: the block reused next is the warmest. */
    cport__queue_push_front(&pool->free[c], &r->msg.node);
    pool->count[c]++;
    return;
  }
  cport__free(r);
}


void cport__send_pool_clear(cport__send_pool_t* pool) {
  uint32_t c;
  for (c = 0; c < CPORT__SEND_CLASSES; c++) {
    cport__qnode_t* n;
    while ((n = cport__queue_pop(&pool->free[c])) != NULL)
      cport__free(cport__container_of(n, cport__send_req_t, msg.node));
    pool->count[c] = 0;
  }
}


size_t cport__send_pool_cached(const cport__send_pool_t* pool) {
  size_t bytes = 0;
  uint32_t c;
  for (c = 0; c < CPORT__SEND_CLASSES; c++)
    bytes += (size_t)pool->count[c] * class_block(c);
  return bytes;
}
