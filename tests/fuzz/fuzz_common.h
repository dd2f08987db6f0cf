/* What the fuzz targets share: failing loudly, and reading the input.
 * The including file defines FUZZ_NAME (its name in messages) and may
 * define FUZZ_ON_FAIL() (more to print before aborting) first. */
#ifndef CPORT_FUZZ_COMMON_H
#define CPORT_FUZZ_COMMON_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef FUZZ_ON_FAIL
#define FUZZ_ON_FAIL() ((void)0)
#endif

/* MinGW names the printf dialect its stdio implements (log_internal.h). */
#if defined(__MINGW_PRINTF_FORMAT)
#define FUZZ_PRINTF(a, b) __attribute__((format(__MINGW_PRINTF_FORMAT, a, b)))
#elif defined(__GNUC__)
#define FUZZ_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FUZZ_PRINTF(a, b)
#endif

static _Noreturn void fail(const char* fmt, ...) FUZZ_PRINTF(1, 2);

static _Noreturn void fail(const char* fmt, ...) {
  va_list ap;
  fputs(FUZZ_NAME ": ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  FUZZ_ON_FAIL();
  /* abort(), not a return: libFuzzer then saves the input as a crash. */
  abort();
}


/* ---- the input ---- */

typedef struct input_s {
  const uint8_t* p;
  size_t len;
  size_t at;
} input_t;

static inline uint8_t input_byte(input_t* in) {
  return in->at < in->len ? in->p[in->at++] : 0;
}

/* Up to `n` bytes from the cursor; `*got` says how many there were. */
static inline const uint8_t* input_take(input_t* in, size_t n, size_t* got) {
  const uint8_t* p = in->p + in->at;
  *got = n < in->len - in->at ? n : in->len - in->at;
  in->at += *got;
  return p;
}

#endif /* CPORT_FUZZ_COMMON_H */
