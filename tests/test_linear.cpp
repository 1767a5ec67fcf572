// Tests of include/mha/linear.hpp: Linear and InProjection against loops.
#include <mha/linear.hpp>

#include <vector>

#include "reference.hpp"

using mha::Index;
using mha::InProjection;
using mha::Linear;
using mha_test::Mat;
using mha_test::MatD;
using mha_test::RowD;

TEMPLATE_TEST_CASE("Linear forward equals x W^T + b computed by loops", "[linear]", float, double) {
  using S = TestType;
  std::mt19937 rng(1);
  for (int trial = 0; trial < 12; ++trial) {
    const Index in = mha_test::random_int(rng, 1, 9), out = mha_test::random_int(rng, 1, 9);
    const Index T = mha_test::random_int(rng, 1, 7);
    const bool bias = trial % 2 == 0;
    CAPTURE(trial, in, out, T, bias);
    Linear<S> lin(in, out, bias);
    REQUIRE(lin.in_features() == in);
    REQUIRE(lin.out_features() == out);
    REQUIRE(lin.has_bias() == bias);
    const Mat<S> w = mha_test::random_matrix<S>(rng, out, in);
    lin.set_weight(w);
    RowD b;
    if (bias) {
      const mha::RowVector<S> bs = mha_test::random_row<S>(rng, out);
      lin.set_bias(bs);
      b = mha_test::cast_row<double>(bs);
      REQUIRE(mha_test::exactly_equal(lin.bias(), bs));
    } else {
      REQUIRE(lin.bias().size() == 0);
    }
    REQUIRE(mha_test::exactly_equal(lin.weight(), w));
    const Mat<S> x = mha_test::random_matrix<S>(rng, T, in);
    const MatD expected = mha_test::ref_linear(x, mha_test::cast<double>(w), b);
    REQUIRE_CLOSE_T(S, lin.forward(x), expected);
  }
}

TEMPLATE_TEST_CASE("A few rows split the output columns over threads, bitwise as one thread", "[linear]", float,
                   double) {
  // One and three rows against 1000 outputs: too few rows for row blocks, so two threads take
  // half of W each (linear_kernel.hpp); each output's sum must not change, and the column split
  // (panel-aligned, an uneven last block) must cover every column once.
  using S = TestType;
  std::mt19937 rng(5);
  const Index in = 37, out = 1000;
  Linear<S> lin(in, out, true);
  const Mat<S> w = mha_test::random_matrix<S>(rng, out, in);
  const mha::RowVector<S> b = mha_test::random_row<S>(rng, out);
  lin.set_weight(w);
  lin.set_bias(b);
  for (const Index T : {Index(1), Index(3)}) {
    CAPTURE(T);
    const Mat<S> x = mha_test::random_matrix<S>(rng, T, in);
    mha::set_num_threads(1);
    const Mat<S> one = lin.forward(x);
    mha::set_num_threads(2);
    const Mat<S> two = lin.forward(x);
    mha::set_num_threads(0);
    REQUIRE(mha_test::exactly_equal(one, two));
    REQUIRE_CLOSE_T(S, two, mha_test::ref_linear(x, mha_test::cast<double>(w), mha_test::cast_row<double>(b)));
  }
}

TEMPLATE_TEST_CASE("A new Linear is zero and computes zeros", "[linear]", float, double) {
  Linear<TestType> lin(3, 2);
  REQUIRE(lin.weight().isZero(0));
  REQUIRE(lin.bias().isZero(0));
  REQUIRE(lin.forward(Mat<TestType>::Ones(4, 3)).isZero(0));
}

