// Catch2 for the mha tests, v3 or v2: tests include "mha_catch.hpp" and write v3 code.
//
// CMake defines MHA_CATCH2_V3=1 when it links Catch2 v3. With Catch2 v2 (2.13) this header adds
// the v3 spellings the tests use: Catch::Approx, Catch::Matchers::ContainsSubstring and SKIP.
// Catch::Matchers::WithinRel / WithinAbs / WithinULP, Message, StartsWith, EndsWith,
// TEMPLATE_TEST_CASE, STATIC_REQUIRE and GENERATE have the same names in both.
#pragma once

#if defined(MHA_CATCH2_V3) && MHA_CATCH2_V3
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>

#include <string>

namespace Catch {
using Detail::Approx;
namespace Matchers {
inline StdString::ContainsMatcher ContainsSubstring(
    std::string const& str, CaseSensitive::Choice caseSensitivity = CaseSensitive::Yes) {
  return Contains(str, caseSensitivity);
}
}  // namespace Matchers
}  // namespace Catch

// v3's SKIP("why") marks the test case skipped; v2 has no skipped state, so it warns and returns
// (use it at test-case level, not inside a SECTION or a helper function).
#ifndef SKIP
#define SKIP(...)      \
  do {                 \
    WARN(__VA_ARGS__); \
    return;            \
  } while (false)
#endif
#endif
