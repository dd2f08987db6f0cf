/* cport: services (servers and clients).
 *
 * A service is a set of sessions that share callbacks and limits. A server
 * service listens on an address and accepts sessions; a client service
 * connects sessions to an address. The application gives the callbacks and
 * the size of a per-session user area, the service creates the sessions.
 *
 * Typical server:
 *
 *   cport_service_opts_t o;
 *   cport_service_opts_init(&o);
 *   o.cbs.on_recv = echo_recv;            // size_t (*)(s, data, len)
 *   cport_service_create(&svc, core, CPORT_SERVICE_SERVER, &addr, &o);
 *   if ((rc = cport_service_start(svc)) != 0)   // bind and listen errors
 *     fprintf(stderr, "%s\n", cport_strerror(rc));
 */
#ifndef CPORT_SERVICE_H
#define CPORT_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "cport/addr.h"
#include "cport/core.h"
#include "cport/export.h"
#include "cport/packet.h"
#include "cport/proxy.h"
#include "cport/session.h"
#include "cport/tls.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cport_service_kind_e {
  CPORT_SERVICE_SERVER = 1, /* listens on the address, accepts sessions */
  CPORT_SERVICE_CLIENT = 2  /* connects sessions to the address */
} cport_service_kind_t;

/* What happens when a session's send queue holds send_queue_limit bytes of
 * memory or more (cport_session_queued_bytes). In both cases
 * cport_session_send() refuses further sends with CPORT_ESENDQ, so memory
 * stays bounded and nothing is dropped without the caller knowing. */
typedef enum cport_sendq_policy_e {
  /* When a send made inside the session's own on_recv finds or leaves the
   * queue at the limit, stop reading from the peer until the queue drains to
   * half the limit, then read again. Right for request/response protocols
   * such as echo: a peer that sends but never reads is simply no longer
   * read. Sends made outside on_recv never stop reading (the peer may be
   * waiting for us to read); they are bounded by CPORT_ESENDQ alone. */
  CPORT_SENDQ_PAUSE_READ = 0,
  /* Disconnect the session with cause CPORT_ESENDQ, at once and with a TCP
   * reset: its queued sends are dropped, and the kernel drops what it still
   * held for the peer too, rather than keep the socket and its buffer while
   * it retries a peer that does not read. Right for broadcast servers where
   * a slow reader must not hold the others back. */
  CPORT_SENDQ_DISCONNECT = 1
} cport_sendq_policy_t;

/* Client services: what happens after a connect fails (or cannot start) or
 * a connected session ends for a reason other than
 * cport_session_disconnect() or a stop. A session that ended before it
 * was up reconnect_reset_ms counts as a failed attempt. */
typedef enum cport_reconnect_e {
  CPORT_RECONNECT_NONE = 0,       /* nothing (the default) */
  CPORT_RECONNECT_FIXED = 1,      /* connect again after reconnect_delay_ms */
  CPORT_RECONNECT_EXPONENTIAL = 2 /* after reconnect_delay_ms, doubled for
                                     each failed attempt in a row, at most
                                     reconnect_max_ms */
} cport_reconnect_t;

/* The application's event handlers. Every callback runs on the session's
 * loop thread; NULL members are skipped (a NULL on_recv consumes all). */
