#pragma once
// Strided<T>: a row-major [rows, cols] test operand with a row stride wider than its width and its
// first element `shift` elements past the vector's start, so that no kernel load may assume
// alignment or contiguity. Filled with uniform values in [-1, 1) (drawn in double, rounded to T).
// Shared by the micro-kernel tests (test_microkernel.cpp, test_streaming_kernel.cpp).
#include <mha/detail/attention_problem.hpp>  // to_scalar

#include <algorithm>
#include <random>
#include <type_traits>
#include <vector>

template <class T>
struct Strided {
  mha::Index rows = 0, cols = 0, stride = 0, shift = 0;
  std::vector<T> storage;

  Strided(std::mt19937& rng, mha::Index r, mha::Index c, mha::Index pad, mha::Index shift_)
      : rows(r), cols(c), stride(c + pad), shift(shift_),
        storage(static_cast<std::size_t>(shift_ + std::max<mha::Index>(1, r) * (c + pad)) + 1) {
    std::uniform_real_distribution<double> u(-1, 1);
    for (T& x : storage) {
      if constexpr (std::is_same<T, double>::value)
        x = u(rng);
      else
        x = T(static_cast<float>(u(rng)));
    }
  }
  T* data() { return storage.data() + shift; }
  const T* data() const { return storage.data() + shift; }
  /// Element (i, j), widened to double (exact for every T used).
  double at(mha::Index i, mha::Index j) const { return mha::detail::to_scalar<double>(data()[i * stride + j]); }
};
