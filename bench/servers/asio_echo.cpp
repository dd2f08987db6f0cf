// bench_asio: a Boost.Asio echo server, as a reference point for the cport
// benchmark.
//
//   bench_asio [--host ADDR] [--port N] [--threads N]
//
// Design notes: each session owns its socket and a 64 KiB buffer and runs
// the chain async_read_some -> async_write(the whole chunk) ->
// async_read_some. Because a session never has two operations pending, the
// one pending handler owns it through a unique_ptr: no shared_ptr counts,
// and handlers dropped when the io_context is destroyed free their
// sessions. The same fact makes the chain an implicit strand (Asio's
// "strands" overview), so with --threads N > 1 sessions need no explicit
// strand: their handlers never run concurrently. Nothing is read while a
// write is pending, so a peer that never reads costs one buffer, no more.
// Handler memory comes from Asio's per-thread recycling allocator, so the
// steady state does not call malloc. asio_tls_echo.cpp builds this file
// again with BENCH_TLS: the socket is then an ssl::stream, and a handshake
// comes before the first read.
#include <array>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#ifdef BENCH_TLS
#include <boost/asio/ssl.hpp>
#include <openssl/ssl.h>
#endif

#include "example_args.h"

#ifndef PROG
#define PROG "bench_asio"
#endif

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

#ifdef BENCH_TLS
namespace ssl = boost::asio::ssl;

struct session {
  // Declared so that buf stays uninitialised: value-initialising it would
  // touch all 64 KiB of every idle session. Asio's engine sets
  // SSL_MODE_RELEASE_BUFFERS on every stream; it is cleared so that every
  // server keeps OpenSSL's default buffers.
  session(tcp::socket s, ssl::context& ctx) : socket(std::move(s), ctx) {
    SSL_clear_mode(socket.native_handle(), SSL_MODE_RELEASE_BUFFERS);
  }
  ssl::stream<tcp::socket> socket;
  std::array<char, 64 * 1024> buf;
};
#else
struct session {
  // Declared so that buf stays uninitialised: value-initialising it would
  // touch all 64 KiB of every idle session.
  explicit session(tcp::socket s) : socket(std::move(s)) {
  }
  tcp::socket socket;
  std::array<char, 64 * 1024> buf;
};
#endif

void session_read(std::unique_ptr<session> s);


void session_write(std::unique_ptr<session> s, std::size_t n) {
  session& r = *s;
  asio::async_write(r.socket, asio::buffer(r.buf, n),
                    [s = std::move(s)](error_code ec, std::size_t) mutable {
                      if (!ec)
                        session_read(std::move(s));
                    });
}


void session_read(std::unique_ptr<session> s) {
  session& r = *s;
  r.socket.async_read_some(
      asio::buffer(r.buf),
      [s = std::move(s)](error_code ec, std::size_t n) mutable {
        if (!ec)
          session_write(std::move(s), n);
      });
}


#ifdef BENCH_TLS
ssl::context tls_ctx(ssl::context::tls_server);


void session_start(tcp::socket socket) {
  auto s = std::make_unique<session>(std::move(socket), tls_ctx);
  session& r = *s;
  r.socket.async_handshake(ssl::stream_base::server,
                           [s = std::move(s)](error_code ec) mutable {
                             if (!ec)
                               session_read(std::move(s));
                           });
}


// TLS 1.3 with one cipher suite, the certificate and its key; false after
// printing why not.
bool setup_tls(const char* cert, const char* key) {
  SSL_CTX* native = tls_ctx.native_handle();
  error_code ec;
  if (SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(native, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(native, "TLS_AES_128_GCM_SHA256") != 1) {
    std::fprintf(stderr, PROG ": cannot set up TLS 1.3 with AES-128-GCM\n");
    return false;
  }
  tls_ctx.use_certificate_chain_file(cert, ec);
  if (!ec)
    tls_ctx.use_private_key_file(key, ssl::context::pem, ec);
  if (ec) {
    std::fprintf(stderr, PROG ": cannot load %s and %s: %s\n", cert, key,
                 ec.message().c_str());
    return false;
  }
  return true;
}
#else
void session_start(tcp::socket socket) {
  session_read(std::make_unique<session>(std::move(socket)));
}
#endif


void accept(tcp::acceptor& acceptor) {
  acceptor.async_accept([&acceptor](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted)
      return;
    if (!ec) {
      error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      session_start(std::move(socket));
    }
    // Other errors (EMFILE, ECONNABORTED) leave the acceptor usable.
    accept(acceptor);
  });
}


