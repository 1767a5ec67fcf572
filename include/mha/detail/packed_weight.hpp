#pragma once
// A layer weight kept in two layouts: PyTorch's `[out, in]`, which the public accessors return and
// state_dicts hold, and the micro-kernel's packed panels of B = W^T, which every forward pass
// multiplies by. Packing happens once per assignment, never in a forward pass.

#include <Eigen/Core>

#include "../types.hpp"
#include "pack.hpp"

namespace mha {
namespace detail {

/// A rectangle `W[r0 : r0 + out, c0 : c0 + in]` of a PackedWeight, in both layouts: the
/// row-major `[out, in]` block (for an external BLAS) and the packed `B = block^T [in, out]`.
/// MultiHeadAttention takes a head group's rows of W_Q / W_K / W_V and its columns of W_O; both
/// slices are views (a column range of W is a depth range of the packed B, a row range a range of
/// its column panels).
template <class Scalar>
struct WeightSlice {
  const Scalar* weight = nullptr;  // W[r0, c0]; row stride `stride`
  Index stride = 0;
  Index out = 0;
  Index in = 0;
  PackedB<Scalar> packed;  // [in, out]

  /// Rows [r0, r0 + n) of W (output features).
  WeightSlice middle_rows(Index r0, Index n) const {
    MHA_ASSERT(r0 >= 0 && n >= 0 && r0 + n <= out);
    return WeightSlice{weight + r0 * stride, stride, n, in, packed.middle_cols(r0, n)};
  }
  /// Columns [c0, c0 + n) of W (input features).
  WeightSlice middle_cols(Index c0, Index n) const {
    MHA_ASSERT(c0 >= 0 && n >= 0 && c0 + n <= in);
    return WeightSlice{weight + c0, stride, out, n, packed.middle_depth(c0, n)};
  }
};

/// A weight `W [out, in]` (PyTorch's layout) together with its packed panels. Memory: twice the
/// weight (the panels pad `out` up to a multiple of NR), the price of never packing a weight in a
/// forward pass.
template <class Scalar>
class PackedWeight {
 public:
  PackedWeight() = default;
  /// A zero weight `[out, in]`.
  PackedWeight(Index out, Index in) { assign(Matrix<Scalar>::Zero(out, in)); }

  /// Replaces the whole weight and repacks it.
  void assign(const ConstMatrixRef<Scalar>& w) {
    m_weight = w;
    repack();
  }
  /// Replaces rows [r0, r0 + w.rows()) and repacks.
  void assign_rows(Index r0, const ConstMatrixRef<Scalar>& w) {
    MHA_ASSERT(w.cols() == m_weight.cols() && r0 >= 0 && r0 + w.rows() <= m_weight.rows());
    m_weight.middleRows(r0, w.rows()) = w;
    repack();
  }

  /// `[out, in]`.
  const Matrix<Scalar>& matrix() const { return m_weight; }
  Index out() const { return m_weight.rows(); }
  Index in() const { return m_weight.cols(); }

  /// The whole weight as a slice.
  WeightSlice<Scalar> slice() const {
    const PackedB<Scalar> packed{m_packed.data(), in() * GemmBlocking<Scalar>::NR, 0, out(), in()};
    return WeightSlice<Scalar>{m_weight.data(), m_weight.outerStride(), out(), in(), packed};
  }

 private:
  void repack() {
    m_packed.resize(packed_b_size<Scalar>(in(), out()));
    pack_b_transposed(in(), out(), m_weight.data(), m_weight.outerStride(), m_packed.data());
  }

  Matrix<Scalar> m_weight;                             // [out, in]
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> m_packed;  // [round_up(out, NR) * in]: panels of W^T
};

}  // namespace detail
}  // namespace mha
