#pragma once
// A plain loop reference of multi-head attention with PyTorch nn.MultiheadAttention semantics
// (batch_first), written independently from the library: no Eigen products, no mha::detail, every
// sum a loop in double. Tests set the same weights on a layer and on a `RefWeights`, run both and
// compare with `require_close`.
//
// Semantics implemented here (the spec the library is tested against):
// - projections `x W^T + b`, W `[out, in]` (PyTorch layout);
// - bias_k / bias_v appended to the projected keys / values (before the head split), then a zero
//   key / value appended after the head split (add_zero_attn);
// - per-head scores `q_h . k_h / sqrt(d)` plus the additive masks on the S real keys only (extra
//   key columns are never masked): a dense mask `[L, S]` (one slice) or `[N * H * L, S]` (slice
//   n * H + h), a key-padding mask `[N, S]`, and the END-ALIGNED causal rule: query i may attend
//   key j iff `j <= i + (S - L)`;
// - softmax with the row maximum subtracted; a row with no allowed key gets zero weights and a zero
//   head output;
// - attention weights averaged over heads `[N * L, S']` or per head `[N * H * L, S']`;
// - output projection `ctx W_O^T + b_O`.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <mha/mha.hpp>

#include "mha_catch.hpp"

#ifndef MHA_CONTAINS
#define MHA_CONTAINS(s) Catch::Matchers::ContainsSubstring(s)
#endif

namespace mha_test {

using mha::Index;
template <class S>
using Mat = mha::Matrix<S>;
using MatD = mha::Matrix<double>;
using RowD = mha::RowVector<double>;

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------
// Tolerances and comparison.

/// Relative and absolute tolerance for results computed in Scalar against a double reference.
template <class Scalar>
struct Tol;
template <>
struct Tol<float> {
  static constexpr double rel = 2e-4;
  static constexpr double abs = 2e-5;
};
template <>
struct Tol<double> {
  static constexpr double rel = 1e-10;
  static constexpr double abs = 1e-12;
};

/// The worst element of |a - b| against atol + rtol * |b|; empty `where` when everything fits.
struct CloseReport {
  bool ok = true;
  std::string where;
};

template <class A, class B>
CloseReport compare_close(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b, double rtol,
                          double atol) {
  CloseReport r;
  if (a.rows() != b.rows() || a.cols() != b.cols()) {
    std::ostringstream s;
    s << "shape mismatch: [" << a.rows() << ", " << a.cols() << "] vs [" << b.rows() << ", " << b.cols()
      << "]";
    r.ok = false;
    r.where = s.str();
    return r;
  }
  double worst_excess = -1;  // (error - allowed), largest
  Index wi = -1, wj = -1;
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < a.cols(); ++j) {
      const double x = static_cast<double>(a.derived().coeff(i, j));
      const double y = static_cast<double>(b.derived().coeff(i, j));
      double excess;
      if (std::isnan(x) || std::isnan(y)) {
        excess = (std::isnan(x) && std::isnan(y)) ? -1 : kInf;
      } else if (std::isinf(x) || std::isinf(y)) {
        excess = x == y ? -1 : kInf;
      } else {
        excess = std::abs(x - y) - (atol + rtol * std::abs(y));
      }
      if (wi < 0 || excess > worst_excess) {
        worst_excess = excess;
        wi = i;
        wj = j;
      }
    }
  if (wi >= 0 && worst_excess > 0) {
    std::ostringstream s;
    s.precision(17);
    s << "worst element (" << wi << ", " << wj << "): " << static_cast<double>(a.derived().coeff(wi, wj))
      << " vs " << static_cast<double>(b.derived().coeff(wi, wj)) << " (rtol " << rtol << ", atol " << atol
      << ")";
    r.ok = false;
    r.where = s.str();
  }
  return r;
}

