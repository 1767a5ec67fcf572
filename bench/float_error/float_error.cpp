// Float error of mha's MultiHeadAttention<float> against a float64 reference, next to PyTorch's,
// and which stage of the computation it comes from. See docs/float_error.md for the findings
// and the commands; in short:
//
//   /usr/bin/python3 bench/float_error/float_error.py            # inputs -> /tmp/mha_float_error
//   g++ -std=c++17 -O2 [-march=native] -Iinclude -I/usr/include/eigen3
//       bench/float_error/float_error.cpp -o /tmp/float_error
//   /tmp/float_error /tmp/mha_float_error/l512_e256_h4 tests/fixtures/causal ...
//   /tmp/float_error --time                                       # GEMM time per kc cap
//
// Each argument is a file pair PREFIX_f32.safetensors / PREFIX_f64.safetensors in the fixture
// format (tests/fixtures/README.md): the f64 file holds exact up-casts of the f32 inputs and
// parameters, and each file's expected_attn_output is PyTorch's output in that dtype. The float64
// PyTorch output is the reference R; errors are max|a - R| / max|R| ("max", the metric of
// tests/test_pytorch_parity.cpp) and mean|a - R| / mean|R| ("mean").
//
// For a pair without masks, bias_kv or zero attention, it also runs a stage-by-stage model of the
// computation (in-projection, scores, softmax, P V, out-projection) in float64 with one stage in
// float32 (its inputs rounded to float32 too), and variants of the float32 softmax row.
// A scratch tool: it is not built by CMake.
#include <mha/io.hpp>
#include <mha/mha.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {

using mha::Index;
template <class S>
using Mat = mha::Matrix<S>;

struct Metrics {
  double max = 0, mean = 0;
};

Metrics metrics(const Mat<double>& a, const Mat<double>& ref) {
  const Mat<double> d = (a - ref).cwiseAbs();
  return {d.maxCoeff() / ref.cwiseAbs().maxCoeff(), d.mean() / ref.cwiseAbs().mean()};
}

void print_row(const char* label, Metrics m) { std::printf("  %-46s max %.2e  mean %.2e\n", label, m.max, m.mean); }

// ---------------------------------------------------------------------------------------------
// The library, as a user calls it
// ---------------------------------------------------------------------------------------------
Mat<double> run_mha(const mha::io::SafetensorsFile& f, mha::Kernel kernel) {
  using mha::io::Dtype;
  const auto& meta = f.metadata();
  const Index H = std::stoi(meta.at("num_heads"));
  const auto module = mha::io::load_multi_head_attention<float>(f, H, "", meta.at("add_zero_attn") == "true");
  const Index N = f.at("query").shape()[0];
  const Mat<float> q = f.at("query").to_matrix<float>();  // [N * L, E]
  const Mat<float> k = f.at("key").to_matrix<float>();    // [N * S, kdim]
  const Mat<float> v = f.at("value").to_matrix<float>();  // [N * S, vdim]
  mha::ForwardOptions<float> options;
  options.is_causal = meta.at("is_causal") == "true";
  options.use_kernel(kernel);
  mha::AttentionMask<float> mask;
  if (const mha::io::Tensor* m = f.find("attn_mask")) {
    const Index slices = m->rank() == 3 ? N * H : 1;
    mask = m->dtype() == Dtype::boolean ? mha::AttentionMask<float>::blocked(m->to_bool_matrix(), slices)
                                        : mha::AttentionMask<float>::additive(m->to_matrix<float>(), slices);
    options.with_mask(mask);
  }
  mha::KeyPaddingMask<float> kpm;
  if (const mha::io::Tensor* m = f.find("key_padding_mask")) {
    kpm = m->dtype() == Dtype::boolean ? mha::KeyPaddingMask<float>::padding(m->to_bool_matrix())
                                       : mha::KeyPaddingMask<float>::additive(m->to_matrix<float>());
    options.with_key_padding(kpm);
  }
  const auto r = module.forward(mha::BatchView<float>(q, N), mha::BatchView<float>(k, N),
                                mha::BatchView<float>(v, N), options);
  return r.output.cast<double>();
}

