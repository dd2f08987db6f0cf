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
// steady state does not call malloc.
#include <array>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>

#include "example_args.h"

#define PROG "bench_asio"

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

struct session {
  // Declared so that buf stays uninitialised: value-initialising it would
  // touch all 64 KiB of every idle session.
  explicit session(tcp::socket s) : socket(std::move(s)) {
  }
  tcp::socket socket;
  std::array<char, 64 * 1024> buf;
};

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


void accept(tcp::acceptor& acceptor) {
  acceptor.async_accept([&acceptor](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted)
      return;
    if (!ec) {
      error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      session_read(std::make_unique<session>(std::move(socket)));
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
               "usage: %s [--host ADDR] [--port N] [--threads N]\n"
               "  --host ADDR   address to listen on (default 127.0.0.1)\n"
               "  --port N      TCP port, 0 for any free one (default 7777)\n"
               "  --threads N   threads running the io_context (default 1)\n",
               PROG);
}

}  // namespace


int main(int argc, char** argv) {
  const char* host = "127.0.0.1";
  const char* port = "7777";
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
    } else {
      std::fprintf(stderr, PROG ": bad argument '%s'%s%s\n", argv[i],
                   value != nullptr ? " " : "", value != nullptr ? value : "");
      usage(stderr);
      return 2;
    }
  }

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
