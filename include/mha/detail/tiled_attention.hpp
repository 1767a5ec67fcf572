#pragma once
// The tiled attention kernel (FlashAttention's online softmax, on a CPU). For each task, a tile
// of query rows of one (batch entry, head), key/value tiles stream through a [Bq, Bk] score
// buffer that stays in cache; a running row max and sum rescale the output accumulator, so the
// [L, S] score matrix never exists. Key tiles wholly in the causal future are never touched, and
// only tiles that straddle the causal horizon are masked element by element.

#include <algorithm>
#include <limits>

#include "attention_problem.hpp"
#include "gemm.hpp"

namespace mha {
namespace detail {

/// Tile sizes. A 64 x 128 score tile (32 KiB in float), the scaled Q tile and the accumulator
/// stay in L1/L2 while K/V tiles stream past. Measured on a Zen 4 core (E = 512, H = 8, L = 2048,
/// one thread; /tmp sweep of Bq in {64, 128, 256} x Bk in {64, ..., 512}): Bq = 64 was fastest
/// for every Bk; Bk = 128 gave the best causal time and within 5% of the best dense time.
struct TileSizes {
  Index query_rows = 64;  // Bq
  Index key_rows = 128;   // Bk
};

/// Per-thread scratch of the tiled kernel, carved out of one matrix so that a workspace can hold
/// it as a single, reusable allocation.
template <class Scalar>
struct TileScratch {
  /// Columns of the score block: a key tile, or the (up to 2) extra key columns.
  static Index score_cols(const TileSizes& t) { return std::max<Index>(t.key_rows, 2); }
  static Index rows(const TileSizes& t) { return t.query_rows; }
  /// Rounded up to 16 so every row starts on a 64-byte boundary: Eigen's vectorised exp and
  /// reductions then run from the first element of a score row, without a scalar prologue.
  static Index cols(const TileSizes& t, Index head_dim, Index v_dim) {
    return (score_cols(t) + v_dim + head_dim + 3 + 15) / 16 * 16;
  }
};

/// Attention of query rows [i0, i1) of head h of batch entry n, into the context.
/// `scratch` is `[Bq, max(Bk, 2) + dv + d + 3 rounded up to 16]` (TileScratch).
template <class Scalar>
void attend_tile(const AttentionProblem<Scalar>& p, Index n, Index h, Index i0, Index i1,
                 const TileSizes& tiles, Matrix<Scalar>& scratch, GemmBuffers<Scalar>& gemm) {
  using Block = Eigen::Block<Matrix<Scalar>, Eigen::Dynamic, Eigen::Dynamic>;
  const Index S = p.k_len, d = p.head_dim, dv = p.v_dim, rows = i1 - i0, Bk = tiles.key_rows;
  const Index sc = TileScratch<Scalar>::score_cols(tiles);  // score columns, >= Bk
  const Scalar neg_inf = -std::numeric_limits<Scalar>::infinity();
  const HeadMask<Scalar> mask = p.head_mask(n, h);

  Block scores = scratch.block(0, 0, rows, sc);            // [rows, sc] this tile's scores
  Block acc = scratch.block(0, sc, rows, dv);              // [rows, dv] unnormalised output
  Block q = scratch.block(0, sc + dv, rows, d);            // [rows, d]  queries * scale
  auto row_max = scratch.col(sc + dv + d).head(rows);      // [rows]     running max
  auto row_sum = scratch.col(sc + dv + d + 1).head(rows);  // [rows]     running sum of exp
  auto rescale = scratch.col(sc + dv + d + 2).head(rows);  // [rows]     exp(old max - new max)
  // The scale goes into one copy of the query tile rather than into every score.
  q = ConstStridedMap<Scalar>(p.q + (n * p.q_len + i0) * p.q_stride + h * d, rows, d,
                              Eigen::OuterStride<>(p.q_stride)) * p.scale;
  acc.setZero();
  row_max.setConstant(neg_inf);
  row_sum.setZero();

  // Folds a [rows, width] block of scores (already scaled and masked) with its values into the
  // running softmax.
  auto fold = [&](auto&& s, Index width, auto&& multiply_values) {
    for (Index r = 0; r < rows; ++r) {
      const Scalar tile_max = s.row(r).head(width).maxCoeff();
      const Scalar new_max = std::max(row_max[r], tile_max);
      if (new_max == neg_inf) {  // nothing allowed in this row so far: nothing to fold
        s.row(r).head(width).setZero();
        rescale[r] = 1;
        continue;
      }
      rescale[r] = std::exp(row_max[r] - new_max);  // exp(-inf) = 0 on the first allowed tile
      row_max[r] = new_max;
      exp_shifted_inplace(s.row(r).head(width), new_max);
      row_sum[r] = row_sum[r] * rescale[r] + s.row(r).head(width).sum();
    }
    acc.array().colwise() *= rescale.array();
    multiply_values();
  };

  // Keys beyond the horizon of the tile's last row are in every row's future: skip them.
  const Index key_end = mask.causal ? mask.causal_end(i1 - 1, S) : S;
  for (Index j0 = 0; j0 < key_end; j0 += Bk) {
    const Index width = std::min(Bk, key_end - j0);
    const ConstStridedMap<Scalar> k(p.k + (n * S + j0) * p.k_stride + h * d, width, d,
                                    Eigen::OuterStride<>(p.k_stride));  // [width, d]
    const ConstStridedMap<Scalar> v(p.v + (n * S + j0) * p.v_stride + h * dv, width, dv,
                                    Eigen::OuterStride<>(p.v_stride));  // [width, dv]
    auto s = scores.leftCols(width);
    // Scores start as the additive mask and the product adds onto them.
    if (mask.has_additive())
      for (Index r = 0; r < rows; ++r)
        for (Index c = 0; c < width; ++c) s(r, c) = mask.additive(i0 + r, j0 + c);
    else
      s.setZero();
    gemm_accumulate<false>(rows, width, d, q.data(), scratch.cols(), k.data(), p.k_stride, s.data(), scratch.cols(),
                           Scalar(1), gemm);
    // Only tiles that reach past the first row's horizon need element-wise causal masking.
    if (mask.causal && j0 + width > mask.causal_end(i0, S))
      for (Index r = 0; r < rows; ++r)
        for (Index c = std::max<Index>(0, mask.causal_end(i0 + r, S) - j0); c < width; ++c) s(r, c) = neg_inf;
    fold(s, width, [&] {
      gemm_accumulate<true>(rows, dv, width, s.data(), scratch.cols(), v.data(), p.v_stride, acc.data(),
                            scratch.cols(), Scalar(1), gemm);
    });
  }

  // The extra key columns (bias_k with value bias_v, then a zero key with a zero value) are
  // never masked: fold them in as a last, narrow tile.
  if (p.bias_k || p.zero_attn) {
    const Index width = p.extra_keys();
    auto s = scores.leftCols(width);
    Index c = 0;
    if (p.bias_k) {
      const Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>> bk(p.bias_k + h * d, d);
      s.col(c++).noalias() = q * bk;
    }
    if (p.zero_attn) s.col(c++).setZero();
    fold(s, width, [&] {
      if (p.bias_v) acc.noalias() += s.col(0) * Eigen::Map<const RowVector<Scalar>>(p.bias_v + h * dv, dv);
    });
  }

  // Normalise; a row that never saw an allowed key has sum 0 and stays all zeros.
  auto ctx = Eigen::Map<Matrix<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>>(
      p.ctx + (n * p.q_len + i0) * p.ctx_stride + h * dv, rows, dv, Eigen::OuterStride<>(p.ctx_stride));
  for (Index r = 0; r < rows; ++r) {
    if (row_sum[r] > 0)
      ctx.row(r) = acc.row(r) / row_sum[r];
    else
      ctx.row(r).setZero();
  }
}

}  // namespace detail
}  // namespace mha