typedef struct cport_session_cbs_s {
  /* The connection is up: accepted (server) or connected (client). */
  void (*on_connected)(cport_session_t* s);
  /* Bytes arrived. `data` holds first whatever the previous call left
   * unconsumed, then the new bytes. Return how many bytes from the front were
   * consumed (0..len); the rest is kept and presented again, first, when more
   * bytes arrive, or when reading resumes after a send-queue pause (so bytes
   * left because a send returned CPORT_ESENDQ are not stranded). `data` is
   * valid during the call only. */
  size_t (*on_recv)(cport_session_t* s, const uint8_t* data, size_t len);
  /* Packet services: one whole packet arrived (packet.h), with its `id`
   * (0 for a format without one) and its `len` payload bytes, header
   * excluded. Setting it makes the service frame its input in
   * opts.packet's format; on_recv must then be NULL. `payload` is valid
   * during the call only (it may lie in a buffer the loop reuses). When
   * a send made here fills the session's send queue under
   * CPORT_SENDQ_PAUSE_READ, the next packets wait, kept, until the queue
   * drains, exactly like the bytes an on_recv leaves. */
  void (*on_packet)(cport_session_t* s,
                    unsigned id,
                    const uint8_t* payload,
                    size_t len);
  /* One cport_session_send() of `len` bytes has been written to the kernel.
   * Not reported for sends a forced close dropped or cancelled, nor once
   * cport_service_destroy() has returned. */
  void (*on_send)(cport_session_t* s, size_t len);
  /* The session is over; runs exactly once for every session that reached
   * on_connected. `code` says why: UV_EOF (peer closed), UV_ECONNRESET and
   * other libuv codes, CPORT_ELOCAL (cport_session_disconnect), CPORT_ESTOPPED,
   * CPORT_ERECVFULL, CPORT_ESENDQ, CPORT_ECONSUMED, CPORT_EIDLE,
   * CPORT_EPACKET, CPORT_EPACKETSIZE, CPORT_EDRAINED (open at the
   * deadline of cport_service_drain); on TLS sessions also CPORT_ETLS (a
   * TLS protocol error or fatal alert, with OpenSSL's reason in `cause`)
   * and CPORT_ETLSTRUNCATED (the connection ended without the peer's
   * close_notify; a peer's close_notify gives UV_EOF). `cause` is
   * readable text (the string given to cport_session_disconnect for
   * CPORT_ELOCAL), valid during the call. No callback of `s` runs after
   * this one. */
  void (*on_disconnected)(cport_session_t* s, int code, const char* cause);
  /* Client services: one connect attempt failed with `code` (for example
   * UV_ECONNREFUSED, UV_ETIMEDOUT after connect_timeout_ms, or UV_ECANCELED
   * when the service was stopped or destroyed first). Every attempt of a
   * reconnect policy that fails is reported here, once, also one that could
   * not even start (UV_EMFILE, UV_ENOMEM, ...): under a policy that
   * includes the connects of cport_service_start() and
   * cport_service_connect(), reported after the call has returned. */
  void (*on_connect_failed)(cport_service_t* svc, int code);
} cport_session_cbs_t;

