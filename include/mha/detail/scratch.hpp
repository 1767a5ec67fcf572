#pragma once
// Per-thread scratch memory of a forward pass, kept by a Workspace and reused across calls.

#include <algorithm>
#include <memory>
#include <vector>

#include "gemm.hpp"
#include "pack.hpp"

namespace mha {
namespace detail {

/// Makes `m` at least `[rows, cols]`, growing each dimension and never shrinking: once a buffer has
/// met its largest shape, later calls allocate nothing whatever order their shapes come in (a
/// decoder alternates prefill chunks and single-token steps). Users index it with its own cols().
template <class M>
void grow(M& m, Index rows, Index cols) {
  if (m.rows() >= rows && m.cols() >= cols) return;
  m.resize(std::max<Index>(rows, m.rows()), std::max<Index>(cols, m.cols()));
}

template <class Scalar>
struct ThreadScratch {
  Matrix<Scalar> tile;        // the tiled kernel's buffers, or the reference path's [L, S'] scores
  Matrix<Scalar> aux;         // the reference path's scaled queries [L, d]; a split merge's [2, max(dv + 2, d)]
  Matrix<Scalar> kv;          // a key/value tile converted from the cache's storage [Bk, d + dv]
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> packed;  // the tiled kernel's packed Q and P tiles [round_up(M, MR) (d + Bk)]
  GemmBuffers<Scalar> gemm;   // packing buffers of this thread's products
  PackBuffers<Scalar> pack;   // the micro-kernel GEMM's packed A / B blocks (projections)
};

/// One ThreadScratch per thread; grows, never shrinks, so a repeated shape allocates nothing.
template <class Scalar>
class ScratchPool {
 public:
  void ensure(int threads) {
    while (static_cast<int>(m_threads.size()) < threads) m_threads.push_back(std::make_unique<ThreadScratch<Scalar>>());
  }
  ThreadScratch<Scalar>& operator[](int thread) { return *m_threads[static_cast<std::size_t>(thread)]; }

  /// Sizes the GEMM buffers of threads [0, threads) for the largest product a parallel loop will
  /// run. Dynamic scheduling hands any block to any thread, so without this a thread could meet
  /// its largest shape only in a later call, and allocate then.
  void reserve_gemm(int threads, Index rows, Index cols, Index depth) {
    ensure(threads);
    for (int t = 0; t < threads; ++t) (*this)[t].gemm.reserve(rows, cols, depth);
  }

  /// Sizes the micro-kernel packing buffers of threads [0, threads) for a product
  /// `[rows, depth] x [depth, cols]` whose right operand comes packed (PackBuffers::reserve).
  void reserve_pack(int threads, Index rows, Index cols, Index depth, bool pack_b = false) {
    ensure(threads);
    for (int t = 0; t < threads; ++t) (*this)[t].pack.reserve(rows, cols, depth, pack_b);
  }

  /// Sizes buffer `member` of every thread (resize keeps the allocation when the size is unchanged).
  void reserve(Matrix<Scalar> ThreadScratch<Scalar>::*member, int threads, Index rows, Index cols) {
    ensure(threads);
    for (int t = 0; t < threads; ++t) ((*this)[t].*member).resize(rows, cols);
  }
  /// Grows ThreadScratch::packed of threads [0, threads) to at least `size` Scalars.
  void reserve_packed(int threads, Index size) {
    ensure(threads);
    for (int t = 0; t < threads; ++t)
      if ((*this)[t].packed.size() < size) (*this)[t].packed.resize(size);
  }
  void reserve_tiles(int threads, Index rows, Index cols) { reserve(&ThreadScratch<Scalar>::tile, threads, rows, cols); }

  /// Grows buffer `member` of every thread to at least `[rows, cols]` (see grow()).
  void grow_each(Matrix<Scalar> ThreadScratch<Scalar>::*member, int threads, Index rows, Index cols) {
    ensure(threads);
    for (int t = 0; t < threads; ++t) grow((*this)[t].*member, rows, cols);
  }

  /// Split-K partial results shared by all threads `[tasks, M * (dv + 2)]`.
  Matrix<Scalar>& partials() { return m_partials; }

  /// The packed K^T and V panels of every (batch entry, kv head) of one attention call, shared by
  /// all threads: at least `size` Scalars, grow-only, aligned for the micro-kernel's B loads.
  Scalar* packed_kv(Index size) {
    if (m_packed_kv.size() < size) m_packed_kv.resize(size);
    return m_packed_kv.data();
  }

 private:
  // unique_ptr: GemmBuffers hands out pointers to its own storage and must not move.
  std::vector<std::unique_ptr<ThreadScratch<Scalar>>> m_threads;
  Matrix<Scalar> m_partials;
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> m_packed_kv;  // [pairs * (packed K^T + packed V)]
};

}  // namespace detail
}  // namespace mha
