// Tests of include/mha/scaled_dot_product_attention.hpp against the loop reference.
#include <mha/scaled_dot_product_attention.hpp>

#include <cmath>
#include <limits>

#include "reference.hpp"

using mha::AttentionMask;
using mha::BoolMatrix;
using mha::Index;
using mha::scaled_dot_product_attention;
using mha_test::Mat;
using mha_test::MatD;

namespace {

template <class S>
struct Qkv {
  Mat<S> q, k, v;
};

template <class S>
Qkv<S> random_qkv(std::mt19937& rng, Index L, Index Sk, Index d, Index dv) {
  return {mha_test::random_matrix<S>(rng, L, d), mha_test::random_matrix<S>(rng, Sk, d),
          mha_test::random_matrix<S>(rng, Sk, dv)};
}

}  // namespace

TEMPLATE_TEST_CASE("SDPA equals the loop reference", "[sdpa]", float, double) {
  using S = TestType;
  std::mt19937 rng(31);
  for (int trial = 0; trial < 24; ++trial) {
    const Index L = mha_test::random_int(rng, 1, 9), Sk = mha_test::random_int(rng, 1, 9);
    const Index d = mha_test::random_int(rng, 1, 8), dv = mha_test::random_int(rng, 1, 8);
    const int mask_kind = trial % 4;  // 0 none, 1 blocked bool, 2 additive float, 3 allowed bool
    const bool causal = (trial / 4) % 2 == 1;
    CAPTURE(trial, L, Sk, d, dv, mask_kind, causal);
    const Qkv<S> x = random_qkv<S>(rng, L, Sk, d, dv);
    AttentionMask<S> mask;
    MatD additive;
    if (mask_kind == 1 || mask_kind == 3) {
      const BoolMatrix b = mha_test::random_bool(rng, L, Sk, 0.3);
      mask = mask_kind == 1 ? AttentionMask<S>::blocked(b) : AttentionMask<S>::allowed(b);
      additive = mha_test::ref_additive(b, mask_kind == 1);
    } else if (mask_kind == 2) {
      Mat<S> f = mha_test::random_matrix<S>(rng, L, Sk, -2, 2);
      f(0, 0) = -std::numeric_limits<S>::infinity();
      mask = AttentionMask<S>::additive(f);
      additive = mha_test::cast<double>(f);
    }
    if (causal) mask = mask.and_causal();
    Mat<S> w;
    const Mat<S> out = scaled_dot_product_attention(x.q, x.k, x.v, mask, {}, &w);
    const mha_test::RefSdpa ref = mha_test::ref_sdpa(x.q, x.k, x.v, additive, causal);
    REQUIRE(out.rows() == L);
    REQUIRE(out.cols() == dv);
    REQUIRE_CLOSE_T(S, out, ref.out);
    REQUIRE_CLOSE_T(S, w, ref.weights);
    mha_test::require_rows_are_distributions(w);
    // Without a weights pointer, the same output.
    REQUIRE(mha_test::exactly_equal(scaled_dot_product_attention(x.q, x.k, x.v, mask), out));
  }
}

TEMPLATE_TEST_CASE("SDPA scale defaults to 1/sqrt(d) and can be given", "[sdpa]", float, double) {
  using S = TestType;
  std::mt19937 rng(32);
  const Index d = 5;
  const Qkv<S> x = random_qkv<S>(rng, 4, 6, d, 3);
  const Mat<S> by_default = scaled_dot_product_attention(x.q, x.k, x.v);
  REQUIRE_CLOSE_T(S, by_default, mha_test::ref_sdpa(x.q, x.k, x.v, MatD(), false, 1.0 / std::sqrt(5.0)).out);
  const Mat<S> explicit_default =
      scaled_dot_product_attention(x.q, x.k, x.v, AttentionMask<S>(), S(1) / std::sqrt(S(d)));
  REQUIRE_CLOSE_T(S, explicit_default, by_default);
  const Mat<S> custom = scaled_dot_product_attention(x.q, x.k, x.v, AttentionMask<S>(), S(1.7));
  REQUIRE_CLOSE_T(S, custom, mha_test::ref_sdpa(x.q, x.k, x.v, MatD(), false, 1.7).out);
  REQUIRE_FALSE(mha_test::compare_close(custom, by_default, 1e-3, 1e-3).ok);
  // Scale 0: uniform weights, output = mean of the values.
  Mat<S> w;
  const Mat<S> zero = scaled_dot_product_attention(x.q, x.k, x.v, AttentionMask<S>(), S(0), &w);
  REQUIRE_CLOSE_T(S, w, MatD::Constant(4, 6, 1.0 / 6));
  const MatD mean = mha_test::cast<double>(x.v).colwise().mean();
  for (Index i = 0; i < 4; ++i) REQUIRE_CLOSE_T(S, zero.row(i), mean);
}

