// Tests of include/mha/kv_cache.hpp and include/mha/detail/convert.hpp: append, length, position,
// crop, clear, the [N][Hkv][C][d] layout, ring wraparound, rounding to bf16 / f16 (against an
// independent reference rounding in double), and every error with its message.
#include <mha/kv_cache.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "reference.hpp"

using mha::Index;
using mha::KVCache;
using mha::KVCacheMode;
using mha_test::Mat;
using bf16 = Eigen::bfloat16;
using f16 = Eigen::half;

namespace {

constexpr double kInfD = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------
// An independent model of the two 16-bit formats: decoding from bits, and correct rounding of any
// double (nearest, ties to even) by scaling to an integer multiple of the ulp and std::nearbyint,
// which rounds ties to even in the default rounding mode. No bit tricks, no Eigen.

struct Format {
  int precision;      // significant bits, the implicit one included
  int min_exponent;   // exponent of the smallest normal number
  int exponent_bits;  // width of the exponent field
  double max_finite;
};
// bf16: 8 significant bits, float's exponent range; f16: 11 bits, normal exponents -14..15.
constexpr Format kBf16{8, -126, 8, 3.38953138925153547590470800371487866880e38};  // (2 - 2^-7) 2^127
constexpr Format kF16{11, -14, 5, 65504.0};

template <class Narrow>
constexpr Format format_of() {
  return std::is_same<Narrow, bf16>::value ? kBf16 : kF16;
}

/// x rounded to nearest, ties to even, in format f; overflow to +-Inf, NaN and Inf unchanged.
double round_reference(double x, const Format& f) {
  if (std::isnan(x) || std::isinf(x) || x == 0) return x;
  const double a = std::fabs(x);
  const int e = std::max(std::ilogb(a), f.min_exponent);            // subnormals share emin's ulp
  const double ulp = std::ldexp(1.0, e - (f.precision - 1));
  const double r = std::nearbyint(a / ulp) * ulp;                   // exact: a / ulp is a scaling
  return std::copysign(r > f.max_finite ? kInfD : r, x);
}

/// Value of the 16-bit pattern `bits` in format f (sign, exponent field, fraction field).
double decode(std::uint16_t bits, const Format& f) {
  const int fraction_bits = 15 - f.exponent_bits;
  const int bias = (1 << (f.exponent_bits - 1)) - 1;
  const int exponent = (bits >> fraction_bits) & ((1 << f.exponent_bits) - 1);
  const double fraction = bits & ((1 << fraction_bits) - 1);
  const double sign = (bits & 0x8000) ? -1.0 : 1.0;
  if (exponent == (1 << f.exponent_bits) - 1)
    return fraction == 0 ? sign * kInfD : std::numeric_limits<double>::quiet_NaN();
  if (exponent == 0) return sign * std::ldexp(fraction, 1 - bias - fraction_bits);
  return sign * std::ldexp(fraction + std::ldexp(1.0, fraction_bits), exponent - bias - fraction_bits);
}

template <class Narrow>
std::uint16_t bits_of(Narrow x) {
  std::uint16_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

template <class Narrow>
Narrow from_bits(std::uint16_t b) {
  Narrow x;
  std::memcpy(static_cast<void*>(&x), &b, sizeof b);  // void*: Eigen::half is not trivial to GCC
  return x;
}

/// What Storage should hold after appending x: one rounding of x to Storage's precision.
template <class Storage>
double expected_stored(double x) {
  if constexpr (std::is_same<Storage, double>::value) return x;
  else if constexpr (std::is_same<Storage, float>::value) return static_cast<double>(static_cast<float>(x));
  else return round_reference(x, format_of<Storage>());
}

template <class Storage>
double as_double(Storage x) {
  return static_cast<double>(static_cast<float>(x));
}
template <>
double as_double<double>(double x) {
  return x;
}

/// Same value, and the same sign for zeros; both NaN counts as equal.
bool same_value(double got, double want) {
  if (std::isnan(want)) return std::isnan(got);
  return got == want && std::signbit(got) == std::signbit(want);
}

/// Converts `in` (a row-major [rows, cols] array) to Narrow through detail::convert_rows and checks
/// every element against round_reference; `cols` is chosen so that rows have packets and a tail.
template <class Narrow, class Scalar>
void require_rounds_like_reference(const std::vector<Scalar>& in, Index cols) {
  const Index rows = static_cast<Index>(in.size()) / cols;
  const Index dst_stride = cols + 3;  // a gap between rows: the strides must be honoured
  std::vector<Narrow> out(static_cast<std::size_t>(rows * dst_stride), from_bits<Narrow>(0x1234));
  mha::detail::convert_rows(in.data(), cols, rows, cols, out.data(), dst_stride);
  const Format f = format_of<Narrow>();
  Index failures = 0;
  for (Index r = 0; r < rows; ++r) {
    for (Index c = 0; c < cols; ++c) {
      const double x = static_cast<double>(in[static_cast<std::size_t>(r * cols + c)]);
      const Narrow y = out[static_cast<std::size_t>(r * dst_stride + c)];
      const double got = decode(bits_of(y), f);
      const double want = round_reference(x, f);
      if (!same_value(got, want) && ++failures <= 5) {
        CAPTURE(x, got, want, bits_of(y));
        CHECK(same_value(got, want));
      }
    }
    for (Index c = cols; c < dst_stride; ++c)  // the gap is untouched
      REQUIRE(bits_of(out[static_cast<std::size_t>(r * dst_stride + c)]) == 0x1234);
  }
  REQUIRE(failures == 0);
}

/// Float inputs around every tie of Narrow: for each finite magnitude m (bits), the midpoint
/// between m and the next magnitude (exact in float), one float ulp either side, m itself and a
/// random point between; both signs. The midpoint above the largest finite value is the overflow
/// threshold.
template <class Narrow>
std::vector<float> inputs_around_ties() {
  const Format f = format_of<Narrow>();
  const std::uint16_t max_bits = std::uint16_t((((1 << f.exponent_bits) - 1) << (15 - f.exponent_bits)) - 1);
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<float> in;
  for (std::uint32_t m = 0; m <= max_bits; ++m) {
    const double lo = decode(std::uint16_t(m), f);
    const double hi = m == max_bits ? f.max_finite + std::ldexp(1.0, std::ilogb(f.max_finite) - f.precision + 1)
                                    : decode(std::uint16_t(m + 1), f);
    const float mid = static_cast<float>((lo + hi) / 2);
    REQUIRE(static_cast<double>(mid) == (lo + hi) / 2);  // the tie is exactly a float
    for (const float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, std::numeric_limits<float>::infinity()),
                          static_cast<float>(lo), static_cast<float>(lo + (hi - lo) * u(rng))}) {
      in.push_back(x);
      in.push_back(-x);
    }
  }
  while (in.size() % 37 != 0) in.push_back(1.0f);
  return in;
}

