#pragma once
// The unfused attention path: for one (batch entry, head), materialise the [L, S'] scores,
// softmax them, multiply by V. Simple and exact; used when the caller wants the attention weights
// and as the reference the tiled kernel is tested against. Also the exact one-row path that
// every kernel falls back to when a fast output row comes out non-finite.

#include <cmath>
#include <limits>
#include <type_traits>

#include "attention_problem.hpp"
#include "gemm.hpp"
#include "softmax.hpp"

namespace mha {
namespace detail {

/// Score of query i (its scaled copy `qs [d]`) against key j of problem head h; keys S and
/// S + 1 are the extra bias_k / zero-attention columns. The same rules as the fast kernels
/// (finish_scores), one key at a time.
template <class Scalar, class KV>
Scalar exact_score(const AttentionProblem<Scalar, KV>& p, Index n, Index h, Index i, Index j, const Scalar* qs) {
  const Index d = p.head_dim;
  Scalar s = 0;
  if (j < p.k_len) {
    const KV* k = p.k.row(n, p.kv_head(h), j);
    for (Index c = 0; c < d; ++c) s += qs[c] * to_scalar<Scalar>(k[c]);
    finish_scores(p, n, h, i, j, 1, &s);
  } else if (j == p.k_len && p.bias_k) {
    for (Index c = 0; c < d; ++c) s += qs[c] * p.bias_k[h * d + c];
  }
  return s;  // the zero-attention key scores 0
}

/// Output row of query i of head h computed one key at a time, where a key of weight 0 is never
/// read (so a NaN or Inf in its value cannot leak in). `qs` is `[d]` scratch, `out` `[dv]`.
/// The fast kernels call this for the rare rows whose result is not finite, to tell "a value of
/// a zero-weight key was NaN" (0 * NaN in a product) from a row that really is NaN.
template <class Scalar, class KV>
void attend_row_exact(const AttentionProblem<Scalar, KV>& p, Index n, Index h, Index i, Scalar* qs, Scalar* out) {
  const Index d = p.head_dim, dv = p.v_dim, keys = p.total_keys();
  const Scalar neg_inf = -std::numeric_limits<Scalar>::infinity();
  const Scalar* q = p.q.row(n, h, i);
  for (Index c = 0; c < d; ++c) qs[c] = q[c] * p.scale;
  Scalar max = neg_inf;
  for (Index j = 0; j < keys; ++j) max = max_propagate_nan(max, exact_score(p, n, h, i, j, qs));
  for (Index c = 0; c < dv; ++c) out[c] = 0;
  if (max == neg_inf && !p.any_key_allowed(n, h, i)) return;  // no key allowed
  if (!std::isfinite(max)) {  // a NaN or +inf score, or only -inf scores of allowed keys
    for (Index c = 0; c < dv; ++c) out[c] = std::numeric_limits<Scalar>::quiet_NaN();
    return;
  }
  Scalar sum = 0;
  for (Index j = 0; j < keys; ++j) {
    Scalar w = std::exp(exact_score(p, n, h, i, j, qs) - max);
    if (w < std::numeric_limits<Scalar>::min()) continue;  // flushed to 0 as in exp_shifted_sum
    sum += w;
    if (j < p.k_len) {
      const KV* v = p.v.row(n, p.kv_head(h), j);
      for (Index c = 0; c < dv; ++c) out[c] += w * to_scalar<Scalar>(v[c]);
    } else if (j == p.k_len && p.bias_v) {
      for (Index c = 0; c < dv; ++c) out[c] += w * p.bias_v[h * dv + c];
    }
  }
  for (Index c = 0; c < dv; ++c) out[c] /= sum;
}

/// Attention of head h of batch entry n: writes the head's context block and leaves the softmax
/// probabilities `[L, S']` in `probs` (resized; allocates only when the shape changes). `qs` is
/// scratch for the scaled queries `[L, d]` (resized likewise).
template <class Scalar>
void attend_head_reference(const AttentionProblem<Scalar>& p, Index n, Index h, Matrix<Scalar>& probs,
                           Matrix<Scalar>& qs, GemmBuffers<Scalar>& gemm) {
  const Index L = p.q_len, S = p.k_len, d = p.head_dim, dv = p.v_dim;
  const Scalar* k = p.k.row(n, p.kv_head(h), 0);  // [S, d], rows k.row_stride apart
  const Scalar* v = p.v.row(n, p.kv_head(h), 0);  // [S, dv]
  Scalar* ctx = p.ctx.row(n, h, 0);               // [L, dv]

  // Scale q, not the product: q k may overflow where (scale q) k does not.
  qs.resize(L, d);
  for (Index i = 0; i < L; ++i)
    qs.row(i) = Eigen::Map<const RowVector<Scalar>>(p.q.row(n, h, i), d) * p.scale;
  probs.resize(L, p.total_keys());
  probs.leftCols(S).setZero();
  gemm_accumulate<false>(L, S, d, qs.data(), d, k, p.k.row_stride, probs.data(), probs.cols(), Scalar(1), gemm);
  Index col = S;
  if (p.bias_k) probs.col(col++).noalias() = qs * Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>>(p.bias_k + h * d, d);
  if (p.zero_attn) probs.col(col++).setZero();
  for (Index i = 0; i < L; ++i) {
    finish_scores(p, n, h, i, 0, S, probs.row(i).data());
    softmax_row_inplace(probs.row(i), [&] { return p.any_key_allowed(n, h, i); });
  }

  Eigen::Map<Matrix<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>> out(ctx, L, dv, Eigen::OuterStride<>(p.ctx.row_stride));
  out.setZero();
  gemm_accumulate<true>(L, dv, S, probs.data(), probs.cols(), v, p.v.row_stride, ctx, p.ctx.row_stride, Scalar(1),
                        gemm);  // context = P V
  if (p.bias_v) out.noalias() += probs.col(S) * Eigen::Map<const RowVector<Scalar>>(p.bias_v + h * dv, dv);
  for (Index i = 0; i < L; ++i)
    if (!out.row(i).allFinite() && probs.row(i).allFinite()) attend_row_exact(p, n, h, i, qs.row(i).data(), &out(i, 0));
}

}  // namespace detail
}  // namespace mha