// ---------------------------------------------------------------------------------------------
// Stage model: the forward pass (no masks) with a chosen precision per stage
// ---------------------------------------------------------------------------------------------
enum Stage { proj = 1, scores = 2, softmax = 4, pv = 8, out = 16 };

enum class RowSoftmax {
  library,     // mha::detail::softmax_row_inplace: Eigen's vectorised exp, Eigen's sum, divide
  exact_exp,   // exp in double rounded to float (correctly rounded but for ties), Eigen's sum
  double_sum,  // Eigen's vectorised exp in float, sum accumulated in double
  kahan_sum,   // Eigen's vectorised exp in float, compensated (Kahan) float sum
  serial_sum,  // Eigen's vectorised exp in float, plain left-to-right float sum
  reciprocal,  // as library, but multiply by 1 / sum (PyTorch's order)
};

void softmax_row(float* x, Index n, RowSoftmax kind) {
  Eigen::Map<Eigen::Matrix<float, 1, Eigen::Dynamic>> row(x, n);
  if (kind == RowSoftmax::library) {
    mha::detail::softmax_row_inplace(row, [] { return true; });
    return;
  }
  const float max = row.maxCoeff();
  if (kind == RowSoftmax::exact_exp)
    for (Index j = 0; j < n; ++j) x[j] = static_cast<float>(std::exp(double(x[j]) - double(max)));
  else
    row = (row.array() - max).exp();
  float sum = 0;
  switch (kind) {
    case RowSoftmax::double_sum: {
      double s = 0;
      for (Index j = 0; j < n; ++j) s += x[j];
      sum = static_cast<float>(s);
      break;
    }
    case RowSoftmax::kahan_sum: {
      float c = 0;
      for (Index j = 0; j < n; ++j) {
        const float y = x[j] - c, t = sum + y;
        c = (t - sum) - y;
        sum = t;
      }
      break;
    }
    case RowSoftmax::serial_sum:
      for (Index j = 0; j < n; ++j) sum += x[j];
      break;
    default:
      sum = row.sum();
  }
  if (kind == RowSoftmax::reciprocal)
    row *= 1.0f / sum;
  else
    row /= sum;
}

struct Problem {
  Index N = 0, L = 0, S = 0, E = 0, H = 0;
  Mat<double> query, key, value;  // [N * L, E], [N * S, E], [N * S, E]
  Mat<double> w_in, b_in;         // [3E, E], [1, 3E]
  Mat<double> w_out, b_out;       // [E, E], [1, E]
};

/// Eigen's GEMM blocking with the depth block kc capped at `kc_cap` (0: Eigen's choice, as
/// mha::detail::GemmBuffers). Each kc-deep slice of the inner dimension is a fresh accumulator
/// chain in gebp's registers, added to C afterwards: a smaller kc makes the sum blocked.
Index kc_cap = 0;

template <class S>
class Blocking : public Eigen::internal::level3_blocking<S, S> {
 public:
  Blocking(Index rows, Index cols, Index depth) {
    Index kc = depth, mc = cols, nc = rows;  // row-major result = transposed column-major product
    Eigen::internal::computeProductBlockingSizes<S, S, 1>(kc, mc, nc, Index(1));
    if (kc_cap > 0) kc = std::min(kc, kc_cap);
    this->m_kc = kc;
    this->m_mc = mc;
    this->m_nc = nc;
    m_a.resize(mc * kc);
    m_b.resize(kc * nc);
    this->m_blockA = m_a.data();
    this->m_blockB = m_b.data();
  }
  Index kc() const { return this->m_kc; }

 private:
  Eigen::Matrix<S, Eigen::Dynamic, 1> m_a, m_b;
};

