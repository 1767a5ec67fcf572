#pragma once
// The decode micro-kernel: the two products of a tile task with few stacked query rows (a decode
// step: the g query heads of a kv head x a few new tokens) against keys and values read once,
// where they lie (a KV cache or a projection buffer), a bf16 / f16 cache widened in registers:
//
//   scores   s [M, width]  = q [M, d] k^T      k [width, d], rows k_ld apart
//   values   acc [M, dv]  += p [M, width] v    v [width, dv], rows v_ld apart
//
// Decoding is bound by reading K and V once (2 Hkv S d elements a step), with only M <= 8 query
// rows to reuse each element for: packing them for a GEMM would read and write every byte once
// more. What the kernel must do is keep the arithmetic below the memory time and the loads ahead
// of it:
//   - scores: a block of R query rows x KB keys accumulates R KB dot products in R KB registers
//     across d (lanes hold d); each key packet is loaded (and widened) once for the R rows, keys
//     are read one after the other. R KB is the packet size P, and one transposing reduction of
//     the P accumulators (sum_lanes, lane_sums.hpp) turns them into one packet of P scores: a
//     horizontal sum per score would cost as much as its dot product.
//   - values: R rows x C packets of acc stay in registers across every key of the tile: per key,
//     C value packets (widened once) and R broadcast weights feed R C FMAs.
//   - both passes prefetch into L2 the rows they will read next (RowPrefetch).
// Summation orders are fixed by the data layout alone: a score sums d in lanes (d in steps of P),
// then the P lanes in one fixed tree (sum_lanes), then the d % P tail; an acc element adds keys
// in order. They do not depend on M, on how rows are grouped, on the tile edge, or on threads.
//
// Measured in cache (one thread, S = 2048, H 32, Hkv 8, d 128, /tmp harness around run_tiled):
// 30 ns per key and kv head for a bf16 cache, 36 for f32; skipping the bf16 widening altogether
// (wrong values, same loads) saved 2-5%, so the arithmetic, not the conversion, sets the bf16
// time: 64 FMAs a key plus the transposes and the softmax. Fusing the transpose into the lane
// sums (sum_lanes) then took the bf16 decode bench (S = 4096, one thread, from DRAM) from 1.33 to
// 1.20-1.27 ms.
//
// Eigen's packet primitives throughout, except the f16 -> float widening, which uses the F16C
// instructions when the compiler targets them: Eigen 3.4's own Packet16h / Packet8h conversion is
// scalar under GCC (see convert.hpp).

#include <algorithm>
#include <type_traits>

#include <Eigen/Core>

#include "attention_problem.hpp"
#include "lane_sums.hpp"
#include "microkernel.hpp"

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "packet_warnings_off.hpp"

namespace mha {
namespace detail {

/// Loads one packet of Scalar from P contiguous KV values (unaligned), widening bf16 / f16 in
/// registers where the build has a packet conversion; elsewhere (a double layer over a float or
/// 16-bit cache, f16 without F16C, a build without AVX) the values go one by one through an
/// aligned buffer.
template <class Packet, class KV, class = void>
struct WideLoad {
  static Packet load(const KV* src) {
    using Scalar = typename Eigen::internal::unpacket_traits<Packet>::type;
    constexpr int P = Eigen::internal::unpacket_traits<Packet>::size;
    alignas(64) Scalar values[P];
    for (int i = 0; i < P; ++i) values[i] = to_scalar<Scalar>(src[i]);
    return Eigen::internal::pload<Packet>(values);
  }
};

template <class Packet, class KV>
struct WideLoad<Packet, KV,
                std::enable_if_t<std::is_same<KV, typename Eigen::internal::unpacket_traits<Packet>::type>::value>> {
  static EIGEN_ALWAYS_INLINE Packet load(const KV* src) { return Eigen::internal::ploadu<Packet>(src); }
};

#if defined(EIGEN_VECTORIZE_AVX512)
template <>
struct WideLoad<Eigen::internal::Packet16f, Eigen::bfloat16, void> {
  static EIGEN_ALWAYS_INLINE Eigen::internal::Packet16f load(const Eigen::bfloat16* src) {
    using namespace Eigen::internal;
    return pcast<Packet16bf, Packet16f>(ploadu<Packet16bf>(src));
  }
};
#if defined(__F16C__)
template <>
struct WideLoad<Eigen::internal::Packet16f, Eigen::half, void> {
  static EIGEN_ALWAYS_INLINE Eigen::internal::Packet16f load(const Eigen::half* src) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)));
  }
};
#endif
#elif defined(EIGEN_VECTORIZE_AVX)
template <>
struct WideLoad<Eigen::internal::Packet8f, Eigen::bfloat16, void> {
  static EIGEN_ALWAYS_INLINE Eigen::internal::Packet8f load(const Eigen::bfloat16* src) {
    using namespace Eigen::internal;
    return pcast<Packet8bf, Packet8f>(ploadu<Packet8bf>(src));
  }
};
#if defined(__F16C__)
template <>
struct WideLoad<Eigen::internal::Packet8f, Eigen::half, void> {
  static EIGEN_ALWAYS_INLINE Eigen::internal::Packet8f load(const Eigen::half* src) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  }
};
#endif
#endif

