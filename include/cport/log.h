/* cport: the logging hook.
 *
 * cport never prints on its own: every line it has to say goes through one
 * process-wide hook, set with cport_set_log(). Until the application sets
 * one, the default writer prints warnings and errors to stderr, one line
 * each, with a UTC timestamp:
 *
 *   2026-11-26T19:40:01.123Z cport warn: accept failed: too many open files
 *
 * cport logs conditions that an operator should know about: failures to
 * accept a connection, and listeners that pause because of them, at warn;
 * arguments a create, start or option check refuses, one warn line naming
 * the field, its value and the rule; calls from the wrong thread at error;
 * sessions ended by an idle timeout and other notable events at info and
 * debug. A message is one line of English for people to read; its wording
 * may change in any release, so do not parse it.
 *
 * Threads: messages are logged on the thread where the condition arises,
 * mostly the loop threads, so the hook is called from several threads at
 * once and must be thread-safe. */
#ifndef CPORT_LOG_H
#define CPORT_LOG_H

#include "cport/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How severe a message is: lower is more severe. A message is delivered
 * when its level is at or below the level set with cport_set_log(), so
 * CPORT_LOG_ERROR messages are delivered at every level. */
typedef enum cport_log_level_e {
  CPORT_LOG_ERROR = 0,
  CPORT_LOG_WARN = 1,
  CPORT_LOG_INFO = 2,
  CPORT_LOG_DEBUG = 3
} cport_log_level_t;

/* Receive one message of `level`. `arg` is the pointer given to
 * cport_set_log() together with this function.
 * Ownership: `msg` is one line, NUL-terminated, without a trailing newline,
 *            at most 511 bytes (longer messages are cut); it is borrowed
 *            for the call only: copy it to keep it.
 * Thread:    whichever thread logs, often several loop threads at once: the
 *            function must be thread-safe. It must not call cport_set_log()
 *            (that call would be ignored) and should not call into cport at
 *            all; a message that cport logs on the same thread while the
 *            function runs is dropped rather than delivered recursively. */
typedef void (*cport_log_fn)(cport_log_level_t level,
                             const char* msg,
                             void* arg);

/* Route cport's messages to `fn`, called with `arg`, and deliver those of
 * `level` and more severe levels. `fn` NULL restores the default writer,
 * which prints each message to stderr as one line with a UTC timestamp
 * (`arg` is then ignored). Before the first call the default writer is set,
 * at CPORT_LOG_WARN. A level below CPORT_LOG_ERROR counts as
 * CPORT_LOG_ERROR, one above CPORT_LOG_DEBUG as CPORT_LOG_DEBUG: to silence
 * cport, pass a function that does nothing.
 * `fn`, `arg` and `level` change together: no message is ever delivered to
 * the new `fn` with the old `arg`, or the other way round, or filtered by
 * the other pair's level.
 * Ownership: `arg` is borrowed until the next call of cport_set_log()
 *            returns: by then no call of the old `fn` is running or will
 *            start, so the old `arg` may be freed.
 * Thread:    any, except from inside a cport_log_fn, where the call is
 *            ignored. Applies to every message logged after it returns.
 * Blocks:    until the calls of the old `fn` that are running on other
 *            threads have returned; messages that other threads begin to
 *            log meanwhile wait behind the swap, not the other way round. */
CPORT_API void cport_set_log(cport_log_fn fn,
                             void* arg,
                             cport_log_level_t level);

/* The lower-case name of a level, as the default writer prints it.
 * Ownership: static text; never free it.
 * Thread:    any.
 * Returns:   "error", "warn", "info" or "debug"; "?" for any other value,
 *            never NULL. */
CPORT_API const char* cport_log_level_name(cport_log_level_t level);

#ifdef __cplusplus
}
#endif
#endif /* CPORT_LOG_H */
