/* POSIX pieces libuv does not provide. */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* accept4 */
#endif
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#if defined(__APPLE__)
#include <sys/ucred.h> /* LOCAL_PEERPID */
#endif

#include "../common.h"


/* libuv writes to sockets with write()/writev(), which raise SIGPIPE when the
 * peer has gone; the default action kills the process. Only a default action
 * is replaced, so an application's own SIGPIPE handler is left alone. macOS
 * libuv also sets SO_NOSIGPIPE per socket; this covers Linux and the BSDs. */
/* libuv's codes are negated errno values on Unix. */
#define UV__ERR_FROM_ERRNO() (-errno)


void cport__platform_ignore_sigpipe(void) {
  struct sigaction old;
  if (sigaction(SIGPIPE, NULL, &old) != 0)
    return;
  if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
}


/* A name of IF_NAMESIZE characters or more names no interface, so it is
 * refused here rather than cut to fit the buffer. */
int cport__platform_if_index(const char* name, size_t len, uint32_t* out) {
  char buf[IF_NAMESIZE];
  unsigned index;
  if (len == 0 || len >= sizeof(buf))
    return UV_EINVAL;
  memcpy(buf, name, len);
  buf[len] = '\0';
  index = if_nametoindex(buf);
  if (index == 0)
    return UV_EINVAL;
  *out = (uint32_t)index;
  return 0;
}


/* FreeBSD's SO_REUSEPORT only lets sockets share a port; its _LB variant
 * also spreads the connections over them, as Linux's does. */
#if defined(SO_REUSEPORT_LB)
#define UNIX_REUSEPORT SO_REUSEPORT_LB
#elif defined(SO_REUSEPORT)
#define UNIX_REUSEPORT SO_REUSEPORT
#endif


int cport__socket_listen(const struct sockaddr* addr,
                         int backlog,
                         unsigned flags,
                         uv_os_sock_t* out) {
  int reuse_port = (flags & CPORT__LISTEN_REUSEPORT) != 0;
  int v6only = (flags & CPORT__LISTEN_V6ONLY) != 0;
  socklen_t len = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
  int on = 1;
  int fd;
  int rc;
#if !defined(UNIX_REUSEPORT)
  if (reuse_port)
    return UV_ENOTSUP;
#endif
  fd = socket(addr->sa_family, SOCK_STREAM, 0);
  if (fd < 0)
    return UV__ERR_FROM_ERRNO();
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 ||
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
#if defined(UNIX_REUSEPORT)
      (reuse_port &&
       setsockopt(fd, SOL_SOCKET, UNIX_REUSEPORT, &on, sizeof(on)) != 0) ||
#endif
      (addr->sa_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) !=
           0) ||
      bind(fd, addr, len) != 0 || listen(fd, backlog) != 0) {
    rc = UV__ERR_FROM_ERRNO();
    close(fd);
    return rc;
  }
  *out = fd;
  return 0;
}


int cport__socket_adopt(int64_t fd64, uv_os_sock_t* out) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  int fd = (int)fd64;
  int type = 0;
  int listening = 0;
  socklen_t optlen = sizeof(type);
  int flags;
  if (fd64 < 0 || fd64 > INT32_MAX || fcntl(fd, F_GETFD) == -1)
    return UV_EBADF;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &optlen) != 0)
    return UV__ERR_FROM_ERRNO(); /* ENOTSOCK for a file or a pipe */
  if (type != SOCK_STREAM)
    return UV_EINVAL;
#if defined(SO_ACCEPTCONN)
  optlen = sizeof(listening);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) == 0 &&
      !listening)
    return UV_EINVAL;
#endif
  if (getsockname(fd, (struct sockaddr*)&ss, &len) != 0)
    return UV__ERR_FROM_ERRNO();
  if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
    return UV_EAFNOSUPPORT;
  flags = fcntl(fd, F_GETFL);
  if (flags == -1 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
      fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
    return UV__ERR_FROM_ERRNO();
  *out = fd;
  return 0;
}


