/* cport: the PROXY protocol (versions 1 and 2), spoken by HAProxy, nginx,
 * Envoy and cloud load balancers to tell a server who the client really is.
 *
 * A balancer that relays a TCP connection opens its own connection to the
 * server, so the server sees the balancer's address. With the PROXY
 * protocol the balancer first sends one header naming the client's source
 * and destination addresses (version 1: a text line; version 2: a binary
 * block that may carry TLVs, such as the ALPN or SNI the balancer's TLS
 * saw). A server service with opts.proxy_protocol set reads that header
 * itself, before TLS and before on_recv or on_packet, so applications only
 * ask the session (cport_session_peer_addr gives the client's address,
 * cport_session_proxy gives the rest); a client service with
 * opts.proxy_send sends one. The functions here parse and build headers
 * directly, for relays and tests.
 *
 * Specification: "The PROXY protocol, Versions 1 & 2" (haproxy.org,
 * doc/proxy-protocol.txt). */
#ifndef CPORT_PROXY_H
#define CPORT_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "cport/addr.h"
#include "cport/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Which header versions a service reads (opts.proxy_protocol) or sends
 * (opts.proxy_send). ANY reads either, telling them apart by their first
 * bytes; it is not a valid version to send. */
typedef enum cport_proxy_e {
  CPORT_PROXY_OFF = 0, /* no header: plain connections (the default) */
  CPORT_PROXY_V1 = 1,  /* the text header, "PROXY TCP4 ...\r\n" */
  CPORT_PROXY_V2 = 2,  /* the binary header */
  CPORT_PROXY_ANY = 3  /* read: either */
} cport_proxy_t;

/* The longest version 1 header, CRLF included (the specification's). */
#define CPORT_PROXY_V1_MAX 107
/* The longest version 2 header the format can express: 16 bytes and a
 * 16-bit length. */
#define CPORT_PROXY_V2_MAX (16 + 65535)

/* The v2 TLV types the specification names. Types 0xE0 to 0xEF are free
 * for custom use; cport keeps every TLV, known or not. */
#define CPORT_PROXY_TLV_ALPN 0x01      /* the ALPN protocol, "h2" */
#define CPORT_PROXY_TLV_AUTHORITY 0x02 /* the host name (TLS SNI) */
#define CPORT_PROXY_TLV_CRC32C 0x03    /* checksum of the header, checked */
#define CPORT_PROXY_TLV_NOOP 0x04      /* padding */
#define CPORT_PROXY_TLV_UNIQUE_ID 0x05 /* an id of the connection, <= 128 B */
#define CPORT_PROXY_TLV_SSL 0x20       /* the client's TLS: see below */
#define CPORT_PROXY_TLV_NETNS 0x30     /* the network namespace's name */
/* Inside CPORT_PROXY_TLV_SSL, after its client flags (1 byte) and its
 * verify result (4 bytes, big-endian, 0: verified): */
#define CPORT_PROXY_TLV_SSL_VERSION 0x21 /* "TLSv1.3" */
#define CPORT_PROXY_TLV_SSL_CN 0x22      /* the client certificate's CN */
#define CPORT_PROXY_TLV_SSL_CIPHER 0x23  /* "TLS_AES_256_GCM_SHA384" */
#define CPORT_PROXY_TLV_SSL_SIG_ALG 0x24 /* the certificate's signature */
#define CPORT_PROXY_TLV_SSL_KEY_ALG 0x25 /* the certificate's key */
/* The SSL TLV's client flags. */
#define CPORT_PROXY_SSL_CLIENT_SSL 0x01       /* the client used TLS */
#define CPORT_PROXY_SSL_CLIENT_CERT_CONN 0x02 /* sent a certificate here */
#define CPORT_PROXY_SSL_CLIENT_CERT_SESS 0x04 /* ... or in the session */

/* One parsed header. */
typedef struct cport_proxy_header_s {
  int version; /* 1 or 2 */
  /* Non-zero for a header that names no client: a v2 LOCAL command (the
   * balancer's own health check), a v1 "UNKNOWN", or a v2 address family
   * other than IPv4 and IPv6 (UNIX, UNSPEC). The connection's own
   * endpoints are then the real ones, and src and dst are unset. */
  int local;
  cport_addr_t src; /* the client's address and port */
  cport_addr_t dst; /* the address and port the client connected to */
  /* Version 2: the TLV area, `tlvs_len` bytes (0 for none), read with
   * cport_proxy_tlv(). Points into the bytes parsed (cport_proxy_parse)
   * or into the session (cport_session_proxy): valid as long as they. */
  const uint8_t* tlvs;
  size_t tlvs_len;
} cport_proxy_header_t;

