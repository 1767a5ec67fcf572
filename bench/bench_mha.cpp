// BM_MHA / BM_MHA_Reference: one self-attention forward of mha::MultiHeadAttention<float>;
// BM_MHA_F64: the same forward as BM_MHA in double (non-causal shapes, bench_common.hpp's f64_args).
//
// Self-attention: one `[B L, E]` buffer is passed as query, key and value through BatchView, so
// the layer projects with its packed `[3E, E]` GEMM. The allocation-free overload runs with a
// Workspace and an output built (and warmed by one forward) outside the timing loop, so the loop
// measures compute only. BM_MHA lets the layer choose its kernel (Kernel::automatic, the tiled
// kernel without weights); BM_MHA_Reference forces the unfused path that materialises each head's
// [L, S] scores.

#include <mha/multi_head_attention.hpp>

#include <array>
#include <exception>
#include <memory>

#include "bench_common.hpp"

namespace {

// Everything one case needs, built (and warmed) once and kept for the process (CaseCache).
template <class Scalar>
struct MhaCase {
  std::array<std::int64_t, 6> args;  // B, L, E, H, causal, threads
  mha::Kernel kernel;
  mha::MultiHeadAttention<Scalar> layer;
  mha::Matrix<Scalar> x;       // [B L, E]: query, key and value
  mha::Matrix<Scalar> output;  // [B L, E]
  mha::Workspace<Scalar> workspace;
  mha::ForwardOptions<Scalar> options;

  MhaCase(const std::array<std::int64_t, 6>& a, mha::Kernel k)
      : args(a), kernel(k), layer(layer_options(a[2], a[3]), /*seed=*/42) {
    const mha::Index B = a[0], L = a[1], E = a[2];
    x = mha::Matrix<Scalar>::Random(B * L, E);
    output.resize(B * L, E);
    options.causal(a[4] != 0).threads(static_cast<int>(a[5])).use_kernel(k);
    run();  // sizes the workspace: the timed calls allocate nothing
  }

  void run() {
    const mha::BatchView<Scalar> view(x, args[0]);
    layer.forward(view, view, view, options, workspace, output);
  }

  static mha::MultiHeadAttentionOptions layer_options(std::int64_t E, std::int64_t H) {
    mha::MultiHeadAttentionOptions o;
    o.embed_dim = E;
    o.num_heads = H;
    return o;
  }
};

template <class Scalar>
void run_case(benchmark::State& state, mha::Kernel kernel, mha_bench::CaseCache<MhaCase<Scalar>>& cache) {
  const std::array<std::int64_t, 6> args = {state.range(0), state.range(1), state.range(2),
                                            state.range(3), state.range(4), state.range(5)};
  try {
    MhaCase<Scalar>& c = cache.get({args.begin(), args.end()}, args, kernel);
    for (auto _ : state) {
      c.run();
      benchmark::DoNotOptimize(c.output.data());
      benchmark::ClobberMemory();
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  mha_bench::set_gflops(state, mha_bench::attention_flops(args[0], args[1], args[2]));
}

void BM_MHA(benchmark::State& state) {
  static mha_bench::CaseCache<MhaCase<float>> cache;
  run_case(state, mha::Kernel::automatic, cache);
}

void BM_MHA_Reference(benchmark::State& state) {
  static mha_bench::CaseCache<MhaCase<float>> cache;
  run_case(state, mha::Kernel::reference, cache);
}

void BM_MHA_F64(benchmark::State& state) {
  static mha_bench::CaseCache<MhaCase<double>> cache;
  run_case(state, mha::Kernel::automatic, cache);
}

}  // namespace

// BM_MHA also runs the sequence-length sweep of the chart; the reference path only the shapes.
BENCHMARK(BM_MHA)->Apply(mha_bench::attention_sweep_args);
BENCHMARK(BM_MHA_Reference)->Apply(mha_bench::attention_args);
BENCHMARK(BM_MHA_F64)->Apply(mha_bench::f64_args);
