// BM_GemmRoofline: the practical ceiling of this machine for mha's arithmetic, an Eigen float GEMM
// of each attention shape's in-projection, `y [M, N] = x [M, K] * W^T` with `W [N, K]`
// (M = B L, K = E, N = 3E), the product mha's packed QKV projection runs. Row-major operands,
// the same expression as mha::detail::linear_rows.
//
// At 2 threads Eigen parallelises the product itself with OpenMP (Eigen::setNbThreads), set for
// this benchmark only and put back to Eigen's default (0: OpenMP's thread count) afterwards.

#include <mha/types.hpp>

#include <Eigen/Core>

#include "bench_common.hpp"

namespace {

using Scalar = float;

// Sets Eigen's GEMM thread count for one scope.
class EigenThreads {
 public:
  explicit EigenThreads(int threads) { Eigen::setNbThreads(threads); }
  ~EigenThreads() { Eigen::setNbThreads(0); }
  EigenThreads(const EigenThreads&) = delete;
  EigenThreads& operator=(const EigenThreads&) = delete;
};

void BM_GemmRoofline(benchmark::State& state) {
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

}  // namespace

BENCHMARK(BM_GemmRoofline)->Apply(mha_bench::gemm_args);
