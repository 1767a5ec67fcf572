#pragma once
/// \file parallel.hpp
/// The thread count mha uses: OpenMP when the build enables it (the `mha::mha` CMake target links
/// OpenMP when found), otherwise one thread.
///
/// mha parallelises its own loops (GEMM row blocks, batch x heads x query tiles) and runs every
/// Eigen product inside them single-threaded, so Eigen's own threads never nest under ours.

#include <atomic>
#include <string>

#include "error.hpp"
#include "types.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mha {

namespace detail {
inline int& global_thread_setting() {
  static int threads = 0;  // 0: OpenMP's default (OMP_NUM_THREADS or the core count)
  return threads;
}
}  // namespace detail

/// Sets the thread count of every later mha call that does not give its own; 0 restores the
/// default (OpenMP's `omp_get_max_threads()`, or 1 without OpenMP).
inline void set_num_threads(int threads) {
  if (threads < 0)
    MHA_THROW(argument_error, "[mha.argument] set_num_threads: expected >= 0, got " + std::to_string(threads));
  detail::global_thread_setting() = threads;
}

/// The thread count a call asking for `requested` threads gets (0 = the global setting).
inline int num_threads(int requested = 0) {
  if (requested < 0)
    MHA_THROW(argument_error, "[mha.argument] thread count: expected >= 0, got " + std::to_string(requested));
#ifdef _OPENMP
  if (requested > 0) return requested;
  const int global = detail::global_thread_setting();
  return global > 0 ? global : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

}  // namespace mha

namespace mha {
namespace detail {

/// Runs `body(i, thread)` for i in [0, count) on `threads` threads, dynamically scheduled: the
/// caller orders the items most expensive first so that the tail is short. Every Eigen product
/// inside `body` runs single-threaded (Eigen parallelises only outside a parallel region, and
/// each thread's OpenMP thread count is set to 1 for the region), so threads never nest.
///
/// Allocation-free with both OpenMP runtimes: the items are handed out by an atomic counter
/// rather than `omp for schedule(dynamic)`, and one thread runs the loop without a parallel
/// region and without changing the thread count, because LLVM's libomp (clang) allocates on every
/// call for each of those (GCC's libgomp does not); tests/alloc catches it.
template <class Body>
void parallel_for(int threads, Index count, Body&& body) {
#ifdef _OPENMP
  if (threads > count) threads = static_cast<int>(count > 0 ? count : 1);
  if (threads > 1) {
    std::atomic<Index> next{0};
#pragma omp parallel num_threads(threads)
    {
      omp_set_num_threads(1);
      const int thread = omp_get_thread_num();
      for (Index i; (i = next.fetch_add(1, std::memory_order_relaxed)) < count;) body(i, thread);
    }
    return;
  }
  // One thread, no region. Eigen parallelises only its GEMM products, and the bodies run their
  // GEMMs through gemm_accumulate, which calls Eigen's kernel single-threaded (their other Eigen
  // products are matrix-vector or outer products). Only with MHA_GEMM_USE_EIGEN_PRODUCT would
  // Eigen's GEMM start its own threads here; that option is for debugging and allocates anyway.
#else
  (void)threads;
#endif
  for (Index i = 0; i < count; ++i) body(i, 0);
}

}  // namespace detail
}  // namespace mha
