/* cport: shared buffers.
 *
 * A buffer is a block of bytes with a reference count, made to be sent to
 * many sessions without a copy per session: a broadcast to a room, the same
 * frame to every subscriber. cport_session_send_buf() takes a reference of
 * its own for each write it queues and hands the buffer's bytes to the
 * kernel as they are, without copying them; one buffer may be queued on
 * many sessions, on many loops, at the same time.
 *
 * Contents: fill the bytes after cport_buf_create() (or let cport_buf_from()
 * copy them in), then leave them alone. Once the buffer has been handed to
 * a send, its bytes must not change until the buffer is freed, because
 * every loop that has it queued may be reading them at any moment, from
 * its own thread. To send different bytes, create another buffer.
 *
 * Lifetime: the caller holds one reference from create; every queued write
 * holds one until its write completes (or is cancelled), and
 * cport_buf_ref() adds more. The buffer is freed exactly once, by whichever
 * cport_buf_unref() drops the last reference, on whatever thread that is.
 * The caller may therefore drop its own reference right after the sends
 * have been queued. */
#ifndef CPORT_BUF_H
#define CPORT_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "cport/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cport_buf_s cport_buf_t;

/* Create a buffer of `len` bytes whose contents are unspecified, for the
 * caller to fill before the first send. The bytes are at least 8-byte
 * aligned.
 * Ownership: `*out` is written only on success and holds one reference,
 *            the caller's, dropped with cport_buf_unref().
 * Thread:    any.
 * Returns:   0; UV_EINVAL for NULL `out`, `len` 0 or `len` over UINT32_MAX
 *            (a libuv buffer's size on Windows); UV_ENOMEM. */
CPORT_API int cport_buf_create(cport_buf_t** out, size_t len);

/* Create a buffer holding a copy of the `len` bytes at `data`.
 * Ownership: `data` is copied before return; the caller keeps it. `*out` is
 *            written only on success and holds one reference, the
 *            caller's, dropped with cport_buf_unref().
 * Thread:    any.
 * Returns:   0; UV_EINVAL for NULL `out`, NULL `data`, `len` 0 or `len`
 *            over UINT32_MAX; UV_ENOMEM. */
CPORT_API int cport_buf_from(cport_buf_t** out, const void* data, size_t len);

/* The buffer's bytes, cport_buf_len() of them, valid while a reference is
 * held. Write to them only before the buffer is first sent (see the top of
 * this file).
 * Ownership: the bytes belong to the buffer; the pointer is borrowed.
 * Thread:    any, holding a reference.
 * Returns:   the bytes; NULL for NULL `buf`. */
CPORT_API uint8_t* cport_buf_data(cport_buf_t* buf);

/* The buffer's length in bytes, fixed at creation.
 * Thread:  any, holding a reference.
 * Returns: the length (1 to UINT32_MAX); 0 for NULL `buf`. */
CPORT_API size_t cport_buf_len(const cport_buf_t* buf);

/* Take a reference: the buffer stays valid until the matching
 * cport_buf_unref().
 * Ownership: each call must be paired with one cport_buf_unref().
 * Thread:    any, holding a reference (the count is atomic). Accepts NULL. */
CPORT_API void cport_buf_ref(cport_buf_t* buf);

/* Drop a reference taken by cport_buf_create(), cport_buf_from() or
 * cport_buf_ref(). The last reference, the caller's or a queued write's,
 * frees the buffer; do not touch it after dropping your last reference.
 * Thread: any (the count is atomic). Accepts NULL. */
CPORT_API void cport_buf_unref(cport_buf_t* buf);

#ifdef __cplusplus
}
#endif
#endif /* CPORT_BUF_H */
