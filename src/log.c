/* The logging hook: one process-wide {fn, arg, level}, the default writer
 * behind it, and cport__log() for the rest of the library.
 *
 * Design notes. `fn` and `arg` must change together: a logger must never
 * call the new function with the old argument. Two pointers cannot be
 * swapped in one portable atomic operation (C11 and MSVC offer no
 * double-width compare-and-swap), and publishing an immutable pair through
 * one atomic pointer needs a fresh pair per swap: an allocation, or a few
 * static slots that a slow logger may still be reading when a later swap
 * reuses one of them. So the triple sits behind a read-write lock instead.
 * Loggers hold it shared while they read the triple and call `fn`, so loop
 * threads still log concurrently; cport_set_log() holds it exclusive while
 * it writes. Because the swap waits for the calls in progress, it also gives
 * the application a contract that the other schemes cannot: once
 * cport_set_log() returns, the old `fn` is not running and will not be
 * called again, so the old `arg` may be freed.
 *
 * The lock is taken only for a message that is delivered, which is also
 * formatted and (by default) written to a file, so one uncontended shared
 * acquisition is noise. Messages that the level filters out never reach it:
 * the level is mirrored in an atomic that cport__log_enabled() reads with
 * one relaxed load. That copy may be stale for a moment while a swap runs,
 * so cport__log() filters again under the lock, against the level that
 * belongs to the function it is about to call.
 *
 * glibc's read-write locks prefer readers: while loop threads flood the
 * log, a swap (the operator turning debug off again) could wait for ever
 * for a moment with no reader. So a swap also raises log_swapping and holds
 * log_turnstile; a logger that sees the flag passes through the turnstile
 * first, and thus waits behind the swap instead of overtaking it. Only
 * the loggers that checked the flag before it rose still hold the lock
 * shared, and the swap waits for those alone. Without a swap the flag
 * costs a relaxed load.
 *
 * libuv's locks need run-time initialisation, hence uv_once(). A thread
 * that is inside `fn` never takes the lock again: a message logged
 * recursively is dropped, and cport_set_log() from inside `fn` is ignored,
 * because it would wait for itself (and a waiting writer makes a second
 * shared acquisition deadlock on Windows' SRW locks). */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "log_internal.h"

typedef struct log_hook_s {
  cport_log_fn fn;
  void* arg;
  cport_log_level_t level;
} log_hook_t;

static void log_default_write(cport_log_level_t level,
                              const char* msg,
                              void* arg);

/* Written only under the exclusive lock, read only under the shared one. */
static log_hook_t log_hook = {log_default_write, NULL, CPORT_LOG_WARN};
/* log_hook.level, for the lock-free check of cport__log_enabled(). */
static atomic_int log_level = CPORT_LOG_WARN;

static uv_once_t log_once = UV_ONCE_INIT;
static uv_rwlock_t log_lock;
/* Held by a swap from before it raises log_swapping until after it lowers
 * it. */
static uv_mutex_t log_turnstile;
static atomic_int log_swapping;
/* Lock initialisation cannot fail on the platforms libuv supports (glibc
 * and Windows allocate nothing), but if it ever does, cport keeps logging
 * through the default writer and ignores cport_set_log(): with no writer,
 * reading log_hook without the lock is no race. */
static int log_lock_ok;

/* Non-zero while this thread runs the hook's function. */
static CPORT__THREAD_LOCAL int log_in_hook;


static void log_init(void) {
  if (uv_rwlock_init(&log_lock) != 0)
    return;
  if (uv_mutex_init(&log_turnstile) != 0) {
    uv_rwlock_destroy(&log_lock);
    return;
  }
  log_lock_ok = 1;
}


int cport__log_enabled(cport_log_level_t level) {
  return (int)level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}


/* A message must stay one line in a log file, whatever a caller formatted
 * into it (a peer-supplied text, say): drop a trailing newline, turn the
 * other line breaks into spaces. */
static void log_one_line(char* msg) {
  size_t len = strlen(msg);
  size_t i;
  while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
    msg[--len] = '\0';
  for (i = 0; i < len; i++) {
    if (msg[i] == '\n' || msg[i] == '\r')
      msg[i] = ' ';
  }
}


void cport__log(cport_log_level_t level, const char* fmt, ...) {
  char msg[CPORT__LOG_MSG_MAX];
  va_list ap;
  int n;
  assert((int)level >= CPORT_LOG_ERROR && (int)level <= CPORT_LOG_DEBUG);
  if (!cport__log_enabled(level) || log_in_hook)
    return;
  va_start(ap, fmt);
  n = vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (n < 0)
    snprintf(msg, sizeof(msg), "(unformattable message: %s)", fmt);
  /* C99 vsnprintf always terminates; older Windows runtimes did not. */
  msg[sizeof(msg) - 1] = '\0';
  log_one_line(msg);

  uv_once(&log_once, log_init);
  if (log_lock_ok) {
    if (atomic_load_explicit(&log_swapping, memory_order_relaxed)) {
      uv_mutex_lock(&log_turnstile);
      uv_mutex_unlock(&log_turnstile);
    }
    uv_rwlock_rdlock(&log_lock);
  }
  if ((int)level <= (int)log_hook.level) {
    log_in_hook = 1;
    log_hook.fn(level, msg, log_hook.arg);
    log_in_hook = 0;
  }
  if (log_lock_ok)
    uv_rwlock_rdunlock(&log_lock);
}


