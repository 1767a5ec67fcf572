#pragma once
// The description of one attention call that every kernel reads (the attention core's input):
// strided Q, K, V and context per (batch entry, head), the grouped-query head mapping, absolute
// positions, the causal / sliding-window rule, ALiBi, softcap, additive masks, and the extra
// bias_kv / zero-attention key columns of PyTorch's multi-head attention.
//
// Everything that differs between layers (MHA, GQA, a decoder with a KV cache) is data in this
// struct, not a second kernel. The rules that turn a raw product q.k into the score a softmax
// sees live here too (`finish_scores`), so that every kernel applies them identically.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../types.hpp"

namespace mha {
namespace detail {

/// A strided `[batch][heads][rows][cols]` view: element (n, h, r, c) is at
/// `data[n * batch_stride + h * head_stride + r * row_stride + c]`. Covers both the projection
/// layout `[N * T, H * d]` (head_stride d, row_stride H d, batch_stride T H d) and the KV cache
/// layout `[N][Hkv][capacity][d]` (row_stride d, head_stride capacity d).
template <class T>
struct HeadTensor {
  T* data = nullptr;
  Index batch_stride = 0;
  Index head_stride = 0;
  Index row_stride = 0;

  T* row(Index n, Index h, Index r) const { return data + n * batch_stride + h * head_stride + r * row_stride; }
};

/// All (batch entry, head) problems of one attention call.
///
/// Heads: the problem covers `heads` query heads, the layer's heads `[head_offset, head_offset +
/// heads)` of `num_heads` H. Query head (layer index) hl reads key/value head `hl / (H / Hkv)`
/// (contiguous groups, as `repeat_interleave`); `head_offset` is a multiple of H / Hkv, and the
/// problem's K and V hold the layer's kv heads from `head_offset / (H / Hkv)` on.
///
/// Positions: query i has absolute position `q_pos0 + i`; key j has `k_pos0 + j`, or
/// `k_positions[j]` when given (a ring cache, where -1 marks an empty slot). Causal: key position
/// <= query position. Sliding window W > 0: `P - W < K <= P` (W keys, the query's own included).
/// PyTorch's end-aligned causal mask of an `[L, S]` call is `q_pos0 = S - L`, `k_pos0 = 0`.
template <class Scalar, class KV = Scalar>
struct AttentionProblem {
  Index batch = 0;         // N
  Index heads = 0;         // query heads in this problem
  Index head_offset = 0;   // the layer's index of this problem's head 0
  Index num_heads = 1;     // H of the layer: per-head mask slices n * H + h, ALiBi slope index
  Index num_kv_heads = 1;  // Hkv of the layer; H % Hkv == 0
  Index q_len = 0;         // L
  Index k_len = 0;         // S, real keys only
  Index head_dim = 0;      // d, the width of a query/key head
  Index v_dim = 0;         // dv, the width of a value/context head
  Scalar scale = 0;        // multiplies q before the product (never the product: it may overflow)

  HeadTensor<const Scalar> q;  // [N][heads][L][d]
  HeadTensor<const KV> k;      // [N][kv heads][S][d]
  HeadTensor<const KV> v;      // [N][kv heads][S][dv]
  HeadTensor<Scalar> ctx;      // [N][heads][L][dv], output

  Index q_pos0 = 0;
  Index k_pos0 = 0;
  const std::int64_t* k_positions = nullptr;  // [S] or null
  bool causal = false;
  Index window = 0;                  // 0: no sliding window
  const Scalar* alibi = nullptr;     // [H] slopes m_h: score += -m_h (pos_q - pos_k); or null
  Scalar softcap = 0;                // c > 0: score = c tanh(score / c) before bias and masks

  // PyTorch nn.MultiheadAttention's extras.
  const Scalar* bias_k = nullptr;  // [heads * d] extra key appended after the S keys, or null
  const Scalar* bias_v = nullptr;  // [heads * dv] its value
  bool zero_attn = false;          // one more extra key of zeros with a zero value
  const Scalar* mask = nullptr;    // [slices * L, S] additive (0 / finite / -inf), or null
  Index mask_slices = 0;           // 1 (shared) or N * H
  const Scalar* key_padding = nullptr;  // [N, S] additive, or null

  Index group_size() const { return num_heads / num_kv_heads; }  // query heads per kv head
  /// The problem's kv head (index into k, v) read by problem head h.
  Index kv_head(Index h) const { return (head_offset + h) / group_size() - head_offset / group_size(); }
  Index extra_keys() const { return (bias_k ? 1 : 0) + (zero_attn ? 1 : 0); }
  /// S' = S + extra keys: the width of the attention weights.
  Index total_keys() const { return k_len + extra_keys(); }
  bool has_additive() const { return mask != nullptr || key_padding != nullptr; }
  /// True when something other than a plain product decides a score: then every tile's scores
  /// pass through finish_scores. Without it, only tiles that straddle the causal/window edge do.
  bool has_score_terms() const { return has_additive() || alibi != nullptr || softcap > 0 || k_positions != nullptr; }

  Index key_position(Index j) const { return k_positions ? Index(k_positions[j]) : k_pos0 + j; }

