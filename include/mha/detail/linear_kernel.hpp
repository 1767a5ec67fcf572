#pragma once
// y = x W^T + b over many rows, on a weight packed once (packed_weight.hpp), split into row blocks
// across threads: every thread multiplies its rows by the whole (shared, read-only) packed weight,
// which keeps each product large and the panels hot in the shared cache. With MHA_BLAS_CBLAS the
// blocks go to cblas_?gemm on the `[out, in]` weight instead (blas.hpp).
//
// Each row's sums run in the same order whatever the number of threads (row blocks only choose
// who computes a row), so results are bitwise identical for 1 and 2 threads.

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

/// Row blocks of a projection over `rows` rows: below ~64 rows a block is too thin to pay for a
/// thread.
inline Index linear_row_blocks(Index rows, int threads) {
  return std::max<Index>(1, std::min<Index>(threads, rows / 64));
}

/// `y [T, out] = x [T, in] * w^T + bias` on `threads` threads, or `y += x w^T + bias` when
/// `accumulate`. x and y are row-major with unit column stride (any row stride); `bias` points at
/// `[out]` values, or is null. `buffers_of(thread)` returns that thread's PackBuffers, reserved
/// for (rows per block, out, in, false) unless the caller lets them grow here.
template <class Scalar, class X, class Y, class BuffersOf>
void linear_rows_with(const X& x, const WeightSlice<Scalar>& w, const Scalar* bias, Y&& y, int threads,
                      bool accumulate, BuffersOf&& buffers_of) {
  MHA_ASSERT(x.rows() == y.rows() && x.cols() == w.in && y.cols() == w.out);
  const Index rows = x.rows(), out = w.out, in = w.in;
  const Index blocks = linear_row_blocks(rows, threads);
  const Index per_block = (rows + blocks - 1) / blocks;
  parallel_for(static_cast<int>(blocks), blocks, [&](Index b, int thread) {
    const Index begin = b * per_block, count = std::min(per_block, rows - begin);
    if (count <= 0) return;
    auto yb = y.middleRows(begin, count);
    if (bias && accumulate) yb.rowwise() += Eigen::Map<const RowVector<Scalar>>(bias, out);
    if (bias && !accumulate) yb.rowwise() = Eigen::Map<const RowVector<Scalar>>(bias, out);
    const bool add = accumulate || bias != nullptr;
    const Scalar* xb = x.data() + begin * x.outerStride();
#ifdef MHA_BLAS_CBLAS
    (void)buffers_of;
    (void)thread;
    blas_gemm_xwt(count, out, in, xb, x.outerStride(), w.weight, w.stride, yb.data(), y.outerStride(), add);
#else
    PackBuffers<Scalar>& buffers = buffers_of(thread);
    buffers.reserve(count, out, in, false);
    gemm_packed_b(count, xb, x.outerStride(), w.packed, Scalar(1), yb.data(), y.outerStride(), add, buffers);
#endif
  });
}

/// linear_rows_with on the per-thread buffers of a forward pass's workspace: allocation-free once
/// the workspace has seen the shape.
template <class Scalar, class X, class Y>
void linear_rows(const X& x, const WeightSlice<Scalar>& w, const Scalar* bias, Y&& y, int threads,
                 ScratchPool<Scalar>& pool, bool accumulate = false) {
  const Index blocks = linear_row_blocks(x.rows(), threads);
  pool.reserve_pack(static_cast<int>(blocks), (x.rows() + blocks - 1) / blocks, w.out, w.in);
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