/// Double inputs that rounding through float would get wrong: a relative 2^-40 either side of each
/// tie (a cast to float lands on the tie itself and rounds to even), beyond float's range, below
/// float's smallest subnormal, and plain random doubles.
template <class Narrow>
std::vector<double> double_inputs() {
  const Format f = format_of<Narrow>();
  std::vector<double> in;
  for (const float tie : inputs_around_ties<Narrow>()) {
    const double t = tie;
    in.push_back(t * (1 + std::ldexp(1.0, -40)));
    in.push_back(t * (1 - std::ldexp(1.0, -40)));
    in.push_back(t);
  }
  for (const double x : {1e39, 1e300, 3.4028235677973366e38 /* above FLT_MAX */, 1e-300, 1e-46,
                         std::ldexp(1.0, -150), std::ldexp(1.0, -150) * (1 + 1e-10), f.max_finite,
                         std::nextafter(f.max_finite, kInfD), kInfD, std::numeric_limits<double>::quiet_NaN(),
                         std::numeric_limits<double>::denorm_min(), 0.0}) {
    in.push_back(x);
    in.push_back(-x);
  }
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> mant(-1.0, 1.0);
  std::uniform_int_distribution<int> ex(f.min_exponent - 12, 20);
  for (int i = 0; i < 20000; ++i) in.push_back(std::ldexp(mant(rng), ex(rng)));
  while (in.size() % 37 != 0) in.push_back(1.0);
  return in;
}

/// Deterministic, distinct values for token rows: in [-8, 8) with a random fraction.
template <class Scalar>
Mat<Scalar> token_rows(Index rows, Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-8.0, 8.0);
  Mat<Scalar> m(rows, cols);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) m(r, c) = static_cast<Scalar>(u(rng));
  return m;
}

