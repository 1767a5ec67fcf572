#pragma once
/// \file linear.hpp
/// `Linear`, PyTorch's `nn.Linear`, and `InProjection`, the query/key/value projections of
/// multi-head attention.
///
/// Weight convention (PyTorch's, so a state_dict loads as it is): a layer mapping `in` features
/// to `out` features stores `weight` as `[out, in]` and `bias` as `[out]`, and computes
/// `y = x weight^T + bias` for `x` of shape `[tokens, in]`.

#include <string>
#include <utility>

#include "detail/linear_kernel.hpp"
#include "detail/packed_weight.hpp"
#include "parallel.hpp"
#include "types.hpp"

namespace mha {

/// `y = x W^T + b`, with `W` `[out, in]` and an optional `b` `[out]` (PyTorch `nn.Linear`).
/// Cost: one GEMM, `2 * tokens * in * out` FLOPs, on mha::num_threads() threads.
///
/// Memory: the weight is held twice, as `[out, in]` (what weight() returns) and packed in the
/// micro-kernel's panel layout (detail/pack.hpp), repacked by every setter, so that a forward pass
/// never packs it.
template <class Scalar_>
class Linear {
 public:
  /// Element type, `float` or `double`.
  using Scalar = Scalar_;

  Linear() = default;

  /// A zero-initialised layer `in_features -> out_features`. Throws shape_error unless both
  /// are positive.
  Linear(Index in_features, Index out_features, bool bias = true) {
    if (in_features <= 0 || out_features <= 0)
      MHA_THROW(shape_error, "[mha.shape] Linear: expected positive [out, in], got " +
                                 detail::shape_string(out_features, in_features));
    m_weight = detail::PackedWeight<Scalar>(out_features, in_features);
    if (bias) m_bias = RowVector<Scalar>::Zero(out_features);
    m_has_bias = bias;
  }

  /// `in`, the features of an input row.
  Index in_features() const { return m_weight.in(); }
  /// `out`, the features of an output row.
  Index out_features() const { return m_weight.out(); }
  /// Whether `b` is added.
  bool has_bias() const { return m_has_bias; }

  /// `[out, in]`.
  const Matrix<Scalar>& weight() const { return m_weight.matrix(); }
  /// The weight in both layouts, for mha's kernels (internal).
  detail::WeightSlice<Scalar> weight_panels() const { return m_weight.slice(); }
  /// `[out]`; empty when the layer has no bias.
  const RowVector<Scalar>& bias() const { return m_bias; }

  /// Replaces the weight; `weight` must be `[out, in]` of this layer, else shape_error.
  void set_weight(const ConstMatrixRef<Scalar>& weight) {
    detail::check_shape("Linear weight", out_features(), in_features(), weight.rows(),
                        weight.cols());
    m_weight.assign(weight);
  }

  /// Replaces the bias; `bias` must be `[out]` (else shape_error) and the layer must have one
  /// (else argument_error).
  void set_bias(const ConstRowVectorRef<Scalar>& bias) {
    if (!m_has_bias) MHA_THROW(argument_error, "[mha.argument] Linear: layer was built without bias");
    detail::check_shape("Linear bias", 1, out_features(), 1, bias.size());
    m_bias = bias;
  }

  /// `x [tokens, in] -> [tokens, out]`. Throws shape_error when `x` does not have `in` columns.
  Matrix<Scalar> forward(const ConstMatrixRef<Scalar>& x) const {
    Matrix<Scalar> y(x.rows(), out_features());
    forward(x, y);
    return y;
  }

  /// Writes `x W^T + b` into `y [tokens, out]` (caller memory; no allocation once the calling
  /// thread has run a product this large, whose packing buffers it keeps). Throws shape_error
  /// when `x` is not `[tokens, in]` or `y` not `[tokens, out]`.
  void forward(const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> y) const {
    detail::check_shape("Linear input", -1, in_features(), x.rows(), x.cols());
    detail::check_shape("Linear output", x.rows(), out_features(), y.rows(), y.cols());
    detail::linear_rows_local(x, m_weight.slice(), m_has_bias ? m_bias.data() : nullptr, y, num_threads());
  }

