/* Error texts. libuv's uv_strerror() strdup()s a text for codes it does not
 * know, which leaks in a function users call in log lines, so the texts are
 * taken from the X-macro lists at compile time instead. */
#include "common.h"


const char* cport_strerror(int code) {
  switch (code) {
    case 0:
      return "success";
#define CPORT__STRERROR_CASE(name, value, text) \
  case CPORT_##name:                            \
    return text;
      CPORT_ERRNO_MAP(CPORT__STRERROR_CASE)
#undef CPORT__STRERROR_CASE
#define CPORT__UV_STRERROR_CASE(name, text) \
  case UV_##name:                           \
    return text;
      UV_ERRNO_MAP(CPORT__UV_STRERROR_CASE)
#undef CPORT__UV_STRERROR_CASE
    default:
      return "unknown error";
  }
}


const char* cport_err_name(int code) {
  switch (code) {
    case 0:
      return "OK";
#define CPORT__NAME_CASE(name, value, text) \
  case CPORT_##name:                        \
    return #name;
      CPORT_ERRNO_MAP(CPORT__NAME_CASE)
#undef CPORT__NAME_CASE
#define CPORT__UV_NAME_CASE(name, text) \
  case UV_##name:                       \
    return #name;
      UV_ERRNO_MAP(CPORT__UV_NAME_CASE)
#undef CPORT__UV_NAME_CASE
    default:
      return "UNKNOWN";
  }
}
