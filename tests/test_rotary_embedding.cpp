// Tests of include/mha/rotary_embedding.hpp: a long-double loop reference for both layouts and
// partial rotary dims, positions (offsets, explicit, tables vs on the fly), the HF weight
// permutation between layouts, invariants (norms, relative positions), Hugging Face's scaling
// tables (values from tests/fixtures/generate_rope_values.py), and every error.
#include <mha/rotary_embedding.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "reference.hpp"
#include "rope_reference_values.hpp"

using mha::Index;
using mha::RopeLayout;
using mha::RopeOptions;
using mha::RopeScaling;
using mha::RotaryEmbedding;
using mha_test::Mat;

namespace {

// Plain reference, written from the definition: pair i of head h is (i, i + r/2) for rotate-half
// and (2i, 2i + 1) for interleaved; angle = position * inv_freq[i]; every value in long double.
// inv_freq and the attention factor are given (for the unscaled case the test computes them
// with powl).
template <class S>
Mat<S> rope_loop(const Mat<S>& x, Index heads, Index d, Index r, RopeLayout layout,
                      const std::vector<long double>& inv_freq, long double attention_factor,
                      const std::vector<Index>& positions) {
  Mat<S> y = x;
  for (Index t = 0; t < x.rows(); ++t)
    for (Index h = 0; h < heads; ++h)
      for (Index i = 0; i < r / 2; ++i) {
        const Index a = h * d + (layout == RopeLayout::rotate_half ? i : 2 * i);
        const Index b = h * d + (layout == RopeLayout::rotate_half ? i + r / 2 : 2 * i + 1);
        const long double angle = static_cast<long double>(positions[t]) * inv_freq[i];
        const long double c = std::cos(angle) * attention_factor, s = std::sin(angle) * attention_factor;
        const long double xa = x(t, a), xb = x(t, b);
        y(t, a) = static_cast<S>(xa * c - xb * s);
        y(t, b) = static_cast<S>(xb * c + xa * s);
      }
  return y;
}

std::vector<long double> plain_inv_freq(long double theta, Index r) {
  std::vector<long double> f;
  for (Index i = 0; i < r / 2; ++i) f.push_back(std::pow(theta, -2.0L * i / r));
  return f;
}

std::vector<Index> iota_positions(Index first, Index n) {
  std::vector<Index> p;
  for (Index t = 0; t < n; ++t) p.push_back(first + t);
  return p;
}

RopeOptions options(RopeLayout layout, Index d, Index r, double theta = 10000.0, Index table = 0) {
  RopeOptions o;
  o.layout = layout;
  o.head_dim = d;
  o.rotary_dim = r;
  o.theta = theta;
  o.max_positions = table;
  return o;
}

// Rotated values carry the rounding of cos/sin to Scalar plus a few Scalar operations.
template <class S>
double rope_tol();
template <>
double rope_tol<float>() {
  return 1e-6;
}
template <>
double rope_tol<double>() {
  return 1e-13;
}

template <class E>
std::string message_of(E&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

}  // namespace

TEMPLATE_TEST_CASE("RoPE matches a plain loop for both layouts, full and partial rotary dims",
                   "[rope]", float, double) {
  using S = TestType;
  std::mt19937 rng(11);
  const RopeLayout layout = GENERATE(RopeLayout::rotate_half, RopeLayout::interleaved);
  struct Dims {
    Index d, r;
  };
  const Dims dims = GENERATE(Dims{8, 8}, Dims{12, 6}, Dims{10, 2}, Dims{6, 4});
  const Index table = GENERATE(Index(0), Index(16));
  const Index first = GENERATE(Index(0), Index(12), Index(4093));
  const Index heads = 3, T = 7;
  CAPTURE(static_cast<int>(layout), dims.d, dims.r, table, first);
  const RotaryEmbedding<S> rope(options(layout, dims.d, dims.r, 10000.0, table));
  REQUIRE(rope.rotary_dim() == dims.r);
  REQUIRE(rope.head_dim() == dims.d);
  REQUIRE(rope.attention_factor() == 1.0);
  const Mat<S> x = mha_test::random_matrix<S>(rng, T, heads * dims.d);
  Mat<S> y = x;
  rope.apply(y, heads, first);
  const Mat<S> expected = rope_loop<S>(x, heads, dims.d, dims.r, layout,
                                            plain_inv_freq(10000.0L, dims.r), 1.0L,
                                            iota_positions(first, T));
  REQUIRE_CLOSE(y, expected, rope_tol<S>(), rope_tol<S>());
  // The dims past rotary_dim pass through bit for bit.
  for (Index t = 0; t < T; ++t)
    for (Index h = 0; h < heads; ++h)
      for (Index j = dims.r; j < dims.d; ++j) REQUIRE(y(t, h * dims.d + j) == x(t, h * dims.d + j));
  // The rotation did something (position 0 alone would be the identity).
  REQUIRE_FALSE(mha_test::exactly_equal(y, x));
}

TEMPLATE_TEST_CASE("RoPE default rotary_dim is head_dim and position 0 is the identity", "[rope]",
                   float, double) {
  using S = TestType;
  std::mt19937 rng(12);
  const RopeLayout layout = GENERATE(RopeLayout::rotate_half, RopeLayout::interleaved);
  const RotaryEmbedding<S> rope(options(layout, 8, 0));
  REQUIRE(rope.rotary_dim() == 8);
  REQUIRE(rope.inv_freq().size() == 4);
  const Mat<S> x = mha_test::random_matrix<S>(rng, 1, 16);
  Mat<S> y = x;
  rope.apply(y, 2, 0);
  REQUIRE(mha_test::exactly_equal(y, x));  // cos 0 = 1, sin 0 = 0 exactly
}

TEMPLATE_TEST_CASE("RoPE of a chunk at p0 equals the same rows of the full sequence", "[rope][positions]",
                   float, double) {
  using S = TestType;
  std::mt19937 rng(13);
  const RopeLayout layout = GENERATE(RopeLayout::rotate_half, RopeLayout::interleaved);
  const Index table = GENERATE(Index(0), Index(10), Index(64));
  const Index heads = 2, d = 8, r = 6, T = 20;
  const RotaryEmbedding<S> rope(options(layout, d, r, 500.0, table));
  const Mat<S> x = mha_test::random_matrix<S>(rng, T, heads * d);
  Mat<S> full = x;
  rope.apply(full, heads, 0);
  for (Index p0 : {0, 1, 7, 13, 19}) {
    for (Index L : {1, 3}) {
      if (p0 + L > T) continue;
      CAPTURE(p0, L);
      Mat<S> chunk = x.middleRows(p0, L);
      rope.apply(chunk, heads, p0);
      REQUIRE(mha_test::exactly_equal(chunk, full.middleRows(p0, L)));
    }
  }
  // Explicit positions: pointer and Eigen vector, and in any order (two sequences of a batch,
  // rows in reverse).
  std::vector<Index> positions;
  for (Index t = 0; t < T; ++t) positions.push_back(T - 1 - t);
  Mat<S> reversed = x.colwise().reverse();
  rope.apply(reversed, heads, positions.data());
  REQUIRE(mha_test::exactly_equal(reversed.colwise().reverse(), full));
  typename RotaryEmbedding<S>::Positions pv(4);
  pv << 3, 0, 3, 19;
  Mat<S> picked(4, heads * d);
  for (Index t = 0; t < 4; ++t) picked.row(t) = x.row(pv[t]);
  rope.apply(picked, heads, pv);
  for (Index t = 0; t < 4; ++t) REQUIRE(mha_test::exactly_equal(picked.row(t), full.row(pv[t])));
}

TEMPLATE_TEST_CASE("RoPE tables and on-the-fly cos/sin give identical results", "[rope][positions]",
                   float, double) {
  using S = TestType;
  std::mt19937 rng(14);
  const RopeLayout layout = GENERATE(RopeLayout::rotate_half, RopeLayout::interleaved);
  RopeOptions o = options(layout, 16, 12, 10000.0, 0);
  o.scaling = RopeScaling::yarn(4.0, 64);
  const RotaryEmbedding<S> otf(o);
  o.max_positions = 50;
  const RotaryEmbedding<S> tab(o);
  const Mat<S> x = mha_test::random_matrix<S>(rng, 60, 32);
  Mat<S> a = x, b = x;
  otf.apply(a, 2, 0);
  tab.apply(b, 2, 0);  // rows 0..49 from the table, 50..59 on the fly
  REQUIRE(mha_test::exactly_equal(a, b));
  std::vector<S> c1(6), s1(6), c2(6), s2(6);
  for (Index p : {0, 7, 49, 50, 1000}) {
    otf.cos_sin(p, c1.data(), s1.data());
    tab.cos_sin(p, c2.data(), s2.data());
    REQUIRE(c1 == c2);
    REQUIRE(s1 == s2);
  }
}

TEMPLATE_TEST_CASE("RoPE with a rotary_dim larger than the on-the-fly block", "[rope]", float, double) {
  using S = TestType;
  std::mt19937 rng(15);
  const RopeLayout layout = GENERATE(RopeLayout::rotate_half, RopeLayout::interleaved);
  const Index d = 300, r = 296, heads = 2;  // r/2 = 148 pairs: three blocks of 64
  const RotaryEmbedding<S> rope(options(layout, d, r, 10000.0, 0));
  const Mat<S> x = mha_test::random_matrix<S>(rng, 3, heads * d);
  Mat<S> y = x;
  rope.apply(y, heads, 5);
  REQUIRE_CLOSE(y,
                (rope_loop<S>(x, heads, d, r, layout, plain_inv_freq(10000.0L, r), 1.0L,
                                   iota_positions(5, 3))),
                rope_tol<S>(), rope_tol<S>());
}

TEMPLATE_TEST_CASE("RoPE angles are computed in double, also for float", "[rope][precision]", float,
                   double) {
  using S = TestType;
  // At position 10^6 with inv_freq 1, a float angle would be off by up to 0.03 rad; cos/sin from
  // a double angle, rounded to Scalar, are within one rounding of the exact values.
  const RotaryEmbedding<S> rope(options(RopeLayout::interleaved, 2, 2));
  const Index p = 1000003;
  S c = 0, s = 0;
  rope.cos_sin(p, &c, &s);
  const long double exact_c = std::cos(static_cast<long double>(p)),
                    exact_s = std::sin(static_cast<long double>(p));
  REQUIRE(std::abs(c - exact_c) <= 1e-7L);
  REQUIRE(std::abs(s - exact_s) <= 1e-7L);
  REQUIRE(c == static_cast<S>(std::cos(static_cast<double>(p))));
  Mat<S> x(1, 2);
  x << S(1), S(0);
  rope.apply(x, 1, p);
  REQUIRE(x(0, 0) == c);
  REQUIRE(x(0, 1) == s);
}

TEMPLATE_TEST_CASE("RoPE applies to a block of columns of a wider matrix", "[rope]", float, double) {
  using S = TestType;
  std::mt19937 rng(16);
  const Index heads = 2, d = 4, T = 5;
  const RotaryEmbedding<S> rope(options(RopeLayout::rotate_half, d, d));
  // qkv [T, 3 * heads * d]: rotate the q and k blocks in place, leave v.
  const Mat<S> qkv0 = mha_test::random_matrix<S>(rng, T, 3 * heads * d);
  Mat<S> qkv = qkv0;
  rope.apply(qkv.leftCols(heads * d), heads, 2);
  rope.apply(qkv.middleCols(heads * d, heads * d), heads, 2);
  Mat<S> q = qkv0.leftCols(heads * d), k = qkv0.middleCols(heads * d, heads * d);
  rope.apply(q, heads, 2);
  rope.apply(k, heads, 2);
  REQUIRE(mha_test::exactly_equal(qkv.leftCols(heads * d), q));
  REQUIRE(mha_test::exactly_equal(qkv.middleCols(heads * d, heads * d), k));
  REQUIRE(mha_test::exactly_equal(qkv.rightCols(heads * d), qkv0.rightCols(heads * d)));
}

TEMPLATE_TEST_CASE("RoPE preserves each pair's norm (times the attention factor)", "[rope][property]",
                   float, double) {
  using S = TestType;
  std::mt19937 rng(17);
  const RopeLayout layout = GENERATE(RopeLayout::rotate_half, RopeLayout::interleaved);
  const bool yarn = GENERATE(false, true);
  const Index heads = 3, d = 10, r = 8, T = 9;
  RopeOptions o = options(layout, d, r, 10000.0, 4);
  if (yarn) o.scaling = RopeScaling::yarn(8.0, 128);
  const RotaryEmbedding<S> rope(o);
  const double af = rope.attention_factor();
  REQUIRE(af == (yarn ? 0.1 * std::log(8.0) + 1.0 : 1.0));
  const Mat<S> x = mha_test::random_matrix<S>(rng, T, heads * d);
  Mat<S> y = x;
  rope.apply(y, heads, 3);
  for (Index t = 0; t < T; ++t)
    for (Index h = 0; h < heads; ++h) {
      for (Index i = 0; i < r / 2; ++i) {
        const Index a = h * d + (layout == RopeLayout::rotate_half ? i : 2 * i);
        const Index b = h * d + (layout == RopeLayout::rotate_half ? i + r / 2 : 2 * i + 1);
        const double before = std::hypot(double(x(t, a)), double(x(t, b)));
        const double after = std::hypot(double(y(t, a)), double(y(t, b)));
        REQUIRE(std::abs(after - af * before) <= 4 * rope_tol<S>());
      }
      // The attention factor scales the rotated dims only (HF multiplies cos and sin).
      for (Index j = r; j < d; ++j) REQUIRE(y(t, h * d + j) == x(t, h * d + j));
    }
}

TEMPLATE_TEST_CASE("RoPE scores depend only on the relative position", "[rope][property]", float,
                   double) {
  using S = TestType;
  std::mt19937 rng(18);
  const RopeLayout layout = GENERATE(RopeLayout::rotate_half, RopeLayout::interleaved);
  const Index d = 8;
  const RotaryEmbedding<S> rope(options(layout, d, 6, 100.0));
  const Mat<S> q = mha_test::random_matrix<S>(rng, 1, d), k = mha_test::random_matrix<S>(rng, 1, d);
  auto score = [&](Index pq, Index pk) {
    Mat<S> a = q, b = k;
    rope.apply(a, 1, pq);
    rope.apply(b, 1, pk);
    double s = 0;
    for (Index j = 0; j < d; ++j) s += double(a(0, j)) * double(b(0, j));
    return s;
  };
  for (Index shift : {1, 17, 250}) {
    CAPTURE(shift);
    REQUIRE(std::abs(score(5, 2) - score(5 + shift, 2 + shift)) <= 20 * rope_tol<S>());
    REQUIRE(std::abs(score(0, 9) - score(shift, 9 + shift)) <= 20 * rope_tol<S>());
  }
  REQUIRE(std::abs(score(5, 2) - score(5, 3)) > 1e-3);  // and it does depend on it
}

TEMPLATE_TEST_CASE("Rotate-half on HF-permuted q/k weights equals interleaved on the original ones",
                   "[rope][permute]", float, double) {
  using S = TestType;
  std::mt19937 rng(19);
  const Index heads = 3, E = 10, T = 6;
  struct Dims {
    Index d, r;
  };
  const Dims dims = GENERATE(Dims{8, 8}, Dims{8, 0}, Dims{10, 4});
  const Index d = dims.d, r = dims.r == 0 ? d : dims.r;
  const Mat<S> W = mha_test::random_matrix<S>(rng, heads * d, E);  // [heads * d, E], Meta layout
  const Mat<S> Wk = mha_test::random_matrix<S>(rng, heads * d, E);
  const Mat<S> x = mha_test::random_matrix<S>(rng, T, E);
  const Mat<S> Wp = mha::rope_interleaved_to_half_rows(W, heads, d, dims.r);  // HF layout
  const Mat<S> Wkp = mha::rope_interleaved_to_half_rows(Wk, heads, d, dims.r);
  // The permutation moves rows as HF's convert script does: row 2j + e -> e * r/2 + j.
  for (Index h = 0; h < heads; ++h)
    for (Index j = 0; j < r / 2; ++j) {
      REQUIRE(mha_test::exactly_equal(Wp.row(h * d + j), W.row(h * d + 2 * j)));
      REQUIRE(mha_test::exactly_equal(Wp.row(h * d + r / 2 + j), W.row(h * d + 2 * j + 1)));
    }
  REQUIRE(mha_test::exactly_equal(mha::rope_half_to_interleaved_rows(Wp, heads, d, dims.r), W));

  const RotaryEmbedding<S> interleaved(options(RopeLayout::interleaved, d, dims.r));
  const RotaryEmbedding<S> half(options(RopeLayout::rotate_half, d, dims.r));
  Mat<S> q_meta = x * W.transpose(), k_meta = x * Wk.transpose();  // [T, heads * d]
  Mat<S> q_hf = x * Wp.transpose(), k_hf = x * Wkp.transpose();
  interleaved.apply(q_meta, heads, 4);
  interleaved.apply(k_meta, heads, 1);
  half.apply(q_hf, heads, 4);
  half.apply(k_hf, heads, 1);
  // Same values with the dims of each head permuted...
  const Mat<S> q_meta_permuted = mha::rope_interleaved_to_half_rows(Mat<S>(q_meta.transpose()), heads, d, dims.r).transpose();
  REQUIRE_CLOSE(q_hf, q_meta_permuted, rope_tol<S>() * 10, rope_tol<S>() * 10);
  // ... so every per-head score q_h . k_h is the same.
  for (Index i = 0; i < T; ++i)
    for (Index j = 0; j < T; ++j)
      for (Index h = 0; h < heads; ++h) {
        double s_meta = 0, s_hf = 0;
        for (Index c = h * d; c < (h + 1) * d; ++c) {
          s_meta += double(q_meta(i, c)) * double(k_meta(j, c));
          s_hf += double(q_hf(i, c)) * double(k_hf(j, c));
        }
        REQUIRE(std::abs(s_meta - s_hf) <= 100 * rope_tol<S>());
      }
}

TEMPLATE_TEST_CASE("RoPE scaling tables match Hugging Face's formulas", "[rope][scaling]", float,
                   double) {
  using S = TestType;
  using rope_reference::Kind;
  std::mt19937 rng(20);
  for (const rope_reference::ScalingCase& c : rope_reference::scaling_cases()) {
    CAPTURE(c.name);
    RopeOptions o = options(RopeLayout::rotate_half, c.rotary_dim + 2, c.rotary_dim, c.theta, 8);
    switch (c.kind) {
      case Kind::none:
        break;
      case Kind::linear:
        o.scaling = RopeScaling::linear(c.factor);
        break;
      case Kind::llama3:
        o.scaling = RopeScaling::llama3(c.factor, c.low_freq_factor, c.high_freq_factor,
                                        c.original_max_position_embeddings);
        break;
      case Kind::yarn:
        o.scaling = RopeScaling::yarn(c.factor, c.original_max_position_embeddings, c.beta_fast,
                                      c.beta_slow);
        o.scaling.truncate = c.truncate;
        if (c.attention_factor >= 0) o.scaling.attention_factor = c.attention_factor;
        o.scaling.mscale = c.mscale;
        o.scaling.mscale_all_dim = c.mscale_all_dim;
        break;
    }
    const RotaryEmbedding<S> rope(o);
    REQUIRE(rope.inv_freq().size() == static_cast<Index>(c.expected_inv_freq.size()));
    for (size_t i = 0; i < c.expected_inv_freq.size(); ++i) {
      CAPTURE(i);
      REQUIRE(rope.inv_freq()[Index(i)] == Catch::Approx(c.expected_inv_freq[i]).epsilon(1e-13));
    }
    REQUIRE(rope.attention_factor() == Catch::Approx(c.expected_attention_factor).epsilon(1e-14));
    // apply() uses these tables, both from the precomputed rows and past them.
    std::vector<long double> f(c.expected_inv_freq.begin(), c.expected_inv_freq.end());
    const Index heads = 2, T = 12, d = o.head_dim;
    const Mat<S> x = mha_test::random_matrix<S>(rng, T, heads * d);
    Mat<S> y = x;
    rope.apply(y, heads, 0);
    REQUIRE_CLOSE(y,
                  (rope_loop<S>(x, heads, d, c.rotary_dim, RopeLayout::rotate_half, f,
                                     c.expected_attention_factor, iota_positions(0, T))),
                  rope_tol<S>() * 2, rope_tol<S>() * 2);
  }
}

TEMPLATE_TEST_CASE("RoPE scaling: structural properties", "[rope][scaling]", float, double) {
  using S = TestType;
  const RotaryEmbedding<S> plain(options(RopeLayout::rotate_half, 64, 64, 10000.0));
  // linear divides every frequency by factor.
  RopeOptions o = options(RopeLayout::rotate_half, 64, 64, 10000.0);
  o.scaling = RopeScaling::linear(2.5);
  const RotaryEmbedding<S> linear(o);
  for (Index i = 0; i < 32; ++i) REQUIRE(linear.inv_freq()[i] == Catch::Approx(plain.inv_freq()[i] / 2.5));
  // llama3 and yarn keep the highest frequency and divide the lowest by factor.
  o.scaling = RopeScaling::llama3(8.0, 1.0, 4.0, 8192);
  const RotaryEmbedding<S> llama3(o);
  o.scaling = RopeScaling::yarn(8.0, 8192);
  const RotaryEmbedding<S> yarn(o);
  for (const auto* rope : {&llama3, &yarn}) {
    REQUIRE(rope->inv_freq()[0] == plain.inv_freq()[0]);
    REQUIRE(rope->inv_freq()[31] == Catch::Approx(plain.inv_freq()[31] / 8.0).epsilon(1e-14));
    for (Index i = 0; i < 32; ++i) {
      REQUIRE(rope->inv_freq()[i] <= plain.inv_freq()[i] * (1 + 1e-15));
      REQUIRE(rope->inv_freq()[i] >= plain.inv_freq()[i] / 8.0 * (1 - 1e-15));
    }
  }
  // Scaling factor 1 changes nothing.
  o.scaling = RopeScaling::yarn(1.0, 4096);
  const RotaryEmbedding<S> yarn1(o);
  REQUIRE(yarn1.attention_factor() == 1.0);
  for (Index i = 0; i < 32; ++i) REQUIRE(yarn1.inv_freq()[i] == Catch::Approx(plain.inv_freq()[i]).epsilon(1e-15));
}

TEMPLATE_TEST_CASE("RoPE errors", "[rope][errors]", float, double) {
  using S = TestType;
  using mha::argument_error;
  using mha::shape_error;
  auto make = [](RopeOptions o) { return RotaryEmbedding<S>(o); };
  auto bad = [&](RopeOptions o, const std::string& expected) {
    CAPTURE(expected);
    REQUIRE_THROWS_AS(make(o), argument_error);
    const std::string m = message_of([&] { make(o); });
    REQUIRE_THAT(m, Catch::Matchers::StartsWith("[mha.argument] RotaryEmbedding: "));
    REQUIRE_THAT(m, MHA_CONTAINS(expected));
  };
  bad(options(RopeLayout::rotate_half, 0, 0), "head_dim must be > 0, got 0");
  bad(options(RopeLayout::rotate_half, -4, 2), "head_dim must be > 0, got -4");
  bad(options(RopeLayout::rotate_half, 8, 7), "rotary_dim must be even, got 7");
  bad(options(RopeLayout::interleaved, 9, 0), "rotary_dim must be even, got 9");
  bad(options(RopeLayout::rotate_half, 8, 10), "rotary_dim must be in [1, head_dim = 8], got 10");
  bad(options(RopeLayout::rotate_half, 8, -2), "rotary_dim must be in [1, head_dim = 8], got -2");
  bad(options(RopeLayout::rotate_half, 8, 8, 0.0), "theta must be finite and > 0, got 0");
  bad(options(RopeLayout::rotate_half, 8, 8, -2.5), "theta must be finite and > 0, got -2.5");
  bad(options(RopeLayout::rotate_half, 8, 8, std::nan("")), "theta must be finite and > 0, got nan");
  bad(options(RopeLayout::rotate_half, 8, 8, 10000.0, -1), "max_positions must be >= 0, got -1");
  RopeOptions o = options(RopeLayout::rotate_half, 8, 8);
  o.scaling = RopeScaling::linear(0.0);
  bad(o, "scaling factor must be finite and > 0, got 0");
  o.scaling = RopeScaling::yarn(-2.0, 4096);
  bad(o, "scaling factor must be finite and > 0, got -2");
  o.scaling = RopeScaling::llama3(8.0, 1.0, 4.0, 0);
  bad(o, "original_max_position_embeddings must be > 0, got 0");
  o.scaling = RopeScaling::yarn(8.0, -5);
  bad(o, "original_max_position_embeddings must be > 0, got -5");
  o.scaling = RopeScaling::llama3(8.0, 4.0, 4.0, 8192);
  bad(o, "llama3 needs 0 < low_freq_factor < high_freq_factor, got low_freq_factor 4, high_freq_factor 4");
  o.scaling = RopeScaling::llama3(8.0, 0.0, 4.0, 8192);
  bad(o, "llama3 needs 0 < low_freq_factor < high_freq_factor, got low_freq_factor 0, high_freq_factor 4");
  o.scaling = RopeScaling::yarn(8.0, 4096, 1.0, 32.0);
  bad(o, "yarn needs 0 < beta_slow <= beta_fast, got beta_fast 1, beta_slow 32");
  o.scaling = RopeScaling::yarn(8.0, 4096, 32.0, 0.0);
  bad(o, "yarn needs 0 < beta_slow <= beta_fast, got beta_fast 32, beta_slow 0");
  o.scaling = RopeScaling::yarn(8.0, 4096);
  o.scaling.attention_factor = 0.0;
  bad(o, "yarn attention_factor must be finite and > 0, got 0");
  // beta_fast == beta_slow is allowed (HF nudges the ramp end by 0.001).
  o.scaling = RopeScaling::yarn(8.0, 4096, 4.0, 4.0);
  REQUIRE_NOTHROW(make(o));

  // apply(): shapes, heads, positions, empty embedding.
  const RotaryEmbedding<S> rope(options(RopeLayout::rotate_half, 4, 4));
  Mat<S> x = Mat<S>::Zero(3, 8);
  REQUIRE_THROWS_AS(rope.apply(x, 3, 0), shape_error);
  REQUIRE_THROWS_WITH(rope.apply(x, 3, 0),
                      "[mha.shape] RotaryEmbedding: expected 3 heads * head_dim 4 = 12 columns, got 8");
  REQUIRE_THROWS_AS(rope.apply(x, 0, 0), argument_error);
  REQUIRE_THROWS_WITH(rope.apply(x, 0, 0), "[mha.argument] RotaryEmbedding: heads must be > 0, got 0");
  REQUIRE_THROWS_AS(rope.apply(x, 2, -1), argument_error);
  REQUIRE_THROWS_WITH(rope.apply(x, 2, -1), "[mha.argument] RotaryEmbedding: negative position -1");
  // The last row's position first + T - 1 must exist: it wrapped to a negative table index.
  const Index max_index = std::numeric_limits<Index>::max();
  x.setOnes();
  REQUIRE_THROWS_WITH(rope.apply(x, 2, max_index - 1),
                      "[mha.argument] RotaryEmbedding: positions " + std::to_string(max_index - 1) +
                          " + 2 overflow a 64-bit index");
  REQUIRE(x.isOnes());
  REQUIRE_NOTHROW(rope.apply(x, 2, max_index - 2));
  REQUIRE(x.allFinite());
  const std::vector<Index> positions = {0, 5, -3};
  x.setOnes();
  REQUIRE_THROWS_WITH(rope.apply(x, 2, positions.data()),
                      "[mha.argument] RotaryEmbedding: negative position -3 at row 2");
  REQUIRE(x.isOnes());  // positions are checked before any row is rotated
  REQUIRE_THROWS_WITH(rope.apply(x, 2, static_cast<const Index*>(nullptr)),
                      "[mha.argument] RotaryEmbedding: null positions pointer");
  typename RotaryEmbedding<S>::Positions pv(2);
  pv << 0, 1;
  REQUIRE_THROWS_AS(rope.apply(x, 2, pv), shape_error);
  REQUIRE_THROWS_WITH(rope.apply(x, 2, pv),
                      "[mha.shape] RotaryEmbedding: expected 3 positions (one per row), got 2");
  S c[2], s[2];
  REQUIRE_THROWS_WITH(rope.cos_sin(-7, c, s), "[mha.argument] RotaryEmbedding: negative position -7");
  const RotaryEmbedding<S> empty;
  REQUIRE(empty.empty());
  REQUIRE_THROWS_WITH(empty.apply(x, 2, 0),
                      "[mha.argument] RotaryEmbedding: empty (default-constructed) embedding");

  // The weight permutation.
  const Mat<S> w = Mat<S>::Zero(12, 3);
  REQUIRE_THROWS_AS(mha::rope_interleaved_to_half_rows(w, 2, 4), shape_error);
  REQUIRE_THROWS_WITH(mha::rope_interleaved_to_half_rows(w, 2, 4),
                      "[mha.shape] rope_interleaved_to_half_rows: expected [8, *], got [12, 3]");
  REQUIRE_THROWS_AS(mha::rope_half_to_interleaved_rows(w, 3, 4, 3), argument_error);
  REQUIRE_THROWS_WITH(mha::rope_half_to_interleaved_rows(w, 3, 4, 3),
                      "[mha.argument] rope_half_to_interleaved_rows: rotary_dim must be even and in "
                      "[2, head_dim = 4], got 3");
  REQUIRE_THROWS_WITH(mha::rope_interleaved_to_half_rows(w, 0, 4),
                      "[mha.argument] rope_interleaved_to_half_rows: heads and head_dim must be > 0, got 0, 4");
}