typedef struct cport_service_opts_s {
  cport_session_cbs_t cbs;
  /* Bytes of per-session user area (cport_session_user). Default 0. A size
   * that would make a session block larger than PTRDIFF_MAX is refused
   * with UV_EINVAL. */
  size_t user_size;
  /* Server: most open sessions, counting those still closing (each holds a
   * socket); connections past it are accepted and closed at once, and
   * counted as rejected. 0 means no limit. Default 10000. */
  unsigned max_sessions;
  /* Client: sessions cport_service_start() connects. Default 1. */
  unsigned connect_count;
  /* Most bytes a session keeps for on_recv between reads: what on_recv left
   * unconsumed plus what arrives behind it. A session whose kept bytes reach
   * the limit while on_recv consumes nothing of them is disconnected with
   * CPORT_ERECVFULL. (A single read, up to 64 KiB, is presented whole even
   * when the limit is smaller; only what on_recv leaves of it counts.) Idle
   * sessions keep no receive memory at all. Default 256 KiB; at least 1. */
  size_t recv_buffer_limit;
  /* Packet services (cbs.on_packet set): the header layout of received
   * packets, and of cport_session_send_packet() on any service. Default:
   * the default layout (cport_packet_format_init). A packet service keeps at
   * most one partial packet, plus one read while a send-queue pause or its
   * packet_budget holds whole packets back, so recv_buffer_limit does not
   * apply to it: max_packet bounds its receive memory instead. */
  cport_packet_format_t packet;
  /* Memory of queued sends at which send_queue_policy applies: each send
   * counts its bytes plus its request (about 240 bytes on 64-bit systems,
   * with the bytes' room rounded up to the pool's size class: 64 bytes at
   * least, else at most four times them), so that many tiny sends are
   * bounded as well as a few big ones. A shared buffer counts its whole
   * length for every session it waits for. Default 1 MiB; at least 1. */
  size_t send_queue_limit;
  cport_sendq_policy_t send_queue_policy; /* default CPORT_SENDQ_PAUSE_READ */
  /* listen() backlog for servers. Default 511. */
  int backlog;
  /* Which loop of the core the service runs on. Default 0. */
  unsigned loop;
  /* User pointer, see cport_service_get_data(). Default NULL. */
  void* data;
  /* Non-zero (the default): set TCP_NODELAY on every session, so that a
   * small send leaves at once instead of waiting for the peer's ACK of the
   * previous one (Nagle's algorithm). Request/response and game traffic want
   * this; 0 lets the kernel coalesce small writes. */
  int tcp_nodelay;
  /* Servers on a core of several loops: non-zero (the default) spreads the
   * accepted connections over every loop of the core in turn (round robin,
   * the service's own loop included), each session then living on its
   * loop's thread; 0 keeps them all on `loop`. The listener stays on
   * `loop`. Ignored for clients and for a core of one loop. */
  int spread;
  /* A session silent both ways for this many milliseconds, nothing
   * received and nothing sent, is disconnected with CPORT_EIDLE ("idle
   * timeout"); a peer that trickles a byte now and then resets it each
   * time, and so does every send that reaches the kernel, or a write that
   * a slow peer takes little by little. With nothing left to send the close
   * is graceful; a session whose queued sends made no progress for a whole
   * timeout (its peer reads nothing; found after one to two timeouts) is
   * reset at once instead, like CPORT_SENDQ_DISCONNECT, so that neither its
   * queue nor the kernel's buffer waits for disconnect_timeout_ms. One
   * timer per loop serves every session of the service (a list kept in
   * order of last activity), so 100 000 sessions cost no more timers than
   * one. Times are read from the monotonic clock, not the loop's cached
   * time, so a long callback does not make a timeout expire early. 0 (the
   * default): never. */
  unsigned idle_timeout_ms;
  /* Clients: a connect that has not completed after this many milliseconds
   * fails with UV_ETIMEDOUT (on_connect_failed). On a host name it bounds
   * the whole attempt: the lookup and every address tried. 0 (the default): the
   * operating system's own limit, often minutes. */
  unsigned connect_timeout_ms;
  /* Clients on a host name whose lookup gives several addresses: they are
   * raced (RFC 8305, Happy Eyeballs), the IPv4 and IPv6 ones alternating
   * from the lookup's first, the next started this many milliseconds after
   * the previous one, or at once when that one fails; the first to connect
   * is kept and the others are closed unreported. So a name whose IPv6
   * address never answers still connects over IPv4 in about this long
   * rather than after a timeout. At most 8 connects race at once.
   * connect_timeout_ms bounds the whole race. 0: one address at a time,
   * the next only once the previous has failed (0.4.x). Default 250 (the
   * RFC's). Since 0.5.0. */
  unsigned connect_attempt_delay_ms;
  /* A graceful disconnect (cport_session_disconnect, a stop, the peer's
   * EOF, an idle timeout) whose queued bytes have not all been written
   * after this many milliseconds, because the peer does not read, is closed
   * at once; its code stays the disconnect's own, and
   * stats.disconnect_timeouts counts it. 0: wait for ever. Default 30000. */
  unsigned disconnect_timeout_ms;
  /* Non-zero: TCP keepalive on every session, first probe after this many
   * seconds of silence (uv_tcp_keepalive), so that a peer that vanished
   * without a FIN or RST is found (UV_ETIMEDOUT). Default 0: off. */
  unsigned tcp_keepalive_s;
  /* Clients: reconnect after a failed connect, or after a session ends for
   * any cause but cport_session_disconnect() or a stop. Default
   * CPORT_RECONNECT_NONE. */
  cport_reconnect_t reconnect;
  /* The delay of CPORT_RECONNECT_FIXED, and the base of EXPONENTIAL, which
   * waits it after a session that stayed up reconnect_reset_ms and doubles
   * it for each failed attempt in a row (2x after the first failure).
   * Default 1000; at least 1. */
  unsigned reconnect_delay_ms;
  /* The cap: no reconnect waits longer than this or reconnect_delay_ms,
   * whichever is larger, jitter included, under either policy. Default
   * 30000. */
  unsigned reconnect_max_ms;
  /* Jitter, 0 to 100: each wait is drawn at random (uniformly, in whole
   * ms) from the base delay less this percentage of it to the base plus
   * this percentage, cut at the cap and at 1 ms, so that clients that lost
   * the same server do not all come back at the same moment. At the cap
   * the jitter only shortens the wait. Default 20. */
  unsigned reconnect_jitter_pct;
  /* Clients under a reconnect policy: a session that ends (for a cause
   * the policy reconnects after) less than this many milliseconds after
   * its connect completed counts as one more failed attempt of that
   * connect, so that a server that accepts and closes at once meets the
   * back-off rather than a reconnect every reconnect_delay_ms; one that
   * stayed up this long starts over at attempt 1. Timed with uv_hrtime(),
   * not the loop's cached time. 0: every lost session starts over at
   * attempt 1 (0.4.1's behaviour). Default 5000, which limits a slot to
   * about one reconnect per 5 s against a server that keeps dropping it,
   * even while the back-off is still short. Each session block of a
   * client that sets a policy and a non-zero value is 16 bytes larger
   * (64-bit systems). Since 0.5.0. */
  unsigned reconnect_reset_ms;
  /* Packet services: the most packets on_packet gets from one session in
   * one round of its loop. The rest wait, whole, in the session's
   * receive buffer (reading from that peer paused meanwhile) and come in
   * the next round, after the loop has served its other sessions, timers
   * and jobs: a peer that packs thousands of small requests into one write
   * cannot hold the loop for all of them. Each yield costs a round trip
   * through the loop's mailbox, so keep it well above what one read
   * usually carries. 0: no limit. Default 1024 (a 64 KiB read of the
   * smallest packets of the default format holds 16 384). Since 0.5.0. */
  unsigned packet_budget;
  /* TLS (tls.h): a context of the service's side (CPORT_TLS_SERVER for a
   * server, CPORT_TLS_CLIENT for a client), or NULL (the default) for
   * plain TCP. The service takes a reference. Sessions then report
   * on_connected after the handshake; a server's connection whose
   * handshake fails is closed unreported (stats.tls_failures), a client's
   * is a failed connect attempt (on_connect_failed with CPORT_ETLS,
   * CPORT_ETLSNAME, CPORT_ETLSCA, CPORT_ETLSEXPIRED, CPORT_ETLSVERIFY or
   * UV_ETIMEDOUT) under the reconnect policy like any other. Since
   * 0.5.0. */
  cport_tls_t* tls;
  /* Clients: the name sent by SNI and verified in the server's
   * certificate; copied. Default NULL: the service's host name, or for a
   * numeric address no SNI and the IP address verified. A client of a
   * local endpoint (a path is no host name) must set it. */
  const char* tls_name;
  /* A handshake not complete after this many milliseconds ends the
   * connection (UV_ETIMEDOUT). 0: no limit. Default 10000. */
  unsigned tls_handshake_timeout_ms;
  /* Servers behind a load balancer: every connection must begin with a
   * PROXY protocol header (proxy.h) of this version (CPORT_PROXY_ANY:
   * either), read before anything else, TLS included; on_connected
   * follows it, and cport_session_peer_addr() then gives the client's
   * address from the header (cport_session_proxy_addr() the balancer's,
   * cport_session_proxy() the rest). A connection whose header is
   * malformed (stats.proxy_errors), longer than proxy_max_header, late
   * (proxy_timeout_ms), or that comes from an address proxy_trusted does
   * not list (stats.proxy_untrusted) is closed unreported, before any of
   * its bytes reach on_recv or on_packet, with a debug log line giving
   * the cause. Never guessed: with CPORT_PROXY_OFF (the default) bytes
   * that look like a header are the application's. Since 0.5.0. */
  cport_proxy_t proxy_protocol;
  /* The balancers allowed to send headers: a comma-separated list of
   * addresses and networks, "10.0.0.0/8, 127.0.0.1, fd00::/8" (copied).
   * A connection from any other address is closed at once (it may be a
   * client trying to forge its address). NULL (the default): any source,
   * for servers that only a balancer can reach. */
  const char* proxy_trusted;
  /* The header must be complete within this many milliseconds of the
   * accept (UV_ETIMEDOUT). 0: no limit. Default 3000. */
  unsigned proxy_timeout_ms;
  /* The longest header taken, TLVs included (v1 lines are at most 107
   * bytes whatever this says); a longer one is CPORT_EPROXYSIZE. At
   * least 16. Default 4096. */
  size_t proxy_max_header;
  /* Clients: send a PROXY header of this version (CPORT_PROXY_V1 or V2)
   * as each connection's first bytes, before TLS, naming the
   * connection's own source and destination, for a server or balancer
   * that expects one. Default CPORT_PROXY_OFF. Since 0.5.0. */
  cport_proxy_t proxy_send;
  /* Servers: adopt this already-listening socket (a file descriptor; on
   * Windows a SOCKET) instead of binding an address: one inherited from
   * systemd socket activation (cport_listen_fds()) or from a parent
   * process, which may share it with other processes serving the same
   * port. `addr` must then be NULL or unset. cport_service_start()
   * checks it is a listening IPv4 or IPv6 stream socket and makes it
   * non-blocking and not inherited; from then on the service owns it and
   * closes it when it stops (other processes' copies stay open). -1 (the
   * default): bind `addr`. Since 0.5.0. */
  int64_t listen_fd;
  /* Servers on an IPv6 address: non-zero accepts IPv6 only; 0 (the
   * default) makes "::" accept IPv4 clients too (as ::ffff:a.b.c.d), on
   * every system (Windows's own default is IPv6 only). Since 0.5.0. */
  int ipv6_only;
  /* Servers: non-zero sets SO_REUSEPORT before binding, so that several
   * processes (or services) that all set it may listen on one address
   * and port, and the kernel spreads new connections over them (Linux,
   * FreeBSD's SO_REUSEPORT_LB; on macOS the last to bind gets them).
   * Default 0: a second bind of a port in use fails with
   * UV_EADDRINUSE. Windows has no such option: UV_ENOTSUP there.
   * Since 0.5.0. */
  int reuse_port;
  /* Servers on a Unix domain socket path: the socket file's permission
   * bits (for example 0660 lets the file's group connect), set before the
   * server accepts anything. 0 (the default): what the process's umask
   * gives; at most 0777. Unix paths only (not abstract names, not named
   * pipes). Since 0.5.0. */
  unsigned unix_mode;
} cport_service_opts_t;

