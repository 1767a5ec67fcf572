#pragma once
/// \file scaled_dot_product_attention.hpp
/// Scaled dot-product attention of one head: `softmax(Q K^T * scale + mask) V`.

#include <cmath>
#include <optional>
#include <string>

#include "detail/reference_attention.hpp"
#include "mask.hpp"
#include "types.hpp"

namespace mha {

/// Attention of one head.
///
/// - `q [L, d]`, `k [S, d]`, `v [S, dv]` -> returns `[L, dv]`.
/// - `mask`: causal (end-aligned) and/or a dense `[L, S]` mask with one slice (see mask.hpp).
/// - `scale` defaults to `1 / sqrt(d)`.
/// - `weights`, when not null, receives the softmax probabilities `[L, S]`; rows sum to 1, except
///   a row whose keys are all masked, which is all zeros (PyTorch gives NaN there), as is its
///   output row.
///
/// Cost: `4 * L * S * d` FLOPs (for dv = d) and an `[L, S]` buffer. Row-major inputs bind without
/// a copy; other layouts are copied once.
template <class DerivedQ, class DerivedK, class DerivedV>
Matrix<typename DerivedQ::Scalar> scaled_dot_product_attention(
    const Eigen::MatrixBase<DerivedQ>& q, const Eigen::MatrixBase<DerivedK>& k,
    const Eigen::MatrixBase<DerivedV>& v,
    const AttentionMask<typename DerivedQ::Scalar>& mask = AttentionMask<typename DerivedQ::Scalar>(),
    std::optional<typename DerivedQ::Scalar> scale = std::nullopt,
    Matrix<typename DerivedQ::Scalar>* weights = nullptr) {
  using Scalar = typename DerivedQ::Scalar;
  static_assert(std::is_same<Scalar, typename DerivedK::Scalar>::value &&
                    std::is_same<Scalar, typename DerivedV::Scalar>::value,
                "q, k and v must have the same scalar type");
  const ConstMatrixRef<Scalar> qr(q.derived()), kr(k.derived()), vr(v.derived());
  if (qr.rows() == 0 || qr.cols() == 0 || kr.rows() == 0 || vr.cols() == 0)
    MHA_THROW(shape_error, "[mha.shape] scaled_dot_product_attention: empty input, q " +
                               detail::shape_string(qr.rows(), qr.cols()) + ", k " +
                               detail::shape_string(kr.rows(), kr.cols()) + ", v " +
                               detail::shape_string(vr.rows(), vr.cols()));
  detail::check_shape("scaled_dot_product_attention key", -1, qr.cols(), kr.rows(), kr.cols());
  detail::check_shape("scaled_dot_product_attention value", kr.rows(), -1, vr.rows(), vr.cols());
  if (mask.has_values()) {
    if (mask.slices() != 1)
      MHA_THROW(shape_error, "[mha.shape] scaled_dot_product_attention mask: expected 1 slice [L, S] = " +
                                 detail::shape_string(qr.rows(), kr.rows()) + ", got " +
                                 std::to_string(mask.slices()) + " slices of " +
                                 detail::shape_string(mask.query_len(), mask.key_len()));
    detail::check_shape("scaled_dot_product_attention mask", qr.rows(), kr.rows(), mask.values().rows(),
                        mask.values().cols());
  }
  const Scalar s = scale ? *scale : Scalar(1) / std::sqrt(Scalar(qr.cols()));
  if (!std::isfinite(s))
    MHA_THROW(argument_error, "[mha.argument] scaled_dot_product_attention: scale must be finite");

  Matrix<Scalar> out(qr.rows(), vr.cols());  // [L, dv]
  detail::AttentionProblem<Scalar> p;
  p.batch = p.heads = 1;
  p.q_len = qr.rows();
  p.k_len = kr.rows();
  p.head_dim = qr.cols();
  p.v_dim = vr.cols();
  p.scale = s;
  p.q = {qr.data(), 0, 0, qr.outerStride()};
  p.k = {kr.data(), 0, 0, kr.outerStride()};
  p.v = {vr.data(), 0, 0, vr.outerStride()};
  p.ctx = {out.data(), 0, 0, out.cols()};
  p.q_pos0 = p.k_len - p.q_len;  // end-aligned causal
  if (mask.has_values()) {
    p.mask = mask.values().data();
    p.mask_slices = 1;
  }
  p.causal = mask.is_causal();

  Matrix<Scalar> probs;  // [L, S]
  Matrix<Scalar> qs;     // [L, d] scaled queries
  detail::GemmBuffers<Scalar> gemm;
  detail::attend_head_reference(p, 0, 0, probs, qs, gemm);
  if (weights) *weights = std::move(probs);
  return out;
}

}  // namespace mha
