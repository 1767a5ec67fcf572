// GroupedQueryAttention against a plain loop reference of the decoder semantics (in double, no
// Eigen products, no mha::detail), and the properties a KV cache must have: prefill + decode in
// any split equals the whole sequence, GQA equals MHA with repeated kv heads, a window equals a
// band mask, a bf16/f16 cache stays within its rounding, and results do not depend on threads.

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <mha/grouped_query_attention.hpp>

#include "reference.hpp"

namespace {

using mha::GroupedQueryAttention;
using mha::GroupedQueryAttentionOptions;
using mha::Index;
using mha_test::Mat;
using mha_test::MatD;

// The decoder semantics of grouped_query_attention.hpp, written out for one sequence x [T, E]
// (positions 0..T-1), rotate-half or interleaved RoPE with theta^(-2i/r) (no scaling).
template <class S>
MatD ref_decoder(const GroupedQueryAttention<S>& layer, const MatD& x) {
  const auto& o = layer.options();
  const Index T = x.rows(), H = o.num_heads, Hkv = o.num_kv_heads, d = o.head_dim;
  auto linear = [](const MatD& in, const mha::Linear<S>& l) {
    MatD y(in.rows(), l.out_features());
    for (Index t = 0; t < in.rows(); ++t)
      for (Index r = 0; r < l.out_features(); ++r) {
        double s = l.has_bias() ? double(l.bias()[r]) : 0.0;
        for (Index c = 0; c < l.in_features(); ++c) s += in(t, c) * double(l.weight()(r, c));
        y(t, r) = s;
      }
    return y;
  };
  MatD q = linear(x, layer.q_proj()), k = linear(x, layer.k_proj()), v = linear(x, layer.v_proj());
  auto norm = [&](MatD& m, const mha::RowVector<S>& w) {
    for (Index t = 0; t < T; ++t)
      for (Index h = 0; h < m.cols() / d; ++h) {
        double ss = 0;
        for (Index c = 0; c < d; ++c) ss += m(t, h * d + c) * m(t, h * d + c);
        const double inv = 1.0 / std::sqrt(ss / double(d) + o.qk_norm_eps);
        for (Index c = 0; c < d; ++c) m(t, h * d + c) *= inv * double(w[c]);
      }
  };
  if (o.qk_norm) {
    norm(q, layer.q_norm_weight());
    norm(k, layer.k_norm_weight());
  }
  auto rope = [&](MatD& m) {
    const Index r = o.rope->rotary_dim ? o.rope->rotary_dim : d, half = r / 2;
    for (Index t = 0; t < T; ++t)
      for (Index h = 0; h < m.cols() / d; ++h)
        for (Index i = 0; i < half; ++i) {
          const double angle = double(t) * std::pow(o.rope->theta, -2.0 * double(i) / double(r));
          const bool interleaved = o.rope->layout == mha::RopeLayout::interleaved;
          const Index a = h * d + (interleaved ? 2 * i : i), b = h * d + (interleaved ? 2 * i + 1 : i + half);
          const double xa = m(t, a), xb = m(t, b);
          m(t, a) = xa * std::cos(angle) - xb * std::sin(angle);
          m(t, b) = xb * std::cos(angle) + xa * std::sin(angle);
        }
  };
  if (o.rope) {
    rope(q);
    rope(k);
  }
  const double scale = o.scale ? *o.scale : 1.0 / std::sqrt(double(d));
  MatD ctx = MatD::Zero(T, H * d);
  for (Index h = 0; h < H; ++h) {
    const Index g = h / (H / Hkv);
    for (Index i = 0; i < T; ++i) {
      std::vector<double> s(T, -mha_test::kInf);
      for (Index j = 0; j < T; ++j) {
        if (o.causal && j > i) continue;
        if (o.sliding_window > 0 && i - j >= o.sliding_window) continue;
        double dot = 0;
        for (Index c = 0; c < d; ++c) dot += q(i, h * d + c) * k(j, g * d + c);
        dot *= scale;
        if (o.softcap > 0) dot = o.softcap * std::tanh(dot / o.softcap);
        if (o.alibi) dot -= double(layer.alibi_slopes()[h]) * double(i - j);
        s[j] = dot;
      }
      mha_test::ref_softmax(s);
      for (Index j = 0; j < T; ++j)
        for (Index c = 0; c < d; ++c) ctx(i, h * d + c) += s[j] * v(j, g * d + c);
    }
  }
  return linear(ctx, layer.o_proj());
}

struct Config {
  const char* name;
  GroupedQueryAttentionOptions options;
};

std::vector<Config> configs() {
  std::vector<Config> c;
  auto base = [](Index E, Index H, Index Hkv) { return GroupedQueryAttentionOptions(E, H, Hkv); };
  c.push_back({"mha", base(16, 4, 4)});
  c.push_back({"gqa", base(16, 4, 2)});
  c.push_back({"mqa", base(24, 6, 1)});
  {
    auto o = base(16, 4, 2);
    o.rope = mha::RopeOptions{};
    c.push_back({"rope half", o});
  }
  {
    auto o = base(16, 2, 1);
    o.head_dim = 6;  // != E / H
    o.rope = mha::RopeOptions{};
    o.rope->layout = mha::RopeLayout::interleaved;
    o.rope->rotary_dim = 4;
    c.push_back({"rope interleaved partial, head_dim 6", o});
  }
  {
    auto o = base(16, 4, 2);
    o.alibi = true;
    c.push_back({"alibi", o});
  }
  {
    auto o = base(16, 4, 2);
    o.sliding_window = 3;
    o.rope = mha::RopeOptions{};
    c.push_back({"window 3", o});
  }
  {
    auto o = base(16, 4, 4);
    o.softcap = 0.5;
    o.scale = 0.7;
    o.qkv_bias = o.out_bias = true;
    c.push_back({"softcap, scale, biases", o});
  }
  {
    auto o = base(16, 4, 2);
    o.qk_norm = true;
    o.rope = mha::RopeOptions{};
    c.push_back({"qk_norm", o});
  }
  {
    auto o = base(16, 4, 2);
    o.causal = false;
    c.push_back({"encoder (non-causal)", o});
  }
  return c;
}

template <class S>
void randomise_extras(GroupedQueryAttention<S>& layer, std::mt19937& rng) {
  const auto& o = layer.options();
  if (o.qkv_bias) {
    layer.q_proj().set_bias(mha_test::random_row<S>(rng, layer.q_proj().out_features()));
    layer.k_proj().set_bias(mha_test::random_row<S>(rng, layer.k_proj().out_features()));
    layer.v_proj().set_bias(mha_test::random_row<S>(rng, layer.v_proj().out_features()));
  }
  if (o.out_bias) layer.o_proj().set_bias(mha_test::random_row<S>(rng, o.embed_dim));
  if (o.qk_norm) {
    layer.set_q_norm_weight(mha_test::random_row<S>(rng, o.head_dim, 0.5, 1.5));
    layer.set_k_norm_weight(mha_test::random_row<S>(rng, o.head_dim, 0.5, 1.5));
  }
}

}  // namespace

