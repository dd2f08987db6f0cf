/* One TLS connection over memory: OpenSSL's SSL with a BIO of cport's own
 * in place of a socket.
 *
 * The BIO reads the ciphertext the session was given
 * (cport__tls_conn_input: bytes in the loop's read chunk, never copied
 * while OpenSSL takes them), after what an earlier read left (`kept`), and
 * writes into one growing block (`out`) that the session takes whole and
 * writes with uv_write. A memory BIO pair would copy every byte in and
 * out, and keep its buffers for the life of the connection.
 *
 * Every entry point clears the thread's error queue before its OpenSSL
 * calls and again before it returns, so one session's failure never shows
 * in another's SSL_get_error() on the same thread, and the application's
 * own use of OpenSSL on a loop thread finds the queue as it left it
 * empty.
 *
 * Compiled to nothing without TLS (CPORT_HAVE_TLS unset; tls_none.c
 * then stands in), so that every source builds whichever way cport is
 * configured. */
#include "tls_internal.h"

#ifdef CPORT_HAVE_TLS
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>


/* Longest cause text kept. */
#define CONN_CAUSE_MAX 200

struct cport__tls_conn_s {
  SSL* ssl;
  void** resume; /* client: the service's slot for its last session */
  /* The caller's ciphertext, read in place. */
  const uint8_t* in;
  size_t in_len;
  /* Ciphertext kept from an earlier input: kept[kept_off, kept_len). */
  uint8_t* kept;
  size_t kept_off;
  size_t kept_len;
  /* Ciphertext made and not taken yet, in a block from `pool`. */
  cport__tls_out_t* out;
  cport__tls_pool_t* pool;
  char* cause;
  /* Settled by the handshake. */
  const char* version;
  const char* cipher;
  char* alpn;
  char* sni;
  X509* peer;
  /* Read by any thread once the handshake has completed, so apart from
   * the bits below, which the connection's thread writes later. */
  int done; /* handshake completed */
  int resumed;
  unsigned notified : 1; /* close_notify made */
  unsigned nomem : 1;    /* the BIO could not grow `out` */
};

static BIO_METHOD* conn_bio_method;
static uv_once_t conn_bio_once = UV_ONCE_INIT;

/* The room of each pool class: the largest holds the records of a 64 KiB
 * send (cport__tls_conn_reserve's bound), each other a quarter of the
 * next. */
static const uint32_t conn_class_cap[CPORT__TLS_POOL_CLASSES] = {
    1056, 4224, 16896, 65536 + 5 * 128};

/* The class whose room is at least `want`, or CPORT__TLS_POOL_CLASSES. */
static unsigned conn_class_of(size_t want) {
  unsigned i;
  for (i = 0; i < CPORT__TLS_POOL_CLASSES; i++)
    if (want <= conn_class_cap[i])
      return i;
  return CPORT__TLS_POOL_CLASSES;
}


/* A block with room for `want` bytes: a pool class's, reused when one is
 * free, or one of exactly that room above the classes. */
static cport__tls_out_t* conn_block(cport__tls_pool_t* pool, size_t want) {
  unsigned cls = conn_class_of(want);
  cport__tls_out_t* o;
  if (cls < CPORT__TLS_POOL_CLASSES) {
    cport__qnode_t* n =
        pool != NULL ? cport__queue_pop(&pool->free[cls]) : NULL;
    if (n != NULL) {
      pool->bytes[cls] -= conn_class_cap[cls];
      o = cport__container_of(n, cport__tls_out_t, node);
      o->len = 0;
      return o;
    }
    want = conn_class_cap[cls];
  }
  o = cport__malloc(sizeof(*o) + want);
  if (o == NULL)
    return NULL;
  o->len = 0;
  o->cap = (uint32_t)want;
  return o;
}


