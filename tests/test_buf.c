/* Shared buffers: arguments, contents, reference counts, out of memory, and
 * references taken and dropped on many threads at once (run it under
 * ThreadSanitizer). */
#include "fixture.h"

#include <string.h>

#include "common.h"

#define BUF_THREADS 8
#define BUF_PAIRS 10000


static void test_buf_create_rejects_bad_arguments(void** state) {
  cport_buf_t* sentinel = (cport_buf_t*)&sentinel;
  cport_buf_t* b = sentinel;
  long allocs = cport__mem_allocs();
  (void)state;
  assert_int_equal(cport_buf_create(NULL, 16), UV_EINVAL);
  assert_int_equal(cport_buf_create(&b, 0), UV_EINVAL);
#if SIZE_MAX > UINT32_MAX
  assert_int_equal(cport_buf_create(&b, (size_t)UINT32_MAX + 1), UV_EINVAL);
  assert_int_equal(cport_buf_create(&b, SIZE_MAX), UV_EINVAL);
#endif
  /* Refused before any allocation, and `*out` is left alone. */
  assert_ptr_equal(b, sentinel);
  assert_int_equal(cport__mem_allocs(), allocs);
}


static void test_buf_from_rejects_bad_arguments(void** state) {
  static const char text[] = "hello";
  cport_buf_t* sentinel = (cport_buf_t*)&sentinel;
  cport_buf_t* b = sentinel;
  long allocs = cport__mem_allocs();
  (void)state;
  assert_int_equal(cport_buf_from(NULL, text, 5), UV_EINVAL);
  assert_int_equal(cport_buf_from(&b, NULL, 5), UV_EINVAL);
  assert_int_equal(cport_buf_from(&b, text, 0), UV_EINVAL);
#if SIZE_MAX > UINT32_MAX
  assert_int_equal(cport_buf_from(&b, text, (size_t)UINT32_MAX + 1), UV_EINVAL);
#endif
  assert_ptr_equal(b, sentinel);
  assert_int_equal(cport__mem_allocs(), allocs);
}


static void test_buf_create_gives_len_aligned_bytes(void** state) {
  static const size_t lens[] = {1, 7, 8, 9, 4096, 65537};
  long live = cport__mem_live();
  size_t i;
  (void)state;
  for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
    cport_buf_t* b = NULL;
    uint8_t* data;
    assert_int_equal(cport_buf_create(&b, lens[i]), 0);
    assert_non_null(b);
    assert_int_equal(cport_buf_len(b), lens[i]);
    data = cport_buf_data(b);
    assert_non_null(data);
    assert_int_equal((uintptr_t)data % 8, 0);
    /* Every byte is the caller's to fill (ASan checks the bounds). */
    memset(data, 0x5a, lens[i]);
    assert_int_equal(data[lens[i] - 1], 0x5a);
    cport_buf_unref(b);
  }
  assert_int_equal(cport__mem_live(), live);
}


static void test_buf_from_copies_the_data(void** state) {
  char src[] = "broadcast frame";
  cport_buf_t* b = NULL;
  long live = cport__mem_live();
  (void)state;
  assert_int_equal(cport_buf_from(&b, src, sizeof(src)), 0);
  assert_int_equal(cport_buf_len(b), sizeof(src));
  assert_ptr_not_equal(cport_buf_data(b), (uint8_t*)src);
  assert_int_equal((uintptr_t)cport_buf_data(b) % 8, 0);
  /* The copy does not follow later changes to the source. */
  memset(src, 'x', sizeof(src) - 1);
  assert_memory_equal(cport_buf_data(b), "broadcast frame", sizeof(src));
  assert_int_equal(cport__mem_live(), live + 1);
  cport_buf_unref(b);
  assert_int_equal(cport__mem_live(), live);
}


static void test_buf_accessors_accept_null(void** state) {
  long live = cport__mem_live();
  (void)state;
  assert_null(cport_buf_data(NULL));
  assert_int_equal(cport_buf_len(NULL), 0);
  cport_buf_ref(NULL);
  cport_buf_unref(NULL);
  assert_int_equal(cport__mem_live(), live);
}


static void test_buf_freed_exactly_at_the_last_unref(void** state) {
  cport_buf_t* b = NULL;
  long live = cport__mem_live();
  int i;
  (void)state;
  assert_int_equal(cport_buf_from(&b, "abc", 3), 0);
  assert_int_equal(cport__mem_live(), live + 1);
  for (i = 0; i < 3; i++) cport_buf_ref(b);
  for (i = 0; i < 3; i++) {
    cport_buf_unref(b);
    /* The caller's reference still holds it. */
    assert_int_equal(cport__mem_live(), live + 1);
  }
  assert_memory_equal(cport_buf_data(b), "abc", 3);
  cport_buf_unref(b);
  assert_int_equal(cport__mem_live(), live);
}


