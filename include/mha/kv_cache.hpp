#pragma once
/// \file kv_cache.hpp
/// `KVCache`, the keys and values of past tokens of one attention layer, kept for token-by-token
/// generation, in float, double, bf16 or f16.

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "detail/convert.hpp"
#include "types.hpp"

namespace mha {

/// How a KVCache assigns slots to tokens.
enum class KVCacheMode {
  /// Slot j holds the token at absolute position j; appending past the capacity is an error.
  linear,
  /// Slot `p % capacity` holds the token at absolute position p: the cache keeps the last
  /// `capacity` tokens, for sliding-window layers (as Mistral's rolling buffer cache).
  ring
};

/// The keys and values of the tokens seen so far by one attention layer, for every batch entry and
/// key/value head, in a buffer of fixed capacity allocated once, at construction.
///
/// **Layout** (what the attention kernel reads): keys are `[N][Hkv][C][d]`, values `[N][Hkv][C][dv]`,
/// row-major and contiguous: row (slot) stride d (dv), head stride `C*d` (`C*dv`), batch stride
/// `Hkv*C*d` (`Hkv*C*dv`). `keys(n, g)` points at the `[C, d]` block of batch entry n, kv head g.
/// Every batch entry holds the same number of tokens at the same positions; `slot_positions()`
/// `[C]` gives the absolute position of each slot, -1 for a slot that holds no token.
///
/// **Modes.** linear: token p is in slot p; `length()` is the number of tokens appended, at most
/// C. ring: token p is in slot `p % C`; the cache keeps the last `min(position(), C)` tokens. A
/// sliding-window layer with window W that appends up to T tokens per call needs
/// `C >= W - 1 + T`: the oldest key the first new query sees (position `p0 - W + 1`) must survive
/// the writes of the T new tokens.
///
/// **Storage** is float, double, `Eigen::bfloat16` or `Eigen::half` (f16). append() converts the
/// layer's keys and values (float or double) to Storage, rounding to nearest with ties to even,
/// correctly rounded from double too (see detail/convert.hpp); NaN stays NaN, +-Inf stays +-Inf, a
/// value too large for f16 (|x| >= 65520) becomes +-Inf. Reading back (`detail::convert_rows`) is
/// exact.
///
/// **Memory**: `N * Hkv * C * (d + dv) * sizeof(Storage)` bytes of keys and values, plus
/// `C * sizeof(std::int64_t)` for the slot positions. Slots never written hold zeros. Nothing is
/// allocated after construction: append, crop and clear only write into this memory.
///
/// **Errors**: a non-positive size at construction, an append of the wrong shape (shape_error,
/// `[mha.shape]`); an append past the capacity (capacity_error, `[mha.cache]`); crop in ring mode
/// or to more tokens than held (argument_error, `[mha.argument]`). A failed call leaves the cache
/// as it was.
template <class Storage_>
class KVCache {
  static_assert(detail::is_cache_storage<Storage_>::value,
                "KVCache storage is float, double, Eigen::bfloat16 or Eigen::half");

 public:
  /// Element type of the stored keys and values: float, double, `Eigen::bfloat16` or
  /// `Eigen::half` (see **Storage** in the class comment).
  using Storage = Storage_;

