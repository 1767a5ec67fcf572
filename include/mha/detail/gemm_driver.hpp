#pragma once
// The loops around the micro-kernel (BLIS's five loops):
//
//   for jc in [0, n) step NC            B block [KC, NC] -> L3
//     for pc in [0, k) step KC          pack B[pc.., jc..] (unless B comes packed)
//       for ic in [0, m) step MC        pack A[ic.., pc..] -> L2
//         for jr in [jc, jc + nc) step NR       B micro-panel -> L1
//           for ir in [ic, ic + mc) step MR     micro_kernel: C[ir.., jr..] (+)= alpha A B
//
// Entry points, from most to least packed:
//   gemm_packed           C (+)= alpha * A B, A and B both packed (attention: a query tile packed
//                         once against key tiles packed once)
//   gemm_packed_b         A row-major, B packed (projections against packed weights)
//   gemm                  A row-major, B row-major [k, n] or the transpose of a row-major [n, k]
// None allocates; the caller's PackBuffers are sized by PackBuffers::reserve.
//
// Results depend on the blocking (KC splits the k sum) but not on threads: callers split C by
// rows, and each row's sums run in the same order whoever computes them.

#include <algorithm>

#include "microkernel.hpp"
#include "pack.hpp"

namespace mha {
namespace detail {

/// Which form the right operand of gemm() is given in.
enum class BForm {
  row_major,   ///< B `[k, n]` row-major, row stride ldb
  transposed,  ///< B = W^T for W `[n, k]` row-major, row stride ldb (a weight `[out, in]`, or K)
};

/// The two innermost loops: `C [a.rows, b.cols] (+)= alpha * A B` over one packed A block and one
/// packed B block of the same depth (at most KC for the caches' sake, any depth works).
template <class Scalar>
void gemm_macro_kernel(const PackedA<Scalar>& a, const PackedB<Scalar>& b, Scalar alpha, Scalar* c, Index ldc,
                       bool accumulate) {
  constexpr int MR = GemmBlocking<Scalar>::MR, NR = GemmBlocking<Scalar>::NR;
  const Index m = a.rows, n = b.cols, kc = a.depth;
  MHA_ASSERT(a.depth == b.depth);
  // Logical column j lies in packed column b.col_offset + j; walk the packed panels it covers.
  const Index q_begin = b.col_offset, q_end = b.col_offset + n;
  for (Index q0 = q_begin / NR * NR; q0 < q_end; q0 += NR) {
    const Scalar* b_panel = b.data + (q0 / NR - q_begin / NR) * b.panel_stride;
    const Index col0 = std::max(q0, q_begin) - q0;                 // first tile column used
    const Index cols = std::min(q0 + NR, q_end) - q0 - col0;        // tile columns used
    Scalar* c_cols = c + (q0 + col0 - q_begin);                     // C column of tile column col0
    const bool full_width = col0 == 0 && cols == NR;
    for (Index i0 = 0; i0 < m; i0 += MR) {
      const Scalar* a_panel = a.data + (i0 / MR) * a.panel_stride;
      const Index rows = std::min<Index>(MR, m - i0);
      if (full_width && rows == MR)
        micro_kernel(kc, a_panel, b_panel, alpha, c_cols + i0 * ldc, ldc, accumulate);
      else
        micro_kernel_edge(kc, a_panel, b_panel, alpha, c_cols + i0 * ldc, ldc, accumulate, rows, col0, cols);
    }
  }
}

/// `C [m, n] (+)= alpha * A B` with A and B packed (pack_a, pack_b, pack_b_transposed, or slices
/// of packed weights): C = alpha A B when `!accumulate`, else C += alpha A B. The k sum is blocked
/// by KC; with k == 0, C is zeroed (or left) as the empty product says.
template <class Scalar>
void gemm_packed(const PackedA<Scalar>& a, const PackedB<Scalar>& b, Scalar alpha, Scalar* c, Index ldc,
                 bool accumulate) {
  using Blocking = GemmBlocking<Scalar>;
  MHA_ASSERT(a.depth == b.depth);
  const Index m = a.rows, n = b.cols, k = a.depth;
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate)
      for (Index i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, Scalar(0));
    return;
  }
  for (Index p0 = 0; p0 < k; p0 += Blocking::KC) {
    const Index kc = std::min(Blocking::KC, k - p0);
    gemm_macro_kernel(a.middle_depth(p0, kc), b.middle_depth(p0, kc), alpha, c, ldc, accumulate || p0 > 0);
  }
}

