/* POSIX pieces libuv does not provide. */
#include <signal.h>

#include "../common.h"


/* libuv writes to sockets with write()/writev(), which raise SIGPIPE when the
 * peer has gone; the default action kills the process. Only a default action
 * is replaced, so an application's own SIGPIPE handler is left alone. macOS
 * libuv also sets SO_NOSIGPIPE per socket; this covers Linux and the BSDs. */
void cport__platform_ignore_sigpipe(void) {
  struct sigaction old;
  if (sigaction(SIGPIPE, NULL, &old) != 0)
    return;
  if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
}
