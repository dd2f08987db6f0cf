/* cport: error codes.
 *
 * Every cport function that can fail returns 0 or a negative error code.
 * Codes that libuv can name are libuv's own (UV_EINVAL, UV_EADDRINUSE, ...),
 * passed through unchanged, so `code == UV_EADDRINUSE` works (include <uv.h>
 * for the UV_* names; cport's headers do not). Causes libuv has
 * no name for are the CPORT_E* codes below, in the -5000 block, which libuv's
 * -3000s and -4000s never reach. */
#ifndef CPORT_ERROR_H
#define CPORT_ERROR_H

#include "cport/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* XX(name, value, text): the one list of cport's own codes. */
#define CPORT_ERRNO_MAP(XX)                                                \
  XX(ELOCAL, -5000, "disconnected by the application")                     \
  XX(ERECVFULL, -5001, "receive buffer limit reached by unconsumed bytes") \
  XX(ESENDQ, -5002, "send queue limit reached")                            \
  XX(ESTOPPED, -5003, "service stopped")                                   \
  XX(ECONSUMED, -5004, "on_recv returned more bytes than it was given")    \
  XX(EIDLE, -5005, "idle timeout")                                         \
  XX(EPACKET, -5006, "malformed packet header")                            \
  XX(EPACKETSIZE, -5007, "packet too large")

enum cport_errno_e {
#define CPORT__ERRNO_ENUM(name, value, text) CPORT_##name = (value),
  CPORT_ERRNO_MAP(CPORT__ERRNO_ENUM)
#undef CPORT__ERRNO_ENUM
      CPORT__ERRNO_END = -5999
};

/* Describe an error code: cport's own, libuv's, or 0.
 * Ownership: the returned text is static; never free it.
 * Thread:    any.
 * Returns:   a short English text; never NULL ("unknown error" for a code
 *            neither cport nor libuv defines). Unlike uv_strerror() it never
 *            allocates. */
CPORT_API const char* cport_strerror(int code);

/* The symbolic name of an error code, such as "EADDRINUSE" or "ESENDQ".
 * Ownership: static text. Thread: any.
 * Returns:   the name without prefix; "OK" for 0; "UNKNOWN" for an unknown
 *            code. */
CPORT_API const char* cport_err_name(int code);

#ifdef __cplusplus
}
#endif
#endif /* CPORT_ERROR_H */