/// `C [m, n] (+)= alpha * A B` with A `[m, k]` row-major (row stride lda) and B packed
/// (`b.depth == k`, `b.cols == n`). `buffers` must have been reserved for (m, n, k, false).
template <class Scalar>
void gemm_packed_b(Index m, const Scalar* a, Index lda, const PackedB<Scalar>& b, Scalar alpha, Scalar* c,
                   Index ldc, bool accumulate, PackBuffers<Scalar>& buffers) {
  using Blocking = GemmBlocking<Scalar>;
  const Index n = b.cols, k = b.depth;
  if (m == 0 || n == 0) return;
  if (k == 0) {
    gemm_packed(PackedA<Scalar>{a, 0, m, 0}, b, alpha, c, ldc, accumulate);
    return;
  }
  MHA_ASSERT(buffers.a_size() >= packed_a_size<Scalar>(std::min(m, Blocking::MC), std::min(k, Blocking::KC)));
  for (Index j0 = 0; j0 < n; j0 += Blocking::NC) {
    const Index nc = std::min(Blocking::NC, n - j0);
    for (Index p0 = 0; p0 < k; p0 += Blocking::KC) {
      const Index kc = std::min(Blocking::KC, k - p0);
      const PackedB<Scalar> b_block = b.middle_cols(j0, nc).middle_depth(p0, kc);
      for (Index i0 = 0; i0 < m; i0 += Blocking::MC) {
        const Index mc = std::min(Blocking::MC, m - i0);
        const PackedA<Scalar> a_block = pack_a(mc, kc, a + i0 * lda + p0, lda, buffers.a());
        gemm_macro_kernel(a_block, b_block, alpha, c + i0 * ldc + j0, ldc, accumulate || p0 > 0);
      }
    }
  }
}

/// `C [m, n] (+)= alpha * A B`, A `[m, k]` row-major (row stride lda), B as `form` says (row
/// stride ldb), C row-major (row stride ldc). `buffers` must have been reserved for (m, n, k).
template <BForm Form, class Scalar>
void gemm(Index m, Index n, Index k, const Scalar* a, Index lda, const Scalar* b, Index ldb, Scalar alpha, Scalar* c,
          Index ldc, bool accumulate, PackBuffers<Scalar>& buffers) {
  using Blocking = GemmBlocking<Scalar>;
  if (m == 0 || n == 0) return;
  if (k == 0) {
    gemm_packed(PackedA<Scalar>{a, 0, m, 0}, PackedB<Scalar>{b, 0, 0, n, 0}, alpha, c, ldc, accumulate);
    return;
  }
  MHA_ASSERT(buffers.a_size() >= packed_a_size<Scalar>(std::min(m, Blocking::MC), std::min(k, Blocking::KC)));
  MHA_ASSERT(buffers.b_size() >= packed_b_size<Scalar>(std::min(k, Blocking::KC), std::min(n, Blocking::NC)));
  for (Index j0 = 0; j0 < n; j0 += Blocking::NC) {
    const Index nc = std::min(Blocking::NC, n - j0);
    for (Index p0 = 0; p0 < k; p0 += Blocking::KC) {
      const Index kc = std::min(Blocking::KC, k - p0);
      const PackedB<Scalar> b_block =
          Form == BForm::row_major ? pack_b(kc, nc, b + p0 * ldb + j0, ldb, buffers.b())
                                   : pack_b_transposed(kc, nc, b + j0 * ldb + p0, ldb, buffers.b());
      for (Index i0 = 0; i0 < m; i0 += Blocking::MC) {
        const Index mc = std::min(Blocking::MC, m - i0);
        const PackedA<Scalar> a_block = pack_a(mc, kc, a + i0 * lda + p0, lda, buffers.a());
        gemm_macro_kernel(a_block, b_block, alpha, c + i0 * ldc + j0, ldc, accumulate || p0 > 0);
      }
    }
  }
}

}  // namespace detail
}  // namespace mha