TEMPLATE_TEST_CASE("GroupedQueryAttention matches the loop reference, whole sequence and through the cache",
                   "[gqa][decoder]", float, double) {
  using S = TestType;
  std::mt19937 rng(21);
  for (const Config& c : configs()) {
    INFO(c.name);
    GroupedQueryAttention<S> layer(c.options, 5);
    randomise_extras(layer, rng);
    const Index T = 11, E = c.options.embed_dim;
    const Mat<S> x = mha_test::random_matrix<S>(rng, T, E);
    const MatD expected = ref_decoder(layer, mha_test::cast<double>(x));
    REQUIRE_CLOSE(layer.forward(x), expected, 10 * mha_test::Tol<S>::rel, 10 * mha_test::Tol<S>::abs);
    // The reference kernel (with weights) agrees, and its weights are distributions.
    Mat<S> weights;
    REQUIRE_CLOSE(layer.forward(x, 1, 0, &weights), expected, 10 * mha_test::Tol<S>::rel, 10 * mha_test::Tol<S>::abs);
    REQUIRE(weights.rows() == c.options.num_heads * T);
    mha_test::require_rows_are_distributions(weights);
    if (!c.options.causal) continue;
    // Prefill of 4, then chunks of 1, 2, 3, 1: any split gives the whole sequence's result.
    auto cache = layer.template make_cache<S>(1, T);
    Mat<S> out(T, E);
    Index t0 = 0;
    for (const Index t : {4, 1, 2, 3, 1}) {
      out.middleRows(t0, t) = layer.forward(x.middleRows(t0, t), cache);
      t0 += t;
    }
    REQUIRE(cache.position() == T);
    REQUIRE_CLOSE(out, expected, 10 * mha_test::Tol<S>::rel, 10 * mha_test::Tol<S>::abs);
  }
}