TEMPLATE_TEST_CASE("SDPA causal masks are end-aligned", "[sdpa][causal]", float, double) {
  using S = TestType;
  std::mt19937 rng(33);
  const Index d = 4;
  for (const auto& ls : {std::pair<Index, Index>{3, 7}, {5, 5}, {7, 3}, {1, 6}, {6, 1}}) {
    const Index L = ls.first, Sk = ls.second;
    CAPTURE(L, Sk);
    const Qkv<S> x = random_qkv<S>(rng, L, Sk, d, d);
    Mat<S> w;
    const Mat<S> out = scaled_dot_product_attention(x.q, x.k, x.v, AttentionMask<S>::causal(), {}, &w);
    REQUIRE(w.rows() == L);
    REQUIRE(w.cols() == Sk);
    for (Index i = 0; i < L; ++i)
      for (Index j = 0; j < Sk; ++j) {
        CAPTURE(i, j);
        if (j <= i + (Sk - L))
          REQUIRE(w(i, j) > S(0));
        else
          REQUIRE_ZERO(w(i, j));
      }
    // L > S: the first L - S queries see no key: zero weights, zero output, no NaN.
    for (Index i = 0; i < L - Sk; ++i) {
      REQUIRE(w.row(i).isZero(0));
      REQUIRE(out.row(i).isZero(0));
    }
    REQUIRE(mha_test::all_finite(out));
    // L < S: the last query sees every key.
    if (L <= Sk) REQUIRE((w.row(L - 1).array() > S(0)).all());
    REQUIRE_CLOSE_T(S, out, mha_test::ref_sdpa(x.q, x.k, x.v, MatD(), true).out);
    mha_test::require_rows_are_distributions(w);
  }
}

TEMPLATE_TEST_CASE("SDPA causal rows do not depend on keys beyond their horizon", "[sdpa][causal]", float,
                   double) {
  using S = TestType;
  std::mt19937 rng(34);
  for (const auto& ls : {std::pair<Index, Index>{4, 8}, {6, 6}, {8, 5}}) {
    const Index L = ls.first, Sk = ls.second;
    CAPTURE(L, Sk);
    const Qkv<S> x = random_qkv<S>(rng, L, Sk, 3, 5);
    const Mat<S> out = scaled_dot_product_attention(x.q, x.k, x.v, AttentionMask<S>::causal());
    for (Index i = 0; i < L; ++i) {
      const Index horizon = i + (Sk - L);  // last visible key
      if (horizon + 1 >= Sk) continue;     // sees every key
      CAPTURE(i);
      Mat<S> k2 = x.k, v2 = x.v;
      const Index first_hidden = std::max<Index>(0, horizon + 1);
      const Index hidden = Sk - first_hidden;
      k2.bottomRows(hidden) = mha_test::random_matrix<S>(rng, hidden, k2.cols(), -5, 5);
      v2.bottomRows(hidden) = mha_test::random_matrix<S>(rng, hidden, v2.cols(), -5, 5);
      const Mat<S> out2 = scaled_dot_product_attention(x.q, k2, v2, AttentionMask<S>::causal());
      REQUIRE(mha_test::exactly_equal(out2.row(i), out.row(i)));
    }
  }
}

TEMPLATE_TEST_CASE("SDPA fully masked rows give zero weights and output", "[sdpa][masked]", float, double) {
  using S = TestType;
  std::mt19937 rng(35);
  const Index L = 4, Sk = 5;
  const Qkv<S> x = random_qkv<S>(rng, L, Sk, 3, 3);
  BoolMatrix b = BoolMatrix::Constant(L, Sk, false);
  b.row(2).setConstant(true);
  b(0, 4) = true;
  Mat<S> w;
  const Mat<S> out = scaled_dot_product_attention(x.q, x.k, x.v, AttentionMask<S>::blocked(b), {}, &w);
  REQUIRE(mha_test::all_finite(out));
  REQUIRE(mha_test::all_finite(w));
  REQUIRE(w.row(2).isZero(0));
  REQUIRE(out.row(2).isZero(0));
  REQUIRE_CLOSE_T(S, out, mha_test::ref_sdpa(x.q, x.k, x.v, mha_test::ref_additive(b, true)).out);
  mha_test::require_rows_are_distributions(w);

  // The same with an additive -inf row.
  Mat<S> f = Mat<S>::Zero(L, Sk);
  f.row(1).setConstant(-std::numeric_limits<S>::infinity());
  const Mat<S> out2 = scaled_dot_product_attention(x.q, x.k, x.v, AttentionMask<S>::additive(f), {}, &w);
  REQUIRE(out2.row(1).isZero(0));
  REQUIRE(w.row(1).isZero(0));
  REQUIRE(mha_test::all_finite(out2));
}