void cport_set_log(cport_log_fn fn, void* arg, cport_log_level_t level) {
  int clamped = (int)level;
  if (clamped < CPORT_LOG_ERROR)
    clamped = CPORT_LOG_ERROR;
  if (clamped > CPORT_LOG_DEBUG)
    clamped = CPORT_LOG_DEBUG;
  if (log_in_hook)
    return;
  uv_once(&log_once, log_init);
  if (!log_lock_ok)
    return;
  uv_mutex_lock(&log_turnstile);
  atomic_store_explicit(&log_swapping, 1, memory_order_relaxed);
  uv_rwlock_wrlock(&log_lock);
  log_hook.fn = fn != NULL ? fn : log_default_write;
  log_hook.arg = fn != NULL ? arg : NULL;
  log_hook.level = (cport_log_level_t)clamped;
  atomic_store_explicit(&log_level, clamped, memory_order_relaxed);
  uv_rwlock_wrunlock(&log_lock);
  atomic_store_explicit(&log_swapping, 0, memory_order_relaxed);
  uv_mutex_unlock(&log_turnstile);
}


const char* cport_log_level_name(cport_log_level_t level) {
  switch (level) {
    case CPORT_LOG_ERROR:
      return "error";
    case CPORT_LOG_WARN:
      return "warn";
    case CPORT_LOG_INFO:
      return "info";
    case CPORT_LOG_DEBUG:
      return "debug";
    default:
      return "?";
  }
}


/* UTC date and time from milliseconds since 1970, by arithmetic rather than
 * gmtime_r(): MinGW declares gmtime_r only under POSIX feature macros, and
 * MSVC's gmtime_s takes its arguments the other way round from C11's, so the
 * libc route needs an #ifdef per platform, where this needs none. Days to
 * the civil date is Howard Hinnant's civil_from_days
 * (howardhinnant.github.io/date_algorithms.html), for days >= 0 only, with
 * years counted from March so that the leap day ends the year. */
size_t cport__log_format_line(char* out,
                              size_t cap,
                              cport_log_level_t level,
                              const char* msg,
                              uint64_t unix_ms) {
  uint64_t secs = unix_ms / 1000;
  uint64_t z = secs / 86400 + 719468;          /* days since 0000-03-01 */
  uint64_t era = z / 146097;                   /* 400-year cycles */
  unsigned doe = (unsigned)(z - era * 146097); /* 0-146096 */
  unsigned yoe =
      (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* 0-399 */
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);    /* 0-365 */
  unsigned mp = (5 * doy + 2) / 153;                         /* 0 = March */
  unsigned day = doy - (153 * mp + 2) / 5 + 1;
  unsigned month = mp < 10 ? mp + 3 : mp - 9;
  unsigned sod = (unsigned)(secs % 86400);
  /* Below 600 million even for UINT64_MAX milliseconds: fits. */
  unsigned year = (unsigned)(era * 400 + yoe + (month <= 2));
  int n;
  if (out == NULL || cap == 0)
    return 0;
  n = snprintf(out, cap, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ cport %s: %s",
               year, month, day, sod / 3600, sod / 60 % 60, sod % 60,
               (unsigned)(unix_ms % 1000), cport_log_level_name(level),
               msg != NULL ? msg : "");
  out[cap - 1] = '\0';
  if (n < 0) {
    out[0] = '\0';
    return 0;
  }
  return (size_t)n < cap ? (size_t)n : cap - 1;
}


static void log_default_write(cport_log_level_t level,
                              const char* msg,
                              void* arg) {
  /* The message, the timestamp and level in front, the newline behind. */
  char line[CPORT__LOG_MSG_MAX + 64];
  uv_timeval64_t now;
  uint64_t unix_ms = 0;
  size_t len;
  (void)arg;
  if (uv_gettimeofday(&now) == 0 && now.tv_sec >= 0)
    unix_ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_usec / 1000;
  len = cport__log_format_line(line, sizeof(line) - 1, level, msg, unix_ms);
  line[len] = '\n';
  line[len + 1] = '\0';
  /* One call per line: stdio locks the stream for the whole call, so lines
   * that several loop threads write at once never interleave mid-line. */
  fputs(line, stderr);
}


int cport__einval(const char* fn, const char* fmt, ...) {
  char what[CPORT__LOG_MSG_MAX];
  va_list ap;
  if (!cport__log_enabled(CPORT_LOG_WARN))
    return UV_EINVAL;
  va_start(ap, fmt);
  if (vsnprintf(what, sizeof(what), fmt, ap) < 0)
    snprintf(what, sizeof(what), "%s", fmt);
  va_end(ap);
  what[sizeof(what) - 1] = '\0';
  cport__log(CPORT_LOG_WARN, "%s: %s", fn, what);
  return UV_EINVAL;
}
