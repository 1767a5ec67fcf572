# cmake -P script behind the fuzz_*_30s tests: fuzz a fresh copy of the seed corpus (the source
# tree is never written), then print how many inputs ran. Any crash, leak, timeout (-timeout=5)
# or memory blow-up (-rss_limit_mb=2048) fails the test; the reproducer is in WORK_DIR.
cmake_minimum_required(VERSION 3.25)
foreach(var FUZZER SEED_CORPUS WORK_DIR MAX_TOTAL_TIME)
  if("${${var}}" STREQUAL "")
    message(FATAL_ERROR "RunFuzzer.cmake: ${var} is not set")
  endif()
endforeach()

get_filename_component(name "${FUZZER}" NAME)
set(corpus "${WORK_DIR}/${name}-corpus")
file(REMOVE_RECURSE "${corpus}")
file(MAKE_DIRECTORY "${corpus}")
file(GLOB seeds "${SEED_CORPUS}/*")
if(seeds)
  file(COPY ${seeds} DESTINATION "${corpus}")
endif()
list(LENGTH seeds seed_count)

execute_process(
  COMMAND "${FUZZER}"
    -max_total_time=${MAX_TOTAL_TIME} -timeout=5 -rss_limit_mb=2048
    -print_final_stats=1 -artifact_prefix=${WORK_DIR}/
    "${corpus}"
  WORKING_DIRECTORY "${WORK_DIR}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE log
  ERROR_VARIABLE log)
file(WRITE "${WORK_DIR}/${name}.log" "${log}")

string(REGEX MATCH "stat::number_of_executed_units: *([0-9]+)" _ "${log}")
set(execs "${CMAKE_MATCH_1}")
file(GLOB corpus_after "${corpus}/*")
list(LENGTH corpus_after corpus_count)
if(NOT rc EQUAL 0)
  message("${log}")
  message(FATAL_ERROR "${name}: failed (exit ${rc}) after ${execs} executions; reproducer and log in ${WORK_DIR}")
endif()
message("${name}: ${execs} executions in ${MAX_TOTAL_TIME} s, corpus ${seed_count} -> ${corpus_count} inputs, no crash")