typedef struct cport_service_stats_s {
  uint64_t connected;      /* sessions that reached on_connected */
  uint64_t rejected;       /* server: closed at once at max_sessions */
  uint64_t accept_errors;  /* server: failed accepts (EMFILE and the like,
                              each followed by a 100 ms pause in accepting,
                              or a peer gone before its session started) */
  uint64_t connect_failed; /* client: failed connect attempts */
  uint64_t active;         /* live sessions now (see session_count) */
  uint64_t peak;           /* most live sessions at once */
  uint64_t bytes_in;       /* bytes received (TLS: plaintext) */
  uint64_t bytes_out;      /* bytes of completed sends (TLS: plaintext) */
  uint64_t sends;          /* sends accepted by cport_session_send */
  uint64_t packets_in;     /* packet services: packets given to on_packet */
  /* Writes handed to the kernel: a direct write for a send made while
   * nothing was queued, or one uv_write carrying every send queued behind
   * the previous write (gather). sends / writes shows how well queued sends
   * are combined. */
  uint64_t writes;
  /* Times a session stopped reading because its on_recv filled the send
   * queue (CPORT_SENDQ_PAUSE_READ). */
  uint64_t pauses;
  /* Memory of the sends waiting in the sessions' send queues now, counted
   * as against send_queue_limit (a gauge). */
  uint64_t queued_bytes;
  /* Clients: connects started by the reconnect policy. */
  uint64_t reconnects;
  /* Graceful disconnects closed at disconnect_timeout_ms before they could
   * flush. */
  uint64_t disconnect_timeouts;
  /* Sessions that reached on_connected and ended, by their code: */
  uint64_t disconnects_peer;         /* UV_EOF: the peer closed */
  uint64_t disconnects_reset;        /* network errors: UV_ECONNRESET,
                                        UV_EPIPE, UV_ETIMEDOUT, ...,
                                        CPORT_ETLSTRUNCATED */
  uint64_t disconnects_idle;         /* CPORT_EIDLE */
  uint64_t disconnects_backpressure; /* CPORT_ESENDQ (CPORT_SENDQ_DISCONNECT) */
  uint64_t disconnects_protocol;     /* CPORT_ERECVFULL, CPORT_ECONSUMED,
                                        CPORT_EPACKET, CPORT_EPACKETSIZE,
                                        CPORT_ETLS */
  uint64_t disconnects_local;        /* CPORT_ELOCAL, CPORT_ESTOPPED,
                                        CPORT_EDRAINED */
  uint64_t disconnects_other;        /* anything else (UV_ENOMEM, ...) */
  /* TLS services: handshakes completed (resumed ones included), those
   * that resumed a session, and connections whose handshake failed or
   * timed out. */
  uint64_t tls_handshakes;
  uint64_t tls_resumed;
  uint64_t tls_failures;
  /* PROXY protocol servers: headers accepted; connections closed for a
   * malformed, oversize or late header; connections from an address
   * proxy_trusted does not list. */
  uint64_t proxy_headers;
  uint64_t proxy_errors;
  uint64_t proxy_untrusted;
} cport_service_stats_t;

