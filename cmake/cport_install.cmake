# Install rules: headers, the static library and (with CPORT_BUILD_SHARED)
# the shared one, a CMake package (find_package(cport)) and cport.pc.
#
# Installed targets:
#   cport::cport         the shared library when it was built, else the
#                        static one; what most programs want
#   cport::cport_static  the static library (with CPORT_BUILD_SHARED=OFF
#                        the same library as cport::cport; with
#                        BUILD_SHARED_LIBS=ON there is none)
# Both bring libuv along as cport::libuv, found by cportConfig.cmake the
# way cmake/cport_deps.cmake finds it at build time.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(CPORT_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/cport
    CACHE STRING "Where cportConfig.cmake is installed, under the prefix")

if(TARGET cport_shared)
  set_target_properties(cport PROPERTIES EXPORT_NAME cport_static)
  set_target_properties(cport_shared PROPERTIES EXPORT_NAME cport)
  set(cport_installed_targets cport cport_shared)
else()
  set(cport_installed_targets cport)
endif()

install(TARGETS ${cport_installed_targets}
  EXPORT cportTargets
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/cport DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")

install(EXPORT cportTargets
  NAMESPACE cport::
  DESTINATION ${CPORT_INSTALL_CMAKEDIR})
# Before 1.0 a minor release may break the API, so 0.4 satisfies only
# requests for 0.5.x; from 1.0 on, any 1.x satisfies a request for 1.y <= x.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(cport_compat SameMinorVersion)
else()
  set(cport_compat SameMajorVersion)
endif()
write_basic_package_version_file(
  ${CMAKE_CURRENT_BINARY_DIR}/cportConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY ${cport_compat})
configure_package_config_file(
  cmake/cportConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/cportConfig.cmake
  INSTALL_DESTINATION ${CPORT_INSTALL_CMAKEDIR})
install(FILES
  ${CMAKE_CURRENT_BINARY_DIR}/cportConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/cportConfigVersion.cmake
  DESTINATION ${CPORT_INSTALL_CMAKEDIR})

# cport.pc finds its prefix from its own place (${pcfiledir}), so that it
# stays right after `cmake --install --prefix` or a moved installation.
set(cport_pc_dir ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR
   IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(CPORT_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(CPORT_PC_LIBDIR "${CMAKE_INSTALL_FULL_LIBDIR}")
  set(CPORT_PC_INCLUDEDIR "${CMAKE_INSTALL_FULL_INCLUDEDIR}")
else()
  file(RELATIVE_PATH cport_pc_up /prefix/${cport_pc_dir} /prefix)
  string(REGEX REPLACE "/$" "" cport_pc_up "${cport_pc_up}")
  set(CPORT_PC_PREFIX "\${pcfiledir}/${cport_pc_up}")
  set(CPORT_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  set(CPORT_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
# A Windows program linking the DLL must see its symbols as dllimport.
set(CPORT_PC_CFLAGS "")
if(WIN32 AND (TARGET cport_shared OR BUILD_SHARED_LIBS))
  set(CPORT_PC_CFLAGS " -DCPORT_USING_SHARED")
endif()
# A static cport built with TLS needs OpenSSL on the link line
# (pkg-config --static); the shared one links it itself.
set(CPORT_PC_REQUIRES_PRIVATE "")
if(CPORT_HAVE_TLS)
  set(CPORT_PC_REQUIRES_PRIVATE "libssl libcrypto")
endif()
configure_file(cmake/cport.pc.in ${CMAKE_CURRENT_BINARY_DIR}/cport.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/cport.pc DESTINATION ${cport_pc_dir})