void cport__tls_out_put(cport__tls_pool_t* pool, cport__tls_out_t* o) {
  unsigned cls;
  if (o == NULL)
    return;
  cls = conn_class_of(o->cap);
  if (pool == NULL || cls == CPORT__TLS_POOL_CLASSES ||
      o->cap != conn_class_cap[cls] ||
      pool->bytes[cls] + o->cap > CPORT__TLS_POOL_BYTES) {
    cport__free(o);
    return;
  }
  pool->bytes[cls] += o->cap;
  cport__queue_push(&pool->free[cls], &o->node);
}


void cport__tls_pool_clear(cport__tls_pool_t* pool) {
  unsigned i;
  cport__qnode_t* n;
  for (i = 0; i < CPORT__TLS_POOL_CLASSES; i++) {
    while ((n = cport__queue_pop(&pool->free[i])) != NULL)
      cport__free(cport__container_of(n, cport__tls_out_t, node));
    pool->bytes[i] = 0;
  }
}


/* Make `out` hold `more` bytes more: a block of the next size up (at
 * least twice the room, so that a record at a time stays linear), the
 * bytes so far copied over. Returns 0 or UV_ENOMEM. */
static int conn_out_room(cport__tls_conn_t* c, size_t more) {
  size_t len = c->out != NULL ? c->out->len : 0;
  size_t cap = c->out != NULL ? c->out->cap : 0;
  size_t want;
  cport__tls_out_t* grown;
  if (more <= cap - len)
    return 0;
  if (more > UINT32_MAX - len)
    return UV_ENOMEM;
  want = len + more;
  if (want < 2 * cap)
    want = 2 * cap;
  if (want > UINT32_MAX)
    want = UINT32_MAX;
  grown = conn_block(c->pool, want);
  if (grown == NULL)
    return UV_ENOMEM;
  if (len > 0)
    memcpy(grown->data, c->out->data, len);
  grown->len = (uint32_t)len;
  cport__tls_out_put(c->pool, c->out);
  c->out = grown;
  return 0;
}


static int conn_bio_write(BIO* b, const char* data, int len) {
  cport__tls_conn_t* c = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (len <= 0)
    return 0;
  if (conn_out_room(c, (size_t)len) != 0) {
    c->nomem = 1;
    return -1;
  }
  memcpy(c->out->data + c->out->len, data, (size_t)len);
  c->out->len += (uint32_t)len;
  return len;
}


static int conn_bio_read(BIO* b, char* buf, int size) {
  cport__tls_conn_t* c = BIO_get_data(b);
  size_t want = size > 0 ? (size_t)size : 0;
  size_t got = 0;
  BIO_clear_retry_flags(b);
  if (c->kept != NULL) {
    size_t n = c->kept_len - c->kept_off;
    if (n > want)
      n = want;
    memcpy(buf, c->kept + c->kept_off, n);
    c->kept_off += n;
    got = n;
    if (c->kept_off == c->kept_len) {
      cport__free(c->kept);
      c->kept = NULL;
      c->kept_off = c->kept_len = 0;
    }
  }
  if (got < want && c->in_len > 0) {
    size_t n = c->in_len < want - got ? c->in_len : want - got;
    memcpy(buf + got, c->in, n);
    c->in += n;
    c->in_len -= n;
    got += n;
  }
  if (got == 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  return (int)got;
}


static long conn_bio_ctrl(BIO* b, int cmd, long num, void* ptr) {
  cport__tls_conn_t* c = BIO_get_data(b);
  (void)num;
  (void)ptr;
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_PENDING:
      return (long)(c->kept_len - c->kept_off + c->in_len);
    default:
      return 0;
  }
}


static int conn_bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}


static void conn_bio_init(void) {
  BIO_METHOD* m =
      BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cport");
  if (m != NULL && (BIO_meth_set_write(m, conn_bio_write) != 1 ||
                    BIO_meth_set_read(m, conn_bio_read) != 1 ||
                    BIO_meth_set_ctrl(m, conn_bio_ctrl) != 1 ||
                    BIO_meth_set_create(m, conn_bio_create) != 1)) {
    BIO_meth_free(m);
    m = NULL;
  }
  conn_bio_method = m;
}


