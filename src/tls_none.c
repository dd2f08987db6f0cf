/* TLS when cport is built without OpenSSL (CPORT_WITH_TLS off): contexts
 * cannot be created, so no service has TLS and no session ever reaches
 * the connection functions, which are here only for the linker.
 * Compiled to nothing when CPORT_HAVE_TLS is set, so that every source
 * builds whichever way cport is configured. */
#include "tls_internal.h"

#ifndef CPORT_HAVE_TLS
#include <string.h>

#include "log_internal.h"

void cport_tls_opts_init(cport_tls_opts_t* opts) {
  if (opts == NULL)
    return;
  memset(opts, 0, sizeof(*opts));
  opts->min_version = CPORT_TLS_1_2;
  opts->session_tickets = 1;
}


int cport_tls_available(void) {
  return 0;
}


const char* cport_tls_library(void) {
  return "none";
}


int cport_tls_create(cport_tls_t** out,
                     cport_tls_role_t role,
                     const cport_tls_opts_t* opts) {
  (void)role;
  (void)opts;
  if (out != NULL)
    *out = NULL;
  cport__log(CPORT_LOG_WARN,
             "cport_tls_create: cport was built without TLS "
             "(CPORT_WITH_TLS off, or OpenSSL 3 not found)");
  return CPORT_ENOTLS;
}


int cport_tls_add_name(cport_tls_t* tls, const char* name, cport_tls_t* ctx) {
  (void)tls;
  (void)name;
  (void)ctx;
  return CPORT_ENOTLS;
}


void cport_tls_ref(cport_tls_t* tls) {
  (void)tls;
}


void cport_tls_unref(cport_tls_t* tls) {
  (void)tls;
}


cport_tls_role_t cport__tls_role(const cport_tls_t* tls) {
  (void)tls;
  return CPORT_TLS_SERVER;
}


void cport__tls_freeze(cport_tls_t* tls) {
  (void)tls;
}


int cport__tls_insecure(cport_tls_t* tls) {
  (void)tls;
  return 0;
}


int cport__tls_conn_new(cport__tls_conn_t** out,
                        cport_tls_t* tls,
                        cport__tls_pool_t* pool,
                        const char* peer,
                        void** resume) {
  (void)tls;
  (void)pool;
  (void)peer;
  (void)resume;
  *out = NULL;
  return CPORT_ENOTLS;
}


void cport__tls_conn_free(cport__tls_conn_t* c) {
  (void)c;
}


void cport__tls_conn_input(cport__tls_conn_t* c,
                           const uint8_t* data,
                           size_t len) {
  (void)c;
  (void)data;
  (void)len;
}


int cport__tls_conn_keep(cport__tls_conn_t* c) {
  (void)c;
  return 0;
}


int cport__tls_conn_has_input(const cport__tls_conn_t* c) {
  (void)c;
  return 0;
}


int cport__tls_conn_handshake(cport__tls_conn_t* c) {
  (void)c;
  return CPORT_ENOTLS;
}


int cport__tls_conn_read(cport__tls_conn_t* c,
                         uint8_t* buf,
                         size_t cap,
                         size_t* n) {
  (void)c;
  (void)buf;
  (void)cap;
  *n = 0;
  return CPORT_ENOTLS;
}


int cport__tls_conn_reserve(cport__tls_conn_t* c, size_t len) {
  (void)c;
  (void)len;
  return CPORT_ENOTLS;
}


int cport__tls_conn_write(cport__tls_conn_t* c, const void* data, size_t len) {
  (void)c;
  (void)data;
  (void)len;
  return CPORT_ENOTLS;
}


int cport__tls_conn_close_notify(cport__tls_conn_t* c) {
  (void)c;
  return 0;
}


cport__tls_out_t* cport__tls_conn_take(cport__tls_conn_t* c) {
  (void)c;
  return NULL;
}


void cport__tls_out_put(cport__tls_pool_t* pool, cport__tls_out_t* o) {
  (void)pool;
  (void)o;
}


void cport__tls_pool_clear(cport__tls_pool_t* pool) {
  (void)pool;
}


const char* cport__tls_conn_cause(const cport__tls_conn_t* c) {
  (void)c;
  return NULL;
}


const char* cport__tls_conn_version(const cport__tls_conn_t* c) {
  (void)c;
  return NULL;
}


const char* cport__tls_conn_cipher(const cport__tls_conn_t* c) {
  (void)c;
  return NULL;
}


const char* cport__tls_conn_alpn(const cport__tls_conn_t* c) {
  (void)c;
  return NULL;
}


const char* cport__tls_conn_sni(const cport__tls_conn_t* c) {
  (void)c;
  return NULL;
}


int cport__tls_conn_resumed(const cport__tls_conn_t* c) {
  (void)c;
  return 0;
}


int cport__tls_conn_peer_subject(const cport__tls_conn_t* c,
                                 char* out,
                                 size_t len) {
  (void)c;
  (void)out;
  (void)len;
  return CPORT_ENOTLS;
}


void cport__tls_resume_free(void* resume) {
  (void)resume;
}

#endif /* !CPORT_HAVE_TLS */
