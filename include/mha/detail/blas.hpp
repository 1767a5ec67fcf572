#pragma once
// The one place mha calls an external BLAS: `Y (+)= X W^T` through cblas_sgemm / cblas_dgemm, for
// the projections when the build defines MHA_BLAS_CBLAS (CMake option MHA_BLAS, which also links
// the library). Without it this header declares nothing and mha stays header-only on Eigen.
//
// The projections split rows over mha's own threads and call BLAS once per block, so a threaded
// BLAS should run one thread per call (OPENBLAS_NUM_THREADS=1, MKL_NUM_THREADS=1, ...), or the two
// thread pools compete for the cores.

#ifdef MHA_BLAS_CBLAS

#ifdef MHA_BLAS_MKL
#include <mkl_cblas.h>
#else
#include <cblas.h>
#endif

#include "../types.hpp"

namespace mha {
namespace detail {

/// `y [m, n] = x [m, k] w^T` (`+=` when accumulate), all row-major: x row stride ldx, w `[n, k]`
/// with row stride ldw, y with row stride ldy.
inline void blas_gemm_xwt(Index m, Index n, Index k, const float* x, Index ldx, const float* w, Index ldw, float* y,
                          Index ldy, bool accumulate) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
              1.0f, x, static_cast<int>(ldx), w, static_cast<int>(ldw), accumulate ? 1.0f : 0.0f, y,
              static_cast<int>(ldy));
}
inline void blas_gemm_xwt(Index m, Index n, Index k, const double* x, Index ldx, const double* w, Index ldw,
                          double* y, Index ldy, bool accumulate) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
              1.0, x, static_cast<int>(ldx), w, static_cast<int>(ldw), accumulate ? 1.0 : 0.0, y,
              static_cast<int>(ldy));
}

}  // namespace detail
}  // namespace mha

#endif  // MHA_BLAS_CBLAS
