// Tests of include/mha/detail/{pack,microkernel,gemm_driver}.hpp: the micro-kernel GEMM against a
// plain triple loop in double, over every m in 1..40, n in 1..40 and k in 1..70, strided and
// misaligned operands, both forms of B, alpha, overwrite and accumulate, both scalars.
#include <mha/detail/gemm_driver.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "mha_catch.hpp"
#include "strided.hpp"

using mha::Index;
using mha::detail::BForm;
using mha::detail::GemmBlocking;
using mha::detail::PackBuffers;

namespace {

// What the test expects: c = alpha * sum a b (+ c0), and the magnitude the rounding scales with.
struct Expected {
  std::vector<double> value, magnitude;  // [m, n] each
};

template <class S>
Expected reference(Index m, Index n, Index k, const Strided<S>& a, const Strided<S>& b, BForm form, double alpha,
                   const Strided<S>& c0, bool accumulate) {
  Expected e;
  e.value.assign(static_cast<std::size_t>(m * n), 0.0);
  e.magnitude.assign(static_cast<std::size_t>(m * n), 0.0);
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      double sum = 0, mag = 0;
      for (Index p = 0; p < k; ++p) {
        const double bv = form == BForm::row_major ? double(b.at(p, j)) : double(b.at(j, p));
        sum += double(a.at(i, p)) * bv;
        mag += std::abs(double(a.at(i, p)) * bv);
      }
      const double base = accumulate ? double(c0.at(i, j)) : 0.0;
      e.value[static_cast<std::size_t>(i * n + j)] = base + alpha * sum;
      e.magnitude[static_cast<std::size_t>(i * n + j)] = std::abs(base) + std::abs(alpha) * mag;
    }
  return e;
}

// Every element within the worst-case rounding bound of a length-k sum (gamma_k ~ k u), and the
// padding between rows of C untouched.
template <class S>
void require_matches(const Strided<S>& c, const Strided<S>& c0, const Expected& e, Index k) {
  const double u = std::numeric_limits<S>::epsilon();
  Index bad = 0;
  double worst = 0;
  for (Index i = 0; i < c.rows; ++i) {
    for (Index j = 0; j < c.cols; ++j) {
      const std::size_t at = static_cast<std::size_t>(i * c.cols + j);
      const double err = std::abs(double(c.at(i, j)) - e.value[at]);
      const double bound = double(k + 2) * u * e.magnitude[at] + 1e-30;
      if (!(err <= bound)) ++bad, worst = std::max(worst, err / bound);
    }
    for (Index j = c.cols; j < c.stride; ++j)
      if (c.at(i, j) != c0.at(i, j)) ++bad;
  }
  INFO("elements outside the bound or padding written: " << bad << ", worst error / bound " << worst);
  REQUIRE(bad == 0);
}

// One product through mha::detail::gemm, with strides and misalignment picked from `rng`.
template <class S>
void check_gemm(std::mt19937& rng, Index m, Index n, Index k, BForm form, bool accumulate, S alpha,
                PackBuffers<S>& buffers) {
  CAPTURE(m, n, k, form == BForm::row_major ? "B row-major" : "B transposed", accumulate, alpha);
  std::uniform_int_distribution<Index> pad(0, 5), shift(0, 3);
  const Strided<S> a(rng, m, k, pad(rng), shift(rng));
  const Strided<S> b = form == BForm::row_major ? Strided<S>(rng, k, n, pad(rng), shift(rng))
                                                : Strided<S>(rng, n, k, pad(rng), shift(rng));
  const Strided<S> c0(rng, m, n, pad(rng) + 1, shift(rng));
  Strided<S> c = c0;
  buffers.reserve(m, n, k);
  if (form == BForm::row_major)
    mha::detail::gemm<BForm::row_major>(m, n, k, a.data(), a.stride, b.data(), b.stride, alpha, c.data(), c.stride,
                                        accumulate, buffers);
  else
    mha::detail::gemm<BForm::transposed>(m, n, k, a.data(), a.stride, b.data(), b.stride, alpha, c.data(),
                                         c.stride, accumulate, buffers);
  require_matches(c, c0, reference(m, n, k, a, b, form, double(alpha), c0, accumulate), k);
}

}  // namespace

