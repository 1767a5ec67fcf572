#pragma once
// The tiled attention kernel (FlashAttention's online softmax, on a CPU). A task is a tile of
// query rows of one (batch entry, kv head): the rows of every query head that reads that kv head
// are stacked, so grouped-query heads share one pass over their keys and values (a decode step of
// g heads is one [g, d] x [d, Bk] product per key tile, not g matrix-vector products). Key/value
// tiles stream through a [M, Bk] score buffer that stays in cache; a running row max and sum
// rescale the output accumulator, so the [L, S] score matrix never exists. Key tiles outside every
// row's causal / window range are never touched; only tiles that straddle an edge (or carry masks,
// ALiBi, softcap) pass through finish_scores element by element.
//
// Three ways to run the products. Packed (prefill, M >= kPackedMinRows): run_tiled packs each
// (batch entry, kv head)'s K^T and V once per call into micro-kernel panels (pack.hpp), a task
// packs its scaled Q tile once and each key tile's weights P once, and both products run on the
// micro-kernel (gemm_driver.hpp): no operand is packed twice. Streaming (decoding, M <=
// kStreamingRows): each key and value row is read once, where it lies (a bf16 / f16 cache
// widened in registers), by the decode micro-kernel (streaming_kernel.hpp), since packing K would
// cost as much as the product of a few query rows with it. Direct
// (the rows in between, and split-K chunks): Eigen's GEMM reads K and V where they lie.
//
// A task may cover only a chunk of the keys (split-K, for decoding against a long cache): it then
// leaves its running max, sum and unnormalised output as a partial, and merge_partials combines
// the chunks in a fixed order, so the result never depends on the thread count.

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "attention_problem.hpp"
#include "convert.hpp"
#include "gemm.hpp"
#include "gemm_driver.hpp"
#include "pack.hpp"
#include "reference_attention.hpp"
#include "softmax.hpp"
#include "streaming_kernel.hpp"