/// Every token appended to a cache, per batch entry, as the rows given: `history[n][p]` is the
/// key row (all heads, [Hkv*d]) of position p of entry n. A plain model of what the cache holds.
template <class Scalar>
struct History {
  std::vector<std::vector<std::vector<double>>> keys, values;  // [N][positions][Hkv*d or Hkv*dv]
  explicit History(Index batch) : keys(static_cast<std::size_t>(batch)), values(static_cast<std::size_t>(batch)) {}
  void add(const Mat<Scalar>& k, const Mat<Scalar>& v) {
    const Index N = static_cast<Index>(keys.size()), T = k.rows() / N;
    for (Index n = 0; n < N; ++n)
      for (Index t = 0; t < T; ++t) {
        std::vector<double> kr, vr;
        for (Index c = 0; c < k.cols(); ++c) kr.push_back(static_cast<double>(k(n * T + t, c)));
        for (Index c = 0; c < v.cols(); ++c) vr.push_back(static_cast<double>(v(n * T + t, c)));
        keys[static_cast<std::size_t>(n)].push_back(kr);
        values[static_cast<std::size_t>(n)].push_back(vr);
      }
  }
  void truncate(Index length) {
    for (auto& k : keys) k.resize(static_cast<std::size_t>(length));
    for (auto& v : values) v.resize(static_cast<std::size_t>(length));
  }
};

/// Checks everything the cache exposes against the history: length, position, slot positions
/// (the slot of p is p in linear mode, p % C in ring mode; a slot holds the newest position that
/// maps to it among the last C), and the contents of every held slot, read through keys(n, g) /
/// values(n, g) with the documented strides. `appended` is how many positions the history holds.
template <class Storage, class Scalar>
void require_matches(const KVCache<Storage>& cache, const History<Scalar>& h, Index appended) {
  const Index C = cache.capacity(), d = cache.head_dim(), dv = cache.v_head_dim();
  const bool ring = cache.mode() == KVCacheMode::ring;
  REQUIRE(cache.position() == appended);
  REQUIRE(cache.length() == (ring ? std::min(appended, C) : appended));
  REQUIRE(cache.first_position() == appended - cache.length());
  for (Index s = 0; s < C; ++s) {
    Index want = -1;
    for (Index p = 0; p < appended; ++p)
      if ((ring ? p % C : p) == s && p >= appended - C) want = p;
    CAPTURE(s);
    REQUIRE(cache.slot_positions()[s] == want);
    if (want < 0) continue;
    for (Index n = 0; n < cache.batch(); ++n)
      for (Index g = 0; g < cache.num_kv_heads(); ++g) {
        // Layout: [N][Hkv][C][d]; the per-head pointers are the documented offsets of one buffer.
        REQUIRE(cache.keys(n, g) == cache.keys(0, 0) + (n * cache.num_kv_heads() + g) * C * d);
        REQUIRE(cache.values(n, g) == cache.values(0, 0) + (n * cache.num_kv_heads() + g) * C * dv);
        const auto& kr = h.keys[static_cast<std::size_t>(n)][static_cast<std::size_t>(want)];
        const auto& vr = h.values[static_cast<std::size_t>(n)][static_cast<std::size_t>(want)];
        for (Index i = 0; i < d; ++i) {
          CAPTURE(n, g, i);
          REQUIRE(same_value(as_double(cache.keys(n, g)[s * d + i]),
                             expected_stored<Storage>(kr[static_cast<std::size_t>(g * d + i)])));
        }
        for (Index i = 0; i < dv; ++i) {
          CAPTURE(n, g, i);
          REQUIRE(same_value(as_double(cache.values(n, g)[s * dv + i]),
                             expected_stored<Storage>(vr[static_cast<std::size_t>(g * dv + i)])));
        }
      }
  }
}

template <class Storage, class Scalar>
void linear_append_crop_clear() {
  CAPTURE(mha::detail::storage_name<Storage>());
  const Index N = 2, Hkv = 3, C = 10, d = 4, dv = 5;
  KVCache<Storage> cache(N, Hkv, C, d, dv);
  History<Scalar> h(N);
  Index appended = 0;
  require_matches(cache, h, 0);
  unsigned seed = 1;
  auto append = [&](Index T) {
    const Mat<Scalar> k = token_rows<Scalar>(N * T, Hkv * d, seed++), v = token_rows<Scalar>(N * T, Hkv * dv, seed++);
    cache.append(k, v);
    h.add(k, v);
    appended += T;
    require_matches(cache, h, appended);
  };
  append(3);
  append(1);
  append(0);  // no-op
  append(2);
  REQUIRE(cache.available() == C - 6);
  SECTION("crop keeps the first tokens; the next append writes after them") {
    cache.crop(4);
    h.truncate(4);
    appended = 4;
    require_matches(cache, h, 4);
    append(6);  // fills the cache exactly
    REQUIRE(cache.available() == 0);
    cache.crop(cache.length());  // no-op
    require_matches(cache, h, 10);
    cache.crop(0);
    h.truncate(0);
    appended = 0;
    require_matches(cache, h, 0);
    append(2);
  }
  SECTION("clear forgets every token") {
    cache.clear();
    h.truncate(0);
    appended = 0;
    require_matches(cache, h, 0);
    append(5);
    append(5);
  }
}

