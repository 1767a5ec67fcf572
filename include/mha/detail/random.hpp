#pragma once
// A small, portable random source for deterministic weight initialisation: the same seed gives
// the same weights on every platform and standard library (std::uniform_real_distribution does
// not promise that).

#include <cmath>
#include <cstdint>

namespace mha {
namespace detail {

class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : m_state(seed) {}

  std::uint64_t next() {
    std::uint64_t z = (m_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  /// Uniform in [0, 1), 53 random bits.
  double uniform01() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  /// Uniform in [-bound, bound).
  double uniform(double bound) { return (2.0 * uniform01() - 1.0) * bound; }
  /// Standard normal (Box-Muller; one draw per call keeps the stream simple).
  double normal() {
    const double u1 = 1.0 - uniform01();  // (0, 1]: log is finite
    const double u2 = uniform01();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::uint64_t m_state;
};

}  // namespace detail
}  // namespace mha
