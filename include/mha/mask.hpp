#pragma once
/// \file mask.hpp
/// Attention masks whose polarity cannot be misread.
///
/// Every mask is stored *additively*: a value added to the scaled score `q.k * scale` before the
/// softmax, `0` where attention is allowed and `-inf` where it is blocked (finite values bias the
/// score). Boolean masks only exist at construction, through named constructors that say which
/// way round they are, because the two PyTorch APIs disagree:
///
/// | constructor                   | `true` means | PyTorch equivalent                               |
/// |-------------------------------|--------------|--------------------------------------------------|
/// | `AttentionMask::blocked(m)`   | blocked      | `nn.MultiheadAttention(attn_mask=m)` (bool)      |
/// | `AttentionMask::allowed(m)`   | allowed      | `F.scaled_dot_product_attention(attn_mask=m)`    |
/// | `AttentionMask::additive(m)`  | (float)      | a float `attn_mask` of either                    |
/// | `AttentionMask::causal()`     |              | see below                                        |
/// | `KeyPaddingMask::padding(m)`  | padding      | `key_padding_mask=m` (bool)                      |
/// | `KeyPaddingMask::additive(m)` | (float)      | a float `key_padding_mask`                       |
///
/// Shapes. A dense attention mask is `[L, S]`, shared by every head and batch entry, or one
/// `[L, S]` slice per head and batch entry, stacked as `[N * H * L, S]` (PyTorch's `[N*H, L, S]`,
/// slice `n * H + h`; for one sequence N = 1, so `[H * L, S]`). A key-padding mask is `[N, S]`.
///
/// Causal masks are aligned to the *end*: query i (of L) may attend key j (of S) iff
/// `j <= i + (S - L)`. With L = S this is the usual lower triangle; with L < S the last query sees
/// every key, which is what incremental decoding with a key/value cache needs. Note that PyTorch's
/// `F.scaled_dot_product_attention(is_causal=True)` aligns to the top-left instead (`j <= i`) when
/// L != S; build that with `AttentionMask::allowed` if you need it.
///
/// Masks combine: causal, a dense mask and a key-padding mask all apply together (their additive
/// values add up). A query row that ends up with no allowed key gets all-zero attention weights.

#include <cmath>
#include <limits>
#include <string>

#include "types.hpp"

namespace mha {

namespace detail {

// Rejects values that would turn a softmax into NaN: NaN itself and +inf.
template <class Scalar>
void check_additive_values(const char* what, const ConstMatrixRef<Scalar>& m) {
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j) {
      const Scalar x = m(i, j);
      if (std::isnan(x) || x == std::numeric_limits<Scalar>::infinity())
        MHA_THROW(argument_error, std::string("[mha.argument] ") + what + ": value at " +
                                      shape_string(i, j) + " is " + (std::isnan(x) ? "NaN" : "+inf") +
                                      "; additive masks take finite values or -inf");
    }
}

template <class Scalar>
Matrix<Scalar> additive_from_bool(const Eigen::Ref<const BoolMatrix>& m, bool true_blocks) {
  const Scalar blocked = -std::numeric_limits<Scalar>::infinity();
  Matrix<Scalar> out(m.rows(), m.cols());
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j) out(i, j) = (m(i, j) == true_blocks) ? blocked : Scalar(0);
  return out;
}

}  // namespace detail

/// An attention mask: optionally causal, optionally a dense additive matrix (see file comment).
/// A default-constructed mask allows everything.
template <class Scalar_>
class AttentionMask {
 public:
  /// Element type of the additive values, `float` or `double`.
  using Scalar = Scalar_;

  AttentionMask() = default;

  /// End-aligned causal mask: query i may attend key j iff `j <= i + (S - L)`.
  static AttentionMask causal() {
    AttentionMask m;
    m.m_causal = true;
    return m;
  }

  /// Boolean mask where `true` means the query may NOT attend the key (nn.MultiheadAttention).
  /// `m` is `[slices * L, S]` with `slices` = 1 (shared) or N * H (per head and batch entry).
  /// Throws shape_error when `m` is empty or its rows do not split into `slices`.
  static AttentionMask blocked(const Eigen::Ref<const BoolMatrix>& m, Index slices = 1) {
    return from_values(detail::additive_from_bool<Scalar>(m, true), slices, "blocked mask");
  }