/* Fill `opts` with the defaults listed above. Thread: any. */
CPORT_API void cport_service_opts_init(cport_service_opts_t* opts);

/* Create a service of `kind` for `addr` on `core`. Nothing happens on the
 * network until cport_service_start().
 * Ownership: `addr` and `opts` are copied; `*out` is the caller's, released
 *            with cport_service_destroy(); `core` must outlive the service.
 * Thread:    the loop's thread (or, while no thread runs the loop, the owner).
 * Returns:   0; UV_EINVAL for NULL arguments or an unset address (unless
 *            opts.listen_fd gives the socket), an unknown
 *            kind or send_queue_policy, a bad loop index, zero limits, a
 *            backlog below 1, a client with connect_count 0, an unknown
 *            reconnect policy, or one set with reconnect_delay_ms 0 or
 *            reconnect_jitter_pct above 100, both on_recv and on_packet
 *            set, an unknown proxy_protocol or proxy_send (or one set on
 *            the wrong kind: proxy_protocol, listen_fd and reuse_port
 *            are for servers, proxy_send for clients, and CPORT_PROXY_ANY
 *            is not sent), a proxy_trusted list that does not parse,
 *            proxy_max_header below 16, listen_fd with a set `addr`, an invalid opts.packet (cport_packet_format_check), a
 *            TLS context of the other side (opts.tls), a tls_name empty
 *            or over 253 bytes, a
 *            user_size too large for any session block (each logs one
 *            warn line naming the field, its value and the rule);
 *            CPORT_EWRONGTHREAD from a thread that does not run the loop
 *            (logged at error);
 *            UV_ENOMEM;
 *            a libuv error from timer set-up. */