TEMPLATE_TEST_CASE("Linear writes into caller memory", "[linear]", float, double) {
  using S = TestType;
  std::mt19937 rng(2);
  const Index in = 5, out = 3, T = 4;
  Linear<S> lin(in, out);
  lin.set_weight(mha_test::random_matrix<S>(rng, out, in));
  lin.set_bias(mha_test::random_row<S>(rng, out));
  const Mat<S> x = mha_test::random_matrix<S>(rng, T, in);
  const Mat<S> expected = lin.forward(x);

  SECTION("a Map over a buffer") {
    std::vector<S> buf(static_cast<size_t>(T * out), S(-7));
    Eigen::Map<Mat<S>> y(buf.data(), T, out);
    lin.forward(x, y);
    REQUIRE(mha_test::exactly_equal(y, expected));
  }
  SECTION("a block of columns of a wider matrix, leaving the other columns alone") {
    Mat<S> wide = Mat<S>::Constant(T, out + 4, S(-7));
    lin.forward(x, wide.middleCols(2, out));
    REQUIRE(mha_test::exactly_equal(wide.middleCols(2, out), expected));
    REQUIRE((wide.leftCols(2).array() == S(-7)).all());
    REQUIRE((wide.rightCols(2).array() == S(-7)).all());
  }
  SECTION("input from a strided block") {
    Mat<S> wide = Mat<S>::Zero(T, in + 3);
    wide.middleCols(1, in) = x;
    REQUIRE_CLOSE_T(S, lin.forward(wide.middleCols(1, in)), expected);
  }
}

TEMPLATE_TEST_CASE("Linear rejects wrong shapes with a message", "[linear][errors]", float, double) {
  using S = TestType;
  Linear<S> lin(4, 3);
  REQUIRE_THROWS_AS(lin.set_weight(Mat<S>::Zero(4, 3)), mha::shape_error);
  REQUIRE_THROWS_WITH(lin.set_weight(Mat<S>::Zero(4, 3)), MHA_CONTAINS("expected [3, 4], got [4, 3]"));
  REQUIRE_THROWS_AS(lin.set_bias(mha::RowVector<S>::Zero(4)), mha::shape_error);
  REQUIRE_THROWS_WITH(lin.set_bias(mha::RowVector<S>::Zero(4)), MHA_CONTAINS("expected [1, 3], got [1, 4]"));
  REQUIRE_THROWS_AS(lin.forward(Mat<S>::Zero(2, 5)), mha::shape_error);
  REQUIRE_THROWS_WITH(lin.forward(Mat<S>::Zero(2, 5)), MHA_CONTAINS("expected [*, 4], got [2, 5]"));
  Mat<S> y(2, 4);
  REQUIRE_THROWS_WITH(lin.forward(Mat<S>::Zero(2, 4), y), MHA_CONTAINS("expected [2, 3], got [2, 4]"));
  // A failed setter leaves the layer unchanged.
  REQUIRE(lin.weight().rows() == 3);
  REQUIRE(lin.weight().cols() == 4);

  Linear<S> no_bias(4, 3, false);
  REQUIRE_THROWS_AS(no_bias.set_bias(mha::RowVector<S>::Zero(3)), mha::argument_error);
  REQUIRE_THROWS_WITH(no_bias.set_bias(mha::RowVector<S>::Zero(3)), MHA_CONTAINS("without bias"));

  REQUIRE_THROWS_AS(Linear<S>(0, 3), mha::shape_error);
  REQUIRE_THROWS_WITH(Linear<S>(0, 3), MHA_CONTAINS("expected positive [out, in], got [3, 0]"));
  REQUIRE_THROWS_AS(Linear<S>(3, -1), mha::shape_error);
}

// ---------------------------------------------------------------------------------------------
// InProjection

namespace {

template <class S>
struct ProjectionCase {
  InProjection<S> proj;
  MatD wq, wk, wv;
  RowD b;  // [3E] or empty
};

template <class S>
ProjectionCase<S> make_projection(std::mt19937& rng, Index E, Index kdim, Index vdim, bool bias) {
  ProjectionCase<S> c{InProjection<S>(E, kdim, vdim, bias), {}, {}, {}, {}};
  const Mat<S> wq = mha_test::random_matrix<S>(rng, E, E), wk = mha_test::random_matrix<S>(rng, E, kdim),
               wv = mha_test::random_matrix<S>(rng, E, vdim);
  c.proj.set_q_weight(wq);
  c.proj.set_k_weight(wk);
  c.proj.set_v_weight(wv);
  c.wq = mha_test::cast<double>(wq);
  c.wk = mha_test::cast<double>(wk);
  c.wv = mha_test::cast<double>(wv);
  if (bias) {
    const mha::RowVector<S> b = mha_test::random_row<S>(rng, 3 * E);
    c.proj.set_in_proj_bias(b);
    c.b = mha_test::cast_row<double>(b);
  }
  return c;
}

}  // namespace