TEMPLATE_TEST_CASE("GQA equals MHA with each kv head repeated for its query heads", "[gqa][decoder]", float, double) {
  using S = TestType;
  std::mt19937 rng(4);
  const Index E = 16, H = 4, Hkv = 2, d = 4, T = 9;
  GroupedQueryAttention<S> gqa(GroupedQueryAttentionOptions(E, H, Hkv), 1);
  GroupedQueryAttention<S> mha(GroupedQueryAttentionOptions(E, H, H), 2);
  mha.q_proj().set_weight(gqa.q_proj().weight());
  mha.o_proj().set_weight(gqa.o_proj().weight());
  Mat<S> wk(H * d, E), wv(H * d, E);
  for (Index h = 0; h < H; ++h) {  // query head h reads kv head h / (H / Hkv), as repeat_interleave
    wk.middleRows(h * d, d) = gqa.k_proj().weight().middleRows((h / (H / Hkv)) * d, d);
    wv.middleRows(h * d, d) = gqa.v_proj().weight().middleRows((h / (H / Hkv)) * d, d);
  }
  mha.k_proj().set_weight(wk);
  mha.v_proj().set_weight(wv);
  const Mat<S> x = mha_test::random_matrix<S>(rng, T, E);
  REQUIRE_CLOSE_T(S, gqa.forward(x), mha.forward(x));
}

TEMPLATE_TEST_CASE("A windowed layer equals causal attention with an explicit band, and its ring cache holds only the window",
                   "[gqa][window]", float, double) {
  using S = TestType;
  std::mt19937 rng(8);
  GroupedQueryAttentionOptions o(16, 4, 2);
  o.sliding_window = 4;
  o.rope = mha::RopeOptions{};
  GroupedQueryAttention<S> layer(o, 3);
  const Index T = 23;
  const Mat<S> x = mha_test::random_matrix<S>(rng, T, 16);
  const Mat<S> full = layer.forward(x);
  REQUIRE_CLOSE(full, ref_decoder(layer, mha_test::cast<double>(x)), 10 * mha_test::Tol<S>::rel,
                10 * mha_test::Tol<S>::abs);
  // A ring of W - 1 + 5 slots; a prefill of 13 > 5 goes through in chunks, then single tokens.
  auto cache = layer.template make_cache<S>(1, 0, 5);
  REQUIRE(cache.capacity() == 8);
  REQUIRE(cache.mode() == mha::KVCacheMode::ring);
  Mat<S> out(T, 16);
  out.topRows(13) = layer.forward(x.topRows(13), cache);
  for (Index t = 13; t < T; ++t) out.row(t) = layer.forward(x.row(t), cache);
  REQUIRE_CLOSE_T(S, out, full);
  // Two sequences at once through the ring: the 13-token prefill goes in chunks of 5 whose output
  // rows are not contiguous in the batch; each sequence must match its whole-sequence forward.
  const Mat<S> x2 = mha_test::random_matrix<S>(rng, T, 16);
  Mat<S> batch(2 * 13, 16);
  batch << x.topRows(13), x2.topRows(13);
  auto ring2 = layer.template make_cache<S>(2, 0, 5);
  const Mat<S> y = layer.forward(batch, ring2);
  REQUIRE_CLOSE_T(S, y.topRows(13), full.topRows(13));
  REQUIRE_CLOSE_T(S, y.bottomRows(13), layer.forward(x2).topRows(13));
}

