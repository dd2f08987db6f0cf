/* tcp_peer: a misbehaving TCP client for tests/examples_test.sh, written on
 * plain libuv so that it shares no code with cport.
 *
 *   tcp_peer halfclose PORT BYTES  send BYTES, shut down the write side,
 *                                  read until EOF; exit 0 if exactly the
 *                                  bytes sent came back
 *   tcp_peer noread PORT SECONDS   send as fast as possible for SECONDS
 *                                  without ever reading; exit 0
 *
 * Always connects to 127.0.0.1. Exits 3 on any network error, 2 on bad
 * arguments, and after at most 60 s in any case. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

typedef struct peer_s {
  uv_loop_t* loop;
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  uv_shutdown_t shutdown;
  uv_timer_t timer;
  int noread;
  size_t bytes;
  unsigned char* out;
  size_t got;
  int mismatch;
  int eof;
  int error;
} peer_t;

static peer_t peer;


static void pattern(unsigned char* buf, size_t len) {
  size_t i;
  for (i = 0; i < len; i++) buf[i] = (unsigned char)(i * 7 + i / 251);
}


static void stop_all(void) {
  uv_close((uv_handle_t*)&peer.tcp, NULL);
  uv_close((uv_handle_t*)&peer.timer, NULL);
}


static void on_alloc(uv_handle_t* h, size_t size, uv_buf_t* buf) {
  static char chunk[65536];
  (void)h;
  (void)size;
  buf->base = chunk;
  buf->len = sizeof(chunk);
}


static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  (void)s;
  if (n == UV_EOF) {
    peer.eof = 1;
    stop_all();
  } else if (n < 0) {
    peer.error = (int)n;
    stop_all();
  } else if (n > 0) {
    if (peer.got + (size_t)n > peer.bytes ||
        memcmp(buf->base, peer.out + peer.got, (size_t)n) != 0)
      peer.mismatch = 1;
    peer.got += (size_t)n;
  }
}


static void on_shutdown(uv_shutdown_t* req, int status) {
  (void)req;
  if (status != 0) {
    peer.error = status;
    stop_all();
  }
}


static void write_more(void);


static void on_write(uv_write_t* req, int status) {
  (void)req;
  if (status != 0) {
    if (!uv_is_closing((uv_handle_t*)&peer.tcp)) {
      peer.error = status;
      stop_all();
    }
    return;
  }
  if (peer.noread)
    write_more();
  else
    uv_shutdown(&peer.shutdown, (uv_stream_t*)&peer.tcp, on_shutdown);
}


static void write_more(void) {
  uv_buf_t buf = uv_buf_init((char*)peer.out, (unsigned int)peer.bytes);
  if (uv_write(&peer.write, (uv_stream_t*)&peer.tcp, &buf, 1, on_write) != 0) {
    peer.error = UV_EPIPE;
    stop_all();
  }
}


static void on_connect(uv_connect_t* req, int status) {
  (void)req;
  if (status != 0) {
    peer.error = status;
    stop_all();
    return;
  }
  if (!peer.noread)
    uv_read_start((uv_stream_t*)&peer.tcp, on_alloc, on_read);
  write_more();
}


static void on_timer(uv_timer_t* t) {
  (void)t;
  if (!peer.noread)
    peer.error = UV_ETIMEDOUT;
  stop_all();
}


int main(int argc, char** argv) {
  struct sockaddr_in addr;
  long port;
  long amount;
  if (argc != 4)
    return 2;
  port = strtol(argv[2], NULL, 10);
  amount = strtol(argv[3], NULL, 10);
  if (port <= 0 || port > 65535 || amount <= 0)
    return 2;
  if (strcmp(argv[1], "noread") == 0) {
    peer.noread = 1;
    peer.bytes = 65536;
  } else if (strcmp(argv[1], "halfclose") == 0) {
    peer.bytes = (size_t)amount;
  } else {
    return 2;
  }
  peer.out = malloc(peer.bytes);
  if (peer.out == NULL)
    return 3;
  pattern(peer.out, peer.bytes);
  if (uv_ip4_addr("127.0.0.1", (int)port, &addr) != 0)
    return 2;
  peer.loop = uv_default_loop();
  uv_tcp_init(peer.loop, &peer.tcp);
  uv_timer_init(peer.loop, &peer.timer);
  uv_timer_start(&peer.timer, on_timer,
                 peer.noread ? (uint64_t)amount * 1000 : 60000, 0);
  uv_tcp_connect(&peer.connect, &peer.tcp, (const struct sockaddr*)&addr,
                 on_connect);
  uv_run(peer.loop, UV_RUN_DEFAULT);
  free(peer.out);
  if (peer.error != 0) {
    fprintf(stderr, "tcp_peer: %s\n", uv_strerror(peer.error));
    return 3;
  }
  if (!peer.noread && (!peer.eof || peer.mismatch || peer.got != peer.bytes)) {
    fprintf(stderr, "tcp_peer: got %zu of %zu bytes back%s\n", peer.got,
            peer.bytes, peer.mismatch ? ", not equal" : "");
    return 1;
  }
  return 0;
}