/// REQUIREs that a and b have the same shape and agree within atol + rtol * |b| elementwise;
/// on failure reports the worst element. NaN matches only NaN, inf only the same inf.
#define REQUIRE_CLOSE(a, b, rtol, atol)                                        \
  do {                                                                         \
    const ::mha_test::CloseReport mha_close_report_ =                          \
        ::mha_test::compare_close((a), (b), (rtol), (atol));                   \
    INFO(#a " ~ " #b ": " << mha_close_report_.where);                         \
    REQUIRE(mha_close_report_.ok);                                             \
  } while (false)

/// The same with the tolerance of Scalar.
#define REQUIRE_CLOSE_T(Scalar, a, b) \
  REQUIRE_CLOSE(a, b, ::mha_test::Tol<Scalar>::rel, ::mha_test::Tol<Scalar>::abs)

/// Function form, for use in helpers.
template <class A, class B>
void require_close(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b, double rtol, double atol) {
  REQUIRE_CLOSE(a, b, rtol, atol);
}

/// REQUIREs x == 0 exactly, printing x in full (Catch prints 1e-309 as 0.0).
#define REQUIRE_ZERO(x)                                                                   \
  do {                                                                                    \
    const double mha_zero_value_ = static_cast<double>(x);                                \
    INFO(#x " = " << ::mha_test::full_precision(mha_zero_value_));                       \
    REQUIRE(mha_zero_value_ == 0.0);                                                      \
  } while (false)

inline std::string full_precision(double x) {
  std::ostringstream s;
  s.precision(17);
  s << std::scientific << x;
  return s.str();
}

template <class A>
bool all_finite(const Eigen::DenseBase<A>& a) {
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < a.cols(); ++j)
      if (!std::isfinite(static_cast<double>(a.derived().coeff(i, j)))) return false;
  return true;
}

/// Exact equality of two matrices of the same shape (bitwise-equal values).
template <class A, class B>
bool exactly_equal(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < a.cols(); ++j)
      if (!(a.derived().coeff(i, j) == b.derived().coeff(i, j))) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Random inputs (fixed seeds in the tests).

template <class Scalar>
Mat<Scalar> random_matrix(std::mt19937& rng, Index rows, Index cols, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> u(lo, hi);
  Mat<Scalar> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) m(i, j) = static_cast<Scalar>(u(rng));
  return m;
}

template <class Scalar>
mha::RowVector<Scalar> random_row(std::mt19937& rng, Index n, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> u(lo, hi);
  mha::RowVector<Scalar> v(n);
  for (Index j = 0; j < n; ++j) v(j) = static_cast<Scalar>(u(rng));
  return v;
}

inline mha::BoolMatrix random_bool(std::mt19937& rng, Index rows, Index cols, double p_true) {
  std::bernoulli_distribution b(p_true);
  mha::BoolMatrix m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) m(i, j) = b(rng);
  return m;
}

inline Index random_int(std::mt19937& rng, Index lo, Index hi) {  // [lo, hi]
  return std::uniform_int_distribution<Index>(lo, hi)(rng);
}

inline bool coin(std::mt19937& rng, double p = 0.5) { return std::bernoulli_distribution(p)(rng); }

template <class Dst, class Src>
Mat<Dst> cast(const Eigen::DenseBase<Src>& m) {
  Mat<Dst> out(m.rows(), m.cols());
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j) out(i, j) = static_cast<Dst>(m.derived().coeff(i, j));
  return out;
}

template <class Dst, class Src>
mha::RowVector<Dst> cast_row(const Eigen::DenseBase<Src>& v) {
  mha::RowVector<Dst> out(v.size());
  for (Index j = 0; j < v.size(); ++j) out(j) = static_cast<Dst>(v.derived().coeff(j));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Loop building blocks, all in double.

/// Additive form of a boolean mask: `true_blocks` says which value blocks (-inf); the other is 0.
inline MatD ref_additive(const mha::BoolMatrix& m, bool true_blocks) {
  MatD out(m.rows(), m.cols());
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j) out(i, j) = (m(i, j) == true_blocks) ? -kInf : 0.0;
  return out;
}

