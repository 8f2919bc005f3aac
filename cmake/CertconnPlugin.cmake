# certconn_add_plugin(<target> SOURCES <files...> [OUTPUT_DIR <dir>] [LIBS <libs...>])
# Builds a run-time loadable plugin: a MODULE library with hidden visibility and without
# STB_GNU_UNIQUE symbols, so that dlclose() really unmaps it (required for hot swap).
function(certconn_add_plugin target)
  cmake_parse_arguments(P "" "OUTPUT_DIR" "SOURCES;LIBS" ${ARGN})
  if(NOT P_OUTPUT_DIR)
    set(P_OUTPUT_DIR "${CERTCONN_PLUGIN_OUTPUT_DIR}")
  endif()
  add_library(${target} MODULE ${P_SOURCES})
  target_link_libraries(${target} PRIVATE certconn::sdk ${P_LIBS})
  target_compile_options(${target} PRIVATE -fvisibility=hidden $<$<COMPILE_LANGUAGE:CXX>:-fvisibility-inlines-hidden> -fno-gnu-unique)
  target_link_options(${target} PRIVATE -Wl,--no-undefined -Wl,-z,now)
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    LIBRARY_OUTPUT_DIRECTORY "${P_OUTPUT_DIR}")
  if(P_OUTPUT_DIR STREQUAL CERTCONN_PLUGIN_OUTPUT_DIR)
    add_dependencies(runtime ${target})
  endif()
endfunction()
