// bench_asio_tls: a Boost.Asio TLS echo server (asio::ssl::stream over
// OpenSSL 3), as a reference point for cport's TLS benchmark.
//
//   bench_asio_tls --tls-cert FILE --tls-key FILE [--host ADDR] [--port N]
//                  [--threads N]
//
// Design notes: asio_echo.cpp with the socket wrapped in an ssl::stream and
// a handshake before the first read: async_handshake -> async_read_some ->
// async_write(the whole chunk) -> async_read_some, one pending handler
// owning the session through a unique_ptr, as there. TLS 1.3 only, with
// TLS_AES_128_GCM_SHA256, so that every server of the benchmark runs the
// same cipher; session tickets stay on (OpenSSL's default). Asio's engine
// sets SSL_MODE_RELEASE_BUFFERS on every stream; it is cleared again, so
// that all servers keep OpenSSL's default buffers and the comparison is of
// the servers, not of that trade (less idle memory, more CPU per record).
// A peer that closes without close_notify only ends its session.
#include <array>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <openssl/ssl.h>

#include "example_args.h"

#define PROG "bench_asio_tls"

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

struct session {
  // Declared so that buf stays uninitialised: value-initialising it would
  // touch all 64 KiB of every idle session.
  session(tcp::socket s, ssl::context& ctx) : stream(std::move(s), ctx) {
    SSL_clear_mode(stream.native_handle(), SSL_MODE_RELEASE_BUFFERS);
  }
  ssl::stream<tcp::socket> stream;
  std::array<char, 64 * 1024> buf;
};

void session_read(std::unique_ptr<session> s);


void session_write(std::unique_ptr<session> s, std::size_t n) {
  session& r = *s;
  asio::async_write(r.stream, asio::buffer(r.buf, n),
                    [s = std::move(s)](error_code ec, std::size_t) mutable {
                      if (!ec)
                        session_read(std::move(s));
                    });
}


void session_read(std::unique_ptr<session> s) {
  session& r = *s;
  r.stream.async_read_some(
      asio::buffer(r.buf),
      [s = std::move(s)](error_code ec, std::size_t n) mutable {
        if (!ec)
          session_write(std::move(s), n);
      });
}


void session_handshake(std::unique_ptr<session> s) {
  session& r = *s;
  r.stream.async_handshake(ssl::stream_base::server,
                           [s = std::move(s)](error_code ec) mutable {
                             if (!ec)
                               session_read(std::move(s));
                           });
}


void accept(tcp::acceptor& acceptor, ssl::context& ctx) {
  acceptor.async_accept([&acceptor, &ctx](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted)
      return;
    if (!ec) {
      error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      session_handshake(std::make_unique<session>(std::move(socket), ctx));
    }
    // Other errors (EMFILE, ECONNABORTED) leave the acceptor usable.
    accept(acceptor, ctx);
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
               "usage: %s --tls-cert FILE --tls-key FILE [--host ADDR] "
               "[--port N] [--threads N]\n"
               "  --tls-cert FILE  certificate chain (PEM, leaf first)\n"
               "  --tls-key FILE   its private key (PEM)\n"
               "  --host ADDR      address to listen on (default 127.0.0.1)\n"
               "  --port N         TCP port, 0 for any free one (default "
               "7777)\n"
               "  --threads N      threads running the io_context (default "
               "1)\n",
               PROG);
}


// TLS 1.3 with one cipher suite, the certificate and its key; false after
// printing why not.
bool setup_tls(ssl::context& ctx, const char* cert, const char* key) {
  SSL_CTX* native = ctx.native_handle();
  error_code ec;
  if (SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(native, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(native, "TLS_AES_128_GCM_SHA256") != 1) {
    std::fprintf(stderr, PROG ": cannot restrict TLS to 1.3 and AES-128-GCM\n");
    return false;
  }
  ctx.use_certificate_chain_file(cert, ec);
  if (!ec)
    ctx.use_private_key_file(key, ssl::context::pem, ec);
  if (ec) {
    std::fprintf(stderr, PROG ": cannot load %s and %s: %s\n", cert, key,
                 ec.message().c_str());
    return false;
  }
  return true;
}

}  // namespace


int main(int argc, char** argv) {
  const char* host = "127.0.0.1";
  const char* port = "7777";
  const char* cert = nullptr;
  const char* key = nullptr;
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
    } else if (std::strcmp(argv[i], "--tls-cert") == 0 && value != nullptr) {
      cert = value;
    } else if (std::strcmp(argv[i], "--tls-key") == 0 && value != nullptr) {
      key = value;
    } else {
      std::fprintf(stderr, PROG ": bad argument '%s'%s%s\n", argv[i],
                   value != nullptr ? " " : "", value != nullptr ? value : "");
      usage(stderr);
      return 2;
    }
  }
  if (cert == nullptr || key == nullptr) {
    std::fprintf(stderr, PROG ": --tls-cert and --tls-key are required\n");
    usage(stderr);
    return 2;
  }

  // A peer that resets while a write is in flight must not kill us.
  std::signal(SIGPIPE, SIG_IGN);
  ssl::context ctx(ssl::context::tls_server);
  if (!setup_tls(ctx, cert, key))
    return 1;
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

  accept(acceptor, ctx);
  std::vector<std::thread> pool;
  for (long i = 1; i < threads; i++) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  return 0;
}
