#pragma once
// The unfused attention path: for one (batch entry, head), materialise the [L, S'] scores,
// softmax them, multiply by V. Simple and exact; used when the caller wants the attention weights
// and as the reference the tiled kernel is tested against.

#include <limits>

#include "attention_problem.hpp"
#include "gemm.hpp"

namespace mha {
namespace detail {

/// Attention of head h of batch entry n: writes the head's context block and leaves the softmax
/// probabilities `[L, S']` in `probs` (resized; allocates only when the shape changes).
template <class Scalar>
void attend_head_reference(const AttentionProblem<Scalar>& p, Index n, Index h, Matrix<Scalar>& probs,
                           GemmBuffers<Scalar>& gemm) {
  const Index L = p.q_len, S = p.k_len, d = p.head_dim;
  const auto q = p.q_head(n, h);  // [L, d]
  const auto k = p.k_head(n, h);  // [S, d]
  const auto v = p.v_head(n, h);  // [S, dv]
  auto ctx = p.ctx_head(n, h);    // [L, dv]
  const HeadMask<Scalar> mask = p.head_mask(n, h);
  const Scalar neg_inf = -std::numeric_limits<Scalar>::infinity();

  probs.resize(L, p.total_keys());
  probs.leftCols(S).setZero();
  gemm_accumulate<false>(L, S, d, q.data(), p.q_stride, k.data(), p.k_stride, probs.data(), probs.cols(), p.scale,
                         gemm);  // scores = scale * Q K^T
  Index col = S;
  if (p.bias_k) {
    const Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>> bk(p.bias_k + h * d, d);
    probs.col(col++).noalias() = (q * bk) * p.scale;
  }
  if (p.zero_attn) probs.col(col++).setZero();

  for (Index i = 0; i < L; ++i) {
    if (mask.has_additive())
      for (Index j = 0; j < S; ++j) probs(i, j) += mask.additive(i, j);
    for (Index j = mask.causal_end(i, S); j < S; ++j) probs(i, j) = neg_inf;
    softmax_row_inplace(probs.row(i));
  }

  ctx.setZero();
  gemm_accumulate<true>(L, p.v_dim, S, probs.data(), probs.cols(), v.data(), p.v_stride, ctx.data(), p.ctx_stride,
                        Scalar(1), gemm);  // context = P V
  if (p.bias_v) {
    const Eigen::Map<const RowVector<Scalar>> bv(p.bias_v + h * p.v_dim, p.v_dim);
    ctx.noalias() += probs.col(S) * bv;
  }
}

}  // namespace detail
}  // namespace mha
