#pragma once
// y = x W^T + b over many rows, split into row blocks across threads: every thread multiplies its
// rows by the whole (shared, read-only) weight, which keeps each product large and the weight hot
// in the shared cache.

#include <algorithm>

#include "../parallel.hpp"
#include "../types.hpp"

namespace mha {
namespace detail {

/// `y [T, out] = x [T, in] * w^T + bias` (bias `[out]` or empty), on `threads` threads.
template <class Scalar, class X, class W, class Y>
void linear_rows(const X& x, const W& w, const RowVector<Scalar>* bias, Y& y, int threads) {
  MHA_ASSERT(x.rows() == y.rows() && x.cols() == w.cols() && y.cols() == w.rows());
  const Index rows = x.rows();
  // Below ~64 rows a block is too thin for the GEMM kernel to pay for a thread.
  const Index blocks = std::max<Index>(1, std::min<Index>(threads, rows / 64));
  const Index per_block = (rows + blocks - 1) / blocks;
  parallel_for(static_cast<int>(blocks), blocks, [&](Index b, int) {
    const Index begin = b * per_block, count = std::min(per_block, rows - begin);
    if (count <= 0) return;
    y.middleRows(begin, count).noalias() = x.middleRows(begin, count) * w.transpose();
    if (bias && bias->size() > 0) y.middleRows(begin, count).rowwise() += *bias;
  });
}

}  // namespace detail
}  // namespace mha
