#pragma once
/// \file parallel.hpp
/// The thread count mha uses: OpenMP when the build enables it (the `mha::mha` CMake target links
/// OpenMP when found), otherwise one thread.
///
/// mha parallelises its own loops (GEMM row blocks, batch x heads x query tiles) and runs every
/// Eigen product inside them single-threaded, so Eigen's own threads never nest under ours.

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
template <class Body>
void parallel_for(int threads, Index count, Body&& body) {
#ifdef _OPENMP
  if (threads > count) threads = static_cast<int>(count > 0 ? count : 1);
#pragma omp parallel num_threads(threads)
  {
    omp_set_num_threads(1);
#pragma omp for schedule(dynamic, 1)
    for (Index i = 0; i < count; ++i) body(i, omp_get_thread_num());
  }
#else
  (void)threads;
  for (Index i = 0; i < count; ++i) body(i, 0);
#endif
}

}  // namespace detail
}  // namespace mha
