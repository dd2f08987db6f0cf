/* Timeouts: three lists in deadline order and one timer (timeouts.h). */
#include "timeouts.h"

uint64_t cport__clock_ms(void) {
  return uv_hrtime() / 1000000u;
}


static void timeouts_tick_cb(uv_timer_t* timer);

/* Make sure the tick fires by `deadline` (cport__clock_ms time). The
 * lists only grow at their tails, with deadlines no earlier than their
 * heads', so this is needed only when an entry lands in an empty list, and
 * after each tick. */
static void timeouts_arm(cport__timeouts_t* t, uint64_t deadline) {
  uint64_t now;
  uint64_t delay;
  if (!t->open)
    return;
  now = cport__clock_ms();
  /* uv_timer_start counts from the loop's time, which may lag: the tick
   * may then come early, finds nothing due, and arms itself again. */
  delay = deadline > now ? deadline - now : 0;
  if (!uv_is_active((uv_handle_t*)&t->tick) ||
      uv_timer_get_due_in(&t->tick) > delay)
    uv_timer_start(&t->tick, timeouts_tick_cb, delay, 0);
}


/* Due time of a list's head, or UINT64_MAX. */
static uint64_t timeouts_due(const cport__timeouts_t* t,
                             cport__timeout_kind_t kind) {
  const cport__qnode_t* head = cport__queue_head(&t->lists[kind]);
  if (head == NULL)
    return UINT64_MAX;
  return cport__container_of(head, cport__timed_t, node)->since + t->ms[kind];
}


static void timeouts_tick_cb(uv_timer_t* timer) {
  cport__timeouts_t* t = cport__container_of(timer, cport__timeouts_t, tick);
  uint64_t now = cport__clock_ms();
  uint64_t next = UINT64_MAX;
  int kind;
  /* Each due entry is unlinked before its owner hears of it, so every loop
   * ends whatever the owner does. */
  for (kind = 0; kind < CPORT__TIMEOUT_KINDS; kind++) {
    while (t->open && timeouts_due(t, kind) <= now) {
      cport__qnode_t* n = cport__queue_pop(&t->lists[kind]);
      t->expired(t, kind, cport__container_of(n, cport__timed_t, node));
    }
  }
  for (kind = 0; kind < CPORT__TIMEOUT_KINDS; kind++)
    if (timeouts_due(t, kind) < next)
      next = timeouts_due(t, kind);
  if (next != UINT64_MAX)
    timeouts_arm(t, next);
}


int cport__timeouts_init(cport__timeouts_t* t,
                         uv_loop_t* loop,
                         const unsigned ms[],
                         cport__timeout_fn expired,
                         void* owner) {
  int kind;
  int rc = uv_timer_init(loop, &t->tick);
  if (rc != 0)
    return rc;
  for (kind = 0; kind < CPORT__TIMEOUT_KINDS; kind++) {
    t->ms[kind] = ms[kind];
    t->lists[kind].head = t->lists[kind].tail = NULL;
  }
  t->expired = expired;
  t->owner = owner;
  t->open = 1;
  return 0;
}


void cport__timeouts_close(cport__timeouts_t* t, void* data, uv_close_cb cb) {
  t->open = 0;
  t->tick.data = data;
  uv_close((uv_handle_t*)&t->tick, cb);
}


void cport__timeouts_add(cport__timeouts_t* t,
                         cport__timeout_kind_t kind,
                         cport__timed_t* e) {
  uint64_t now;
  int was_empty;
  if (t->ms[kind] == 0 || !t->open)
    return;
  now = cport__clock_ms();
  was_empty = cport__queue_empty(&t->lists[kind]);
  e->since = now;
  cport__queue_push(&t->lists[kind], &e->node);
  if (was_empty)
    timeouts_arm(t, now + t->ms[kind]);
}


void cport__timeouts_touch(cport__timeouts_t* t,
                           cport__timeout_kind_t kind,
                           cport__timed_t* e) {
  cport__queue_t* l = &t->lists[kind];
  if (!cport__queue_linked(l, &e->node))
    return;
  if (cport__queue_tail(l) != &e->node) {
    cport__queue_remove(l, &e->node);
    cport__queue_push(l, &e->node);
  }
  /* The same clock as every other entry's, or the list would fall out of
   * deadline order. */
  e->since = cport__clock_ms();
}


void cport__timeouts_remove(cport__timeouts_t* t,
                            cport__timeout_kind_t kind,
                            cport__timed_t* e) {
  if (cport__queue_linked(&t->lists[kind], &e->node))
    cport__queue_remove(&t->lists[kind], &e->node);
}