template <class Storage, class Scalar>
void ring_wraparound() {
  CAPTURE(mha::detail::storage_name<Storage>());
  const Index N = 2, Hkv = 2, C = 5, d = 3, dv = 2;
  KVCache<Storage> cache(N, Hkv, C, d, dv, KVCacheMode::ring);
  REQUIRE(cache.mode() == KVCacheMode::ring);
  History<Scalar> h(N);
  Index appended = 0;
  unsigned seed = 100;
  // 2 + 3 fill it, then every call wraps: 16 + 5 = 21 tokens through 5 slots, chunks up to C.
  for (const Index T : {2, 3, 1, 4, 5, 2, 1, 3}) {
    CAPTURE(T, appended);
    const Mat<Scalar> k = token_rows<Scalar>(N * T, Hkv * d, seed++), v = token_rows<Scalar>(N * T, Hkv * dv, seed++);
    cache.append(k, v);
    h.add(k, v);
    appended += T;
    require_matches(cache, h, appended);
    REQUIRE(cache.available() == C);
    REQUIRE(cache.slot(appended - 1) == (appended - 1) % C);
  }
  cache.clear();
  h = History<Scalar>(N);
  require_matches(cache, h, 0);
  const Mat<Scalar> k = token_rows<Scalar>(N * 4, Hkv * d, 9), v = token_rows<Scalar>(N * 4, Hkv * dv, 10);
  cache.append(k, v);
  h.add(k, v);
  require_matches(cache, h, 4);
}

}  // namespace

TEST_CASE("KVCache reports its sizes and starts empty", "[kv_cache]") {
  const KVCache<bf16> c(2, 3, 7, 8);
  REQUIRE(c.batch() == 2);
  REQUIRE(c.num_kv_heads() == 3);
  REQUIRE(c.capacity() == 7);
  REQUIRE(c.head_dim() == 8);
  REQUIRE(c.v_head_dim() == 8);  // 0 means head_dim
  REQUIRE(c.mode() == KVCacheMode::linear);
  REQUIRE(c.length() == 0);
  REQUIRE(c.position() == 0);
  REQUIRE(c.available() == 7);
  STATIC_REQUIRE(std::is_same<KVCache<bf16>::Storage, bf16>::value);
  // N * Hkv * C * (d + dv) * sizeof(Storage) + C positions.
  REQUIRE(c.memory_bytes() == std::size_t(2 * 3 * 7 * (8 + 8) * 2 + 7 * 8));
  for (Index s = 0; s < 7; ++s) REQUIRE(c.slot_positions()[s] == -1);
  // Never-written slots hold zeros.
  for (Index i = 0; i < 7 * 8; ++i) REQUIRE(static_cast<float>(c.keys(1, 2)[i]) == 0.0f);

  const KVCache<double> r(1, 1, 4, 2, 6, KVCacheMode::ring);
  REQUIRE(r.v_head_dim() == 6);
  REQUIRE(r.mode() == KVCacheMode::ring);
  REQUIRE(r.memory_bytes() == std::size_t(1 * 1 * 4 * (2 + 6) * 8 + 4 * 8));
  REQUIRE(mha::detail::storage_name<float>() == std::string("float"));
  REQUIRE(mha::detail::storage_name<f16>() == std::string("f16"));
}

TEMPLATE_TEST_CASE("KVCache appends, crops and clears in linear mode, layout [N][Hkv][C][d]",
                   "[kv_cache][linear]", float, double) {
  linear_append_crop_clear<float, TestType>();
  linear_append_crop_clear<double, TestType>();
  linear_append_crop_clear<bf16, TestType>();
  linear_append_crop_clear<f16, TestType>();
}

TEMPLATE_TEST_CASE("KVCache in ring mode keeps the last C tokens at slot p % C", "[kv_cache][ring]", float,
                   double) {
  ring_wraparound<float, TestType>();
  ring_wraparound<double, TestType>();
  ring_wraparound<bf16, TestType>();
  ring_wraparound<f16, TestType>();
}

TEMPLATE_TEST_CASE("KVCache::append takes matrices, maps, blocks and Refs", "[kv_cache]", float, double) {
  using S = TestType;
  const Index N = 2, T = 3, Hkv = 2, d = 4;
  KVCache<float> cache(N, Hkv, 20, d);
  History<S> h(N);
  // Columns [1, 1 + Hkv*d) of a wider matrix: row stride 11, not Hkv*d.
  const Mat<S> wide = token_rows<S>(N * T, 11, 3);
  const Mat<S> k = wide.middleCols(1, Hkv * d), v = token_rows<S>(N * T, Hkv * d, 4);
  cache.append(wide.middleCols(1, Hkv * d), v);  // block: deduced
  h.add(k, v);
  const Eigen::Map<const Mat<S>> km(k.data(), k.rows(), k.cols());
  cache.append(km, v);  // Map
  h.add(k, v);
  const Eigen::Ref<const Mat<S>> kr(k), vr(v);
  cache.append(kr, vr);  // Ref: the non-template-deduced overload
  h.add(k, v);
  cache.template append<S>(k, v);  // explicit Scalar
  h.add(k, v);
  require_matches(cache, h, 4 * T);
}

