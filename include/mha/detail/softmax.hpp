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

#include <algorithm>
#include <cmath>
#include <limits>

#include <Eigen/Core>

#include "../types.hpp"

#include "packet_warnings_off.hpp"

namespace mha {
namespace detail {

/// max(a, b) that returns NaN when either is NaN.
template <class Scalar>
Scalar max_propagate_nan(Scalar a, Scalar b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<Scalar>::quiet_NaN();
  return a < b ? b : a;
}

/// Maximum of `row [n]` (contiguous; -inf when n = 0); NaN if any entry is NaN. Packets: a
/// plain lane-wise max (vmaxps, which may drop a NaN) and, beside it, a mask of the lanes that
/// were never NaN (x == x), checked once at the end. Eigen's `maxCoeff<PropagateNaN>()` reduces
/// lane by lane: in an experiment folding 16 keys at a time it drew 6% of a decode step.
template <class Scalar>
Scalar row_max_nan(const Scalar* row, Index n) {
  using namespace Eigen::internal;
  using Packet = typename packet_traits<Scalar>::type;
  constexpr Index P = unpacket_traits<Packet>::size;
  Scalar max = -std::numeric_limits<Scalar>::infinity();
  Index j = 0;
  if constexpr (P > 1) {
    if (n >= P) {
      Packet m = ploadu<Packet>(row);
      Packet ordered = pcmp_eq(m, m);  // lanes with no NaN so far
      for (j = P; j + P <= n; j += P) {
        const Packet x = ploadu<Packet>(row + j);
        m = pmax(m, x);
        ordered = pand(ordered, pcmp_eq(x, x));
      }
      if (predux_any(pandnot(ptrue(m), ordered))) return std::numeric_limits<Scalar>::quiet_NaN();
      max = predux_max(m);
    }
  }
  for (; j < n; ++j) max = max_propagate_nan(max, row[j]);
  return max;
}

/// Replaces `row [n]` (contiguous) by the weights `exp(row - max)`, exactly 0 where `row` is -inf,
/// and returns their sum: the exponentiation, the flush and the row sum in one vectorised pass.
///
/// Eigen's vectorised exp clamps its argument, so exp(-inf) comes out as a subnormal (~3e-39 in
/// float, ~1e-309 in double) rather than 0, and a blocked key must weigh exactly 0: results below
/// the smallest normal number are flushed to zero (a NaN fails the comparison and stays NaN). The
/// tail of the row goes through the same packet exp (padded with -inf, which weighs 0), so a
/// weight never depends on where its key falls in a tile. The sum adds packets in order, then
/// their lanes (predux): a fixed order given n.
///
/// One pass instead of three (Eigen's `.exp()`, a flush loop, `.sum()`): the softmax's share of
/// the attention core's perf samples (L = S = 2048, d = 64, one thread) went from 15.1% to 14.0%.
template <class Scalar>
Scalar exp_shifted_sum(Scalar* row, Index n, Scalar max) {
  using namespace Eigen::internal;
  using Packet = typename packet_traits<Scalar>::type;
  constexpr Index P = unpacket_traits<Packet>::size;
  const Scalar smallest_normal = std::numeric_limits<Scalar>::min();
  if constexpr (P == 1 || !packet_traits<Scalar>::HasExp) {
    Scalar sum = 0;
    for (Index j = 0; j < n; ++j) {
      const Scalar w = std::exp(row[j] - max);
      row[j] = w < smallest_normal ? Scalar(0) : w;
      sum += row[j];
    }
    return sum;
  } else {
    const Packet shift = pset1<Packet>(max), tiny = pset1<Packet>(smallest_normal);
    auto weights = [&](const Packet& x) {
      const Packet w = pexp(psub(x, shift));
      return pandnot(w, pcmp_lt(w, tiny));  // w < tiny: +0; NaN compares false and stays
    };
    Packet sum = pset1<Packet>(Scalar(0));
    Index j = 0;
    for (; j + P <= n; j += P) {
      const Packet w = weights(ploadu<Packet>(row + j));
      pstoreu(row + j, w);
      sum = padd(sum, w);
    }
    if (j < n) {
      EIGEN_ALIGN_MAX Scalar tail[P];
      for (Index t = 0; t < P; ++t) tail[t] = j + t < n ? row[j + t] : -std::numeric_limits<Scalar>::infinity();
      const Packet w = weights(pload<Packet>(tail));
      pstore(tail, w);
      std::copy_n(tail, n - j, row + j);
      sum = padd(sum, w);  // the padding weighs exactly 0
    }
    return predux(sum);
  }
}

/// Softmax of one row in place under the rules above; `any_allowed()` tells, for a row of -inf
/// scores only, whether some key was allowed (NaN) or none (zeros).
template <class RowExpr, class AnyAllowed>
void softmax_row_inplace(RowExpr&& row, AnyAllowed&& any_allowed) {
  using Scalar = typename std::decay_t<RowExpr>::Scalar;
  static_assert(std::decay_t<RowExpr>::InnerStrideAtCompileTime == 1, "a contiguous row");
  const Scalar max = row_max_nan(row.data(), row.size());
  if (max == -std::numeric_limits<Scalar>::infinity()) {
    if (any_allowed())
      row.setConstant(std::numeric_limits<Scalar>::quiet_NaN());
    else
      row.setZero();
    return;
  }
  // max = +inf gives NaN (inf - inf), as it should.
  row /= exp_shifted_sum(row.data(), row.size(), max);
}

}  // namespace detail
}  // namespace mha

#include "packet_warnings_restore.hpp"