/// C [m, n] = A [m, k] * B, all row-major, B given as `[k, n]` (BRowMajor) or as the `[n, k]`
/// matrix whose transpose is B: the call mha's gemm_accumulate makes.
template <bool BRowMajor, class S>
Mat<S> gemm(const Mat<S>& a, const Mat<S>& b) {
  const Index m = a.rows(), k = a.cols(), n = BRowMajor ? b.cols() : b.rows();
  Mat<S> c = Mat<S>::Zero(m, n);
  Blocking<S> blocking(m, n, k);
  Eigen::internal::general_matrix_matrix_product<Index, S, Eigen::RowMajor, false, S,
                                                 BRowMajor ? Eigen::RowMajor : Eigen::ColMajor, false,
                                                 Eigen::RowMajor, 1>::run(m, n, k, a.data(), k, b.data(), b.cols(),
                                                                          c.data(), 1, n, S(1), blocking);
  return c;
}

template <class S>
Mat<double> linear_in(const Mat<double>& x, const Mat<double>& w, const Mat<double>& b) {
  Mat<S> y = gemm<false>(Mat<S>(x.cast<S>()), Mat<S>(w.cast<S>()));  // x W^T
  y.rowwise() += b.cast<S>().row(0);
  return y.template cast<double>();
}

Mat<double> linear(const Mat<double>& x, const Mat<double>& w, const Mat<double>& b, bool f32) {
  return f32 ? linear_in<float>(x, w, b) : linear_in<double>(x, w, b);
}

template <class S>
Mat<double> scores_in(const Mat<double>& q, const Mat<double>& k, double scale) {
  const Mat<S> qs = q.cast<S>() * S(scale);  // scale q before the product, as mha and PyTorch
  const Mat<S> ks = k.cast<S>();
  const Mat<S> s = qs * ks.transpose();
  return s.template cast<double>();
}

template <class S>
Mat<double> product_in(const Mat<double>& a, const Mat<double>& b) {
  const Mat<S> as = a.cast<S>(), bs = b.cast<S>();
  const Mat<S> c = gemm<true>(as, bs);
  return c.template cast<double>();
}

/// The forward pass with the stages in `float_stages` (a mask of Stage) in float32.
Mat<double> staged_forward(const Problem& p, int float_stages, RowSoftmax kind = RowSoftmax::library) {
  const Index E = p.E, d = E / p.H, L = p.L, S = p.S;
  const bool f_proj = float_stages & proj;
  const Mat<double> q = linear(p.query, p.w_in.topRows(E), p.b_in.leftCols(E), f_proj);
  const Mat<double> k = linear(p.key, p.w_in.middleRows(E, E), p.b_in.middleCols(E, E), f_proj);
  const Mat<double> v = linear(p.value, p.w_in.bottomRows(E), p.b_in.rightCols(E), f_proj);
  Mat<double> ctx(p.N * L, E);
  const double scale = 1.0 / std::sqrt(double(d));
  for (Index n = 0; n < p.N; ++n)
    for (Index h = 0; h < p.H; ++h) {
      const Mat<double> qh = q.block(n * L, h * d, L, d), kh = k.block(n * S, h * d, S, d);
      const Mat<double> vh = v.block(n * S, h * d, S, d);
      Mat<double> s = (float_stages & scores) ? scores_in<float>(qh, kh, scale) : scores_in<double>(qh, kh, scale);
      if (float_stages & softmax) {
        Mat<float> sf = s.cast<float>();  // [L, S]
        for (Index i = 0; i < L; ++i) softmax_row(sf.row(i).data(), S, kind);
        s = sf.cast<double>();
      } else {
        for (Index i = 0; i < L; ++i) {
          s.row(i) = (s.row(i).array() - s.row(i).maxCoeff()).exp();
          s.row(i) /= s.row(i).sum();
        }
      }
      ctx.block(n * L, h * d, L, d) = (float_stages & pv) ? product_in<float>(s, vh) : product_in<double>(s, vh);
    }
  return linear(ctx, p.w_out, p.b_out, float_stages & out);
}

bool stage_model_applies(const mha::io::SafetensorsFile& f) {
  const auto& m = f.metadata();
  return f.contains("in_proj_weight") && f.contains("in_proj_bias") && !f.contains("bias_k") &&
         !f.contains("attn_mask") && !f.contains("key_padding_mask") && m.at("is_causal") == "false" &&
         m.at("add_zero_attn") == "false";
}