TEST_CASE("KVCache constructor errors name the argument values", "[kv_cache][errors]") {
  using mha::shape_error;
  const char* expected = "[mha.shape] KVCache: expected positive [batch, num_kv_heads, capacity, head_dim] and "
                         "v_head_dim >= 0 (0: head_dim), got ";
  REQUIRE_THROWS_AS(KVCache<float>(0, 1, 1, 1), shape_error);
  REQUIRE_THROWS_WITH(KVCache<float>(0, 1, 1, 1), std::string(expected) + "[0, 1, 1, 1] and 0");
  REQUIRE_THROWS_WITH(KVCache<float>(1, -2, 1, 1), MHA_CONTAINS("got [1, -2, 1, 1] and 0"));
  REQUIRE_THROWS_WITH(KVCache<bf16>(1, 1, 0, 1), MHA_CONTAINS("got [1, 1, 0, 1] and 0"));
  REQUIRE_THROWS_WITH(KVCache<f16>(1, 1, 1, 0), MHA_CONTAINS("got [1, 1, 1, 0] and 0"));
  REQUIRE_THROWS_AS(KVCache<double>(1, 1, 1, 1, -1), shape_error);
  REQUIRE_THROWS_WITH(KVCache<double>(1, 1, 1, 1, -1), MHA_CONTAINS("got [1, 1, 1, 1] and -1"));
  REQUIRE_THROWS_AS(KVCache<float>(1, 1, 1, 1, 0, static_cast<KVCacheMode>(7)), mha::argument_error);
  REQUIRE_THROWS_WITH(KVCache<float>(1, 1, 1, 1, 0, static_cast<KVCacheMode>(7)),
                      "[mha.argument] KVCache: unknown mode 7");
  const Index big = Index(1) << 31;
  REQUIRE_THROWS_AS(KVCache<float>(big, big, 4, 4), mha::argument_error);
  REQUIRE_THROWS_WITH(KVCache<float>(big, big, 4, 4), MHA_CONTAINS("[mha.argument] KVCache: N*Hkv*C*(d+dv) = "));
}

