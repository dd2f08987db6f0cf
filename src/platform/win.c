/* Windows pieces libuv does not provide. */
#include "../common.h"


/* Windows has no SIGPIPE: a write to a vanished peer fails with an error
 * code (WSAECONNRESET), which libuv reports through the write callback. */
void cport__platform_ignore_sigpipe(void) {
}
