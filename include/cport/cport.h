/* cport: asynchronous TCP servers and clients in C, after the IOCP
 * game-server model (Service, Listener, Session, OnConnected / OnRecv /
 * OnSend / OnDisconnected), driven by libuv on every OS.
 *
 * Include this one header; it includes the others. */
#ifndef CPORT_CPORT_H
#define CPORT_CPORT_H

#define CPORT_VERSION_MAJOR 0
#define CPORT_VERSION_MINOR 4
#define CPORT_VERSION_PATCH 0

#include "cport/export.h"
#include "cport/error.h"
#include "cport/addr.h"
#include "cport/buf.h"
#include "cport/core.h"
#include "cport/log.h"
#include "cport/packet.h"
#include "cport/session.h"
#include "cport/service.h"

#endif /* CPORT_CPORT_H */