TEMPLATE_TEST_CASE("KVCache::append and crop errors say what was expected and leave the cache unchanged",
                   "[kv_cache][errors]", float, double) {
  using S = TestType;
  KVCache<bf16> cache(2, 3, 4, 2, 5);  // keys [N*T, 6], values [N*T, 15]
  const Mat<S> k1 = token_rows<S>(2, 6, 1), v1 = token_rows<S>(2, 15, 2);
  cache.append(k1, v1);
  History<S> h(2);
  h.add(k1, v1);

  REQUIRE_THROWS_AS(cache.append(Mat<S>::Zero(3, 6), Mat<S>::Zero(3, 15)), mha::shape_error);
  REQUIRE_THROWS_WITH(cache.append(Mat<S>::Zero(3, 6), Mat<S>::Zero(3, 15)),
                      "[mha.shape] KVCache::append keys: expected [N*T, Hkv*d] with N = 2, Hkv*d = 6, got [3, 6] "
                      "(3 rows do not split into batch 2)");
  REQUIRE_THROWS_AS(cache.append(Mat<S>::Zero(4, 7), Mat<S>::Zero(4, 15)), mha::shape_error);
  REQUIRE_THROWS_WITH(cache.append(Mat<S>::Zero(4, 7), Mat<S>::Zero(4, 15)),
                      "[mha.shape] KVCache::append keys [N*T, Hkv*d]: expected [*, 6], got [4, 7]");
  REQUIRE_THROWS_WITH(cache.append(Mat<S>::Zero(4, 6), Mat<S>::Zero(2, 15)),
                      "[mha.shape] KVCache::append values [N*T, Hkv*dv]: expected [4, 15], got [2, 15]");
  REQUIRE_THROWS_WITH(cache.append(Mat<S>::Zero(4, 6), Mat<S>::Zero(4, 6)),
                      "[mha.shape] KVCache::append values [N*T, Hkv*dv]: expected [4, 15], got [4, 6]");

  // Overflow: 1 held + 4 new > 4. A capacity_error, which is a std::length_error.
  REQUIRE_THROWS_AS(cache.append(Mat<S>::Zero(8, 6), Mat<S>::Zero(8, 15)), mha::capacity_error);
  REQUIRE_THROWS_AS(cache.append(Mat<S>::Zero(8, 6), Mat<S>::Zero(8, 15)), std::length_error);
  REQUIRE_THROWS_WITH(cache.append(Mat<S>::Zero(8, 6), Mat<S>::Zero(8, 15)),
                      "[mha.cache] KVCache::append: 4 new tokens after 1 exceed the capacity 4 (linear mode)");

  REQUIRE_THROWS_AS(cache.crop(2), mha::argument_error);
  REQUIRE_THROWS_WITH(cache.crop(2), "[mha.argument] KVCache::crop: expected a length in [0, 1], got 2");
  REQUIRE_THROWS_WITH(cache.crop(-1), "[mha.argument] KVCache::crop: expected a length in [0, 1], got -1");
  require_matches(cache, h, 1);  // nothing above changed the cache

  const Mat<S> k3 = token_rows<S>(6, 6, 3), v3 = token_rows<S>(6, 15, 4);
  cache.append(k3, v3);  // 1 + 3 = 4 = C: allowed
  h.add(k3, v3);
  require_matches(cache, h, 4);
  REQUIRE_THROWS_WITH(cache.append(Mat<S>::Zero(2, 6), Mat<S>::Zero(2, 15)),
                      "[mha.cache] KVCache::append: 1 new tokens after 4 exceed the capacity 4 (linear mode)");

  KVCache<f16> ring(2, 3, 4, 2, 5, KVCacheMode::ring);
  REQUIRE_THROWS_AS(ring.append(Mat<S>::Zero(10, 6), Mat<S>::Zero(10, 15)), mha::capacity_error);
  REQUIRE_THROWS_WITH(ring.append(Mat<S>::Zero(10, 6), Mat<S>::Zero(10, 15)),
                      "[mha.cache] KVCache::append: 5 new tokens exceed the capacity 4 (ring mode takes at most C "
                      "tokens per call)");
  REQUIRE(ring.position() == 0);
  ring.append(Mat<S>::Zero(8, 6), Mat<S>::Zero(8, 15));  // T = C: allowed
  REQUIRE_THROWS_AS(ring.crop(1), mha::argument_error);
  REQUIRE_THROWS_WITH(ring.crop(1), "[mha.argument] KVCache::crop: not available in ring mode");
  REQUIRE(ring.position() == 4);
}

// ---------------------------------------------------------------------------------------------
// Conversions.

TEST_CASE("The reference rounding model is right on hand-checked values", "[kv_cache][convert]") {
  // Guards the model the conversion tests trust.
  REQUIRE(round_reference(1.0 + std::ldexp(1.0, -8), kBf16) == 1.0);                            // tie -> even
  REQUIRE(round_reference(1.0 + 3 * std::ldexp(1.0, -8), kBf16) == 1.0 + std::ldexp(1.0, -6));  // tie -> even (up)
  REQUIRE(round_reference(1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40), kBf16) == 1.0 + std::ldexp(1.0, -7));
  REQUIRE(round_reference(65519.0, kF16) == 65504.0);
  REQUIRE(round_reference(65520.0, kF16) == kInfD);
  REQUIRE(round_reference(-65520.0, kF16) == -kInfD);
  REQUIRE(round_reference(std::ldexp(1.0, -25), kF16) == 0.0);                                   // tie with 0
  REQUIRE(round_reference(std::ldexp(1.0, -25) * 1.01, kF16) == std::ldexp(1.0, -24));
  REQUIRE(round_reference(3 * std::ldexp(1.0, -25), kF16) == std::ldexp(1.0, -23));              // tie -> even
  REQUIRE(decode(0x3f80, kBf16) == 1.0);
  REQUIRE(decode(0x7f7f, kBf16) == kBf16.max_finite);
  REQUIRE(decode(0x3c00, kF16) == 1.0);
  REQUIRE(decode(0x7bff, kF16) == 65504.0);
  REQUIRE(decode(0x0001, kF16) == std::ldexp(1.0, -24));
  REQUIRE(decode(0x0001, kBf16) == std::ldexp(1.0, -133));
  REQUIRE(decode(0xfc00, kF16) == -kInfD);
}

