/* The logging hook: the default state, level filtering, what the function
 * receives, long and multi-line messages, the default writer's line, and
 * the hook swapped while many threads log (run it under
 * ThreadSanitizer). No network. */
#include "fixture.h"

#include <stdio.h>
#include <string.h>

#include "common.h"
#include "log_internal.h"

#define LOG_THREADS 8
#define LOG_MESSAGES 10000
#define LOG_SWAPS 1000


/* What a recording hook saw: the last message and a count per level. */
typedef struct log_rec_s {
  int calls;
  int per_level[CPORT_LOG_DEBUG + 1];
  cport_log_level_t level;
  void* arg;
  char msg[CPORT__LOG_MSG_MAX + 16];
  size_t len;
} log_rec_t;


static void log_record(cport_log_level_t level, const char* msg, void* arg) {
  log_rec_t* rec = arg;
  rec->calls++;
  if ((int)level >= CPORT_LOG_ERROR && (int)level <= CPORT_LOG_DEBUG)
    rec->per_level[level]++;
  rec->level = level;
  rec->arg = arg;
  rec->len = strlen(msg);
  if (rec->len < sizeof(rec->msg))
    memcpy(rec->msg, msg, rec->len + 1);
}


/* Every test starts and ends with the default hook, the state before any
 * cport_set_log(). */
static int log_reset(void** state) {
  (void)state;
  cport_set_log(NULL, NULL, CPORT_LOG_WARN);
  return 0;
}


/* Runs first, before any test has set a hook. */
static void test_log_default_is_warn(void** state) {
  (void)state;
  assert_true(cport__log_enabled(CPORT_LOG_ERROR));
  assert_true(cport__log_enabled(CPORT_LOG_WARN));
  assert_false(cport__log_enabled(CPORT_LOG_INFO));
  assert_false(cport__log_enabled(CPORT_LOG_DEBUG));
}


static void test_log_level_filters_messages(void** state) {
  log_rec_t rec = {0};
  int set;
  (void)state;
  for (set = CPORT_LOG_ERROR; set <= CPORT_LOG_DEBUG; set++) {
    int level;
    memset(&rec, 0, sizeof(rec));
    cport_set_log(log_record, &rec, (cport_log_level_t)set);
    for (level = CPORT_LOG_ERROR; level <= CPORT_LOG_DEBUG; level++) {
      assert_int_equal(cport__log_enabled((cport_log_level_t)level),
                       level <= set);
      cport__log((cport_log_level_t)level, "level %d", level);
    }
    /* Exactly the levels at or above the set severity got through. */
    assert_int_equal(rec.calls, set + 1);
    for (level = CPORT_LOG_ERROR; level <= CPORT_LOG_DEBUG; level++)
      assert_int_equal(rec.per_level[level], level <= set ? 1 : 0);
  }
}


static void test_log_error_passes_every_level(void** state) {
  log_rec_t rec = {0};
  (void)state;
  cport_set_log(log_record, &rec, CPORT_LOG_ERROR);
  cport__log(CPORT_LOG_ERROR, "broken");
  cport__log(CPORT_LOG_WARN, "dropped");
  assert_int_equal(rec.calls, 1);
  assert_int_equal(rec.level, CPORT_LOG_ERROR);
  assert_string_equal(rec.msg, "broken");
}


static void test_log_out_of_range_levels_are_clamped(void** state) {
  log_rec_t rec = {0};
  (void)state;
  /* Below ERROR still lets errors through... */
  cport_set_log(log_record, &rec, (cport_log_level_t)-1);
  assert_true(cport__log_enabled(CPORT_LOG_ERROR));
  assert_false(cport__log_enabled(CPORT_LOG_WARN));
  cport__log(CPORT_LOG_ERROR, "e");
  assert_int_equal(rec.calls, 1);
  /* ...and above DEBUG is DEBUG. */
  cport_set_log(log_record, &rec, (cport_log_level_t)42);
  assert_true(cport__log_enabled(CPORT_LOG_DEBUG));
  cport__log(CPORT_LOG_DEBUG, "d");
  assert_int_equal(rec.calls, 2);
}


static void test_log_fn_gets_level_text_and_arg(void** state) {
  log_rec_t rec = {0};
  (void)state;
  cport_set_log(log_record, &rec, CPORT_LOG_INFO);
  cport__log(CPORT_LOG_INFO, "session %llu idle for %u ms on loop %s",
             (unsigned long long)42, 30000u, "1");
  assert_int_equal(rec.calls, 1);
  assert_int_equal(rec.level, CPORT_LOG_INFO);
  assert_ptr_equal(rec.arg, &rec);
  assert_string_equal(rec.msg, "session 42 idle for 30000 ms on loop 1");
}