/// `x [T, in] W^T [in, out] + b` with W `[out, in]`, b `[out]` or empty.
template <class X>
MatD ref_linear(const Eigen::DenseBase<X>& x, const MatD& w, const RowD& b) {
  const Index T = x.rows(), in = x.cols(), out = w.rows();
  REQUIRE(w.cols() == in);
  MatD y(T, out);
  for (Index t = 0; t < T; ++t)
    for (Index o = 0; o < out; ++o) {
      double acc = b.size() > 0 ? b(o) : 0.0;
      for (Index i = 0; i < in; ++i) acc += static_cast<double>(x.derived().coeff(t, i)) * w(o, i);
      y(t, o) = acc;
    }
  return y;
}

/// Softmax of a row in place (max subtracted); all -inf -> all zeros.
inline void ref_softmax(std::vector<double>& row) {
  double mx = -kInf;
  for (double x : row) mx = std::max(mx, x);
  if (mx == -kInf) {
    std::fill(row.begin(), row.end(), 0.0);
    return;
  }
  double sum = 0;
  for (double& x : row) {
    x = std::exp(x - mx);
    sum += x;
  }
  for (double& x : row) x /= sum;
}

/// The core: `q [L, d]`, `k [S', d]`, `v [S', dv]`, `additive [L, S']` (already containing -inf
/// for blocked pairs) -> context `[L, dv]`, probabilities `[L, S']`.
inline void ref_attention_core(const MatD& q, const MatD& k, const MatD& v, const MatD& additive, double scale,
                               MatD& ctx, MatD& probs) {
  const Index L = q.rows(), S = k.rows(), d = q.cols(), dv = v.cols();
  REQUIRE(k.cols() == d);
  REQUIRE(v.rows() == S);
  REQUIRE(additive.rows() == L);
  REQUIRE(additive.cols() == S);
  ctx = MatD::Zero(L, dv);
  probs = MatD::Zero(L, S);
  std::vector<double> row(static_cast<size_t>(S));
  for (Index i = 0; i < L; ++i) {
    for (Index j = 0; j < S; ++j) {
      double dot = 0;
      for (Index c = 0; c < d; ++c) dot += q(i, c) * k(j, c);
      row[static_cast<size_t>(j)] = dot * scale + additive(i, j);
    }
    ref_softmax(row);
    for (Index j = 0; j < S; ++j) probs(i, j) = row[static_cast<size_t>(j)];
    for (Index c = 0; c < dv; ++c) {
      double acc = 0;
      for (Index j = 0; j < S; ++j) acc += probs(i, j) * v(j, c);
      ctx(i, c) = acc;
    }
  }
}

/// Single-head scaled dot-product attention: `q [L, d]`, `k [S, d]`, `v [S, dv]`, an optional
/// additive mask `[L, S]` (empty = none), end-aligned causal, scale (<= 0 means 1 / sqrt(d)).
struct RefSdpa {
  MatD out;      // [L, dv]
  MatD weights;  // [L, S]
};