/// Register blocking of the decode micro-kernel for one Scalar.
template <class Scalar>
struct StreamingBlocking {
  using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
  static constexpr int P = Eigen::internal::unpacket_traits<Packet>::size;
  /// Score blocks of R rows (4, 2 or 1) take P / R keys, so that R KB = P accumulators transpose
  /// into one packet of scores; without vectors (P < R) a block is R x 1 and each sum a predux.
  static constexpr int keys_per_block(int rows) { return P >= rows ? P / rows : 1; }
  /// Value packets per acc block: R C accumulators + C value packets + a broadcast fit the
  /// register file (32 vector registers: 4 x 4 + 4 + 1; 16: 4 x 2 + 2 + 1).
  static constexpr int value_packets = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS >= 32 ? 4 : 2;
};

/// Fetches the cache line at `address` into L2 (a hint; no effect without GCC/Clang builtins).
EIGEN_ALWAYS_INLINE void prefetch_l2(const char* address) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(address, 0, 1);
#else
  (void)address;
#endif
}

/// Rows of one operand: row j is bytes [0, bytes) from `data + j * stride`.
struct RowRange {
  const char* data = nullptr;
  Index stride = 0, bytes = 0, rows = 0;

  template <class T>
  static RowRange of(const T* first, Index row_stride, Index cols, Index count) {
    return {reinterpret_cast<const char*>(first), row_stride * Index(sizeof(T)), cols * Index(sizeof(T)), count};
  }
  EIGEN_ALWAYS_INLINE void fetch(Index j) const {
    if (j >= rows) return;
    const char* r = data + j * stride;
    // Into L2, not L1: a 128-key tile of K or V is 32-64 KiB, as large as L1 (prefetching into L1
    // ran 1.4x slower in f32).
    for (Index b = 0; b < bytes; b += 64) prefetch_l2(r + b);
  }
};

/// Software prefetch `distance` rows ahead of the kernel, in the order it reads them: this
/// operand's rows, then `next`'s (the V tile after a K tile, the next K tile after a V tile).
///
/// Why: with the hardware prefetchers alone, both passes stalled on DRAM (perf annotate: the
/// hottest instructions were the first uses of freshly loaded K and V rows), K and V alternating
/// every tile as two separate streams. Measured on
/// the decode bench (S = 4096, H 32, Hkv 8, d 128, one thread, interleaved runs, ms f32 / bf16):
/// no prefetch 2.8-2.9 / 2.0, 8 rows ahead 2.2 / 1.7, 24 rows 2.23-2.35 / 1.41-1.50, 32 rows
/// 2.25-2.35 / 1.45-1.47, 64 rows 2.38 / 1.54-1.57. Within a tile the hardware prefetchers
/// keep up with f32 rows but not with bf16 ones: prefetching only across the tile edge (the next
/// operand's rows) left f32 at 2.05-2.06 ms and took bf16 from 1.21-1.40 to 1.48-1.52 ms.
/// Neither the tile width (key tiles of 32 to 512 rows instead of 128: 1.24-1.36 ms bf16
/// against 1.23-1.29; 32-row tiles put K and V requests closest together) nor prefetching the
/// next split-K chunk's first K rows (1.21-1.24 against 1.24-1.27 ms) moved the bf16 time, nor
/// did 16-key tiles with K and V each prefetched as one stream over the whole task (1.29-1.38
/// ms; with the softmax replaced by a scaling 1.14-1.17, against 1.11-1.12 for 128-key tiles),
/// although a harness of the two products alone over one buffer with K and V 128 MiB apart
/// ran 16-key interleaving 20-25% faster than two 128-key phases: with K and V in 8 MiB
/// regions as in a cache the gain fell to 0-14%.
struct RowPrefetch {
  static constexpr Index kDistance = 32;  // rows
  RowRange current, next;
  Index distance = 0;  // 0: none

  EIGEN_ALWAYS_INLINE void row(Index j) const {
    if (distance == 0) return;
    j += distance;
    if (j < current.rows)
      current.fetch(j);
    else
      next.fetch(j - current.rows);
  }
};