  /// A cache for `batch` (N) sequences, `num_kv_heads` (Hkv) key/value heads, `capacity` (C) slots
  /// per head, keys of `head_dim` (d) and values of `v_head_dim` (dv; 0 means d) features.
  /// Throws shape_error (`[mha.shape]`) unless N, Hkv, C, d > 0 and dv >= 0; argument_error
  /// (`[mha.argument]`) when the buffer size `N*Hkv*C*(d+dv)` does not fit in an Index, or when
  /// mode is not a KVCacheMode enumerator.
  KVCache(Index batch, Index num_kv_heads, Index capacity, Index head_dim, Index v_head_dim = 0,
          KVCacheMode mode = KVCacheMode::linear)
      : m_batch(batch),
        m_num_kv_heads(num_kv_heads),
        m_capacity(capacity),
        m_head_dim(head_dim),
        m_v_head_dim(v_head_dim == 0 ? head_dim : v_head_dim),
        m_mode(mode) {
    if (batch <= 0 || num_kv_heads <= 0 || capacity <= 0 || head_dim <= 0 || v_head_dim < 0)
      MHA_THROW(shape_error,
                "[mha.shape] KVCache: expected positive [batch, num_kv_heads, capacity, head_dim] and "
                "v_head_dim >= 0 (0: head_dim), got [" +
                    std::to_string(batch) + ", " + std::to_string(num_kv_heads) + ", " +
                    std::to_string(capacity) + ", " + std::to_string(head_dim) + "] and " +
                    std::to_string(v_head_dim));
    if (mode != KVCacheMode::linear && mode != KVCacheMode::ring)
      MHA_THROW(argument_error, "[mha.argument] KVCache: unknown mode " +
                                    std::to_string(static_cast<int>(mode)));
    // The product in double: in Index it could overflow before the comparison.
    const double values = double(batch) * double(num_kv_heads) * double(capacity) *
                          (double(m_head_dim) + double(m_v_head_dim));
    if (values > 4.0e18)
      MHA_THROW(argument_error, "[mha.argument] KVCache: N*Hkv*C*(d+dv) = " + std::to_string(values) +
                                    " values do not fit in memory");
    m_keys.assign(static_cast<std::size_t>(batch * num_kv_heads * capacity * m_head_dim),
                  detail::convert_value<Storage>(0.0f));
    m_values.assign(static_cast<std::size_t>(batch * num_kv_heads * capacity * m_v_head_dim),
                    detail::convert_value<Storage>(0.0f));
    m_slot_positions.assign(static_cast<std::size_t>(capacity), -1);
  }

  ///@{
  /// The sizes and mode fixed at construction: N, Hkv, C (slots per head), d (features of a key),
  /// dv (features of a value; d when constructed with v_head_dim = 0), and the slot mode.
  Index batch() const { return m_batch; }
  Index num_kv_heads() const { return m_num_kv_heads; }
  Index capacity() const { return m_capacity; }
  Index head_dim() const { return m_head_dim; }
  Index v_head_dim() const { return m_v_head_dim; }
  KVCacheMode mode() const { return m_mode; }
  ///@}

  /// Slots holding a token: linear: tokens appended (after crop: kept); ring: `min(position(), C)`.
  Index length() const { return m_mode == KVCacheMode::ring ? std::min(m_position, m_capacity) : m_position; }
  /// Tokens appended since construction or clear(), minus those cropped: the absolute position of
  /// the next token.
  Index position() const { return m_position; }
  /// Absolute position of the oldest token held, `position() - length()` (0 in linear mode).
  Index first_position() const { return m_position - length(); }
  /// The most tokens the next append() takes: `C - length()` in linear mode, C in ring mode.
  Index available() const { return m_mode == KVCacheMode::ring ? m_capacity : m_capacity - m_position; }
  /// Slot holding absolute position p (`p % C` in ring mode, p in linear mode); meaningful only for
  /// `first_position() <= p < position()`.
  Index slot(Index p) const { return m_mode == KVCacheMode::ring ? p % m_capacity : p; }
  /// Bytes held: keys, values and slot positions.
  std::size_t memory_bytes() const {
    return (m_keys.size() + m_values.size()) * sizeof(Storage) + m_slot_positions.size() * sizeof(std::int64_t);
  }

