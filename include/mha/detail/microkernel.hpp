#pragma once
// The register-blocked micro-kernel: one MR x NR tile of C from one packed A panel and one packed
// B panel (layouts in pack.hpp), in Eigen's packet primitives, so the same source is SSE, AVX2,
// AVX-512 or NEON code for float and double. Everything else in the GEMM (packing, cache
// blocking, edges, threads) is in pack.hpp and gemm_driver.hpp.

#include <cstddef>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "pack.hpp"

// Forces a lambda's call operator inline. GCC's inlining limits grow with the translation unit,
// so in a large one (a file that also includes LibTorch) it stopped inlining the micro-kernel's
// lambdas, and the accumulator tile went to the stack: the out-of-line copy the linker kept for
// every file ran 2.4x slower (measured in mha_bench, whose bench_decoder.cpp includes torch).
#if defined(__GNUC__) || defined(__clang__)
#define MHA_LAMBDA_INLINE __attribute__((always_inline))
#else
#define MHA_LAMBDA_INLINE
#endif

namespace mha {
namespace detail {

// Calls f(std::integral_constant<int, I>) for I = 0 .. N-1, unrolled by construction (a fold
// expression), so every accumulator index is a compile-time constant and the accumulators stay in
// registers at any optimisation level that keeps variables in registers at all.
template <class F, std::size_t... I>
EIGEN_ALWAYS_INLINE void unroll_impl(F&& f, std::index_sequence<I...>) {
  (f(std::integral_constant<int, int(I)>()), ...);
}
template <int N, class F>
EIGEN_ALWAYS_INLINE void unroll(F&& f) {
  unroll_impl(f, std::make_index_sequence<std::size_t(N)>());
}

/// `C [MR, NR] = alpha * A B` (or `C += alpha * A B` when `accumulate`) for one tile: `a` is a
/// packed A panel `[MR, kc]` (kc steps of MR values), `b` a packed B panel `[kc, NR]` (kc steps
/// of NR values, aligned to the packet size), C row-major with row stride ldc, any alignment.
/// Every row and column of the tile is written: the driver sends edge tiles to a local tile.
template <class Scalar>
EIGEN_DONT_INLINE void micro_kernel(Index kc, const Scalar* EIGEN_RESTRICT a, const Scalar* EIGEN_RESTRICT b,
                                    Scalar alpha, Scalar* c, Index ldc, bool accumulate) {
  using Blocking = GemmBlocking<Scalar>;
  using Packet = typename Blocking::Packet;
  constexpr int MR = Blocking::MR, NP = Blocking::NP, PS = Blocking::PacketSize, NR = Blocking::NR;
  using Eigen::internal::padd;
  using Eigen::internal::pload;
  using Eigen::internal::ploadu;
  using Eigen::internal::pmadd;
  using Eigen::internal::pmul;
  using Eigen::internal::pset1;
  using Eigen::internal::pstoreu;
  MHA_ASSERT(reinterpret_cast<std::uintptr_t>(b) % (sizeof(Scalar) * PS) == 0);

  Packet acc[MR][NP];  // the C tile, MR * NP registers
  unroll<MR>([&](auto i) MHA_LAMBDA_INLINE { unroll<NP>([&](auto j) MHA_LAMBDA_INLINE { acc[i][j] = pset1<Packet>(Scalar(0)); }); });

  // One step of the k loop: NP packets of B against MR broadcasts of A, MR * NP FMAs.
  auto step = [&](Index p) MHA_LAMBDA_INLINE {
    Packet bp[NP];
    unroll<NP>([&](auto j) MHA_LAMBDA_INLINE { bp[j] = pload<Packet>(b + p * NR + j * PS); });
    unroll<MR>([&](auto i) MHA_LAMBDA_INLINE {
      const Packet ai = pset1<Packet>(a[p * MR + i]);
      unroll<NP>([&](auto j) MHA_LAMBDA_INLINE { acc[i][j] = pmadd(ai, bp[j], acc[i][j]); });
    });
  };
  Index p = 0;
  for (; p + 4 <= kc; p += 4) {
    step(p);
    step(p + 1);
    step(p + 2);
    step(p + 3);
  }
  for (; p < kc; ++p) step(p);

  const Packet alpha_p = pset1<Packet>(alpha);
  unroll<MR>([&](auto i) MHA_LAMBDA_INLINE {
    unroll<NP>([&](auto j) MHA_LAMBDA_INLINE {
      Scalar* dst = c + i * ldc + j * PS;
      Packet r = pmul(alpha_p, acc[i][j]);
      if (accumulate) r = padd(r, ploadu<Packet>(dst));
      pstoreu(dst, r);
    });
  });
}

/// An edge tile: the first `rows` x `cols` of the MR x NR tile, starting at tile column `col0`,
/// go to C (`C (+)= alpha * A B` as in micro_kernel); the rest is computed into a local tile and
/// dropped. The scalar path for the m and n tails and for column ranges that start inside a panel.
template <class Scalar>
void micro_kernel_edge(Index kc, const Scalar* a, const Scalar* b, Scalar alpha, Scalar* c, Index ldc,
                       bool accumulate, Index rows, Index col0, Index cols) {
  constexpr int MR = GemmBlocking<Scalar>::MR, NR = GemmBlocking<Scalar>::NR;
  alignas(64) Scalar tile[MR * NR];  // [MR, NR]
  micro_kernel(kc, a, b, alpha, tile, Index(NR), false);
  for (Index i = 0; i < rows; ++i) {
    const Scalar* src = tile + i * NR + col0;
    Scalar* dst = c + i * ldc;
    if (accumulate)
      for (Index j = 0; j < cols; ++j) dst[j] += src[j];
    else
      for (Index j = 0; j < cols; ++j) dst[j] = src[j];
  }
}

}  // namespace detail
}  // namespace mha