/* Clients: a server sent a session (a TLS 1.3 ticket, or a 1.2 session):
 * it replaces the one the service's next connect offers. */
static int conn_new_session(SSL* ssl, SSL_SESSION* sess) {
  cport__tls_conn_t* c = SSL_get_app_data(ssl);
  if (c == NULL || c->resume == NULL || !SSL_SESSION_is_resumable(sess))
    return 0;
  SSL_SESSION_free(*c->resume);
  *c->resume = sess;
  return 1; /* the reference is ours */
}


void cport__tls_conn_setup_ctx(void* ssl_ctx) {
  SSL_CTX_sess_set_new_cb(ssl_ctx, conn_new_session);
}


void cport__tls_resume_free(void* resume) {
  SSL_SESSION_free(resume);
}


int cport__tls_conn_new(cport__tls_conn_t** out,
                        cport_tls_t* tls,
                        cport__tls_pool_t* pool,
                        const char* peer,
                        void** resume) {
  cport__tls_conn_t* c;
  BIO* bio;
  int ok = 1;
  *out = NULL;
  uv_once(&conn_bio_once, conn_bio_init);
  if (conn_bio_method == NULL)
    return UV_ENOMEM;
  c = cport__calloc(1, sizeof(*c));
  if (c == NULL)
    return UV_ENOMEM;
  c->pool = pool;
  ERR_clear_error();
  c->ssl = SSL_new(cport__tls_ctx(tls));
  bio = BIO_new(conn_bio_method);
  if (c->ssl == NULL || bio == NULL) {
    BIO_free(bio);
    cport__tls_conn_free(c);
    return UV_ENOMEM;
  }
  BIO_set_data(bio, c);
  /* One BIO both ways; SSL_set_bio then takes its one reference. */
  SSL_set_bio(c->ssl, bio, bio);
  SSL_set_app_data(c->ssl, c);
  if (cport__tls_role(tls) == CPORT_TLS_SERVER) {
    SSL_set_accept_state(c->ssl);
  } else {
    SSL_set_connect_state(c->ssl);
    c->resume = resume;
    if (peer != NULL) {
      /* An address is verified against the certificate's IP entries and
       * never sent by SNI, which carries host names only. */
      if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), peer) != 1) {
        ERR_clear_error();
        c->sni = cport__strndup(peer, 255);
        ok = c->sni != NULL && SSL_set_tlsext_host_name(c->ssl, peer) == 1 &&
             SSL_set1_host(c->ssl, peer) == 1;
      }
    }
    if (ok && resume != NULL && *resume != NULL)
      ok = SSL_set_session(c->ssl, *resume) == 1;
  }
  ERR_clear_error();
  if (!ok) {
    cport__tls_conn_free(c);
    return CPORT_ETLS;
  }
  *out = c;
  return 0;
}


void cport__tls_conn_free(cport__tls_conn_t* c) {
  if (c == NULL)
    return;
  SSL_free(c->ssl);
  X509_free(c->peer);
  ERR_clear_error();
  cport__free(c->kept);
  cport__free(c->out);
  cport__free(c->cause);
  cport__free(c->alpn);
  cport__free(c->sni);
  cport__free(c);
}


void cport__tls_conn_input(cport__tls_conn_t* c,
                           const uint8_t* data,
                           size_t len) {
  c->in = data;
  c->in_len = len;
}


int cport__tls_conn_keep(cport__tls_conn_t* c) {
  size_t left = c->kept_len - c->kept_off;
  uint8_t* kept;
  if (c->in_len == 0)
    return 0;
  kept = cport__malloc(left + c->in_len);
  if (kept == NULL)
    return UV_ENOMEM;
  if (left > 0)
    memcpy(kept, c->kept + c->kept_off, left);
  memcpy(kept + left, c->in, c->in_len);
  cport__free(c->kept);
  c->kept = kept;
  c->kept_off = 0;
  c->kept_len = left + c->in_len;
  c->in = NULL;
  c->in_len = 0;
  return 0;
}


