// Non-finite inputs and overflow (the rules in include/mha/detail/softmax.hpp and README
// "Semantics"): a NaN is never turned into a number, a masked key never reaches the softmax
// whatever its K or V holds, the scale applies to q before the product, and every kernel
// (tiled, reference, weights, scaled_dot_product_attention) gives the same answer.

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "reference.hpp"

namespace {

using mha::AttentionMask;
using mha::BoolMatrix;
using mha::ForwardOptions;
using mha::Index;
using mha::Kernel;
using mha::KeyPaddingMask;
using mha_test::Mat;

template <class S>
constexpr S nan_v() {
  return std::numeric_limits<S>::quiet_NaN();
}
template <class S>
constexpr S inf_v() {
  return std::numeric_limits<S>::infinity();
}

// One head, identity projections and no biases: the layer computes plain attention on its
// inputs, so a test can place a NaN in one key and know exactly which scores it touches.
template <class S>
mha::MultiHeadAttention<S> identity_layer(Index E) {
  mha::MultiHeadAttention<S> layer(mha::MultiHeadAttentionOptions(E, 1).with_bias(false));
  Mat<S> w(3 * E, E);
  for (int b = 0; b < 3; ++b) w.middleRows(b * E, E).setIdentity();
  layer.in_proj().set_in_proj_weight(w);
  layer.out_proj().set_weight(Mat<S>::Identity(E, E));
  return layer;
}

// Every way to run a forward: the tiled kernel, the reference kernel, and with weights (averaged).
enum class Path { tiled, reference, weights };
constexpr Path kPaths[] = {Path::tiled, Path::reference, Path::weights};

template <class S>
mha::AttentionResult<S> run(const mha::MultiHeadAttention<S>& layer, const Mat<S>& q, const Mat<S>& k, const Mat<S>& v,
                            Path path, ForwardOptions<S> options = ForwardOptions<S>()) {
  if (path == Path::weights) options.weights();
  options.use_kernel(path == Path::tiled ? Kernel::tiled : Kernel::reference);
  return layer.forward(q, k, v, options);
}

template <class S>
bool all_nan(const Eigen::DenseBase<S>& m) {
  return m.derived().array().isNaN().all();
}

}  // namespace

TEMPLATE_TEST_CASE("A NaN or +-inf in an allowed key or query gives NaN in every kernel", "[non_finite][nan]", float,
                   double) {
  using S = TestType;
  const auto layer = identity_layer<S>(2);
  Mat<S> q(1, 2), k(2, 2), v(2, 2);
  q << S(0.1), S(0.2);
  v << 1, 2, 3, 4;
  for (const S bad : {nan_v<S>(), inf_v<S>(), -inf_v<S>()}) {
    for (const bool in_query : {false, true}) {
      Mat<S> qq = q;
      k << S(0.3), S(0.1), S(0.3), S(-0.1);
      if (in_query)
        qq(0, 0) = bad;
      else
        k(0, 0) = bad;
      for (const Path path : kPaths) {
        INFO("bad " << bad << ", in query " << in_query << ", path " << int(path));
        const auto r = run(layer, qq, k, v, path);
        // Through the projections an infinite input is NaN already (inf * 0 in x W^T), as in PyTorch.
        REQUIRE(all_nan(r.output));
        if (path == Path::weights) REQUIRE(all_nan(r.weights));
      }
      // Without projections: q[0] = 0.1 > 0, so a +inf key gives a +inf score (a NaN row) and a
      // -inf key a -inf score, which weighs 0 like a masked key. A NaN, or an infinite query, poisons.
      Mat<S> weights;
      const Mat<S> out = mha::scaled_dot_product_attention(qq, k, v, AttentionMask<S>(), std::nullopt, &weights);
      if (!in_query && bad == -inf_v<S>())
        REQUIRE(mha_test::exactly_equal(out, v.row(1)));
      else
        REQUIRE((all_nan(out) && all_nan(weights)));
    }
  }
}