/// The R x KB raw dot products (d rounded down to packets) of R query rows with `keys` (<= KB)
/// keys, into `sums [R, KB]` (aligned). Key j is `k + j * k_ld`; a short block repeats its last
/// key, so every score is summed the same way whatever block it falls in.
template <int R, class Scalar, class KV>
EIGEN_ALWAYS_INLINE void score_block(const Scalar* const* q, const KV* k, Index k_ld, Index keys, Index d_packets,
                                     Scalar* sums, const RowPrefetch& ahead, Index j0) {
  using Blocking = StreamingBlocking<Scalar>;
  using Packet = typename Blocking::Packet;
  using Load = WideLoad<Packet, KV>;
  constexpr int P = Blocking::P, KB = Blocking::keys_per_block(R);
  using namespace Eigen::internal;

  Packet acc[R][KB];
  unroll<R>([&](auto i) MHA_LAMBDA_INLINE { unroll<KB>([&](auto j) MHA_LAMBDA_INLINE { acc[i][j] = pset1<Packet>(Scalar(0)); }); });
  // Key by key, so that K is read as one forward stream (interleaving the KB rows of a block ran
  // 1.5x slower from DRAM); the query packets come from L1.
  unroll<KB>([&](auto j) MHA_LAMBDA_INLINE {
    const KV* key = k + std::min<Index>(j, keys - 1) * k_ld;
    ahead.row(j0 + j);
    for (Index c = 0; c < d_packets; c += P) {
      const Packet kp = Load::load(key + c);
      unroll<R>([&](auto i) MHA_LAMBDA_INLINE { acc[i][j] = pmadd(ploadu<Packet>(q[i] + c), kp, acc[i][j]); });
    }
  });
  if constexpr (R * KB == P && P > 1) {
    PacketBlock<Packet, P> block;
    unroll<R>([&](auto i) MHA_LAMBDA_INLINE { unroll<KB>([&](auto j) MHA_LAMBDA_INLINE { block.packet[i * KB + j] = acc[i][j]; }); });
    pstore(sums, sum_lanes(block));
  } else {
    unroll<R>([&](auto i) MHA_LAMBDA_INLINE { unroll<KB>([&](auto j) MHA_LAMBDA_INLINE { sums[i * KB + j] = predux(acc[i][j]); }); });
  }
}

/// `s [M, width] = q [M, d] k^T` (row i of q at `q + i * q_ld`): rows in blocks of 4, then 2,
/// then 1; three rows run as a block of 4, the last row repeated.
///
/// The blocks' sums go to a stack buffer first and reach `s` in a second pass: reading single
/// scores back from the packet just stored stalls on store-to-load forwarding (a wide store, a
/// narrow load; 20% of the decode time on Zen 4), a stored buffer read later does not.
template <class Scalar, class KV>
void stream_scores(Index M, Index width, Index d, const Scalar* q, Index q_ld, const KV* k, Index k_ld, Scalar* s,
                   Index s_ld, const RowPrefetch& ahead = {}) {
  constexpr int P = StreamingBlocking<Scalar>::P;
  constexpr Index kBufferBlocks = 32;
  const Index d_packets = d - d % P;
  auto run = [&](auto block_rows, Index r0, Index rows) {
    constexpr int R = decltype(block_rows)::value, KB = StreamingBlocking<Scalar>::keys_per_block(R);
    alignas(64) Scalar buffer[kBufferBlocks * R * KB];  // [blocks][R, KB]
    const Scalar* q_rows[R];
    for (Index i = 0; i < R; ++i) q_rows[i] = q + (r0 + std::min<Index>(i, rows - 1)) * q_ld;
    for (Index b0 = 0; b0 * KB < width; b0 += kBufferBlocks) {
      const Index blocks = std::min(kBufferBlocks, (width - b0 * KB + KB - 1) / KB);
      for (Index b = 0; b < blocks; ++b) {
        const Index j0 = (b0 + b) * KB;
        score_block<R>(q_rows, k + j0 * k_ld, k_ld, std::min<Index>(KB, width - j0), d_packets, buffer + b * R * KB,
                       r0 == 0 ? ahead : RowPrefetch{}, j0);
      }
      // Row i's scores of block b are KB consecutive values of the buffer.
      const Index j_begin = b0 * KB, j_end = std::min(width, (b0 + blocks) * KB);
      for (Index i = 0; i < rows; ++i) {
        Scalar* dst = s + (r0 + i) * s_ld;
        for (Index b = 0; b < blocks; ++b) {
          const Index j = j_begin + b * KB, count = std::min<Index>(KB, j_end - j);
          const Scalar* src = buffer + b * R * KB + i * KB;
          if (count == KB)
            std::copy_n(src, KB, dst + j);  // a fixed-size copy: one vector move
          else
            std::copy_n(src, count, dst + j);
        }
        if (d_packets < d)
          for (Index j = j_begin; j < j_end; ++j)
            for (Index t = d_packets; t < d; ++t) dst[j] += q_rows[i][t] * to_scalar<Scalar>(k[j * k_ld + t]);
      }
    }
  };
  Index r0 = 0;
  for (; M - r0 >= 3; r0 += 4) run(std::integral_constant<int, 4>(), r0, std::min<Index>(4, M - r0));
  if (M - r0 == 2) run(std::integral_constant<int, 2>(), r0, 2);
  if (M - r0 == 1) run(std::integral_constant<int, 1>(), r0, 1);
}