int cport__tls_conn_has_input(const cport__tls_conn_t* c) {
  return c->kept != NULL || c->in_len > 0 || SSL_has_pending(c->ssl);
}


/* The cause of a failed call, from the verification result or the error
 * queue, which is then cleared. Returns the code to report. */
static int conn_fail(cport__tls_conn_t* c, int ssl_error) {
  char text[CONN_CAUSE_MAX];
  long v = SSL_get_verify_result(c->ssl);
  unsigned long e = ERR_peek_last_error();
  int code = CPORT_ETLS;
  if (c->nomem) {
    ERR_clear_error();
    return UV_ENOMEM;
  }
  if (!c->done && v != X509_V_OK) {
    switch (v) {
      case X509_V_ERR_HOSTNAME_MISMATCH:
      case X509_V_ERR_IP_ADDRESS_MISMATCH:
        code = CPORT_ETLSNAME;
        break;
      case X509_V_ERR_CERT_HAS_EXPIRED:
      case X509_V_ERR_CERT_NOT_YET_VALID:
        code = CPORT_ETLSEXPIRED;
        break;
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      case X509_V_ERR_CERT_UNTRUSTED:
        code = CPORT_ETLSCA;
        break;
      default:
        code = CPORT_ETLSVERIFY;
        break;
    }
    snprintf(text, sizeof(text), "TLS: certificate verify failed: %s",
             X509_verify_cert_error_string(v));
  } else if (e != 0) {
    const char* reason = ERR_reason_error_string(e);
    snprintf(text, sizeof(text), "TLS: %s",
             reason != NULL ? reason : "protocol error");
  } else if (ssl_error == SSL_ERROR_SYSCALL ||
             ssl_error == SSL_ERROR_ZERO_RETURN) {
    snprintf(text, sizeof(text), "TLS: the peer closed during the handshake");
  } else {
    snprintf(text, sizeof(text), "TLS: protocol error (%d)", ssl_error);
  }
  ERR_clear_error();
  cport__free(c->cause);
  c->cause = cport__strndup(text, sizeof(text));
  return code;
}


/* What the handshake settled, copied so that any thread may read it. */
static int conn_settle(cport__tls_conn_t* c) {
  const unsigned char* alpn = NULL;
  unsigned alpn_len = 0;
  c->done = 1;
  c->version = SSL_get_version(c->ssl);
  c->cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl));
  c->resumed = SSL_session_reused(c->ssl) ? 1 : 0;
  c->peer = SSL_get1_peer_certificate(c->ssl);
  SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
  if (alpn_len > 0) {
    c->alpn = cport__strndup((const char*)alpn, alpn_len);
    if (c->alpn == NULL)
      return UV_ENOMEM;
  }
  if (SSL_is_server(c->ssl)) {
    const char* name = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
    if (name != NULL && (c->sni = cport__strndup(name, 255)) == NULL)
      return UV_ENOMEM;
  }
  return 0;
}


int cport__tls_conn_handshake(cport__tls_conn_t* c) {
  int rc, err;
  if (c->done)
    return 0;
  ERR_clear_error();
  rc = SSL_do_handshake(c->ssl);
  if (rc == 1) {
    rc = conn_settle(c);
    ERR_clear_error();
    return rc;
  }
  err = SSL_get_error(c->ssl, rc);
  if (err == SSL_ERROR_WANT_READ && !c->nomem) {
    ERR_clear_error();
    return CPORT__TLS_WANT;
  }
  return conn_fail(c, err);
}