/* Parse a header from the first `len` bytes of `data`, which may hold
 * more (the connection's first bytes after it).
 * `accept`: CPORT_PROXY_V1, V2 or ANY. `max`: the longest header taken,
 * in bytes, TLVs included (0: CPORT_PROXY_V2_MAX); a v1 line is bounded
 * by CPORT_PROXY_V1_MAX whatever `max` says.
 * Bytes that cannot begin an accepted header are refused as soon as they
 * are seen, so a peer that speaks plain TCP or TLS at once is told apart
 * after its first bytes, and an incomplete header never needs more than
 * its own length. A v2 header with a CRC32C TLV must match it.
 * Ownership: `out->tlvs` points into `data`.
 * Thread:    any.
 * Returns:   0 with the header in `*out` and its length in `*used`;
 *            CPORT_EAGAIN when the bytes so far are a valid beginning and
 *            more are needed (nothing written); CPORT_EPROXY for bytes
 *            that are no accepted header (a bad signature, version,
 *            command, family or address, a v1 line without CRLF in its
 *            107 bytes, a CRC32C mismatch, TLVs that overrun the header),
 *            CPORT_EPROXYSIZE for a header longer than `max`; UV_EINVAL
 *            for NULL arguments or a bad `accept`. With `cause` non-NULL,
 *            a refusal also writes a short reason there (static text). */
CPORT_API int cport_proxy_parse(const void* data,
                                size_t len,
                                cport_proxy_t accept,
                                size_t max,
                                cport_proxy_header_t* out,
                                size_t* used,
                                const char** cause);

/* Build a header of `version` (V1 or V2) naming `src` and `dst`, both
 * IPv4 or both IPv6 numeric addresses, into `buf` of `size` bytes; NULL
 * for both: a header that names no client (v1 "UNKNOWN", v2 LOCAL). v2
 * only: `tlvs` (`tlvs_len` bytes, already encoded as type, 16-bit
 * big-endian length, value) are appended, and with `crc` non-zero a
 * CRC32C TLV is added and filled in.
 * Thread:  any.
 * Returns: the header's length (at most CPORT_PROXY_V1_MAX for v1);
 *          UV_EINVAL for a bad version, one of src/dst NULL, families
 *          that differ or are not IPv4/IPv6, TLVs given to v1 or longer
 *          than v2 can carry, TLVs that are not whole or that hold a
 *          CRC32C TLV of their own (ask for it with `crc`), so that
 *          whatever this builds parses back; UV_ENOSPC when `size` is too
 *          small. */
CPORT_API int cport_proxy_encode(void* buf,
                                 size_t size,
                                 cport_proxy_t version,
                                 const cport_addr_t* src,
                                 const cport_addr_t* dst,
                                 const void* tlvs,
                                 size_t tlvs_len,
                                 int crc);

/* Find the first TLV of `type` in `hdr`'s TLV area. A type from
 * CPORT_PROXY_TLV_SSL_VERSION to CPORT_PROXY_TLV_SSL_KEY_ALG is looked
 * for inside the SSL TLV, where the specification puts it.
 * Ownership: `*value` points into the header's TLV area.
 * Thread:    any.
 * Returns:   0 with the value and its length; CPORT_ENOENT when there is
 *            none (always for a v1 header); UV_EINVAL for NULL
 *            arguments. */
CPORT_API int cport_proxy_tlv(const cport_proxy_header_t* hdr,
                              unsigned type,
                              const uint8_t** value,
                              size_t* len);

/* Visit every TLV of `hdr`, in order (the SSL TLV as one, whole), until
 * `fn` returns non-zero.
 * Thread:  any.
 * Returns: what the last `fn` returned (0 when all were visited);
 *          UV_EINVAL for NULL arguments. */
CPORT_API int cport_proxy_tlv_foreach(const cport_proxy_header_t* hdr,
                                      int (*fn)(unsigned type,
                                                const uint8_t* value,
                                                size_t len,
                                                void* arg),
                                      void* arg);

#ifdef __cplusplus
}
#endif
#endif /* CPORT_PROXY_H */