  /// Boolean mask where `true` means the query MAY attend the key (F.scaled_dot_product_attention).
  /// Shapes and errors as for blocked().
  static AttentionMask allowed(const Eigen::Ref<const BoolMatrix>& m, Index slices = 1) {
    return from_values(detail::additive_from_bool<Scalar>(m, false), slices, "allowed mask");
  }

  /// Additive mask added to the scaled scores: finite values or -inf (NaN and +inf are rejected).
  /// `m` is `[slices * L, S]` as for blocked(). Throws argument_error on a NaN or +inf value,
  /// shape_error on the shape.
  static AttentionMask additive(const ConstMatrixRef<Scalar>& m, Index slices = 1) {
    detail::check_additive_values<Scalar>("additive mask", m);
    return from_values(Matrix<Scalar>(m), slices, "additive mask");
  }

  /// This mask, also causal: `AttentionMask::blocked(m).and_causal()`.
  AttentionMask and_causal() const {
    AttentionMask m = *this;
    m.m_causal = true;
    return m;
  }

  /// Whether the causal rule applies (on top of the dense values, if any).
  bool is_causal() const { return m_causal; }
  /// Whether there is a dense part (values()).
  bool has_values() const { return m_values.size() > 0; }
  /// Number of `[L, S]` slices in the dense part: 1, or N * H; 0 without dense part.
  Index slices() const { return m_slices; }
  /// L and S of the dense part (0 without one).
  Index query_len() const { return m_slices > 0 ? m_values.rows() / m_slices : 0; }
  /// S of the dense part (0 without one).
  Index key_len() const { return m_values.cols(); }
  /// The dense additive values, `[slices * L, S]`.
  const Matrix<Scalar>& values() const { return m_values; }

 private:
  static AttentionMask from_values(Matrix<Scalar> values, Index slices, const char* what) {
    if (slices <= 0 || values.rows() == 0 || values.cols() == 0 || values.rows() % slices != 0)
      MHA_THROW(shape_error, std::string("[mha.shape] ") + what + ": expected [slices * L, S] with " +
                                 std::to_string(slices) + " slice(s) and L, S > 0, got " +
                                 detail::shape_string(values.rows(), values.cols()));
    AttentionMask m;
    m.m_values = std::move(values);
    m.m_slices = slices;
    return m;
  }

  Matrix<Scalar> m_values;  // [slices * L, S], additive; empty when there is no dense part
  Index m_slices = 0;
  bool m_causal = false;
};

/// A key-padding mask `[N, S]`: which keys of each batch entry are padding (blocked for every
/// query and head). For one sequence N = 1.
template <class Scalar_>
class KeyPaddingMask {
 public:
  /// Element type of the additive values, `float` or `double`.
  using Scalar = Scalar_;

  KeyPaddingMask() = default;

  /// `m [N, S]`, `true` = padding (PyTorch's `key_padding_mask` polarity). Throws shape_error
  /// when `m` is empty.
  static KeyPaddingMask padding(const Eigen::Ref<const BoolMatrix>& m) {
    return from_values(detail::additive_from_bool<Scalar>(m, true));
  }

  /// `m [N, S]` added to the scores of key j in every row of batch entry n. Throws argument_error
  /// on a NaN or +inf value, shape_error when `m` is empty.
  static KeyPaddingMask additive(const ConstMatrixRef<Scalar>& m) {
    detail::check_additive_values<Scalar>("additive key padding mask", m);
    return from_values(Matrix<Scalar>(m));
  }

  /// Whether the mask is absent (default-constructed): nothing is blocked.
  bool empty() const { return m_values.size() == 0; }
  /// N, the number of batch entries (0 when empty).
  Index batch() const { return m_values.rows(); }
  /// S, the number of keys (0 when empty).
  Index key_len() const { return m_values.cols(); }
  /// `[N, S]`, additive.
  const Matrix<Scalar>& values() const { return m_values; }

 private:
  static KeyPaddingMask from_values(Matrix<Scalar> values) {
    if (values.rows() == 0 || values.cols() == 0)
      MHA_THROW(shape_error, "[mha.shape] key padding mask: expected [N, S] with N, S > 0, got " +
                                 detail::shape_string(values.rows(), values.cols()));
    KeyPaddingMask m;
    m.m_values = std::move(values);
    return m;
  }

  Matrix<Scalar> m_values;  // [N, S], additive
};

}  // namespace mha