  /// Appends T new tokens for every batch entry: `keys [N*T, Hkv*d]` and `values [N*T, Hkv*dv]`,
  /// row `n*T + t` is token t of entry n and kv head g is columns `[g*d, (g+1)*d)` (the layout of
  /// a `[N, T, Hkv*d]` tensor and of the k/v projections' output). They get absolute positions
  /// `position() .. position() + T - 1`; values are rounded to Storage (nearest even). T = 0 does
  /// nothing.
  ///
  /// Throws shape_error when keys is not `[N*T, Hkv*d]` for some T or values is not
  /// `[rows of keys, Hkv*dv]`; capacity_error when linear and `length() + T > C`, or ring and `T > C`.
  /// Never allocates (an argument that is not row-major with unit column stride is copied by
  /// Eigen::Ref when binding, before the call).
  template <class Scalar>
  void append(const Eigen::Ref<const Matrix<Scalar>>& keys, const Eigen::Ref<const Matrix<Scalar>>& values) {
    static_assert(std::is_same<Scalar, float>::value || std::is_same<Scalar, double>::value,
                  "KVCache::append takes float or double keys and values");
    if (keys.rows() % m_batch != 0)
      MHA_THROW(shape_error, "[mha.shape] KVCache::append keys: expected [N*T, Hkv*d] with N = " +
                                 std::to_string(m_batch) + ", Hkv*d = " + std::to_string(m_num_kv_heads * m_head_dim) +
                                 ", got " + detail::shape_string(keys.rows(), keys.cols()) + " (" +
                                 std::to_string(keys.rows()) + " rows do not split into batch " +
                                 std::to_string(m_batch) + ")");
    detail::check_shape("KVCache::append keys [N*T, Hkv*d]", -1, m_num_kv_heads * m_head_dim, keys.rows(),
                        keys.cols());
    detail::check_shape("KVCache::append values [N*T, Hkv*dv]", keys.rows(), m_num_kv_heads * m_v_head_dim,
                        values.rows(), values.cols());
    const Index T = keys.rows() / m_batch;
    if (m_mode == KVCacheMode::linear && m_position + T > m_capacity)
      MHA_THROW(capacity_error, "[mha.cache] KVCache::append: " + std::to_string(T) + " new tokens after " +
                                    std::to_string(m_position) + " exceed the capacity " +
                                    std::to_string(m_capacity) + " (linear mode)");
    if (m_mode == KVCacheMode::ring && T > m_capacity)
      MHA_THROW(capacity_error, "[mha.cache] KVCache::append: " + std::to_string(T) +
                                    " new tokens exceed the capacity " + std::to_string(m_capacity) +
                                    " (ring mode takes at most C tokens per call)");
    if (T == 0) return;

    // The T new tokens go to slots first, first+1, ...; in ring mode the run may wrap past the
    // last slot to slot 0, so it is written as (at most) two contiguous runs of rows.
    const Index first = slot(m_position);
    const Index run1 = std::min(T, m_capacity - first);
    const Index d = m_head_dim, dv = m_v_head_dim;
    for (Index n = 0; n < m_batch; ++n) {
      for (Index g = 0; g < m_num_kv_heads; ++g) {
        const Scalar* k = keys.data() + n * T * keys.outerStride() + g * d;      // [T, d], stride outerStride
        const Scalar* v = values.data() + n * T * values.outerStride() + g * dv;  // [T, dv]
        Storage* kc = this->keys(n, g);    // [C, d]
        Storage* vc = this->values(n, g);  // [C, dv]
        detail::convert_rows(k, keys.outerStride(), run1, d, kc + first * d, d);
        detail::convert_rows(v, values.outerStride(), run1, dv, vc + first * dv, dv);
        if (run1 < T) {
          detail::convert_rows(k + run1 * keys.outerStride(), keys.outerStride(), T - run1, d, kc, d);
          detail::convert_rows(v + run1 * values.outerStride(), values.outerStride(), T - run1, dv, vc, dv);
        }
      }
    }
    for (Index t = 0; t < T; ++t) m_slot_positions[static_cast<std::size_t>(slot(m_position + t))] = m_position + t;
    m_position += T;
  }

  /// append() for any row-major Eigen matrices, maps or blocks of the same Scalar (deduces it).
  template <class DerivedK, class DerivedV,
            class = std::enable_if_t<std::is_base_of<Eigen::MatrixBase<DerivedK>, DerivedK>::value &&
                                     std::is_base_of<Eigen::MatrixBase<DerivedV>, DerivedV>::value>>
  void append(const DerivedK& keys, const DerivedV& values) {
    using Scalar = typename DerivedK::Scalar;
    static_assert(std::is_same<Scalar, typename DerivedV::Scalar>::value,
                  "KVCache::append: keys and values must have the same scalar type");
    append<Scalar>(Eigen::Ref<const Matrix<Scalar>>(keys), Eigen::Ref<const Matrix<Scalar>>(values));
  }