TEMPLATE_TEST_CASE("A batch through the cache equals each sequence alone, bitwise, and threads do not change a bit",
                   "[gqa][decoder][determinism]", float, double) {
  using S = TestType;
  std::mt19937 rng(12);
  GroupedQueryAttentionOptions o(32, 8, 2);
  o.rope = mha::RopeOptions{};
  GroupedQueryAttention<S> layer(o, 9);
  const Index N = 3, T = 6;
  const Mat<S> x = mha_test::random_matrix<S>(rng, N * T, 32);
  for (const int threads : {1, 2}) {
    auto cache = layer.template make_cache<S>(N, T);
    Mat<S> batch_out(N * T, 32);
    Mat<S> step(N, 32);
    // Feed token t of every sequence at once.
    for (Index t = 0; t < T; ++t) {
      Mat<S> xt(N, 32);
      for (Index n = 0; n < N; ++n) xt.row(n) = x.row(n * T + t);
      step = layer.forward(xt, cache, threads);
      for (Index n = 0; n < N; ++n) batch_out.row(n * T + t) = step.row(n);
    }
    for (Index n = 0; n < N; ++n) {
      auto single = layer.template make_cache<S>(1, T);
      Mat<S> alone(T, 32);
      for (Index t = 0; t < T; ++t) alone.row(t) = layer.forward(x.row(n * T + t), single, 3 - threads);
      REQUIRE(mha_test::exactly_equal(alone, batch_out.middleRows(n * T, T)));
    }
  }
  // Split-K: one token against 1030 cached keys (two chunks), 1 vs 2 threads, bitwise. The keys
  // are appended directly; the kernel's split-vs-one-pass agreement is in test_non_finite.cpp.
  const Mat<S> keys = mha_test::random_matrix<S>(rng, 1030, 2 * 4);
  const Mat<S> values = mha_test::random_matrix<S>(rng, 1030, 2 * 4);
  const Mat<S> next = mha_test::random_matrix<S>(rng, 1, 32);
  Mat<S> results[2];
  for (const int threads : {1, 2}) {
    auto cache = layer.template make_cache<S>(1, 1031);
    cache.append(keys, values);
    results[threads - 1] = layer.forward(next, cache, threads);
  }
  REQUIRE(mha_test::exactly_equal(results[0], results[1]));
}

TEMPLATE_TEST_CASE("A bf16 or f16 cache stays within its rounding of the full-precision result", "[gqa][cache_dtype]",
                   float, double) {
  using S = TestType;
  std::mt19937 rng(30);
  GroupedQueryAttentionOptions o(32, 4, 2);
  o.rope = mha::RopeOptions{};
  GroupedQueryAttention<S> layer(o, 4);
  const Index T = 12;
  const Mat<S> x = mha_test::random_matrix<S>(rng, T, 32);
  const Mat<S> exact = layer.forward(x);
  auto run = [&](auto cache) {
    Mat<S> out(T, 32);
    out.topRows(5) = layer.forward(x.topRows(5), cache);
    for (Index t = 5; t < T; ++t) out.row(t) = layer.forward(x.row(t), cache);
    return out;
  };
  const Mat<S> bf16 = run(layer.template make_cache<Eigen::bfloat16>(1, T));
  const Mat<S> f16 = run(layer.template make_cache<Eigen::half>(1, T));
  const double scale = exact.cwiseAbs().maxCoeff();
  const double e_bf16 = (bf16 - exact).cwiseAbs().maxCoeff() / scale, e_f16 = (f16 - exact).cwiseAbs().maxCoeff() / scale;
  INFO("bf16 error " << e_bf16 << ", f16 error " << e_f16);
  REQUIRE(e_bf16 < 2e-2);   // 8-bit mantissa: 2^-9 per element
  REQUIRE(e_f16 < 3e-3);    // 11-bit mantissa
  REQUIRE(e_bf16 > 1e-5);   // the cache really stores bf16
  REQUIRE(e_f16 < e_bf16);
}

