// The decoder benchmarks of issue 8 ("Performance"), in one file so that their baselines run in
// the same process:
//
//   BM_CopyBandwidth/<threads>                 memcpy of 256 MiB: bytes read + written / time, the
//                                               machine's streaming ceiling for the decode target
//   BM_ReadBandwidth/<threads>                 the sum of 256 MiB of floats: bytes read / time, the
//                                               rate a decode step's K and V reads could reach
//   BM_DecodeAttention/<S>/<storage>/<threads> the attention core alone (detail::run_tiled) for one
//                                               new token against S cached keys; H = 32, Hkv = 8,
//                                               d = 128; GB/s of K and V read, and that over the
//                                               copy bandwidth of the same process
//   BM_DecodeStep/<S>/<storage>/<threads>      GroupedQueryAttention::forward of one token (q/k/v/o
//                                               projections + attention) with S keys attended,
//                                               E = 4096 (Llama-3-8B's attention shapes)
//   BM_TorchDecodeStep/<S>/0/<threads>         the same step in LibTorch eager, as Hugging Face's
//                                               eager attention does it (MHA_BENCH_HAVE_TORCH only)
//   BM_Prefill/<L>/<gqa>/<threads>             the attention core over a causal L x L prefill,
//                                               H = 32, d = 64, Hkv = 8 (gqa = 1) or 32 (gqa = 0)
//
// <storage> is the KV cache element type: 0 float, 1 Eigen::bfloat16, 2 Eigen::half.
//
// Memory, not caches: one decode step of one layer reads its K and V once, and a model's other
// layers evict them before the next step. A single cache of S = 4096 in bf16 (16 MiB) would stay in
// this machine's 32 MiB L3 across benchmark iterations and measure L3, so BM_DecodeAttention
// rotates over enough caches (>= 256 MiB in all) that each iteration reads from DRAM. The layer
// step needs no rotation: its 160 MiB of weights evict everything. MHA_BENCH_DECODE_IN_CACHE=1 in
// the environment turns the rotation off (one cache, read from L3 when it fits): the kernel's
// arithmetic time without the DRAM traffic, for comparison.

#include <mha/grouped_query_attention.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench_common.hpp"

#if defined(MHA_BENCH_HAVE_TORCH) && MHA_BENCH_HAVE_TORCH
// Before the file's own names: LibTorch's headers use an unqualified Scalar of their own.
#include <torch/torch.h>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#endif

namespace {

using Scalar = float;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kMiB = std::size_t(1) << 20;
constexpr std::size_t kCopyBytes = 256 * kMiB;  // 8x this machine's L3

// ---------------------------------------------------------------------------------------------
// Copy bandwidth

// Two 256 MiB buffers, touched once so that the pages exist before anything is timed.
struct CopyBuffers {
  std::vector<char> src = std::vector<char>(kCopyBytes, 1);
  std::vector<char> dst = std::vector<char>(kCopyBytes, 0);

  static CopyBuffers& get() {
    static CopyBuffers buffers;
    return buffers;
  }