  /// Linear mode only: keeps the first `length` tokens (positions `[0, length)`), so the next
  /// append writes position `length` (speculative decoding rolls back rejected tokens this way).
  /// Throws argument_error in ring mode (the dropped slots were overwritten) or unless
  /// `0 <= length <= length()`.
  void crop(Index length) {
    if (m_mode == KVCacheMode::ring)
      MHA_THROW(argument_error, "[mha.argument] KVCache::crop: not available in ring mode");
    if (length < 0 || length > m_position)
      MHA_THROW(argument_error, "[mha.argument] KVCache::crop: expected a length in [0, " +
                                    std::to_string(m_position) + "], got " + std::to_string(length));
    for (Index j = length; j < m_position; ++j) m_slot_positions[static_cast<std::size_t>(j)] = -1;
    m_position = length;
  }

  /// Forgets every token: length() and position() become 0, every slot position -1. The stored
  /// keys and values are left in place (not read again before being overwritten).
  void clear() {
    std::fill(m_slot_positions.begin(), m_slot_positions.end(), std::int64_t(-1));
    m_position = 0;
  }

  ///@{
  /// Keys of batch entry n, kv head `kv_head`: `[C, d]` Storage, row (slot) stride d; slot j holds
  /// absolute position `slot_positions()[j]`. Requires `0 <= n < N` and `0 <= kv_head < Hkv`,
  /// checked only by a debug assertion (MHA_ASSERT): these are the kernel's loop indices, not user
  /// input. append(), crop() and clear() never reallocate, so the pointer stays valid across them.
  const Storage* keys(Index n, Index kv_head) const { return m_keys.data() + key_offset(n, kv_head); }
  Storage* keys(Index n, Index kv_head) { return m_keys.data() + key_offset(n, kv_head); }
  ///@}
  ///@{
  /// Values of batch entry n, kv head `kv_head`: `[C, dv]` Storage, row (slot) stride dv; same
  /// slots, preconditions and pointer validity as keys().
  const Storage* values(Index n, Index kv_head) const { return m_values.data() + value_offset(n, kv_head); }
  Storage* values(Index n, Index kv_head) { return m_values.data() + value_offset(n, kv_head); }
  ///@}

  /// Absolute position of every slot, `[C]`; -1 for a slot that holds no token. Linear mode: slot
  /// j holds position j for j < length(). Shared by all batch entries and heads.
  const std::int64_t* slot_positions() const { return m_slot_positions.data(); }

 private:
  Index key_offset(Index n, Index g) const {
    MHA_ASSERT(n >= 0 && n < m_batch && g >= 0 && g < m_num_kv_heads);
    return (n * m_num_kv_heads + g) * m_capacity * m_head_dim;
  }
  Index value_offset(Index n, Index g) const {
    MHA_ASSERT(n >= 0 && n < m_batch && g >= 0 && g < m_num_kv_heads);
    return (n * m_num_kv_heads + g) * m_capacity * m_v_head_dim;
  }

  Index m_batch;
  Index m_num_kv_heads;
  Index m_capacity;
  Index m_head_dim;
  Index m_v_head_dim;
  KVCacheMode m_mode;
  Index m_position = 0;  // tokens appended (minus cropped): the next token's absolute position
  // Aligned (EIGEN_MAX_ALIGN_BYTES) so that the kernel's packet loads of a head start aligned:
  // f32 rows 16 bytes off a cache line made the decode kernel's value pass 1.5x slower (16.4
  // against 11.1 ns per key, d = 128, 4 query rows, in cache; AVX-512, each load then spans
  // two lines).
  std::vector<Storage, Eigen::aligned_allocator<Storage>> m_keys;    // [N][Hkv][C][d]
  std::vector<Storage, Eigen::aligned_allocator<Storage>> m_values;  // [N][Hkv][C][dv]
  std::vector<std::int64_t> m_slot_positions;                        // [C], -1 = empty
};

}  // namespace mha
