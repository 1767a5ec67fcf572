// Tests of include/mha/alibi.hpp: slopes against the ALiBi authors' rule computed independently
// in Python (tests/fixtures/generate_rope_values.py), hard-coded H = 8 and 12, and the error.
#include <mha/alibi.hpp>

#include <cmath>
#include <type_traits>

#include "reference.hpp"
#include "rope_reference_values.hpp"

using mha::Index;

TEMPLATE_TEST_CASE("ALiBi slopes for H = 8 and H = 12", "[alibi]", float, double) {
  using S = TestType;
  // H = 8: 2^-1 ... 2^-8 (a power of two: one geometric sequence).
  const double h8[] = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625};
  const mha::RowVector<S> s8 = mha::alibi_slopes<S>(8);
  REQUIRE(s8.size() == 8);
  for (Index h = 0; h < 8; ++h) REQUIRE(s8[h] == static_cast<S>(h8[h]));  // powers of two: exact
  // H = 12: n = 8 as above, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 (every other slope for 16 heads).
  const double h12[] = {0.5,    0.25,     0.125,     0.0625,     0.03125,           0.015625,
                        0.0078125, 0.00390625, 0.7071067811865476, 0.3535533905932738,
                        0.1767766952966369, 0.08838834764831845};
  const mha::RowVector<S> s12 = mha::alibi_slopes<S>(12);
  REQUIRE(s12.size() == 12);
  for (Index h = 0; h < 12; ++h) {
    CAPTURE(h);
    REQUIRE(s12[h] == Catch::Approx(h12[h]).epsilon(std::is_same<S, float>::value ? 1e-7 : 1e-15));
  }
}

TEMPLATE_TEST_CASE("ALiBi slopes match the authors' get_slopes for many head counts", "[alibi]",
                   float, double) {
  using S = TestType;
  for (const rope_reference::AlibiCase& c : rope_reference::alibi_cases()) {
    CAPTURE(c.heads);
    const mha::RowVector<S> s = mha::alibi_slopes<S>(c.heads);
    REQUIRE(s.size() == c.heads);
    for (Index h = 0; h < c.heads; ++h) {
      CAPTURE(h);
      // Python multiplies (start * start^i), mha takes exp2 of the exponent: last-bit differences.
      REQUIRE(s[h] == Catch::Approx(c.slopes[size_t(h)]).epsilon(std::is_same<S, float>::value ? 1e-7 : 1e-15));
    }
  }
  // Default Scalar is double.
  REQUIRE(mha::alibi_slopes(3)[2] == 0.25);
  // The slopes of a power of two are a geometric sequence with ratio 2^(-8/H).
  const mha::RowVector<double> s32 = mha::alibi_slopes(32);
  for (Index h = 1; h < 32; ++h) REQUIRE(s32[h] / s32[h - 1] == Catch::Approx(std::exp2(-8.0 / 32)));
}

TEST_CASE("ALiBi slopes error", "[alibi][errors]") {
  REQUIRE_THROWS_AS(mha::alibi_slopes(0), mha::argument_error);
  REQUIRE_THROWS_WITH(mha::alibi_slopes(0), "[mha.argument] alibi_slopes: num_heads must be > 0, got 0");
  REQUIRE_THROWS_WITH(mha::alibi_slopes<float>(-3),
                      "[mha.argument] alibi_slopes: num_heads must be > 0, got -3");
}
