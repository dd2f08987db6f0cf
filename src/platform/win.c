/* Windows pieces libuv does not provide. */
#include "../common.h"


/* Windows has no SIGPIPE: a write to a vanished peer fails with an error
 * code (WSAECONNRESET), which libuv reports through the write callback. */
void cport__platform_ignore_sigpipe(void) {
}


/* Scopes on Windows are interface indexes, which addr.c reads itself; libuv
 * reads them the same way (uv_ip6_addr uses atoi there), so a name is one no
 * scope has. */
int cport__platform_if_index(const char* name, size_t len, uint32_t* out) {
  (void)name;
  (void)len;
  (void)out;
  return UV_EINVAL;
}


static int socket_error(void) {
  return uv_translate_sys_error(WSAGetLastError());
}


/* libuv has started Winsock (WSAStartup) by the time a loop exists, which is
 * before any listener. No SO_REUSEADDR: on Windows it would let a second
 * server bind the same port. */
int cport__socket_listen(const struct sockaddr* addr,
                         int backlog,
                         unsigned flags,
                         uv_os_sock_t* out) {
  DWORD v6only = (flags & CPORT__LISTEN_V6ONLY) != 0;
  int len = addr->sa_family == AF_INET6 ? (int)sizeof(struct sockaddr_in6)
                                        : (int)sizeof(struct sockaddr_in);
  u_long nonblocking = 1;
  /* Without it, another socket of the same user that sets SO_REUSEADDR may
   * bind this address and port too and take some of the connections; Unix
   * refuses that for a listening socket by itself. */
  BOOL exclusive = TRUE;
  SOCKET s;
  int rc;
  /* Windows has no SO_REUSEPORT; SO_REUSEADDR would let any socket steal
   * the port, which is not the same promise. */
  if (flags & CPORT__LISTEN_REUSEPORT)
    return UV_ENOTSUP;
  s = WSASocketW(addr->sa_family, SOCK_STREAM, IPPROTO_TCP, NULL, 0,
                 WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (s == INVALID_SOCKET)
    return socket_error();
  if (ioctlsocket(s, FIONBIO, &nonblocking) != 0 ||
      setsockopt(s, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (const char*)&exclusive,
                 (int)sizeof(exclusive)) != 0 ||
      (addr->sa_family == AF_INET6 &&
       setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, (const char*)&v6only,
                  (int)sizeof(v6only)) != 0) ||
      bind(s, addr, len) != 0 || listen(s, backlog) != 0) {
    rc = socket_error();
    closesocket(s);
    return rc;
  }
  *out = s;
  return 0;
}


int cport__socket_adopt(int64_t fd, uv_os_sock_t* out) {
  SOCKET s = (SOCKET)fd;
  struct sockaddr_storage ss;
  int len = (int)sizeof(ss);
  int type = 0;
  BOOL listening = FALSE;
  int optlen = (int)sizeof(type);
  u_long nonblocking = 1;
  if (fd < 0)
    return UV_EBADF;
  if (getsockopt(s, SOL_SOCKET, SO_TYPE, (char*)&type, &optlen) != 0)
    return socket_error(); /* WSAENOTSOCK */
  if (type != SOCK_STREAM)
    return UV_EINVAL;
  optlen = (int)sizeof(listening);
  if (getsockopt(s, SOL_SOCKET, SO_ACCEPTCONN, (char*)&listening, &optlen) ==
          0 &&
      !listening)
    return UV_EINVAL;
  if (getsockname(s, (struct sockaddr*)&ss, &len) != 0)
    return socket_error();
  if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
    return UV_EAFNOSUPPORT;
  if (ioctlsocket(s, FIONBIO, &nonblocking) != 0)
    return socket_error();
  SetHandleInformation((HANDLE)s, HANDLE_FLAG_INHERIT, 0);
  *out = s;
  return 0;
}


/* Socket activation is systemd's: nothing is ever passed here. */
int cport__platform_listen_fds(int unset_env) {
  (void)unset_env;
  return 0;
}


int cport__socket_accept(uv_os_sock_t listener, uv_os_sock_t* out) {
  SOCKET s = accept(listener, NULL, NULL);
  if (s == INVALID_SOCKET) {
    int err = WSAGetLastError();
    if (err == WSAEWOULDBLOCK || err == WSAECONNRESET || err == WSAEINTR)
      return UV_EAGAIN;
    return uv_translate_sys_error(err);
  }
  /* An accepted socket inherits non-blocking mode; uv_tcp_open sets what
   * libuv needs. Not inheritable, like the listening socket. */
  SetHandleInformation((HANDLE)s, HANDLE_FLAG_INHERIT, 0);
  *out = s;
  return 0;
}


/* A named pipe tells its other end's process only. */
int cport__platform_peer_cred(uv_os_fd_t fd,
                              int server,
                              cport_peer_cred_t* out) {
  ULONG pid = 0;
  BOOL ok = server ? GetNamedPipeClientProcessId(fd, &pid)
                   : GetNamedPipeServerProcessId(fd, &pid);
  if (!ok)
    return uv_translate_sys_error((int)GetLastError());
  out->pid = (int64_t)pid;
  return 0;
}


int cport__socket_name(uv_os_sock_t sock, struct sockaddr_storage* out) {
  int len = (int)sizeof(*out);
  if (getsockname(sock, (struct sockaddr*)out, &len) != 0)
    return socket_error();
  return 0;
}


void cport__socket_close(uv_os_sock_t sock) {
  closesocket(sock);
}
