#pragma once
// y = x W^T + b on a weight packed once (packed_weight.hpp), split across threads into row blocks
// when there are enough rows: every thread multiplies its rows by the whole (shared, read-only)
// packed weight, which keeps each product large and the panels hot in the shared cache. A few rows
// (a decode step's projection: one row, a GEMV bound by reading the weight) split the output
// columns instead, so that each thread reads its own part of W. With MHA_BLAS_CBLAS the blocks go
// to cblas_?gemm on the `[out, in]` weight instead (blas.hpp).
//
// Each output element's sum runs in the same order whatever the number of threads (blocks only
// choose who computes it), so results are bitwise identical for 1 and 2 threads.

#include <algorithm>
#include <utility>

#include "../parallel.hpp"
#include "../types.hpp"
#include "blas.hpp"
#include "gemm_driver.hpp"
#include "packed_weight.hpp"
#include "scratch.hpp"

namespace mha {
namespace detail {

/// How a projection of `rows` rows and `out` output features splits over `threads`: row blocks
/// (below ~64 rows a block is too thin to pay for a thread), else blocks of output columns, whole
/// micro-kernel panels of at least 256 columns each.
struct LinearSplit {
  Index row_blocks = 1, col_blocks = 1;
  Index blocks() const { return row_blocks * col_blocks; }
};

inline LinearSplit linear_split(Index rows, Index out, int threads) {
  LinearSplit split;
  split.row_blocks = std::max<Index>(1, std::min<Index>(threads, rows / 64));
  if (split.row_blocks == 1 && threads > 1) split.col_blocks = std::max<Index>(1, std::min<Index>(threads, out / 256));
  return split;
}

/// The first column and count of column block b of `out`, whole panels of NR columns.
template <class Scalar>
std::pair<Index, Index> linear_col_range(Index out, Index col_blocks, Index b) {
  constexpr Index NR = GemmBlocking<Scalar>::NR;
  const Index per_block = (out + col_blocks - 1) / col_blocks;
  const Index width = (per_block + NR - 1) / NR * NR;
  const Index begin = std::min(out, b * width);
  return {begin, std::min(width, out - begin)};
}

/// `y [T, out] = x [T, in] * w^T + bias` on `threads` threads, or `y += x w^T + bias` when
/// `accumulate`. x and y are row-major with unit column stride (any row stride); `bias` points at
/// `[out]` values, or is null. `buffers_of(thread)` returns that thread's PackBuffers, reserved
/// for (rows per block, columns per block, in, false) unless the caller lets them grow here.
template <class Scalar, class X, class Y, class BuffersOf>
void linear_rows_with(const X& x, const WeightSlice<Scalar>& w, const Scalar* bias, Y&& y, int threads,
                      bool accumulate, BuffersOf&& buffers_of) {
  MHA_ASSERT(x.rows() == y.rows() && x.cols() == w.in && y.cols() == w.out);
  const Index rows = x.rows(), out = w.out, in = w.in;
  const LinearSplit split = linear_split(rows, out, threads);
  const Index per_block = (rows + split.row_blocks - 1) / split.row_blocks;
  parallel_for(static_cast<int>(split.blocks()), split.blocks(), [&](Index b, int thread) {
    const Index begin = (b / split.col_blocks) * per_block, count = std::min(per_block, rows - begin);
    const auto [c0, cols] = linear_col_range<Scalar>(out, split.col_blocks, b % split.col_blocks);
    if (count <= 0 || cols <= 0) return;
    auto yb = y.block(begin, c0, count, cols);
    if (bias && accumulate) yb.rowwise() += Eigen::Map<const RowVector<Scalar>>(bias + c0, cols);
    if (bias && !accumulate) yb.rowwise() = Eigen::Map<const RowVector<Scalar>>(bias + c0, cols);
    const bool add = accumulate || bias != nullptr;
    const Scalar* xb = x.data() + begin * x.outerStride();
    const WeightSlice<Scalar> wb = cols == out ? w : w.middle_rows(c0, cols);
#ifdef MHA_BLAS_CBLAS
    (void)buffers_of;
    (void)thread;
    blas_gemm_xwt(count, cols, in, xb, x.outerStride(), wb.weight, wb.stride, yb.data(), y.outerStride(), add);
#else
    PackBuffers<Scalar>& buffers = buffers_of(thread);
    buffers.reserve(count, cols, in, false);
    gemm_packed_b(count, xb, x.outerStride(), wb.packed, Scalar(1), yb.data(), y.outerStride(), add, buffers);
#endif
  });
}

/// linear_rows_with on the per-thread buffers of a forward pass's workspace: allocation-free once
/// the workspace has seen the shape.
template <class Scalar, class X, class Y>
void linear_rows(const X& x, const WeightSlice<Scalar>& w, const Scalar* bias, Y&& y, int threads,
                 ScratchPool<Scalar>& pool, bool accumulate = false) {
  const LinearSplit split = linear_split(x.rows(), w.out, threads);
  pool.reserve_pack(static_cast<int>(split.blocks()), (x.rows() + split.row_blocks - 1) / split.row_blocks,
                    linear_col_range<Scalar>(w.out, split.col_blocks, 0).second, w.in);
  linear_rows_with(x, w, bias, std::forward<Y>(y), threads, accumulate,
                   [&pool](int thread) -> PackBuffers<Scalar>& { return pool[thread].pack; });
}

/// This thread's packing buffers for products outside a Workspace (Linear::forward,
/// InProjection::project_*): they grow to the largest shape the thread has seen and stay.
template <class Scalar>
PackBuffers<Scalar>& thread_pack_buffers() {
  thread_local PackBuffers<Scalar> buffers;
  return buffers;
}

/// linear_rows_with on thread_pack_buffers().
template <class Scalar, class X, class Y>
void linear_rows_local(const X& x, const WeightSlice<Scalar>& w, const Scalar* bias, Y&& y, int threads,
                       bool accumulate = false) {
  linear_rows_with(x, w, bias, std::forward<Y>(y), threads, accumulate,
                   [](int) -> PackBuffers<Scalar>& { return thread_pack_buffers<Scalar>(); });
}

}  // namespace detail
}  // namespace mha
