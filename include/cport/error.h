/* cport: error codes.
 *
 * Every cport function that can fail returns 0 or a negative error code.
 * Codes that libuv can name are libuv's own (UV_EINVAL, UV_EADDRINUSE, ...),
 * passed through unchanged. The ones programs compare most have cport names
 * below (CPORT_EOF, CPORT_ECONNRESET, ...), equal to libuv's on every
 * system, so that `code == CPORT_EOF` needs no <uv.h>; any other UV_* name
 * works too, with <uv.h> (cport's headers do not include it). Causes libuv
 * has no name for are the CPORT_E* codes of CPORT_ERRNO_MAP, in the -5000
 * block, which libuv's -3000s and -4000s never reach. */
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
  XX(EPACKETSIZE, -5007, "packet too large")                               \
  XX(EWRONGTHREAD, -5008,                                                  \
     "called from a thread that does not run the loop or own the core")    \
  XX(ENOTLS, -5009, "cport was built without TLS")                         \
  XX(ETLS, -5010, "TLS handshake or protocol error")                       \
  XX(ETLSVERIFY, -5011, "TLS peer certificate could not be verified")      \
  XX(ETLSNAME, -5012, "TLS peer certificate does not match the host name") \
  XX(ETLSCA, -5013, "TLS peer certificate not issued by a trusted CA")     \
  XX(ETLSEXPIRED, -5014, "TLS peer certificate expired or not yet valid")  \
  XX(ETLSTRUNCATED, -5015, "TLS peer closed without close_notify (truncated)") \
  XX(EPROXY, -5016, "malformed PROXY protocol header")                     \
  XX(EPROXYSIZE, -5017, "PROXY protocol header too long")                  \
  XX(EPROXYUNTRUSTED, -5018,                                               \
     "PROXY protocol header from an address not trusted to send one")      \
  XX(EDRAINED, -5019, "service drained: still open at the drain deadline")

enum cport_errno_e {
#define CPORT__ERRNO_ENUM(name, value, text) CPORT_##name = (value),
  CPORT_ERRNO_MAP(CPORT__ERRNO_ENUM)
#undef CPORT__ERRNO_ENUM
      CPORT__ERRNO_END = -5999
};

/* libuv's codes under cport names, equal to UV_<name> wherever cport
 * runs: libuv uses the negated errno value on POSIX systems and a fixed
 * value on Windows, and so do these. The ones on_disconnected and
 * on_connect_failed report most:
 *   CPORT_EOF           the peer closed the connection (end of file)
 *   CPORT_ECONNRESET    the peer reset it (or vanished and a send found out)
 *   CPORT_ETIMEDOUT     connect_timeout_ms, or keepalive found the peer gone
 *   CPORT_ECONNREFUSED  nothing listens at the address connected to
 *   CPORT_ECANCELED     a connect cut short by a stop or destroy
 * and those cport's functions return: CPORT_EINVAL, CPORT_ENOMEM,
 * CPORT_ENOTCONN, CPORT_EADDRINUSE, CPORT_EBUSY, CPORT_EALREADY,
 * CPORT_ENOENT. */
#if defined(_WIN32)
#define CPORT__UV_CODE(posix, windows) (windows)
#else
#include <errno.h>
#define CPORT__UV_CODE(posix, windows) (-(posix))
#endif
#define CPORT_EOF (-4095)
#define CPORT_EAI_AGAIN (-3001)
#define CPORT_EAI_NONAME (-3008)
#define CPORT_EACCES CPORT__UV_CODE(EACCES, -4092)
#define CPORT_EADDRINUSE CPORT__UV_CODE(EADDRINUSE, -4091)
#define CPORT_EADDRNOTAVAIL CPORT__UV_CODE(EADDRNOTAVAIL, -4090)
#define CPORT_EAGAIN CPORT__UV_CODE(EAGAIN, -4088)
#define CPORT_EALREADY CPORT__UV_CODE(EALREADY, -4084)
#define CPORT_EBUSY CPORT__UV_CODE(EBUSY, -4082)
#define CPORT_ECANCELED CPORT__UV_CODE(ECANCELED, -4081)
#define CPORT_ECONNABORTED CPORT__UV_CODE(ECONNABORTED, -4079)
#define CPORT_ECONNREFUSED CPORT__UV_CODE(ECONNREFUSED, -4078)
#define CPORT_ECONNRESET CPORT__UV_CODE(ECONNRESET, -4077)
#define CPORT_EHOSTUNREACH CPORT__UV_CODE(EHOSTUNREACH, -4073)
#define CPORT_EINVAL CPORT__UV_CODE(EINVAL, -4071)
#define CPORT_EMFILE CPORT__UV_CODE(EMFILE, -4066)
#define CPORT_ENETUNREACH CPORT__UV_CODE(ENETUNREACH, -4062)
#define CPORT_ENOENT CPORT__UV_CODE(ENOENT, -4058)
#define CPORT_ENOMEM CPORT__UV_CODE(ENOMEM, -4057)
#define CPORT_ENOTCONN CPORT__UV_CODE(ENOTCONN, -4053)
#define CPORT_EPIPE CPORT__UV_CODE(EPIPE, -4047)
#define CPORT_ETIMEDOUT CPORT__UV_CODE(ETIMEDOUT, -4039)

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
