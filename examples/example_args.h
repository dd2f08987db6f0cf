/* Command-line parsing shared by the examples: strict numbers (a value
 * that is not entirely a decimal number in range is an error, never a
 * silent 0), and the TLS options. */
#ifndef CPORT_EXAMPLE_ARGS_H
#define CPORT_EXAMPLE_ARGS_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cport/cport.h"

/* Parse `text` as a decimal integer in [min, max] into *out.
 * Returns 0 on success, -1 on anything else. */
static int example_parse_long(const char* text, long min, long max, long* out) {
  char* end = NULL;
  long value;
  if (text == NULL || *text == '\0' || *text == '-' || *text == '+' ||
      *text == ' ')
    return -1;
  errno = 0;
  value = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
    return -1;
  *out = value;
  return 0;
}

/* Parse `text` as octal digits only (permission bits, "0660") in
 * [0, max] into *out. Returns 0 on success, -1 on anything else. Inline:
 * see example_parse_double. */
static inline int example_parse_octal(const char* text, long max, long* out) {
  long value = 0;
  const char* p;
  if (text == NULL || *text == '\0')
    return -1;
  for (p = text; *p != '\0'; p++) {
    if (*p < '0' || *p > '7')
      return -1;
    value = value * 8 + (*p - '0');
    if (value > max)
      return -1;
  }
  *out = value;
  return 0;
}

/* Parse `text` as a plain decimal number ("2", "0.5", ".5") in [min, max]
 * into *out: digits with at most one point, no sign, exponent, "inf" or
 * spaces, so that strtod's extras cannot slip through.
 * Returns 0 on success, -1 on anything else.
 * Inline, because an example that does not use it must not get an
 * unused-function warning. */
static inline int example_parse_double(const char* text,
                                       double min,
                                       double max,
                                       double* out) {
  const char* p;
  char* end = NULL;
  int digits = 0;
  int points = 0;
  double value;
  if (text == NULL)
    return -1;
  for (p = text; *p != '\0'; p++) {
    if (*p >= '0' && *p <= '9')
      digits++;
    else if (*p == '.' && points == 0)
      points++;
    else
      return -1;
  }
  if (digits == 0)
    return -1;
  errno = 0;
  value = strtod(text, &end);
  /* Written so that a NaN fails the range check too. */
  if (errno != 0 || end == text || *end != '\0' ||
      !(value >= min && value <= max))
    return -1;
  *out = value;
  return 0;
}

/* The TLS options. Servers take --tls-cert FILE --tls-key FILE (both or
 * neither) and --tls-ca FILE (then a client certificate is required).
 * Clients take --tls (verify the server against the system's CAs),
 * --tls-ca FILE (against these instead), --tls-insecure (verify nothing),
 * --tls-name NAME (the name sent and verified, instead of --host) and
 * --tls-cert/--tls-key (a client certificate). */
typedef struct example_tls_s {
  int on;       /* clients: --tls, or implied by --tls-ca / --tls-insecure */
  int insecure; /* clients: --tls-insecure */
  const char* cert;
  const char* key;
  const char* ca;
  const char* name; /* clients */
} example_tls_t;

/* If `arg` is a TLS option of `role`, record it and return how many
 * arguments it took: 1 for a flag, 2 for an option and its `value`.
 * Returns 0 for any other argument, and when the value is missing. */
static inline int example_tls_option(example_tls_t* t,
                                     cport_tls_role_t role,
                                     const char* arg,
                                     const char* value) {
  int client = role == CPORT_TLS_CLIENT;
  if (client && strcmp(arg, "--tls") == 0) {
    t->on = 1;
    return 1;
  }
  if (client && strcmp(arg, "--tls-insecure") == 0) {
    t->on = t->insecure = 1;
    return 1;
  }
  if (value == NULL)
    return 0;
  if (strcmp(arg, "--tls-cert") == 0)
    t->cert = value;
  else if (strcmp(arg, "--tls-key") == 0)
    t->key = value;
  else if (strcmp(arg, "--tls-ca") == 0)
    t->ca = value;
  else if (client && strcmp(arg, "--tls-name") == 0)
    t->name = value;
  else
    return 0;
  if (client && t->ca != NULL)
    t->on = 1;
  return 2;
}

/* What is wrong with the TLS options given, or NULL when nothing is. */
static inline const char* example_tls_check(const example_tls_t* t,
                                            cport_tls_role_t role) {
  if (!t->on && t->cert == NULL && t->key == NULL && t->ca == NULL &&
      t->name == NULL)
    return NULL;
  if (!cport_tls_available())
    return "this cport was built without TLS: no --tls options";
  if ((t->cert == NULL) != (t->key == NULL))
    return "--tls-cert and --tls-key go together";
  if (role == CPORT_TLS_SERVER)
    return t->cert == NULL ? "--tls-ca needs --tls-cert and --tls-key" : NULL;
  if (t->insecure && t->ca != NULL)
    return "--tls-insecure and --tls-ca exclude each other";
  if (!t->on)
    return "--tls-name and --tls-cert need --tls, --tls-ca or "
           "--tls-insecure";
  return NULL;
}

/* Create the TLS context the options ask for into `*out`, NULL when they
 * ask for none. Returns 0 or cport_tls_create()'s error, said on stderr
 * after `prog`. */
static inline int example_tls_create(const example_tls_t* t,
                                     cport_tls_role_t role,
                                     const char* prog,
                                     cport_tls_t** out) {
  cport_tls_opts_t o;
  int rc;
  *out = NULL;
  if (!t->on && t->cert == NULL)
    return 0;
  cport_tls_opts_init(&o);
  o.cert_file = t->cert;
  o.key_file = t->key;
  o.ca_file = t->ca;
  if (role == CPORT_TLS_SERVER && t->ca != NULL)
    o.verify = CPORT_TLS_VERIFY_REQUIRE;
  if (t->insecure) {
    o.verify = CPORT_TLS_VERIFY_NONE;
    fprintf(stderr,
            "%s: warning: --tls-insecure: the server's certificate is not "
            "checked; anyone on the path can read and change the traffic\n",
            prog);
  }
  rc = cport_tls_create(out, role, &o);
  if (rc != 0)
    fprintf(stderr, "%s: TLS: %s: %s\n", prog, cport_err_name(rc),
            cport_strerror(rc));
  return rc;
}

#endif /* CPORT_EXAMPLE_ARGS_H */
