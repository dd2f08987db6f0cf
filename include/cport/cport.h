/* cport: asynchronous TCP servers and clients in C, after the IOCP
 * game-server model (Service, Listener, Session, OnConnected / OnRecv /
 * OnSend / OnDisconnected), driven by libuv on every OS.
 *
 * Include this one header; it includes the others. */
#ifndef CPORT_CPORT_H
#define CPORT_CPORT_H

#define CPORT_VERSION_MAJOR 0
#define CPORT_VERSION_MINOR 5
#define CPORT_VERSION_PATCH 0

/* The version as one number, 0x00MMmmpp (0.4.0 is 0x000400), for
 * `#if CPORT_VERSION_HEX >= 0x000400`, and as text, "0.4.0". */
#define CPORT_VERSION_HEX                                     \
  ((CPORT_VERSION_MAJOR << 16) | (CPORT_VERSION_MINOR << 8) | \
   CPORT_VERSION_PATCH)
#define CPORT__VERSION_TEXT(major, minor, patch) #major "." #minor "." #patch
#define CPORT__VERSION_EXPAND(major, minor, patch) \
  CPORT__VERSION_TEXT(major, minor, patch)
#define CPORT_VERSION_STRING                                      \
  CPORT__VERSION_EXPAND(CPORT_VERSION_MAJOR, CPORT_VERSION_MINOR, \
                        CPORT_VERSION_PATCH)

#include "cport/export.h"
#include "cport/error.h"
#include "cport/addr.h"
#include "cport/buf.h"
#include "cport/core.h"
#include "cport/log.h"
#include "cport/packet.h"
#include "cport/proxy.h"
#include "cport/session.h"
#include "cport/service.h"
#include "cport/timer.h"
#include "cport/tls.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the cport library the program runs with, "0.4.0": the
 * CPORT_VERSION_STRING it was built with, which differs from the program's
 * own CPORT_VERSION_STRING when a newer shared library is loaded.
 * Ownership: static text; never free it.
 * Thread:    any.
 * Returns:   the text, never NULL. */
CPORT_API const char* cport_version(void);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_CPORT_H */