TEMPLATE_TEST_CASE("A bf16 or f16 cache converts alike on packed panels (prefill) and in place (decode)",
                   "[gqa][cache_dtype]", float, double) {
  // A prefill of 40 tokens stacks 2 heads x 32 queries per task, enough for the packed path,
  // which converts the cache while packing K^T and V; a one-token step reads the cache directly.
  // The last row must agree to rounding: a wrong conversion on either path is far off.
  using S = TestType;
  std::mt19937 rng(31);
  GroupedQueryAttentionOptions o(32, 4, 2);
  o.rope = mha::RopeOptions{};
  GroupedQueryAttention<S> layer(o, 5);
  const Index T = 40;
  const Mat<S> x = mha_test::random_matrix<S>(rng, T, 32);
  auto check = [&](auto whole_cache, auto step_cache) {
    const Mat<S> whole = layer.forward(x, whole_cache);
    layer.forward(x.topRows(T - 1), step_cache);
    const Mat<S> last = layer.forward(x.row(T - 1), step_cache);
    const double scale = last.cwiseAbs().maxCoeff();
    const double error = (whole.row(T - 1) - last).cwiseAbs().maxCoeff() / scale;
    INFO("relative difference " << error);
    REQUIRE(error < (std::is_same<S, float>::value ? 1e-5 : 1e-12));
  };
  check(layer.template make_cache<Eigen::bfloat16>(1, T), layer.template make_cache<Eigen::bfloat16>(1, T));
  check(layer.template make_cache<Eigen::half>(1, T), layer.template make_cache<Eigen::half>(1, T));
}