/// `acc [R, dv] += p [R, width] v` for R rows (row i of p at `p + i * p_ld`, of acc at
/// `acc + i * acc_ld`), C value packets at a time held in registers across all `width` keys.
template <int R, int C, class Scalar, class KV>
EIGEN_ALWAYS_INLINE void value_block(const Scalar* p, Index p_ld, const KV* v, Index v_ld, Index width, Scalar* acc,
                                     Index acc_ld, const RowPrefetch& ahead) {
  using Blocking = StreamingBlocking<Scalar>;
  using Packet = typename Blocking::Packet;
  using Load = WideLoad<Packet, KV>;
  constexpr int P = Blocking::P;
  using namespace Eigen::internal;
  Packet a[R][C];
  unroll<R>([&](auto i) MHA_LAMBDA_INLINE {
    unroll<C>([&](auto c) MHA_LAMBDA_INLINE { a[i][c] = ploadu<Packet>(acc + i * acc_ld + c * P); });
  });
  for (Index j = 0; j < width; ++j) {
    Packet vp[C];
    unroll<C>([&](auto c) MHA_LAMBDA_INLINE { vp[c] = Load::load(v + j * v_ld + c * P); });
    ahead.row(j);
    unroll<R>([&](auto i) MHA_LAMBDA_INLINE {
      const Packet w = pset1<Packet>(p[i * p_ld + j]);
      unroll<C>([&](auto c) MHA_LAMBDA_INLINE { a[i][c] = pmadd(w, vp[c], a[i][c]); });
    });
  }
  unroll<R>([&](auto i) MHA_LAMBDA_INLINE {
    unroll<C>([&](auto c) MHA_LAMBDA_INLINE { pstoreu(acc + i * acc_ld + c * P, a[i][c]); });
  });
}

/// `acc [M, dv] += p [M, width] v`: rows in blocks of 4, 2, 1 (each acc element adds the keys in
/// order whatever its block), dv in blocks of C packets, then single packets, then a scalar tail.
template <class Scalar, class KV>
void stream_values(Index M, Index width, Index dv, const Scalar* p, Index p_ld, const KV* v, Index v_ld, Scalar* acc,
                   Index acc_ld, const RowPrefetch& ahead = {}) {
  using Blocking = StreamingBlocking<Scalar>;
  constexpr int P = Blocking::P, C = Blocking::value_packets;
  auto run = [&](auto block_rows, Index r0) {
    constexpr int R = decltype(block_rows)::value;
    const Scalar* pr = p + r0 * p_ld;
    Scalar* ar = acc + r0 * acc_ld;
    Index c0 = 0;
    // The first pass over the tile fetches the next operand's rows.
    for (; c0 + C * P <= dv; c0 += C * P)
      value_block<R, C>(pr, p_ld, v + c0, v_ld, width, ar + c0, acc_ld, r0 == 0 && c0 == 0 ? ahead : RowPrefetch{});
    for (; c0 + P <= dv; c0 += P)
      value_block<R, 1>(pr, p_ld, v + c0, v_ld, width, ar + c0, acc_ld, r0 == 0 && c0 == 0 ? ahead : RowPrefetch{});
    for (Index i = 0; i < R; ++i)
      for (Index j = 0; j < width; ++j)
        for (Index c = c0; c < dv; ++c) ar[i * acc_ld + c] += pr[i * p_ld + j] * to_scalar<Scalar>(v[j * v_ld + c]);
  };
  Index r0 = 0;
  for (; r0 + 4 <= M; r0 += 4) run(std::integral_constant<int, 4>(), r0);
  if (M - r0 >= 2) {
    run(std::integral_constant<int, 2>(), r0);
    r0 += 2;
  }
  if (M - r0 == 1) run(std::integral_constant<int, 1>(), r0);
}

}  // namespace detail
}  // namespace mha

#include "packet_warnings_restore.hpp"
