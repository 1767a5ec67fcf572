#pragma once
// Packed operands of the micro-kernel GEMM (BLIS's layout): the block sizes, the panel layouts,
// views into packed memory, and the routines that pack row-major matrices into them.
//
// C [m, n] += A [m, k] B [k, n] is computed MR x NR tiles at a time. The micro-kernel
// (microkernel.hpp) streams one A panel and one B panel, both laid out so that every step of the
// k loop reads MR consecutive A values and NR consecutive B values:
//
//   packed A, row panels of MR rows:    element (i, p) at  (i / MR) * panel_stride + p * MR + i % MR
//   packed B, column panels of NR cols: element (p, j) at  (j / NR) * panel_stride + p * NR + j % NR
//
// Each panel holds its whole depth (panel_stride >= depth * MR or depth * NR), rows / columns past
// the matrix edge are zero. Keeping the depth of a panel together, rather than BLIS's per-KC-block
// layout, is what lets a packed matrix be sliced for free: a depth range [p0, p0 + k) is the same
// panels shifted by p0 * NR, a column range is a range of panels (plus an offset into the first
// when it does not start on a panel boundary). Packed weights use both: MultiHeadAttention takes
// head groups as row ranges of W_Q/W_K/W_V and column ranges of W_O.

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

#include "../types.hpp"

namespace mha {
namespace detail {

/// Register and cache blocking of the micro-kernel GEMM for one Scalar.
///
/// MR x NR is the register tile: MR rows of A broadcast against NP packets of B, MR * NP
/// accumulator registers (6 x 2 = 12 of the 16 vector registers of SSE/AVX2, leaving room for the
/// two B packets and one broadcast). Without SIMD (packet size 1) NP = 4 keeps some instruction
/// parallelism. KC, MC, NC are named after the cache each block is sized for: a KC x NR micro-panel
/// of B in L2 (128 KiB), an MC x KC block of A in L2 / L3 (768 KiB at full depth), a KC x NC block
/// of B in L3. BLIS sizes the B micro-panel for L1; on Zen 3 a depth of 2048 measured faster
/// (projection [512, 512] x [512, 1536], one thread, GF/s of thread CPU time on a loaded machine:
/// 107 at KC = 2048, 94 at 512, 84 at 256; OpenBLAS 98): the panel streams from L2 under the hardware prefetcher, and C is read and
/// written once per KC block, i.e. once for every projection of a model with E <= 2048. They
/// change speed only, and results only by rounding (KC splits the k sums).
template <class Scalar>
struct GemmBlocking {
  using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
  static constexpr int PacketSize = Eigen::internal::unpacket_traits<Packet>::size;
  static constexpr int MR = 6;
  static constexpr int NP = PacketSize == 1 ? 4 : 2;  // packets per tile row
  static constexpr int NR = NP * PacketSize;
  static constexpr Index KC = Index(131072 / (NR * sizeof(Scalar)));             // B micro-panel: 128 KiB
  static constexpr Index MC = Index((786432 / (KC * sizeof(Scalar))) / MR * MR);  // A block: 768 KiB
  static constexpr Index NC = Index(4096 / NR * NR);
};

inline Index round_up(Index x, Index to) { return (x + to - 1) / to * to; }

/// `Scalar(x)` for a source element that may be a storage type such as Eigen::half or
/// Eigen::bfloat16 (KV caches), which convert through float: packing converts as it copies.
template <class Scalar, class Src>
EIGEN_ALWAYS_INLINE Scalar pack_convert(const Src& x) {
  if constexpr (std::is_same<Src, Scalar>::value || std::is_floating_point<Src>::value)
    return static_cast<Scalar>(x);
  else
    return static_cast<Scalar>(static_cast<float>(x));
}

/// A packed A `[rows, depth]` (layout at the top of this file). `data` points at depth 0 of
/// panel 0; `panel_stride` is the distance between row panels, in Scalars.
template <class Scalar>
struct PackedA {
  static constexpr int MR = GemmBlocking<Scalar>::MR;
  const Scalar* data = nullptr;
  Index panel_stride = 0;
  Index rows = 0;
  Index depth = 0;

  /// Depth range [p0, p0 + k): the same panels, shifted.
  PackedA middle_depth(Index p0, Index k) const {
    MHA_ASSERT(p0 >= 0 && k >= 0 && p0 + k <= depth);
    return PackedA{data + p0 * MR, panel_stride, rows, k};
  }
  /// Rows [i0, i0 + m); i0 must be a multiple of MR (row panels are not split).
  PackedA middle_rows(Index i0, Index m) const {
    MHA_ASSERT(i0 % MR == 0 && i0 >= 0 && m >= 0 && i0 + m <= rows);
    return PackedA{data + (i0 / MR) * panel_stride, panel_stride, m, depth};
  }
};

/// A packed B `[depth, cols]` (layout at the top of this file). Logical column j is packed
/// column `col_offset + j`, so a column range need not start on a panel boundary.
template <class Scalar>
struct PackedB {
  static constexpr int NR = GemmBlocking<Scalar>::NR;
  const Scalar* data = nullptr;
  Index panel_stride = 0;
  Index col_offset = 0;  // in [0, NR): position of logical column 0 in its panel
  Index cols = 0;
  Index depth = 0;

