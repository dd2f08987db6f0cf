// The public headers seen by a C++ compiler (scripts/test-install.sh builds
// this with -Wall -Wextra -Wpedantic -Werror as C++11 and C++17, and links
// it to the installed library): they must parse as C++ and give every
// function C linkage, or the link below fails.
#include <cport/cport.h>

#include <cstdio>
#include <cstring>

int main() {
  cport_service_opts_t opts;
  cport_service_opts_init(&opts);
  if (std::strcmp(cport_version(), CPORT_VERSION_STRING) != 0) {
    std::fprintf(stderr, "headers_cxx: version mismatch\n");
    return 1;
  }
  std::printf("headers_cxx: C++ sees cport %s (%s)\n", cport_version(),
              cport_strerror(CPORT_ESENDQ));
  return 0;
}
