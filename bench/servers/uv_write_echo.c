/* bench_uv_write: a raw libuv echo server written the classic way, as a
 * reference point for the cport benchmark.
 *
 *   bench_uv_write [--host ADDR] [--port N | --unix PATH] [--threads N]
 *
 * Design notes: every read gets its own malloc'd buffer of libuv's
 * suggested size (64 KiB), which then travels inside a heap write request
 * to uv_write() and is freed in the write callback. That is one allocation
 * per read plus one per write, deliberately: it is the model the libuv
 * guide teaches, and the benchmark measures what it costs. No buffer is
 * held while a connection is idle, because libuv asks for one only when
 * the socket is readable. Reading pauses while a megabyte is queued to the
 * peer and resumes once half of it has drained, the thresholds cport uses. */
#include <stdlib.h>

#include <uv.h>

#include "server_common.h"

#define PROG "bench_uv_write"

typedef struct write_req_s {
  uv_write_t req;
  uv_buf_t buf;
} write_req_t;


static void alloc_cb(uv_handle_t* handle,
                     size_t suggested_size,
                     uv_buf_t* buf) {
  (void)handle;
  buf->base = malloc(suggested_size);
  /* A zero length makes libuv report UV_ENOBUFS to read_cb. */
  buf->len = buf->base != NULL ? suggested_size : 0;
}


static void write_cb(uv_write_t* req, int status) {
  write_req_t* wr = (write_req_t*)req;
  uv_stream_t* stream = req->handle;
  free(wr->buf.base);
  free(wr);
  server_conn_written(stream, status);
}


static void read_cb(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  write_req_t* wr;
  int rc;
  char* base = buf->base;
  if (nread <= 0) {
    free(base); /* 0 is EAGAIN; UV_EOF and errors end the connection */
    if (nread < 0)
      server_conn_close(stream);
    return;
  }
  /* A buffer that queues behind others may wait long, so it should pin
   * its bytes rather than 64 KiB: otherwise a peer that sends small pieces
   * and never reads would hold 64 KiB per piece below the byte limit. */
  if (uv_stream_get_write_queue_size(stream) > 0 &&
      (size_t)nread < buf->len / 2) {
    char* shrunk = realloc(base, (size_t)nread);
    if (shrunk != NULL)
      base = shrunk;
  }
  wr = malloc(sizeof(*wr));
  if (wr == NULL) {
    free(base);
    server_conn_close(stream);
    return;
  }
  wr->buf = uv_buf_init(base, (unsigned int)nread);
  rc = uv_write(&wr->req, stream, &wr->buf, 1, write_cb);
  if (rc != 0) {
    free(base);
    free(wr);
  }
  server_conn_queued(stream, rc);
}


int main(int argc, char** argv) {
  return server_uv_main(PROG, argc, argv, alloc_cb, read_cb);
}