TEST_CASE("bf16 and f16 widen exactly, for every bit pattern", "[kv_cache][convert]") {
  std::vector<bf16> b(65536);
  std::vector<f16> h(65536);
  for (std::uint32_t i = 0; i < 65536; ++i) {
    b[i] = from_bits<bf16>(std::uint16_t(i));
    h[i] = from_bits<f16>(std::uint16_t(i));
  }
  // 64 rows of 1024 (packets, no tail) and 2048 rows of 32, through float and through double.
  std::vector<float> bf(65536), hf(65536);
  std::vector<double> bd(65536), hd(65536);
  mha::detail::convert_rows(b.data(), 1024, 64, 1024, bf.data(), 1024);
  mha::detail::convert_rows(h.data(), 1024, 64, 1024, hf.data(), 1024);
  mha::detail::convert_rows(b.data(), 32, 2048, 32, bd.data(), 32);
  mha::detail::convert_rows(h.data(), 32, 2048, 32, hd.data(), 32);
  for (std::uint32_t i = 0; i < 65536; ++i) {
    CAPTURE(i);
    REQUIRE(same_value(bf[i], decode(std::uint16_t(i), kBf16)));
    REQUIRE(same_value(bd[i], decode(std::uint16_t(i), kBf16)));
    REQUIRE(same_value(hf[i], decode(std::uint16_t(i), kF16)));
    REQUIRE(same_value(hd[i], decode(std::uint16_t(i), kF16)));
    // Narrowing a widened value gives it back (NaN: some NaN).
    if (!std::isnan(bf[i])) {
      REQUIRE(bits_of(mha::detail::convert_value<bf16>(bf[i])) == i);
      REQUIRE(bits_of(mha::detail::convert_value<bf16>(bd[i])) == i);
    }
    if (!std::isnan(hf[i])) {
      REQUIRE(bits_of(mha::detail::convert_value<f16>(hf[i])) == i);
      REQUIRE(bits_of(mha::detail::convert_value<f16>(hd[i])) == i);
    }
  }
}

TEST_CASE("float to bf16 rounds to nearest even at every tie", "[kv_cache][convert][bf16]") {
  require_rounds_like_reference<bf16>(inputs_around_ties<bf16>(), 37);
}

TEST_CASE("float to f16 rounds to nearest even at every tie and overflows to Inf", "[kv_cache][convert][f16]") {
  require_rounds_like_reference<f16>(inputs_around_ties<f16>(), 37);
}

TEST_CASE("double to bf16 / f16 is correctly rounded (no double rounding through float)",
          "[kv_cache][convert]") {
  require_rounds_like_reference<bf16>(double_inputs<bf16>(), 37);
  require_rounds_like_reference<f16>(double_inputs<f16>(), 37);
  // The case that rounding through float gets wrong, spelled out.
  const double above_tie = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40);
  REQUIRE(static_cast<float>(bf16(static_cast<float>(above_tie))) == 1.0f);  // what double rounding gives
  REQUIRE(static_cast<float>(mha::detail::convert_value<bf16>(above_tie)) == 1.0f + 0x1p-7f);
  const double below_tie = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  REQUIRE(static_cast<float>(mha::detail::convert_value<f16>(below_tie)) == 1.0f + 0x1p-10f);
}

TEST_CASE("Rounding keeps NaN, Inf and signed zero; f16 overflows to Inf; within half an ulp otherwise",
          "[kv_cache][convert]") {
  const float inf = std::numeric_limits<float>::infinity();
  float signalling;
  const std::uint32_t snan_bits = 0x7f800001u;  // truncation to 16 bits would make this Inf
  std::memcpy(&signalling, &snan_bits, sizeof signalling);
  // 17 values: two packets and a tail.
  const std::vector<float> in = {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                                 signalling, inf, -inf, 0.0f, -0.0f, 65519.0f, 65520.0f, -65520.0f, 1e5f,
                                 std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                                 3.3962e38f, std::numeric_limits<float>::denorm_min(), 1.0f, signalling};
  std::vector<bf16> b(in.size());
  std::vector<f16> h(in.size());
  mha::detail::convert_rows(in.data(), 0, 1, Index(in.size()), b.data(), 0);
  mha::detail::convert_rows(in.data(), 0, 1, Index(in.size()), h.data(), 0);
  for (const std::size_t i : {0u, 1u, 2u, 16u}) {
    CAPTURE(i);
    REQUIRE(std::isnan(static_cast<float>(b[i])));
    REQUIRE(std::isnan(static_cast<float>(h[i])));
  }
  REQUIRE(static_cast<float>(b[3]) == inf);
  REQUIRE(static_cast<float>(h[4]) == -inf);
  REQUIRE(bits_of(b[5]) == 0x0000);
  REQUIRE(bits_of(b[6]) == 0x8000);
  REQUIRE(bits_of(h[6]) == 0x8000);
  REQUIRE(static_cast<float>(h[7]) == 65504.0f);
  REQUIRE(static_cast<float>(h[8]) == inf);
  REQUIRE(static_cast<float>(h[9]) == -inf);
  REQUIRE(static_cast<float>(h[10]) == inf);
  REQUIRE(static_cast<float>(b[11]) == inf);  // FLT_MAX is past bf16's max by more than half an ulp
  REQUIRE(static_cast<float>(b[12]) == -inf);
  REQUIRE(static_cast<float>(b[13]) == inf);
  REQUIRE(bits_of(b[14]) == 0x0000);  // 2^-149 is far below half of bf16's 2^-133
  REQUIRE(bits_of(h[14]) == 0x0000);
  REQUIRE(static_cast<float>(b[15]) == 1.0f);

  // Half an ulp at most, for random values over both formats' ranges.
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> mant(1.0, 2.0);
  for (int i = 0; i < 5000; ++i) {
    const double xb = std::ldexp(mant(rng), int(rng() % 200) - 100);
    const double xh = std::ldexp(mant(rng), int(rng() % 30) - 14);
    const double ulp_b = std::ldexp(1.0, std::ilogb(xb) - 7), ulp_h = std::ldexp(1.0, std::ilogb(xh) - 10);
    CAPTURE(xb, xh);
    REQUIRE(std::fabs(static_cast<double>(static_cast<float>(mha::detail::convert_value<bf16>(xb))) - xb) <= ulp_b / 2);
    REQUIRE(std::fabs(static_cast<double>(static_cast<float>(mha::detail::convert_value<f16>(xh))) - xh) <= ulp_h / 2);
  }
}