TEST_CASE("GroupedQueryAttention rejects bad options, inputs and caches with clear errors", "[gqa][errors]") {
  using mha_test::kInf;
  auto make = [](GroupedQueryAttentionOptions o) { return GroupedQueryAttention<float>(o); };
  auto message = [&](GroupedQueryAttentionOptions o) {
    try {
      make(o);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(message(GroupedQueryAttentionOptions(16, 4, 3)),
             Catch::Matchers::ContainsSubstring("num_heads 4 is not a multiple of num_kv_heads 3"));
  CHECK_THAT(message(GroupedQueryAttentionOptions(15, 4)),
             Catch::Matchers::ContainsSubstring("embed_dim 15 is not divisible by num_heads 4"));
  CHECK_THAT(message(GroupedQueryAttentionOptions(0, 4)), Catch::Matchers::ContainsSubstring("positive embed_dim"));
  auto o = GroupedQueryAttentionOptions(16, 4);
  o.sliding_window = -1;
  CHECK_THAT(message(o), Catch::Matchers::ContainsSubstring("sliding_window must be > 0"));
  o = GroupedQueryAttentionOptions(16, 4);
  o.softcap = -1;
  CHECK_THAT(message(o), Catch::Matchers::ContainsSubstring("softcap must be > 0"));
  o.softcap = 0;
  o.scale = 0.0;
  CHECK_THAT(message(o), Catch::Matchers::ContainsSubstring("scale must be finite and > 0"));
  o = GroupedQueryAttentionOptions(16, 4);
  o.rope = mha::RopeOptions{};
  o.rope->rotary_dim = 3;
  CHECK_THAT(message(o), Catch::Matchers::ContainsSubstring("rotary_dim"));
  o.rope->rotary_dim = 6;
  CHECK_THAT(message(o), Catch::Matchers::ContainsSubstring("rotary_dim"));
  o = GroupedQueryAttentionOptions(16, 4);
  o.causal = false;
  o.sliding_window = 4;
  CHECK_THAT(message(o), Catch::Matchers::ContainsSubstring("sliding window needs a causal layer"));

  GroupedQueryAttention<float> layer(GroupedQueryAttentionOptions(16, 4, 2));
  auto cache = layer.make_cache<float>(2, 4);
  const Mat<float> x = Mat<float>::Zero(2, 16);
  CHECK_THROWS_AS(layer.forward(Mat<float>::Zero(3, 16), cache), mha::shape_error);
  CHECK_THROWS_WITH(layer.forward(Mat<float>::Zero(2, 15), cache), Catch::Matchers::ContainsSubstring("expected [*, 16], got [2, 15]"));
  layer.forward(x, cache);
  layer.forward(Mat<float>::Zero(6, 16), cache);  // 4 tokens per sequence: full
  CHECK_THROWS_AS(layer.forward(x, cache), mha::capacity_error);
  mha::KVCache<float> wrong(1, 4, 8, 4);
  CHECK_THROWS_WITH(layer.forward(Mat<float>::Zero(1, 16), wrong), Catch::Matchers::ContainsSubstring("cache [num_kv_heads, head_dim, v_head_dim] = [4, 4, 4], layer expects [2, 4, 4]"));
  CHECK_THROWS_WITH(layer.set_alibi_slopes(mha::RowVector<float>::Ones(4)), Catch::Matchers::ContainsSubstring("without alibi"));
  CHECK_THROWS_WITH(layer.set_q_norm_weight(mha::RowVector<float>::Ones(4)), Catch::Matchers::ContainsSubstring("without qk_norm"));
  (void)kInf;

  // Sizes past a 64-bit index are errors, not wrapped arithmetic.
  const Index max_index = std::numeric_limits<Index>::max();
  o = GroupedQueryAttentionOptions(16, 4);
  o.head_dim = Index(1) << 62;
  CHECK_THAT(message(o), Catch::Matchers::ContainsSubstring("num_heads * head_dim = 4 * 4611686018427387904 overflows"));
  o = GroupedQueryAttentionOptions(16, 4);
  o.sliding_window = max_index;
  const GroupedQueryAttention<float> windowed(o);
  CHECK_THROWS_WITH(windowed.make_cache<float>(1, 10),
                    Catch::Matchers::ContainsSubstring("sliding_window - 1 + max_chunk = " + std::to_string(max_index) +
                                                       " - 1 + 256 slots overflow"));
}

TEST_CASE("T = 0 tokens is a no-op: an empty output, the cache unchanged", "[gqa][decoder]") {
  GroupedQueryAttention<float> layer(GroupedQueryAttentionOptions(16, 4, 2), 3);
  auto cache = layer.make_cache<float>(2, 4);
  layer.forward(Mat<float>::Random(2, 16), cache);
  const Index before = cache.length();
  const Mat<float> y = layer.forward(Mat<float>(0, 16), cache);
  CHECK(y.rows() == 0);
  CHECK(y.cols() == 16);
  CHECK(cache.length() == before);
  CHECK_THROWS_WITH(layer.forward(Mat<float>(0, 15), cache), Catch::Matchers::ContainsSubstring("got [0, 15]"));
  Mat<float> weights = Mat<float>::Ones(2, 2);
  const Mat<float> z = layer.forward(Mat<float>(0, 16), 2, 0, &weights);
  CHECK(z.rows() == 0);
  CHECK(weights.size() == 0);
}

TEMPLATE_TEST_CASE("One DecoderWorkspace serves layers of different widths in turn", "[gqa][workspace]", float, double) {
  using S = TestType;
  // Layer a is wider (H d = 32, Hkv d = 16) than b (H d = 8, Hkv d = 8 with d = 2, Hkv = 4):
  // b then runs on a workspace whose buffers have more columns than it uses.
  GroupedQueryAttentionOptions oa(16, 8, 4);
  oa.head_dim = 4;
  oa.rope = mha::RopeOptions{};
  GroupedQueryAttentionOptions ob(16, 4, 4);
  ob.head_dim = 2;
  ob.qk_norm = true;
  const GroupedQueryAttention<S> a(oa, 1), b(ob, 2);
  std::mt19937 rng(9);
  const Mat<S> xa = mha_test::random_matrix<S>(rng, 6, 16), xb = mha_test::random_matrix<S>(rng, 6, 16);
  mha::DecoderWorkspace<S> shared;
  auto ca = a.make_cache(2, 8), cb = b.make_cache(2, 8), cb_alone = b.make_cache(2, 8);
  Mat<S> ya(6, 16), yb(6, 16);
  for (int step = 0; step < 3; ++step) {  // prefill 3 tokens per sequence, then one at a time
    const Index rows = step == 0 ? 6 : 2;
    const Mat<S> x_a = step == 0 ? xa : xa.topRows(2), x_b = step == 0 ? xb : xb.topRows(2);
    ya.resize(rows, 16);
    yb.resize(rows, 16);
    a.forward(x_a, ca, shared, ya);
    b.forward(x_b, cb, shared, yb);
    INFO("step " << step);
    CHECK(yb == b.forward(x_b, cb_alone));  // bitwise: the same kernels on the same values
    CHECK(ya.allFinite());
  }
}