static void test_buf_out_of_memory_returns_enomem(void** state) {
  cport_buf_t* sentinel = (cport_buf_t*)&sentinel;
  cport_buf_t* b = sentinel;
  long live = cport__mem_live();
  (void)state;
  cport__mem_fail_after(0);
  assert_int_equal(cport_buf_create(&b, 64), UV_ENOMEM);
  assert_int_equal(cport_buf_from(&b, "abc", 3), UV_ENOMEM);
  cport__mem_fail_after(-1);
  assert_ptr_equal(b, sentinel);
  assert_int_equal(cport__mem_live(), live);
  /* The failure leaves nothing behind that would stop the next buffer. */
  assert_int_equal(cport_buf_from(&b, "abc", 3), 0);
  cport_buf_unref(b);
  assert_int_equal(cport__mem_live(), live);
}


/* What each thread of the threaded tests is given. No cmocka assertion
 * runs off the main thread: a failure is recorded and checked after the
 * join. */
typedef struct buf_worker_s {
  uv_thread_t thread;
  uv_barrier_t* start;
  cport_buf_t* buf;
  /* Non-zero: the thread owns one reference and drops it when done. */
  int owns_ref;
  int bad_bytes;
} buf_worker_t;


static void buf_worker_main(void* arg) {
  buf_worker_t* w = arg;
  cport_buf_t* b = w->buf;
  int i;
  /* Start together, so that the counts really collide. */
  uv_barrier_wait(w->start);
  for (i = 0; i < BUF_PAIRS; i++) {
    cport_buf_ref(b);
    /* Read the bytes like a loop writing them would. */
    if (cport_buf_len(b) != 4 || memcmp(cport_buf_data(b), "ping", 4) != 0)
      w->bad_bytes++;
    cport_buf_unref(b);
  }
  if (w->owns_ref)
    cport_buf_unref(b);
}


static void run_workers(cport_buf_t* b, int owns_ref, int drop_own_ref) {
  buf_worker_t w[BUF_THREADS];
  uv_barrier_t start;
  int i;
  assert_int_equal(uv_barrier_init(&start, BUF_THREADS + 1), 0);
  for (i = 0; i < BUF_THREADS; i++) {
    w[i].start = &start;
    w[i].buf = b;
    w[i].owns_ref = owns_ref;
    w[i].bad_bytes = 0;
    /* Handed over before the thread exists, as a queued write gets its. */
    if (owns_ref)
      cport_buf_ref(b);
    assert_int_equal(uv_thread_create(&w[i].thread, buf_worker_main, &w[i]), 0);
  }
  uv_barrier_wait(&start);
  if (drop_own_ref)
    cport_buf_unref(b);
  for (i = 0; i < BUF_THREADS; i++) {
    assert_int_equal(uv_thread_join(&w[i].thread), 0);
    assert_int_equal(w[i].bad_bytes, 0);
  }
  uv_barrier_destroy(&start);
}


static void test_buf_refs_from_many_threads_keep_it_alive(void** state) {
  cport_buf_t* b = NULL;
  long live = cport__mem_live();
  (void)state;
  assert_int_equal(cport_buf_from(&b, "ping", 4), 0);
  run_workers(b, 0, 0);
  /* 80000 pairs later, only the caller's reference is left. */
  assert_int_equal(cport__mem_live(), live + 1);
  assert_memory_equal(cport_buf_data(b), "ping", 4);
  cport_buf_unref(b);
  assert_int_equal(cport__mem_live(), live);
}


static void test_buf_last_unref_on_any_thread_frees_once(void** state) {
  cport_buf_t* b = NULL;
  long live = cport__mem_live();
  (void)state;
  assert_int_equal(cport_buf_from(&b, "ping", 4), 0);
  /* The caller lets go while the threads still use the buffer, so one of
   * them frees it, after every other thread's last read. */
  run_workers(b, 1, 1);
  assert_int_equal(cport__mem_live(), live);
}


int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_buf_create_rejects_bad_arguments),
      cmocka_unit_test(test_buf_from_rejects_bad_arguments),
      cmocka_unit_test(test_buf_create_gives_len_aligned_bytes),
      cmocka_unit_test(test_buf_from_copies_the_data),
      cmocka_unit_test(test_buf_accessors_accept_null),
      cmocka_unit_test(test_buf_freed_exactly_at_the_last_unref),
      cmocka_unit_test(test_buf_out_of_memory_returns_enomem),
      cmocka_unit_test(test_buf_refs_from_many_threads_keep_it_alive),
      cmocka_unit_test(test_buf_last_unref_on_any_thread_frees_once),
  };
  return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