// Out of line: GCC 12.2 at -O2 / -O3 miscompiles `double -> float` rows followed by `float -> double`
// rows of the same buffer when both are inlined into one function: the vectoriser forwards the
// doubles and drops the rounding (16777217.0 comes back as 16777217.0, not 16777216.0). Plain
// loops without mha reproduce it; clang and GCC -O0/-O1 do not. The cache does the two steps in
// different calls (append, then the kernel's tile load).
template <class From, class To>
__attribute__((noinline)) void convert_rows_out_of_line(const From* src, Index rows, Index cols, To* dst) {
  mha::detail::convert_rows(src, cols, rows, cols, dst, cols);
}

TEST_CASE("float and double storage convert exactly or with one rounding", "[kv_cache][convert]") {
  const std::vector<double> in = {0.1, -1.0 / 3, 1e-40, 1e39, 16777217.0, 1.0 + 0x1p-30};
  std::vector<float> f(in.size());
  std::vector<double> back(in.size());
  convert_rows_out_of_line(in.data(), 2, 3, f.data());
  convert_rows_out_of_line(f.data(), 2, 3, back.data());
  for (std::size_t i = 0; i < in.size(); ++i) {
    REQUIRE(f[i] == static_cast<float>(in[i]));   // hardware rounding, nearest even
    REQUIRE(back[i] == static_cast<double>(f[i]));  // exact
  }
  std::vector<float> copy(in.size());
  mha::detail::convert_rows(f.data(), 3, 2, 3, copy.data(), 3);  // float -> float: a copy
  REQUIRE(std::memcmp(copy.data(), f.data(), f.size() * sizeof(float)) == 0);
}

TEMPLATE_TEST_CASE("KVCache<bf16 / f16> holds the correctly rounded keys and values", "[kv_cache][convert]",
                   float, double) {
  using S = TestType;
  // Ties and near-ties of both formats, appended as keys; values get the same values negated.
  const std::vector<float> ties = inputs_around_ties<f16>();
  const Index d = 37, T = 50;
  Mat<S> k(2 * T, d), v(2 * T, d);
  for (Index i = 0; i < k.size(); ++i) {
    k.data()[i] = static_cast<S>(ties[static_cast<std::size_t>(i) * 7 % ties.size()]);
    v.data()[i] = -k.data()[i];
  }
  KVCache<f16> h(2, 1, T, d);
  KVCache<bf16> b(2, 1, T, d);
  h.append(k, v);
  b.append(k, v);
  for (Index n = 0; n < 2; ++n)
    for (Index t = 0; t < T; ++t)
      for (Index i = 0; i < d; ++i) {
        const double x = static_cast<double>(k(n * T + t, i));
        CAPTURE(n, t, i, x);
        REQUIRE(same_value(decode(bits_of(h.keys(n, 0)[t * d + i]), kF16), round_reference(x, kF16)));
        REQUIRE(same_value(decode(bits_of(h.values(n, 0)[t * d + i]), kF16), round_reference(-x, kF16)));
        REQUIRE(same_value(decode(bits_of(b.keys(n, 0)[t * d + i]), kBf16), round_reference(x, kBf16)));
      }
}
