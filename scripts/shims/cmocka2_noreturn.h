/* Force-included (-include) into every test by clang builds
 * (tests/CMakeLists.txt) and by the clang pass of scripts/test-windows.sh.
 * cmocka 2 (vcpkg, Homebrew) declares _skip and _fail noreturn, so MSVC's
 * /W4 /WX calls any code after skip() or fail() unreachable (C4702), while
 * Debian's cmocka 1.1 declares them plain. Redeclaring them noreturn here,
 * with -Wunreachable-code, makes clang report that code on every system.
 * A cmocka that defines CMOCKA_NORETURN declares them so itself. */
#ifndef CPORT_SHIM_CMOCKA2_NORETURN_H
#define CPORT_SHIM_CMOCKA2_NORETURN_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#ifndef CMOCKA_NORETURN
__attribute__((noreturn)) void _skip(const char* const file, const int line);
__attribute__((noreturn)) void _fail(const char* const file, const int line);
#endif
#endif
