// BM_Torch: the PyTorch baseline, LibTorch's torch::nn::MultiheadAttention on the same shapes as
// BM_MHA (built only with MHA_BENCH_HAVE_TORCH).
//
// The module runs in eval mode under NoGradGuard and InferenceMode, need_weights = false, on one
// `[L, B, E]` tensor passed as query, key and value (LibTorch's C++ module is sequence-first and
// has no batch_first), so it also takes its packed-projection branch. Causal cases pass a float
// `[L, L]` attn_mask with -inf above the diagonal: LibTorch 1.13's C++ module has no is_causal,
// and it computes the masked scores anyway, so its causal time is its dense time.
//
// Threads: torch::set_num_threads(threads) sets its intra-op (OpenMP) pool; Debian's LibTorch
// runs its float GEMMs in OpenBLAS, whose own pthread pool torch does not size, so the case sets
// that too (openblas_set_num_threads, looked up at run time) to the same count: both pools are
// then `threads` wide and are never busy at the same time (torch calls BLAS outside its parallel
// regions). MHA_BENCH_TORCH_BLAS_THREADS=env skips that and leaves OpenBLAS to
// OPENBLAS_NUM_THREADS. bench/run_benchmarks.sh adds OMP_WAIT_POLICY=PASSIVE so that idle OpenMP
// threads sleep rather than spin against OpenBLAS's.

#include "bench_common.hpp"

#include <string>

#if defined(MHA_BENCH_HAVE_TORCH) && MHA_BENCH_HAVE_TORCH

#include <dlfcn.h>
#include <torch/torch.h>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <memory>

namespace {

// OpenBLAS's thread-count entry points, when the BLAS LibTorch loaded is OpenBLAS.
struct OpenBlas {
  using SetThreads = void (*)(int);
  using GetThreads = int (*)();
  using GetConfig = char* (*)();
  SetThreads set_threads = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  GetThreads get_threads = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  GetConfig get_config = reinterpret_cast<GetConfig>(dlsym(RTLD_DEFAULT, "openblas_get_config"));

  static const OpenBlas& get() {
    static const OpenBlas instance;
    return instance;
  }
};

// MHA_BENCH_TORCH_BLAS_THREADS=env leaves OpenBLAS as its environment (OPENBLAS_NUM_THREADS) set
// it, e.g. single-threaded; anything else (the default) gives it the case's thread count.
bool match_blas_threads() {
  const char* mode = std::getenv("MHA_BENCH_TORCH_BLAS_THREADS");
  return !(mode && std::string(mode) == "env");
}

struct TorchCase {
  std::array<std::int64_t, 6> args;  // B, L, E, H, causal, threads
  torch::nn::MultiheadAttention layer{nullptr};
  torch::Tensor x;     // [L, B, E]: query, key and value
  torch::Tensor mask;  // [L, L] float, -inf above the diagonal; undefined unless causal

  explicit TorchCase(const std::array<std::int64_t, 6>& a) : args(a) {
    const std::int64_t B = a[0], L = a[1], E = a[2], H = a[3];
    torch::manual_seed(42);
    layer = torch::nn::MultiheadAttention(torch::nn::MultiheadAttentionOptions(E, H));
    layer->eval();
    x = torch::randn({L, B, E});
    if (a[4] != 0) mask = torch::full({L, L}, -INFINITY).triu(1);
    run();  // warm-up: allocator caches, lazily created thread pools
  }

  torch::Tensor run() {
    return std::get<0>(layer->forward(x, x, x, /*key_padding_mask=*/{}, /*need_weights=*/false, mask));
  }
};

void BM_Torch(benchmark::State& state) {
  static std::unique_ptr<TorchCase> cache;
  const std::array<std::int64_t, 6> args = {state.range(0), state.range(1), state.range(2),
                                            state.range(3), state.range(4), state.range(5)};
  mha_bench::set_torch_threads(static_cast<int>(args[5]));
  if (at::get_num_threads() != args[5]) {
    state.SkipWithError(("torch runs " + std::to_string(at::get_num_threads()) + " threads, not the " +
                         std::to_string(args[5]) + " asked for")
                            .c_str());
    return;
  }
  torch::NoGradGuard no_grad;
  c10::InferenceMode inference;
  try {
    if (!cache || cache->args != args) {
      cache.reset();
      cache = std::make_unique<TorchCase>(args);
    }
    for (auto _ : state) {
      torch::Tensor out = cache->run();
      benchmark::DoNotOptimize(out.data_ptr());
      benchmark::ClobberMemory();
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  mha_bench::set_gflops(state, mha_bench::attention_flops(args[0], args[1], args[2]));
}

}  // namespace

BENCHMARK(BM_Torch)->Apply(mha_bench::attention_args);

namespace mha_bench {
void set_torch_threads(int threads) {
  torch::set_num_threads(threads);
  if (OpenBlas::get().set_threads && match_blas_threads()) OpenBlas::get().set_threads(threads);
}

void add_torch_context() {
  benchmark::AddCustomContext("torch_version", TORCH_VERSION);
  benchmark::AddCustomContext("torch_parallel_info", at::get_parallel_info());
  const OpenBlas& blas = OpenBlas::get();
  benchmark::AddCustomContext("torch_blas", blas.get_config ? std::string(blas.get_config()) : "not OpenBLAS");
  std::string blas_threads = "left to the environment (OPENBLAS_NUM_THREADS)";
  if (blas.set_threads && match_blas_threads()) blas_threads = "openblas_set_num_threads(threads) per case";
  if (blas.get_threads) blas_threads += "; at start " + std::to_string(blas.get_threads());
  benchmark::AddCustomContext("torch_blas_threads", blas_threads);
}
}  // namespace mha_bench

#else  // no LibTorch: no BM_Torch

namespace mha_bench {
void add_torch_context() { benchmark::AddCustomContext("torch_version", "not built (MHA_BENCH_HAVE_TORCH unset)"); }
}  // namespace mha_bench

#endif
