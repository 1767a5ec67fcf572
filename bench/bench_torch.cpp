// The PyTorch baselines, on the same shapes as BM_MHA (built only with MHA_BENCH_HAVE_TORCH):
//
//   BM_Torch           torch::nn::MultiheadAttention, float
//   BM_TorchNative     at::_native_multi_head_attention, float: the fused op that Python's
//                      nn.MultiheadAttention calls in eval mode (batch_first, no attn_mask)
//   BM_TorchF64        the module in double (non-causal shapes, like BM_MHA_F64)
//   BM_TorchNativeF64  the native op in double
//
// The module runs in eval mode under NoGradGuard and InferenceMode, need_weights = false, on one
// `[L, B, E]` tensor passed as query, key and value (LibTorch's C++ module is sequence-first and
// has no batch_first), so it also takes its packed-projection branch. Causal cases pass a float
// `[L, L]` attn_mask with -inf above the diagonal: LibTorch 1.13's C++ module has no is_causal,
// and it computes the masked scores anyway, so its causal time is its dense time.
//
// The native op gets the module's own weights and biases (in_proj_weight [3E, E], in_proj_bias,
// out_proj) and the same input made batch-first, `[B, L, E]`, need_weights = false. Causal: in
// LibTorch 1.13 on the CPU, mask_type 0 (an `[L, S]` src_mask) throws "src_mask not currently
// supported on CPU", so the case passes a bool mask of the scores' own shape `[B, H, L, S]` (true
// above the diagonal: masked) with mask_type 2, built once outside the timing loop. The op still
// computes every score (one batched GEMM over [L, S], then a masked softmax): its causal time is
// its dense time too. Python 1.13 never reaches this op with an attn_mask (the fast path requires
// attn_mask None), so causal users of nn.MultiheadAttention get the module's path instead. Each
// native case checks once, when it is built, that its output equals the module's on the same
// input (max |difference| / max(1, max |module|) < 1e-4 in float, 1e-10 in double, or the case
// fails), and reports the difference as the counter `diff_vs_module`.
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

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <memory>
#include <stdexcept>

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

enum class TorchOp { module, native };

struct TorchCase {
  std::array<std::int64_t, 6> args;  // B, L, E, H, causal, threads
  TorchOp op;
  torch::Dtype dtype;
  torch::nn::MultiheadAttention layer{nullptr};
  torch::Tensor x;            // [L, B, E]: query, key and value of the module
  torch::Tensor mask;         // [L, L] float, -inf above the diagonal; undefined unless causal
  torch::Tensor x_batch;      // [B, L, E]: x batch-first, for the native op
  torch::Tensor native_mask;  // [B, H, L, L] bool, true above the diagonal; undefined unless causal
  double diff_vs_module = 0;  // native op against the module, relative to max(1, max |module|)

  TorchCase(const std::array<std::int64_t, 6>& a, TorchOp o, torch::Dtype t) : args(a), op(o), dtype(t) {
    const std::int64_t B = a[0], L = a[1], E = a[2], H = a[3];
    torch::manual_seed(42);
    layer = torch::nn::MultiheadAttention(torch::nn::MultiheadAttentionOptions(E, H));
    layer->to(dtype);
    layer->eval();
    x = torch::randn({L, B, E}, torch::TensorOptions().dtype(dtype));
    if (a[4] != 0) mask = torch::full({L, L}, -INFINITY, torch::TensorOptions().dtype(dtype)).triu(1);
    if (op == TorchOp::native) {
      x_batch = x.transpose(0, 1).contiguous();
      if (a[4] != 0)
        native_mask = torch::ones({L, L}, torch::TensorOptions().dtype(torch::kBool)).triu(1).expand({B, H, L, L}).contiguous();
      // Same computation as the module? One comparison per case, outside the timing.
      const torch::Tensor expected = run_module().transpose(0, 1);  // [B, L, E]
      const torch::Tensor got = run_native();
      diff_vs_module = (got - expected).abs().max().item<double>() /
                       std::max(1.0, expected.abs().max().item<double>());
      const double tolerance = dtype == torch::kDouble ? 1e-10 : 1e-4;
      if (!(diff_vs_module < tolerance))
        throw std::runtime_error("_native_multi_head_attention differs from the module by " +
                                 std::to_string(diff_vs_module) + " (relative), tolerance " +
                                 std::to_string(tolerance));
    }
    run();  // warm-up: allocator caches, lazily created thread pools
  }

  torch::Tensor run_module() {
    return std::get<0>(layer->forward(x, x, x, /*key_padding_mask=*/{}, /*need_weights=*/false, mask));
  }

  torch::Tensor run_native() {
    const torch::Tensor& q = x_batch;
    c10::optional<torch::Tensor> m;
    c10::optional<std::int64_t> mask_type;
    if (native_mask.defined()) {
      m = native_mask;
      mask_type = 2;  // a mask of the scores' shape [B, H, L, S]
    }
    return std::get<0>(at::_native_multi_head_attention(
        q, q, q, args[2], args[3], layer->in_proj_weight, layer->in_proj_bias, layer->out_proj->weight,
        layer->out_proj->bias, m, /*need_weights=*/false, /*average_attn_weights=*/true, mask_type));
  }

  torch::Tensor run() { return op == TorchOp::native ? run_native() : run_module(); }
};

void run_torch_case(benchmark::State& state, TorchOp op, torch::Dtype dtype, mha_bench::CaseCache<TorchCase>& cache) {
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
  double diff_vs_module = 0;
  try {
    TorchCase& c = cache.get({args.begin(), args.end()}, args, op, dtype);
    diff_vs_module = c.diff_vs_module;
    for (auto _ : state) {
      torch::Tensor out = c.run();
      benchmark::DoNotOptimize(out.data_ptr());
      benchmark::ClobberMemory();
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  mha_bench::set_gflops(state, mha_bench::attention_flops(args[0], args[1], args[2]));
  if (op == TorchOp::native) state.counters["diff_vs_module"] = diff_vs_module;
}

void BM_Torch(benchmark::State& state) {
  static mha_bench::CaseCache<TorchCase> cache;
  run_torch_case(state, TorchOp::module, torch::kFloat, cache);
}

void BM_TorchNative(benchmark::State& state) {
  static mha_bench::CaseCache<TorchCase> cache;
  run_torch_case(state, TorchOp::native, torch::kFloat, cache);
}

void BM_TorchF64(benchmark::State& state) {
  static mha_bench::CaseCache<TorchCase> cache;
  run_torch_case(state, TorchOp::module, torch::kDouble, cache);
}

void BM_TorchNativeF64(benchmark::State& state) {
  static mha_bench::CaseCache<TorchCase> cache;
  run_torch_case(state, TorchOp::native, torch::kDouble, cache);
}

}  // namespace

BENCHMARK(BM_Torch)->Apply(mha_bench::attention_sweep_args);
BENCHMARK(BM_TorchNative)->Apply(mha_bench::attention_sweep_args);
BENCHMARK(BM_TorchF64)->Apply(mha_bench::f64_args);
BENCHMARK(BM_TorchNativeF64)->Apply(mha_bench::f64_args);

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

#else  // no LibTorch: no BM_Torch*

namespace mha_bench {
void add_torch_context() { benchmark::AddCustomContext("torch_version", "not built (MHA_BENCH_HAVE_TORCH unset)"); }
}  // namespace mha_bench

#endif
