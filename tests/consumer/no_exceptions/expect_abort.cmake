# cmake -P script: runs PROGRAM, which must end abnormally (abort, not a return) after printing
# the expected [mha.shape] message on stderr and nothing that says it went on.
execute_process(COMMAND "${PROGRAM}" RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
message(STATUS "exit: ${result}\nstdout: ${out}stderr: ${err}")
# execute_process reports a signal as a text ("Subprocess aborted", "Child aborted", ...) and an
# exit code as a number; a number, 0 or not, means the program did not abort.
if(result MATCHES "^[0-9]+$")
  message(FATAL_ERROR "expected the program to abort, it exited with code ${result}")
endif()
set(expected "[mha.shape] Linear input: expected [*, 4], got [2, 3]")
string(FIND "${err}" "${expected}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "expected stderr to contain '${expected}'")
endif()
if(out MATCHES "continued")
  message(FATAL_ERROR "the program went on after the shape error")
endif()
