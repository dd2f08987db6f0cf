/* The one list type of cport: an intrusive doubly linked queue.
 *
 * Every list in src/ is one of these: a loop's mailbox, a session's send
 * queue, a service's sessions, the timeout lists, the reconnect timers and
 * the free lists of the send pool. The node lives inside the listed object
 * (cport__container_of gets the object back), so linking never allocates
 * and cannot fail, and unlinking any node is O(1).
 *
 * A zero-filled queue is empty and a zero-filled node is unlinked, so
 * objects from calloc need no set-up. Not thread-safe: every queue belongs
 * to one thread, or to the lock that guards it. */
#ifndef CPORT_QUEUE_H
#define CPORT_QUEUE_H

#include <stddef.h>

typedef struct cport__qnode_s {
  struct cport__qnode_s* next;
  struct cport__qnode_s* prev;
} cport__qnode_t;

typedef struct cport__queue_s {
  cport__qnode_t* head;
  cport__qnode_t* tail;
} cport__queue_t;

static inline int cport__queue_empty(const cport__queue_t* q) {
  return q->head == NULL;
}

static inline cport__qnode_t* cport__queue_head(const cport__queue_t* q) {
  return q->head;
}

static inline cport__qnode_t* cport__queue_tail(const cport__queue_t* q) {
  return q->tail;
}

/* Non-zero if `n` is linked into `q` (a node is in one queue at a time). */
static inline int cport__queue_linked(const cport__queue_t* q,
                                      const cport__qnode_t* n) {
  return n->prev != NULL || q->head == n;
}

static inline void cport__queue_push(cport__queue_t* q, cport__qnode_t* n) {
  n->next = NULL;
  n->prev = q->tail;
  if (q->tail != NULL)
    q->tail->next = n;
  else
    q->head = n;
  q->tail = n;
}

static inline void cport__queue_push_front(cport__queue_t* q,
                                           cport__qnode_t* n) {
  n->prev = NULL;
  n->next = q->head;
  if (q->head != NULL)
    q->head->prev = n;
  else
    q->tail = n;
  q->head = n;
}

static inline void cport__queue_remove(cport__queue_t* q, cport__qnode_t* n) {
  if (n->prev != NULL)
    n->prev->next = n->next;
  else
    q->head = n->next;
  if (n->next != NULL)
    n->next->prev = n->prev;
  else
    q->tail = n->prev;
  n->next = n->prev = NULL;
}

/* Unlink and return the oldest node, or NULL. */
static inline cport__qnode_t* cport__queue_pop(cport__queue_t* q) {
  cport__qnode_t* n = q->head;
  if (n != NULL)
    cport__queue_remove(q, n);
  return n;
}

/* Move every node of `from` to the tail of `to`, in order; `from` is left
 * empty. */
static inline void cport__queue_move(cport__queue_t* from, cport__queue_t* to) {
  if (from->head == NULL)
    return;
  if (to->tail != NULL) {
    to->tail->next = from->head;
    from->head->prev = to->tail;
  } else {
    to->head = from->head;
  }
  to->tail = from->tail;
  from->head = from->tail = NULL;
}

#endif /* CPORT_QUEUE_H */