static void test_log_long_message_is_cut_safely(void** state) {
  char big[4 * CPORT__LOG_MSG_MAX];
  log_rec_t rec = {0};
  (void)state;
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  cport_set_log(log_record, &rec, CPORT_LOG_WARN);
  cport__log(CPORT_LOG_WARN, "%s%s", "head:", big);
  assert_int_equal(rec.calls, 1);
  /* The buffer's worth minus the NUL, a prefix of the full text (ASan
   * checks that nothing was written past the stack buffer). */
  assert_int_equal(rec.len, CPORT__LOG_MSG_MAX - 1);
  assert_memory_equal(rec.msg, "head:xxx", 8);
  assert_int_equal(rec.msg[rec.len - 1], 'x');
  assert_int_equal(rec.msg[rec.len], '\0');
}


static void test_log_message_stays_one_line(void** state) {
  log_rec_t rec = {0};
  (void)state;
  cport_set_log(log_record, &rec, CPORT_LOG_WARN);
  cport__log(CPORT_LOG_WARN, "peer said %s\n", "a\r\nb\nc");
  assert_string_equal(rec.msg, "peer said a  b c");
}


static void test_log_null_fn_restores_default_writer(void** state) {
  log_rec_t rec = {0};
  (void)state;
  cport_set_log(log_record, &rec, CPORT_LOG_DEBUG);
  cport__log(CPORT_LOG_WARN, "to the hook");
  assert_int_equal(rec.calls, 1);
  /* The arg given with NULL is ignored, and the level is the one given. */
  cport_set_log(NULL, &rec, CPORT_LOG_WARN);
  assert_false(cport__log_enabled(CPORT_LOG_INFO));
  /* Goes to stderr: one timestamped line in the test's output. */
  cport__log(CPORT_LOG_WARN, "test_log: this line on stderr is expected");
  cport__log(CPORT_LOG_INFO, "test_log: filtered, never printed");
  assert_int_equal(rec.calls, 1);
}


static void test_log_level_names(void** state) {
  (void)state;
  assert_string_equal(cport_log_level_name(CPORT_LOG_ERROR), "error");
  assert_string_equal(cport_log_level_name(CPORT_LOG_WARN), "warn");
  assert_string_equal(cport_log_level_name(CPORT_LOG_INFO), "info");
  assert_string_equal(cport_log_level_name(CPORT_LOG_DEBUG), "debug");
  assert_string_equal(cport_log_level_name((cport_log_level_t)4), "?");
  assert_string_equal(cport_log_level_name((cport_log_level_t)-1), "?");
}


static void test_log_format_line_exact(void** state) {
  char line[128];
  (void)state;
  assert_int_equal(
      cport__log_format_line(line, sizeof(line), CPORT_LOG_WARN, "hello", 1234),
      strlen("1970-01-01T00:00:01.234Z cport warn: hello"));
  assert_string_equal(line, "1970-01-01T00:00:01.234Z cport warn: hello");
  cport__log_format_line(line, sizeof(line), CPORT_LOG_ERROR, "x", 0);
  assert_string_equal(line, "1970-01-01T00:00:00.000Z cport error: x");
  /* A leap day, and the last millisecond of a leap year. */
  cport__log_format_line(line, sizeof(line), CPORT_LOG_INFO, "leap",
                         UINT64_C(1709164800007));
  assert_string_equal(line, "2024-02-29T00:00:00.007Z cport info: leap");
  cport__log_format_line(line, sizeof(line), CPORT_LOG_DEBUG, "",
                         UINT64_C(978307199999));
  assert_string_equal(line, "2000-12-31T23:59:59.999Z cport debug: ");
  cport__log_format_line(line, sizeof(line), CPORT_LOG_WARN, NULL,
                         UINT64_C(1795722001123));
  assert_string_equal(line, "2026-11-26T19:40:01.123Z cport warn: ");
}


/* The arithmetic agrees with a plain calendar walk, day by day from 1970
 * to 2400 (past the 400-year cycle, and through 2100, 2200 and 2300, which
 * are not leap years, and 2000, which is). The walk, not the C library's
 * gmtime(), is the reference: MSVC rejects gmtime() under /W4 /WX. */
