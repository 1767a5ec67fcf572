#pragma once
// Conversions between a layer's Scalar (float, double) and a KV cache's Storage (float, double,
// Eigen::bfloat16, Eigen::half), one value or a strided tile of rows at a time.
//
// Widening (Storage -> Scalar) is exact for every pair used here: bf16 and f16 values are floats,
// floats are doubles. Narrowing rounds once, to nearest with ties to even (IEEE 754's default):
// - float  -> bf16 / f16: Eigen's constructors and packets (bf16: the 0x7FFF + lsb bias on the bits;
//   f16: Eigen's bit algorithm, or VCVTPS2PH with the nearest-even immediate), all nearest even.
//   NaN stays NaN (sign and payload are not kept: the AVX2 bf16 path writes 0x7FC0 for every NaN),
//   +-Inf stays +-Inf, a finite value past the format's largest finite value by half an ulp or
//   more becomes +-Inf (f16: |x| >= 65520; bf16: |x| >= 2^128 - 2^119).
// - double -> bf16 / f16: NOT through an ordinary cast to float, which rounds twice and can be
//   wrong when the float lands exactly on a tie of the narrow format (1 + 2^-8 + 2^-40 is above the
//   bf16 tie 1 + 2^-8, so it must round up to 1 + 2^-7; a cast to float gives the tie itself,
//   which then rounds to even, down to 1). Instead the double is rounded to float *to odd*
//   (truncate, then set the last bit if anything was cut off) and that float to nearest even: a
//   float has at least 2 more significant bits than bf16 or f16 at every magnitude (subnormals
//   included), and rounding to odd first and to nearest even with >= 2 fewer bits after is
//   correctly rounded (Boldo & Melquiond, "Emulation of FMA and correctly rounded sums: proved
//   algorithms using rounding to odd", IEEE Trans. Computers 2008).
// - double -> float: the hardware conversion (one rounding, nearest even).
//
// The row converters are vectorised, 8 values per step, when EIGEN_VECTORIZE_AVX is defined
// (bf16 <-> f32 with Eigen's packets, which are shifts; f16 <-> f32 with VCVTPH2PS / VCVTPS2PH when
// F16C is enabled too), and plain loops otherwise; the rest of a row (cols % 8) is a loop. Eigen
// 3.4's `.cast<float>()` uses no packets (`functor_traits<scalar_cast_op>::PacketAccess` is
// false), hence the explicit ones.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <Eigen/Core>

#include "../types.hpp"

