/* cport_version(): the version of the library that is running, which may
 * differ from the CPORT_VERSION_* macros a program was compiled with when
 * it runs against a newer shared library. */
#include "cport/cport.h"


const char* cport_version(void) {
  return CPORT_VERSION_STRING;
}
