#pragma once
// One GEMM entry point, `C += alpha * A * B`, that runs Eigen's own blocked GEMM kernel with
// packing buffers the caller keeps. Eigen's operator* allocates those buffers on every product
// larger than EIGEN_STACK_ALLOCATION_LIMIT (128 KiB), which would make every forward pass
// allocate; with a GemmBuffers per thread that lives in the workspace, a forward pass at a shape
// seen before allocates nothing.
//
// This is the only place mha touches Eigen internals (`general_matrix_matrix_product`,
// `level3_blocking`, `computeProductBlockingSizes`), whose interface has been the same from Eigen
// 3.4 to Eigen 5. Define MHA_GEMM_USE_EIGEN_PRODUCT to use plain Eigen products instead (same
// results, but allocating).

#include <Eigen/Core>

#include "../types.hpp"

namespace mha {
namespace detail {

/// Grow-only packing buffers for Eigen's GEMM kernel, one per thread.
template <class Scalar>
class GemmBuffers : public Eigen::internal::level3_blocking<Scalar, Scalar> {
 public:
  GemmBuffers() = default;
  GemmBuffers(const GemmBuffers&) = delete;
  GemmBuffers& operator=(const GemmBuffers&) = delete;

  /// Blocking for a product with a row-major `[rows, cols]` result and inner dimension `depth`;
  /// the buffers grow to fit and never shrink. Eigen's block sizes are the problem sizes clamped
  /// by cache sizes, so preparing the largest product of a loop covers the smaller ones.
  void prepare(Index rows, Index cols, Index depth) {
    // Eigen computes a row-major result as the transposed column-major product, so its "m" is
    // our cols and its "n" our rows.
    Index kc = depth, mc = cols, nc = rows;
    Eigen::internal::computeProductBlockingSizes<Scalar, Scalar, 1>(kc, mc, nc, Index(1));
    this->m_kc = kc;
    this->m_mc = mc;
    this->m_nc = nc;
    if (m_a.size() < mc * kc) m_a.resize(mc * kc);
    if (m_b.size() < kc * nc) m_b.resize(kc * nc);
    this->m_blockA = m_a.data();
    this->m_blockB = m_b.data();
  }

  /// Grows the buffers so that no product with rows, cols and depth at most these allocates in
  /// prepare(): Eigen's block sizes never exceed the problem's (mc <= cols, kc <= depth,
  /// nc <= rows), but they are not monotonic in it (a narrower product can get a deeper kc), so
  /// preparing the largest product alone does not cover the smaller ones.
  void reserve(Index rows, Index cols, Index depth) {
    if (m_a.size() < cols * depth) m_a.resize(cols * depth);
    if (m_b.size() < depth * rows) m_b.resize(depth * rows);
    prepare(rows, cols, depth);
  }

 private:
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> m_a;  // packed panel of the first operand
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> m_b;  // packed panel of the second operand
};

/// `C [m, n] += alpha * A [m, k] * B`, C row-major with row stride ldc, A row-major (stride lda);
/// B is `[k, n]` row-major (stride ldb) when `BRowMajor`, else it is the transpose of a
/// row-major `[n, k]` matrix (stride ldb), i.e. `W^T` for a weight W stored `[out, in]`.
template <bool BRowMajor, class Scalar>
void gemm_accumulate(Index m, Index n, Index k, const Scalar* a, Index lda, const Scalar* b, Index ldb, Scalar* c,
                     Index ldc, Scalar alpha, GemmBuffers<Scalar>& buffers) {
  if (m == 0 || n == 0 || k == 0) return;
#ifdef MHA_GEMM_USE_EIGEN_PRODUCT
  (void)buffers;
  using Map = Eigen::Map<const Matrix<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>>;
  Eigen::Map<Matrix<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>> cm(c, m, n, Eigen::OuterStride<>(ldc));
  const Map am(a, m, k, Eigen::OuterStride<>(lda));
  if (BRowMajor)
    cm.noalias() += alpha * (am * Map(b, k, n, Eigen::OuterStride<>(ldb)));
  else
    cm.noalias() += alpha * (am * Map(b, n, k, Eigen::OuterStride<>(ldb)).transpose());
#else
  buffers.prepare(m, n, k);
  Eigen::internal::general_matrix_matrix_product<Index, Scalar, Eigen::RowMajor, false, Scalar,
                                                 BRowMajor ? Eigen::RowMajor : Eigen::ColMajor, false,
                                                 Eigen::RowMajor, 1>::run(m, n, k, a, lda, b, ldb, c, 1, ldc, alpha,
                                                                          buffers);
#endif
}

}  // namespace detail
}  // namespace mha
