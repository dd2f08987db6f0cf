/* faulty_echo: a libuv echo server that misbehaves on purpose, so that
 * bench/selftest.sh can prove bench_load notices each kind of broken echo.
 *
 *   faulty_echo MODE [--port N]
 *
 * Listens on 127.0.0.1 (loop 0, the default, picks a free one), prints
 * "listening on 127.0.0.1:PORT" and exits 0 on SIGINT or SIGTERM. MODE:
 *   good   a correct echo: the control
 *   flip   inverts byte 1000 of each connection's stream (counted from 0)
 *   drop   leaves out byte 1000
 *   extra  inserts one byte before byte 1000
 *   swap   sends the 2nd accepted connection's bytes to the 3rd and the
 *          3rd's to the 2nd; every other connection is echoed correctly
 *   close  echoes the first 1000 bytes, then closes the connection
 *   stall  echoes the first 1000 bytes, then stops reading but stays open
 *
 * Design notes: a fault sits at a fixed offset of each connection's byte
 * stream rather than of a read, so it does not depend on how the kernel
 * splits the stream and every run fails the same way. Offset 1000 lies
 * inside a message for the sizes the self-test uses, so a dropped byte
 * shows up as shifted bytes and not merely as a short message. The swapped
 * pair is not read until both of its connections exist, because until then
 * the first one's bytes would have nowhere to go. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "servers/server_common.h"

#define PROG "faulty_echo"
#define FAULT_AT 1000

typedef enum {
  FAULT_GOOD,
  FAULT_FLIP,
  FAULT_DROP,
  FAULT_EXTRA,
  FAULT_SWAP,
  FAULT_CLOSE,
  FAULT_STALL
} fault_t;

static const char* const fault_names[] = {"good", "flip",  "drop", "extra",
                                          "swap", "close", "stall"};
_Static_assert((sizeof(fault_names) / sizeof(fault_names[0]) ==
                FAULT_STALL + 1),
               "one name per mode, in enum order");

typedef struct conn_s {
  uv_tcp_t tcp;        /* first, so the handle pointer is the conn pointer */
  uint64_t seen;       /* bytes read so far */
  struct conn_s* peer; /* swap: where this connection's bytes go */
} conn_t;

typedef struct write_req_s {
  uv_write_t req;
  char* data;
  int close_after;
} write_req_t;

static fault_t fault;
static uv_tcp_t server;
static unsigned long accepted;
static conn_t* swap_first; /* the 2nd connection, until the 3rd arrives */


static void alloc_cb(uv_handle_t* handle,
                     size_t suggested_size,
                     uv_buf_t* buf) {
  (void)handle;
  /* One spare byte, so that `extra` can insert in place. */
  buf->base = malloc(suggested_size + 1);
  /* A zero length makes libuv report UV_ENOBUFS to read_cb. */
  buf->len = buf->base != NULL ? suggested_size : 0;
}


static void conn_close(conn_t* conn) {
  conn_t* peer = conn->peer;
  if (uv_is_closing((uv_handle_t*)&conn->tcp))
    return;
  if (conn == swap_first)
    swap_first = NULL;
  /* The peer's bytes would have nowhere to go, and a peer left open would
   * turn the swap into a stall as well. */
  conn->peer = NULL;
  if (peer != NULL) {
    peer->peer = NULL;
    conn_close(peer);
  }
  uv_close((uv_handle_t*)&conn->tcp, server_uv_free_cb);
}


static void write_cb(uv_write_t* req, int status) {
  write_req_t* wr = (write_req_t*)req;
  conn_t* conn = (conn_t*)req->handle;
  int close_after = wr->close_after;
  free(wr->data);
  free(wr);
  /* UV_ECANCELED from a close in progress lands here too; conn_close()
   * then has nothing left to do. */
  if (status < 0 || close_after)
    conn_close(conn);
}


/* Takes `data` (malloc'd) in every case. */
static void send_bytes(conn_t* to, char* data, size_t len, int close_after) {
  write_req_t* wr;
  uv_buf_t buf;
  if (len == 0 || uv_is_closing((uv_handle_t*)&to->tcp)) {
    free(data);
    if (close_after)
      conn_close(to);
    return;
  }
  wr = malloc(sizeof(*wr));
  if (wr == NULL) {
    free(data);
    conn_close(to);
    return;
  }
  wr->data = data;
  wr->close_after = close_after;
  buf = uv_buf_init(data, (unsigned int)len);
  if (uv_write(&wr->req, (uv_stream_t*)&to->tcp, &buf, 1, write_cb) != 0) {
    free(data);
    free(wr);
    conn_close(to);
  }
}