 private:
  detail::PackedWeight<Scalar> m_weight;  // [out, in], and packed
  RowVector<Scalar> m_bias;              // [out], empty without bias
  bool m_has_bias = false;
};

/// The query, key and value projections of multi-head attention, with PyTorch's storage:
/// `W_Q [E, E]`, `W_K [E, kdim]`, `W_V [E, vdim]` and one packed bias `[3E]` (`b_Q, b_K, b_V`).
///
/// When `kdim == vdim == E` the three weights are stored packed, as PyTorch's `in_proj_weight`
/// `[3E, E]` (rows `[0, E)` are W_Q, `[E, 2E)` W_K, `[2E, 3E)` W_V), so that self-attention
/// projects with one GEMM `x in_proj_weight^T -> [tokens, 3E]` instead of three.
///
/// Memory: like Linear, every weight is held twice, as given and packed for the micro-kernel
/// (repacked by every setter; a forward pass never packs a weight).
template <class Scalar_>
class InProjection {
 public:
  /// Element type, `float` or `double`.
  using Scalar = Scalar_;

  InProjection() = default;

  /// A zero-initialised projection; kdim and vdim are the key and value feature counts.
  /// Throws shape_error unless all three are positive.
  InProjection(Index embed_dim, Index kdim, Index vdim, bool bias = true)
      : m_embed_dim(embed_dim), m_kdim(kdim), m_vdim(vdim), m_has_bias(bias) {
    if (embed_dim <= 0 || kdim <= 0 || vdim <= 0)
      MHA_THROW(shape_error, "[mha.shape] InProjection: expected positive [embed_dim, kdim, vdim], got " +
                                 detail::shape_string(embed_dim, kdim, vdim));
    if (packed()) {
      m_packed = detail::PackedWeight<Scalar>(3 * embed_dim, embed_dim);
    } else {
      m_q = detail::PackedWeight<Scalar>(embed_dim, embed_dim);
      m_k = detail::PackedWeight<Scalar>(embed_dim, kdim);
      m_v = detail::PackedWeight<Scalar>(embed_dim, vdim);
    }
    if (bias) m_bias = RowVector<Scalar>::Zero(3 * embed_dim);
  }

  /// E, the features of the query and of every projected row.
  Index embed_dim() const { return m_embed_dim; }
  /// Features of a key row (E for self-attention).
  Index kdim() const { return m_kdim; }
  /// Features of a value row (E for self-attention).
  Index vdim() const { return m_vdim; }
  /// Whether the packed bias `[3E]` is added.
  bool has_bias() const { return m_has_bias; }
  /// True when the weights are held as one `[3E, E]` matrix (kdim == vdim == E).
  bool packed() const { return m_kdim == m_embed_dim && m_vdim == m_embed_dim; }

  /// `[3E, E]`, the packed weight; only when packed().
  const Matrix<Scalar>& in_proj_weight() const {
    require_packed("in_proj_weight");
    return m_packed.matrix();
  }
  ///@{
  /// W_Q `[E, E]`, W_K `[E, kdim]`, W_V `[E, vdim]`: views into the packed weight when packed().
  /// (Explicit branches, not `?:`: a conditional between a block and a matrix would build a
  /// temporary matrix and return a view of it.)
  ConstMatrixRef<Scalar> q_weight() const { return weight_of(0); }
  ConstMatrixRef<Scalar> k_weight() const { return weight_of(1); }
  ConstMatrixRef<Scalar> v_weight() const { return weight_of(2); }
  ///@}
  ///@{
  /// The weights in both layouts, for mha's kernels (internal): the packed `[3E, E]` (only when
  /// packed()), and W_Q, W_K, W_V (slices of it when packed()).
  detail::WeightSlice<Scalar> in_proj_weight_panels() const {
    require_packed("in_proj_weight");
    return m_packed.slice();
  }
  detail::WeightSlice<Scalar> q_weight_panels() const { return panels_of(0); }
  detail::WeightSlice<Scalar> k_weight_panels() const { return panels_of(1); }
  detail::WeightSlice<Scalar> v_weight_panels() const { return panels_of(2); }
  ///@}
  /// `[3E]`, `b_Q, b_K, b_V`; empty without bias.
  const RowVector<Scalar>& in_proj_bias() const { return m_bias; }