int cport__tls_conn_read(cport__tls_conn_t* c,
                         uint8_t* buf,
                         size_t cap,
                         size_t* n) {
  int err;
  *n = 0;
  /* Nothing to read from and nothing buffered: OpenSSL could only say
   * so, at the price of a call and an error to clear, once per read. */
  if (!cport__tls_conn_has_input(c))
    return CPORT__TLS_WANT;
  ERR_clear_error();
  if (SSL_read_ex(c->ssl, buf, cap, n) == 1) {
    ERR_clear_error();
    return 0;
  }
  err = SSL_get_error(c->ssl, 0);
  if (c->nomem)
    return conn_fail(c, err);
  if (err == SSL_ERROR_WANT_READ) {
    ERR_clear_error();
    return CPORT__TLS_WANT;
  }
  if (err == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    return UV_EOF;
  }
  return conn_fail(c, err);
}


int cport__tls_conn_reserve(cport__tls_conn_t* c, size_t len) {
  /* A record carries at most 16 KiB and costs at most 128 bytes more
   * (AES-GCM: 22 in TLS 1.3, 29 in 1.2; a CBC suite with SHA-384 and its
   * padding: 85). */
  size_t records = len / 16384 + 1;
  if (len > SIZE_MAX / 2 || records > (SIZE_MAX / 2 - len) / 128)
    return UV_ENOMEM;
  return conn_out_room(c, len + records * 128);
}


int cport__tls_conn_write(cport__tls_conn_t* c, const void* data, size_t len) {
  size_t done = 0;
  int err;
  ERR_clear_error();
  if (SSL_write_ex(c->ssl, data, len, &done) == 1 && done == len) {
    ERR_clear_error();
    return 0;
  }
  err = SSL_get_error(c->ssl, 0);
  return conn_fail(c, err);
}


int cport__tls_conn_close_notify(cport__tls_conn_t* c) {
  if (!c->done || c->notified)
    return 0;
  c->notified = 1;
  ERR_clear_error();
  (void)SSL_shutdown(c->ssl); /* 0: sent, the peer's not awaited */
  ERR_clear_error();
  return c->nomem ? UV_ENOMEM : 0;
}


cport__tls_out_t* cport__tls_conn_take(cport__tls_conn_t* c) {
  cport__tls_out_t* o = c->out;
  if (o == NULL || o->len == 0)
    return NULL;
  c->out = NULL;
  return o;
}


const char* cport__tls_conn_cause(const cport__tls_conn_t* c) {
  return c->cause;
}


const char* cport__tls_conn_version(const cport__tls_conn_t* c) {
  return c->done ? c->version : NULL;
}


const char* cport__tls_conn_cipher(const cport__tls_conn_t* c) {
  return c->done ? c->cipher : NULL;
}


const char* cport__tls_conn_alpn(const cport__tls_conn_t* c) {
  return c->done ? c->alpn : NULL;
}


const char* cport__tls_conn_sni(const cport__tls_conn_t* c) {
  return c->done ? c->sni : NULL;
}


int cport__tls_conn_resumed(const cport__tls_conn_t* c) {
  return c->done && c->resumed;
}


int cport__tls_conn_peer_subject(const cport__tls_conn_t* c,
                                 char* out,
                                 size_t len) {
  BIO* b;
  char* text;
  long n;
  int rc = 0;
  if (!c->done)
    return UV_ENOTCONN;
  if (c->peer == NULL)
    return UV_ENOENT;
  b = BIO_new(BIO_s_mem());
  if (b == NULL)
    return UV_ENOMEM;
  ERR_clear_error();
  if (X509_NAME_print_ex(b, X509_get_subject_name(c->peer), 0,
                         XN_FLAG_RFC2253) < 0) {
    rc = UV_ENOMEM;
  } else {
    n = BIO_get_mem_data(b, &text);
    if (n < 0)
      n = 0;
    if ((size_t)n >= len) {
      n = (long)len - 1;
      rc = UV_ENOBUFS;
    }
    memcpy(out, text, (size_t)n);
    out[n] = '\0';
  }
  BIO_free(b);
  ERR_clear_error();
  return rc;
}

#endif /* CPORT_HAVE_TLS */
