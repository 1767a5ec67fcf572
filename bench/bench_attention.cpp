// The attention core alone, without the projections, against OpenBLAS running the same two
// products (issue 7's "attention alone" target):
//
//   BM_AttentionCore/<L>/<d>/<H>/<threads>          mha's tiled kernel, detail::run_tiled, on
//                                                   projection-layout Q, K, V `[L, H d]`, L = S,
//                                                   non-causal, no mask: scores, online softmax, P V
//   BM_AttentionGemmOpenBLAS/<L>/<d>/<H>/<threads>  per head, cblas_sgemm of Q_h K_h^T
//                                                   ([L, d] x [d, S]) into an [L, S] buffer, then of
//                                                   that buffer times V_h ([L, S] x [S, d]): the two
//                                                   products alone, no scaling, no softmax
//                                                   (with MHA_BENCH_HAVE_CBLAS)
//
// Both count GFLOPS = 4 L S d H (2 FLOPs per multiply-add in each product), so their rates compare
// directly: the OpenBLAS case is the ceiling of what the same arithmetic costs on this machine.
// The case list (bench_common.hpp's attention_core_args) is L = S = 2048, d = 64, H = 8, i.e. one
// head group of an E = 512 layer, at 1 and 2 threads. OpenBLAS parallelises each product itself
// (openblas_set_num_threads); mha splits heads x query tiles over its own threads.

#include <mha/detail/attention_core.hpp>
#include <mha/types.hpp>

#include <array>
#include <cmath>
#include <exception>
#include <memory>

#if MHA_BENCH_HAVE_CBLAS
#include <cblas.h>
#endif

#include "bench_common.hpp"

namespace {

double core_flops(std::int64_t L, std::int64_t d, std::int64_t H) {
  return 4.0 * double(L) * double(L) * double(d) * double(H);
}

struct CoreCase {
  std::array<std::int64_t, 3> args;  // L, d, H
  mha::Matrix<float> q;              // [L, H d]  projection layout: head h is columns [h d, (h + 1) d)
  mha::Matrix<float> k;              // [S, H d]
  mha::Matrix<float> v;              // [S, H d]
  mha::Matrix<float> ctx;            // [L, H d]
  mha::detail::ScratchPool<float> pool;
  mha::detail::AttentionProblem<float> p;

  explicit CoreCase(const std::array<std::int64_t, 3>& a) : args(a) {
    const mha::Index L = a[0], d = a[1], H = a[2];
    q = mha::Matrix<float>::Random(L, H * d);
    k = mha::Matrix<float>::Random(L, H * d);
    v = mha::Matrix<float>::Random(L, H * d);
    ctx.resize(L, H * d);
    p.batch = 1;
    p.heads = p.num_heads = p.num_kv_heads = H;
    p.q_len = p.k_len = L;
    p.head_dim = p.v_dim = d;
    p.scale = static_cast<float>(1.0 / std::sqrt(double(d)));
    p.q = mha::detail::HeadTensor<const float>{q.data(), L * q.cols(), d, q.cols()};
    p.k = mha::detail::HeadTensor<const float>{k.data(), L * k.cols(), d, k.cols()};
    p.v = mha::detail::HeadTensor<const float>{v.data(), L * v.cols(), d, v.cols()};
    p.ctx = mha::detail::HeadTensor<float>{ctx.data(), L * ctx.cols(), d, ctx.cols()};
  }

  // The tile sizes MultiHeadAttention uses (its m_tiles is a default TileSizes).
  void run(int threads) { mha::detail::run_tiled(p, mha::detail::TileSizes(), threads, pool); }
};

void BM_AttentionCore(benchmark::State& state) {
  static mha_bench::CaseCache<CoreCase> cache;
  const std::array<std::int64_t, 3> args = {state.range(0), state.range(1), state.range(2)};
  const int threads = static_cast<int>(state.range(3));
  try {
    CoreCase& c = cache.get({args.begin(), args.end()}, args);
    c.run(threads);  // warm-up at this thread count: sizes the per-thread scratch
    for (auto _ : state) {
      c.run(threads);
      benchmark::DoNotOptimize(c.ctx.data());
      benchmark::ClobberMemory();
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  mha_bench::set_gflops(state, core_flops(args[0], args[1], args[2]));
}

#if MHA_BENCH_HAVE_CBLAS
void BM_AttentionGemmOpenBLAS(benchmark::State& state) {
  const int L = static_cast<int>(state.range(0)), d = static_cast<int>(state.range(1)),
            H = static_cast<int>(state.range(2)), threads = static_cast<int>(state.range(3));
  const int S = L, width = H * d;
  const mha::Matrix<float> q = mha::Matrix<float>::Random(L, width);  // [L, H d]
  const mha::Matrix<float> k = mha::Matrix<float>::Random(S, width);  // [S, H d]
  const mha::Matrix<float> v = mha::Matrix<float>::Random(S, width);  // [S, H d]
  mha::Matrix<float> scores(L, S);                                    // [L, S], one head at a time
  mha::Matrix<float> ctx(L, width);                                   // [L, H d]
  auto run = [&] {
    for (int h = 0; h < H; ++h) {
      const float* qh = q.data() + h * d;  // [L, d], row stride H d
      const float* kh = k.data() + h * d;  // [S, d]
      const float* vh = v.data() + h * d;  // [S, d]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, S, d, 1.0f, qh, width, kh, width, 0.0f,
                  scores.data(), S);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, d, S, 1.0f, scores.data(), S, vh, width, 0.0f,
                  ctx.data() + h * d, width);
    }
  };
  mha_bench::set_openblas_threads(threads);
  run();  // warm-up: OpenBLAS's buffers and threads
  for (auto _ : state) {
    run();
    benchmark::DoNotOptimize(ctx.data());
    benchmark::ClobberMemory();
  }
  mha_bench::set_openblas_threads(1);
  mha_bench::set_gflops(state, core_flops(L, d, H));
}
BENCHMARK(BM_AttentionGemmOpenBLAS)->Apply(mha_bench::attention_core_args);
#endif

}  // namespace

BENCHMARK(BM_AttentionCore)->Apply(mha_bench::attention_core_args);
