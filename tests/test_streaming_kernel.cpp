// Tests of include/mha/detail/streaming_kernel.hpp, the decode micro-kernel: scores and value
// accumulation against plain loops in double for every row count 1..9, key counts 1..40 and head
// widths 1..70 (packet tails included), strided and misaligned operands, float and double over a
// cache of the same type, float over bf16 and f16 (read and widened in registers where the build
// can); and the property the kernel documents: its summation order does not depend on how rows
// are grouped or where a tile ends, so results are bitwise identical row by row.
#include <mha/detail/streaming_kernel.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "mha_catch.hpp"
#include "strided.hpp"

using mha::Index;
using mha::detail::stream_scores;
using mha::detail::stream_values;
using mha::detail::to_scalar;

namespace {

template <class S, class KV>
void check_scores(std::mt19937& rng, Index M, Index width, Index d) {
  const Strided<S> q(rng, M, d, 3, 1);
  const Strided<KV> k(rng, width, d, 5, 2);
  Strided<S> s(rng, M, width, 2, 0);
  stream_scores(M, width, d, q.data(), q.stride, k.data(), k.stride, s.data(), s.stride);
  const double eps = std::numeric_limits<S>::epsilon();
  for (Index i = 0; i < M; ++i)
    for (Index j = 0; j < width; ++j) {
      double want = 0, mag = 0;
      for (Index t = 0; t < d; ++t) {
        want += q.at(i, t) * k.at(j, t);
        mag += std::abs(q.at(i, t) * k.at(j, t));
      }
      INFO("M " << M << " width " << width << " d " << d << " row " << i << " key " << j);
      REQUIRE(std::abs(s.at(i, j) - want) <= 2 * double(d) * eps * mag + 1e-300);
    }
}

template <class S, class KV>
void check_values(std::mt19937& rng, Index M, Index width, Index dv) {
  const Strided<S> p(rng, M, width, 3, 1);
  const Strided<KV> v(rng, width, dv, 4, 3);
  Strided<S> acc(rng, M, dv, 2, 1);
  const Strided<S> before = acc;
  stream_values(M, width, dv, p.data(), p.stride, v.data(), v.stride, acc.data(), acc.stride);
  const double eps = std::numeric_limits<S>::epsilon();
  for (Index i = 0; i < M; ++i)
    for (Index c = 0; c < dv; ++c) {
      double want = before.at(i, c), mag = std::abs(want);
      for (Index j = 0; j < width; ++j) {
        want += p.at(i, j) * v.at(j, c);
        mag += std::abs(p.at(i, j) * v.at(j, c));
      }
      INFO("M " << M << " width " << width << " dv " << dv << " row " << i << " col " << c);
      REQUIRE(std::abs(acc.at(i, c) - want) <= 2 * double(width + 1) * eps * mag + 1e-300);
    }
}

// Padding past each matrix's last row stays untouched: the kernel writes only [M, width] / [M, dv].
template <class S, class KV>
void sweep() {
  std::mt19937 rng(7);
  for (Index M = 1; M <= 9; ++M)
    for (Index width = 1; width <= 40; width += (width < 20 ? 1 : 7))
      for (Index d : {1, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 48, 64, 70}) {
        check_scores<S, KV>(rng, M, width, d);
        check_values<S, KV>(rng, M, width, d);
      }
}

}  // namespace

TEMPLATE_TEST_CASE("stream_scores and stream_values match plain loops", "[streaming]", float, double) {
  sweep<TestType, TestType>();
}

TEST_CASE("stream kernels read bf16 and f16 caches into float exactly as widened values", "[streaming]") {
  sweep<float, Eigen::bfloat16>();
  sweep<float, Eigen::half>();
}

TEMPLATE_TEST_CASE("stream kernels sum in an order fixed by the data, not by the row grouping", "[streaming]",
                   float, double) {
  using S = TestType;
  std::mt19937 rng(11);
  const Index M = 7, width = 37, d = 70;
  const Strided<S> q(rng, M, d, 0, 0);
  const Strided<S> k(rng, width, d, 0, 0);
  Strided<S> all(rng, M, width, 0, 0);
  stream_scores(M, width, d, q.data(), q.stride, k.data(), k.stride, all.data(), all.stride);
  for (Index i = 0; i < M; ++i) {
    // Row i alone, and its keys in two tiles split at an odd place.
    std::vector<S> alone(static_cast<std::size_t>(width));
    stream_scores(Index(1), Index(13), d, q.data() + i * d, d, k.data(), d, alone.data(), width);
    stream_scores(Index(1), width - 13, d, q.data() + i * d, d, k.data() + 13 * d, d, alone.data() + 13, width);
    for (Index j = 0; j < width; ++j) REQUIRE(alone[std::size_t(j)] == all.data()[i * width + j]);
  }
  const Strided<S> p(rng, M, width, 0, 0);
  Strided<S> acc(rng, M, d, 0, 0);
  std::vector<S> rows(acc.storage.begin(), acc.storage.end());
  stream_values(M, width, d, p.data(), p.stride, k.data(), k.stride, acc.data(), acc.stride);
  for (Index i = 0; i < M; ++i) {
    stream_values(Index(1), width, d, p.data() + i * width, width, k.data(), d, rows.data() + i * d, d);
    for (Index c = 0; c < d; ++c) REQUIRE(rows[std::size_t(i * d + c)] == acc.data()[i * d + c]);
  }
}
