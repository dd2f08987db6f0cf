/* Test certificates made with OpenSSL's X509 functions, so that the TLS
 * tests need no files and no openssl command. */
#include "tls_certs.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

static EVP_PKEY* certs_key(void) {
  return EVP_EC_gen("P-256");
}


static char* certs_pem_of(X509* cert, EVP_PKEY* key) {
  BIO* b = BIO_new(BIO_s_mem());
  char* data;
  char* out = NULL;
  long n;
  if (b == NULL)
    return NULL;
  if ((cert != NULL && PEM_write_bio_X509(b, cert) == 1) ||
      (key != NULL && PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL,
                                               NULL) == 1)) {
    n = BIO_get_mem_data(b, &data);
    out = malloc((size_t)n + 1);
    if (out != NULL) {
      memcpy(out, data, (size_t)n);
      out[n] = '\0';
    }
  }
  BIO_free(b);
  return out;
}


static int certs_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509_EXTENSION* ext;
  int ok;
  X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
  ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  if (ext == NULL)
    return 0;
  ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}


/* A certificate for `key` named `cn`, signed by `issuer_key` as
 * `issuer` (NULL: self-signed CA), valid from `from_days` to `to_days`
 * from now, with `san` ("DNS:localhost,IP:127.0.0.1") unless NULL. */
static X509* certs_make(EVP_PKEY* key,
                        const char* cn,
                        X509* issuer,
                        EVP_PKEY* issuer_key,
                        long from_days,
                        long to_days,
                        const char* san) {
  static long serial = 1;
  X509* cert = X509_new();
  X509_NAME* name;
  int ok;
  if (cert == NULL)
    return NULL;
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert), from_days * 86400);
  X509_gmtime_adj(X509_getm_notAfter(cert), to_days * 86400);
  X509_set_pubkey(cert, key);
  name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             (const unsigned char*)"cport tests", -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             (const unsigned char*)cn, -1, -1, 0);
  X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer)
                                            : name);
  if (issuer == NULL)
    ok = certs_ext(cert, cert, NID_basic_constraints, "critical,CA:TRUE") &&
         certs_ext(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign") &&
         certs_ext(cert, cert, NID_subject_key_identifier, "hash");
  else
    ok = certs_ext(cert, issuer, NID_basic_constraints, "CA:FALSE") &&
         certs_ext(cert, issuer, NID_authority_key_identifier, "keyid") &&
         (san == NULL || certs_ext(cert, issuer, NID_subject_alt_name, san));
  if (!ok || X509_sign(cert, issuer_key != NULL ? issuer_key : key,
                       EVP_sha256()) == 0) {
    X509_free(cert);
    return NULL;
  }
  return cert;
}


/* A leaf for `san` by `ca`, into *pem and *key_pem. */
static int certs_leaf(X509* ca,
                      EVP_PKEY* ca_key,
                      const char* cn,
                      const char* san,
                      long from_days,
                      long to_days,
                      char** pem,
                      char** key_pem) {
  EVP_PKEY* key = certs_key();
  X509* cert =
      key != NULL ? certs_make(key, cn, ca, ca_key, from_days, to_days, san)
                  : NULL;
  if (cert != NULL) {
    *pem = certs_pem_of(cert, NULL);
    *key_pem = certs_pem_of(NULL, key);
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  return *pem != NULL && *key_pem != NULL ? 0 : -1;
}


int tls_certs_make(tls_certs_t* out) {
  const char* local = "DNS:localhost,IP:127.0.0.1,IP:::1";
  EVP_PKEY* ca_key = certs_key();
  EVP_PKEY* odd_key = certs_key();
  X509* ca = NULL;
  X509* odd = NULL;
  int rc = -1;
  memset(out, 0, sizeof(*out));
  if (ca_key == NULL || odd_key == NULL)
    goto done;
  ca = certs_make(ca_key, "cport test CA", NULL, NULL, -1, 30, NULL);
  odd = certs_make(odd_key, "unknown CA", NULL, NULL, -1, 30, NULL);
  if (ca == NULL || odd == NULL)
    goto done;
  out->ca = certs_pem_of(ca, NULL);
  if (out->ca == NULL ||
      certs_leaf(ca, ca_key, "localhost", local, -1, 30, &out->server,
                 &out->server_key) != 0 ||
      certs_leaf(ca, ca_key, "other.invalid", "DNS:other.invalid", -1, 30,
                 &out->other, &out->other_key) != 0 ||
      certs_leaf(ca, ca_key, "localhost", local, -10, -2, &out->expired,
                 &out->expired_key) != 0 ||
      certs_leaf(odd, odd_key, "localhost", local, -1, 30, &out->stranger,
                 &out->stranger_key) != 0 ||
      certs_leaf(ca, ca_key, "cport-test-client", NULL, -1, 30, &out->client,
                 &out->client_key) != 0)
    goto done;
  rc = 0;
done:
  X509_free(ca);
  X509_free(odd);
  EVP_PKEY_free(ca_key);
  EVP_PKEY_free(odd_key);
  if (rc != 0)
    tls_certs_free(out);
  return rc;
}


void tls_certs_free(tls_certs_t* c) {
  free(c->ca);
  free(c->server);
  free(c->server_key);
  free(c->other);
  free(c->other_key);
  free(c->expired);
  free(c->expired_key);
  free(c->stranger);
  free(c->stranger_key);
  free(c->client);
  free(c->client_key);
  memset(c, 0, sizeof(*c));
}
