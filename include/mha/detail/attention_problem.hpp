#pragma once
// The description of one attention call that every kernel reads: where Q, K, V and the context
// live, the extra bias_kv / zero-attention key columns, and the masks, per (batch entry, head).

#include <algorithm>
#include <limits>
#include <type_traits>

#include "../types.hpp"

namespace mha {
namespace detail {

/// The additive mask of one (batch entry, head): dense slice + key padding + causal horizon.
/// It covers the S real keys only; extra key columns (bias_kv, zero attention) are never masked.
template <class Scalar>
struct HeadMask {
  const Scalar* dense = nullptr;        // [L, S] slice, rows dense_stride apart, or null
  Index dense_stride = 0;
  const Scalar* key_padding = nullptr;  // [S], or null
  bool causal = false;
  Index causal_offset = 0;              // S - L: query i sees keys j <= i + causal_offset

  bool has_additive() const { return dense != nullptr || key_padding != nullptr; }

  /// One past the last key query i may attend under the causal rule, clamped to [0, S].
  Index causal_end(Index i, Index key_len) const {
    if (!causal) return key_len;
    return std::max<Index>(0, std::min<Index>(key_len, i + causal_offset + 1));
  }

  /// The additive value for (i, j), j < S, ignoring causality.
  Scalar additive(Index i, Index j) const {
    Scalar m = 0;
    if (dense) m += dense[i * dense_stride + j];
    if (key_padding) m += key_padding[j];
    return m;
  }
};

/// All (batch, head) problems of one multi-head attention call. Row `n * L + i` of Q holds query
/// i of batch entry n; head h is columns `[h * d, (h + 1) * d)`; likewise K, V (rows `n * S + j`)
/// and the context output.
template <class Scalar>
struct AttentionProblem {
  Index batch = 0;
  Index heads = 0;        // heads in this problem (a group of the layer's heads)
  Index head_offset = 0;  // the layer's index of this problem's head 0
  Index mask_heads = 1;   // the layer's head count H, for per-head mask slices n * H + h
  Index q_len = 0;     // L
  Index k_len = 0;     // S, real keys only
  Index head_dim = 0;  // d, the width of a query/key head
  Index v_dim = 0;     // dv, the width of a value/context head (d in multi-head attention)
  Scalar scale = 0;

  const Scalar* q = nullptr;  // [N * L, H * d], rows q_stride apart
  Index q_stride = 0;
  const Scalar* k = nullptr;  // [N * S, H * d]
  Index k_stride = 0;
  const Scalar* v = nullptr;  // [N * S, H * dv]
  Index v_stride = 0;
  Scalar* ctx = nullptr;      // [N * L, H * dv], output
  Index ctx_stride = 0;

  const Scalar* bias_k = nullptr;  // [H * d] extra key appended after the S keys, or null
  const Scalar* bias_v = nullptr;  // [H * dv] its value
  bool zero_attn = false;          // one more extra key of zeros with a zero value

  const Scalar* mask = nullptr;    // [slices * L, S] additive, or null
  Index mask_slices = 0;           // 1 (shared) or N * H
  const Scalar* key_padding = nullptr;  // [N, S] additive, or null
  bool causal = false;

  Index extra_keys() const { return (bias_k ? 1 : 0) + (zero_attn ? 1 : 0); }
  /// S' = S + extra keys: the width of the attention weights.
  Index total_keys() const { return k_len + extra_keys(); }

  HeadMask<Scalar> head_mask(Index n, Index h) const {
    HeadMask<Scalar> m;
    if (mask) {
      const Index slice = mask_slices == 1 ? 0 : n * mask_heads + head_offset + h;
      m.dense = mask + slice * q_len * k_len;
      m.dense_stride = k_len;
    }
    if (key_padding) m.key_padding = key_padding + n * k_len;
    m.causal = causal;
    m.causal_offset = k_len - q_len;
    return m;
  }

  ConstStridedMap<Scalar> q_head(Index n, Index h) const {
    return ConstStridedMap<Scalar>(q + n * q_len * q_stride + h * head_dim, q_len, head_dim,
                                   Eigen::OuterStride<>(q_stride));
  }
  ConstStridedMap<Scalar> k_head(Index n, Index h) const {
    return ConstStridedMap<Scalar>(k + n * k_len * k_stride + h * head_dim, k_len, head_dim,
                                   Eigen::OuterStride<>(k_stride));
  }
  ConstStridedMap<Scalar> v_head(Index n, Index h) const {
    return ConstStridedMap<Scalar>(v + n * k_len * v_stride + h * v_dim, k_len, v_dim,
                                   Eigen::OuterStride<>(v_stride));
  }
  Eigen::Map<Matrix<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>> ctx_head(Index n, Index h) const {
    return Eigen::Map<Matrix<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>>(
        ctx + n * q_len * ctx_stride + h * v_dim, q_len, v_dim, Eigen::OuterStride<>(ctx_stride));
  }
};

/// `exp(x - max)` for a row of scores, with exactly 0 where x is -inf.
///
/// Eigen's vectorised exp clamps its argument, so exp(-inf) comes out as a subnormal (~3e-39 in
/// float, ~1e-309 in double) rather than 0, and a blocked key must weigh exactly 0. Results below
/// the smallest normal number are therefore flushed to zero in a second, cheap pass: a
/// coefficient-wise select would do it in one pass but is not vectorised in Eigen 3.4, and turns
/// the exp, the hottest operation after the products, into a scalar libm call.
template <class RowExpr, class Scalar>
void exp_shifted_inplace(RowExpr&& row, Scalar max) {
  row = (row.array() - max).exp();
  const Scalar smallest_normal = std::numeric_limits<Scalar>::min();
  Scalar* data = row.data();
  for (Index j = 0; j < row.size(); ++j) data[j] = data[j] < smallest_normal ? Scalar(0) : data[j];
}

/// Softmax of one row in place, max subtracted first. A row whose entries are all -inf (no key
/// allowed) becomes all zeros rather than NaN.
template <class RowExpr>
void softmax_row_inplace(RowExpr&& row) {
  using Scalar = typename std::decay_t<RowExpr>::Scalar;
  const Scalar max = row.maxCoeff();
  if (max == -std::numeric_limits<Scalar>::infinity()) {
    row.setZero();
    return;
  }
  exp_shifted_inplace(row, max);
  row /= row.sum();
}

}  // namespace detail
}  // namespace mha