TEMPLATE_TEST_CASE("Micro-kernel GEMM: every m, n in 1..40 at depths 1, 3, 9", "[microkernel]", float, double) {
  using S = TestType;
  std::mt19937 rng(11);
  PackBuffers<S> buffers;
  for (Index k : {1, 3, 9})  // deeper sums in the next case
    for (Index m = 1; m <= 40; ++m)
      for (Index n = 1; n <= 40; ++n) {
        // Each m meets both forms, both modes and both alphas across the n sweep, and vice versa.
        const BForm form = (m + n) % 2 == 0 ? BForm::row_major : BForm::transposed;
        const bool accumulate = (m + n + k) % 3 != 0;
        const S alpha = (m * n + k) % 4 == 0 ? S(1) : S(-0.75);
        check_gemm<S>(rng, m, n, k, form, accumulate, alpha, buffers);
      }
}

TEMPLATE_TEST_CASE("Micro-kernel GEMM: every k in 1..70", "[microkernel]", float, double) {
  using S = TestType;
  std::mt19937 rng(12);
  PackBuffers<S> buffers;
  constexpr Index MR = GemmBlocking<S>::MR, NR = GemmBlocking<S>::NR;
  for (Index k = 1; k <= 70; ++k)
    for (Index m : {Index(1), MR - 1, MR, MR + 1, Index(40)})
      for (Index n : {Index(1), NR - 1, NR, NR + 1, Index(40)})
        for (BForm form : {BForm::row_major, BForm::transposed})
          check_gemm<S>(rng, m, n, k, form, (m + n + k) % 2 == 0, S(k % 3 == 0 ? 2 : 1), buffers);
}

TEMPLATE_TEST_CASE("Micro-kernel GEMM: sizes past the cache blocks KC, MC, NC", "[microkernel]", float, double) {
  using S = TestType;
  using B = GemmBlocking<S>;
  std::mt19937 rng(13);
  PackBuffers<S> buffers;
  // Depth over two KC blocks, rows over MC, columns over NC: every loop of the driver turns twice.
  check_gemm<S>(rng, B::MC + 5, 37, 2 * B::KC + 3, BForm::transposed, false, S(1), buffers);
  check_gemm<S>(rng, 7, 20, 2 * B::KC + 3, BForm::row_major, true, S(0.5), buffers);
  check_gemm<S>(rng, 7, B::NC + 21, 3, BForm::transposed, true, S(1), buffers);
  check_gemm<S>(rng, B::MC + 1, B::NC + 1, 2, BForm::row_major, false, S(-1), buffers);
}

TEMPLATE_TEST_CASE("Micro-kernel GEMM: k = 0 is the empty sum", "[microkernel]", float, double) {
  using S = TestType;
  std::mt19937 rng(14);
  PackBuffers<S> buffers;
  for (bool accumulate : {false, true})
    for (BForm form : {BForm::row_major, BForm::transposed})
      check_gemm<S>(rng, 9, 18, 0, form, accumulate, S(1), buffers);
}

TEMPLATE_TEST_CASE("Packed layouts are the documented ones, zero-padded", "[microkernel]", float, double) {
  using S = TestType;
  constexpr Index MR = GemmBlocking<S>::MR, NR = GemmBlocking<S>::NR;
  std::mt19937 rng(15);
  const Index m = 2 * MR + 1, n = NR + 3, k = 5;
  const Strided<S> a(rng, m, k, 2, 1), b(rng, k, n, 3, 1), w(rng, n, k, 1, 2);
  std::vector<S> pa(static_cast<std::size_t>(mha::detail::packed_a_size<S>(m, k)), S(7));
  std::vector<S> pb(static_cast<std::size_t>(mha::detail::packed_b_size<S>(k, n)), S(7));
  std::vector<S> pw(pb.size(), S(7));
  REQUIRE(pa.size() == std::size_t(3 * MR * k));
  REQUIRE(pb.size() == std::size_t(2 * NR * k));
  const auto va = mha::detail::pack_a(m, k, a.data(), a.stride, pa.data());
  const auto vb = mha::detail::pack_b(k, n, b.data(), b.stride, pb.data());
  const auto vw = mha::detail::pack_b_transposed(k, n, w.data(), w.stride, pw.data());
  REQUIRE(va.panel_stride == k * MR);
  REQUIRE(vb.panel_stride == k * NR);
  REQUIRE(vw.panel_stride == k * NR);
  for (Index i = 0; i < 3 * MR; ++i)
    for (Index p = 0; p < k; ++p)
      REQUIRE(pa[static_cast<std::size_t>((i / MR) * va.panel_stride + p * MR + i % MR)] ==
              (i < m ? a.at(i, p) : S(0)));
  for (Index p = 0; p < k; ++p)
    for (Index j = 0; j < 2 * NR; ++j) {
      const std::size_t at = static_cast<std::size_t>((j / NR) * vb.panel_stride + p * NR + j % NR);
      REQUIRE(pb[at] == (j < n ? b.at(p, j) : S(0)));
      REQUIRE(pw[at] == (j < n ? w.at(j, p) : S(0)));
    }
}

