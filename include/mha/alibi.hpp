#pragma once
/// \file alibi.hpp
/// ALiBi slopes (Press et al., 2022, "Train Short, Test Long: Attention with Linear Biases").
///
/// ALiBi adds `-m_h * (pos_q - pos_k)` to the scaled score of query head h (after any softcap,
/// before masks and softmax): a linear penalty on distance, with one slope per head. BLOOM's
/// `build_alibi_tensor` adds `m_h * pos_k` instead, which differs by `m_h * pos_q`, a constant
/// along each softmax row, so both give the same attention.

#include <cmath>
#include <string>

#include "types.hpp"

namespace mha {

/// The ALiBi slope of every head, `[num_heads]`, computed in double and rounded to Scalar.
/// With H = num_heads and n = 2^floor(log2 H), the largest power of two <= H:
///
///     m_h = 2^(-8 (h + 1) / n)           for h < n,
///     m_h = 2^(-4 (2 (h - n) + 1) / n)   for n <= h < H,
///
/// i.e. the geometric sequence of the paper for n heads, then every other slope of the sequence
/// for 2n heads. This is the rule of the authors' `get_slopes` and of Hugging Face BLOOM's
/// `build_alibi_tensor`. Throws argument_error (`[mha.argument]`) when num_heads <= 0.
template <class Scalar = double>
RowVector<Scalar> alibi_slopes(Index num_heads) {
  if (num_heads <= 0)
    MHA_THROW(argument_error,
              "[mha.argument] alibi_slopes: num_heads must be > 0, got " + std::to_string(num_heads));
  Index n = 1;  // largest power of two <= num_heads, found by doubling (exact, no log2 rounding)
  while (2 * n <= num_heads) n *= 2;
  RowVector<Scalar> slopes(num_heads);  // [H]
  const double nd = static_cast<double>(n);
  for (Index h = 0; h < num_heads; ++h) {
    const double exponent = h < n ? -8.0 * static_cast<double>(h + 1) / nd
                                  : -4.0 * static_cast<double>(2 * (h - n) + 1) / nd;
    slopes[h] = static_cast<Scalar>(std::exp2(exponent));
  }
  return slopes;
}

}  // namespace mha
