// The in-projection product of each attention shape, `y [M, N] = x [M, K] * W^T` with `W [N, K]`
// (M = B L, K = E, N = 3E), three ways in one binary, float and double, 1 and 2 threads:
//
//   BM_GemmRoofline / BM_GemmEigenF64  Eigen's own product (`y.noalias() = x * w.transpose()`),
//                                      parallelised by Eigen with OpenMP at 2 threads
//   BM_GemmPacked<F32|F64>             mha's projection: detail::linear_rows on a weight packed once
//                                      (the micro-kernel GEMM, rows split over mha's threads)
//   BM_GemmOpenBLAS<F32|F64>           cblas_sgemm / cblas_dgemm, OpenBLAS's threads set to the count
//                                      (when the bench is linked with a CBLAS: MHA_BENCH_HAVE_CBLAS)
//
// Compare the rows of one shape and thread count within one run: the machine is shared.

#include <mha/detail/linear_kernel.hpp>
#include <mha/detail/packed_weight.hpp>
#include <mha/detail/scratch.hpp>
#include <mha/types.hpp>

#include <Eigen/Core>

#if MHA_BENCH_HAVE_CBLAS
#include <cblas.h>
#endif

#include "bench_common.hpp"

namespace {

// Sets Eigen's GEMM thread count for one scope.
class EigenThreads {
 public:
  explicit EigenThreads(int threads) { Eigen::setNbThreads(threads); }
  ~EigenThreads() { Eigen::setNbThreads(0); }
  EigenThreads(const EigenThreads&) = delete;
  EigenThreads& operator=(const EigenThreads&) = delete;
};

template <class Scalar>
void gemm_eigen(benchmark::State& state) {
  const mha::Index M = state.range(0), K = state.range(1), N = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const mha::Matrix<Scalar> x = mha::Matrix<Scalar>::Random(M, K);  // [M, K]
  const mha::Matrix<Scalar> w = mha::Matrix<Scalar>::Random(N, K);  // [N, K], PyTorch's [out, in]
  mha::Matrix<Scalar> y(M, N);                                      // [M, N]
  EigenThreads scope(threads);
  y.noalias() = x * w.transpose();  // warm-up: packing buffers, page faults
  for (auto _ : state) {
    y.noalias() = x * w.transpose();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  mha_bench::set_gflops(state, 2.0 * double(M) * double(K) * double(N));
}

void BM_GemmRoofline(benchmark::State& state) { gemm_eigen<float>(state); }
void BM_GemmEigenF64(benchmark::State& state) { gemm_eigen<double>(state); }

// mha's projection path exactly: the weight packed at set time, linear_rows over the workspace's
// per-thread buffers (sized by the warm-up call, so the loop allocates nothing).
template <class Scalar>
void gemm_packed(benchmark::State& state) {
  const mha::Index M = state.range(0), K = state.range(1), N = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const mha::Matrix<Scalar> x = mha::Matrix<Scalar>::Random(M, K);  // [M, K]
  mha::detail::PackedWeight<Scalar> w(N, K);                        // [N, K] and its panels
  w.assign(mha::Matrix<Scalar>::Random(N, K));
  mha::Matrix<Scalar> y(M, N);  // [M, N]
  mha::detail::ScratchPool<Scalar> pool;
  mha::detail::linear_rows(x, w.slice(), static_cast<const Scalar*>(nullptr), y, threads, pool);
  for (auto _ : state) {
    mha::detail::linear_rows(x, w.slice(), static_cast<const Scalar*>(nullptr), y, threads, pool);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  mha_bench::set_gflops(state, 2.0 * double(M) * double(K) * double(N));
}

void BM_GemmPackedF32(benchmark::State& state) { gemm_packed<float>(state); }
void BM_GemmPackedF64(benchmark::State& state) { gemm_packed<double>(state); }

#if MHA_BENCH_HAVE_CBLAS
void cblas_xwt(int M, int N, int K, const float* x, const float* w, float* y) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
}
void cblas_xwt(int M, int N, int K, const double* x, const double* w, double* y) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0, x, K, w, K, 0.0, y, N);
}

template <class Scalar>
void gemm_openblas(benchmark::State& state) {
  const int M = static_cast<int>(state.range(0)), K = static_cast<int>(state.range(1)),
            N = static_cast<int>(state.range(2));
  const int threads = static_cast<int>(state.range(3));
  const mha::Matrix<Scalar> x = mha::Matrix<Scalar>::Random(M, K);  // [M, K]
  const mha::Matrix<Scalar> w = mha::Matrix<Scalar>::Random(N, K);  // [N, K]
  mha::Matrix<Scalar> y(M, N);                                      // [M, N]
  mha_bench::set_openblas_threads(threads);
  cblas_xwt(M, N, K, x.data(), w.data(), y.data());
  for (auto _ : state) {
    cblas_xwt(M, N, K, x.data(), w.data(), y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  mha_bench::set_openblas_threads(1);
  mha_bench::set_gflops(state, 2.0 * double(M) * double(K) * double(N));
}

void BM_GemmOpenBLASF32(benchmark::State& state) { gemm_openblas<float>(state); }
void BM_GemmOpenBLASF64(benchmark::State& state) { gemm_openblas<double>(state); }
BENCHMARK(BM_GemmOpenBLASF32)->Apply(mha_bench::gemm_args);
BENCHMARK(BM_GemmOpenBLASF64)->Apply(mha_bench::gemm_args);
#endif

}  // namespace

BENCHMARK(BM_GemmRoofline)->Apply(mha_bench::gemm_args);
BENCHMARK(BM_GemmEigenF64)->Apply(mha_bench::gemm_args);
BENCHMARK(BM_GemmPackedF32)->Apply(mha_bench::gemm_args);
BENCHMARK(BM_GemmPackedF64)->Apply(mha_bench::gemm_args);