TEMPLATE_TEST_CASE("gemm_packed and gemm_packed_b on slices of packed operands", "[microkernel]", float, double) {
  using S = TestType;
  constexpr Index MR = GemmBlocking<S>::MR;
  std::mt19937 rng(16);
  PackBuffers<S> buffers;
  // A weight W [N, K] packed once as B = W^T [K, N]; products with every column range [j0, j0 + n)
  // (starting inside or on a panel) and depth range [p0, p0 + k) of it, as MultiHeadAttention
  // takes head groups of W_Q (rows of W) and of W_O (columns of W).
  const Index N = 45, K = 37, m = 2 * MR + 3;
  const Strided<S> w(rng, N, K, 3, 1);
  std::vector<S> pw(static_cast<std::size_t>(mha::detail::packed_b_size<S>(K, N)) + 64);
  // Aligned start for the B panels (the micro-kernel loads them with aligned packet loads).
  S* pw_data = pw.data();
  while (reinterpret_cast<std::uintptr_t>(pw_data) % 64 != 0) ++pw_data;
  const auto packed_w = mha::detail::pack_b_transposed(K, N, w.data(), w.stride, pw_data);
  std::vector<S> pa(static_cast<std::size_t>(mha::detail::packed_a_size<S>(m + MR, K)));
  int cases = 0;
  for (Index j0 : {0, 1, 5, 16, 17}) {
    for (Index n : {Index(1), Index(7), N - j0}) {
      for (Index p0 : {0, 3}) {
        for (Index k : {Index(1), K - p0}) {
          const bool accumulate = (j0 + n + k) % 2 == 0;
          const S alpha = S(p0 == 0 ? 1 : -2);
          CAPTURE(j0, n, p0, k, accumulate);
          // The same product from row-major operands: A [m, k], B = W[j0.., p0..]^T.
          const Strided<S> a(rng, m, k, 2, 1);
          Strided<S> bsub(rng, n, k, 0, 0);
          for (Index j = 0; j < n; ++j)
            for (Index p = 0; p < k; ++p) bsub.data()[j * k + p] = w.at(j0 + j, p0 + p);
          const Strided<S> c0(rng, m, n, 2, 3);
          const Expected e = reference(m, n, k, a, bsub, BForm::transposed, double(alpha), c0, accumulate);
          const auto slice = packed_w.middle_cols(j0, n).middle_depth(p0, k);

          Strided<S> c = c0;
          buffers.reserve(m, n, k, false);
          mha::detail::gemm_packed_b(m, a.data(), a.stride, slice, alpha, c.data(), c.stride, accumulate, buffers);
          require_matches(c, c0, e, k);

          // Both packed: rows from MR on of a packed A taller by MR rows.
          Strided<S> a_tall(rng, m + MR, k, 0, 0);
          for (Index i = 0; i < m; ++i)
            for (Index p = 0; p < k; ++p) a_tall.data()[(i + MR) * k + p] = a.at(i, p);
          const auto packed_a = mha::detail::pack_a(m + MR, k, a_tall.data(), a_tall.stride, pa.data());
          Strided<S> c2 = c0;
          mha::detail::gemm_packed(packed_a.middle_rows(MR, m), slice, alpha, c2.data(), c2.stride, accumulate);
          require_matches(c2, c0, e, k);
          ++cases;
        }
      }
    }
  }
  REQUIRE(cases == 5 * 3 * 2 * 2);
}