static void read_cb(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  conn_t* conn = (conn_t*)stream;
  char* data = buf->base;
  size_t len;
  size_t at;
  int hit;
  int cut = 0;
  if (nread <= 0) {
    free(data); /* 0 is EAGAIN; UV_EOF and errors end the connection */
    if (nread < 0)
      conn_close(conn);
    return;
  }
  len = (size_t)nread;
  hit = conn->seen <= FAULT_AT && FAULT_AT - conn->seen < len;
  at = hit ? (size_t)(FAULT_AT - conn->seen) : 0;
  conn->seen += len;
  if (hit) {
    switch (fault) {
      case FAULT_FLIP:
        data[at] = (char)~data[at];
        break;
      case FAULT_DROP:
        memmove(data + at, data + at + 1, len - at - 1);
        len--;
        break;
      case FAULT_EXTRA:
        memmove(data + at + 1, data + at, len - at);
        /* Unlike the byte it displaces, so the very next byte mismatches
         * instead of one a random pattern might happen to repeat. */
        data[at] = (char)~data[at + 1];
        len++;
        break;
      case FAULT_CLOSE:
      case FAULT_STALL:
        len = at;
        cut = 1;
        break;
      default:
        break;
    }
  }
  if (cut)
    uv_read_stop(stream);
  send_bytes(conn->peer != NULL ? conn->peer : conn, data, len,
             cut && fault == FAULT_CLOSE);
}


static void connection_cb(uv_stream_t* listener, int status) {
  conn_t* conn = (conn_t*)server_uv_accept(listener, status, sizeof(conn_t));
  if (conn == NULL)
    return;
  accepted++;
  if (fault == FAULT_SWAP && accepted == 2) {
    swap_first = conn;
    return;
  }
  if (fault == FAULT_SWAP && accepted == 3 && swap_first != NULL) {
    conn_t* first = swap_first;
    swap_first = NULL;
    conn->peer = first;
    first->peer = conn;
    if (uv_read_start((uv_stream_t*)&first->tcp, alloc_cb, read_cb) != 0) {
      conn_close(conn);
      return;
    }
  }
  if (uv_read_start((uv_stream_t*)&conn->tcp, alloc_cb, read_cb) != 0)
    conn_close(conn);
}


static void close_walk_cb(uv_handle_t* handle, void* arg) {
  (void)arg;
  if (handle->type == UV_TCP && handle != (uv_handle_t*)&server)
    conn_close((conn_t*)handle);
  else if (!uv_is_closing(handle))
    uv_close(handle, NULL);
}


static void signal_cb(uv_signal_t* handle, int signum) {
  (void)signum;
  /* Closing everything, rather than uv_stop(), lets the loop end on its
   * own with nothing left allocated, which keeps sanitizer runs quiet. */
  uv_walk(handle->loop, close_walk_cb, NULL);
}


static void usage(FILE* out) {
  fprintf(out,
          "usage: " PROG
          " MODE [--port N]\n"
          "  MODE      good, flip, drop, extra, swap, close or stall\n"
          "  --port N  port on 127.0.0.1, 0 for any free one (default 0)\n");
}


/* Returns 0 and sets `fault` when `name` is a mode. */
static int parse_mode(const char* name) {
  size_t i;
  for (i = 0; i < sizeof(fault_names) / sizeof(fault_names[0]); i++) {
    if (strcmp(name, fault_names[i]) == 0) {
      fault = (fault_t)i;
      return 0;
    }
  }
  return -1;
}


int main(int argc, char** argv) {
  uv_loop_t* loop = uv_default_loop();
  struct sockaddr_in addr;
  long port = 0;

  if (argc == 2 &&
      (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    usage(stdout);
    return 0;
  }
  if ((argc != 2 && argc != 4) || parse_mode(argv[1]) != 0 ||
      (argc == 4 && (strcmp(argv[2], "--port") != 0 ||
                     example_parse_long(argv[3], 0, 65535, &port) != 0))) {
    fprintf(stderr, PROG ": bad arguments\n");
    usage(stderr);
    return 2;
  }

  uv_ip4_addr("127.0.0.1", (int)port, &addr);
  if (server_uv_listen(PROG, loop, &server, (const struct sockaddr*)&addr,
                       connection_cb, signal_cb) != 0)
    return 1;
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop) == 0 ? 0 : 1;
}
