// Tests of include/mha/mask.hpp: polarity, validation, slices, causal, key padding.
#include <mha/mask.hpp>

#include <mha/scaled_dot_product_attention.hpp>

#include <cmath>
#include <limits>

#include "reference.hpp"

using mha::AttentionMask;
using mha::BoolMatrix;
using mha::Index;
using mha::KeyPaddingMask;
using mha_test::Mat;

namespace {
template <class S>
constexpr S neg_inf() {
  return -std::numeric_limits<S>::infinity();
}
}  // namespace

TEMPLATE_TEST_CASE("A default mask allows everything", "[mask]", float, double) {
  const AttentionMask<TestType> m;
  REQUIRE_FALSE(m.is_causal());
  REQUIRE_FALSE(m.has_values());
  REQUIRE(m.slices() == 0);
  REQUIRE(m.query_len() == 0);
  REQUIRE(m.key_len() == 0);
  const KeyPaddingMask<TestType> k;
  REQUIRE(k.empty());
}

TEMPLATE_TEST_CASE("Boolean masks say their polarity", "[mask][polarity]", float, double) {
  using S = TestType;
  BoolMatrix b(2, 3);
  b << true, false, false,  //
      false, true, true;
  const AttentionMask<S> blocked = AttentionMask<S>::blocked(b);
  const AttentionMask<S> allowed = AttentionMask<S>::allowed(b);
  REQUIRE(blocked.has_values());
  REQUIRE(blocked.slices() == 1);
  REQUIRE(blocked.query_len() == 2);
  REQUIRE(blocked.key_len() == 3);
  REQUIRE_FALSE(blocked.is_causal());
  for (Index i = 0; i < 2; ++i)
    for (Index j = 0; j < 3; ++j) {
      CAPTURE(i, j);
      // blocked: true -> -inf; allowed: true -> 0.
      REQUIRE(blocked.values()(i, j) == (b(i, j) ? neg_inf<S>() : S(0)));
      REQUIRE(allowed.values()(i, j) == (b(i, j) ? S(0) : neg_inf<S>()));
    }
  // blocked(m) and allowed(!m) are the same mask.
  const BoolMatrix not_b = b.unaryExpr([](bool x) { return !x; });
  REQUIRE(mha_test::exactly_equal(AttentionMask<S>::allowed(not_b).values(), blocked.values()));
}

TEMPLATE_TEST_CASE("A blocked mask and the complementary allowed mask give identical attention",
                   "[mask][polarity][attention]", float, double) {
  using S = TestType;
  std::mt19937 rng(21);
  const Index L = 5, Sk = 7, d = 4;
  const Mat<S> q = mha_test::random_matrix<S>(rng, L, d), k = mha_test::random_matrix<S>(rng, Sk, d),
               v = mha_test::random_matrix<S>(rng, Sk, d);
  BoolMatrix blocked = mha_test::random_bool(rng, L, Sk, 0.4);
  blocked(0, 0) = false;  // at least one blocked and one allowed entry
  blocked(0, 1) = true;
  const BoolMatrix allowed = blocked.unaryExpr([](bool x) { return !x; });
  Mat<S> w1, w2;
  const Mat<S> o1 = mha::scaled_dot_product_attention(q, k, v, AttentionMask<S>::blocked(blocked), {}, &w1);
  const Mat<S> o2 = mha::scaled_dot_product_attention(q, k, v, AttentionMask<S>::allowed(allowed), {}, &w2);
  REQUIRE(mha_test::exactly_equal(o1, o2));
  REQUIRE(mha_test::exactly_equal(w1, w2));
  for (Index i = 0; i < L; ++i)
    for (Index j = 0; j < Sk; ++j)
      if (blocked(i, j)) REQUIRE_ZERO(w1(i, j));
  // And the mask matters: unmasked attention differs.
  const Mat<S> o3 = mha::scaled_dot_product_attention(q, k, v);
  REQUIRE_FALSE(mha_test::exactly_equal(o1, o3));
}