template <class Q, class K, class V>
RefSdpa ref_sdpa(const Eigen::DenseBase<Q>& q, const Eigen::DenseBase<K>& k, const Eigen::DenseBase<V>& v,
                 const MatD& additive = MatD(), bool causal = false, double scale = 0) {
  const MatD qd = cast<double>(q), kd = cast<double>(k), vd = cast<double>(v);
  const Index L = qd.rows(), S = kd.rows();
  if (scale <= 0) scale = 1.0 / std::sqrt(static_cast<double>(qd.cols()));
  MatD m = MatD::Zero(L, S);
  for (Index i = 0; i < L; ++i)
    for (Index j = 0; j < S; ++j) {
      if (additive.size() > 0) m(i, j) += additive(i, j);
      if (causal && j > i + (S - L)) m(i, j) = -kInf;
    }
  RefSdpa r;
  ref_attention_core(qd, kd, vd, m, scale, r.out, r.weights);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Multi-head attention.

/// The parameters of a layer, in double, in PyTorch layout. Empty biases mean "none".
struct RefWeights {
  Index E = 0, H = 1, kdim = 0, vdim = 0;
  MatD wq, wk, wv, wo;  // [E, E], [E, kdim], [E, vdim], [E, E]
  RowD bq, bk, bv, bo;  // [E] each, or empty without bias
  RowD bias_k, bias_v;  // [E] each, or empty without add_bias_kv
  bool zero_attn = false;

  /// Random weights for `options` (kdim / vdim 0 mean E).
  static RefWeights random(std::mt19937& rng, const mha::MultiHeadAttentionOptions& o) {
    RefWeights w;
    w.E = o.embed_dim;
    w.H = o.num_heads;
    w.kdim = o.kdim > 0 ? o.kdim : o.embed_dim;
    w.vdim = o.vdim > 0 ? o.vdim : o.embed_dim;
    const double a = 0.6;  // keeps logits O(1) for E <= 32
    w.wq = random_matrix<double>(rng, w.E, w.E, -a, a);
    w.wk = random_matrix<double>(rng, w.E, w.kdim, -a, a);
    w.wv = random_matrix<double>(rng, w.E, w.vdim, -a, a);
    w.wo = random_matrix<double>(rng, w.E, w.E, -a, a);
    if (o.bias) {
      w.bq = random_row<double>(rng, w.E);
      w.bk = random_row<double>(rng, w.E);
      w.bv = random_row<double>(rng, w.E);
      w.bo = random_row<double>(rng, w.E);
    }
    if (o.add_bias_kv) {
      w.bias_k = random_row<double>(rng, w.E);
      w.bias_v = random_row<double>(rng, w.E);
    }
    w.zero_attn = o.add_zero_attn;
    return w;
  }

  /// Writes these weights into `layer` through its public setters (cast to Scalar).
  template <class Scalar>
  void apply_to(mha::MultiHeadAttention<Scalar>& layer) const {
    auto& in = layer.in_proj();
    if (in.packed()) {
      MatD packed(3 * E, E);
      packed.topRows(E) = wq;
      packed.middleRows(E, E) = wk;
      packed.bottomRows(E) = wv;
      in.set_in_proj_weight(cast<Scalar>(packed));
    } else {
      in.set_q_weight(cast<Scalar>(wq));
      in.set_k_weight(cast<Scalar>(wk));
      in.set_v_weight(cast<Scalar>(wv));
    }
    if (bq.size() > 0) {
      RowD b(3 * E);
      b << bq, bk, bv;
      in.set_in_proj_bias(cast_row<Scalar>(b));
      layer.out_proj().set_bias(cast_row<Scalar>(bo));
    }
    layer.out_proj().set_weight(cast<Scalar>(wo));
    if (bias_k.size() > 0) {
      layer.set_bias_k(cast_row<Scalar>(bias_k));
      layer.set_bias_v(cast_row<Scalar>(bias_v));
    }
  }

  /// These weights rounded to Scalar and back: what a Scalar layer really holds.
  template <class Scalar>
  RefWeights rounded() const {
    RefWeights r = *this;
    auto rm = [](MatD& m) { m = cast<double>(cast<Scalar>(m)); };
    auto rv = [](RowD& v) { v = cast_row<double>(cast_row<Scalar>(v)); };
    for (MatD* m : {&r.wq, &r.wk, &r.wv, &r.wo}) rm(*m);
    for (RowD* v : {&r.bq, &r.bk, &r.bv, &r.bo, &r.bias_k, &r.bias_v}) rv(*v);
    return r;
  }
};

/// Masks of a reference call, additive, in double. Empty matrices mean "none".
struct RefMasks {
  MatD attn;              // [slices * L, S]
  Index attn_slices = 1;  // 1 or N * H
  MatD key_padding;       // [N, S]
  bool causal = false;    // end-aligned
};

struct RefMhaResult {
  MatD output;           // [N * L, E]
  MatD weights_avg;      // [N * L, S']
  MatD weights_per_head; // [N * H * L, S']
};

/// `query [N * L, E]`, `key [N * S, kdim]`, `value [N * S, vdim]`, N sequences stacked.
template <class Q, class K, class V>
RefMhaResult ref_mha(const RefWeights& w, const Eigen::DenseBase<Q>& query, const Eigen::DenseBase<K>& key,
                     const Eigen::DenseBase<V>& value, Index N, const RefMasks& masks = RefMasks()) {
  const Index E = w.E, H = w.H, d = E / H;
  REQUIRE(E % H == 0);
  REQUIRE(query.rows() % N == 0);
  REQUIRE(key.rows() % N == 0);
  const Index L = query.rows() / N, S = key.rows() / N;
  const Index extra = (w.bias_k.size() > 0 ? 1 : 0) + (w.zero_attn ? 1 : 0);
  const Index Sp = S + extra;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));

  RefMhaResult r;
  MatD ctx = MatD::Zero(N * L, E);
  r.weights_avg = MatD::Zero(N * L, Sp);
  r.weights_per_head = MatD::Zero(N * H * L, Sp);

  const MatD qd = cast<double>(query), kd = cast<double>(key), vd = cast<double>(value);
  for (Index n = 0; n < N; ++n) {
    const MatD q = ref_linear(qd.middleRows(n * L, L), w.wq, w.bq);  // [L, E]
    MatD k = ref_linear(kd.middleRows(n * S, S), w.wk, w.bk);        // [S, E]
    MatD v = ref_linear(vd.middleRows(n * S, S), w.wv, w.bv);        // [S, E]
    if (w.bias_k.size() > 0) {  // appended before the head split
      k.conservativeResize(S + 1, E);
      v.conservativeResize(S + 1, E);
      for (Index c = 0; c < E; ++c) {
        k(S, c) = w.bias_k(c);
        v(S, c) = w.bias_v(c);
      }
    }
    for (Index h = 0; h < H; ++h) {
      MatD qh(L, d), kh = MatD::Zero(Sp, d), vh = MatD::Zero(Sp, d);  // zero rows: add_zero_attn
      for (Index i = 0; i < L; ++i)
        for (Index c = 0; c < d; ++c) qh(i, c) = q(i, h * d + c);
      for (Index j = 0; j < k.rows(); ++j)
        for (Index c = 0; c < d; ++c) {
          kh(j, c) = k(j, h * d + c);
          vh(j, c) = v(j, h * d + c);
        }
      MatD m = MatD::Zero(L, Sp);  // extra columns stay 0: never masked
      for (Index i = 0; i < L; ++i)
        for (Index j = 0; j < S; ++j) {
          double a = 0;
          if (masks.attn.size() > 0) {
            const Index slice = masks.attn_slices == 1 ? 0 : n * H + h;
            a += masks.attn(slice * L + i, j);
          }
          if (masks.key_padding.size() > 0) a += masks.key_padding(n, j);
          if (masks.causal && j > i + (S - L)) a = -kInf;
          m(i, j) = a;
        }
      MatD ch, ph;
      ref_attention_core(qh, kh, vh, m, scale, ch, ph);
      for (Index i = 0; i < L; ++i) {
        for (Index c = 0; c < d; ++c) ctx(n * L + i, h * d + c) = ch(i, c);
        for (Index j = 0; j < Sp; ++j) {
          r.weights_per_head((n * H + h) * L + i, j) = ph(i, j);
          r.weights_avg(n * L + i, j) += ph(i, j) / static_cast<double>(H);
        }
      }
    }
  }
  r.output = ref_linear(ctx, w.wo, w.bo);
  return r;
}

// Rows of `w` sum to 1, except rows whose every entry is exactly 0 (fully masked).
template <class S>
void require_rows_are_distributions(const Mat<S>& w) {
  for (mha::Index i = 0; i < w.rows(); ++i) {
    CAPTURE(i);
    REQUIRE((w.row(i).array() >= S(0)).all());
    if (w.row(i).isZero(0)) continue;
    REQUIRE(std::abs(static_cast<double>(w.row(i).sum()) - 1.0) < 10 * Tol<S>::rel);
  }
}

}  // namespace mha_test
