// A second translation unit that includes every public header again. A function or variable
// defined in a header without `inline` (or as a non-template outside a class) is then defined
// twice in mha_tests and the link fails, as it would in a user's program.
#include <mha/mha.hpp>
#if defined(MHA_TESTS_HAVE_IO) && __has_include(<mha/io.hpp>)
#include <mha/io.hpp>
#endif

int mha_odr_second_tu_anchor();
int mha_odr_second_tu_anchor() { return 0; }