/* sd_listen_fds()'s protocol, read by hand: libsystemd is not a
 * dependency, and any launcher may speak it. */
int cport__platform_listen_fds(int unset_env) {
  const char* pid_text = getenv("LISTEN_PID");
  const char* fds_text = getenv("LISTEN_FDS");
  char* end;
  long pid, n, i;
  int rc = 0;
  if (pid_text == NULL || fds_text == NULL)
    goto done;
  pid = strtol(pid_text, &end, 10);
  if (*pid_text == '\0' || *end != '\0' || pid != (long)getpid())
    goto done; /* meant for another process (our parent, say) */
  n = strtol(fds_text, &end, 10);
  if (*fds_text == '\0' || *end != '\0' || n < 0 || n > 4096) {
    rc = UV_EINVAL;
    goto done;
  }
  for (i = 0; i < n; i++)
    (void)fcntl(3 + (int)i, F_SETFD, FD_CLOEXEC);
  rc = (int)n;
done:
  if (unset_env) {
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
  }
  return rc;
}


int cport__socket_accept(uv_os_sock_t listener, uv_os_sock_t* out) {
  int fd;
#if defined(__linux__)
  fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
#else
  fd = accept(listener, NULL, NULL);
  if (fd >= 0 && fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    int rc = UV__ERR_FROM_ERRNO();
    close(fd);
    return rc;
  }
#endif
#if defined(SO_NOSIGPIPE)
  /* As libuv does for the sockets it creates (macOS, the BSDs): a write to
   * a vanished peer fails with EPIPE instead of raising SIGPIPE, even when
   * the application keeps SIGPIPE's default action. */
  if (fd >= 0) {
    int on = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof(on));
  }
#endif
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
        errno == ECONNABORTED)
      return UV_EAGAIN; /* nothing (left) to accept now */
    return UV__ERR_FROM_ERRNO();
  }
  *out = fd;
  return 0;
}


/* `path` as the kernel's name; `*len` the length to pass. The length was
 * checked when the address was parsed (cport_addr_parse_local). An
 * abstract name ("@name", Linux) has no terminating NUL: its length is
 * exactly its bytes. */
static int local_sockaddr(const char* path,
                          struct sockaddr_un* un,
                          socklen_t* len) {
  size_t n = strlen(path);
  memset(un, 0, sizeof(*un));
  un->sun_family = AF_UNIX;
  if (n + (path[0] == '@' ? 0 : 1) > sizeof(un->sun_path))
    return UV_ENAMETOOLONG;
  memcpy(un->sun_path, path, n);
  if (path[0] == '@') {
    un->sun_path[0] = '\0';
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  } else {
    *len = (socklen_t)sizeof(*un);
  }
  return 0;
}


static int local_socket(int* out) {
#if defined(SO_NOSIGPIPE)
  int on = 1;
#endif
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0)
    return UV__ERR_FROM_ERRNO();
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 ||
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0
#if defined(SO_NOSIGPIPE)
      /* As for accepted sockets (cport__socket_accept). */
      || setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof(on)) != 0
#endif
  ) {
    int rc = UV__ERR_FROM_ERRNO();
    close(fd);
    return rc;
  }
  *out = fd;
  return 0;
}


static int local_connect(const struct sockaddr_un* un,
                         socklen_t len,
                         int* out) {
  int fd;
  int rc = local_socket(&fd);
  if (rc != 0)
    return rc;
  do
    rc = connect(fd, (const struct sockaddr*)un, len);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    /* Not EINPROGRESS on Unix domain sockets: a full backlog is EAGAIN. */
    rc = UV__ERR_FROM_ERRNO();
    close(fd);
    return rc;
  }
  *out = fd;
  return 0;
}


int cport__socket_connect_local(const char* path, uv_os_sock_t* out) {
  struct sockaddr_un un;
  socklen_t len;
  int rc = local_sockaddr(path, &un, &len);
  return rc != 0 ? rc : local_connect(&un, len, out);
}