TEMPLATE_TEST_CASE("InProjection projects q, k, v like three Linear layers", "[linear][in_projection]", float,
                   double) {
  using S = TestType;
  std::mt19937 rng(3);
  for (int trial = 0; trial < 8; ++trial) {
    const Index E = mha_test::random_int(rng, 1, 8);
    const bool packed = trial % 2 == 0;
    const Index kdim = packed ? E : mha_test::random_int(rng, 1, 8);
    const Index vdim = packed ? E : mha_test::random_int(rng, 1, 8) + (kdim == E ? 1 : 0);
    const bool bias = trial % 4 < 2;
    CAPTURE(trial, E, kdim, vdim, bias);
    ProjectionCase<S> c = make_projection<S>(rng, E, kdim, vdim, bias);
    REQUIRE(c.proj.packed() == (kdim == E && vdim == E));
    REQUIRE(c.proj.embed_dim() == E);
    REQUIRE(c.proj.kdim() == kdim);
    REQUIRE(c.proj.vdim() == vdim);
    REQUIRE(c.proj.has_bias() == bias);
    const Index T = mha_test::random_int(rng, 1, 6);
    const Mat<S> xq = mha_test::random_matrix<S>(rng, T, E), xk = mha_test::random_matrix<S>(rng, T + 1, kdim),
                 xv = mha_test::random_matrix<S>(rng, T + 1, vdim);
    const RowD bq = bias ? RowD(c.b.segment(0, E)) : RowD(), bk = bias ? RowD(c.b.segment(E, E)) : RowD(),
               bv = bias ? RowD(c.b.segment(2 * E, E)) : RowD();
    Mat<S> yq(T, E), yk(T + 1, E), yv(T + 1, E);
    c.proj.project_q(xq, yq);
    c.proj.project_k(xk, yk);
    c.proj.project_v(xv, yv);
    REQUIRE_CLOSE_T(S, yq, mha_test::ref_linear(xq, c.wq, bq));
    REQUIRE_CLOSE_T(S, yk, mha_test::ref_linear(xk, c.wk, bk));
    REQUIRE_CLOSE_T(S, yv, mha_test::ref_linear(xv, c.wv, bv));
  }
}

TEMPLATE_TEST_CASE("InProjection weight getters return the stored weights", "[linear][in_projection]", float,
                   double) {
  using S = TestType;
  std::mt19937 rng(4);
  SECTION("packed: q/k/v weights are views into rows of in_proj_weight") {
    const Index E = 5;
    ProjectionCase<S> c = make_projection<S>(rng, E, E, E, true);
    const InProjection<S>& p = c.proj;
    REQUIRE(p.packed());
    const Mat<S>& packed = p.in_proj_weight();
    REQUIRE(packed.rows() == 3 * E);
    REQUIRE(packed.cols() == E);
    // set_q/k/v_weight wrote into the packed rows.
    REQUIRE(mha_test::exactly_equal(mha_test::cast<double>(packed.topRows(E)), c.wq));
    REQUIRE(mha_test::exactly_equal(mha_test::cast<double>(packed.middleRows(E, E)), c.wk));
    REQUIRE(mha_test::exactly_equal(mha_test::cast<double>(packed.bottomRows(E)), c.wv));
    // The getters are views (no copy) of those rows; a copy would also be a dangling Ref.
    {
      const auto q = p.q_weight();
      REQUIRE(q.data() == packed.data());
      REQUIRE(mha_test::exactly_equal(q, packed.topRows(E)));
    }
    {
      const auto k = p.k_weight();
      REQUIRE(k.data() == packed.data() + E * E);
      REQUIRE(mha_test::exactly_equal(k, packed.middleRows(E, E)));
    }
    {
      const auto v = p.v_weight();
      REQUIRE(v.data() == packed.data() + 2 * E * E);
      REQUIRE(mha_test::exactly_equal(v, packed.bottomRows(E)));
    }
    // set_in_proj_weight replaces all three.
    const Mat<S> w2 = mha_test::random_matrix<S>(rng, 3 * E, E);
    c.proj.set_in_proj_weight(w2);
    REQUIRE(mha_test::exactly_equal(p.in_proj_weight(), w2));
    const auto k2 = p.k_weight();
    REQUIRE(mha_test::exactly_equal(k2, w2.middleRows(E, E)));
  }
  SECTION("separate: q/k/v weights are the stored matrices") {
    ProjectionCase<S> c = make_projection<S>(rng, 4, 3, 6, false);
    const InProjection<S>& p = c.proj;
    REQUIRE_FALSE(p.packed());
    const auto q = p.q_weight();
    const auto k = p.k_weight();
    const auto v = p.v_weight();
    // Read again through fresh getters after the others were created: a Ref that pointed at a
    // destroyed temporary would now read freed or reused memory.
    REQUIRE(q.rows() == 4);
    REQUIRE(k.cols() == 3);
    REQUIRE(v.cols() == 6);
    REQUIRE(mha_test::exactly_equal(mha_test::cast<double>(q), c.wq));
    REQUIRE(mha_test::exactly_equal(mha_test::cast<double>(k), c.wk));
    REQUIRE(mha_test::exactly_equal(mha_test::cast<double>(v), c.wv));
    REQUIRE(p.q_weight().data() == p.q_weight().data());  // a stored matrix, not a fresh copy
    REQUIRE(p.in_proj_bias().size() == 0);
  }
}