CPORT_API int cport_service_create(cport_service_t** out,
                                   cport_core_t* core,
                                   cport_service_kind_t kind,
                                   const cport_addr_t* addr,
                                   const cport_service_opts_t* opts);

/* Start the service. A server binds and
 * listens, and reports bind errors here; a client starts connect_count
 * connects, whose outcomes arrive as on_connected or on_connect_failed.
 * A server on a host name (cport_addr_is_name) looks it up here and
 * listens on the first address that binds; a client looks its name up
 * anew at every connect attempt, without blocking its loop, and races its
 * addresses (opts.connect_attempt_delay_ms).
 * Under a reconnect policy a connect that cannot even start (UV_EMFILE
 * from socket(), UV_ENOMEM, an error of uv_tcp_connect) is a failed
 * attempt like any other: on_connect_failed reports it after this call
 * has returned, stats.connect_failed counts it, and the policy retries it.
 * Thread:  loop.
 * Blocks:  a server on a host name, on the system resolver (seconds at
 *          worst); numeric addresses and clients never.
 * Returns: 0; UV_EINVAL for NULL or a service already started or stopped;
 *          CPORT_EWRONGTHREAD from another thread (logged);
 *          for a server on a host name, the lookup's UV_EAI_* code;
 *          for a server, UV_EADDRINUSE, UV_EACCES, UV_EADDRNOTAVAIL and other
 *          bind or listen errors (then nothing is left open and start may be
 *          called again); for opts.listen_fd, UV_EBADF or UV_ENOTSOCK
 *          for a descriptor that is no socket, UV_EINVAL for one that is
 *          not listening or not a stream, UV_EAFNOSUPPORT for a family
 *          other than IPv4 and IPv6 (the descriptor then stays the
 *          caller's); UV_ENOTSUP for reuse_port where the system has no
 *          SO_REUSEPORT; for a client, as cport_service_connect() returns
 *          for connect_count connects (the service then counts as started
 *          all the same); UV_ENOMEM. */
CPORT_API int cport_service_start(cport_service_t* svc);

