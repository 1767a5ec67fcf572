// The cross-attention cache of MultiHeadAttention: an encoder memory projected once gives the
// same result as projecting key and value at every call, for every option that touches keys.

#include "reference.hpp"

namespace {

using mha::AttentionMask;
using mha::BatchView;
using mha::ForwardOptions;
using mha::Index;
using mha::Kernel;
using mha::KeyPaddingMask;
using mha::MultiHeadAttentionOptions;
using mha_test::Mat;

}  // namespace

TEMPLATE_TEST_CASE("A projected memory gives the result of projecting key and value again", "[cross_attention][cache]",
                   float, double) {
  using S = TestType;
  std::mt19937 rng(17);
  const Index N = 2, E = 12, H = 3, Sk = 7;
  struct Case {
    Index kdim, vdim;
    bool bias_kv, zero_attn;
  };
  for (const Case c : {Case{0, 0, false, false}, Case{5, 9, false, false}, Case{0, 0, true, true}, Case{4, 4, true, false}}) {
    INFO("kdim " << c.kdim << ", vdim " << c.vdim << ", bias_kv " << c.bias_kv << ", zero_attn " << c.zero_attn);
    MultiHeadAttentionOptions o(E, H);
    o.with_kdim(c.kdim).with_vdim(c.vdim).with_bias_kv(c.bias_kv).with_zero_attn(c.zero_attn);
    mha::MultiHeadAttention<S> layer(o, 3);
    layer.in_proj().set_in_proj_bias(mha_test::random_row<S>(rng, 3 * E));
    const Index kd = c.kdim ? c.kdim : E, vd = c.vdim ? c.vdim : E;
    const Mat<S> memory_k = mha_test::random_matrix<S>(rng, N * Sk, kd);
    const Mat<S> memory_v = mha_test::random_matrix<S>(rng, N * Sk, vd);
    const BatchView<S> k(memory_k, N), v(memory_v, N);
    const mha::CrossAttentionCache<S> cache = layer.project_memory(k, v);
    REQUIRE(cache.batch() == N);
    REQUIRE(cache.tokens() == Sk);
    mha::BoolMatrix padded = mha::BoolMatrix::Constant(N, Sk, false);
    padded(1, 2) = padded(0, 6) = true;
    const KeyPaddingMask<S> padding = KeyPaddingMask<S>::padding(padded);
    const AttentionMask<S> mask = AttentionMask<S>::blocked(mha_test::random_bool(rng, 1, Sk, 0.3).replicate(1, 1));
    // Decoder steps: one token at a time, then a chunk of 3, each against the same memory.
    for (const Index L : {1, 3}) {
      const Mat<S> q = mha_test::random_matrix<S>(rng, N * L, E);
      const BatchView<S> qv(q, N);
      for (const Kernel kernel : {Kernel::tiled, Kernel::reference}) {
        const auto options = ForwardOptions<S>().with_key_padding(padding).use_kernel(kernel);
        REQUIRE_CLOSE_T(S, layer.forward(qv, cache, options).output, layer.forward(qv, k, v, options).output);
      }
      const auto with_weights = ForwardOptions<S>().with_key_padding(padding).weights(false);
      const auto a = layer.forward(qv, cache, with_weights), b = layer.forward(qv, k, v, with_weights);
      REQUIRE_CLOSE_T(S, a.output, b.output);
      REQUIRE_CLOSE_T(S, a.weights, b.weights);
      if (L == 1) {
        const auto masked = ForwardOptions<S>().with_mask(mask);
        REQUIRE_CLOSE_T(S, layer.forward(qv, cache, masked).output, layer.forward(qv, k, v, masked).output);
      }
    }
  }
}

TEST_CASE("The cross-attention cache reports misuse", "[cross_attention][cache][errors]") {
  using S = float;
  std::mt19937 rng(2);
  mha::MultiHeadAttention<S> layer(MultiHeadAttentionOptions(8, 2).with_kdim(6), 1);
  const Mat<S> k = mha_test::random_matrix<S>(rng, 10, 6), v = mha_test::random_matrix<S>(rng, 10, 8);
  const Mat<S> q = mha_test::random_matrix<S>(rng, 2, 8);
  CHECK_THROWS_WITH(layer.project_memory(BatchView<S>(k, 2), BatchView<S>(v, 1)),
                    Catch::Matchers::ContainsSubstring("project_memory value [N, S, vdim]: expected [2, 5, 8], got [1, 10, 8]"));
  CHECK_THROWS_WITH(layer.project_memory(BatchView<S>(v, 2), BatchView<S>(v, 2)),
                    Catch::Matchers::ContainsSubstring("project_memory key [N, S, kdim]: expected [2, 5, 6], got [2, 5, 8]"));
  const mha::CrossAttentionCache<S> empty;
  CHECK_THROWS_WITH(layer.forward(BatchView<S>(q, 2), empty), Catch::Matchers::ContainsSubstring("cross-attention cache is empty"));
  const auto cache = layer.project_memory(BatchView<S>(k, 2), BatchView<S>(v, 2));
  CHECK_THROWS_AS(layer.forward(BatchView<S>(q, 1), cache), mha::shape_error);  // batch 1 vs memory batch 2
  mha::MultiHeadAttention<S> wider(MultiHeadAttentionOptions(16, 2), 1);
  const Mat<S> q16 = mha_test::random_matrix<S>(rng, 2, 16);
  CHECK_THROWS_WITH(wider.forward(BatchView<S>(q16, 2), cache), Catch::Matchers::ContainsSubstring("cross-attention cache of width 8, layer embed_dim 16"));
}