  /// Replaces the packed weight with `w [3E, E]` (PyTorch's `in_proj_weight`). Throws
  /// argument_error unless packed(), shape_error on another shape.
  void set_in_proj_weight(const ConstMatrixRef<Scalar>& w) {
    require_packed("in_proj_weight");
    detail::check_shape("in_proj_weight", 3 * m_embed_dim, m_embed_dim, w.rows(), w.cols());
    m_packed.assign(w);
  }
  ///@{
  /// Replaces W_Q with `w [E, E]`, W_K with `w [E, kdim]`, W_V with `w [E, vdim]` (PyTorch's
  /// `q_proj_weight`, ...; rows of the packed weight when packed()). Throws shape_error on
  /// another shape.
  void set_q_weight(const ConstMatrixRef<Scalar>& w) { set_block(w, 0, m_embed_dim, m_q, "q_proj_weight"); }
  void set_k_weight(const ConstMatrixRef<Scalar>& w) { set_block(w, 1, m_kdim, m_k, "k_proj_weight"); }
  void set_v_weight(const ConstMatrixRef<Scalar>& w) { set_block(w, 2, m_vdim, m_v, "v_proj_weight"); }
  ///@}
  /// Replaces the packed bias with `b [3E]` (`b_Q, b_K, b_V`). Throws argument_error when the
  /// projection has no bias, shape_error on another size.
  void set_in_proj_bias(const ConstRowVectorRef<Scalar>& b) {
    if (!m_has_bias)
      MHA_THROW(argument_error, "[mha.argument] InProjection: built without bias, cannot set in_proj_bias");
    detail::check_shape("in_proj_bias", 1, 3 * m_embed_dim, 1, b.size());
    m_bias = b;
  }

  /// Self-attention: `x [tokens, E] -> qkv [tokens, 3E]` in one GEMM; only when packed()
  /// (else argument_error). Throws shape_error when `x` or `qkv` has another shape.
  void project_packed(const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> qkv) const {
    require_packed("project_packed");
    detail::check_shape("query", -1, m_embed_dim, x.rows(), x.cols());
    detail::check_shape("packed projection output", x.rows(), 3 * m_embed_dim, qkv.rows(), qkv.cols());
    detail::linear_rows_local(x, m_packed.slice(), m_has_bias ? m_bias.data() : nullptr, qkv, num_threads());
  }

  ///@{
  /// `x [tokens, E] -> [tokens, E]`, `x [tokens, kdim] -> [tokens, E]`, `x [tokens, vdim] -> ...`.
  /// `y = x W^T + b` into caller memory `y [tokens, E]`; throws shape_error on other shapes.
  void project_q(const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> y) const { project(0, "query", x, y); }
  void project_k(const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> y) const { project(1, "key", x, y); }
  void project_v(const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> y) const { project(2, "value", x, y); }
  ///@}

 private:
  void require_packed(const char* what) const {
    if (!packed())
      MHA_THROW(argument_error, std::string("[mha.argument] InProjection: ") + what +
                                    " needs kdim == vdim == embed_dim (packed layout)");
  }

  // Weight of projection `which` (0 = q, 1 = k, 2 = v) as a view.
  ConstMatrixRef<Scalar> weight_of(int which) const {
    if (packed()) return ConstMatrixRef<Scalar>(m_packed.matrix().middleRows(which * m_embed_dim, m_embed_dim));
    if (which == 0) return ConstMatrixRef<Scalar>(m_q.matrix());
    if (which == 1) return ConstMatrixRef<Scalar>(m_k.matrix());
    return ConstMatrixRef<Scalar>(m_v.matrix());
  }

  detail::WeightSlice<Scalar> panels_of(int which) const {
    if (packed()) return m_packed.slice().middle_rows(which * m_embed_dim, m_embed_dim);
    if (which == 0) return m_q.slice();
    if (which == 1) return m_k.slice();
    return m_v.slice();
  }

  void set_block(const ConstMatrixRef<Scalar>& w, int which, Index in, detail::PackedWeight<Scalar>& separate,
                 const char* name) {
    detail::check_shape(name, m_embed_dim, in, w.rows(), w.cols());
    if (packed())
      m_packed.assign_rows(which * m_embed_dim, w);
    else
      separate.assign(w);
  }

  void project(int which, const char* what, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> y) const {
    const Index in = which == 0 ? m_embed_dim : which == 1 ? m_kdim : m_vdim;
    detail::check_shape(what, -1, in, x.rows(), x.cols());
    detail::check_shape("projection output", x.rows(), m_embed_dim, y.rows(), y.cols());
    detail::linear_rows_local(x, panels_of(which), m_has_bias ? m_bias.data() + which * m_embed_dim : nullptr, y,
                              num_threads());
  }

  Index m_embed_dim = 0;
  Index m_kdim = 0;
  Index m_vdim = 0;
  bool m_has_bias = false;
  detail::PackedWeight<Scalar> m_packed;  // [3E, E] when packed()
  detail::PackedWeight<Scalar> m_q;       // [E, E]    when !packed()
  detail::PackedWeight<Scalar> m_k;       // [E, kdim] when !packed()
  detail::PackedWeight<Scalar> m_v;       // [E, vdim] when !packed()
  RowVector<Scalar> m_bias;  // [3E], empty without bias
};

}  // namespace mha