  /// Keys `[first, end)` that query i may attend under the causal and window rules, for
  /// contiguous key positions (k_positions == null); clamped to [0, S].
  Index key_begin(Index i) const {
    if (window <= 0) return 0;
    return std::clamp<Index>(q_pos0 + i - window + 1 - k_pos0, 0, k_len);
  }
  Index key_end(Index i) const {
    if (!causal && window <= 0) return k_len;
    return std::clamp<Index>(q_pos0 + i + 1 - k_pos0, 0, k_len);
  }

  /// The causal / window rule on absolute positions, and a ring cache's empty slots (-1).
  bool position_allowed(Index qpos, Index kpos) const {
    if (k_positions && kpos < 0) return false;
    if ((causal || window > 0) && kpos > qpos) return false;
    return window <= 0 || qpos - kpos < window;
  }

  /// True when query i of head h may attend key j (j < S) under the causal / window rule, the
  /// cache's empty slots and the -inf entries of the masks; the scores play no part.
  bool key_allowed(Index n, Index h, Index i, Index j) const {
    if (!position_allowed(q_pos0 + i, key_position(j))) return false;
    const Scalar neg_inf = -std::numeric_limits<Scalar>::infinity();
    if (const Scalar* dense = mask_slice(n, h))
      if (dense[i * k_len + j] == neg_inf) return false;
    if (key_padding && key_padding[n * k_len + j] == neg_inf) return false;
    return true;
  }

  /// True when query i of head h may attend some key. A row with none gets zero weights; a row
  /// whose allowed scores all came out -inf (infinite inputs, negative overflow) gets NaN.
  bool any_key_allowed(Index n, Index h, Index i) const {
    if (extra_keys() > 0) return true;
    for (Index j = 0; j < k_len; ++j)
      if (key_allowed(n, h, i, j)) return true;
    return false;
  }

  /// Additive mask of (batch entry n, problem head h): pointer to its `[L, S]` slice or null.
  const Scalar* mask_slice(Index n, Index h) const {
    if (!mask) return nullptr;
    const Index slice = mask_slices == 1 ? 0 : n * num_heads + head_offset + h;
    return mask + slice * q_len * k_len;
  }
};

/// Turns a raw row of products `s[c] = (scale q_i) . k_j`, j = j0 + c, into the scores the
/// softmax sees, in this order (the same in every kernel):
///   1. softcap: `s = c tanh(s / c)`;
///   2. ALiBi:   `s += -m_h (pos_q - pos_k)`;
///   3. masks:   a key that the causal / window rule, an empty cache slot, or a -inf in the
///               attention or key-padding mask blocks is *selected* to -inf, whatever s is (a NaN
///               or Inf in a masked key's K never reaches the softmax); otherwise
///               `s += (attn_mask + key_padding)`, added in that order as PyTorch merges them.
/// IEEE arithmetic does the rest: an allowed score that is NaN or +inf (NaN inputs, overflow)
/// makes the row NaN; see softmax.hpp.
template <class Scalar, class KV>
void finish_scores(const AttentionProblem<Scalar, KV>& p, Index n, Index h, Index i, Index j0, Index width,
                   Scalar* s) {
  const Scalar neg_inf = -std::numeric_limits<Scalar>::infinity();
  Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>> row(s, width);
  if (p.softcap > 0) row = p.softcap * (row / p.softcap).tanh();
  const Index qpos = p.q_pos0 + i;
  if (p.alibi) {
    const Scalar slope = p.alibi[p.head_offset + h];
    for (Index c = 0; c < width; ++c) s[c] -= slope * Scalar(qpos - p.key_position(j0 + c));
  }
  const Scalar* dense = p.mask_slice(n, h);
  if (dense) dense += i * p.k_len + j0;
  const Scalar* padding = p.key_padding ? p.key_padding + n * p.k_len + j0 : nullptr;
  if (p.k_positions) {
    for (Index c = 0; c < width; ++c) {
      const Index kpos = p.k_positions[j0 + c];
      if (!p.position_allowed(qpos, kpos)) s[c] = neg_inf;
    }
  } else {
    // Contiguous positions: the allowed keys of row i are one interval.
    const Index begin = std::clamp<Index>(p.key_begin(i) - j0, 0, width);
    const Index end = std::clamp<Index>(p.key_end(i) - j0, begin, width);
    for (Index c = 0; c < begin; ++c) s[c] = neg_inf;
    for (Index c = end; c < width; ++c) s[c] = neg_inf;
  }
  if (dense || padding) {
    for (Index c = 0; c < width; ++c) {
      Scalar m = dense ? dense[c] : Scalar(0);
      if (padding) m = m + padding[c];
      // -inf selects rather than adds: s may be NaN, and NaN + -inf is NaN.
      s[c] = (m == neg_inf || s[c] == neg_inf) ? neg_inf : s[c] + m;
    }
  }
}

/// `Scalar(x)` for a cache element that may be Eigen::half / Eigen::bfloat16 (which convert
/// through float).
template <class Scalar, class KV>
Scalar to_scalar(const KV& x) {
  if constexpr (std::is_same<KV, Scalar>::value || std::is_floating_point<KV>::value)
    return static_cast<Scalar>(x);
  else
    return static_cast<Scalar>(static_cast<float>(x));
}

}  // namespace detail
}  // namespace mha