/* Non-zero if `path` is a socket file that nothing listens on: a connect
 * to it is refused. Anything else (a live server, even one whose backlog
 * is full; a file of another kind; no permission) is left alone. */
static int local_is_stale(const char* path,
                          const struct sockaddr_un* un,
                          socklen_t len) {
  struct stat st;
  int fd = -1;
  int rc;
  if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
    return 0;
  rc = local_connect(un, len, &fd);
  if (rc == 0)
    close(fd);
  return rc == UV_ECONNREFUSED;
}


int cport__socket_listen_local(const char* path,
                               int backlog,
                               unsigned mode,
                               uv_os_sock_t* out,
                               cport__file_id_t* id) {
  struct sockaddr_un un;
  struct stat st;
  socklen_t len;
  int abstract = path[0] == '@';
  int fd;
  int rc = local_sockaddr(path, &un, &len);
  memset(id, 0, sizeof(*id));
  if (rc == 0)
    rc = local_socket(&fd);
  if (rc != 0)
    return rc;
  rc = bind(fd, (struct sockaddr*)&un, len);
  if (rc != 0 && errno == EADDRINUSE && !abstract &&
      local_is_stale(path, &un, len) && unlink(path) == 0)
    rc = bind(fd, (struct sockaddr*)&un, len);
  if (rc != 0) {
    rc = UV__ERR_FROM_ERRNO();
    close(fd);
    return rc;
  }
  if (!abstract) {
    /* Between bind and listen nobody can connect: the mode is in place
     * before the first client could be. */
    if ((mode != 0 && chmod(path, (mode_t)mode) != 0) ||
        stat(path, &st) != 0) {
      rc = UV__ERR_FROM_ERRNO();
      (void)unlink(path);
      close(fd);
      return rc;
    }
    id->dev = (uint64_t)st.st_dev;
    id->ino = (uint64_t)st.st_ino;
  }
  if (listen(fd, backlog) != 0) {
    rc = UV__ERR_FROM_ERRNO();
    cport__socket_unlink_local(path, id);
    close(fd);
    return rc;
  }
  *out = fd;
  return 0;
}


void cport__socket_unlink_local(const char* path, const cport__file_id_t* id) {
  struct stat st;
  if (path[0] == '@' || (id->dev == 0 && id->ino == 0))
    return;
  if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) &&
      (uint64_t)st.st_dev == id->dev && (uint64_t)st.st_ino == id->ino)
    (void)unlink(path);
}


int cport__platform_peer_cred(uv_os_fd_t fd,
                              int server,
                              cport_peer_cred_t* out) {
  (void)server;
#if defined(SO_PEERCRED) && defined(__linux__)
  {
    struct ucred uc;
    socklen_t len = sizeof(uc);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0)
      return UV__ERR_FROM_ERRNO();
    out->pid = uc.pid;
    out->uid = uc.uid;
    out->gid = uc.gid;
    return 0;
  }
#else
  {
    uid_t uid;
    gid_t gid;
    if (getpeereid(fd, &uid, &gid) != 0)
      return UV__ERR_FROM_ERRNO();
    out->uid = uid;
    out->gid = gid;
#if defined(LOCAL_PEERPID)
    {
      pid_t pid;
      socklen_t len = sizeof(pid);
      if (getsockopt(fd, SOL_LOCAL, LOCAL_PEERPID, &pid, &len) == 0)
        out->pid = pid;
    }
#endif
    return 0;
  }
#endif
}


int cport__socket_name(uv_os_sock_t sock, struct sockaddr_storage* out) {
  socklen_t len = sizeof(*out);
  if (getsockname(sock, (struct sockaddr*)out, &len) != 0)
    return UV__ERR_FROM_ERRNO();
  return 0;
}


void cport__socket_close(uv_os_sock_t sock) {
  close(sock);
}
