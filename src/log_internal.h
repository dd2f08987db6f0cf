/* Logging inside the library (log.c). Every message cport prints goes
 * through cport__log(); no other file may write to stdout or stderr. */
#ifndef CPORT_LOG_INTERNAL_H
#define CPORT_LOG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
/* Also defines __MINGW_PRINTF_FORMAT on MinGW. */
#include <stdio.h>

#include "cport/log.h"

/* Let GCC and clang check the arguments of cport__log() against its format.
 * MinGW names the dialect its vsnprintf implements (gnu_printf under
 * __USE_MINGW_ANSI_STDIO, which -std=gnu11 turns on; ms_printf without). */
#if defined(__MINGW_PRINTF_FORMAT)
#define CPORT__PRINTF(fmt_index, first_arg) \
  __attribute__((format(__MINGW_PRINTF_FORMAT, fmt_index, first_arg)))
#elif defined(__GNUC__)
#define CPORT__PRINTF(fmt_index, first_arg) \
  __attribute__((format(printf, fmt_index, first_arg)))
#else
#define CPORT__PRINTF(fmt_index, first_arg)
#endif

/* Size of the stack buffer a message is formatted into, its NUL included:
 * longer messages are cut to CPORT__LOG_MSG_MAX - 1 bytes (log.h promises
 * 511). */
#define CPORT__LOG_MSG_MAX 512

/* Non-zero if a message of `level` would be delivered now: one relaxed
 * atomic load, so that a call site can skip building the arguments of a
 * message nobody wants. cport__log() checks again, so a stale answer costs
 * at most one formatting. */
int cport__log_enabled(cport_log_level_t level);

/* Format a message printf-style into a stack buffer (cut safely at
 * CPORT__LOG_MSG_MAX - 1 bytes; CR and LF become spaces, so that a message
 * stays one line) and hand it to the hook if `level` passes the filter.
 * Never allocates; a message logged from inside the hook is dropped.
 * Thread: any. */
void cport__log(cport_log_level_t level, const char* fmt, ...)
    CPORT__PRINTF(2, 3);

/* Refuse a call's arguments: log one warn line "fn: what: rule" (the
 * function, the field and its value, the rule it breaks, as in
 * "cport_service_create: opts.loop 7000: the core has 1 loop") and return
 * UV_EINVAL, so that each UV_EINVAL of a create, start or option check
 * says which of its causes it was. Thread: any. */
int cport__einval(const char* fn, const char* fmt, ...) CPORT__PRINTF(2, 3);

/* Test hook: the default writer's line, without a newline:
 * "1970-01-01T00:00:01.234Z cport warn: hello" for `unix_ms` 1234 (UTC,
 * proleptic Gregorian calendar, no leap seconds).
 * Ownership: `out` receives at most `cap` bytes, always NUL-terminated when
 *            `cap` > 0 (the line is cut to fit).
 * Returns:   the length written, without the NUL: at most `cap` - 1, and 0
 *            for `cap` 0. */
size_t cport__log_format_line(char* out,
                              size_t cap,
                              cport_log_level_t level,
                              const char* msg,
                              uint64_t unix_ms);

#endif /* CPORT_LOG_INTERNAL_H */
