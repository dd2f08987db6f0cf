/* bench_uv_trywrite: a raw libuv echo server written the fastest way
 * libuv allows, as a reference point for the cport benchmark.
 *
 *   bench_uv_trywrite [--host ADDR] [--port N | --unix PATH] [--threads N]
 *
 * Design notes: all connections read into one static 64 KiB buffer, which
 * is safe because read_cb consumes it before returning and the loop runs
 * on one thread. read_cb first tries uv_try_write(), which usually sends
 * everything at once with no allocation at all; only the part the kernel
 * did not take is copied into a heap write request for uv_write(). While
 * earlier bytes are still queued, new ones go straight to the queue so the
 * order holds. No buffer is held while a connection is idle. Reading
 * pauses while a megabyte is queued to the peer and resumes once half of
 * it has drained, the thresholds cport uses. */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "server_common.h"

#define PROG "bench_uv_trywrite"

typedef struct write_req_s {
  uv_write_t req;
  uv_buf_t buf;
  char data[]; /* the unsent bytes, in the same allocation */
} write_req_t;

static char read_buf[64 * 1024];


static void alloc_cb(uv_handle_t* handle,
                     size_t suggested_size,
                     uv_buf_t* buf) {
  (void)handle;
  (void)suggested_size;
  *buf = uv_buf_init(read_buf, sizeof(read_buf));
}


static void write_cb(uv_write_t* req, int status) {
  uv_stream_t* stream = req->handle;
  free(req); /* the write_req_t, which starts with req */
  server_conn_written(stream, status);
}


static void read_cb(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  uv_buf_t rest;
  write_req_t* wr;
  int rc;
  if (nread <= 0) {
    if (nread < 0) /* UV_EOF and errors end the connection; 0 is EAGAIN */
      server_conn_close(stream);
    return;
  }
  rest = uv_buf_init(buf->base, (unsigned int)nread);
  if (uv_stream_get_write_queue_size(stream) == 0) {
    int sent = uv_try_write(stream, &rest, 1);
    if (sent == (int)rest.len)
      return;
    if (sent < 0 && sent != UV_EAGAIN) {
      server_conn_close(stream);
      return;
    }
    if (sent > 0) {
      rest.base += sent;
      rest.len -= (unsigned int)sent;
    }
  }
  wr = malloc(sizeof(*wr) + rest.len);
  if (wr == NULL) {
    server_conn_close(stream);
    return;
  }
  memcpy(wr->data, rest.base, rest.len);
  wr->buf = uv_buf_init(wr->data, rest.len);
  rc = uv_write(&wr->req, stream, &wr->buf, 1, write_cb);
  if (rc != 0)
    free(wr);
  server_conn_queued(stream, rc);
}


int main(int argc, char** argv) {
  return server_uv_main(PROG, argc, argv, alloc_cb, read_cb);
}
