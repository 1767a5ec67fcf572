// Proves that a KVCache allocates nothing after construction: append (every storage type, float
// and double input, linear and ring mode, wrapping runs), crop, clear and the accessors run with
// malloc wrapped to count calls, and must count zero.
//
// A program of its own, not a Catch2 case: replacing malloc is process-wide, and sanitizers
// replace it too (the build does not compile this test under them). The hook is the one of
// test_zero_allocation.cpp.

#include <mha/kv_cache.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "counting_malloc.hpp"

namespace {

int g_failures = 0;

template <class Storage, class Scalar>
void check(mha::KVCacheMode mode) {
  using mha::Index;
  using mha::Matrix;
  const Index N = 2, Hkv = 4, d = 32, dv = 24;
  const Index C = mode == mha::KVCacheMode::ring ? 20 : 64;  // ring: 57 tokens wrap almost 3 times
  const std::string name = std::string(mha::detail::storage_name<Storage>()) + " cache, " +
                           (sizeof(Scalar) == 4 ? "float" : "double") + " input, " +
                           (mode == mha::KVCacheMode::ring ? "ring" : "linear");
  // Inputs and the cache exist before counting starts.
  const Matrix<Scalar> k1 = Matrix<Scalar>::Random(N * 1, Hkv * d), v1 = Matrix<Scalar>::Random(N * 1, Hkv * dv);
  const Matrix<Scalar> k7 = Matrix<Scalar>::Random(N * 7, Hkv * d), v7 = Matrix<Scalar>::Random(N * 7, Hkv * dv);
  const Matrix<Scalar> wide = Matrix<Scalar>::Random(N * 7, Hkv * d + 5);  // a strided block
  mha::KVCache<Storage> cache(N, Hkv, C, d, dv, mode);

  g_allocations = 0;
  g_counting = true;
  volatile double sink = 0;
  for (int round = 0; round < 3; ++round) {
    // 8 + 7 * 7 = 57 tokens per round; in ring mode appends wrap past the last slot.
    for (int i = 0; i < 8; ++i) cache.append(k1, v1);
    for (int i = 0; i < 6; ++i) cache.append(k7, v7);
    cache.append(wide.leftCols(Hkv * d), v7);
    sink = sink + static_cast<double>(static_cast<float>(cache.keys(1, 3)[5])) + double(cache.slot_positions()[7]) +
            double(cache.length() + cache.position() + cache.available());
    if (mode == mha::KVCacheMode::ring && cache.position() != 57) ++g_failures;  // all appended
    if (mode == mha::KVCacheMode::linear) {
      cache.crop(3);
      cache.append(k7, v7);
    }
    cache.clear();
  }
  g_counting = false;
  const long count = g_allocations.load();
  std::printf("%-40s allocations after construction: %ld\n", name.c_str(), count);
  if (count != 0) ++g_failures;
}

template <class Storage>
void check_all() {
  for (const auto mode : {mha::KVCacheMode::linear, mha::KVCacheMode::ring}) {
    check<Storage, float>(mode);
    check<Storage, double>(mode);
  }
}

}  // namespace

// The hook must see what it claims to see, or every "0" above proves nothing.
bool hook_counts_allocations() {
  g_allocations = 0;
  g_counting = true;
  {
    std::string* s = new std::string(100, 'x');                   // operator new
    mha::KVCache<Eigen::bfloat16> cache(1, 1, 16, 16);            // the cache's own buffers
    volatile float sink = static_cast<float>(cache.keys(0, 0)[1]) + float((*s)[0]);
    (void)sink;
    delete s;
  }
  g_counting = false;
  std::printf("hook self-check: %ld allocations seen (expected >= 4)\n", g_allocations.load());
  return g_allocations.load() >= 4;
}

int main() {
  if (!hook_counts_allocations()) {
    std::printf("kv-cache allocation: FAILED (the malloc hook counts nothing)\n");
    return 1;
  }
  check_all<float>();
  check_all<double>();
  check_all<Eigen::bfloat16>();
  check_all<Eigen::half>();
  std::printf("%s\n", g_failures == 0 ? "kv-cache allocation: all passed" : "kv-cache allocation: FAILED");
  return g_failures == 0 ? 0 : 1;
}
