/* Internal helpers shared by every .c file: allocator, container_of,
 * assertions. Nothing here is public API. */
#ifndef CPORT_COMMON_H
#define CPORT_COMMON_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "cport/cport.h"

#define cport__container_of(ptr, type, member) \
  ((type*)((char*)(ptr)-offsetof(type, member)))

#if defined(__GNUC__)
#define CPORT__NODISCARD __attribute__((warn_unused_result))
#else
#define CPORT__NODISCARD
#endif

/* Thread-local storage: MSVC's C mode spells it its own way. */
#if defined(_MSC_VER) && !defined(__clang__)
#define CPORT__THREAD_LOCAL __declspec(thread)
#else
#define CPORT__THREAD_LOCAL _Thread_local
#endif

/* An atomic load from an object the caller sees through a pointer to const
 * (a const handle's counter or state). C11 declares the argument of
 * atomic_load_explicit non-const, and MSVC warns on a const one (C4090, an
 * error under /WX), although a load never writes; so the const goes here, in
 * one place. `T` is the object's atomic type, checked against `ptr` (a
 * mismatch is a distinct-pointer comparison warning). CI makes every other
 * load through const an error (scripts/shims/const_atomics.h). */
#define cport__atomic_load_const(T, ptr, order) \
  ((void)sizeof((ptr) == (const T*)NULL),       \
   atomic_load_explicit((T*)(ptr), (order)))

/* Every allocation of cport goes through these, so that tests can count live
 * blocks and make the next allocations fail. */
void* cport__malloc(size_t size);
void* cport__calloc(size_t count, size_t size);
void* cport__realloc(void* ptr, size_t size);
void cport__free(void* ptr);
char* cport__strndup(const char* s, size_t max_len);

/* Test hooks (not exported from the shared library). */
long cport__mem_live(void);
/* Allocations made so far (malloc and calloc; realloc of a block counts
 * as none). */
long cport__mem_allocs(void);
/* After `n` more successful allocations every allocation fails, until
 * called again with a negative `n`. */
void cport__mem_fail_after(long n);

/* What libuv lacks, per platform (src/platform/). */
void cport__platform_ignore_sigpipe(void);
/* The index of the network interface named by the `len` characters at
 * `name` (not NUL-terminated), for an IPv6 scope such as "%eth0". Returns 0,
 * or UV_EINVAL when no interface has that name. */
int cport__platform_if_index(const char* name, size_t len, uint32_t* out);

/* A listening TCP socket that libuv does not own, for the listener, which
 * hands each accepted socket to a loop, its own or another loop's
 * (listener.c says why). Non-blocking,
 * not inherited by child processes, SO_REUSEADDR on Unix as libuv sets it
 * (on Windows that option would let a second server share the port), and
 * SO_EXCLUSIVEADDRUSE on Windows, so that no other socket can share it,
 * unless `flags` has CPORT__LISTEN_REUSEPORT (UV_ENOTSUP without one).
 * An IPv6 socket takes IPv4 clients too unless CPORT__LISTEN_V6ONLY.
 * Returns 0 or a libuv error (UV_EADDRINUSE, UV_EACCES, ...). */
#define CPORT__LISTEN_REUSEPORT 1u /* SO_REUSEPORT */
#define CPORT__LISTEN_V6ONLY 2u    /* IPV6_V6ONLY on, else off */
int cport__socket_listen(const struct sockaddr* addr,
                         int backlog,
                         unsigned flags,
                         uv_os_sock_t* out);
/* Take over `fd`, a listening socket some other process made (systemd, a
 * parent): checked to be a listening IPv4 or IPv6 stream socket, then made
 * non-blocking and not inherited. Returns 0; UV_EBADF, UV_ENOTSOCK,
 * UV_EINVAL (not a stream, or not listening), UV_EAFNOSUPPORT (not IPv4 or
 * IPv6); on error nothing was changed. */
int cport__socket_adopt(int64_t fd, uv_os_sock_t* out);
/* systemd's LISTEN_FDS for this process (cport_listen_fds()). */
int cport__platform_listen_fds(int unset_env);
/* Accept one connection from `listener`: a socket that is not inherited,
 * for uv_tcp_open to adopt (which makes it non-blocking). Returns 0, UV_EAGAIN
 * when none is waiting, or another libuv error (UV_EMFILE, ...). */
int cport__socket_accept(uv_os_sock_t listener, uv_os_sock_t* out);
/* Local endpoints (Unix domain sockets; Unix only). `path` is as
 * cport_addr_parse_local() took it: a path, or "@name" on Linux for an
 * abstract name.
 *
 * A listening socket on `path`, non-blocking and not inherited. A socket
 * file left by a server that is gone (nothing accepts on it: a connect is
 * refused) is removed and the bind tried again; a live one, or a file
 * that is not a socket, gives UV_EADDRINUSE. `mode` (non-zero) is set on
 * the file before listen(), so no client connects under the umask's
 * mode. `*id` identifies the file made (for cport__socket_unlink_local;
 * zeroed for an abstract name). Returns 0 or a libuv error. */
typedef struct cport__file_id_s {
  uint64_t dev;
  uint64_t ino;
} cport__file_id_t;
#ifndef _WIN32
int cport__socket_listen_local(const char* path,
                               int backlog,
                               unsigned mode,
                               uv_os_sock_t* out,
                               cport__file_id_t* id);
/* Remove the socket file at `path` if it is still the one `id` names (a
 * newer server may have replaced it since). */
void cport__socket_unlink_local(const char* path, const cport__file_id_t* id);
/* A socket connected to `path`, non-blocking and not inherited. A Unix
 * domain connect completes or fails at once: UV_ECONNREFUSED (nothing
 * listens), UV_ENOENT (no such file), UV_EAGAIN (its backlog is full).
 * Returns 0 or that error. */
int cport__socket_connect_local(const char* path, uv_os_sock_t* out);
#endif
/* The credentials of the peer of local connection `fd` (a socket; on
 * Windows a named pipe's handle, of the server's end when `server`):
 * fields the platform does not give are left as they are. Returns 0 or a
 * libuv error. */
int cport__platform_peer_cred(uv_os_fd_t fd,
                              int server,
                              cport_peer_cred_t* out);
/* The socket's local address. Returns 0 or a libuv error. */
int cport__socket_name(uv_os_sock_t sock, struct sockaddr_storage* out);
void cport__socket_close(uv_os_sock_t sock);

#endif /* CPORT_COMMON_H */
