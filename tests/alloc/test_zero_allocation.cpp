// Proves that a forward pass at a shape seen before allocates nothing: every heap allocation of
// the process (Eigen, the standard library, the OpenMP runtime) goes through malloc, which this
// program wraps to count calls, and a second forward pass at the same shape must count zero.
//
// A program of its own, not a Catch2 case: replacing malloc is process-wide, and sanitizers
// replace it too (the build does not compile this test under them).

#include <mha/mha.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "counting_malloc.hpp"

namespace {

int g_failures = 0;

template <class Scalar>
void check(const std::string& name, const mha::MultiHeadAttentionOptions& o, mha::Index N, mha::Index L,
           mha::Index S, bool self, mha::ForwardOptions<Scalar> options) {
  using mha::Matrix;
  mha::MultiHeadAttention<Scalar> layer(o, 1);
  const Matrix<Scalar> q = Matrix<Scalar>::Random(N * L, o.embed_dim);                  // [N*L, E]
  const Matrix<Scalar> k = Matrix<Scalar>::Random(N * S, layer.kdim());                 // [N*S, kdim]
  const Matrix<Scalar> v = Matrix<Scalar>::Random(N * S, layer.vdim());                 // [N*S, vdim]
  const mha::BatchView<Scalar> qv(q, N), kv(self ? q : k, N), vv(self ? q : v, N);
  Matrix<Scalar> out(N * L, o.embed_dim);  // [N*L, E]
  Matrix<Scalar> weights;
  mha::Workspace<Scalar> workspace;
  Matrix<Scalar>* w = options.need_weights ? &weights : nullptr;

  layer.forward(qv, kv, vv, options, workspace, out, w);  // first call: sizes the workspace
  const Matrix<Scalar> first = out;
  g_allocations = 0;
  g_counting = true;
  for (int repeat = 0; repeat < 3; ++repeat) layer.forward(qv, kv, vv, options, workspace, out, w);
  g_counting = false;
  const long count = g_allocations.load();
  const bool same = (out - first).cwiseAbs().maxCoeff() == Scalar(0);
  std::printf("%-44s allocations in 3 repeated calls: %ld%s\n", name.c_str(), count, same ? "" : " (OUTPUT CHANGED)");
  if (count != 0 || !same) ++g_failures;
}

// RotaryEmbedding::apply rotates in place: no allocation, from the tables or on the fly.
template <class Scalar>
void check_rope(const std::string& name, mha::RopeLayout layout, mha::Index max_positions) {
  mha::RopeOptions o;
  o.layout = layout;
  o.head_dim = 128;
  o.rotary_dim = 128;  // 64 pairs per head: one block of the on-the-fly path
  o.max_positions = max_positions;
  o.scaling = mha::RopeScaling::yarn(4.0, 4096);
  const mha::RotaryEmbedding<Scalar> rope(o);
  mha::Matrix<Scalar> x = mha::Matrix<Scalar>::Random(9, 4 * 128);  // [T, heads * head_dim]
  typename mha::RotaryEmbedding<Scalar>::Positions positions(9);    // [T]
  for (mha::Index t = 0; t < 9; ++t) positions[t] = 3 * t;
  g_allocations = 0;
  g_counting = true;
  rope.apply(x, 4, 7);
  rope.apply(x.leftCols(2 * 128), 2, positions.data());
  rope.apply(x, 4, positions);
  g_counting = false;
  const long count = g_allocations.load();
  std::printf("%-44s allocations in 3 calls: %ld\n", name.c_str(), count);
  if (count != 0) ++g_failures;
}

}  // namespace

// The hook must see what it claims to see, or every "0" above proves nothing.
bool hook_counts_allocations() {
  g_allocations = 0;
  g_counting = true;
  {
    std::string* s = new std::string(100, 'x');            // operator new
    mha::Matrix<float> m = mha::Matrix<float>::Zero(50, 50);  // Eigen's aligned malloc
    volatile float sink = m(1, 1) + float((*s)[0]);
    (void)sink;
    delete s;
  }
  g_counting = false;
  std::printf("hook self-check: %ld allocations seen (expected >= 2)\n", g_allocations.load());
  return g_allocations.load() >= 2;
}