namespace mha {
namespace detail {

/// True for the storage types of a KV cache: float, double, Eigen::bfloat16, Eigen::half.
template <class T>
struct is_cache_storage
    : std::integral_constant<bool, std::is_same<T, float>::value || std::is_same<T, double>::value ||
                                       std::is_same<T, Eigen::bfloat16>::value ||
                                       std::is_same<T, Eigen::half>::value> {};

/// True for the 16-bit storage types, which hold floats with fewer significant bits.
template <class T>
struct is_narrow_float
    : std::integral_constant<bool, std::is_same<T, Eigen::bfloat16>::value ||
                                       std::is_same<T, Eigen::half>::value> {};

/// The name used in messages and by mha-run's cache_dtype: "float", "double", "bf16", "f16".
template <class T>
constexpr const char* storage_name() {
  static_assert(is_cache_storage<T>::value, "storage_name: not a KV cache storage type");
  return std::is_same<T, float>::value ? "float"
         : std::is_same<T, double>::value ? "double"
         : std::is_same<T, Eigen::bfloat16>::value ? "bf16"
                                                   : "f16";
}

/// `x` rounded to float toward zero, with the last significand bit set when the rounding was
/// inexact ("round to odd"). NaN stays NaN, +-Inf stays +-Inf; a finite double past the float
/// range gives +-FLT_MAX (odd), so a later narrowing still sees it as too large.
inline float round_to_odd_float(double x) {
  if (std::isnan(x)) return static_cast<float>(x);
  float f = static_cast<float>(x);  // nearest even; may be one ulp farther from zero than x
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if (std::fabs(static_cast<double>(f)) > std::fabs(x)) --bits;  // one ulp toward zero (Inf -> FLT_MAX)
  std::memcpy(&f, &bits, sizeof bits);
  if (static_cast<double>(f) != x) {
    bits |= 1u;  // inexact: mark it, so that a tie of the narrow format is never faked
    std::memcpy(&f, &bits, sizeof bits);
  }
  return f;
}

/// One value to a storage or scalar type, rounded to nearest even (see the file comment).
template <class To, class From>
inline To convert_value(From x) {
  if constexpr (std::is_same<To, From>::value) {
    return x;
  } else if constexpr (is_narrow_float<From>::value) {
    // bf16 / f16 -> float is exact, and so is float -> double.
    return static_cast<To>(static_cast<float>(x));
  } else if constexpr (is_narrow_float<To>::value && std::is_same<From, double>::value) {
    return To(round_to_odd_float(x));
  } else {
    // float -> bf16 / f16 (Eigen, nearest even), float <-> double (hardware, nearest even).
    return static_cast<To>(x);
  }
}

#if defined(EIGEN_VECTORIZE_AVX)
// 8-wide conversions between float and the 16-bit storage types, 8 contiguous values, unaligned.
// bf16: Eigen's AVX packets (shifts; nearest even by the 0x7FFF + lsb bias, NaN -> 0x7FC0).
// f16: the F16C instructions themselves when the compiler targets them. Eigen 3.4.0 would use
// them only under clang: its test `!defined(EIGEN_COMP_CLANG) || EIGEN_COMP_CLANG >= 380` is false
// under GCC, where EIGEN_COMP_CLANG is defined as 0, so Eigen's Packet8h falls back to 8 scalar
// conversions (measured 1.27 ns per value against 0.15 for a plain loop GCC vectorises at -O3).
inline void widen8(const Eigen::bfloat16* src, float* dst) {
  using namespace Eigen::internal;
  pstoreu(dst, pcast<Packet8bf, Packet8f>(ploadu<Packet8bf>(src)));
}
inline void narrow8(const float* src, Eigen::bfloat16* dst) {
  using namespace Eigen::internal;
  pstoreu(dst, pcast<Packet8f, Packet8bf>(ploadu<Packet8f>(src)));
}
#if defined(__F16C__)
inline void widen8(const Eigen::half* src, float* dst) {
  _mm256_storeu_ps(dst, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src))));
}
inline void narrow8(const float* src, Eigen::half* dst) {
  // Immediate: round to nearest even, no exception flags (NaN -> quiet NaN, overflow -> Inf).
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                   _mm256_cvtps_ph(_mm256_loadu_ps(src), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
#define MHA_DETAIL_F16_PACKETS 1
#endif
#define MHA_DETAIL_BF16_PACKETS 1
#endif

template <class Narrow>
constexpr bool has_packets() {
#if defined(MHA_DETAIL_F16_PACKETS)
  if (std::is_same<Narrow, Eigen::half>::value) return true;
#endif
#if defined(MHA_DETAIL_BF16_PACKETS)
  if (std::is_same<Narrow, Eigen::bfloat16>::value) return true;
#endif
  return false;
}

/// Converts `count` contiguous values `src` -> `dst` (non-overlapping), rounding as the file
/// comment says.
template <class From, class To>
inline void convert_span(const From* src, Index count, To* dst) {
  if constexpr (std::is_same<From, To>::value) {
    if (count > 0) std::memcpy(dst, src, static_cast<std::size_t>(count) * sizeof(From));
  } else if constexpr (is_narrow_float<From>::value && std::is_same<To, float>::value) {
    Index i = 0;
    if constexpr (has_packets<From>()) {
      for (const Index end = count - count % 8; i < end; i += 8) widen8(src + i, dst + i);
    }
    for (; i < count; ++i) dst[i] = static_cast<float>(src[i]);
  } else if constexpr (std::is_same<From, float>::value && is_narrow_float<To>::value) {
    Index i = 0;
    if constexpr (has_packets<To>()) {
      for (const Index end = count - count % 8; i < end; i += 8) narrow8(src + i, dst + i);
    }
    for (; i < count; ++i) dst[i] = To(src[i]);
  } else if constexpr (is_narrow_float<From>::value || is_narrow_float<To>::value) {
    // double <-> bf16 / f16: through a float buffer on the stack, so the narrow side still uses
    // the packets above. The double -> float step rounds to odd (see round_to_odd_float).
    constexpr Index chunk = 64;
    float buffer[chunk];
    for (Index start = 0; start < count; start += chunk) {
      const Index n = count - start < chunk ? count - start : chunk;
      if constexpr (is_narrow_float<From>::value) {
        convert_span(src + start, n, buffer);
        for (Index i = 0; i < n; ++i) dst[start + i] = static_cast<To>(buffer[i]);
      } else {
        for (Index i = 0; i < n; ++i) buffer[i] = round_to_odd_float(src[start + i]);
        convert_span(static_cast<const float*>(buffer), n, dst + start);
      }
    }
  } else {
    for (Index i = 0; i < count; ++i) dst[i] = static_cast<To>(src[i]);  // float <-> double
  }
}

/// Converts a tile of `rows` rows of `cols` contiguous values: row r of `src` starts at
/// `src + r * src_stride`, row r of `dst` at `dst + r * dst_stride` (strides in elements, not
/// bytes). Used both ways: Storage -> Scalar when the attention kernel loads a key/value tile
/// (exact), Scalar -> Storage when the cache appends (one rounding to nearest even). Exact copies
/// (From == To) are memcpy. Never allocates; src and dst must not overlap.
template <class From, class To>
inline void convert_rows(const From* src, Index src_stride, Index rows, Index cols, To* dst,
                         Index dst_stride) {
  static_assert(is_cache_storage<From>::value && is_cache_storage<To>::value,
                "convert_rows converts between float, double, Eigen::bfloat16 and Eigen::half");
  MHA_ASSERT(rows >= 0 && cols >= 0);
  MHA_ASSERT(rows <= 1 || (src_stride >= cols && dst_stride >= cols));
  for (Index r = 0; r < rows; ++r) convert_span(src + r * src_stride, cols, dst + r * dst_stride);
}

}  // namespace detail
}  // namespace mha