Problem load_problem(const mha::io::SafetensorsFile& f) {
  Problem p;
  p.H = std::stoi(f.metadata().at("num_heads"));
  p.N = f.at("query").shape()[0];
  p.L = f.at("query").shape()[1];
  p.S = f.at("key").shape()[1];
  p.E = f.at("query").shape()[2];
  p.query = f.at("query").to_matrix<double>();
  p.key = f.at("key").to_matrix<double>();
  p.value = f.at("value").to_matrix<double>();
  p.w_in = f.at("in_proj_weight").to_matrix<double>();
  p.b_in = f.at("in_proj_bias").to_matrix<double>().reshaped(1, 3 * p.E);
  p.w_out = f.at("out_proj.weight").to_matrix<double>();
  p.b_out = f.at("out_proj.bias").to_matrix<double>().reshaped(1, p.E);
  return p;
}

/// Largest error of Eigen's vectorised float exp against exp in double, in units of the float
/// spacing at the true value, over x in [-87, 0] (the softmax range).
void exp_accuracy() {
  const Index n = 1 << 22;
  Eigen::ArrayXf x(n);
  for (Index i = 0; i < n; ++i) x[i] = -87.0f * float(i) / float(n - 1);
  const Eigen::ArrayXf e = x.exp();
  double worst = 0, sum = 0;
  for (Index i = 0; i < n; ++i) {
    const double t = std::exp(double(x[i]));
    const double ulp = std::nextafter(float(t), INFINITY) - float(t);
    const double u = std::abs(double(e[i]) - t) / ulp;
    worst = std::max(worst, u);
    sum += u;
  }
  std::printf("Eigen float exp on [-87, 0]: max error %.2f ulp, mean %.2f ulp (%d points)\n", worst, sum / n,
              int(n));
}

