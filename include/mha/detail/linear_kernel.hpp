#pragma once
// y = x W^T + b over many rows, split into row blocks across threads: every thread multiplies its
// rows by the whole (shared, read-only) weight, which keeps each product large and the weight hot
// in the shared cache.

#include <algorithm>

#include "../parallel.hpp"
#include "../types.hpp"
#include "scratch.hpp"

namespace mha {
namespace detail {

/// `y [T, out] = x [T, in] * w^T + bias` on `threads` threads, or `y += x w^T + bias` when
/// `accumulate`. x, w and y are row-major with unit column stride (any row stride); `bias` points
/// at `[out]` values, or is null.
template <class Scalar, class X, class W, class Y>
void linear_rows(const X& x, const W& w, const Scalar* bias, Y&& y, int threads, ScratchPool<Scalar>& pool,
                 bool accumulate = false) {
  MHA_ASSERT(x.rows() == y.rows() && x.cols() == w.cols() && y.cols() == w.rows());
  const Index rows = x.rows(), out = w.rows(), in = w.cols();
  // Below ~64 rows a block is too thin for the GEMM kernel to pay for a thread.
  const Index blocks = std::max<Index>(1, std::min<Index>(threads, rows / 64));
  const Index per_block = (rows + blocks - 1) / blocks;
  pool.reserve_gemm(static_cast<int>(blocks), per_block, out, in);
  parallel_for(static_cast<int>(blocks), blocks, [&](Index b, int thread) {
    const Index begin = b * per_block, count = std::min(per_block, rows - begin);
    if (count <= 0) return;
    auto yb = y.middleRows(begin, count);
    if (!accumulate && !bias) yb.setZero();
    if (bias && accumulate) yb.rowwise() += Eigen::Map<const RowVector<Scalar>>(bias, out);
    if (bias && !accumulate) yb.rowwise() = Eigen::Map<const RowVector<Scalar>>(bias, out);
    gemm_accumulate<false>(count, out, in, x.data() + begin * x.outerStride(), x.outerStride(), w.data(),
                           w.outerStride(), yb.data(), y.outerStride(), Scalar(1), pool[thread].gemm);
  });
}

}  // namespace detail
}  // namespace mha