// A decoder layer through its KV cache: after one warm-up step at each shape, prefill chunks and
// decode steps allocate nothing (the cache is allocated once, at construction).
template <class Scalar, class Storage>
void check_decoder(const std::string& name, mha::Index window, int threads) {
  // E = 512: wide enough that a decode step's one-row projections split their output columns
  // over two threads (linear_kernel.hpp), whose packing buffers must be reserved too.
  mha::GroupedQueryAttentionOptions o(512, 8, 2);
  o.rope = mha::RopeOptions{};
  o.alibi = window == 0;
  o.sliding_window = window;
  o.qk_norm = true;
  const mha::GroupedQueryAttention<Scalar> layer(o, 1);
  auto cache = layer.template make_cache<Storage>(2, 2100, 8);
  mha::DecoderWorkspace<Scalar> ws;
  const mha::Matrix<Scalar> prompt = mha::Matrix<Scalar>::Random(2 * 8, 512), token = mha::Matrix<Scalar>::Random(2, 512);
  mha::Matrix<Scalar> out8(2 * 8, 512), out1(2, 512);
  // Warm-up: a prefill chunk, a short decode step, and a decode step over more than 1024 keys
  // (the split-K path), so every buffer has met its largest shape.
  layer.forward(prompt, cache, ws, out8, threads);
  layer.forward(token, cache, ws, out1, threads);
  while (cache.position() < 1100) layer.forward(prompt, cache, ws, out8, threads);
  layer.forward(token, cache, ws, out1, threads);
  g_allocations = 0;
  g_counting = true;
  for (int step = 0; step < 3; ++step) {
    layer.forward(prompt, cache, ws, out8, threads);
    layer.forward(token, cache, ws, out1, threads);
  }
  g_counting = false;
  const long count = g_allocations.load();
  std::printf("%-44s allocations in 6 calls: %ld\n", name.c_str(), count);
  if (count != 0) ++g_failures;
}

int main() {
  if (!hook_counts_allocations()) {
    std::printf("zero-allocation: FAILED (the malloc hook counts nothing)\n");
    return 1;
  }
  mha::MultiHeadAttentionOptions o;
  o.embed_dim = 64;
  o.num_heads = 4;
  for (int threads : {1, 2}) {
    const std::string t = " threads=" + std::to_string(threads);
    check<float>("self-attention (packed GEMM)" + t, o, 2, 200, 200, true, mha::ForwardOptions<float>().threads(threads));
    check<float>("self-attention causal" + t, o, 1, 300, 300, true,
                 mha::ForwardOptions<float>().causal().threads(threads));
    check<double>("cross-attention L != S" + t, o, 3, 37, 150, false, mha::ForwardOptions<double>().threads(threads));
    mha::MultiHeadAttentionOptions kv = o;
    kv.kdim = 24;
    kv.vdim = 40;
    kv.add_bias_kv = true;
    kv.add_zero_attn = true;
    check<float>("kdim/vdim, bias_kv, zero_attn, causal" + t, kv, 2, 70, 90, false,
                 mha::ForwardOptions<float>().causal().threads(threads));
    check<float>("need_weights (reference path)" + t, o, 2, 50, 60, false,
                 mha::ForwardOptions<float>().weights(false).threads(threads));
    mha::MultiHeadAttentionOptions wide = o;
    wide.embed_dim = 256;  // head_dim 64: products past Eigen's stack-allocation limit
    check<float>("need_weights averaged, head_dim 64" + t, wide, 1, 600, 700, false,
                 mha::ForwardOptions<float>().weights().threads(threads));
    check<float>("self-attention, head_dim 64, L = 1000" + t, wide, 1, 1000, 1000, true,
                 mha::ForwardOptions<float>().threads(threads));
  }
  check_rope<float>("RoPE rotate-half, cos/sin tables", mha::RopeLayout::rotate_half, 64);
  check_rope<double>("RoPE interleaved, cos/sin on the fly", mha::RopeLayout::interleaved, 0);
  for (const int threads : {1, 2}) {
    const std::string t = threads == 1 ? ", 1 thread" : ", 2 threads";
    check_decoder<float, float>("decoder GQA + ALiBi, f32 cache" + t, 0, threads);
    check_decoder<float, Eigen::bfloat16>("decoder GQA, bf16 cache" + t, 0, threads);
    check_decoder<double, Eigen::half>("decoder window 16 ring, f16 cache" + t, 16, threads);
  }
  std::printf("%s\n", g_failures == 0 ? "zero-allocation: all passed" : "zero-allocation: FAILED");
  return g_failures == 0 ? 0 : 1;
}