/// Median time of the projection GEMM `x [rows, E] W^T` (float) per kc cap, one thread; the
/// caps take turns within each repetition, so a change in machine load hits them alike.
void time_gemm() {
  const Index caps[] = {0, 256, 128, 64};
  for (const Index rows : {512, 4096}) {
    const Index E = 512;
    const Mat<float> x = Mat<float>::Random(rows, E), w = Mat<float>::Random(E, E);
    std::vector<std::vector<double>> ms(4);
    for (int r = 0; r < 15; ++r)
      for (int c = 0; c < 4; ++c) {
        kc_cap = caps[c];
        const auto t0 = std::chrono::steady_clock::now();
        const Mat<float> y = gemm<false>(x, w);
        const auto t1 = std::chrono::steady_clock::now();
        if (y(0, 0) == 12345.f) std::printf(" ");
        ms[c].push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
    for (int c = 0; c < 4; ++c) {
      kc_cap = caps[c];
      std::sort(ms[c].begin(), ms[c].end());
      std::printf("GEMM [%lld, %lld] x [%lld, %lld]^T, kc cap %3lld (kc %lld): median %.2f ms, min %.2f ms\n",
                  (long long)rows, (long long)E, (long long)E, (long long)E, (long long)caps[c],
                  (long long)Blocking<float>(rows, E, E).kc(), ms[c][ms[c].size() / 2], ms[c][0]);
    }
    kc_cap = 0;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PREFIX... (reads PREFIX_f32.safetensors and PREFIX_f64.safetensors)\n", argv[0]);
    return 2;
  }
  mha::set_num_threads(1);
  if (std::string(argv[1]) == "--time") {
    time_gemm();
    return 0;
  }
  std::printf("build: %s, Eigen SIMD: %s, FMA %s\n",
#ifdef __AVX2__
              "AVX2",
#else
              "no AVX2",
#endif
              Eigen::SimdInstructionSetsInUse(),
#ifdef __FMA__
              "on");
#else
              "off");
#endif
  exp_accuracy();
  std::vector<double> ratios[2][2];  // [tiled, reference][max, mean]: mha error / torch error
  for (int a = 1; a < argc; ++a) {
    const std::string prefix = argv[a];
    const auto f32 = mha::io::read_safetensors(prefix + "_f32.safetensors");
    const auto f64 = mha::io::read_safetensors(prefix + "_f64.safetensors");
    const Mat<double> ref = f64.at("expected_attn_output").to_matrix<double>();
    std::printf("%s: E=%lld H=%s N=%lld L=%lld S=%lld\n", prefix.c_str(), (long long)f32.at("query").shape()[2],
                f32.metadata().at("num_heads").c_str(), (long long)f32.at("query").shape()[0],
                (long long)f32.at("query").shape()[1], (long long)f32.at("key").shape()[1]);
    const Metrics torch = metrics(f32.at("expected_attn_output").to_matrix<double>(), ref);
    const Metrics tiled = metrics(run_mha(f32, mha::Kernel::tiled), ref);
    const Metrics reference = metrics(run_mha(f32, mha::Kernel::reference), ref);
    print_row("torch float32", torch);
    print_row("mha float, Kernel::tiled", tiled);
    print_row("mha float, Kernel::reference", reference);
    for (int kernel = 0; kernel < 2; ++kernel) {
      const Metrics& m = kernel == 0 ? tiled : reference;
      ratios[kernel][0].push_back(m.max / torch.max);
      ratios[kernel][1].push_back(m.mean / torch.mean);
    }
    if (!stage_model_applies(f64)) continue;
    const Problem p = load_problem(f64);
    if (metrics(staged_forward(p, 0), ref).max > 1e-13) {
      std::printf("  stage model does not match the float64 reference; skipped\n");
      continue;
    }
    const int all = proj | scores | softmax | pv | out;
    print_row("model, every stage float32", metrics(staged_forward(p, all), ref));
    const std::pair<const char*, int> stages[] = {{"model, only proj    in float32", proj},
                                                  {"model, only scores  in float32", scores},
                                                  {"model, only softmax in float32", softmax},
                                                  {"model, only pv      in float32", pv},
                                                  {"model, only out     in float32", out}};
    for (const auto& [label, st] : stages) print_row(label, metrics(staged_forward(p, st), ref));
    const std::pair<const char*, RowSoftmax> kinds[] = {{"softmax only, exp in double, Eigen sum", RowSoftmax::exact_exp},
                                                        {"softmax only, sum in double", RowSoftmax::double_sum},
                                                        {"softmax only, Kahan sum", RowSoftmax::kahan_sum},
                                                        {"softmax only, serial float sum", RowSoftmax::serial_sum},
                                                        {"softmax only, times 1/sum", RowSoftmax::reciprocal}};
    for (const auto& [label, kind] : kinds) print_row(label, metrics(staged_forward(p, softmax, kind), ref));
    print_row("model, all float32 but softmax in double", metrics(staged_forward(p, all & ~softmax), ref));
    print_row("model, all float32, softmax sum in double",
              metrics(staged_forward(p, all, RowSoftmax::double_sum), ref));
    std::printf("  (Eigen's kc for depth E = %lld: %lld; for depth S = %lld: %lld)\n", (long long)p.E,
                (long long)Blocking<float>(p.L, p.E, p.E).kc(), (long long)p.S,
                (long long)Blocking<float>(p.L, p.E / p.H, p.S).kc());
    for (const Index cap : {256, 128, 64, 32}) {
      kc_cap = cap;
      const std::string label = "model, all float32, GEMM kc <= " + std::to_string(cap);
      print_row(label.c_str(), metrics(staged_forward(p, all), ref));
      kc_cap = 0;
    }
  }
  if (argc > 2) {
    std::printf("over %d pairs, mha float error / torch float32 error (geometric mean, min-max):\n", argc - 1);
    const char* kernels[] = {"Kernel::tiled", "Kernel::reference"};
    for (int kernel = 0; kernel < 2; ++kernel) {
      std::printf("  %-18s", kernels[kernel]);
      for (int metric = 0; metric < 2; ++metric) {
        const std::vector<double>& r = ratios[kernel][metric];
        double log_sum = 0;
        for (const double x : r) log_sum += std::log(x);
        std::printf("  %s %.2f (%.2f-%.2f)", metric == 0 ? "max" : "mean", std::exp(log_sum / double(r.size())),
                    *std::min_element(r.begin(), r.end()), *std::max_element(r.begin(), r.end()));
      }
      std::printf("\n");
    }
  }
}
