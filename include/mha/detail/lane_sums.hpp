#pragma once
// sum_lanes: P accumulator packets of P lanes each -> one packet of their P horizontal sums, the
// last step of the decode micro-kernel's scores (streaming_kernel.hpp).
//
// Portable form: Eigen's ptranspose (packet t then holds lane t of every accumulator), then the P
// packets added as a balanced tree. On AVX-512 and AVX float the transpose and the additions are
// fused into one halving tree instead: each level pairs packets, moves matching halves side by
// side with one shuffle each and adds them, so P = 16 takes 30 shuffles + 15 additions, 4
// additions deep, where Eigen 3.4's 16 x 16 transpose alone takes about 110 shuffles, extracts and
// inserts. The shuffle tree leaves the sums in a fixed permutation of the lanes; the accumulators
// are fed to it in the inverse order, so lane k is always accumulator k.
//
// Why it matters (perf annotate, decode bench, bf16 cache, one thread): with the transpose and a
// serial chain of 15 additions, those additions alone drew 11% of the scores' samples and the
// shuffles 15%.
//
// Summation order: every accumulator's lanes are added in the same fixed tree, whatever its slot,
// so a score does not depend on how the P accumulators were grouped into rows and keys.

#include <Eigen/Core>

#if defined(EIGEN_VECTORIZE_AVX)
#include <immintrin.h>
#endif

#include "packet_warnings_off.hpp"

namespace mha {
namespace detail {

/// Lane k of the result is the sum of the P lanes of `block.packet[k]` (P = the packet size).
template <class Packet, int N>
EIGEN_ALWAYS_INLINE Packet sum_lanes(Eigen::internal::PacketBlock<Packet, N> block) {
  static_assert(N == Eigen::internal::unpacket_traits<Packet>::size, "one accumulator per lane");
  Eigen::internal::ptranspose(block);
  for (int width = 1; width < N; width *= 2)
    for (int t = 0; t + width < N; t += 2 * width)
      block.packet[t] = Eigen::internal::padd(block.packet[t], block.packet[t + width]);
  return block.packet[0];
}

#if defined(EIGEN_VECTORIZE_AVX512)
template <>
EIGEN_ALWAYS_INLINE Eigen::internal::Packet16f sum_lanes(Eigen::internal::PacketBlock<Eigen::internal::Packet16f, 16> block) {
  // The tree below leaves slot s's sum in lane 4 (s % 4) + s / 4; slot s is fed accumulator
  // 4 (s % 4) + s / 4 (a 4 x 4 transpose of indices is its own inverse).
  auto slot = [&](int s) { return block.packet[4 * (s % 4) + s / 4]; };
  __m512 halves[8];  // [slot 2m: 8 partial sums | slot 2m + 1: 8]
  for (int m = 0; m < 8; ++m) {
    const __m512 a = slot(2 * m), b = slot(2 * m + 1);
    halves[m] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  }
  __m512 quarters[4];  // 128-bit block c: slot 4n + c, 4 partial sums
  for (int n = 0; n < 4; ++n) {
    const __m512 a = halves[2 * n], b = halves[2 * n + 1];
    quarters[n] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
  }
  __m512 pairs[2];  // 128-bit block c: [slot 8o + c: 2 partial sums | slot 8o + 4 + c: 2]
  for (int o = 0; o < 2; ++o) {
    const __m512 a = quarters[2 * o], b = quarters[2 * o + 1];
    pairs[o] = _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x44), _mm512_shuffle_ps(a, b, 0xEE));
  }
  // 128-bit block c: slots c, 4 + c, 8 + c, 12 + c.
  return _mm512_add_ps(_mm512_shuffle_ps(pairs[0], pairs[1], 0x88), _mm512_shuffle_ps(pairs[0], pairs[1], 0xDD));
}
#endif

#if defined(EIGEN_VECTORIZE_AVX)
template <>
EIGEN_ALWAYS_INLINE Eigen::internal::Packet8f sum_lanes(Eigen::internal::PacketBlock<Eigen::internal::Packet8f, 8> block) {
  // The tree below leaves slot s's sum in lane 4 (s % 2) + s / 2; slot s is fed that accumulator.
  auto slot = [&](int s) { return block.packet[4 * (s % 2) + s / 2]; };
  __m256 halves[4];  // [slot 2m: 4 partial sums | slot 2m + 1: 4]
  for (int m = 0; m < 4; ++m) {
    const __m256 a = slot(2 * m), b = slot(2 * m + 1);
    halves[m] = _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
  }
  __m256 pairs[2];  // 128-bit half c: [slot 4n + c: 2 partial sums | slot 4n + 2 + c: 2]
  for (int n = 0; n < 2; ++n) {
    const __m256 a = halves[2 * n], b = halves[2 * n + 1];
    pairs[n] = _mm256_add_ps(_mm256_shuffle_ps(a, b, 0x44), _mm256_shuffle_ps(a, b, 0xEE));
  }
  // 128-bit half c: slots c, 2 + c, 4 + c, 6 + c.
  return _mm256_add_ps(_mm256_shuffle_ps(pairs[0], pairs[1], 0x88), _mm256_shuffle_ps(pairs[0], pairs[1], 0xDD));
}
#endif

}  // namespace detail
}  // namespace mha

#include "packet_warnings_restore.hpp"
