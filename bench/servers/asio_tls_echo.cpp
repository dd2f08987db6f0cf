// bench_asio_tls: a Boost.Asio TLS echo server (asio::ssl::stream over
// OpenSSL 3), as a reference point for cport's TLS benchmark.
//
//   bench_asio_tls --tls-cert FILE --tls-key FILE [--host ADDR] [--port N]
//                  [--threads N]
//
// Design notes: asio_echo.cpp built with BENCH_TLS, so the two servers
// differ only where TLS must: the socket is an ssl::stream, and
// async_handshake comes before the first async_read_some; the chain, the
// one pending handler owning its session, and the 64 KiB buffer are the
// same. TLS 1.3 only, with TLS_AES_128_GCM_SHA256 so that every server of
// the benchmark runs the same cipher; session tickets stay on (OpenSSL's
// default). Asio's engine sets SSL_MODE_RELEASE_BUFFERS on every stream;
// it is cleared again, so that all servers keep OpenSSL's default buffers
// and the comparison is of the servers, not of that trade (less idle
// memory, more CPU per record). A peer that closes without close_notify
// only ends its session.
#define BENCH_TLS 1
#define PROG "bench_asio_tls"
#include "asio_echo.cpp"
