#pragma once
// What every mha_bench file shares: the shapes swept, the FLOP count, the GFLOP/s counter and the
// case cache.
//
// Every attention case is one `->Args({B, L, E, H, causal, threads})` row, so a benchmark's name
// reads `BM_<family>/<B>/<L>/<E>/<H>/<causal>/<threads>/real_time`; the GEMM cases are
// `<M>/<K>/<N>/<threads>` and the attention-core cases `<L>/<d>/<H>/<threads>`. bench/summarize.py
// and bench/plot.py parse exactly that. Times are wall-clock (`UseRealTime`): with threads, CPU
// time would add up the cores.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#if MHA_BENCH_HAVE_CBLAS
#include <dlfcn.h>
#endif

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

/// The sequence-length sweep drawn in docs/bench_seqlen.svg: B = 1, E = 512, H = 8, non-causal,
/// at these L (bench/plot.py). The lengths that shapes() already holds are not added twice.
constexpr std::int64_t kSweepEmbed = 512, kSweepHeads = 8;
inline const std::vector<std::int64_t>& sweep_lengths() {
  static const std::vector<std::int64_t> all = {128, 256, 512, 1024, 2048, 4096};
  return all;
}

/// True when shapes() holds (1, L, E, H): its rows already cover that sweep point.
inline bool in_shapes(std::int64_t L, std::int64_t E, std::int64_t H) {
  for (const Shape& s : shapes())
    if (s.batch == 1 && s.tokens == L && s.embed == E && s.heads == H) return true;
  return false;
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

/// The attention sweep plus the sequence-length sweep's extra rows (non-causal, B = 1, E = 512,
/// H = 8, the L of sweep_lengths() that shapes() lacks), for the families the chart draws.
inline void attention_sweep_args(benchmark::internal::Benchmark* b) {
  attention_args(b);
  for (std::int64_t L : sweep_lengths())
    if (!in_shapes(L, kSweepEmbed, kSweepHeads))
      for (int threads : thread_counts()) b->Args({1, L, kSweepEmbed, kSweepHeads, 0, threads});
}

/// The f64 sweep: every shape, non-causal only (the f64 targets are non-causal), every thread count.
inline void f64_args(benchmark::internal::Benchmark* b) {
  for (const Shape& s : shapes())
    for (int threads : thread_counts()) b->Args({s.batch, s.tokens, s.embed, s.heads, 0, threads});
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

/// The GEMM sweep: each shape's in-projection, `[B L, E] x [E, 3E]`, and the sequence-length
/// sweep's (`[L, 512] x [512, 1536]`), each product once, at every thread count.
inline void gemm_args(benchmark::internal::Benchmark* b) {
  std::vector<std::vector<std::int64_t>> products;
  auto add = [&](std::int64_t M, std::int64_t K, std::int64_t N) {
    for (const auto& p : products)
      if (p[0] == M && p[1] == K && p[2] == N) return;
    products.push_back({M, K, N});
  };
  for (const Shape& s : shapes()) add(s.batch * s.tokens, s.embed, 3 * s.embed);
  for (std::int64_t L : sweep_lengths()) add(L, kSweepEmbed, 3 * kSweepEmbed);
  for (const auto& p : products)
    for (int threads : thread_counts()) b->Args({p[0], p[1], p[2], threads});
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

/// The attention core alone (bench_attention.cpp): `<L>/<d>/<H>/<threads>`, L = S = 2048, d = 64,
/// H = 8 (one head group of E = 512), non-causal.
inline void attention_core_args(benchmark::internal::Benchmark* b) {
  for (int threads : thread_counts()) b->Args({2048, 64, 8, threads});
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

#if MHA_BENCH_HAVE_CBLAS
/// Sets OpenBLAS's thread count when the CBLAS linked is OpenBLAS (looked up at run time, so any
/// other CBLAS links too and keeps its own threading).
inline void set_openblas_threads(int threads) {
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(threads);
}
#endif

/// The cases of one benchmark family, each built on first use and kept, by its arguments, for the
/// whole process. bench/run_benchmarks.sh interleaves the repetitions of all cases at random
/// (--benchmark_enable_random_interleaving) so that a burst of load from another process on this
/// shared machine spoils a few repetitions of many cases rather than every repetition of one;
/// rebuilding (and re-warming) a case at every switch would cost more than its timing.
template <class Case>
class CaseCache {
 public:
  template <class... Make>
  Case& get(const std::vector<std::int64_t>& key, Make&&... make) {
    std::unique_ptr<Case>& slot = m_cases[key];
    if (!slot) slot = std::make_unique<Case>(std::forward<Make>(make)...);
    return *slot;
  }

 private:
  std::map<std::vector<std::int64_t>, std::unique_ptr<Case>> m_cases;
};

/// Records LibTorch's version and threading setup in the benchmark context (bench_torch.cpp;
/// says "not built" without LibTorch).
void add_torch_context();

/// Sets LibTorch's intra-op threads and, unless MHA_BENCH_TORCH_BLAS_THREADS=env, OpenBLAS's to
/// `threads` (bench_torch.cpp explains why both; defined only with MHA_BENCH_HAVE_TORCH).
void set_torch_threads(int threads);

}  // namespace mha_bench