TEMPLATE_TEST_CASE("InProjection project_packed equals the three projections", "[linear][in_projection]", float,
                   double) {
  using S = TestType;
  std::mt19937 rng(5);
  for (const bool bias : {true, false}) {
    const Index E = 6, T = 5;
    CAPTURE(bias);
    ProjectionCase<S> c = make_projection<S>(rng, E, E, E, bias);
    const Mat<S> x = mha_test::random_matrix<S>(rng, T, E);
    Mat<S> qkv(T, 3 * E), q(T, E), k(T, E), v(T, E);
    c.proj.project_packed(x, qkv);
    c.proj.project_q(x, q);
    c.proj.project_k(x, k);
    c.proj.project_v(x, v);
    REQUIRE_CLOSE_T(S, qkv.leftCols(E), q);
    REQUIRE_CLOSE_T(S, qkv.middleCols(E, E), k);
    REQUIRE_CLOSE_T(S, qkv.rightCols(E), v);
    const RowD b0 = bias ? RowD(c.b.segment(0, E)) : RowD();
    REQUIRE_CLOSE_T(S, qkv.leftCols(E), mha_test::ref_linear(x, c.wq, b0));
    if (bias) REQUIRE_CLOSE_T(S, qkv.rightCols(E), mha_test::ref_linear(x, c.wv, RowD(c.b.segment(2 * E, E))));
  }
}

TEMPLATE_TEST_CASE("InProjection rejects bad arguments with a message", "[linear][in_projection][errors]", float,
                   double) {
  using S = TestType;
  InProjection<S> separate(4, 3, 4);
  REQUIRE_FALSE(separate.packed());
  REQUIRE_THROWS_AS(separate.in_proj_weight(), mha::argument_error);
  REQUIRE_THROWS_WITH(separate.in_proj_weight(), MHA_CONTAINS("kdim == vdim == embed_dim"));
  REQUIRE_THROWS_AS(separate.set_in_proj_weight(Mat<S>::Zero(12, 4)), mha::argument_error);
  Mat<S> qkv(2, 12);
  REQUIRE_THROWS_AS(separate.project_packed(Mat<S>::Zero(2, 4), qkv), mha::argument_error);
  REQUIRE_THROWS_WITH(separate.project_packed(Mat<S>::Zero(2, 4), qkv), MHA_CONTAINS("project_packed"));

  REQUIRE_THROWS_AS(separate.set_k_weight(Mat<S>::Zero(4, 4)), mha::shape_error);
  REQUIRE_THROWS_WITH(separate.set_k_weight(Mat<S>::Zero(4, 4)), MHA_CONTAINS("expected [4, 3], got [4, 4]"));
  REQUIRE_THROWS_WITH(separate.set_q_weight(Mat<S>::Zero(3, 4)), MHA_CONTAINS("expected [4, 4], got [3, 4]"));
  REQUIRE_THROWS_WITH(separate.set_v_weight(Mat<S>::Zero(4, 3)), MHA_CONTAINS("expected [4, 4], got [4, 3]"));
  REQUIRE_THROWS_WITH(separate.set_in_proj_bias(mha::RowVector<S>::Zero(4)),
                      MHA_CONTAINS("expected [1, 12], got [1, 4]"));
  Mat<S> y(2, 4);
  REQUIRE_THROWS_WITH(separate.project_k(Mat<S>::Zero(2, 4), y), MHA_CONTAINS("expected [*, 3], got [2, 4]"));
  Mat<S> y_bad(2, 3);
  REQUIRE_THROWS_WITH(separate.project_q(Mat<S>::Zero(2, 4), y_bad), MHA_CONTAINS("expected [2, 4], got [2, 3]"));

  InProjection<S> packed(4, 4, 4, false);
  REQUIRE(packed.packed());
  REQUIRE_THROWS_WITH(packed.set_in_proj_weight(Mat<S>::Zero(4, 4)), MHA_CONTAINS("expected [12, 4], got [4, 4]"));
  REQUIRE_THROWS_AS(packed.set_in_proj_bias(mha::RowVector<S>::Zero(12)), mha::argument_error);
  REQUIRE_THROWS_WITH(packed.set_in_proj_bias(mha::RowVector<S>::Zero(12)), MHA_CONTAINS("without bias"));
  Mat<S> qkv_bad(2, 8);
  REQUIRE_THROWS_WITH(packed.project_packed(Mat<S>::Zero(2, 4), qkv_bad),
                      MHA_CONTAINS("expected [2, 12], got [2, 8]"));

  REQUIRE_THROWS_AS(InProjection<S>(0, 1, 1), mha::shape_error);
  REQUIRE_THROWS_WITH(InProjection<S>(2, 0, 1), MHA_CONTAINS("got [2, 0, 1]"));
}

