#pragma once
/// \file types.hpp
/// The matrix types of the library and `BatchView`, a copy-free view of a `[batch, tokens,
/// features]` tensor.
///
/// Conventions used everywhere in mha:
/// - A sequence is a row-major `Matrix<Scalar>` of shape `[tokens, features]`: one token per row,
///   so a token's features are contiguous, as in a PyTorch tensor.
/// - A batch is contiguous `[batch, tokens, features]` memory, the layout of a PyTorch tensor with
///   `batch_first=True`. A batch of matrices returned by mha is one `Matrix` of shape
///   `[batch * tokens, features]`, which is that same memory.
/// - Head h of an embedding of size E split into H heads is the block of columns
///   `[h * E / H, (h + 1) * E / H)`.

#include <Eigen/Core>

#include <string>

#include "error.hpp"

namespace mha {

/// Sizes and indices: Eigen's signed index type (`std::ptrdiff_t` unless EIGEN_DEFAULT_DENSE_INDEX_TYPE
/// says otherwise).
using Index = Eigen::Index;

/// Row-major dynamic matrix, `[tokens, features]`.
template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// Row vector, used for biases `[features]`.
template <class Scalar>
using RowVector = Eigen::Matrix<Scalar, 1, Eigen::Dynamic, Eigen::RowMajor>;
/// Row-major boolean matrix, used for boolean masks.
using BoolMatrix = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// What public functions take: binds without a copy to a `Matrix`, a `Map` over caller memory or a
/// block of rows or columns of either (any row stride, unit column stride).
template <class Scalar>
using ConstMatrixRef = Eigen::Ref<const Matrix<Scalar>>;
/// Writable counterpart of ConstMatrixRef, for outputs in caller memory (`[tokens, features]`,
/// the size fixed by the caller; functions check it and never resize).
template <class Scalar>
using MatrixRef = Eigen::Ref<Matrix<Scalar>>;
/// What public functions take for a bias or another `[features]` vector: a `RowVector`, a `Map`
/// or a row of a matrix, without a copy.
template <class Scalar>
using ConstRowVectorRef = Eigen::Ref<const RowVector<Scalar>>;

/// A strided map over caller memory: `[rows, cols]`, rows `stride` elements apart.
template <class Scalar>
using ConstStridedMap = Eigen::Map<const Matrix<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>>;

namespace detail {

inline std::string shape_string(Index rows, Index cols) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}

inline std::string shape_string(Index d0, Index d1, Index d2) {
  return "[" + std::to_string(d0) + ", " + std::to_string(d1) + ", " + std::to_string(d2) + "]";
}

/// Throws shape_error unless `[rows, cols]` equals `[expected_rows, expected_cols]`; a negative
/// expected extent accepts any value and prints as `*`.
inline void check_shape(const char* what, Index expected_rows, Index expected_cols, Index rows,
                        Index cols) {
  const bool rows_ok = expected_rows < 0 || rows == expected_rows;
  const bool cols_ok = expected_cols < 0 || cols == expected_cols;
  if (rows_ok && cols_ok) return;
  auto extent = [](Index e) { return e < 0 ? std::string("*") : std::to_string(e); };
  MHA_THROW(shape_error, std::string("[mha.shape] ") + what + ": expected [" +
                             extent(expected_rows) + ", " + extent(expected_cols) + "], got " +
                             shape_string(rows, cols));
}

}  // namespace detail

/// A read-only view of `[batch, tokens, features]` memory that it does not own, such as a
/// PyTorch tensor's `data_ptr()` or a `Matrix` of shape `[batch * tokens, features]`.
///
/// Token rows are `row_stride` elements apart (`features` when the memory is packed), and
/// sequence n starts at row `n * tokens`. Viewing never copies.
template <class Scalar_>
class BatchView {
 public:
  /// Element type, `float` or `double`.
  using Scalar = Scalar_;

  /// Views `batch * tokens` rows of `features` values at `data`, rows `row_stride` apart
  /// (`row_stride == 0` means packed: `features`).
  BatchView(const Scalar* data, Index batch, Index tokens, Index features, Index row_stride = 0)
      : m_data(data),
        m_batch(batch),
        m_tokens(tokens),
        m_features(features),
        m_row_stride(row_stride == 0 ? features : row_stride) {
    if (batch <= 0 || tokens <= 0 || features <= 0)
      MHA_THROW(shape_error, "[mha.shape] BatchView: expected positive [batch, tokens, features], got " +
                                 detail::shape_string(batch, tokens, features));
    if (m_row_stride < features)
      MHA_THROW(shape_error, "[mha.shape] BatchView: row stride " + std::to_string(m_row_stride) +
                                 " is smaller than features " + std::to_string(features));
    if (data == nullptr) MHA_THROW(argument_error, "[mha.argument] BatchView: null data pointer");
  }

  /// Views a row-major `[batch * tokens, features]` matrix, `Map` or block of one as `batch`
  /// sequences. Takes the expression itself (not an `Eigen::Ref`) so that a column-major argument
  /// is a compile error rather than a view of a temporary copy.
  template <class Derived>
  BatchView(const Eigen::DenseBase<Derived>& flat, Index batch)
      : BatchView(flat.derived().data(), batch, batch > 0 ? flat.rows() / batch : 0, flat.cols(),
                  flat.derived().outerStride()) {
    static_assert(bool(Derived::IsRowMajor) && (int(Derived::Flags) & Eigen::DirectAccessBit),
                  "BatchView needs row-major memory with direct access");
    if (flat.derived().innerStride() != 1)
      MHA_THROW(shape_error, "[mha.shape] BatchView: features must be contiguous (inner stride 1)");
    if (flat.rows() % batch != 0)
      MHA_THROW(shape_error, "[mha.shape] BatchView: " + std::to_string(flat.rows()) +
                                 " rows do not split into batch " + std::to_string(batch));
  }

  /// Number of sequences.
  Index batch() const { return m_batch; }
  /// Rows (tokens) per sequence.
  Index tokens() const { return m_tokens; }
  /// Values per row.
  Index features() const { return m_features; }
  /// Elements from one row to the next (`>= features`).
  Index row_stride() const { return m_row_stride; }
  /// First element of sequence 0 (not owned).
  const Scalar* data() const { return m_data; }

  /// Sequence n, `[tokens, features]`.
  ConstStridedMap<Scalar> operator[](Index n) const {
    MHA_ASSERT(n >= 0 && n < m_batch);
    return ConstStridedMap<Scalar>(m_data + n * m_tokens * m_row_stride, m_tokens, m_features,
                                   Eigen::OuterStride<>(m_row_stride));
  }

  /// All sequences stacked, `[batch * tokens, features]`.
  ConstStridedMap<Scalar> flat() const {
    return ConstStridedMap<Scalar>(m_data, m_batch * m_tokens, m_features,
                                   Eigen::OuterStride<>(m_row_stride));
  }

 private:
  const Scalar* m_data;
  Index m_batch;
  Index m_tokens;
  Index m_features;
  Index m_row_stride;
};

}  // namespace mha
