/* TLS contexts: one OpenSSL SSL_CTX with cport's settings, shared by
 * every session of the services it is given to, on any loop.
 *
 * A context is read-only once a service has it (cport__tls_freeze):
 * OpenSSL's SSL_CTX may then be used by many threads at once, and the SNI
 * map is read without a lock. The reference count is the only thing that
 * changes.
 *
 * Compiled to nothing without TLS (CPORT_HAVE_TLS unset; tls_none.c
 * then stands in), so that every source builds whichever way cport is
 * configured. */
#include "tls_internal.h"

#ifdef CPORT_HAVE_TLS
#include <ctype.h>
#include <stdatomic.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/opensslv.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log_internal.h"

/* Longest SNI name: a DNS name is at most 253 bytes. */
#define TLS_NAME_MAX 253

typedef struct tls_name_s {
  char* name; /* lower case; "*.example.com" for a wildcard */
  cport_tls_t* ctx;
} tls_name_t;

struct cport_tls_s {
  atomic_int refs;
  atomic_int frozen;
  atomic_int warned; /* the insecure client's warning was logged */
  cport_tls_role_t role;
  cport_tls_verify_t verify;
  SSL_CTX* ctx;
  /* ALPN in wire format (length-prefixed), or NULL. */
  unsigned char* alpn;
  unsigned alpn_len;
  tls_name_t* names;
  size_t nnames;
};

void cport_tls_opts_init(cport_tls_opts_t* opts) {
  if (opts == NULL)
    return;
  memset(opts, 0, sizeof(*opts));
  opts->verify = CPORT_TLS_VERIFY_DEFAULT;
  opts->min_version = CPORT_TLS_1_2;
  opts->session_tickets = 1;
}


int cport_tls_available(void) {
  return 1;
}


const char* cport_tls_library(void) {
  return OpenSSL_version(OPENSSL_VERSION);
}


/* OpenSSL refused something: log why (the last error of the queue) and
 * leave the queue empty. Returns CPORT_ETLS. */
static int tls_refused(const char* what) {
  char text[256];
  unsigned long e = ERR_peek_last_error();
  ERR_error_string_n(e, text, sizeof(text));
  ERR_clear_error();
  cport__log(CPORT_LOG_WARN, "cport_tls_create: %s: %s", what,
             e != 0 ? text : "refused");
  return CPORT_ETLS;
}


/* `opts->alpn` ("h2,http/1.1") in wire format into `t`. Returns 0,
 * UV_EINVAL (logged) or UV_ENOMEM. */
static int tls_alpn_parse(cport_tls_t* t, const char* list) {
  size_t n = strlen(list);
  const char* p = list;
  unsigned char* w;
  if (n == 0 || n > 65535)
    return cport__einval("cport_tls_create",
                         "opts.alpn \"%.40s\": must list 1 to 65535 bytes",
                         list);
  /* One length byte per entry stands in for each comma, plus the first. */
  w = cport__malloc(n + 1);
  if (w == NULL)
    return UV_ENOMEM;
  t->alpn = w;
  t->alpn_len = (unsigned)n + 1;
  for (;;) {
    const char* end = strchr(p, ',');
    size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
    if (len == 0 || len > 255)
      return cport__einval("cport_tls_create",
                           "opts.alpn \"%.40s\": each protocol must be 1 to "
                           "255 bytes",
                           list);
    *w++ = (unsigned char)len;
    memcpy(w, p, len);
    w += len;
    if (end == NULL)
      break;
    p = end + 1;
  }
  return 0;
}


/* Servers: pick the first protocol of our list that the client offers;
 * a client that offers ALPN but none of ours is refused. */
