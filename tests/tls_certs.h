/* Certificates for the TLS tests, made in memory at test time (EC P-256):
 * a CA, and certificates it signs, or that another CA signs. */
#ifndef CPORT_TEST_TLS_CERTS_H
#define CPORT_TEST_TLS_CERTS_H

/* PEM texts, NUL-terminated, valid until tls_certs_free(). */
typedef struct tls_certs_s {
  char* ca;           /* the trusted CA's certificate */
  char* server;       /* localhost, 127.0.0.1 and ::1, signed by the CA */
  char* server_key;
  char* other;        /* only other.invalid, signed by the CA */
  char* other_key;
  char* expired;      /* localhost and 127.0.0.1, expired, by the CA */
  char* expired_key;
  char* stranger;     /* localhost and 127.0.0.1, by an unknown CA */
  char* stranger_key;
  char* client;       /* a client certificate (CN=cport-test-client) */
  char* client_key;
} tls_certs_t;

/* Make them all. Returns 0, or -1 when OpenSSL fails. */
int tls_certs_make(tls_certs_t* out);
void tls_certs_free(tls_certs_t* c);

#endif /* CPORT_TEST_TLS_CERTS_H */
