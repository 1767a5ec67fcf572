// Tests of include/mha/multi_head_attention.hpp (and parallel.hpp's thread setting) against the
// loop reference in reference.hpp, plus properties that hold whatever the reference says.
#include <mha/multi_head_attention.hpp>

#include <mha/mha.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "reference.hpp"

using mha::AttentionMask;
using mha::BatchView;
using mha::BoolMatrix;
using mha::ForwardOptions;
using mha::Index;
using mha::Kernel;
using mha::KeyPaddingMask;
using mha::MultiHeadAttention;
using mha::MultiHeadAttentionOptions;
using mha_test::Mat;
using mha_test::MatD;
using mha_test::RefMasks;
using mha_test::RefWeights;

namespace {

MultiHeadAttentionOptions make_options(Index E, Index H, Index kdim = 0, Index vdim = 0, bool bias = true,
                                       bool bias_kv = false, bool zero_attn = false) {
  MultiHeadAttentionOptions o;
  o.embed_dim = E;
  o.num_heads = H;
  o.kdim = kdim;
  o.vdim = vdim;
  o.bias = bias;
  o.add_bias_kv = bias_kv;
  o.add_zero_attn = zero_attn;
  return o;
}

/// A layer with random weights, and the same weights for the reference.
template <class S>
struct Layer {
  MultiHeadAttention<S> mha;
  RefWeights w;  // what the layer holds, in double

  Layer(std::mt19937& rng, const MultiHeadAttentionOptions& o) : mha(o) {
    w = RefWeights::random(rng, o).template rounded<S>();
    w.template apply_to<S>(mha);
  }
};

/// Inputs of one call: N sequences stacked.
template <class S>
struct Inputs {
  Index N = 1, L = 1, Sk = 1;
  Mat<S> query, key, value;  // [N * L, E], [N * S, kdim], [N * S, vdim]

