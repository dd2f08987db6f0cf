/* The send request pool: size classes, reuse, the per-class budget. */
#include "fixture.h"

#include <string.h>

#include "common.h"
#include "send_req.h"


static void test_send_req_reuses_the_block_of_its_class(void** state) {
  cport__send_pool_t pool;
  cport__send_req_t* a;
  cport__send_req_t* b;
  long allocs;
  (void)state;
  memset(&pool, 0, sizeof(pool));
  a = cport__send_req_get(&pool, 100);
  assert_non_null(a);
  assert_int_equal(a->len, 100);
  memset(a->data, 0xab, 256); /* the whole class capacity is usable */
  a->off = 7;
  cport__send_req_put(&pool, a);
  assert_int_equal(cport__send_pool_cached(&pool), 256);
  allocs = cport__mem_allocs();
  b = cport__send_req_get(&pool, 256);
  assert_ptr_equal(b, a);
  assert_int_equal(cport__mem_allocs(), allocs);
  /* A recycled request starts clean. */
  assert_int_equal(b->off, 0);
  assert_int_equal(b->len, 256);
  assert_null(b->msg.node.next);
  cport__send_req_put(&pool, b);
  cport__send_pool_clear(&pool);
  assert_int_equal(cport__send_pool_cached(&pool), 0);
}


static void test_send_req_classes_do_not_mix(void** state) {
  cport__send_pool_t pool;
  cport__send_req_t* small;
  cport__send_req_t* large;
  long live = cport__mem_live();
  (void)state;
  memset(&pool, 0, sizeof(pool));
  small = cport__send_req_get(&pool, 10);
  cport__send_req_put(&pool, small);
  /* A 64 KiB send cannot use the cached 256-byte block. */
  large = cport__send_req_get(&pool, 65536);
  assert_non_null(large);
  assert_ptr_not_equal(large, small);
  memset(large->data, 1, 65536);
  cport__send_req_put(&pool, large);
  assert_int_equal(cport__send_pool_cached(&pool), 256 + 65536);
  cport__send_pool_clear(&pool);
  assert_int_equal(cport__mem_live(), live);
}


static void test_send_req_oversize_is_never_cached(void** state) {
  cport__send_pool_t pool;
  cport__send_req_t* r;
  long live = cport__mem_live();
  (void)state;
  memset(&pool, 0, sizeof(pool));
  r = cport__send_req_get(&pool, 65537);
  assert_non_null(r);
  memset(r->data, 2, 65537);
  cport__send_req_put(&pool, r);
  assert_int_equal(cport__send_pool_cached(&pool), 0);
  assert_int_equal(cport__mem_live(), live);
}


static void test_send_req_class_budget_frees_the_excess(void** state) {
  enum { N = 600 };
  cport__send_pool_t pool;
  cport__send_req_t* r[N];
  long live = cport__mem_live();
  int i;
  (void)state;
  memset(&pool, 0, sizeof(pool));
  for (i = 0; i < N; i++) {
    r[i] = cport__send_req_get(&pool, 2000);
    assert_non_null(r[i]);
  }
  for (i = 0; i < N; i++) cport__send_req_put(&pool, r[i]);
  /* 2 KiB class: 512 KiB of budget keeps 256 blocks; 344 were freed. */
  assert_int_equal(cport__send_pool_cached(&pool),
                   CPORT__SEND_POOL_CLASS_BYTES);
  assert_int_equal(cport__mem_live(), live + 256);
  cport__send_pool_clear(&pool);
  assert_int_equal(cport__mem_live(), live);
}


static void test_send_req_out_of_memory_returns_null(void** state) {
  cport__send_pool_t pool;
  (void)state;
  memset(&pool, 0, sizeof(pool));
  cport__mem_fail_after(0);
  assert_null(cport__send_req_get(&pool, 64));
  cport__mem_fail_after(-1);
}


int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_send_req_reuses_the_block_of_its_class),
      cmocka_unit_test(test_send_req_classes_do_not_mix),
      cmocka_unit_test(test_send_req_oversize_is_never_cached),
      cmocka_unit_test(test_send_req_class_budget_frees_the_excess),
      cmocka_unit_test(test_send_req_out_of_memory_returns_null),
  };
  return cmocka_run_group_tests_name("send_req", tests, NULL, NULL);
}