TEMPLATE_TEST_CASE("A masked key never reaches the softmax, whatever its key and value hold", "[non_finite][mask]",
                   float, double) {
  using S = TestType;
  const Index E = 4, L = 3, Sk = 5;
  std::mt19937 rng(7);
  const auto layer = identity_layer<S>(E);
  const Mat<S> q = mha_test::random_matrix<S>(rng, L, E);
  const Mat<S> k_clean = mha_test::random_matrix<S>(rng, Sk, E);
  const Mat<S> v_clean = mha_test::random_matrix<S>(rng, Sk, E);
  BoolMatrix blocked = BoolMatrix::Constant(L, Sk, false);
  blocked.col(1).setConstant(true);
  const AttentionMask<S> mask = AttentionMask<S>::blocked(blocked);
  BoolMatrix padded = BoolMatrix::Constant(1, Sk, false);
  padded(0, 1) = true;
  const KeyPaddingMask<S> padding = KeyPaddingMask<S>::padding(padded);
  // Causal with L = 3, S = 5: query 0 sees keys 0..2, so key 4 is masked for queries 0 and 1 only
  // and key 3 for query 0 only; key 4 is allowed for query 2, so its poison reaches row 2 alone.
  for (const S bad : {nan_v<S>(), inf_v<S>(), -inf_v<S>()}) {
    for (const bool in_value : {false, true}) {
      for (int how = 0; how < 3; ++how) {
        const Index key = how == 2 ? 4 : 1;
        Mat<S> k = k_clean, v = v_clean;
        (in_value ? v : k).row(key).setConstant(bad);
        ForwardOptions<S> options;
        if (how == 0) options.with_mask(mask);
        if (how == 1) options.with_key_padding(padding);
        if (how == 2) options.causal();
        for (const Path path : kPaths) {
          INFO("bad " << bad << ", in value " << in_value << ", mask kind " << how << ", path " << int(path));
          const auto clean = run(layer, q, k_clean, v_clean, path, options);
          const auto r = run(layer, q, k, v, path, options);
          const Index clean_rows = how == 2 ? 2 : L;  // causal: row 2 attends key 4
          // Scores and weights are bitwise those of the clean run. A poisoned value row (0 * NaN in
          // P V) sends the row through the exact one-key-at-a-time path: equal up to rounding.
          if (in_value)
            REQUIRE_CLOSE_T(S, r.output.topRows(clean_rows), clean.output.topRows(clean_rows));
          else
            REQUIRE(mha_test::exactly_equal(r.output.topRows(clean_rows), clean.output.topRows(clean_rows)));
          if (path == Path::weights)
            REQUIRE(mha_test::exactly_equal(r.weights.topRows(clean_rows), clean.weights.topRows(clean_rows)));
          if (how == 2 && !(in_value == false && bad == -inf_v<S>())) REQUIRE_FALSE(r.output.row(2).allFinite());
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("Scores are scaled before the product: a finite scaled score never overflows",
                   "[non_finite][scale]", float, double) {
  using S = TestType;
  const Index E = 64;
  // q . k0 = 9e36 * 2 overflows float before scaling by 1/8; the scaled score 2.25e36 does not.
  const S big = std::is_same<S, float>::value ? S(3e18) : S(3e153);
  const auto layer = identity_layer<S>(E);
  Mat<S> q = Mat<S>::Zero(1, E), k = Mat<S>::Zero(2, E), v(2, E);
  q(0, 0) = big;
  q(0, 1) = big;
  k(0, 0) = big;
  k(0, 1) = big;
  v.row(0).setConstant(1);
  v.row(1).setConstant(-1);
  for (const Path path : kPaths) {
    const auto r = run(layer, q, k, v, path);
    INFO("path " << int(path));
    REQUIRE(mha_test::exactly_equal(r.output, v.row(0)));
  }
  const Mat<S> out = mha::scaled_dot_product_attention(q, k, v);
  REQUIRE(mha_test::exactly_equal(out, v.row(0)));
}

TEMPLATE_TEST_CASE("Overflow to +inf in a score or a mask sum gives NaN in every kernel, never the bias",
                   "[non_finite][overflow]", float, double) {
  using S = TestType;
  const Index E = 4;
  std::mt19937 rng(3);
  mha::MultiHeadAttention<S> layer(mha::MultiHeadAttentionOptions(E, 2), 5);
  layer.out_proj().set_bias(mha_test::random_row<S>(rng, E));
  const Mat<S> x = mha_test::random_matrix<S>(rng, 3, E);
  // Two finite additive masks of 0.9 max on key 0 of query 1 add up beyond max.
  const S huge = S(0.9) * std::numeric_limits<S>::max();
  Mat<S> additive = Mat<S>::Zero(3, 3);
  additive(1, 0) = huge;
  const AttentionMask<S> mask = AttentionMask<S>::additive(additive);
  Mat<S> pad = Mat<S>::Zero(1, 3);
  pad(0, 0) = huge;
  const KeyPaddingMask<S> padding = KeyPaddingMask<S>::additive(pad);
  for (const Path path : kPaths) {
    INFO("path " << int(path));
    const auto r = run(layer, x, x, x, path, ForwardOptions<S>().with_mask(mask).with_key_padding(padding));
    REQUIRE(all_nan(r.output.row(1)));
    REQUIRE(r.output.row(0).allFinite());
    REQUIRE(r.output.row(2).allFinite());
  }
  // A scaled score beyond max: identity layer, q . k / sqrt(4) = 0.5 * 4 * big^2.
  const auto id = identity_layer<S>(E);
  const S big = std::sqrt(std::numeric_limits<S>::max());
  Mat<S> q = Mat<S>::Constant(1, E, big), k = Mat<S>::Constant(2, E, big), v = Mat<S>::Ones(2, E);
  k.row(1).setZero();
  for (const Path path : kPaths) {
    INFO("path " << int(path));
    REQUIRE(all_nan(run(id, q, k, v, path).output));
  }
}

TEMPLATE_TEST_CASE("Split-K decoding follows the same rules as one pass", "[non_finite][split]", float, double) {
  using S = TestType;
  // One query against 1500 keys takes the split path (chunks of 512 keys) in the tiled kernel.
  const Index E = 8, Sk = 1500;
  std::mt19937 rng(11);
  const auto layer = identity_layer<S>(E);
  const Mat<S> q = mha_test::random_matrix<S>(rng, 1, E);
  const Mat<S> k = mha_test::random_matrix<S>(rng, Sk, E);
  Mat<S> v = mha_test::random_matrix<S>(rng, Sk, E);
  const auto reference = run(layer, q, k, v, Path::reference);
  REQUIRE_CLOSE_T(S, run(layer, q, k, v, Path::tiled).output, reference.output);
  // A NaN value of a padded key in the second chunk: invisible. In an allowed key: NaN.
  BoolMatrix padded = BoolMatrix::Constant(1, Sk, false);
  padded(0, 700) = true;
  const KeyPaddingMask<S> padding = KeyPaddingMask<S>::padding(padded);
  v.row(700).setConstant(nan_v<S>());
  const auto masked = run(layer, q, k, v, Path::tiled, ForwardOptions<S>().with_key_padding(padding));
  REQUIRE(masked.output.allFinite());
  REQUIRE_CLOSE_T(S, masked.output, run(layer, q, k, v, Path::reference, ForwardOptions<S>().with_key_padding(padding)).output);
  REQUIRE(all_nan(run(layer, q, k, v, Path::tiled).output));
  // Every key masked: zeros, as in one pass.
  const KeyPaddingMask<S> all = KeyPaddingMask<S>::padding(BoolMatrix::Constant(1, Sk, true));
  REQUIRE(run(layer, q, k, v, Path::tiled, ForwardOptions<S>().with_key_padding(all)).output.isZero(0));
}

TEMPLATE_TEST_CASE("The softmax's row maximum propagates a NaN from any lane, packet or tail",
                   "[non_finite][softmax]", float, double) {
  using S = TestType;
  // Lengths around the packet size (4 floats / 2 doubles in the baseline build, 16 / 8 with
  // -march=native on AVX-512), so a NaN lands in the first packet, a later one, and the tail.
  std::mt19937 rng(5);
  std::normal_distribution<double> normal;
  for (Index n = 0; n <= 40; ++n) {
    INFO("n " << n);
    std::vector<S> row(static_cast<std::size_t>(n));
    for (S& x : row) x = static_cast<S>(normal(rng));
    const S expected = n == 0 ? -inf_v<S>() : *std::max_element(row.begin(), row.end());
    REQUIRE(mha::detail::row_max_nan(row.data(), n) == expected);
    for (Index j = 0; j < n; ++j) {
      INFO("NaN at " << j);
      std::vector<S> with_nan = row;
      with_nan[static_cast<std::size_t>(j)] = nan_v<S>();
      REQUIRE(std::isnan(mha::detail::row_max_nan(with_nan.data(), n)));
      if (n == 1) continue;
      with_nan[static_cast<std::size_t>((j + 1) % n)] = inf_v<S>();  // +inf does not hide it
      REQUIRE(std::isnan(mha::detail::row_max_nan(with_nan.data(), n)));
    }
    if (n == 0) continue;
    std::vector<S> masked(static_cast<std::size_t>(n), -inf_v<S>());
    REQUIRE(mha::detail::row_max_nan(masked.data(), n) == -inf_v<S>());
    masked.back() = inf_v<S>();
    REQUIRE(mha::detail::row_max_nan(masked.data(), n) == inf_v<S>());
  }
}
