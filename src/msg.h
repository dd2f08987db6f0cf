/* An entry of a loop's mailbox (core_internal.h): one thing another thread
 * (or the owner, behind earlier entries) asks the loop to do. The entry is
 * embedded in whatever carries the request (a job, a send request, a
 * service's message to one of its loops), so posting never allocates. */
#ifndef CPORT_MSG_H
#define CPORT_MSG_H

#include "queue.h"

typedef struct cport__msg_s cport__msg_t;

struct cport__msg_s {
  cport__qnode_t node;
  /* Runs on the loop's thread, in mailbox order, and owns the entry from
   * then on. `next` is the entry that runs after it in the same round, or
   * NULL: a hint that lets consecutive sends to one session leave in one
   * gathered write. */
  void (*run)(cport__msg_t* m, const cport__msg_t* next);
};

#endif /* CPORT_MSG_H */
