# certconn_add_plugin(<target> SOURCES <files...> [LIBS <libs...>] [OUTPUT_DIR <dir>]
#                     [INSTALL_DESTINATION <dir>])
#
# For plugin vendors building against the installed SDK (find_package(CertconnSDK)). Builds a
# run-time loadable certconnector plugin the way the project's own plugins are built
# (cmake/CertconnPlugin.cmake in the source tree), because the host depends on it:
#   - a MODULE library named exactly <target>.so (no "lib" prefix);
#   - -fvisibility=hidden (+ inlines hidden): the library exports only the two entry points that
#     CERTCONN_PLUGIN marks visible (certconn_plugin_query, certconn_plugin_init);
#   - -fno-gnu-unique: no STB_GNU_UNIQUE symbols, which would keep the library mapped after
#     dlclose() and break hot swap (the host refuses such a plugin);
#   - -Wl,--no-undefined: every symbol resolved at link time, so a missing library is a build
#     error rather than a dlopen() failure on the customer's machine; -Wl,-z,now binds eagerly;
#   - -Wl,--exclude-libs,ALL: symbols of static libraries linked in (CertconnSDK::crypto,
#     CertconnSDK::http, your own private dependencies) stay private to this plugin.
# Link private helper libraries statically (LIBS with static archives): two versions of a plugin
# are loaded side by side during a hot swap, and a shared helper with the same SONAME would be
# bound once, to the first version's copy. System libraries (libc, libstdc++, OpenSSL, libcurl,
# p11-kit) are shared with the host and are fine as shared libraries.
function(certconn_add_plugin target)
  cmake_parse_arguments(P "" "OUTPUT_DIR;INSTALL_DESTINATION" "SOURCES;LIBS" ${ARGN})
  if(NOT P_SOURCES)
    message(FATAL_ERROR "certconn_add_plugin(${target}): SOURCES is required")
  endif()
  if(P_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "certconn_add_plugin(${target}): unexpected arguments ${P_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT target MATCHES "^[a-z][a-z0-9-]*$")
    message(FATAL_ERROR "certconn_add_plugin(${target}): a plugin file name is lower case letters, digits and '-'")
  endif()
  add_library(${target} MODULE ${P_SOURCES})
  target_link_libraries(${target} PRIVATE CertconnSDK::sdk ${P_LIBS})
  target_compile_features(${target} PRIVATE cxx_std_20)
  target_compile_options(${target} PRIVATE -fvisibility=hidden $<$<COMPILE_LANGUAGE:CXX>:-fvisibility-inlines-hidden>
                                           -fno-gnu-unique)
  target_link_options(${target} PRIVATE -Wl,--no-undefined -Wl,-z,now -Wl,--exclude-libs,ALL)
  set_target_properties(${target} PROPERTIES PREFIX "" CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  if(P_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${P_OUTPUT_DIR}")
  endif()
  if(P_INSTALL_DESTINATION)
    install(TARGETS ${target} LIBRARY DESTINATION "${P_INSTALL_DESTINATION}"
            PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  endif()
endfunction()