static int tls_alpn_select(SSL* ssl,
                           const unsigned char** out,
                           unsigned char* outlen,
                           const unsigned char* in,
                           unsigned int inlen,
                           void* arg) {
  cport_tls_t* t = arg;
  unsigned char* sel = NULL;
  (void)ssl;
  if (SSL_select_next_proto(&sel, outlen, t->alpn, t->alpn_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}


/* strcasecmp() for ASCII host names (MSVC has only _stricmp). */
static int tls_casecmp(const char* a, const char* b) {
  for (;; a++, b++) {
    int d = tolower((unsigned char)*a) - tolower((unsigned char)*b);
    if (d != 0 || *a == '\0')
      return d;
  }
}


/* Non-zero if SNI `name` (any case) matches map entry `pat`. */
static int tls_name_match(const char* pat, const char* name) {
  if (pat[0] == '*' && pat[1] == '.') {
    /* One label, then the rest exactly. */
    const char* dot = strchr(name, '.');
    return dot != NULL && dot != name && tls_casecmp(dot + 1, pat + 2) == 0;
  }
  return tls_casecmp(pat, name) == 0;
}


/* Servers: the client's SNI picks a context from the map. An exact name
 * wins over a wildcard. */
static int tls_servername(SSL* ssl, int* alert, void* arg) {
  cport_tls_t* t = arg;
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  cport_tls_t* use = NULL;
  size_t i;
  (void)alert;
  if (name == NULL || t->nnames == 0)
    return SSL_TLSEXT_ERR_OK;
  for (i = 0; i < t->nnames && use == NULL; i++)
    if (t->names[i].name[0] != '*' && tls_name_match(t->names[i].name, name))
      use = t->names[i].ctx;
  for (i = 0; i < t->nnames && use == NULL; i++)
    if (t->names[i].name[0] == '*' && tls_name_match(t->names[i].name, name))
      use = t->names[i].ctx;
  if (use != NULL && SSL_set_SSL_CTX(ssl, use->ctx) == NULL)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  return SSL_TLSEXT_ERR_OK;
}


/* Load PEM text into the context: the chain, or the key. */
static int tls_use_pem(SSL_CTX* ctx, const char* pem, int key) {
  BIO* b = BIO_new_mem_buf(pem, -1);
  int ok = 0;
  if (b == NULL)
    return 0;
  if (key) {
    EVP_PKEY* k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    ok = k != NULL && SSL_CTX_use_PrivateKey(ctx, k) == 1;
    EVP_PKEY_free(k);
  } else {
    X509* leaf = PEM_read_bio_X509(b, NULL, NULL, NULL);
    ok = leaf != NULL && SSL_CTX_use_certificate(ctx, leaf) == 1;
    X509_free(leaf);
    while (ok) {
      X509* ca = PEM_read_bio_X509(b, NULL, NULL, NULL);
      if (ca == NULL)
        break;
      if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
        X509_free(ca);
        ok = 0;
      }
    }
    ERR_clear_error(); /* the end of the PEM text */
  }
  BIO_free(b);
  return ok;
}


/* Trust the CAs of PEM text. */
static int tls_trust_pem(SSL_CTX* ctx, const char* pem) {
  BIO* b = BIO_new_mem_buf(pem, -1);
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  int n = 0;
  X509* ca;
  if (b == NULL)
    return 0;
  while ((ca = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
    if (X509_STORE_add_cert(store, ca) == 1)
      n++;
    X509_free(ca);
  }
  ERR_clear_error();
  BIO_free(b);
  return n > 0;
}


/* The checks of cport_tls_create() that need no OpenSSL. */
static int tls_check_opts(cport_tls_role_t role, const cport_tls_opts_t* o) {
  const char* fn = "cport_tls_create";
  if (role != CPORT_TLS_SERVER && role != CPORT_TLS_CLIENT)
    return cport__einval(fn,
                         "role %d: must be CPORT_TLS_SERVER or "
                         "CPORT_TLS_CLIENT",
                         (int)role);
  if (o->verify < CPORT_TLS_VERIFY_DEFAULT ||
      o->verify > CPORT_TLS_VERIFY_REQUIRE)
    return cport__einval(fn, "opts.verify %d: unknown mode", (int)o->verify);
  if (o->min_version != CPORT_TLS_1_2 && o->min_version != CPORT_TLS_1_3)
    return cport__einval(fn,
                         "opts.min_version 0x%x: must be CPORT_TLS_1_2 "
                         "or CPORT_TLS_1_3",
                         (unsigned)o->min_version);
  if ((o->cert_file != NULL || o->cert_pem != NULL) !=
      (o->key_file != NULL || o->key_pem != NULL))
    return cport__einval(fn,
                         "opts: a certificate needs its key and a key "
                         "its certificate");
  if (role == CPORT_TLS_SERVER && o->cert_file == NULL && o->cert_pem == NULL)
    return cport__einval(fn,
                         "opts.cert_file/cert_pem: a server needs a "
                         "certificate and its key");
  if (role == CPORT_TLS_SERVER && o->verify >= CPORT_TLS_VERIFY_PEER &&
      o->ca_file == NULL && o->ca_pem == NULL && !o->system_ca)
    return cport__einval(fn,
                         "opts.verify: a server that verifies clients "
                         "needs ca_file, ca_pem or system_ca");
  return 0;
}


/* Everything OpenSSL is told. Returns 0 or CPORT_ETLS (logged). */
static int tls_configure(cport_tls_t* t, const cport_tls_opts_t* o) {
  SSL_CTX* ctx = t->ctx;
  int verify_mode = SSL_VERIFY_NONE;
  /* Renegotiation is refused both ways; memory BIOs need no partial
   * writes; idle sessions give their record buffers back. */
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_set_min_proto_version(ctx, o->min_version) != 1)
    return tls_refused("opts.min_version");
  if (!o->session_tickets) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
  }
  if (o->ciphers != NULL && SSL_CTX_set_cipher_list(ctx, o->ciphers) != 1)
    return tls_refused("opts.ciphers");
  if (o->ciphersuites != NULL &&
      SSL_CTX_set_ciphersuites(ctx, o->ciphersuites) != 1)
    return tls_refused("opts.ciphersuites");
  if (o->cert_pem != NULL ? !tls_use_pem(ctx, o->cert_pem, 0)
      : o->cert_file != NULL
          ? SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1
          : 0)
    return tls_refused("the certificate");
  if (o->key_pem != NULL ? !tls_use_pem(ctx, o->key_pem, 1)
      : o->key_file != NULL
          ? SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1
          : 0)
    return tls_refused("the private key");
  if ((o->cert_file != NULL || o->cert_pem != NULL) &&
      SSL_CTX_check_private_key(ctx) != 1)
    return tls_refused("the key does not match the certificate");
  if (o->ca_file != NULL &&
      SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1)
    return tls_refused("opts.ca_file");
  if (o->ca_pem != NULL && !tls_trust_pem(ctx, o->ca_pem))
    return tls_refused("opts.ca_pem: no certificate in it");
  if (o->system_ca || (t->role == CPORT_TLS_CLIENT && o->ca_file == NULL &&
                       o->ca_pem == NULL)) {
    /* A machine without a store is not an error here: verification then
     * fails with CPORT_ETLSCA, which says what is missing. */
    if (SSL_CTX_set_default_verify_paths(ctx) != 1)
      ERR_clear_error();
  }
  if (t->role == CPORT_TLS_CLIENT) {
    if (t->verify != CPORT_TLS_VERIFY_NONE)
      verify_mode = SSL_VERIFY_PEER;
    /* The tickets a server sends are offered again by the service's next
     * connect (tls_conn.c keeps them), not by OpenSSL's cache. */
    SSL_CTX_set_session_cache_mode(
        ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    cport__tls_conn_setup_ctx(ctx);
  } else {
    if (t->verify == CPORT_TLS_VERIFY_PEER)
      verify_mode = SSL_VERIFY_PEER;
    else if (t->verify == CPORT_TLS_VERIFY_REQUIRE)
      verify_mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    /* Resumption by session ID (TLS 1.2 without tickets) needs one. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char*)"cport", 5);
    SSL_CTX_set_tlsext_servername_callback(ctx, tls_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
    if (t->alpn != NULL)
      SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, t);
  }
  if (t->role == CPORT_TLS_CLIENT && t->alpn != NULL &&
      SSL_CTX_set_alpn_protos(ctx, t->alpn, t->alpn_len) != 0)
    return tls_refused("opts.alpn");
  SSL_CTX_set_verify(ctx, verify_mode, NULL);
  return 0;
}


static void tls_free(cport_tls_t* t) {
  size_t i;
  for (i = 0; i < t->nnames; i++) {
    cport__free(t->names[i].name);
    cport_tls_unref(t->names[i].ctx);
  }
  cport__free(t->names);
  SSL_CTX_free(t->ctx);
  cport__free(t->alpn);
  cport__free(t);
}


int cport_tls_create(cport_tls_t** out,
                     cport_tls_role_t role,
                     const cport_tls_opts_t* opts) {
  cport_tls_t* t;
  int rc;
  if (out == NULL || opts == NULL)
    return cport__einval("cport_tls_create", "out and opts must not be NULL");
  *out = NULL;
  rc = tls_check_opts(role, opts);
  if (rc != 0)
    return rc;
  t = cport__calloc(1, sizeof(*t));
  if (t == NULL)
    return UV_ENOMEM;
  atomic_init(&t->refs, 1);
  t->role = role;
  t->verify =
      opts->verify == CPORT_TLS_VERIFY_DEFAULT && role == CPORT_TLS_CLIENT
          ? CPORT_TLS_VERIFY_PEER
          : opts->verify;
  ERR_clear_error();
  t->ctx = SSL_CTX_new(role == CPORT_TLS_SERVER ? TLS_server_method()
                                                : TLS_client_method());
  if (t->ctx == NULL) {
    tls_free(t);
    return tls_refused("SSL_CTX_new");
  }
  rc = opts->alpn != NULL ? tls_alpn_parse(t, opts->alpn) : 0;
  if (rc == 0)
    rc = tls_configure(t, opts);
  ERR_clear_error();
  if (rc != 0) {
    tls_free(t);
    return rc;
  }
  *out = t;
  return 0;
}


int cport_tls_add_name(cport_tls_t* tls, const char* name, cport_tls_t* ctx) {
  const char* fn = "cport_tls_add_name";
  tls_name_t* grown;
  size_t len, i;
  char* copy;
  if (tls == NULL || name == NULL || ctx == NULL)
    return cport__einval(fn, "tls, name and ctx must not be NULL");
  if (tls->role != CPORT_TLS_SERVER || ctx->role != CPORT_TLS_SERVER)
    return cport__einval(fn, "both contexts must be CPORT_TLS_SERVER");
  if (ctx == tls)
    return cport__einval(fn, "ctx is the context itself");
  len = strlen(name);
  if (len == 0 || len > TLS_NAME_MAX)
    return cport__einval(fn, "name \"%.40s\": 1 to %d bytes", name,
                         TLS_NAME_MAX);
  if (atomic_load(&tls->frozen))
    return UV_EBUSY;
  for (i = 0; i < tls->nnames; i++)
    if (tls_casecmp(tls->names[i].name, name) == 0)
      return UV_EEXIST;
  copy = cport__strndup(name, len);
  grown = cport__realloc(tls->names, (tls->nnames + 1) * sizeof(*grown));
  if (copy == NULL || grown == NULL) {
    cport__free(copy);
    if (grown != NULL)
      tls->names = grown;
    return UV_ENOMEM;
  }
  for (i = 0; i < len; i++) copy[i] = (char)tolower((unsigned char)copy[i]);
  tls->names = grown;
  cport_tls_ref(ctx);
  tls->names[tls->nnames].name = copy;
  tls->names[tls->nnames].ctx = ctx;
  tls->nnames++;
  return 0;
}


void cport_tls_ref(cport_tls_t* tls) {
  if (tls != NULL)
    atomic_fetch_add(&tls->refs, 1);
}


void cport_tls_unref(cport_tls_t* tls) {
  if (tls != NULL && atomic_fetch_sub(&tls->refs, 1) == 1)
    tls_free(tls);
}


cport_tls_role_t cport__tls_role(const cport_tls_t* tls) {
  return tls->role;
}


void cport__tls_freeze(cport_tls_t* tls) {
  atomic_store(&tls->frozen, 1);
}


void* cport__tls_ctx(const cport_tls_t* tls) {
  return tls->ctx;
}


int cport__tls_insecure(cport_tls_t* tls) {
  if (tls->role != CPORT_TLS_CLIENT || tls->verify != CPORT_TLS_VERIFY_NONE)
    return 0;
  if (atomic_exchange(&tls->warned, 1) == 0)
    cport__log(CPORT_LOG_WARN,
               "TLS client context with CPORT_TLS_VERIFY_NONE: the server's "
               "certificate and name are not checked, so anyone on the path "
               "can read and change the traffic");
  return 1;
}

#endif /* CPORT_HAVE_TLS */