  // One memcpy of the whole buffer, split into `threads` contiguous parts.
  void copy(int threads) {
    const std::size_t part = kCopyBytes / std::size_t(threads);
    mha::detail::parallel_for(threads, threads, [&](mha::Index t, int) {
      std::memcpy(dst.data() + std::size_t(t) * part, src.data() + std::size_t(t) * part, part);
    });
  }
};

// Bytes moved by one copy: read once, written once (the STREAM convention; glibc's memcpy uses
// non-temporal stores at this size, so the destination is not read for ownership).
constexpr double kCopyTraffic = 2.0 * double(kCopyBytes);

// The copy bandwidth in GB/s at `threads` threads, measured once per process (median of 7 passes
// after a warm-up) for the ratio counters of the decode benchmarks.
double copy_bandwidth(int threads) {
  static std::map<int, double> measured;
  auto it = measured.find(threads);
  if (it != measured.end()) return it->second;
  CopyBuffers& buffers = CopyBuffers::get();
  buffers.copy(threads);
  std::vector<double> rates;
  for (int pass = 0; pass < 7; ++pass) {
    const auto start = Clock::now();
    buffers.copy(threads);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    rates.push_back(kCopyTraffic / seconds / 1e9);
  }
  std::sort(rates.begin(), rates.end());
  return measured[threads] = rates[rates.size() / 2];
}

void BM_CopyBandwidth(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  CopyBuffers& buffers = CopyBuffers::get();
  buffers.copy(threads);  // warm-up
  for (auto _ : state) {
    buffers.copy(threads);
    benchmark::DoNotOptimize(buffers.dst.data());
    benchmark::ClobberMemory();
  }
  state.counters["GBps"] =
      benchmark::Counter(kCopyTraffic / 1e9, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// The sum of 256 MiB of floats, split into `threads` (1 or 2) contiguous parts: a pure read stream
// (Eigen's vectorised sum keeps several packets in flight, far below its arithmetic limit).
float read_pass(int threads) {
  static const Eigen::ArrayXf values = Eigen::ArrayXf::Constant(mha::Index(kCopyBytes / sizeof(float)), 1.0f);
  const mha::Index part = values.size() / threads;
  std::array<float, 2> sums{};
  mha::detail::parallel_for(threads, threads, [&](mha::Index t, int) {
    sums[std::size_t(t)] = values.segment(t * part, part).sum();
  });
  return sums[0] + sums[1];
}

void BM_ReadBandwidth(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  read_pass(threads);  // warm-up
  for (auto _ : state) benchmark::DoNotOptimize(read_pass(threads));
  state.counters["GBps"] =
      benchmark::Counter(double(kCopyBytes) / 1e9, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// ---------------------------------------------------------------------------------------------
// Shapes and helpers

// Llama-3-8B's attention: E = H d = 4096, H = 32, Hkv = 8.
constexpr mha::Index kHeads = 32, kKvHeads = 8, kDecodeHeadDim = 128;
constexpr mha::Index kEmbed = kHeads * kDecodeHeadDim;

// Storage code of the benchmark names -> the cache element's name and size.
const char* storage_name(std::int64_t code) { return code == 0 ? "f32" : code == 1 ? "bf16" : "f16"; }

template <class Body>
void with_storage(std::int64_t code, Body&& body) {
  if (code == 0)
    body(float());
  else if (code == 1)
    body(Eigen::bfloat16());
  else
    body(Eigen::half());
}

// A KV cache of one sequence holding `length` random keys and values in [-1, 1].
template <class Storage>
mha::KVCache<Storage> random_cache(mha::Index capacity, mha::Index length, mha::Index head_dim, std::uint64_t seed) {
  mha::KVCache<Storage> cache(1, kKvHeads, capacity, head_dim);
  std::srand(static_cast<unsigned>(seed));
  const mha::Index block = 1024;  // tokens per append: [block, Hkv d] in float, 4 MiB
  for (mha::Index t0 = 0; t0 < length; t0 += block) {
    const mha::Index t = std::min(block, length - t0);
    const mha::Matrix<Scalar> k = mha::Matrix<Scalar>::Random(t, kKvHeads * head_dim);
    const mha::Matrix<Scalar> v = mha::Matrix<Scalar>::Random(t, kKvHeads * head_dim);
    cache.append(k, v);
  }
  return cache;
}

void set_rate(benchmark::State& state, const char* name, double per_iteration) {
  state.counters[name] =
      benchmark::Counter(per_iteration, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// ---------------------------------------------------------------------------------------------
// BM_DecodeAttention: the attention core over the cache, one query token

// The problem GroupedQueryAttention::forward_chunk builds for one token of one sequence at
// position S - 1 against a linear cache holding S keys.
template <class Storage>
mha::detail::AttentionProblem<Scalar, Storage> decode_problem(const mha::KVCache<Storage>& cache, const Scalar* q,
                                                              Scalar* ctx) {
  const mha::Index d = kDecodeHeadDim, C = cache.capacity(), Hd = kHeads * d, S = cache.length();
  mha::detail::AttentionProblem<Scalar, Storage> p;
  p.batch = 1;
  p.heads = p.num_heads = kHeads;
  p.num_kv_heads = kKvHeads;
  p.q_len = 1;
  p.k_len = S;
  p.head_dim = p.v_dim = d;
  p.scale = static_cast<Scalar>(1.0 / std::sqrt(double(d)));
  p.causal = true;
  p.q_pos0 = S - 1;
  p.k_pos0 = 0;
  p.q = mha::detail::HeadTensor<const Scalar>{q, Hd, d, Hd};  // [1][H][1][d] of a [1, H d] row
  p.ctx = mha::detail::HeadTensor<Scalar>{ctx, Hd, d, Hd};
  p.k = mha::detail::HeadTensor<const Storage>{cache.keys(0, 0), kKvHeads * C * d, C * d, d};
  p.v = mha::detail::HeadTensor<const Storage>{cache.values(0, 0), kKvHeads * C * d, C * d, d};
  return p;
}

struct DecodeAttentionCaseBase {
  virtual ~DecodeAttentionCaseBase() = default;
  virtual void run(int threads) = 0;
};

template <class Storage>
struct DecodeAttentionCase : DecodeAttentionCaseBase {
  std::vector<mha::KVCache<Storage>> caches;  // rotated: >= 256 MiB in all, so reads hit DRAM
  mha::RowVector<Scalar> q;                   // [H d] the new token's rotated query
  mha::RowVector<Scalar> ctx;                 // [H d] output
  mha::detail::ScratchPool<Scalar> pool;
  std::size_t next = 0;

  explicit DecodeAttentionCase(mha::Index S) {
    const std::size_t bytes = kv_bytes(S);
    const std::size_t copies =
        std::getenv("MHA_BENCH_DECODE_IN_CACHE") ? 1 : std::max<std::size_t>(2, (kCopyBytes + bytes - 1) / bytes);
    caches.reserve(copies);
    caches.push_back(random_cache<Storage>(S, S, kDecodeHeadDim, 7));
    for (std::size_t c = 1; c < copies; ++c) caches.push_back(caches.front());
    q = mha::RowVector<Scalar>::Random(kHeads * kDecodeHeadDim);
    ctx.resize(kHeads * kDecodeHeadDim);
    for (int threads : {1, 2}) run(threads);  // sizes the scratch for both thread counts
  }

  static std::size_t kv_bytes(mha::Index S) {
    return 2 * std::size_t(kKvHeads) * std::size_t(S) * std::size_t(kDecodeHeadDim) * sizeof(Storage);
  }

  void run(int threads) override {
    const mha::KVCache<Storage>& cache = caches[next];
    next = (next + 1) % caches.size();
    mha::detail::run_tiled(decode_problem(cache, q.data(), ctx.data()), mha::detail::TileSizes(), threads, pool);
  }
};

void BM_DecodeAttention(benchmark::State& state) {
  static std::unique_ptr<DecodeAttentionCaseBase> cache;
  static std::array<std::int64_t, 2> cached_args{-1, -1};
  const mha::Index S = state.range(0);
  const std::int64_t storage = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  std::size_t bytes = 0;
  try {
    const double copy = copy_bandwidth(threads);  // before the case's caches take memory
    if (!cache || cached_args != std::array<std::int64_t, 2>{S, storage}) {
      cache.reset();
      with_storage(storage, [&](auto tag) { cache = std::make_unique<DecodeAttentionCase<decltype(tag)>>(S); });
      cached_args = {S, storage};
    }
    with_storage(storage, [&](auto tag) { bytes = DecodeAttentionCase<decltype(tag)>::kv_bytes(S); });
    for (auto _ : state) {
      cache->run(threads);
      benchmark::ClobberMemory();
    }
    set_rate(state, "GBps", double(bytes) / 1e9);
    // GB/s over the copy bandwidth: the rate counter is per second, so divide the per-iteration
    // bytes by the copy rate to get a fraction that the rate conversion leaves as a ratio.
    set_rate(state, "of_copy", double(bytes) / 1e9 / copy);
    state.counters["copy_GBps"] = copy;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  state.SetLabel(storage_name(storage));
}

// ---------------------------------------------------------------------------------------------
// BM_DecodeStep: the whole layer, one token

// Bytes one decode step must read: the four projection weights (float) and the K, V attended.
double decode_step_bytes(mha::Index S, std::size_t storage_bytes) {
  const double weights = double(sizeof(Scalar)) * double(kEmbed) * double(2 * kHeads + 2 * kKvHeads) * double(kDecodeHeadDim);
  return weights + 2.0 * double(kKvHeads) * double(S) * double(kDecodeHeadDim) * double(storage_bytes);
}

mha::GroupedQueryAttentionOptions decode_layer_options() {
  mha::GroupedQueryAttentionOptions o(kEmbed, kHeads, kKvHeads);
  o.head_dim = kDecodeHeadDim;
  return o;  // no RoPE: the LibTorch baseline has none either (it is elementwise on [1, H d])
}

// One layer, built once (its weights take 160 MiB and seconds to draw) and shared by all steps.
const mha::GroupedQueryAttention<Scalar>& decode_layer() {
  static const mha::GroupedQueryAttention<Scalar> layer(decode_layer_options(), /*seed=*/42);
  return layer;
}

struct DecodeStepCaseBase {
  virtual ~DecodeStepCaseBase() = default;
  virtual void run(int threads) = 0;
  virtual const Scalar* output() const = 0;
};

// The cache holds S - 1 tokens before each step; the step appends the new token, attends S keys
// and crop() takes the cache back to S - 1, so every iteration does the same work.
template <class Storage>
struct DecodeStepCase : DecodeStepCaseBase {
  mha::Index S;
  mha::KVCache<Storage> cache;
  mha::Matrix<Scalar> x;    // [1, E]
  mha::Matrix<Scalar> out;  // [1, E]
  mha::DecoderWorkspace<Scalar> workspace;

  explicit DecodeStepCase(mha::Index S_)
      : S(S_), cache(random_cache<Storage>(S_, S_ - 1, kDecodeHeadDim, 11)), x(mha::Matrix<Scalar>::Random(1, kEmbed)),
        out(1, kEmbed) {
    for (int threads : {1, 2}) run(threads);  // sizes the workspace
  }

  void run(int threads) override {
    decode_layer().forward(x, cache, workspace, out, threads);
    cache.crop(S - 1);
  }
  const Scalar* output() const override { return out.data(); }
};

void BM_DecodeStep(benchmark::State& state) {
  static std::unique_ptr<DecodeStepCaseBase> cache;
  static std::array<std::int64_t, 2> cached_args{-1, -1};
  const mha::Index S = state.range(0);
  const std::int64_t storage = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  std::size_t storage_bytes = 0;
  try {
    if (!cache || cached_args != std::array<std::int64_t, 2>{S, storage}) {
      cache.reset();
      with_storage(storage, [&](auto tag) { cache = std::make_unique<DecodeStepCase<decltype(tag)>>(S); });
      cached_args = {S, storage};
    }
    with_storage(storage, [&](auto tag) { storage_bytes = sizeof(decltype(tag)); });
    for (auto _ : state) {
      cache->run(threads);
      benchmark::DoNotOptimize(cache->output());
      benchmark::ClobberMemory();
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  set_rate(state, "tokps", 1.0);
  set_rate(state, "GBps", decode_step_bytes(S, storage_bytes) / 1e9);
  state.SetLabel(storage_name(storage));
}

// ---------------------------------------------------------------------------------------------
// BM_Prefill: the attention core over a causal prefill, GQA against MHA

constexpr mha::Index kPrefillEmbed = 2048, kPrefillHeadDim = 64;

struct PrefillCase {
  std::array<std::int64_t, 2> args;  // L, gqa
  mha::Matrix<Scalar> q;    // [L, H d]   projection layout
  mha::Matrix<Scalar> k;    // [L, Hkv d]
  mha::Matrix<Scalar> v;    // [L, Hkv d]
  mha::Matrix<Scalar> ctx;  // [L, H d]
  mha::detail::ScratchPool<Scalar> pool;
  mha::detail::AttentionProblem<Scalar> p;

  explicit PrefillCase(const std::array<std::int64_t, 2>& a) : args(a) {
    const mha::Index L = a[0], Hkv = a[1] ? kKvHeads : kHeads, d = kPrefillHeadDim;
    q = mha::Matrix<Scalar>::Random(L, kHeads * d);
    k = mha::Matrix<Scalar>::Random(L, Hkv * d);
    v = mha::Matrix<Scalar>::Random(L, Hkv * d);
    ctx.resize(L, kHeads * d);
    p.batch = 1;
    p.heads = p.num_heads = kHeads;
    p.num_kv_heads = Hkv;
    p.q_len = p.k_len = L;
    p.head_dim = p.v_dim = d;
    p.scale = static_cast<Scalar>(1.0 / std::sqrt(double(d)));
    p.causal = true;
    p.q = mha::detail::HeadTensor<const Scalar>{q.data(), L * q.cols(), d, q.cols()};
    p.k = mha::detail::HeadTensor<const Scalar>{k.data(), L * k.cols(), d, k.cols()};
    p.v = mha::detail::HeadTensor<const Scalar>{v.data(), L * v.cols(), d, v.cols()};
    p.ctx = mha::detail::HeadTensor<Scalar>{ctx.data(), L * ctx.cols(), d, ctx.cols()};
  }

  void run(int threads) { mha::detail::run_tiled(p, mha::detail::TileSizes(), threads, pool); }
};

void BM_Prefill(benchmark::State& state) {
  static std::unique_ptr<PrefillCase> cache;
  const std::array<std::int64_t, 2> args = {state.range(0), state.range(1)};
  const int threads = static_cast<int>(state.range(2));
  try {
    if (!cache || cache->args != args) {
      cache.reset();
      cache = std::make_unique<PrefillCase>(args);
    }
    cache->run(threads);  // warm-up at this thread count
    for (auto _ : state) {
      cache->run(threads);
      benchmark::DoNotOptimize(cache->ctx.data());
      benchmark::ClobberMemory();
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  // Causal: half of the L x L scores, 2 FLOPs per multiply-add in Q K^T and in P V.
  const double L = double(args[0]);
  mha_bench::set_gflops(state, 4.0 * L * L / 2.0 * double(kHeads) * double(kPrefillHeadDim));
  state.SetLabel(args[1] ? "gqa Hkv=8" : "mha Hkv=32");
}

}  // namespace

BENCHMARK(BM_CopyBandwidth)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ReadBandwidth)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DecodeAttention)
    ->ArgsProduct({{1024, 4096, 16384}, {0, 1, 2}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeStep)
    ->ArgsProduct({{1024, 4096, 16384}, {0, 1, 2}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Prefill)->ArgsProduct({{2048}, {1, 0}, {1, 2}})->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------------
// BM_TorchDecodeStep: the LibTorch eager baseline of BM_DecodeStep

#if defined(MHA_BENCH_HAVE_TORCH) && MHA_BENCH_HAVE_TORCH

namespace {

namespace F = torch::nn::functional;

// Hugging Face's eager Llama attention for one token with a DynamicCache, minus RoPE (BM_DecodeStep
// has none): q/k/v projections, cat of the new k, v onto the cache tensors, repeat_kv (expand +
// reshape: what HF's eager path does, equal to repeat_interleave over the head dimension),
// matmul, softmax in float, matmul, o_proj. No mask: a single query token sees every key. After
// the step the cache tensors are sliced back to S - 1 tokens (a view of the cat result, as
// DynamicCache keeps the cat result), so the next cat copies S - 1 keys again, as HF's does.
struct TorchDecodeStepCase {
  std::int64_t S;
  torch::Tensor wq, wk, wv, wo;   // [H d, E], [Hkv d, E], [Hkv d, E], [E, H d]
  torch::Tensor k_cache, v_cache;  // [1, Hkv, S - 1, d]
  torch::Tensor x;                 // [1, 1, E]
  torch::Tensor out;               // [1, 1, E]

  explicit TorchDecodeStepCase(std::int64_t S_) : S(S_) {
    torch::manual_seed(42);
    const std::int64_t E = kEmbed, Hd = kHeads * kDecodeHeadDim, Kd = kKvHeads * kDecodeHeadDim;
    const double bound = 1.0 / std::sqrt(double(E));
    wq = torch::empty({Hd, E}).uniform_(-bound, bound);
    wk = torch::empty({Kd, E}).uniform_(-bound, bound);
    wv = torch::empty({Kd, E}).uniform_(-bound, bound);
    wo = torch::empty({E, Hd}).uniform_(-bound, bound);
    k_cache = torch::rand({1, kKvHeads, S - 1, kDecodeHeadDim}) * 2 - 1;
    v_cache = torch::rand({1, kKvHeads, S - 1, kDecodeHeadDim}) * 2 - 1;
    x = torch::rand({1, 1, E}) * 2 - 1;
    run();  // warm-up: allocator caches, thread pools
  }

  void run() {
    const std::int64_t H = kHeads, Hkv = kKvHeads, d = kDecodeHeadDim, groups = H / Hkv;
    torch::Tensor q = F::linear(x, wq).view({1, 1, H, d}).transpose(1, 2);    // [1, H, 1, d]
    torch::Tensor k = F::linear(x, wk).view({1, 1, Hkv, d}).transpose(1, 2);  // [1, Hkv, 1, d]
    torch::Tensor v = F::linear(x, wv).view({1, 1, Hkv, d}).transpose(1, 2);
    torch::Tensor keys = torch::cat({k_cache, k}, 2);  // [1, Hkv, S, d]
    torch::Tensor values = torch::cat({v_cache, v}, 2);
    auto repeat_kv = [&](const torch::Tensor& t) {  // [1, Hkv, S, d] -> [1, H, S, d]
      return t.unsqueeze(2).expand({1, Hkv, groups, S, d}).reshape({1, H, S, d});
    };
    torch::Tensor scores = torch::matmul(q, repeat_kv(keys).transpose(2, 3)) / std::sqrt(double(d));  // [1, H, 1, S]
    torch::Tensor probs = torch::softmax(scores, -1, torch::kFloat32);
    torch::Tensor attn = torch::matmul(probs, repeat_kv(values));           // [1, H, 1, d]
    attn = attn.transpose(1, 2).reshape({1, 1, H * d});
    out = F::linear(attn, wo);
    k_cache = keys.narrow(2, 0, S - 1);
    v_cache = values.narrow(2, 0, S - 1);
  }
};

void BM_TorchDecodeStep(benchmark::State& state) {
  static std::unique_ptr<TorchDecodeStepCase> cache;
  const std::int64_t S = state.range(0);
  const int threads = static_cast<int>(state.range(2));
  mha_bench::set_torch_threads(threads);
  if (at::get_num_threads() != threads) {
    state.SkipWithError(("torch runs " + std::to_string(at::get_num_threads()) + " threads, not " +
                         std::to_string(threads))
                            .c_str());
    return;
  }
  torch::NoGradGuard no_grad;
  c10::InferenceMode inference;
  try {
    if (!cache || cache->S != S) {
      cache.reset();
      cache = std::make_unique<TorchDecodeStepCase>(S);
    }
    cache->run();  // warm-up at this thread count
    for (auto _ : state) {
      cache->run();
      benchmark::DoNotOptimize(cache->out.data_ptr());
      benchmark::ClobberMemory();
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  set_rate(state, "tokps", 1.0);
  set_rate(state, "GBps", decode_step_bytes(S, sizeof(float)) / 1e9);
  state.SetLabel("f32");
}

}  // namespace

// Storage fixed at 0 (float cache) so the name lines up with BM_DecodeStep/<S>/0/<threads>.
BENCHMARK(BM_TorchDecodeStep)
    ->ArgsProduct({{1024, 4096, 16384}, {0}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

#endif