static void test_log_format_line_matches_calendar(void** state) {
  static const unsigned month_days[12] = {31, 28, 31, 30, 31, 30,
                                          31, 31, 30, 31, 30, 31};
  unsigned year = 1970;
  unsigned month = 1;
  unsigned day = 1;
  uint64_t days = 0;
  (void)state;
  while (year < 2400) {
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    unsigned in_month = month_days[month - 1] + (month == 2 && leap);
    /* A different time of day each day, every value coming round. */
    unsigned sod = (unsigned)(days * 7919 % 86400);
    char line[128];
    char want[128];
    snprintf(want, sizeof(want),
             "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ cport info: m", year, month,
             day, sod / 3600, sod / 60 % 60, sod % 60, (unsigned)(days % 1000));
    cport__log_format_line(line, sizeof(line), CPORT_LOG_INFO, "m",
                           (days * 86400 + sod) * 1000 + days % 1000);
    assert_string_equal(line, want);
    days++;
    if (++day > in_month) {
      day = 1;
      if (++month > 12) {
        month = 1;
        year++;
      }
    }
  }
  /* 1970-01-01 to 2400-01-01. */
  assert_int_equal(days, 157054);
}


static void test_log_format_line_cuts_to_cap(void** state) {
  char big[2000];
  char line[64];
  size_t n;
  (void)state;
  memset(big, 'y', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  n = cport__log_format_line(line, sizeof(line), CPORT_LOG_WARN, big, 1234);
  assert_int_equal(n, sizeof(line) - 1);
  assert_int_equal(strlen(line), sizeof(line) - 1);
  assert_memory_equal(line, "1970-01-01T00:00:01.234Z cport warn: yyy", 40);
  /* One byte holds only the NUL; none holds nothing and is not touched. */
  line[0] = 'z';
  assert_int_equal(
      cport__log_format_line(line, 1, CPORT_LOG_WARN, "hello", 1234), 0);
  assert_int_equal(line[0], '\0');
  line[0] = 'z';
  assert_int_equal(
      cport__log_format_line(line, 0, CPORT_LOG_WARN, "hello", 1234), 0);
  assert_int_equal(line[0], 'z');
  assert_int_equal(
      cport__log_format_line(NULL, 0, CPORT_LOG_WARN, "hello", 1234), 0);
  /* The far future has more digits to the year, and still fits. */
  n = cport__log_format_line(line, sizeof(line), CPORT_LOG_WARN, "x",
                             UINT64_MAX);
  assert_int_equal(n, strlen(line));
  assert_non_null(strstr(line, ".615Z cport warn: x"));
}


/* A hook that logs and swaps from inside itself: both are refused rather
 * than recursing or waiting for itself. */
static void log_reenter(cport_log_level_t level, const char* msg, void* arg) {
  log_record(level, msg, arg);
  cport__log(CPORT_LOG_ERROR, "nested");
  cport_set_log(NULL, NULL, CPORT_LOG_ERROR);
}


static void test_log_hook_cannot_reenter(void** state) {
  log_rec_t rec = {0};
  (void)state;
  cport_set_log(log_reenter, &rec, CPORT_LOG_INFO);
  cport__log(CPORT_LOG_WARN, "outer");
  assert_int_equal(rec.calls, 1);
  assert_string_equal(rec.msg, "outer");
  /* The swap inside was ignored: the hook is still set, at INFO. */
  assert_true(cport__log_enabled(CPORT_LOG_INFO));
  cport__log(CPORT_LOG_INFO, "again");
  assert_int_equal(rec.calls, 2);
}


/* Two hooks, each with an argument of its own, swapped while threads log.
 * Hook A filters at INFO, hook B at DEBUG: a DEBUG message reaching A, or
 * either function called with the other's argument, is a mismatch. */
typedef struct log_pair_arg_s {
  atomic_int calls;
  atomic_int warns;
  atomic_int mismatches;
} log_pair_arg_t;

static log_pair_arg_t pair_a;
static log_pair_arg_t pair_b;


static void log_hook_a(cport_log_level_t level, const char* msg, void* arg) {
  log_pair_arg_t* p = arg;
  (void)msg;
  if (p != &pair_a || level > CPORT_LOG_INFO) {
    atomic_fetch_add(&pair_a.mismatches, 1);
    return;
  }
  atomic_fetch_add(&p->calls, 1);
  if (level == CPORT_LOG_WARN)
    atomic_fetch_add(&p->warns, 1);
}


static void log_hook_b(cport_log_level_t level, const char* msg, void* arg) {
  log_pair_arg_t* p = arg;
  (void)msg;
  if (p != &pair_b) {
    atomic_fetch_add(&pair_b.mismatches, 1);
    return;
  }
  atomic_fetch_add(&p->calls, 1);
  if (level == CPORT_LOG_WARN)
    atomic_fetch_add(&p->warns, 1);
}


typedef struct log_worker_s {
  uv_thread_t thread;
  uv_barrier_t* start;
  int id;
} log_worker_t;


static void log_worker_main(void* arg) {
  log_worker_t* w = arg;
  int i;
  uv_barrier_wait(w->start);
  for (i = 0; i < LOG_MESSAGES; i++) {
    /* Every other message is DEBUG, which only hook B accepts. */
    if (i % 2 == 0)
      cport__log(CPORT_LOG_WARN, "worker %d message %d", w->id, i);
    else
      cport__log(CPORT_LOG_DEBUG, "worker %d message %d", w->id, i);
  }
}


static void test_log_swap_while_threads_log(void** state) {
  log_worker_t w[LOG_THREADS];
  uv_barrier_t start;
  int i;
  (void)state;
  memset(&pair_a, 0, sizeof(pair_a));
  memset(&pair_b, 0, sizeof(pair_b));
  cport_set_log(log_hook_a, &pair_a, CPORT_LOG_INFO);
  assert_int_equal(uv_barrier_init(&start, LOG_THREADS + 1), 0);
  for (i = 0; i < LOG_THREADS; i++) {
    w[i].start = &start;
    w[i].id = i;
    assert_int_equal(uv_thread_create(&w[i].thread, log_worker_main, &w[i]), 0);
  }
  uv_barrier_wait(&start);
  for (i = 0; i < LOG_SWAPS; i++) {
    if (i % 2 == 0)
      cport_set_log(log_hook_b, &pair_b, CPORT_LOG_DEBUG);
    else
      cport_set_log(log_hook_a, &pair_a, CPORT_LOG_INFO);
  }
  for (i = 0; i < LOG_THREADS; i++)
    assert_int_equal(uv_thread_join(&w[i].thread), 0);
  uv_barrier_destroy(&start);

  assert_int_equal(atomic_load(&pair_a.mismatches), 0);
  assert_int_equal(atomic_load(&pair_b.mismatches), 0);
  /* Every WARN message reached exactly one of the hooks. */
  assert_int_equal(atomic_load(&pair_a.warns) + atomic_load(&pair_b.warns),
                   LOG_THREADS * LOG_MESSAGES / 2);
  /* The last swap set A; from now on, B is never called again. */
  i = atomic_load(&pair_b.calls);
  cport__log(CPORT_LOG_WARN, "after the swaps");
  assert_int_equal(atomic_load(&pair_b.calls), i);
  cport_set_log(log_hook_b, &pair_b, CPORT_LOG_DEBUG);
  i = atomic_load(&pair_a.calls);
  cport__log(CPORT_LOG_WARN, "after the swap");
  assert_int_equal(atomic_load(&pair_a.calls), i);
}


int main(void) {
  const struct CMUnitTest tests[] = {
      /* First, and without a reset: the state before any cport_set_log. */
      cmocka_unit_test(test_log_default_is_warn),
      cmocka_unit_test_setup_teardown(test_log_level_filters_messages,
                                      log_reset, log_reset),
      cmocka_unit_test_setup_teardown(test_log_error_passes_every_level,
                                      log_reset, log_reset),
      cmocka_unit_test_setup_teardown(test_log_out_of_range_levels_are_clamped,
                                      log_reset, log_reset),
      cmocka_unit_test_setup_teardown(test_log_fn_gets_level_text_and_arg,
                                      log_reset, log_reset),
      cmocka_unit_test_setup_teardown(test_log_long_message_is_cut_safely,
                                      log_reset, log_reset),
      cmocka_unit_test_setup_teardown(test_log_message_stays_one_line,
                                      log_reset, log_reset),
      cmocka_unit_test_setup_teardown(test_log_null_fn_restores_default_writer,
                                      log_reset, log_reset),
      cmocka_unit_test(test_log_level_names),
      cmocka_unit_test(test_log_format_line_exact),
      cmocka_unit_test(test_log_format_line_matches_calendar),
      cmocka_unit_test(test_log_format_line_cuts_to_cap),
      cmocka_unit_test_setup_teardown(test_log_hook_cannot_reenter, log_reset,
                                      log_reset),
      cmocka_unit_test_setup_teardown(test_log_swap_while_threads_log,
                                      log_reset, log_reset),
  };
  return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
