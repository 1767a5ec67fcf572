// mha_bench's main: Google Benchmark's, plus context lines (CPU model, compiler, OpenMP, Eigen's
// SIMD, OpenBLAS, LibTorch's threading) that land in the JSON output next to the results they
// explain.

#include <mha/multi_head_attention.hpp>  // also mha/parallel.hpp, which needs types.hpp first

#include <Eigen/Core>

#include <fstream>
#include <string>

#include "bench_common.hpp"

namespace {

// "model name" of /proc/cpuinfo, plus whether the CPU has AVX-512 (flag avx512f): the packet
// width -march=native builds use. Empty off Linux.
std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model, simd = "no AVX-512";
  while (std::getline(cpuinfo, line)) {
    if (model.empty() && line.rfind("model name", 0) == 0) model = line.substr(line.find(':') + 2);
    if (line.rfind("flags", 0) == 0 && line.find(" avx512f") != std::string::npos) simd = "AVX-512F";
  }
  return model.empty() ? std::string() : model + " (" + simd + ")";
}

}  // namespace

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
  std::string simd = Eigen::SimdInstructionSetsInUse();
#ifdef EIGEN_VECTORIZE_FMA
  if (simd.find("FMA") == std::string::npos) simd += ", FMA";  // Eigen 3.4 lists it only with AVX-512
#endif
  benchmark::AddCustomContext("eigen_simd", simd);
  const std::string cpu = cpu_model();
  if (!cpu.empty()) benchmark::AddCustomContext("cpu_model", cpu);
#if defined(__clang__)
  benchmark::AddCustomContext("compiler", "clang " __clang_version__);
#elif defined(__GNUC__)
  benchmark::AddCustomContext("compiler", "g++ " __VERSION__);
#endif
#if MHA_BENCH_HAVE_CBLAS
  using GetConfig = char* (*)();
  if (auto config = reinterpret_cast<GetConfig>(dlsym(RTLD_DEFAULT, "openblas_get_config")))
    benchmark::AddCustomContext("blas", config());
#endif
  mha_bench::add_torch_context();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