TEMPLATE_TEST_CASE("Additive masks keep their values and reject NaN and +inf", "[mask][errors]", float, double) {
  using S = TestType;
  Mat<S> m(2, 2);
  m << S(0.5), neg_inf<S>(),  //
      S(-3), S(0);
  const AttentionMask<S> a = AttentionMask<S>::additive(m);
  REQUIRE(mha_test::exactly_equal(a.values(), m));
  REQUIRE(a.slices() == 1);

  Mat<S> bad = m;
  bad(1, 0) = std::numeric_limits<S>::quiet_NaN();
  REQUIRE_THROWS_AS(AttentionMask<S>::additive(bad), mha::argument_error);
  REQUIRE_THROWS_WITH(AttentionMask<S>::additive(bad), MHA_CONTAINS("value at [1, 0] is NaN"));
  bad(1, 0) = std::numeric_limits<S>::infinity();
  REQUIRE_THROWS_WITH(AttentionMask<S>::additive(bad), MHA_CONTAINS("value at [1, 0] is +inf"));

  REQUIRE_THROWS_AS(KeyPaddingMask<S>::additive(bad), mha::argument_error);
  REQUIRE_THROWS_WITH(KeyPaddingMask<S>::additive(bad), MHA_CONTAINS("+inf"));
  bad(1, 0) = std::numeric_limits<S>::quiet_NaN();
  REQUIRE_THROWS_WITH(KeyPaddingMask<S>::additive(bad), MHA_CONTAINS("NaN"));
}

TEMPLATE_TEST_CASE("Mask slices are validated", "[mask][errors]", float, double) {
  using S = TestType;
  const Index H = 3, L = 2, Sk = 4;
  const BoolMatrix b = BoolMatrix::Constant(H * L, Sk, false);
  const AttentionMask<S> m = AttentionMask<S>::blocked(b, H);
  REQUIRE(m.slices() == H);
  REQUIRE(m.query_len() == L);
  REQUIRE(m.key_len() == Sk);
  REQUIRE(m.values().rows() == H * L);

  REQUIRE_THROWS_AS(AttentionMask<S>::blocked(b, 4), mha::shape_error);
  REQUIRE_THROWS_WITH(AttentionMask<S>::blocked(b, 4), MHA_CONTAINS("4 slice(s)"));
  REQUIRE_THROWS_WITH(AttentionMask<S>::blocked(b, 4), MHA_CONTAINS("got [6, 4]"));
  REQUIRE_THROWS_AS(AttentionMask<S>::allowed(b, 0), mha::shape_error);
  REQUIRE_THROWS_AS(AttentionMask<S>::additive(Mat<S>::Zero(6, 4), -1), mha::shape_error);
  REQUIRE_THROWS_AS(AttentionMask<S>::blocked(BoolMatrix(0, 3)), mha::shape_error);
  REQUIRE_THROWS_WITH(AttentionMask<S>::blocked(BoolMatrix(0, 3)), MHA_CONTAINS("got [0, 3]"));
  REQUIRE_THROWS_AS(AttentionMask<S>::additive(Mat<S>(2, 0)), mha::shape_error);
  REQUIRE_THROWS_AS(KeyPaddingMask<S>::padding(BoolMatrix(0, 0)), mha::shape_error);
  REQUIRE_THROWS_WITH(KeyPaddingMask<S>::padding(BoolMatrix(1, 0)), MHA_CONTAINS("got [1, 0]"));
  REQUIRE_THROWS_AS(KeyPaddingMask<S>::additive(Mat<S>(0, 2)), mha::shape_error);
}

TEMPLATE_TEST_CASE("causal and and_causal", "[mask][causal]", float, double) {
  using S = TestType;
  const AttentionMask<S> c = AttentionMask<S>::causal();
  REQUIRE(c.is_causal());
  REQUIRE_FALSE(c.has_values());

  BoolMatrix b = BoolMatrix::Constant(2, 3, false);
  b(1, 2) = true;
  const AttentionMask<S> dense = AttentionMask<S>::blocked(b);
  const AttentionMask<S> both = dense.and_causal();
  REQUIRE(both.is_causal());
  REQUIRE_FALSE(dense.is_causal());  // the original is unchanged
  REQUIRE(mha_test::exactly_equal(both.values(), dense.values()));
  REQUIRE(both.slices() == 1);
}

TEMPLATE_TEST_CASE("KeyPaddingMask polarity and shape", "[mask][key_padding]", float, double) {
  using S = TestType;
  BoolMatrix pad(2, 3);
  pad << false, false, true,  //
      true, false, false;
  const KeyPaddingMask<S> k = KeyPaddingMask<S>::padding(pad);
  REQUIRE_FALSE(k.empty());
  REQUIRE(k.batch() == 2);
  REQUIRE(k.key_len() == 3);
  for (Index n = 0; n < 2; ++n)
    for (Index j = 0; j < 3; ++j) REQUIRE(k.values()(n, j) == (pad(n, j) ? neg_inf<S>() : S(0)));

  Mat<S> f(1, 3);
  f << S(0), S(-2), neg_inf<S>();
  const KeyPaddingMask<S> kf = KeyPaddingMask<S>::additive(f);
  REQUIRE(kf.batch() == 1);
  REQUIRE(mha_test::exactly_equal(kf.values(), f));
}
