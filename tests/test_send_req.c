/* The send request pool: size classes, reuse, the per-class budget, and
 * what a request is charged against send_queue_limit. */
#include "fixture.h"

#include <string.h>

#include "common.h"
#include "send_req.h"

#define HDR sizeof(cport__send_req_t)


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
  assert_int_equal(cport__send_pool_cached(&pool), HDR + 256);
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
  /* A 64 KiB send cannot use the cached 64-byte block. */
  large = cport__send_req_get(&pool, 65536);
  assert_non_null(large);
  assert_ptr_not_equal(large, small);
  memset(large->data, 1, 65536);
  cport__send_req_put(&pool, large);
  assert_int_equal(cport__send_pool_cached(&pool), HDR + 64 + HDR + 65536);
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
    r[i] = cport__send_req_get(&pool, 4000);
    assert_non_null(r[i]);
  }
  for (i = 0; i < N; i++) cport__send_req_put(&pool, r[i]);
  /* 4 KiB class: 512 KiB of budget keeps as many whole blocks as fit. */
  assert_int_equal(cport__send_pool_cached(&pool),
                   CPORT__SEND_POOL_CLASS_BYTES / (HDR + 4096) * (HDR + 4096));
  assert_int_equal(cport__mem_live(),
                   live + (long)(CPORT__SEND_POOL_CLASS_BYTES / (HDR + 4096)));
  cport__send_pool_clear(&pool);
  assert_int_equal(cport__mem_live(), live);
}


/* A request is charged the block it holds: its header and its class's room
 * (or its exact size, outside the pool), plus a shared buffer's bytes,
 * which it keeps alive; the charge of a request made equals the cost
 * predicted before making it. */
static void test_send_req_charge_is_the_memory_held(void** state) {
  static const size_t lens[] = {1, 24, 64, 65, 256, 257, 3000, 65536, 70000};
  cport__send_pool_t pool;
  cport_buf_t* buf;
  size_t i;
  (void)state;
  memset(&pool, 0, sizeof(pool));
  for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
    cport__send_req_t* a = cport__send_req_get(&pool, lens[i]);
    cport__send_req_t* b = cport__send_req_alloc(lens[i]);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(cport__send_req_charge(a),
                     cport__send_req_cost(lens[i], 0, 1));
    assert_int_equal(cport__send_req_charge(b),
                     cport__send_req_cost(lens[i], 0, 0));
    assert_int_equal(cport__send_req_charge(b), HDR + lens[i]);
    /* Pooled: at least the bytes, at most twice them plus a header (up to
     * the largest class), and never less than the header. */
    assert_true(cport__send_req_charge(a) >= HDR + lens[i]);
    if (lens[i] > 64 && lens[i] <= 65536)
      assert_true(cport__send_req_charge(a) < HDR + 4 * lens[i]);
    cport__send_req_put(&pool, a);
    cport__send_req_put(&pool, b);
  }
  /* A shared buffer's request holds no bytes of its own. */
  assert_int_equal(cport_buf_from(&buf, "0123456789", 10), 0);
  {
    cport__send_req_t* r = cport__send_req_get(&pool, 0);
    assert_non_null(r);
    r->len = 10;
    r->buf = buf; /* the request's reference */
    assert_int_equal(cport__send_req_charge(r), HDR + 10);
    assert_int_equal(cport__send_req_charge(r), cport__send_req_cost(0, 10, 1));
    cport__send_req_put(&pool, r);
  }
  cport__send_pool_clear(&pool);
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
      cmocka_unit_test(test_send_req_charge_is_the_memory_held),
      cmocka_unit_test(test_send_req_out_of_memory_returns_null),
  };
  return cmocka_run_group_tests_name("send_req", tests, NULL, NULL);
}
