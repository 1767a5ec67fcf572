// mha_bench's main: Google Benchmark's, plus context lines (OpenMP, Eigen's SIMD, LibTorch's
// threading) that land in the JSON output next to the results they explain.

#include <mha/multi_head_attention.hpp>  // also mha/parallel.hpp, which needs types.hpp first

#include <Eigen/Core>

#include <string>

#include "bench_common.hpp"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
#ifdef _OPENMP
  benchmark::AddCustomContext("mha_openmp", "on, omp_get_max_threads() = " + std::to_string(mha::num_threads()));
#else
  benchmark::AddCustomContext("mha_openmp", "off (every case runs on one thread)");
#endif
  benchmark::AddCustomContext("eigen_version", std::to_string(EIGEN_WORLD_VERSION) + "." +
                                                   std::to_string(EIGEN_MAJOR_VERSION) + "." +
                                                   std::to_string(EIGEN_MINOR_VERSION));
#ifdef EIGEN_VECTORIZE_FMA
  benchmark::AddCustomContext("eigen_simd", std::string(Eigen::SimdInstructionSetsInUse()) + ", FMA");
#else
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
#endif
  mha_bench::add_torch_context();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
