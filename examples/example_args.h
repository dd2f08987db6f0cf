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

#endif /* CPORT_EXAMPLE_ARGS_H */