/* Client services: start `n` more connects to the service's address.
 * Without a reconnect policy a connect that cannot even start is returned
 * here, and counted in stats.connect_failed with no callback; under one it
 * is reported and retried as cport_service_start() says.
 * Thread:  loop.
 * Returns: 0 if each connect was started or, under a policy, handed to it;
 *          UV_EINVAL for NULL, n 0, a server, or a service not started or
 *          stopping; CPORT_EWRONGTHREAD from another thread; UV_ENOMEM
 *          or a libuv error for the first connect that could not start
 *          and that no policy took (the earlier ones go on, the later
 *          ones are not started). */
CPORT_API int cport_service_connect(cport_service_t* svc, unsigned n);

/* Stop: close the listener (servers), cancel pending connects (clients) and
 * disconnect every session gracefully with cause CPORT_ESTOPPED, on every
 * loop the service spreads over (the other loops do it when they next
 * wake). Sessions whose queued bytes have not drained `deadline_ms` after
 * this call (the peer does not read) are closed at once, on every loop at
 * the same moment: the deadline counts from the call, on the monotonic
 * clock, however long the callback that makes it has run or however late
 * another loop gets to its part. `on_stopped` (may be NULL)
 * runs once, later, on the service's loop thread, when every session on
 * every loop has had on_disconnected and the listener is closed; it may
 * destroy the service. Once this has returned, on every loop at once: no
 * on_connected starts (a connection accepted but not yet reported on
 * another loop is closed unreported), no on_recv or on_packet runs, and
 * sends return UV_ENOTCONN; only on_send and on_disconnected follow. (A
 * callback already under way on another loop's thread at the moment of
 * the call may still be running.)
 * Thread:  loop.
 * Returns: 0; UV_EINVAL for NULL or negative deadline; CPORT_EWRONGTHREAD
 *          from a thread that does not run the service's loop (logged at
 *          error, nothing stopped: post a job with cport_core_post());
 *          UV_EALREADY when a stop is already under way or done
 *          (on_stopped is then not called again). */
CPORT_API int cport_service_stop(cport_service_t* svc,
                                 int deadline_ms,
                                 void (*on_stopped)(cport_service_t* svc));

/* Drain: stop taking new connections while the sessions already up go
 * on, then end them at a deadline. A server closes its listener at once
 * (its own copy of an inherited socket: other processes sharing it keep
 * accepting), so a balancer's health check finds it down from this call
 * on, and connections accepted before it are still served; a client
 * cancels its pending connects and reconnects and makes no more. Once
 * every session has ended by itself, `on_drained` (may be NULL) runs
 * once, later, on the service's loop thread, as on_stopped would, and
 * the service counts as stopped. Sessions still open `deadline_ms` after
 * this call (on the monotonic clock, on every loop at once) are
 * disconnected gracefully with CPORT_EDRAINED ("drained"): their queued
 * sends still leave, bounded by disconnect_timeout_ms, then on_drained.
 * A cport_service_stop() during a drain takes over (its code, deadline
 * and callback; on_drained is not called); a destroy ends it as usual.
 * Thread:  loop.
 * Returns: 0; UV_EINVAL for NULL, a negative deadline or a service never
 *          started; CPORT_EWRONGTHREAD from another thread (logged);
 *          UV_EALREADY when a drain or stop is already under way or
 *          done. */
CPORT_API int cport_service_drain(cport_service_t* svc,
                                  int deadline_ms,
                                  void (*on_drained)(cport_service_t* svc));

/* Non-zero from cport_service_drain() until the drain completes (or a stop
 * takes over). Thread: any. Returns 0 for NULL. */
CPORT_API int cport_service_is_draining(const cport_service_t* svc);

/* The first descriptor systemd socket activation passes. */
#define CPORT_LISTEN_FDS_START 3

/* systemd socket activation (and the same protocol from any launcher):
 * how many sockets this process was given, descriptors
 * CPORT_LISTEN_FDS_START on, to set as opts.listen_fd. Reads LISTEN_FDS,
 * and counts only when LISTEN_PID names this process (the variables were
 * meant for it, not inherited from a parent). Those descriptors are
 * marked not to be inherited by child processes. With `unset_env`
 * non-zero the variables are removed, so that children do not see them.
 * Thread:  any, but `unset_env` changes the environment: call it before
 *          starting threads.
 * Returns: the count; 0 when none were passed (and always on Windows);
 *          UV_EINVAL when LISTEN_FDS is not a number. */
CPORT_API int cport_listen_fds(int unset_env);