// "host:port", or "[host]:port" for IPv6, as cport's echo_server prints.
std::string format_endpoint(const tcp::endpoint& ep) {
  std::string host = ep.address().to_string();
  if (ep.address().is_v6())
    host = "[" + host + "]";
  return host + ":" + std::to_string(ep.port());
}


void usage(FILE* out) {
  std::fprintf(out,
               "usage: %s [--host ADDR] [--port N] [--threads N]"
#ifdef BENCH_TLS
               " --tls-cert FILE --tls-key FILE"
#endif
               "\n"
#ifdef BENCH_TLS
               "  --tls-cert FILE  certificate chain (PEM, leaf first)\n"
               "  --tls-key FILE   its private key (PEM)\n"
#endif
               "  --host ADDR   address to listen on (default 127.0.0.1)\n"
               "  --port N      TCP port, 0 for any free one (default 7777)\n"
               "  --threads N   threads running the io_context (default 1)\n",
               PROG);
}

}  // namespace


int main(int argc, char** argv) {
  const char* host = "127.0.0.1";
  const char* port = "7777";
  [[maybe_unused]] const char* cert = nullptr;
  [[maybe_unused]] const char* key = nullptr;
  long threads = 1;
  long number;

  // Every option takes a value, so options come in pairs.
  for (int i = 1; i < argc; i += 2) {
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    if (std::strcmp(argv[i], "--help") == 0 ||
        std::strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (std::strcmp(argv[i], "--host") == 0 && value != nullptr) {
      host = value;
    } else if (std::strcmp(argv[i], "--port") == 0 &&
               example_parse_long(value, 0, 65535, &number) == 0) {
      port = value;
    } else if (std::strcmp(argv[i], "--threads") == 0 &&
               example_parse_long(value, 1, 1024, &threads) == 0) {
#ifdef BENCH_TLS
    } else if (std::strcmp(argv[i], "--tls-cert") == 0 && value != nullptr) {
      cert = value;
    } else if (std::strcmp(argv[i], "--tls-key") == 0 && value != nullptr) {
      key = value;
#endif
    } else {
      std::fprintf(stderr, PROG ": bad argument '%s'%s%s\n", argv[i],
                   value != nullptr ? " " : "", value != nullptr ? value : "");
      usage(stderr);
      return 2;
    }
  }

#ifdef BENCH_TLS
  if (cert == nullptr || key == nullptr) {
    std::fprintf(stderr, PROG ": --tls-cert and --tls-key are required\n");
    usage(stderr);
    return 2;
  }
  if (!setup_tls(cert, key))
    return 1;
#endif

  // A peer that resets while a write is in flight must not kill us.
  std::signal(SIGPIPE, SIG_IGN);
  // With one thread nothing else touches the sockets, so the hint for
  // that case drops the reactor's per-socket locking.
  asio::io_context io(threads == 1 ? BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO
                                   : static_cast<int>(threads));

  // numeric_service alone drops the default AI_ADDRCONFIG, which would
  // refuse 127.0.0.1 on a host whose only IPv4 address is loopback.
  error_code ec;
  tcp::resolver resolver(io);
  auto results =
      resolver.resolve(host, port, tcp::resolver::numeric_service, ec);
  if (ec || results.empty()) {
    std::fprintf(stderr, PROG ": bad address '%s': %s\n", host,
                 ec ? ec.message().c_str() : "no address");
    usage(stderr);
    return 2;
  }
  tcp::endpoint endpoint = results.begin()->endpoint();

  tcp::acceptor acceptor(io);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec)
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec)
    acceptor.bind(endpoint, ec);
  if (!ec)
    acceptor.listen(511, ec);
  if (ec) {
    std::fprintf(stderr, PROG ": cannot listen on %s: %s\n",
                 format_endpoint(endpoint).c_str(), ec.message().c_str());
    return 1;
  }

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&io](error_code, int) { io.stop(); });

  std::printf("listening on %s\n",
              format_endpoint(acceptor.local_endpoint()).c_str());
  std::fflush(stdout);

  accept(acceptor);
  std::vector<std::thread> pool;
  for (long i = 1; i < threads; i++) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  return 0;
}
