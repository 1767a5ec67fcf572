#pragma once
// The softmax rules every attention kernel follows, in one place:
//
// - The row maximum is subtracted first; it propagates NaN (std::max and Eigen's default
//   maxCoeff may drop one, which would turn a NaN row into a plausible one).
// - A score of -inf (a masked key, or a computed -inf) weighs exactly 0, and a key of weight 0
//   contributes nothing to the output, even if its value row holds NaN or Inf.
// - A row in which no key is allowed (every key masked) gets all-zero weights and a zero output
//   (PyTorch gives NaN there). A row whose allowed keys all score -inf (an infinite input, a
//   negative overflow) gets NaN, as in PyTorch: only masks make an empty row.
// - Otherwise IEEE arithmetic decides: a NaN or +inf score (NaN inputs, a product or a mask sum
//   beyond the largest finite Scalar) makes the row's weights and output NaN, never a number.

#include <cmath>
#include <limits>

#include "../types.hpp"

namespace mha {
namespace detail {

/// max(a, b) that returns NaN when either is NaN.
template <class Scalar>
Scalar max_propagate_nan(Scalar a, Scalar b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<Scalar>::quiet_NaN();
  return a < b ? b : a;
}

/// Maximum of a row; NaN if any entry is NaN.
template <class RowExpr>
typename std::decay_t<RowExpr>::Scalar row_max_propagate_nan(const RowExpr& row) {
  return row.template maxCoeff<Eigen::PropagateNaN>();
}

/// `exp(x - max)` for a row of scores, with exactly 0 where x is -inf.
///
/// Eigen's vectorised exp clamps its argument, so exp(-inf) comes out as a subnormal (~3e-39 in
/// float, ~1e-309 in double) rather than 0, and a blocked key must weigh exactly 0. Results below
/// the smallest normal number are therefore flushed to zero in a second, cheap pass (a NaN fails
/// the comparison and stays NaN): a coefficient-wise select would do it in one pass but is not
/// vectorised in Eigen 3.4, and turns the exp, the hottest operation after the products, into a
/// scalar libm call.
template <class RowExpr, class Scalar>
void exp_shifted_inplace(RowExpr&& row, Scalar max) {
  row = (row.array() - max).exp();
  const Scalar smallest_normal = std::numeric_limits<Scalar>::min();
  Scalar* data = row.data();
  for (Index j = 0; j < row.size(); ++j) data[j] = data[j] < smallest_normal ? Scalar(0) : data[j];
}

/// Softmax of one row in place under the rules above; `any_allowed()` tells, for a row of -inf
/// scores only, whether some key was allowed (NaN) or none (zeros).
template <class RowExpr, class AnyAllowed>
void softmax_row_inplace(RowExpr&& row, AnyAllowed&& any_allowed) {
  using Scalar = typename std::decay_t<RowExpr>::Scalar;
  const Scalar max = row_max_propagate_nan(row);
  if (max == -std::numeric_limits<Scalar>::infinity()) {
    if (any_allowed())
      row.setConstant(std::numeric_limits<Scalar>::quiet_NaN());
    else
      row.setZero();
    return;
  }
  exp_shifted_inplace(row, max);  // max = +inf gives NaN (inf - inf), as it should
  row /= row.sum();
}

}  // namespace detail
}  // namespace mha
