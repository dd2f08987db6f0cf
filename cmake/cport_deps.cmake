# Find libuv (and, for tests, cmocka) and wrap each in one imported target,
# because their CMake configs differ by packager: libuv's own config exports
# libuv::uv / libuv::uv_a, vcpkg's older port unofficial::libuv::libuv, and
# Debian 12 ships only libuv.pc. cmocka 1.1.5's config sets only variables.

if(NOT TARGET cport_libuv)
  add_library(cport_libuv INTERFACE IMPORTED)
  find_package(libuv CONFIG QUIET)
  if(TARGET libuv::uv)
    target_link_libraries(cport_libuv INTERFACE libuv::uv)
  elseif(TARGET libuv::uv_a)
    target_link_libraries(cport_libuv INTERFACE libuv::uv_a)
  elseif(TARGET unofficial::libuv::libuv)
    target_link_libraries(cport_libuv INTERFACE unofficial::libuv::libuv)
  else()
    find_package(PkgConfig QUIET)
    if(PkgConfig_FOUND)
      pkg_check_modules(CPORT_PC_LIBUV QUIET IMPORTED_TARGET libuv>=1.40)
    endif()
    if(TARGET PkgConfig::CPORT_PC_LIBUV)
      target_link_libraries(cport_libuv INTERFACE PkgConfig::CPORT_PC_LIBUV)
    else()
      find_path(CPORT_LIBUV_INCLUDE_DIR uv.h)
      find_library(CPORT_LIBUV_LIBRARY NAMES uv libuv)
      if(NOT CPORT_LIBUV_INCLUDE_DIR OR NOT CPORT_LIBUV_LIBRARY)
        message(FATAL_ERROR "libuv not found: install libuv1-dev (Debian), "
                "libuv (Homebrew) or libuv (vcpkg), or run scripts/deps.sh")
      endif()
      target_include_directories(cport_libuv INTERFACE
        ${CPORT_LIBUV_INCLUDE_DIR})
      target_link_libraries(cport_libuv INTERFACE ${CPORT_LIBUV_LIBRARY})
    endif()
  endif()
endif()

function(cport_find_cmocka)
  if(TARGET cport_cmocka)
    return()
  endif()
  find_path(CPORT_CMOCKA_INCLUDE_DIR cmocka.h)
  find_library(CPORT_CMOCKA_LIBRARY NAMES cmocka cmocka-static)
  if(NOT CPORT_CMOCKA_INCLUDE_DIR OR NOT CPORT_CMOCKA_LIBRARY)
    message(FATAL_ERROR "cmocka not found: install libcmocka-dev (Debian), "
            "cmocka (Homebrew/vcpkg), or run scripts/deps.sh")
  endif()
  add_library(cport_cmocka INTERFACE IMPORTED GLOBAL)
  target_include_directories(cport_cmocka INTERFACE
    ${CPORT_CMOCKA_INCLUDE_DIR})
  target_link_libraries(cport_cmocka INTERFACE ${CPORT_CMOCKA_LIBRARY})
endfunction()
