# cmake -P script behind the consumer_* tests (see tests/CMakeLists.txt).
#
# MODE=add_subdirectory: configure CONSUMER_SOURCE_DIR with -DMHA_SOURCE_DIR, build, run its tests.
# MODE=find_package:     install MHA_BINARY_DIR into WORK_DIR/prefix, then configure the consumer
#                        with that prefix first in CMAKE_PREFIX_PATH, build, run its tests.
# The consumer uses the parent build's generator, compiler, flags and configuration.
# NAME (optional) names the test in messages; it defaults to consumer_<MODE>.
cmake_minimum_required(VERSION 3.25)

foreach(var MODE CONSUMER_SOURCE_DIR WORK_DIR MHA_SOURCE_DIR MHA_BINARY_DIR GENERATOR CXX_COMPILER CTEST)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "RunConsumer.cmake: ${var} is not set")
  endif()
endforeach()

if(NOT NAME)
  set(NAME "consumer_${MODE}")
endif()

function(run step)
  list(JOIN ARGN " " shown)
  message(STATUS "[${NAME}] ${step}: ${shown}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${NAME}: ${step} failed (${rc})")
  endif()
endfunction()

string(REPLACE "|" ";" prefix_path "${PREFIX_PATH}")
set(build_dir "${WORK_DIR}/build")
set(config_args)
if(NOT "${CONFIG}" STREQUAL "")
  set(config_args --config "${CONFIG}")
endif()

set(prefix "")
if(MODE STREQUAL "find_package")
  set(prefix "${WORK_DIR}/prefix")
  file(REMOVE_RECURSE "${prefix}")
  run(install "${CMAKE_COMMAND}" --install "${MHA_BINARY_DIR}" --prefix "${prefix}" ${config_args})
  list(PREPEND prefix_path "${prefix}")
elseif(NOT MODE STREQUAL "add_subdirectory")
  message(FATAL_ERROR "RunConsumer.cmake: unknown MODE '${MODE}'")
endif()

# Settings travel in an initial-cache file, which keeps lists and flags with spaces intact.
set(init_cache "# Written by cmake/RunConsumer.cmake\n")
function(cache_from name var)  # cache variable <name> gets the value of variable <var>
  set(value "${${var}}")
  if(NOT "${value}" STREQUAL "" AND NOT "${value}" MATCHES "NOTFOUND$")
    string(REPLACE "\\" "/" value "${value}")
    string(REPLACE "\"" "\\\"" value "${value}")
    string(APPEND init_cache "set(${name} \"${value}\" CACHE STRING \"\")\n")
    set(init_cache "${init_cache}" PARENT_SCOPE)
  endif()
endfunction()
cache_from(CMAKE_CXX_COMPILER CXX_COMPILER)
cache_from(CMAKE_CXX_FLAGS CXX_FLAGS)
cache_from(CMAKE_EXE_LINKER_FLAGS EXE_LINKER_FLAGS)
cache_from(CMAKE_BUILD_TYPE CONFIG)
cache_from(CMAKE_MAKE_PROGRAM MAKE_PROGRAM)
cache_from(CMAKE_PREFIX_PATH prefix_path)
cache_from(MHA_SOURCE_DIR MHA_SOURCE_DIR)
cache_from(MHA_EXPECTED_PREFIX prefix)
cache_from(MHA_WITH_IO WITH_IO)
cache_from(MHA_WITH_OPENMP WITH_OPENMP)
cache_from(MHA_BLAS BLAS)
# Find the same dependencies as the parent build did.
cache_from(Eigen3_DIR Eigen3_DIR)
cache_from(nlohmann_json_DIR nlohmann_json_DIR)
string(APPEND init_cache "set(CMAKE_FIND_USE_PACKAGE_REGISTRY OFF CACHE BOOL \"\")\n")
file(MAKE_DIRECTORY "${WORK_DIR}")
file(WRITE "${WORK_DIR}/init-cache.cmake" "${init_cache}")

set(configure_args --fresh -S "${CONSUMER_SOURCE_DIR}" -B "${build_dir}" -G "${GENERATOR}"
  -C "${WORK_DIR}/init-cache.cmake")
if(NOT "${GENERATOR_PLATFORM}" STREQUAL "")
  list(APPEND configure_args -A "${GENERATOR_PLATFORM}")
endif()
if(NOT "${GENERATOR_TOOLSET}" STREQUAL "")
  list(APPEND configure_args -T "${GENERATOR_TOOLSET}")
endif()

run(configure "${CMAKE_COMMAND}" ${configure_args})
run(build "${CMAKE_COMMAND}" --build "${build_dir}" ${config_args})
set(ctest_config)
if(NOT "${CONFIG}" STREQUAL "")
  set(ctest_config -C "${CONFIG}")
endif()
run(test "${CTEST}" --test-dir "${build_dir}" --output-on-failure ${ctest_config})