TEMPLATE_TEST_CASE("SDPA stays finite with large logits", "[sdpa][stability]", float, double) {
  using S = TestType;
  std::mt19937 rng(36);
  Qkv<S> x = random_qkv<S>(rng, 6, 7, 4, 3);
  x.q *= S(100);
  x.k *= S(100);  // logits up to ~1e4 / 2: exp would overflow without the max subtracted
  Mat<S> w;
  const Mat<S> out = scaled_dot_product_attention(x.q, x.k, x.v, AttentionMask<S>(), {}, &w);
  REQUIRE(mha_test::all_finite(out));
  REQUIRE(mha_test::all_finite(w));
  mha_test::require_rows_are_distributions(w);
  // Logits near 1e4 carry an absolute float rounding error near 1e-3.
  const double rtol = std::is_same<S, float>::value ? 1e-2 : 1e-9;
  const double atol = std::is_same<S, float>::value ? 2e-2 : 1e-9;
  REQUIRE_CLOSE(out, mha_test::ref_sdpa(x.q, x.k, x.v).out, rtol, atol);
}

TEMPLATE_TEST_CASE("SDPA takes column-major inputs and blocks", "[sdpa]", float, double) {
  using S = TestType;
  using ColMajor = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  std::mt19937 rng(37);
  const Qkv<S> x = random_qkv<S>(rng, 3, 5, 4, 2);
  const Mat<S> expected = scaled_dot_product_attention(x.q, x.k, x.v);
  const ColMajor qc = x.q, kc = x.k, vc = x.v;
  REQUIRE_CLOSE_T(S, scaled_dot_product_attention(qc, kc, vc), expected);
  REQUIRE_CLOSE_T(S, scaled_dot_product_attention(qc, x.k, vc), expected);
  // A block of columns of a wider matrix (row stride != cols).
  Mat<S> wide = Mat<S>::Zero(5, 9);
  wide.middleCols(3, 4) = x.k;
  REQUIRE_CLOSE_T(S, scaled_dot_product_attention(x.q, wide.middleCols(3, 4), x.v), expected);
  // An expression.
  REQUIRE_CLOSE_T(S, scaled_dot_product_attention(x.q * S(1), x.k.transpose().transpose(), x.v), expected);
}

TEMPLATE_TEST_CASE("SDPA rejects bad shapes with a message", "[sdpa][errors]", float, double) {
  using S = TestType;
  const Mat<S> q = Mat<S>::Zero(3, 4), k = Mat<S>::Zero(5, 4), v = Mat<S>::Zero(5, 2);
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, Mat<S>::Zero(5, 3), v), mha::shape_error);
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q, Mat<S>::Zero(5, 3), v),
                      MHA_CONTAINS("expected [*, 4], got [5, 3]"));
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q, k, Mat<S>::Zero(6, 2)),
                      MHA_CONTAINS("expected [5, *], got [6, 2]"));
  REQUIRE_THROWS_AS(scaled_dot_product_attention(Mat<S>(0, 4), Mat<S>(0, 4), Mat<S>(0, 2)), mha::shape_error);
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(Mat<S>(0, 4), k, v), MHA_CONTAINS("empty input"));
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, k, Mat<S>(5, 0)), mha::shape_error);

  const AttentionMask<S> wrong = AttentionMask<S>::blocked(BoolMatrix::Constant(3, 4, false));
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, k, v, wrong), mha::shape_error);
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q, k, v, wrong), MHA_CONTAINS("expected [3, 5], got [3, 4]"));
  const AttentionMask<S> sliced = AttentionMask<S>::blocked(BoolMatrix::Constant(6, 5, false), 2);
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, k, v, sliced), mha::shape_error);
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q, k, v, sliced), MHA_CONTAINS("expected 1 slice"));
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(q, k, v, sliced), MHA_CONTAINS("got 2 slices"));

  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, k, v, AttentionMask<S>(), std::numeric_limits<S>::quiet_NaN()),
                    mha::argument_error);
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, k, v, AttentionMask<S>(), std::numeric_limits<S>::infinity()),
                    mha::argument_error);
}
