#pragma once
// Per-thread scratch memory of a forward pass, kept by a Workspace and reused across calls.

#include <memory>
#include <vector>

#include "gemm.hpp"

namespace mha {
namespace detail {

template <class Scalar>
struct ThreadScratch {
  Matrix<Scalar> tile;        // the tiled kernel's buffers, or the reference path's [L, S'] scores
  GemmBuffers<Scalar> gemm;   // packing buffers of this thread's products
};

/// One ThreadScratch per thread; grows, never shrinks, so a repeated shape allocates nothing.
template <class Scalar>
class ScratchPool {
 public:
  void ensure(int threads) {
    while (static_cast<int>(m_threads.size()) < threads) m_threads.push_back(std::make_unique<ThreadScratch<Scalar>>());
  }
  ThreadScratch<Scalar>& operator[](int thread) { return *m_threads[static_cast<std::size_t>(thread)]; }

 private:
  // unique_ptr: GemmBuffers hands out pointers to its own storage and must not move.
  std::vector<std::unique_ptr<ThreadScratch<Scalar>>> m_threads;
};

}  // namespace detail
}  // namespace mha
