/* Force-included (-include) into a clang compile of cport's sources
 * (tests/CMakeLists.txt, target check_const_atomics). C11 declares the
 * argument of atomic_load and atomic_load_explicit non-const, and MSVC warns
 * (C4090, an error under /WX) on a pointer to a const atomic object, which
 * gcc and clang accept silently. Here every such load first passes its
 * pointer to a `volatile void*` parameter, so a const one is an error
 * (-Wincompatible-pointer-types-discards-qualifiers). cport__atomic_load_const
 * (src/common.h) is the one sanctioned way to read through const. */
#ifndef CPORT_SHIM_CONST_ATOMICS_H
#define CPORT_SHIM_CONST_ATOMICS_H
/* Before the first system header, as src/platform/unix.c asks (accept4). */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include <stdatomic.h>
static inline void cport_shim_nonconst_(volatile void* p) {
  (void)p;
}
#undef atomic_load
#undef atomic_load_explicit
#define atomic_load_explicit(p, mo) \
  (cport_shim_nonconst_(p), __c11_atomic_load((p), (mo)))
#define atomic_load(p) atomic_load_explicit((p), memory_order_seq_cst)
#endif