  Inputs(std::mt19937& rng, Index n, Index l, Index s, Index E, Index kdim, Index vdim)
      : N(n), L(l), Sk(s) {
    query = mha_test::random_matrix<S>(rng, N * L, E);
    key = mha_test::random_matrix<S>(rng, N * Sk, kdim);
    value = mha_test::random_matrix<S>(rng, N * Sk, vdim);
  }
  BatchView<S> q() const { return BatchView<S>(query, N); }
  BatchView<S> k() const { return BatchView<S>(key, N); }
  BatchView<S> v() const { return BatchView<S>(value, N); }
};

/// A random additive float mask with some -inf entries.
template <class S>
Mat<S> random_additive(std::mt19937& rng, Index rows, Index cols) {
  Mat<S> m = mha_test::random_matrix<S>(rng, rows, cols, -2, 2);
  const BoolMatrix holes = mha_test::random_bool(rng, rows, cols, 0.15);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j)
      if (holes(i, j)) m(i, j) = -std::numeric_limits<S>::infinity();
  return m;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Against the loop reference

TEMPLATE_TEST_CASE("MultiHeadAttention equals the loop reference over option combinations", "[mha][reference]",
                   float, double) {
  using S = TestType;
  std::mt19937 rng(41);
  for (int trial = 0; trial < 48; ++trial) {
    const Index H = mha_test::random_int(rng, 1, 4);
    const Index E = H * mha_test::random_int(rng, 1, 4);
    const Index kdim = mha_test::coin(rng, 0.3) ? mha_test::random_int(rng, 1, 9) : 0;
    const Index vdim = mha_test::coin(rng, 0.3) ? mha_test::random_int(rng, 1, 9) : 0;
    const bool bias = mha_test::coin(rng, 0.7);
    const bool bias_kv = mha_test::coin(rng, 0.3);
    const bool zero_attn = mha_test::coin(rng, 0.3);
    const Index N = mha_test::coin(rng) ? 1 : 3;
    const Index L = mha_test::random_int(rng, 1, 7), Sk = mha_test::random_int(rng, 1, 7);
    const int mask_kind = trial % 7;  // none, blocked, allowed, additive, blocked 3-D, additive 3-D, causal()
    const int kpm_kind = (trial / 7) % 3;  // none, bool, float
    const bool causal = mha_test::coin(rng, 0.3);
    const int weights_kind = static_cast<int>(mha_test::random_int(rng, 0, 2));  // none, averaged, per head
    const Kernel kernel = weights_kind == 0 ? std::vector<Kernel>{Kernel::automatic, Kernel::reference,
                                                                  Kernel::tiled}[static_cast<size_t>(trial % 3)]
                                            : (trial % 2 ? Kernel::automatic : Kernel::reference);
    CAPTURE(trial, E, H, kdim, vdim, bias, bias_kv, zero_attn, N, L, Sk, mask_kind, kpm_kind, causal,
            weights_kind, static_cast<int>(kernel));

    Layer<S> layer(rng, make_options(E, H, kdim, vdim, bias, bias_kv, zero_attn));
    REQUIRE(layer.mha.kdim() == (kdim ? kdim : E));
    REQUIRE(layer.mha.vdim() == (vdim ? vdim : E));
    const Inputs<S> in(rng, N, L, Sk, E, layer.mha.kdim(), layer.mha.vdim());

    RefMasks ref;
    AttentionMask<S> attn;
    KeyPaddingMask<S> kpm;
    ForwardOptions<S> opt;
    switch (mask_kind) {
      case 1:
      case 2: {
        const BoolMatrix b = mha_test::random_bool(rng, L, Sk, 0.3);
        attn = mask_kind == 1 ? AttentionMask<S>::blocked(b) : AttentionMask<S>::allowed(b);
        ref.attn = mha_test::ref_additive(b, mask_kind == 1);
        break;
      }
      case 3: {
        const Mat<S> f = random_additive<S>(rng, L, Sk);
        attn = AttentionMask<S>::additive(f);
        ref.attn = mha_test::cast<double>(f);
        break;
      }
      case 4: {
        const BoolMatrix b = mha_test::random_bool(rng, N * H * L, Sk, 0.3);
        attn = AttentionMask<S>::blocked(b, N * H);
        ref.attn = mha_test::ref_additive(b, true);
        ref.attn_slices = N * H;
        break;
      }
      case 5: {
        const Mat<S> f = random_additive<S>(rng, N * H * L, Sk);
        attn = AttentionMask<S>::additive(f, N * H);
        ref.attn = mha_test::cast<double>(f);
        ref.attn_slices = N * H;
        break;
      }
      case 6:
        attn = AttentionMask<S>::causal();
        ref.causal = true;
        break;
      default:
        break;
    }
    if (mask_kind != 0) opt.with_mask(attn);
    if (kpm_kind == 1) {
      const BoolMatrix b = mha_test::random_bool(rng, N, Sk, 0.25);
      kpm = KeyPaddingMask<S>::padding(b);
      ref.key_padding = mha_test::ref_additive(b, true);
      opt.with_key_padding(kpm);
    } else if (kpm_kind == 2) {
      const Mat<S> f = random_additive<S>(rng, N, Sk);
      kpm = KeyPaddingMask<S>::additive(f);
      ref.key_padding = mha_test::cast<double>(f);
      opt.with_key_padding(kpm);
    }
    if (causal) {
      opt.causal();
      ref.causal = true;
    }
    if (weights_kind > 0) opt.weights(weights_kind == 1);
    opt.use_kernel(kernel);

    const mha_test::RefMhaResult expected = mha_test::ref_mha(layer.w, in.query, in.key, in.value, N, ref);
    const mha::AttentionResult<S> got = N == 1 && trial % 2 == 0
                                            ? layer.mha.forward(in.query, in.key, in.value, opt)
                                            : layer.mha.forward(in.q(), in.k(), in.v(), opt);
    REQUIRE_CLOSE_T(S, got.output, expected.output);
    if (weights_kind == 0) {
      REQUIRE(got.weights.size() == 0);
    } else {
      const MatD& w = weights_kind == 1 ? expected.weights_avg : expected.weights_per_head;
      REQUIRE_CLOSE_T(S, got.weights, w);
      mha_test::require_rows_are_distributions(got.weights);
    }
    REQUIRE(mha_test::all_finite(got.output));
  }
}

TEMPLATE_TEST_CASE("MultiHeadAttention reports its configuration", "[mha]", float, double) {
  MultiHeadAttention<TestType> a(make_options(12, 3));
  REQUIRE(a.embed_dim() == 12);
  REQUIRE(a.num_heads() == 3);
  REQUIRE(a.head_dim() == 4);
  REQUIRE(a.kdim() == 12);
  REQUIRE(a.vdim() == 12);
  REQUIRE(a.options().kdim == 12);
  REQUIRE(a.in_proj().packed());
  REQUIRE(a.bias_k().size() == 0);
  REQUIRE(a.out_proj().has_bias());
  MultiHeadAttention<TestType> b(make_options(8, 2, 5, 7, false, true));
  REQUIRE(b.kdim() == 5);
  REQUIRE(b.vdim() == 7);
  REQUIRE_FALSE(b.in_proj().packed());
  REQUIRE(b.bias_k().size() == 8);
  REQUIRE(b.bias_v().size() == 8);
  REQUIRE_FALSE(b.out_proj().has_bias());
  REQUIRE(b.in_proj().in_proj_bias().size() == 0);
}

// ---------------------------------------------------------------------------------------------
// Properties

TEMPLATE_TEST_CASE("With one head, MultiHeadAttention is projections, SDPA and the output projection",
                   "[mha][sdpa]", float, double) {
  using S = TestType;
  std::mt19937 rng(42);
  const Index E = 6, kdim = 4, vdim = 5, L = 4, Sk = 7;
  Layer<S> layer(rng, make_options(E, 1, kdim, vdim));
  const Inputs<S> in(rng, 1, L, Sk, E, kdim, vdim);

  // The manual path, with the public Linear and SDPA.
  mha::Linear<S> wq(E, E), wk(kdim, E), wv(vdim, E), wo(E, E);
  wq.set_weight(mha_test::cast<S>(layer.w.wq));
  wk.set_weight(mha_test::cast<S>(layer.w.wk));
  wv.set_weight(mha_test::cast<S>(layer.w.wv));
  wo.set_weight(mha_test::cast<S>(layer.w.wo));
  wq.set_bias(mha_test::cast_row<S>(layer.w.bq));
  wk.set_bias(mha_test::cast_row<S>(layer.w.bk));
  wv.set_bias(mha_test::cast_row<S>(layer.w.bv));
  wo.set_bias(mha_test::cast_row<S>(layer.w.bo));
  for (const bool causal : {false, true}) {
    CAPTURE(causal);
    const AttentionMask<S> mask = causal ? AttentionMask<S>::causal() : AttentionMask<S>();
    Mat<S> sdpa_weights;
    const Mat<S> ctx = mha::scaled_dot_product_attention(wq.forward(in.query), wk.forward(in.key),
                                                         wv.forward(in.value), mask, {}, &sdpa_weights);
    const Mat<S> manual = wo.forward(ctx);
    const mha::AttentionResult<S> got =
        layer.mha.forward(in.query, in.key, in.value, ForwardOptions<S>().causal(causal).weights());
    REQUIRE_CLOSE_T(S, got.output, manual);
    REQUIRE_CLOSE_T(S, got.weights, sdpa_weights);
  }
}

TEMPLATE_TEST_CASE("MultiHeadAttention is permutation equivariant without masks", "[mha][property]", float,
                   double) {
  using S = TestType;
  std::mt19937 rng(43);
  for (const bool extras : {false, true}) {
    CAPTURE(extras);
    const Index E = 8, H = 2, L = 5, Sk = 6;
    Layer<S> layer(rng, make_options(E, H, 3, 0, true, extras, extras));
    const Inputs<S> in(rng, 1, L, Sk, E, 3, E);
    const ForwardOptions<S> opt = ForwardOptions<S>().weights(false);
    const mha::AttentionResult<S> base = layer.mha.forward(in.query, in.key, in.value, opt);

    std::vector<Index> pq(static_cast<size_t>(L)), pk(static_cast<size_t>(Sk));
    std::iota(pq.begin(), pq.end(), 0);
    std::iota(pk.begin(), pk.end(), 0);
    std::shuffle(pq.begin(), pq.end(), rng);
    std::shuffle(pk.begin(), pk.end(), rng);

    // Permuting the queries permutes the output rows.
    Mat<S> q2(L, E);
    for (Index i = 0; i < L; ++i) q2.row(i) = in.query.row(pq[static_cast<size_t>(i)]);
    const mha::AttentionResult<S> rq = layer.mha.forward(q2, in.key, in.value, opt);
    for (Index i = 0; i < L; ++i) {
      REQUIRE_CLOSE_T(S, rq.output.row(i), base.output.row(pq[static_cast<size_t>(i)]));
      for (Index h = 0; h < H; ++h)
        REQUIRE_CLOSE_T(S, rq.weights.row(h * L + i), base.weights.row(h * L + pq[static_cast<size_t>(i)]));
    }

    // Permuting keys and values together changes nothing but the weight columns.
    Mat<S> k2(Sk, 3), v2(Sk, E);
    for (Index j = 0; j < Sk; ++j) {
      k2.row(j) = in.key.row(pk[static_cast<size_t>(j)]);
      v2.row(j) = in.value.row(pk[static_cast<size_t>(j)]);
    }
    const mha::AttentionResult<S> rk = layer.mha.forward(in.query, k2, v2, opt);
    REQUIRE_CLOSE_T(S, rk.output, base.output);
    for (Index j = 0; j < Sk; ++j)
      REQUIRE_CLOSE_T(S, rk.weights.col(j), base.weights.col(pk[static_cast<size_t>(j)]));
    for (Index j = Sk; j < base.weights.cols(); ++j) REQUIRE_CLOSE_T(S, rk.weights.col(j), base.weights.col(j));
  }
}

TEMPLATE_TEST_CASE("MultiHeadAttention causal rows do not depend on keys beyond their horizon",
                   "[mha][causal][property]", float, double) {
  using S = TestType;
  std::mt19937 rng(44);
  for (const auto& ls : {std::pair<Index, Index>{4, 7}, {5, 5}, {7, 4}}) {
    const Index L = ls.first, Sk = ls.second, E = 8;
    CAPTURE(L, Sk);
    Layer<S> layer(rng, make_options(E, 2));
    const Inputs<S> in(rng, 1, L, Sk, E, E, E);
    const ForwardOptions<S> opt = ForwardOptions<S>().causal();
    const Mat<S> base = layer.mha.forward(in.query, in.key, in.value, opt).output;
    for (Index i = 0; i < L; ++i) {
      const Index first_hidden = std::max<Index>(0, i + (Sk - L) + 1);
      if (first_hidden >= Sk) continue;
      CAPTURE(i);
      Mat<S> k2 = in.key, v2 = in.value;
      const Index hidden = Sk - first_hidden;
      k2.bottomRows(hidden) = mha_test::random_matrix<S>(rng, hidden, E, -3, 3);
      v2.bottomRows(hidden) = mha_test::random_matrix<S>(rng, hidden, E, -3, 3);
      const Mat<S> out2 = layer.mha.forward(in.query, k2, v2, opt).output;
      REQUIRE_CLOSE_T(S, out2.row(i), base.row(i));
      if (i == 0) {
        // The last row sees every key, so it does change: the comparison above can fail.
        REQUIRE_FALSE(mha_test::compare_close(out2.row(L - 1), base.row(L - 1), 1e-3, 1e-3).ok);
      }
    }
  }
}

TEMPLATE_TEST_CASE("A fully masked query row outputs out_proj.bias and zero weights", "[mha][masked]", float,
                   double) {
  using S = TestType;
  std::mt19937 rng(45);
  const Index E = 8, H = 2, N = 2, L = 4, Sk = 5;
  Layer<S> layer(rng, make_options(E, H));
  const Inputs<S> in(rng, N, L, Sk, E, E, E);
  const mha::RowVector<S> bias = layer.mha.out_proj().bias();
  REQUIRE_FALSE(bias.isZero(0));

  SECTION("a blocked attn_mask row") {
    BoolMatrix b = BoolMatrix::Constant(L, Sk, false);
    b.row(1).setConstant(true);
    const AttentionMask<S> m = AttentionMask<S>::blocked(b);
    for (const bool average : {true, false}) {
      const mha::AttentionResult<S> r =
          layer.mha.forward(in.q(), in.k(), in.v(), ForwardOptions<S>().with_mask(m).weights(average));
      for (Index n = 0; n < N; ++n) {
        REQUIRE(mha_test::exactly_equal(r.output.row(n * L + 1), bias));
        if (average) {
          REQUIRE(r.weights.row(n * L + 1).isZero(0));
        } else {
          for (Index h = 0; h < H; ++h) REQUIRE(r.weights.row((n * H + h) * L + 1).isZero(0));
        }
      }
      REQUIRE(mha_test::all_finite(r.output));
      REQUIRE(mha_test::all_finite(r.weights));
    }
    // Without weights, any kernel.
    for (const Kernel k : {Kernel::automatic, Kernel::reference, Kernel::tiled}) {
      const Mat<S> out = layer.mha.forward(in.q(), in.k(), in.v(), ForwardOptions<S>().with_mask(m).use_kernel(k)).output;
      REQUIRE(mha_test::exactly_equal(out.row(L + 1), bias));
      REQUIRE(mha_test::all_finite(out));
    }
  }
  SECTION("every key of one batch entry is padding") {
    BoolMatrix pad = BoolMatrix::Constant(N, Sk, false);
    pad.row(1).setConstant(true);
    const KeyPaddingMask<S> kpm = KeyPaddingMask<S>::padding(pad);
    const mha::AttentionResult<S> r =
        layer.mha.forward(in.q(), in.k(), in.v(), ForwardOptions<S>().with_key_padding(kpm).weights());
    for (Index i = 0; i < L; ++i) REQUIRE(mha_test::exactly_equal(r.output.row(L + i), bias));
    REQUIRE(r.weights.bottomRows(L).isZero(0));
    mha_test::require_rows_are_distributions(r.weights);
    REQUIRE_FALSE(r.weights.topRows(L).isZero(0));
  }
  SECTION("causal with L > S: the first L - S rows") {
    const Inputs<S> tall(rng, 1, 6, 3, E, E, E);
    const mha::AttentionResult<S> r =
        layer.mha.forward(tall.query, tall.key, tall.value, ForwardOptions<S>().causal().weights());
    for (Index i = 0; i < 3; ++i) {
      REQUIRE(mha_test::exactly_equal(r.output.row(i), bias));
      REQUIRE(r.weights.row(i).isZero(0));
    }
    // Rows that see some keys: exactly zero weight beyond the horizon j <= i + (S - L).
    for (Index i = 3; i < 6; ++i)
      for (Index j = i - 3 + 1; j < 3; ++j) REQUIRE_ZERO(r.weights(i, j));
    REQUIRE_FALSE(mha_test::exactly_equal(r.output.row(3), bias));
  }
}

TEMPLATE_TEST_CASE("Large inputs keep MultiHeadAttention finite", "[mha][stability]", float, double) {
  using S = TestType;
  std::mt19937 rng(46);
  Layer<S> layer(rng, make_options(8, 2));
  Inputs<S> in(rng, 1, 5, 6, 8, 8, 8);
  in.query *= S(100);
  in.key *= S(100);
  const mha::AttentionResult<S> r = layer.mha.forward(in.query, in.key, in.value, ForwardOptions<S>().weights());
  REQUIRE(mha_test::all_finite(r.output));
  REQUIRE(mha_test::all_finite(r.weights));
  mha_test::require_rows_are_distributions(r.weights);
}

TEMPLATE_TEST_CASE("float and double layers with the same weights agree", "[mha][precision]", float, double) {
  // TestType only picks the reference layer's seed; both precisions run in each instantiation.
  std::mt19937 rng(std::is_same<TestType, float>::value ? 47 : 48);
  const MultiHeadAttentionOptions o = make_options(12, 3, 5, 0, true, true, false);
  const RefWeights w = RefWeights::random(rng, o).rounded<float>();
  MultiHeadAttention<float> f(o);
  MultiHeadAttention<double> d(o);
  w.apply_to<float>(f);
  w.apply_to<double>(d);
  const Mat<float> q = mha_test::random_matrix<float>(rng, 6, 12), k = mha_test::random_matrix<float>(rng, 7, 5),
                   v = mha_test::random_matrix<float>(rng, 7, 12);
  BoolMatrix b = mha_test::random_bool(rng, 6, 7, 0.3);
  const AttentionMask<float> mf = AttentionMask<float>::blocked(b);
  const AttentionMask<double> md = AttentionMask<double>::blocked(b);
  const mha::AttentionResult<float> rf = f.forward(q, k, v, ForwardOptions<float>().with_mask(mf).weights());
  const mha::AttentionResult<double> rd =
      d.forward(mha_test::cast<double>(q), mha_test::cast<double>(k), mha_test::cast<double>(v),
                ForwardOptions<double>().with_mask(md).weights());
  REQUIRE_CLOSE_T(float, rf.output, rd.output);
  REQUIRE_CLOSE_T(float, rf.weights, rd.weights);
}

TEMPLATE_TEST_CASE("A batch of N equals N single calls", "[mha][batch]", float, double) {
  using S = TestType;
  std::mt19937 rng(49);
  const Index E = 8, H = 2, N = 3, L = 4, Sk = 5;
  Layer<S> layer(rng, make_options(E, H, 6, 0, true, true, true));
  const Inputs<S> in(rng, N, L, Sk, E, 6, E);
  const BoolMatrix mask3 = mha_test::random_bool(rng, N * H * L, Sk, 0.3);
  const BoolMatrix pad = mha_test::random_bool(rng, N, Sk, 0.3);
  const AttentionMask<S> m = AttentionMask<S>::blocked(mask3, N * H);
  const KeyPaddingMask<S> kpm = KeyPaddingMask<S>::padding(pad);
  for (const bool average : {true, false}) {
    CAPTURE(average);
    const mha::AttentionResult<S> batch = layer.mha.forward(
        in.q(), in.k(), in.v(), ForwardOptions<S>().with_mask(m).with_key_padding(kpm).causal().weights(average));
    REQUIRE(batch.output.rows() == N * L);
    REQUIRE(batch.weights.rows() == (average ? N * L : N * H * L));
    REQUIRE(batch.weights.cols() == Sk + 2);
    for (Index n = 0; n < N; ++n) {
      CAPTURE(n);
      const AttentionMask<S> mn = AttentionMask<S>::blocked(mask3.middleRows(n * H * L, H * L), H);
      const KeyPaddingMask<S> kn = KeyPaddingMask<S>::padding(pad.middleRows(n, 1));
      const mha::AttentionResult<S> one =
          layer.mha.forward(in.query.middleRows(n * L, L), in.key.middleRows(n * Sk, Sk),
                            in.value.middleRows(n * Sk, Sk),
                            ForwardOptions<S>().with_mask(mn).with_key_padding(kn).causal().weights(average));
      REQUIRE_CLOSE_T(S, batch.output.middleRows(n * L, L), one.output);
      const Index wr = average ? L : H * L;
      REQUIRE_CLOSE_T(S, batch.weights.middleRows(n * wr, wr), one.weights);
    }
  }
}

TEMPLATE_TEST_CASE("Self-attention's packed projection equals three projections", "[mha][self_attention]", float,
                   double) {
  using S = TestType;
  std::mt19937 rng(50);
  const Index E = 12, H = 3;
  for (const Index N : {Index(1), Index(3)}) {
    CAPTURE(N);
    Layer<S> layer(rng, make_options(E, H, 0, 0, true, N == 3, false));
    REQUIRE(layer.mha.in_proj().packed());
    const Index L = 5;
    const Mat<S> x = mha_test::random_matrix<S>(rng, N * L, E);
    const Mat<S> xk = x, xv = x;  // equal values, different pointers: the unfused path
    const BatchView<S> bx(x, N), bk(xk, N), bv(xv, N);
    const ForwardOptions<S> opt = ForwardOptions<S>().causal().weights(false);
    const mha::AttentionResult<S> fused = layer.mha.forward(bx, bx, bx, opt);
    const mha::AttentionResult<S> separate = layer.mha.forward(bx, bk, bv, opt);
    REQUIRE_CLOSE_T(S, fused.output, separate.output);
    REQUIRE_CLOSE_T(S, fused.weights, separate.weights);
    RefMasks ref;
    ref.causal = true;
    const mha_test::RefMhaResult expected = mha_test::ref_mha(layer.w, x, x, x, N, ref);
    REQUIRE_CLOSE_T(S, fused.output, expected.output);
    REQUIRE_CLOSE_T(S, fused.weights, expected.weights_per_head);

    // The fused path over strided rows (a block of columns of a wider matrix).
    Mat<S> wide = Mat<S>::Zero(N * L, E + 5);
    wide.middleCols(2, E) = x;
    const BatchView<S> bw(wide.middleCols(2, E), N);
    REQUIRE(bw.row_stride() == E + 5);
    REQUIRE_CLOSE_T(S, layer.mha.forward(bw, bw, bw, opt).output, expected.output);
    if (N == 1) REQUIRE_CLOSE_T(S, layer.mha.forward(x, x, x, opt).output, expected.output);
  }
}

TEMPLATE_TEST_CASE("Query and key/value sharing memory but not length take the unfused path",
                   "[mha][self_attention]", float, double) {
  using S = TestType;
  std::mt19937 rng(58);
  const Index E = 8, H = 2;
  Layer<S> layer(rng, make_options(E, H));
  for (const auto& nls : {std::vector<Index>{1, 3, 7}, {2, 2, 5}, {1, 6, 2}, {2, 5, 3}}) {
    const Index N = nls[0], L = nls[1], Sk = nls[2];
    CAPTURE(N, L, Sk);
    // One buffer: the query views its first N * L rows, key and value its first N * S rows, so
    // all three start at the same address with the same row stride.
    const Mat<S> x = mha_test::random_matrix<S>(rng, N * std::max(L, Sk), E);
    const BatchView<S> q(x.topRows(N * L), N), kv(x.topRows(N * Sk), N);
    REQUIRE(q.data() == kv.data());
    const Mat<S> kv_copy = x.topRows(N * Sk);
    const MatD expected = mha_test::ref_mha(layer.w, x.topRows(N * L), kv_copy, kv_copy, N).output;
    for (const Kernel k : {Kernel::reference, Kernel::tiled}) {
      const Mat<S> shared = layer.mha.forward(q, kv, kv, ForwardOptions<S>().use_kernel(k)).output;
      REQUIRE_CLOSE_T(S, shared, expected);
    }
  }
}

TEMPLATE_TEST_CASE("All kernels give the same output", "[mha][kernel]", float, double) {
  using S = TestType;
  std::mt19937 rng(51);
  for (int trial = 0; trial < 8; ++trial) {
    const Index H = 1 + trial % 3, E = H * 4, N = 1 + trial % 2;
    const Index L = mha_test::random_int(rng, 1, 12);
    const Index Sk = trial % 3 == 0 ? L : mha_test::random_int(rng, 1, 12);
    const bool causal = trial % 2 == 0, extras = trial % 4 == 1;
    CAPTURE(trial, H, E, N, L, Sk, causal, extras);
    Layer<S> layer(rng, make_options(E, H, 0, 0, true, extras, extras));
    const Inputs<S> in(rng, N, L, Sk, E, E, E);
    const BoolMatrix pad = mha_test::random_bool(rng, N, Sk, 0.2);
    const KeyPaddingMask<S> kpm = KeyPaddingMask<S>::padding(pad);
    ForwardOptions<S> opt;
    opt.causal(causal).with_key_padding(kpm);
    const Mat<S> ref = layer.mha.forward(in.q(), in.k(), in.v(), ForwardOptions<S>(opt).use_kernel(Kernel::reference)).output;
    const Mat<S> aut = layer.mha.forward(in.q(), in.k(), in.v(), ForwardOptions<S>(opt).use_kernel(Kernel::automatic)).output;
    const Mat<S> til = layer.mha.forward(in.q(), in.k(), in.v(), ForwardOptions<S>(opt).use_kernel(Kernel::tiled)).output;
    REQUIRE_CLOSE_T(S, aut, ref);
    REQUIRE_CLOSE_T(S, til, ref);
    RefMasks rm;
    rm.causal = causal;
    rm.key_padding = mha_test::ref_additive(pad, true);
    REQUIRE_CLOSE_T(S, til, mha_test::ref_mha(layer.w, in.query, in.key, in.value, N, rm).output);
    // Self-attention (the fused projection) through every kernel too.
    if (L == Sk) {
      const Mat<S> self_ref =
          layer.mha.forward(in.q(), in.q(), in.q(), ForwardOptions<S>(opt).use_kernel(Kernel::reference)).output;
      const Mat<S> self_tiled =
          layer.mha.forward(in.q(), in.q(), in.q(), ForwardOptions<S>(opt).use_kernel(Kernel::tiled)).output;
      REQUIRE_CLOSE_T(S, self_tiled, self_ref);
    }
  }
}

TEMPLATE_TEST_CASE("The tiled kernel equals the reference kernel for any tile size", "[mha][kernel][tiled]", float,
                   double) {
  using S = TestType;
  std::mt19937 rng(56);
  const std::vector<std::pair<Index, Index>> tile_sizes = {{1, 1}, {1, 2}, {2, 1}, {2, 3}, {3, 2},
                                                           {4, 4}, {5, 128}, {128, 1}, {128, 5}};
  int trial = 0;
  for (const auto& tiles : tile_sizes)
    for (int rep = 0; rep < 4; ++rep, ++trial) {
      const Index H = 1 + trial % 2, E = H * (2 + trial % 3), N = 1 + rep % 2;
      const Index L = mha_test::random_int(rng, 1, 11);
      const Index Sk = rep == 0 ? L : mha_test::random_int(rng, 1, 11);
      const bool causal = rep % 2 == 0, bias_kv = rep >= 2, zero_attn = rep == 1 || rep == 3;
      const int mask_kind = trial % 3;  // none, additive 2-D, blocked 3-D
      CAPTURE(tiles.first, tiles.second, H, E, N, L, Sk, causal, bias_kv, zero_attn, mask_kind);
      Layer<S> layer(rng, make_options(E, H, 0, 0, true, bias_kv, zero_attn));
      layer.mha.set_tile_sizes(tiles.first, tiles.second);
      const Inputs<S> in(rng, N, L, Sk, E, E, E);
      AttentionMask<S> attn;
      RefMasks ref;
      if (mask_kind == 1) {
        const Mat<S> f = random_additive<S>(rng, L, Sk);
        attn = AttentionMask<S>::additive(f);
        ref.attn = mha_test::cast<double>(f);
      } else if (mask_kind == 2) {
        const BoolMatrix b = mha_test::random_bool(rng, N * H * L, Sk, 0.3);
        attn = AttentionMask<S>::blocked(b, N * H);
        ref.attn = mha_test::ref_additive(b, true);
        ref.attn_slices = N * H;
      }
      const BoolMatrix pad = mha_test::random_bool(rng, N, Sk, 0.2);
      const KeyPaddingMask<S> kpm = KeyPaddingMask<S>::padding(pad);
      ref.key_padding = mha_test::ref_additive(pad, true);
      ref.causal = causal;
      ForwardOptions<S> opt;
      opt.causal(causal).with_key_padding(kpm);
      if (mask_kind != 0) opt.with_mask(attn);
      const Mat<S> tiled = layer.mha.forward(in.q(), in.k(), in.v(), ForwardOptions<S>(opt).use_kernel(Kernel::tiled)).output;
      const Mat<S> reference =
          layer.mha.forward(in.q(), in.k(), in.v(), ForwardOptions<S>(opt).use_kernel(Kernel::reference)).output;
      REQUIRE_CLOSE_T(S, tiled, reference);
      REQUIRE_CLOSE_T(S, tiled, mha_test::ref_mha(layer.w, in.query, in.key, in.value, N, ref).output);
    }
  MultiHeadAttention<S> layer(make_options(4, 2));
  REQUIRE_THROWS_AS(layer.set_tile_sizes(0, 4), mha::argument_error);
  REQUIRE_THROWS_WITH(layer.set_tile_sizes(4, -1), MHA_CONTAINS("expected positive sizes, got [4, -1]"));
}

TEMPLATE_TEST_CASE("Head groups under a small workspace budget give the same output", "[mha][kernel][budget]",
                   float, double) {
  using S = TestType;
  std::mt19937 rng(57);
  const Index H = 3, d = 4, E = H * d, N = 2, L = 5, Sk = 6;
  // Bytes of one head's Q, K, V and context: the budget that fits exactly g heads is g times this.
  const std::size_t per_head = std::size_t(2 * N * L + 2 * N * Sk) * std::size_t(d) * sizeof(S);
  for (const bool self : {false, true}) {
    CAPTURE(self);
    Layer<S> layer(rng, make_options(E, H, self ? 0 : 7, 0, true, true, true));
    const Inputs<S> in(rng, N, L, self ? L : Sk, E, layer.mha.kdim(), E);
    const Index S_ = in.Sk;
    const BoolMatrix mask3 = mha_test::random_bool(rng, N * H * L, S_, 0.3);
    const BoolMatrix pad = mha_test::random_bool(rng, N, S_, 0.2);
    const AttentionMask<S> m = AttentionMask<S>::blocked(mask3, N * H);
    const KeyPaddingMask<S> kpm = KeyPaddingMask<S>::padding(pad);
    const ForwardOptions<S> opt = ForwardOptions<S>().with_mask(m).with_key_padding(kpm).causal();
    RefMasks ref;
    ref.attn = mha_test::ref_additive(mask3, true);
    ref.attn_slices = N * H;
    ref.key_padding = mha_test::ref_additive(pad, true);
    ref.causal = true;
    const BatchView<S> k = self ? in.q() : in.k(), v = self ? in.q() : in.v();
    const MatD expected =
        mha_test::ref_mha(layer.w, in.query, self ? in.query : in.key, self ? in.query : in.value, N, ref).output;
    const Mat<S> whole = layer.mha.forward(in.q(), k, v, opt).output;
    REQUIRE_CLOSE_T(S, whole, expected);
    mha::Workspace<S> ws;
    for (const std::size_t budget : {std::size_t(1), per_head, 2 * per_head, 3 * per_head}) {
      CAPTURE(budget);
      layer.mha.set_workspace_budget(budget);
      REQUIRE(layer.mha.workspace_budget() == budget);
      const Mat<S> grouped = layer.mha.forward(in.q(), k, v, opt).output;
      REQUIRE_CLOSE_T(S, grouped, expected);
      Mat<S> out(N * L, E);
      layer.mha.forward(in.q(), k, v, opt, ws, out);  // one workspace across group sizes
      REQUIRE(mha_test::exactly_equal(out, grouped));
    }
    layer.mha.set_workspace_budget(std::size_t(32) << 20);
  }
}

TEMPLATE_TEST_CASE("Initialisation is deterministic and follows PyTorch's bounds", "[mha][init]", float, double) {
  using S = TestType;
  const Index E = 16;
  SECTION("packed in-projection") {
    const MultiHeadAttentionOptions o = make_options(E, 4, 0, 0, true, true, false);
    const MultiHeadAttention<S> a(o, 7), b(o, 7), c(o, 8);
    REQUIRE(mha_test::exactly_equal(a.in_proj().in_proj_weight(), b.in_proj().in_proj_weight()));
    REQUIRE(mha_test::exactly_equal(a.out_proj().weight(), b.out_proj().weight()));
    REQUIRE(mha_test::exactly_equal(a.bias_k(), b.bias_k()));
    REQUIRE(mha_test::exactly_equal(a.bias_v(), b.bias_v()));
    REQUIRE_FALSE(mha_test::exactly_equal(a.in_proj().in_proj_weight(), c.in_proj().in_proj_weight()));
    REQUIRE_FALSE(mha_test::exactly_equal(a.out_proj().weight(), c.out_proj().weight()));
    REQUIRE_FALSE(mha_test::exactly_equal(a.bias_k(), c.bias_k()));

    // xavier_uniform over the [3E, E] tensor: bound sqrt(6 / (E + 3E)).
    const S bound = static_cast<S>(std::sqrt(6.0 / double(E + 3 * E)));
    const Mat<S>& w = a.in_proj().in_proj_weight();
    REQUIRE(w.cwiseAbs().maxCoeff() <= bound);
    REQUIRE(w.cwiseAbs().maxCoeff() > S(0.8) * bound);  // the whole range is used
    REQUIRE(std::abs(static_cast<double>(w.mean())) < 0.1 * static_cast<double>(bound));
    const S out_bound = static_cast<S>(1.0 / std::sqrt(double(E)));
    REQUIRE(a.out_proj().weight().cwiseAbs().maxCoeff() <= out_bound);
    REQUIRE(a.out_proj().weight().cwiseAbs().maxCoeff() > S(0.8) * out_bound);
    REQUIRE(a.in_proj().in_proj_bias().isZero(0));
    REQUIRE(a.out_proj().bias().isZero(0));
    REQUIRE(mha_test::all_finite(a.bias_k()));
    REQUIRE_FALSE(a.bias_k().isZero(0));
    REQUIRE_FALSE(mha_test::exactly_equal(a.bias_k(), a.bias_v()));
    // bias_k / bias_v ~ N(0, 1/E): far below 10 / sqrt(E).
    REQUIRE(a.bias_k().cwiseAbs().maxCoeff() < S(10) / std::sqrt(S(E)));
  }
  SECTION("separate q/k/v weights") {
    const Index kdim = 5, vdim = 9;
    const MultiHeadAttentionOptions o = make_options(E, 2, kdim, vdim);
    const MultiHeadAttention<S> a(o, 3), b(o, 3);
    const Mat<S> q = a.in_proj().q_weight(), k = a.in_proj().k_weight(), v = a.in_proj().v_weight();
    REQUIRE(mha_test::exactly_equal(Mat<S>(b.in_proj().k_weight()), k));
    const S bq = static_cast<S>(std::sqrt(6.0 / double(2 * E)));
    const S bk = static_cast<S>(std::sqrt(6.0 / double(E + kdim)));
    const S bv = static_cast<S>(std::sqrt(6.0 / double(E + vdim)));
    REQUIRE(q.cwiseAbs().maxCoeff() <= bq);
    REQUIRE(q.cwiseAbs().maxCoeff() > S(0.8) * bq);
    REQUIRE(k.cwiseAbs().maxCoeff() <= bk);
    REQUIRE(k.cwiseAbs().maxCoeff() > S(0.8) * bk);
    REQUIRE(v.cwiseAbs().maxCoeff() <= bv);
    REQUIRE(v.cwiseAbs().maxCoeff() > S(0.8) * bv);
  }
  SECTION("reset_parameters re-draws from the seed") {
    MultiHeadAttention<S> a(make_options(E, 2), 5);
    const MultiHeadAttention<S> b(make_options(E, 2), 6);
    a.reset_parameters(6);
    REQUIRE(mha_test::exactly_equal(a.in_proj().in_proj_weight(), b.in_proj().in_proj_weight()));
    REQUIRE(mha_test::exactly_equal(a.out_proj().weight(), b.out_proj().weight()));
  }
}

TEMPLATE_TEST_CASE("Thread counts do not change the result", "[mha][threads]", float, double) {
  using S = TestType;
  std::mt19937 rng(52);
  // Large enough that both stages really run on several threads: N * L = 320 rows split the
  // projections into row blocks, and ~1.7 MFLOP of attention is above the one-thread cutoff.
  const Index E = 32, H = 4, N = 8, L = 40, Sk = 40;
  Layer<S> layer(rng, make_options(E, H, 0, 0, true, true, false));
  const Inputs<S> in(rng, N, L, Sk, E, E, E);
  for (const bool average : {true, false}) {
    CAPTURE(average);
    const mha::AttentionResult<S> one =
        layer.mha.forward(in.q(), in.k(), in.v(), ForwardOptions<S>().causal().weights(average).threads(1));
    const mha::AttentionResult<S> two =
        layer.mha.forward(in.q(), in.k(), in.v(), ForwardOptions<S>().causal().weights(average).threads(2));
    const mha::AttentionResult<S> three =
        layer.mha.forward(in.q(), in.q(), in.q(), ForwardOptions<S>().causal().weights(average).threads(3));
    const mha::AttentionResult<S> three_ref =
        layer.mha.forward(in.q(), in.q(), in.q(), ForwardOptions<S>().causal().weights(average).threads(1));
    REQUIRE(mha_test::exactly_equal(one.output, two.output));
    REQUIRE(mha_test::exactly_equal(one.weights, two.weights));
    REQUIRE(mha_test::exactly_equal(three.output, three_ref.output));
    REQUIRE(mha_test::exactly_equal(three.weights, three_ref.weights));
  }
  // The global setting.
  const Mat<S> before = layer.mha.forward(in.q(), in.k(), in.v()).output;
  mha::set_num_threads(2);
  REQUIRE(mha::num_threads() >= 1);
  const Mat<S> with_two = layer.mha.forward(in.q(), in.k(), in.v()).output;
  mha::set_num_threads(0);
  REQUIRE(mha_test::exactly_equal(before, with_two));
  REQUIRE(mha::num_threads(5) >= 1);
}

TEMPLATE_TEST_CASE("The Workspace overload equals the value-returning one, across shapes", "[mha][workspace]",
                   float, double) {
  using S = TestType;
  std::mt19937 rng(53);
  const Index E = 8;
  Layer<S> layer(rng, make_options(E, 2, 6, 0, true, false, true));
  mha::Workspace<S> ws;
  const Inputs<S> a(rng, 2, 3, 4, E, 6, E), b(rng, 1, 6, 2, E, 6, E);
  for (int round = 0; round < 2; ++round)
    for (const Inputs<S>* in : {&a, &b}) {
      CAPTURE(round, in->N, in->L, in->Sk);
      for (const bool want_weights : {true, false}) {
        ForwardOptions<S> opt = ForwardOptions<S>().causal();
        if (want_weights) opt.weights(round == 0);
        const mha::AttentionResult<S> expected = layer.mha.forward(in->q(), in->k(), in->v(), opt);
        Mat<S> out(in->N * in->L, E), weights;
        layer.mha.forward(in->q(), in->k(), in->v(), opt, ws, out, want_weights ? &weights : nullptr);
        REQUIRE(mha_test::exactly_equal(out, expected.output));
        if (want_weights) REQUIRE(mha_test::exactly_equal(weights, expected.weights));
      }
      // Output into caller memory: a Map over a buffer, and a block of a wider matrix.
      std::vector<S> buf(static_cast<size_t>(in->N * in->L * E));
      Eigen::Map<Mat<S>> map(buf.data(), in->N * in->L, E);
      layer.mha.forward(in->q(), in->k(), in->v(), ForwardOptions<S>(), ws, map);
      const Mat<S> expected = layer.mha.forward(in->q(), in->k(), in->v()).output;
      REQUIRE(mha_test::exactly_equal(map, expected));
      Mat<S> wide = Mat<S>::Constant(in->N * in->L, E + 3, S(-9));
      layer.mha.forward(in->q(), in->k(), in->v(), ForwardOptions<S>(), ws, wide.middleCols(1, E));
      REQUIRE(mha_test::exactly_equal(wide.middleCols(1, E), expected));
      REQUIRE((wide.col(0).array() == S(-9)).all());
      REQUIRE((wide.rightCols(2).array() == S(-9)).all());
    }
}

TEMPLATE_TEST_CASE("BatchView over caller memory and strided blocks", "[mha][batch_view]", float, double) {
  using S = TestType;
  std::mt19937 rng(54);
  const Index E = 8, N = 3, L = 4, Sk = 5;
  Layer<S> layer(rng, make_options(E, 2, 0, 0, true, true, false));
  const Inputs<S> in(rng, N, L, Sk, E, E, E);
  const ForwardOptions<S> opt = ForwardOptions<S>().weights();
  const mha::AttentionResult<S> expected = layer.mha.forward(in.q(), in.k(), in.v(), opt);
  const mha_test::RefMhaResult ref = mha_test::ref_mha(layer.w, in.query, in.key, in.value, N);
  REQUIRE_CLOSE_T(S, expected.output, ref.output);

  SECTION("a Map over caller buffers") {
    std::vector<S> q(static_cast<size_t>(N * L * E)), k(static_cast<size_t>(N * Sk * E)),
        v(static_cast<size_t>(N * Sk * E));
    Eigen::Map<Mat<S>>(q.data(), N * L, E) = in.query;
    Eigen::Map<Mat<S>>(k.data(), N * Sk, E) = in.key;
    Eigen::Map<Mat<S>>(v.data(), N * Sk, E) = in.value;
    const mha::AttentionResult<S> r = layer.mha.forward(BatchView<S>(q.data(), N, L, E),
                                                        BatchView<S>(k.data(), N, Sk, E),
                                                        BatchView<S>(v.data(), N, Sk, E), opt);
    REQUIRE_CLOSE_T(S, r.output, expected.output);
    REQUIRE_CLOSE_T(S, r.weights, expected.weights);
    const Eigen::Map<const Mat<S>> qm(q.data(), N * L, E);
    REQUIRE_CLOSE_T(S, layer.mha.forward(BatchView<S>(qm, N), in.k(), in.v(), opt).output, expected.output);
  }
  SECTION("strided blocks of wider matrices") {
    Mat<S> wq = Mat<S>::Zero(N * L, E + 3), wk = Mat<S>::Zero(N * Sk, E + 1), wv = Mat<S>::Zero(N * Sk, 2 * E);
    wq.rightCols(E) = in.query;
    wk.leftCols(E) = in.key;
    wv.middleCols(4, E) = in.value;
    const mha::AttentionResult<S> r = layer.mha.forward(BatchView<S>(wq.rightCols(E), N), BatchView<S>(wk.leftCols(E), N),
                                                        BatchView<S>(wv.middleCols(4, E), N), opt);
    REQUIRE_CLOSE_T(S, r.output, expected.output);
    REQUIRE_CLOSE_T(S, r.weights, expected.weights);
  }
}

// ---------------------------------------------------------------------------------------------
// Errors

TEMPLATE_TEST_CASE("MultiHeadAttention rejects bad options with a message", "[mha][errors]", float, double) {
  using S = TestType;
  using MHA = MultiHeadAttention<S>;
  REQUIRE_THROWS_AS(MHA(make_options(10, 3)), mha::shape_error);
  REQUIRE_THROWS_WITH(MHA(make_options(10, 3)), MHA_CONTAINS("embed_dim 10 is not divisible by num_heads 3"));
  REQUIRE_THROWS_AS(MHA(make_options(0, 1)), mha::shape_error);
  REQUIRE_THROWS_WITH(MHA(make_options(0, 1)), MHA_CONTAINS("embed_dim 0"));
  REQUIRE_THROWS_AS(MHA(make_options(8, 0)), mha::shape_error);
  REQUIRE_THROWS_WITH(MHA(make_options(8, 0)), MHA_CONTAINS("num_heads 0"));
  REQUIRE_THROWS_AS(MHA(make_options(8, -2)), mha::shape_error);
  REQUIRE_THROWS_AS(MHA(make_options(8, 2, -1)), mha::shape_error);
  REQUIRE_THROWS_WITH(MHA(make_options(8, 2, 0, -3)), MHA_CONTAINS("vdim -3"));
}

TEMPLATE_TEST_CASE("MultiHeadAttention forward rejects bad inputs with a message", "[mha][errors]", float, double) {
  using S = TestType;
  std::mt19937 rng(55);
  const Index E = 8, H = 2, L = 3, Sk = 5;
  MultiHeadAttention<S> layer(make_options(E, H));
  const Mat<S> q = mha_test::random_matrix<S>(rng, L, E), kv = mha_test::random_matrix<S>(rng, Sk, E);

  // Empty and wrong feature counts.
  REQUIRE_THROWS_AS(layer.forward(Mat<S>(0, E), kv, kv), mha::shape_error);
  REQUIRE_THROWS_WITH(layer.forward(Mat<S>(0, E), kv, kv), MHA_CONTAINS("expected a non-empty [tokens, features], got [0, 8]"));
  REQUIRE_THROWS_WITH(layer.forward(q, Mat<S>(0, E), kv), MHA_CONTAINS("key: expected a non-empty"));
  REQUIRE_THROWS_WITH(layer.forward(q, kv, Mat<S>(Sk, 0)), MHA_CONTAINS("got [5, 0]"));
  REQUIRE_THROWS_AS(layer.forward(Mat<S>::Zero(L, E + 1), kv, kv), mha::shape_error);
  REQUIRE_THROWS_WITH(layer.forward(Mat<S>::Zero(L, E + 1), kv, kv), MHA_CONTAINS("expected [*, 8], got [3, 9]"));
  REQUIRE_THROWS_WITH(layer.forward(q, Mat<S>::Zero(Sk, 7), kv), MHA_CONTAINS("expected [*, 8], got [5, 7]"));
  REQUIRE_THROWS_WITH(layer.forward(q, kv, Mat<S>::Zero(Sk, 9)), MHA_CONTAINS("expected [5, 8], got [5, 9]"));
  // K / V length mismatch.
  REQUIRE_THROWS_AS(layer.forward(q, kv, Mat<S>::Zero(Sk - 1, E)), mha::shape_error);
  REQUIRE_THROWS_WITH(layer.forward(q, kv, Mat<S>::Zero(Sk - 1, E)), MHA_CONTAINS("expected [5, 8], got [4, 8]"));
  // Batch size mismatch.
  const Mat<S> q2 = Mat<S>::Zero(2 * L, E), kv3 = Mat<S>::Zero(3 * Sk, E);
  REQUIRE_THROWS_AS(layer.forward(BatchView<S>(q2, 2), BatchView<S>(kv3, 3), BatchView<S>(kv3, 3)), mha::shape_error);
  REQUIRE_THROWS_WITH(layer.forward(BatchView<S>(q2, 2), BatchView<S>(kv3, 3), BatchView<S>(kv3, 3)),
                      MHA_CONTAINS("expected [2, *, 8], got [3, 5, 8]"));
  const Mat<S> kv2_short = Mat<S>::Zero(2 * (Sk - 1), E), q2_wide = Mat<S>::Zero(2 * L, E + 1);
  const Mat<S> kv2_ok = Mat<S>::Zero(2 * Sk, E);
  REQUIRE_THROWS_WITH(layer.forward(BatchView<S>(q2_wide, 2), BatchView<S>(kv2_ok, 2), BatchView<S>(kv2_ok, 2)),
                      MHA_CONTAINS("expected [*, *, 8], got [2, 3, 9]"));
  REQUIRE_THROWS_WITH(layer.forward(BatchView<S>(q2, 2), BatchView<S>(kv2_ok, 2), BatchView<S>(kv2_short, 2)),
                      MHA_CONTAINS("expected [2, 5, 8], got [2, 4, 8]"));

  // Masks.
  const AttentionMask<S> wrong = AttentionMask<S>::blocked(BoolMatrix::Constant(L, Sk + 1, false));
  REQUIRE_THROWS_AS(layer.forward(q, kv, kv, ForwardOptions<S>().with_mask(wrong)), mha::shape_error);
  REQUIRE_THROWS_WITH(layer.forward(q, kv, kv, ForwardOptions<S>().with_mask(wrong)),
                      MHA_CONTAINS("expected [L, S] = [3, 5]"));
  REQUIRE_THROWS_WITH(layer.forward(q, kv, kv, ForwardOptions<S>().with_mask(wrong)), MHA_CONTAINS("got [1, 3, 6]"));
  const AttentionMask<S> unsliced = AttentionMask<S>::blocked(BoolMatrix::Constant(H * L, Sk, false));
  REQUIRE_THROWS_WITH(layer.forward(q, kv, kv, ForwardOptions<S>().with_mask(unsliced)), MHA_CONTAINS("got [1, 6, 5]"));
  // H slices for a batch of 2 (needs N * H = 4).
  const AttentionMask<S> per_head = AttentionMask<S>::blocked(BoolMatrix::Constant(H * L, Sk, false), H);
  REQUIRE_NOTHROW(layer.forward(q, kv, kv, ForwardOptions<S>().with_mask(per_head)));
  const Mat<S> kv2 = Mat<S>::Zero(2 * Sk, E);
  REQUIRE_THROWS_AS(layer.forward(BatchView<S>(q2, 2), BatchView<S>(kv2, 2), BatchView<S>(kv2, 2),
                                  ForwardOptions<S>().with_mask(per_head)),
                    mha::shape_error);
  REQUIRE_THROWS_WITH(layer.forward(BatchView<S>(q2, 2), BatchView<S>(kv2, 2), BatchView<S>(kv2, 2),
                                    ForwardOptions<S>().with_mask(per_head)),
                      MHA_CONTAINS("[N * H, L, S] = [4, 3, 5], got [2, 3, 5]"));
  const KeyPaddingMask<S> kpm = KeyPaddingMask<S>::padding(BoolMatrix::Constant(1, Sk, false));
  REQUIRE_THROWS_AS(layer.forward(BatchView<S>(q2, 2), BatchView<S>(kv2, 2), BatchView<S>(kv2, 2),
                                  ForwardOptions<S>().with_key_padding(kpm)),
                    mha::shape_error);
  REQUIRE_THROWS_WITH(layer.forward(BatchView<S>(q2, 2), BatchView<S>(kv2, 2), BatchView<S>(kv2, 2),
                                    ForwardOptions<S>().with_key_padding(kpm)),
                      MHA_CONTAINS("expected [2, 5], got [1, 5]"));
  const KeyPaddingMask<S> kpm_short = KeyPaddingMask<S>::padding(BoolMatrix::Constant(1, Sk - 1, false));
  REQUIRE_THROWS_WITH(layer.forward(q, kv, kv, ForwardOptions<S>().with_key_padding(kpm_short)),
                      MHA_CONTAINS("expected [1, 5], got [1, 4]"));

  // Weights with the tiled kernel, the workspace overload's output and weights arguments.
  REQUIRE_THROWS_AS(layer.forward(q, kv, kv, ForwardOptions<S>().weights().use_kernel(Kernel::tiled)),
                    mha::argument_error);
  REQUIRE_THROWS_WITH(layer.forward(q, kv, kv, ForwardOptions<S>().weights().use_kernel(Kernel::tiled)),
                      MHA_CONTAINS("tiled kernel cannot return attention weights"));
  mha::Workspace<S> ws;
  Mat<S> out_bad(L, E + 1), out(L, E), w;
  const BatchView<S> bq(q, 1), bkv(kv, 1);
  REQUIRE_THROWS_AS(layer.forward(bq, bkv, bkv, ForwardOptions<S>(), ws, out_bad), mha::shape_error);
  REQUIRE_THROWS_WITH(layer.forward(bq, bkv, bkv, ForwardOptions<S>(), ws, out_bad),
                      MHA_CONTAINS("output: expected [3, 8], got [3, 9]"));
  REQUIRE_THROWS_AS(layer.forward(bq, bkv, bkv, ForwardOptions<S>().weights(), ws, out), mha::argument_error);
  REQUIRE_THROWS_AS(layer.forward(bq, bkv, bkv, ForwardOptions<S>().use_kernel(Kernel::tiled), ws, out, &w),
                    mha::argument_error);
  REQUIRE_NOTHROW(layer.forward(bq, bkv, bkv, ForwardOptions<S>(), ws, out, &w));
  REQUIRE(w.rows() == L);
  REQUIRE(w.cols() == Sk);

  // Thread counts.
  REQUIRE_THROWS_AS(layer.forward(q, kv, kv, ForwardOptions<S>().threads(-1)), mha::argument_error);
  REQUIRE_THROWS_WITH(layer.forward(q, kv, kv, ForwardOptions<S>().threads(-1)), MHA_CONTAINS("expected >= 0, got -1"));
  REQUIRE_THROWS_AS(mha::set_num_threads(-1), mha::argument_error);
  REQUIRE_THROWS_WITH(mha::set_num_threads(-3), MHA_CONTAINS("expected >= 0, got -3"));
  REQUIRE_THROWS_AS(mha::num_threads(-1), mha::argument_error);
}

TEMPLATE_TEST_CASE("MultiHeadAttention weight setters check shapes", "[mha][errors]", float, double) {
  using S = TestType;
  const Index E = 8;
  MultiHeadAttention<S> layer(make_options(E, 2));
  REQUIRE_THROWS_AS(layer.in_proj().set_in_proj_weight(Mat<S>::Zero(E, E)), mha::shape_error);
  REQUIRE_THROWS_WITH(layer.in_proj().set_in_proj_weight(Mat<S>::Zero(E, E)), MHA_CONTAINS("expected [24, 8], got [8, 8]"));
  REQUIRE_THROWS_WITH(layer.in_proj().set_in_proj_bias(mha::RowVector<S>::Zero(E)),
                      MHA_CONTAINS("expected [1, 24], got [1, 8]"));
  REQUIRE_THROWS_WITH(layer.out_proj().set_weight(Mat<S>::Zero(E, E + 1)), MHA_CONTAINS("expected [8, 8], got [8, 9]"));
  REQUIRE_THROWS_WITH(layer.out_proj().set_bias(mha::RowVector<S>::Zero(E - 1)), MHA_CONTAINS("expected [1, 8], got [1, 7]"));
  REQUIRE_THROWS_AS(layer.set_bias_k(mha::RowVector<S>::Zero(E)), mha::argument_error);
  REQUIRE_THROWS_WITH(layer.set_bias_k(mha::RowVector<S>::Zero(E)), MHA_CONTAINS("without add_bias_kv"));
  REQUIRE_THROWS_WITH(layer.set_bias_v(mha::RowVector<S>::Zero(E)), MHA_CONTAINS("bias_v"));

  MultiHeadAttention<S> kv(make_options(E, 2, 3, 0, false, true));
  REQUIRE_THROWS_AS(kv.set_bias_k(mha::RowVector<S>::Zero(E - 1)), mha::shape_error);
  REQUIRE_THROWS_WITH(kv.set_bias_k(mha::RowVector<S>::Zero(E - 1)), MHA_CONTAINS("expected [1, 8], got [1, 7]"));
  REQUIRE_THROWS_WITH(kv.in_proj().set_k_weight(Mat<S>::Zero(E, E)), MHA_CONTAINS("expected [8, 3], got [8, 8]"));
  REQUIRE_THROWS_AS(kv.in_proj().set_in_proj_weight(Mat<S>::Zero(3 * E, E)), mha::argument_error);
  REQUIRE_THROWS_AS(kv.out_proj().set_bias(mha::RowVector<S>::Zero(E)), mha::argument_error);
}