TEMPLATE_TEST_CASE("Linear repacks its weight in every setter; results do not depend on threads", "[linear][packed]",
                   float, double) {
  using S = TestType;
  std::mt19937 rng(21);
  // Sizes past one register tile, one KC block and the 64-row threshold of a second thread.
  const Index in = 300, out = 37, T = 150;
  Linear<S> lin(in, out);
  const Mat<S> x = mha_test::random_matrix<S>(rng, T, in);
  for (int round = 0; round < 2; ++round) {  // the second weight must replace the first's panels
    CAPTURE(round);
    const Mat<S> w = mha_test::random_matrix<S>(rng, out, in);
    const mha::RowVector<S> b = mha_test::random_row<S>(rng, out);
    lin.set_weight(w);
    lin.set_bias(b);
    REQUIRE(mha_test::exactly_equal(lin.weight(), w));
    const MatD expected = mha_test::ref_linear(x, mha_test::cast<double>(w), mha_test::cast_row<double>(b));
    mha::set_num_threads(1);
    const Mat<S> one = lin.forward(x);
    mha::set_num_threads(2);
    const Mat<S> two = lin.forward(x);
    mha::set_num_threads(0);
    REQUIRE_CLOSE_T(S, one, expected);
    REQUIRE(mha_test::exactly_equal(one, two));
  }
}

TEMPLATE_TEST_CASE("InProjection repacks on set_q/k/v_weight over a packed weight", "[linear][in_projection][packed]",
                   float, double) {
  using S = TestType;
  std::mt19937 rng(22);
  const Index E = 20, T = 9;  // E not a multiple of the panel width: q, k, v share panels
  InProjection<S> proj(E, E, E, false);
  proj.set_in_proj_weight(mha_test::random_matrix<S>(rng, 3 * E, E));
  const Mat<S> wk = mha_test::random_matrix<S>(rng, E, E);
  proj.set_k_weight(wk);
  const Mat<S> x = mha_test::random_matrix<S>(rng, T, E);
  Mat<S> y(T, E), qkv(T, 3 * E);
  proj.project_k(x, y);
  REQUIRE_CLOSE_T(S, y, mha_test::ref_linear(x, mha_test::cast<double>(wk), RowD()));
  proj.project_packed(x, qkv);
  REQUIRE_CLOSE_T(S, qkv.middleCols(E, E), mha_test::ref_linear(x, mha_test::cast<double>(wk), RowD()));
  const MatD wq = mha_test::cast<double>(Mat<S>(proj.q_weight()));
  REQUIRE_CLOSE_T(S, qkv.leftCols(E), mha_test::ref_linear(x, wq, RowD()));
}
