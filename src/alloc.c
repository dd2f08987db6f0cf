/* The allocator seam: counts live blocks and can inject failures, so the
 * tests can prove that nothing leaks and that out-of-memory paths clean up. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static atomic_long live_blocks;
/* Successful malloc/calloc calls since start, for tests that prove a path
 * allocates nothing. */
static atomic_long total_allocs;
/* < 0: never fail. Otherwise the number of allocations that still succeed. */
static atomic_long fail_countdown = -1;


static int alloc_should_fail(void) {
  long left = atomic_load(&fail_countdown);
  while (left >= 0) {
    if (left == 0)
      return 1;
    if (atomic_compare_exchange_weak(&fail_countdown, &left, left - 1))
      return 0;
  }
  return 0;
}


void* cport__malloc(size_t size) {
  void* p;
  if (alloc_should_fail())
    return NULL;
  p = malloc(size ? size : 1);
  if (p != NULL) {
    atomic_fetch_add(&live_blocks, 1);
    atomic_fetch_add(&total_allocs, 1);
  }
  return p;
}


void* cport__calloc(size_t count, size_t size) {
  void* p;
  if (alloc_should_fail())
    return NULL;
  p = calloc(count ? count : 1, size ? size : 1);
  if (p != NULL) {
    atomic_fetch_add(&live_blocks, 1);
    atomic_fetch_add(&total_allocs, 1);
  }
  return p;
}


void* cport__realloc(void* ptr, size_t size) {
  void* p;
  if (ptr == NULL)
    return cport__malloc(size);
  if (alloc_should_fail())
    return NULL;
  /* The block count is unchanged whether realloc moves the block or not. */
  p = realloc(ptr, size ? size : 1);
  return p;
}


void cport__free(void* ptr) {
  if (ptr == NULL)
    return;
  atomic_fetch_sub(&live_blocks, 1);
  free(ptr);
}


char* cport__strndup(const char* s, size_t max_len) {
  size_t n = 0;
  char* copy;
  while (n < max_len && s[n] != '\0') n++;
  copy = cport__malloc(n + 1);
  if (copy == NULL)
    return NULL;
  memcpy(copy, s, n);
  copy[n] = '\0';
  return copy;
}


long cport__mem_live(void) {
  return atomic_load(&live_blocks);
}


long cport__mem_allocs(void) {
  return atomic_load(&total_allocs);
}


void cport__mem_fail_after(long n) {
  atomic_store(&fail_countdown, n < 0 ? -1 : n);
}