namespace mha {
namespace detail {

/// Tasks of at most this many stacked rows (a decode step: g heads x a few queries) multiply by
/// streaming each key and value row once through dot products and axpys instead of packing
/// the tile for a GEMM, which would copy every key and value byte once more.
constexpr Index kStreamingRows = 8;

/// Tile sizes. A 64 x 128 score tile (32 KiB in float), the scaled Q tile and the accumulator
/// stay in L1/L2 while K/V tiles stream past. Measured on a Zen 4 core (E = 512, H = 8, L = 2048,
/// one thread; /tmp sweep of Bq in {64, 128, 256} x Bk in {64, ..., 512}): Bq = 64 was fastest
/// for every Bk; Bk = 128 gave the best causal time and within 5% of the best dense time.
/// With grouped-query heads Bq counts stacked rows: g heads x Bq / g queries.
struct TileSizes {
  Index query_rows = 64;  // Bq
  Index key_rows = 128;   // Bk
};

/// One task of the tiled kernel: query rows [i0, i1) of the heads reading kv head `kv` of batch
/// entry n, against keys [j_begin, j_end); the extra key columns are folded in by the task whose
/// chunk ends at S.
struct TileTask {
  Index n = 0, kv = 0, i0 = 0, i1 = 0, j_begin = 0, j_end = 0;
};

/// Per-thread scratch of the tiled kernel, carved out of one matrix so that a workspace can hold
/// it as a single, reusable allocation: `[M, score_cols + dv + d + 3]` rounded up so every row
/// starts on a 64-byte boundary (Eigen's vectorised exp and reductions then run from the first
/// element of a score row, without a scalar prologue).
template <class Scalar>
struct TileScratch {
  static Index score_cols(const TileSizes& t) { return std::max<Index>(t.key_rows, 2); }
  static Index cols(const TileSizes& t, Index head_dim, Index v_dim) {
    return (score_cols(t) + v_dim + head_dim + 3 + 15) / 16 * 16;
  }
};

/// Where a split task leaves its state: `[M, dv + 2]`, the unnormalised output, then the row max
/// and the row sum.
template <class Scalar>
using PartialMap = Eigen::Map<Matrix<Scalar>>;

/// Normalises `acc / sum` into the context row of query i of head h, under the softmax rules: a
/// NaN sum (a NaN or +inf score) gives NaN; a zero sum (every score -inf) gives zeros when no key
/// was allowed and NaN otherwise; a row that still comes out non-finite (0 * NaN of a zero-weight
/// value) is recomputed exactly.
template <class Scalar, class KV>
void write_context_row(const AttentionProblem<Scalar, KV>& p, Index n, Index h, Index i, const Scalar* acc,
                       Scalar sum, Scalar* qs_scratch) {
  const Index dv = p.v_dim;
  Eigen::Map<RowVector<Scalar>> out(p.ctx.row(n, h, i), dv);
  if (std::isnan(sum) || (sum == 0 && p.any_key_allowed(n, h, i))) {
    out.setConstant(std::numeric_limits<Scalar>::quiet_NaN());
  } else if (sum > 0) {
    out = Eigen::Map<const RowVector<Scalar>>(acc, dv) / sum;
    if (!out.allFinite()) attend_row_exact(p, n, h, i, qs_scratch, out.data());
  } else {
    out.setZero();
  }
}

/// The packed operands of one task (the packed path): its kv head's K^T `[d, S]` and V `[S, dv]`,
/// packed once per call by run_tiled and shared by every query tile of the head, and per-thread
/// room for the task's packed Q tile `[M, d]` and each key tile's packed P `[M, width]`.
template <class Scalar>
struct PackedOperands {
  PackedB<Scalar> keys_t;   // K^T [d, S]: a key tile is a column range
  PackedB<Scalar> values;   // V [S, dv]: a key tile is a depth range
  Scalar* tiles = nullptr;  // [round_up(M, MR) * d] packed Q, then [round_up(M, MR) * Bk] packed P
};

/// Runs one task. `scratch` is `[M, TileScratch::cols]` with M >= stacked rows; `packed`, when not
/// null, holds the head's packed K^T and V, and both products run on the micro-kernel; otherwise
/// they read K and V where they are through Eigen's GEMM (`kv_buffer`, `[Bk, d + dv]`, is then
/// used when KV is not Scalar: cache tiles are converted once per tile). `partial`, when not
/// null, receives the task's state instead of the context.
template <class Scalar, class KV>
void attend_tile(const AttentionProblem<Scalar, KV>& p, const TileTask& task, const TileSizes& tiles,
                 Matrix<Scalar>& scratch, Matrix<Scalar>& kv_buffer, GemmBuffers<Scalar>& gemm,
                 const PackedOperands<Scalar>* packed, Scalar* partial) {
  using Block = Eigen::Block<Matrix<Scalar>, Eigen::Dynamic, Eigen::Dynamic>;
  const Index n = task.n, i0 = task.i0, rows = task.i1 - task.i0;
  const Index d = p.head_dim, dv = p.v_dim, Bk = tiles.key_rows;
  const Index g = p.group_size(), h_first = task.kv * g, g_here = std::min(g, p.heads - h_first);
  const Index M = g_here * rows;  // stacked row r: head h_first + r / rows, query i0 + r % rows
  const Index sc = TileScratch<Scalar>::score_cols(tiles), ld = scratch.cols();
  const Scalar neg_inf = -std::numeric_limits<Scalar>::infinity();

  // Columns [0, sc): a tile's scores [M, width <= sc].
  Block acc = scratch.block(0, sc, M, dv);              // [M, dv] unnormalised output
  Block q = scratch.block(0, sc + dv, M, d);            // [M, d]  queries * scale
  auto row_max = scratch.col(sc + dv + d).head(M);      // [M]     running max
  auto row_sum = scratch.col(sc + dv + d + 1).head(M);  // [M]     running sum of exp
  auto rescale = scratch.col(sc + dv + d + 2).head(M);  // [M]     exp(old max - new max)
  for (Index r = 0; r < M; ++r)
    q.row(r) = Eigen::Map<const RowVector<Scalar>>(p.q.row(n, h_first + r / rows, i0 + r % rows), d) * p.scale;
  acc.setZero();
  row_max.setConstant(neg_inf);
  row_sum.setZero();
  // The packed path packs the scaled Q tile once; the row-major copy stays for the bias_k column
  // and for the exact fallback of write_context_row, which overwrites it row by row.
  PackedA<Scalar> q_packed;
  Scalar* p_packed = nullptr;  // [round_up(M, MR) * Bk]
  if (packed) {
    q_packed = pack_a(M, d, q.data(), ld, packed->tiles);
    p_packed = packed->tiles + packed_a_size<Scalar>(M, d);
  }

  // Folds a [M, width] block of finished scores into the running softmax, then lets
  // `multiply_values` add the block's P V into acc.
  auto fold = [&](Block& s, Index width, auto&& multiply_values) {
    for (Index r = 0; r < M; ++r) {
      // Raw rows, not an Eigen Block per row: copying the Block objects stalled on store-to-load
      // forwarding (perf annotate), most visibly with narrow key tiles.
      Scalar* row = s.data() + r * ld;
      const Scalar new_max = max_propagate_nan(row_max[r], row_max_nan(row, width));
      if (new_max == neg_inf) {  // nothing allowed in this row so far: nothing to fold
        std::fill_n(row, width, Scalar(0));
        rescale[r] = 1;
        continue;
      }
      // exp(-inf) = 0 on the first allowed block; an unchanged max (most blocks of a long row)
      // rescales by exactly 1, which the multiplication below then skips. (A max that stays +inf
      // skips the NaN of exp(inf - inf): the block that brought the +inf already made the sum
      // and acc NaN.)
      rescale[r] = new_max == row_max[r] ? Scalar(1) : std::exp(row_max[r] - new_max);
      row_max[r] = new_max;
      row_sum[r] = row_sum[r] * rescale[r] + exp_shifted_sum(row, width, new_max);
      if (rescale[r] != Scalar(1)) acc.row(r) *= rescale[r];
    }
    multiply_values();
  };

  // Keys outside the range of every row of the tile are skipped; rows whose own range is the
  // whole tile need no element-wise pass unless scores carry other terms.
  Index key_lo = task.j_begin, key_hi = task.j_end;
  const bool contiguous = p.k_positions == nullptr;
  if (contiguous) {
    key_lo = std::max(key_lo, p.key_begin(i0));
    key_hi = std::min(key_hi, p.key_end(task.i1 - 1));
  }
  const Index inner_lo = contiguous ? p.key_begin(task.i1 - 1) : 0, inner_hi = contiguous ? p.key_end(i0) : 0;
  // The streaming path's prefetch targets: `count` K or V rows from key j (none when count is 0).
  auto key_rows = [&](Index j, Index count) {
    return count > 0 ? RowRange::of(p.k.row(n, task.kv, j), p.k.row_stride, d, count) : RowRange{};
  };
  auto value_rows = [&](Index j, Index count) {
    return count > 0 ? RowRange::of(p.v.row(n, task.kv, j), p.v.row_stride, dv, count) : RowRange{};
  };
  for (Index j0 = key_lo; j0 < key_hi; j0 += Bk) {
    const Index width = std::min(Bk, key_hi - j0);
    Block s = scratch.block(0, 0, M, width);
    const bool streaming = !packed && M <= kStreamingRows;
    const Scalar* k = nullptr;  // direct path: [width, d], rows k_ld apart
    const Scalar* v = nullptr;  // direct path: [width, dv], rows v_ld apart
    Index k_ld = 0, v_ld = 0;
    if constexpr (std::is_same<KV, Scalar>::value) {
      k = p.k.row(n, task.kv, j0);
      v = p.v.row(n, task.kv, j0);
      k_ld = p.k.row_stride;
      v_ld = p.v.row_stride;
    } else if (!packed && !streaming) {
      // A cache tile in bf16 / f16 is widened once (vectorised), then read like any other.
      convert_rows(p.k.row(n, task.kv, j0), p.k.row_stride, width, d, kv_buffer.data(), kv_buffer.cols());
      convert_rows(p.v.row(n, task.kv, j0), p.v.row_stride, width, dv, kv_buffer.data() + d, kv_buffer.cols());
      k = kv_buffer.data();
      v = kv_buffer.data() + d;
      k_ld = v_ld = kv_buffer.cols();
    }
    if (packed) {
      gemm_packed(q_packed, packed->keys_t.middle_cols(j0, width), Scalar(1), s.data(), ld, false);  // (scale Q) K^T
    } else if (streaming) {
      // Few rows (decoding): each key row read once, where it lies, by the decode micro-kernel.
      stream_scores(M, width, d, q.data(), ld, p.k.row(n, task.kv, j0), p.k.row_stride, s.data(), ld,
                    RowPrefetch{key_rows(j0, width), value_rows(j0, width), RowPrefetch::kDistance});
    } else {
      s.setZero();
      gemm_accumulate<false>(M, width, d, q.data(), ld, k, k_ld, s.data(), ld, Scalar(1), gemm);  // (scale Q) K^T
    }
    const bool edge = !contiguous || j0 < inner_lo || j0 + width > inner_hi;
    if (edge || p.has_score_terms())
      for (Index r = 0; r < M; ++r) finish_scores(p, n, h_first + r / rows, i0 + r % rows, j0, width, &s(r, 0));
    fold(s, width, [&] {
      if (packed) {
        const PackedA<Scalar> weights = pack_a(M, width, s.data(), ld, p_packed);
        gemm_packed(weights, packed->values.middle_depth(j0, width), Scalar(1), acc.data(), ld, true);  // += P V
      } else if (streaming) {  // acc += P V, each value row read once
        stream_values(M, width, dv, s.data(), ld, p.v.row(n, task.kv, j0), p.v.row_stride, acc.data(), ld,
                      RowPrefetch{value_rows(j0, width), key_rows(j0 + width, std::min(Bk, key_hi - j0 - width)),
                                  RowPrefetch::kDistance});
      } else {
        gemm_accumulate<true>(M, dv, width, s.data(), ld, v, v_ld, acc.data(), ld, Scalar(1), gemm);  // += P V
      }
    });
  }

  // The extra key columns (bias_k with value bias_v, then a zero key with a zero value) are
  // never masked: the task that ends at S folds them in as a last, narrow tile.
  if ((p.bias_k || p.zero_attn) && task.j_end == p.k_len) {
    const Index width = p.extra_keys();
    Block s = scratch.block(0, 0, M, width);
    for (Index r = 0; r < M; ++r) {
      const Index h = h_first + r / rows;
      Index c = 0;
      if (p.bias_k) s(r, c++) = q.row(r).dot(Eigen::Map<const RowVector<Scalar>>(p.bias_k + h * d, d));
      if (p.zero_attn) s(r, c++) = 0;
    }
    fold(s, width, [&] {
      if (!p.bias_v) return;
      for (Index r = 0; r < M; ++r)
        acc.row(r) += s(r, 0) * Eigen::Map<const RowVector<Scalar>>(p.bias_v + (h_first + r / rows) * dv, dv);
    });
  }

  if (partial) {
    PartialMap<Scalar> out(partial, M, dv + 2);
    out.leftCols(dv) = acc;
    out.col(dv) = row_max;
    out.col(dv + 1) = row_sum;
    return;
  }
  for (Index r = 0; r < M; ++r)
    write_context_row(p, n, h_first + r / rows, i0 + r % rows, &acc(r, 0), row_sum[r], &q(r, 0));
}

/// Combines the partials of `chunks` consecutive split tasks of one tile, in chunk order, into the
/// context. `partials` points at chunk 0's `[M, dv + 2]`, chunk c's is `c * chunk_stride` further;
/// `merged` is `[>= 2, >= max(dv + 2, d)]` scratch (a row for the sum, one for the exact fallback's
/// scaled query).
template <class Scalar, class KV>
void merge_partials(const AttentionProblem<Scalar, KV>& p, const TileTask& task, Index chunks, const Scalar* partials,
                    Index chunk_stride, Matrix<Scalar>& merged) {
  const Index rows = task.i1 - task.i0, dv = p.v_dim, g = p.group_size();
  const Index h_first = task.kv * g, M = std::min(g, p.heads - h_first) * rows;
  const Scalar neg_inf = -std::numeric_limits<Scalar>::infinity();
  for (Index r = 0; r < M; ++r) {
    Scalar max = neg_inf;
    for (Index c = 0; c < chunks; ++c) max = max_propagate_nan(max, partials[c * chunk_stride + r * (dv + 2) + dv]);
    auto acc = merged.row(0).head(dv);
    acc.setZero();
    Scalar sum = 0;
    if (std::isnan(max)) {
      sum = max;
    } else if (max != neg_inf) {
      for (Index c = 0; c < chunks; ++c) {
        const Scalar* part = partials + c * chunk_stride + r * (dv + 2);
        if (part[dv] == neg_inf) continue;  // no allowed key in this chunk
        const Scalar factor = std::exp(part[dv] - max);
        acc += factor * Eigen::Map<const RowVector<Scalar>>(part, dv);
        sum += factor * part[dv + 1];
      }
    }
    write_context_row(p, task.n, h_first + r / rows, task.i0 + r % rows, acc.data(), sum, merged.row(1).data());
  }
}

}  // namespace detail
}  // namespace mha