  PackedB middle_depth(Index p0, Index k) const {
    MHA_ASSERT(p0 >= 0 && k >= 0 && p0 + k <= depth);
    return PackedB{data + p0 * NR, panel_stride, col_offset, cols, k};
  }
  /// Columns [j0, j0 + n), any j0.
  PackedB middle_cols(Index j0, Index n) const {
    MHA_ASSERT(j0 >= 0 && n >= 0 && j0 + n <= cols);
    const Index q = col_offset + j0;
    return PackedB{data + (q / NR) * panel_stride, panel_stride, q % NR, n, depth};
  }
};

/// Scalars a packed A `[m, k]` takes with the tight panel stride `k * MR`.
template <class Scalar>
Index packed_a_size(Index m, Index k) {
  return round_up(m, GemmBlocking<Scalar>::MR) * k;
}
/// Scalars a packed B `[k, n]` takes with the tight panel stride `k * NR`.
template <class Scalar>
Index packed_b_size(Index k, Index n) {
  return round_up(n, GemmBlocking<Scalar>::NR) * k;
}

#include "packet_warnings_off.hpp"
/// Packs one full row panel: MR rows of A (row stride lda), columns [0, k), into `dst` (k * MR
/// Scalars). When a packet holds at least MR values, PS columns at a time go through a register
/// transpose (MR row packets, zero-padded to PS, become PS column packets) instead of k * MR
/// scalar stores with stride MR. Column c's packet is stored at c * MR, spilling PS - MR values
/// into the next columns, whose own stores follow and overwrite them; the last columns of a block,
/// whose spill would leave it, go through a local buffer, so nothing is written past the panel.
template <class Scalar>
void pack_a_panel(Index k, const Scalar* a, Index lda, Scalar* dst) {
  using Blocking = GemmBlocking<Scalar>;
  using Packet = typename Blocking::Packet;
  constexpr int MR = Blocking::MR, PS = Blocking::PacketSize;
  Index p0 = 0;
  if constexpr (PS >= MR) {
    using Eigen::internal::ploadu;
    using Eigen::internal::pset1;
    using Eigen::internal::pstore;
    using Eigen::internal::pstoreu;
    for (; p0 + PS <= k; p0 += PS) {
      Eigen::internal::PacketBlock<Packet, PS> block;
      for (int i = 0; i < MR; ++i) block.packet[i] = ploadu<Packet>(a + i * lda + p0);
      for (int i = MR; i < PS; ++i) block.packet[i] = pset1<Packet>(Scalar(0));
      Eigen::internal::ptranspose(block);
      int c = 0;
      for (; c * MR + PS <= PS * MR; ++c) pstoreu(dst + (p0 + c) * MR, block.packet[c]);
      for (; c < PS; ++c) {  // packets that would spill past the block
        alignas(64) Scalar column[PS];
        pstore(column, block.packet[c]);
        std::copy(column, column + MR, dst + (p0 + c) * MR);
      }
    }
  }
  for (Index i = 0; i < MR; ++i) {
    const Scalar* src = a + i * lda;
    for (Index p = p0; p < k; ++p) dst[p * MR + i] = src[p];
  }
}
/// PS rows of W (row stride ldw), columns [0, k), transposed into PS columns of a B panel: W's
/// element (r, p) goes to `dst[p * NR + r]`.
template <class Scalar>
void pack_transposed_strip(Index k, const Scalar* w, Index ldw, Scalar* dst) {
  using Blocking = GemmBlocking<Scalar>;
  using Packet = typename Blocking::Packet;
  constexpr int NR = Blocking::NR, PS = Blocking::PacketSize;
  Index p0 = 0;
  for (; p0 + PS <= k; p0 += PS) {
    Eigen::internal::PacketBlock<Packet, PS> block;
    for (int r = 0; r < PS; ++r) block.packet[r] = Eigen::internal::ploadu<Packet>(w + r * ldw + p0);
    Eigen::internal::ptranspose(block);
    for (int c = 0; c < PS; ++c) Eigen::internal::pstoreu(dst + (p0 + c) * NR, block.packet[c]);
  }
  for (int r = 0; r < PS; ++r)
    for (Index p = p0; p < k; ++p) dst[p * NR + r] = w[r * ldw + p];
}
#include "packet_warnings_restore.hpp"

/// Packs row-major A `[m, k]` (row stride lda) into `out` (packed_a_size(m, k) Scalars) with
/// panel stride `k * MR`, and returns the view of it.
template <class Scalar>
PackedA<Scalar> pack_a(Index m, Index k, const Scalar* a, Index lda, Scalar* out) {
  constexpr int MR = GemmBlocking<Scalar>::MR;
  const Index panel_stride = k * MR;
  for (Index i0 = 0; i0 < m; i0 += MR) {
    Scalar* dst = out + (i0 / MR) * panel_stride;
    const Index rows = std::min<Index>(MR, m - i0);
    if (rows == MR) {
      pack_a_panel(k, a + i0 * lda, lda, dst);
      continue;
    }
    // The last, partial panel, row by row: each source row is read contiguously; the writes
    // interleave MR rows; rows past the edge are zero.
    for (Index i = 0; i < rows; ++i) {
      const Scalar* src = a + (i0 + i) * lda;
      for (Index p = 0; p < k; ++p) dst[p * MR + i] = src[p];
    }
    for (Index i = rows; i < MR; ++i)
      for (Index p = 0; p < k; ++p) dst[p * MR + i] = Scalar(0);
  }
  return PackedA<Scalar>{out, panel_stride, m, k};
}

/// Packs row-major B `[k, n]` (row stride ldb) into `out` (packed_b_size(k, n) Scalars) with
/// panel stride `k * NR`; B's elements may be of a storage type (pack_convert).
template <class Scalar, class Src>
PackedB<Scalar> pack_b(Index k, Index n, const Src* b, Index ldb, Scalar* out) {
  constexpr int NR = GemmBlocking<Scalar>::NR;
  const Index panel_stride = k * NR;
  for (Index j0 = 0; j0 < n; j0 += NR) {
    Scalar* dst = out + (j0 / NR) * panel_stride;
    const Index cols = std::min<Index>(NR, n - j0);
    for (Index p = 0; p < k; ++p) {
      const Src* src = b + p * ldb + j0;
      Scalar* row = dst + p * NR;
      Index j = 0;
      for (; j < cols; ++j) row[j] = pack_convert<Scalar>(src[j]);
      for (; j < NR; ++j) row[j] = Scalar(0);
    }
  }
  return PackedB<Scalar>{out, panel_stride, 0, n, k};
}

/// Packs B = W^T, with W row-major `[n, k]` (row stride ldw): a weight `[out, in]` as the right
/// operand of `x W^T`, or the keys `[S, d]` as K^T. Same output as pack_b of the transpose; W's
/// elements may be of a storage type (pack_convert). A full panel of W's own Scalar goes PS rows
/// by PS columns at a time through a register transpose (one contiguous packet per step of k).
template <class Scalar, class Src>
PackedB<Scalar> pack_b_transposed(Index k, Index n, const Src* w, Index ldw, Scalar* out) {
  using Blocking = GemmBlocking<Scalar>;
  constexpr int NR = Blocking::NR, PS = Blocking::PacketSize;
  const Index panel_stride = k * NR;
  for (Index j0 = 0; j0 < n; j0 += NR) {
    Scalar* dst = out + (j0 / NR) * panel_stride;
    const Index cols = std::min<Index>(NR, n - j0);
    if constexpr (PS > 1 && std::is_same<Src, Scalar>::value) {
      if (cols == NR) {
        for (Index jb = 0; jb < NR; jb += PS) pack_transposed_strip(k, w + (j0 + jb) * ldw, ldw, dst + jb);
        continue;
      }
    }
    // Row of W by row of W: contiguous reads, writes with stride NR within one panel.
    for (Index j = 0; j < cols; ++j) {
      const Src* src = w + (j0 + j) * ldw;
      for (Index p = 0; p < k; ++p) dst[p * NR + j] = pack_convert<Scalar>(src[p]);
    }
    for (Index j = cols; j < NR; ++j)
      for (Index p = 0; p < k; ++p) dst[p * NR + j] = Scalar(0);
  }
  return PackedB<Scalar>{out, panel_stride, 0, n, k};
}

/// Grow-only buffers for the GEMM driver's packed blocks of A (MC x KC) and B (KC x NC), one per
/// thread. Eigen's aligned storage: the micro-kernel loads B packets aligned.
template <class Scalar>
class PackBuffers {
 public:
  using Blocking = GemmBlocking<Scalar>;

  /// Makes room for a product `[m, k] x [k, n]`; `pack_b` false when B comes packed already.
  void reserve(Index m, Index n, Index k, bool pack_b = true) {
    const Index kc = std::min(k, Blocking::KC);
    const Index a = round_up(std::min(m, Blocking::MC), Blocking::MR) * kc;
    if (m_a.size() < a) m_a.resize(a);
    if (pack_b) {
      const Index b = round_up(std::min(n, Blocking::NC), Blocking::NR) * kc;
      if (m_b.size() < b) m_b.resize(b);
    }
  }
  Scalar* a() { return m_a.data(); }
  Scalar* b() { return m_b.data(); }
  Index a_size() const { return m_a.size(); }
  Index b_size() const { return m_b.size(); }

 private:
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> m_a;  // [round_up(min(m, MC), MR) * min(k, KC)]
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> m_b;  // [round_up(min(n, NC), NR) * min(k, KC)]
};

}  // namespace detail
}  // namespace mha
