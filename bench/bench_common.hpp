#pragma once
// What every mha_bench file shares: the shapes swept, the FLOP count and the GFLOP/s counter.
//
// Every attention case is one `->Args({B, L, E, H, causal, threads})` row, so a benchmark's name
// reads `BM_<family>/<B>/<L>/<E>/<H>/<causal>/<threads>/real_time`; bench/summarize.py parses
// exactly that. Times are wall-clock (`UseRealTime`): with threads, CPU time would add up the
// cores.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

namespace mha_bench {

/// One self-attention shape: batch B, sequence L (= S), embedding E, heads H.
struct Shape {
  std::int64_t batch, tokens, embed, heads;
};

/// The swept shapes, small to large (the last two take seconds per pass on the reference path).
inline const std::vector<Shape>& shapes() {
  static const std::vector<Shape> all = {
      {1, 128, 512, 8},  {8, 128, 512, 8},    {1, 512, 512, 8},  {1, 1024, 768, 12},
      {4, 512, 768, 12}, {1, 2048, 1024, 16}, {1, 4096, 512, 8},
  };
  return all;
}

inline const std::vector<int>& thread_counts() {
  static const std::vector<int> all = {1, 2};
  return all;
}

/// Dense FLOPs of one self-attention forward without weights: the four E x E projections
/// (2 FLOPs per multiply-add: 3 in, 1 out) plus Q K^T and P V, `8 B L E^2 + 4 B L S E`.
/// Causal runs are charged the same dense count, so their GFLOP/s shows what the mask saves.
inline double attention_flops(std::int64_t B, std::int64_t L, std::int64_t E) {
  const double b = double(B), l = double(L), s = double(L), e = double(E);
  return 8.0 * b * l * e * e + 4.0 * b * l * s * e;
}

/// Sets counter "GFLOPS" to `flops_per_iteration` per second, in units of 1e9.
inline void set_gflops(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOPS"] = benchmark::Counter(flops_per_iteration / 1e9,
                                                benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
}

/// The attention sweep: every shape, causal 0 and 1, every thread count.
inline void attention_args(benchmark::internal::Benchmark* b) {
  for (const Shape& s : shapes())
    for (int causal : {0, 1})
      for (int threads : thread_counts()) b->Args({s.batch, s.tokens, s.embed, s.heads, causal, threads});
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

/// The GEMM sweep: each shape's in-projection, `[B L, E] x [E, 3E]`, at every thread count.
inline void gemm_args(benchmark::internal::Benchmark* b) {
  for (const Shape& s : shapes())
    for (int threads : thread_counts()) b->Args({s.batch * s.tokens, s.embed, 3 * s.embed, threads});
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

/// Records LibTorch's version and threading setup in the benchmark context (bench_torch.cpp;
/// says "not built" without LibTorch).
void add_torch_context();

/// Sets LibTorch's intra-op threads and, unless MHA_BENCH_TORCH_BLAS_THREADS=env, OpenBLAS's to
/// `threads` (bench_torch.cpp explains why both; defined only with MHA_BENCH_HAVE_TORCH).
void set_torch_threads(int threads);

}  // namespace mha_bench
