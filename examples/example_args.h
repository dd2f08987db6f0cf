/* Strict command-line number parsing shared by the examples: a value that is
 * not entirely a decimal number in range is an error, never a silent 0. */
#ifndef CPORT_EXAMPLE_ARGS_H
#define CPORT_EXAMPLE_ARGS_H

#include <errno.h>
#include <stdlib.h>

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

#endif /* CPORT_EXAMPLE_ARGS_H */