/* Destroy the service. Accepts NULL. If it is still running, its sessions
 * are closed at once (no flush); their on_disconnected still runs during the
 * loop's next round, after this call has returned, with CPORT_ESTOPPED (or
 * the first cause, for a session that was already disconnecting); pending
 * connects report on_connect_failed with UV_ECANCELED; a pending stop's
 * on_stopped is not called. Sessions on the other loops a server spreads
 * over are closed when those loops next wake, but once this has returned
 * only their on_disconnected runs, as for cport_service_stop() but without
 * on_send either. The memory is released
 * once libuv has closed every handle, on every loop, and the last reference
 * to one of its sessions is gone. Safe inside the service's own callbacks,
 * on_stopped included.
 * Thread: loop. From any other thread nothing is destroyed: the call logs
 * an error line naming the fix (cport_core_post()) and returns. */
CPORT_API void cport_service_destroy(cport_service_t* svc);

/* The server's bound address, with the real port when the service was
 * started on port 0.
 * Thread:  loop.
 * Returns: 0; UV_EINVAL for NULL or a client; CPORT_EWRONGTHREAD from
 *          another thread; UV_ENOTCONN when not listening. */
CPORT_API int cport_service_local_addr(const cport_service_t* svc,
                                       cport_addr_t* out);

/* Live sessions, on every loop: those that reached on_connected and whose
 * on_disconnected has not returned yet (disconnecting ones included).
 * Thread: any (a count that other loops may change at any moment). Returns
 * 0 for NULL. */
CPORT_API size_t cport_service_session_count(const cport_service_t* svc);

/* Call `fn` for every live session on the loops the calling thread runs,
 * loop by loop, oldest first (for client services, in the order their
 * connects were started), until it returns non-zero. That is every session
 * when the service does not spread or one thread drives every loop; a
 * server spread over loops run by their own threads must post a job to
 * each loop (cport_core_post) to visit all, since each loop's list belongs
 * to its thread (cport_service_broadcast does that for sends). `fn` may
 * disconnect sessions (the list changes only after on_disconnected, which
 * never runs inside this call).
 * Thread:  any; visits nothing on loops the thread does not run.
 * Returns: what the last `fn` returned (0 when all were visited);
 *          UV_EINVAL for NULL `svc` or `fn`. */
CPORT_API int cport_service_foreach(cport_service_t* svc,
                                    int (*fn)(cport_session_t* s, void* arg),
                                    void* arg);

/* Send the shared buffer `buf` to every live session of the service, on
 * every loop it spreads over, without copying the bytes: each session's
 * write request takes a reference (cport_session_send_buf). Sessions on
 * loops the calling thread runs get it during the call (unless requests
 * posted earlier still wait in that loop's mailbox: then it queues behind
 * them); the others when their loop next wakes, in order with that loop's
 * other work. A session
 * whose send queue is full misses it (CPORT_SENDQ_PAUSE_READ) or is
 * disconnected (CPORT_SENDQ_DISCONNECT); the others are not held back.
 * Ownership: the caller keeps its reference and may drop it at once; the
 *            buffer is freed after the last write that uses it.
 * Thread:    any.
 * Returns:   0; UV_EINVAL for NULL arguments; UV_ENOMEM if some loop could
 *            not be reached (the others still send). */
CPORT_API int cport_service_broadcast(cport_service_t* svc, cport_buf_t* buf);

/* Copy the service's counters, summed over every loop, into `out`.
 * Thread: any (each counter is read atomically; the set is not one
 * snapshot). Returns: 0; UV_EINVAL for NULL. */
CPORT_API int cport_service_stats(const cport_service_t* svc,
                                  cport_service_stats_t* out);

/* The user pointer from opts.data, or set here. cport never reads it.
 * Thread: set_data: loop (from another thread it logs an error and sets
 * nothing). get_data: any thread, for a pointer that does not
 * change while other threads read it (opts.data, or set before the service
 * starts), such as from the callbacks of sessions on other loops. */
CPORT_API void cport_service_set_data(cport_service_t* svc, void* data);
CPORT_API void* cport_service_get_data(const cport_service_t* svc);

/* Thread: any. Returns the core the service runs on, NULL for NULL. */
CPORT_API cport_core_t* cport_service_core(const cport_service_t* svc);

#ifdef __cplusplus
}
#endif
#endif /* CPORT_SERVICE_H */
