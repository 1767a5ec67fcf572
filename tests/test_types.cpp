// Tests of include/mha/types.hpp: the matrix aliases and BatchView.
#include <mha/types.hpp>

#include <type_traits>
#include <vector>

#include "reference.hpp"

using mha::BatchView;
using mha::Index;
using mha_test::Mat;

TEMPLATE_TEST_CASE("Matrix aliases are row-major", "[types]", float, double) {
  STATIC_REQUIRE(mha::Matrix<TestType>::IsRowMajor);
  STATIC_REQUIRE(mha::RowVector<TestType>::RowsAtCompileTime == 1);
  STATIC_REQUIRE(mha::BoolMatrix::IsRowMajor);
  STATIC_REQUIRE(std::is_same<typename mha::Matrix<TestType>::Scalar, TestType>::value);
}

TEMPLATE_TEST_CASE("BatchView over a packed matrix views it without copying", "[types][batch_view]", float,
                   double) {
  std::mt19937 rng(11);
  const Index N = 3, T = 4, F = 5;
  const Mat<TestType> m = mha_test::random_matrix<TestType>(rng, N * T, F);
  const BatchView<TestType> view(m, N);
  REQUIRE(view.batch() == N);
  REQUIRE(view.tokens() == T);
  REQUIRE(view.features() == F);
  REQUIRE(view.row_stride() == F);
  REQUIRE(view.data() == m.data());
  for (Index n = 0; n < N; ++n) {
    const auto seq = view[n];
    REQUIRE(seq.rows() == T);
    REQUIRE(seq.cols() == F);
    REQUIRE(seq.data() == m.data() + n * T * F);
    REQUIRE(mha_test::exactly_equal(seq, m.middleRows(n * T, T)));
  }
  REQUIRE(view.flat().data() == m.data());
  REQUIRE(mha_test::exactly_equal(view.flat(), m));
}

TEMPLATE_TEST_CASE("BatchView over caller memory and strided rows", "[types][batch_view]", float, double) {
  const Index N = 2, T = 3, F = 4, stride = 7;
  std::vector<TestType> buf(static_cast<size_t>(N * T * stride));
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<TestType>(i);

  SECTION("pointer constructor with a row stride") {
    const BatchView<TestType> view(buf.data(), N, T, F, stride);
    REQUIRE(view.row_stride() == stride);
    for (Index n = 0; n < N; ++n)
      for (Index t = 0; t < T; ++t)
        for (Index f = 0; f < F; ++f)
          REQUIRE(view[n](t, f) == buf[static_cast<size_t>((n * T + t) * stride + f)]);
    REQUIRE(view.flat()(N * T - 1, F - 1) == buf[static_cast<size_t>((N * T - 1) * stride + F - 1)]);
  }
  SECTION("pointer constructor, packed (row_stride 0)") {
    const BatchView<TestType> view(buf.data(), N, T, F);
    REQUIRE(view.row_stride() == F);
    REQUIRE(view[1](0, 0) == buf[static_cast<size_t>(T * F)]);
  }
  SECTION("a block of columns of a wider matrix") {
    const Eigen::Map<const Mat<TestType>> wide(buf.data(), N * T, stride);
    const BatchView<TestType> view(wide.middleCols(2, F), N);
    REQUIRE(view.data() == buf.data() + 2);
    REQUIRE(view.row_stride() == stride);
    REQUIRE(view.features() == F);
    REQUIRE(mha_test::exactly_equal(view[1], wide.block(T, 2, T, F)));
  }
  SECTION("a strided Map") {
    const mha::ConstStridedMap<TestType> map(buf.data(), N * T, F, Eigen::OuterStride<>(stride));
    const BatchView<TestType> view(map, N);
    REQUIRE(view.row_stride() == stride);
    REQUIRE(view.tokens() == T);
    REQUIRE(mha_test::exactly_equal(view.flat(), map));
  }
}

TEMPLATE_TEST_CASE("BatchView rejects bad shapes with a message", "[types][batch_view][errors]", float, double) {
  std::vector<TestType> buf(64, TestType(0));
  const Mat<TestType> m = Mat<TestType>::Zero(6, 4);
  REQUIRE_THROWS_WITH(BatchView<TestType>(buf.data(), 0, 2, 2),
                      MHA_CONTAINS("expected positive [batch, tokens, features], got [0, 2, 2]"));
  REQUIRE_THROWS_WITH(BatchView<TestType>(buf.data(), 1, 0, 2), MHA_CONTAINS("got [1, 0, 2]"));
  REQUIRE_THROWS_WITH(BatchView<TestType>(buf.data(), 1, 2, 0), MHA_CONTAINS("got [1, 2, 0]"));
  REQUIRE_THROWS_AS(BatchView<TestType>(buf.data(), 1, 2, 0), mha::shape_error);
  REQUIRE_THROWS_AS(BatchView<TestType>(buf.data(), 1, 2, 4, 3), mha::shape_error);
  REQUIRE_THROWS_WITH(BatchView<TestType>(buf.data(), 1, 2, 4, 3),
                      MHA_CONTAINS("row stride 3 is smaller than features 4"));
  REQUIRE_THROWS_AS(BatchView<TestType>(nullptr, 1, 2, 2), mha::argument_error);
  REQUIRE_THROWS_WITH(BatchView<TestType>(nullptr, 1, 2, 2), MHA_CONTAINS("null data pointer"));
  REQUIRE_THROWS_AS(BatchView<TestType>(m, 4), mha::shape_error);
  REQUIRE_THROWS_WITH(BatchView<TestType>(m, 4), MHA_CONTAINS("6 rows do not split into batch 4"));
  REQUIRE_THROWS_AS(BatchView<TestType>(m, 0), mha::shape_error);
  REQUIRE_THROWS_AS(BatchView<TestType>(m, 7), mha::shape_error);  // 0 tokens per entry
  REQUIRE_NOTHROW(BatchView<TestType>(m, 3));
}
