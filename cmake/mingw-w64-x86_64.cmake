# Cross-compile for 64-bit Windows with Debian's MinGW-w64 (package
# gcc-mingw-w64-x86-64). Used by scripts/test-windows.sh, which runs the
# resulting .exe tests under wine through CMAKE_CROSSCOMPILING_EMULATOR.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

set(CPORT_MINGW_PREFIX x86_64-w64-mingw32)
set(CMAKE_C_COMPILER ${CPORT_MINGW_PREFIX}-gcc)
set(CMAKE_CXX_COMPILER ${CPORT_MINGW_PREFIX}-g++)
set(CMAKE_RC_COMPILER ${CPORT_MINGW_PREFIX}-windres)

# Libraries and headers come from the target's sysroot and from
# CMAKE_PREFIX_PATH (the cross-built libuv and cmocka), never from the
# build machine; programs (pkg-config, shells) from the build machine.
set(CMAKE_FIND_ROOT_PATH /usr/${CPORT_MINGW_PREFIX})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# The GCC runtime linked in, so that the .exe files and DLLs run under
# wine without the compiler's DLL folder on WINEPATH.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static-libgcc")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-static-libgcc")
