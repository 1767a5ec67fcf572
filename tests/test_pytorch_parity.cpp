// Parity with torch.nn.MultiheadAttention: every fixture of tests/fixtures (27 cases x F32/F64,
// see tests/fixtures/README.md) through the C++ API and through the mha-run executable, plus
// mha-run's error exits and the documented fully-masked-row semantics.
//
// Error metric, per output tensor (attn_output, attn_output_weights):
//     err = max_i |a_i - b_i| / max(max_i |b_i|, 1e-30)
// i.e. the largest absolute difference relative to the largest reference magnitude, computed in
// double. It must be <= 2e-5 for F32 fixtures and <= 1e-12 for F64. (An elementwise relative
// error would fail on large_logits, whose weights include values around 1e-4 and smaller.)
#include <mha/io.hpp>
#include <mha/mha.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#ifndef _WIN32
#include <sys/wait.h>
#endif

#include "io_test_support.hpp"
#include "mha_catch.hpp"

namespace {

using io_test::fixtures_dir;
using io_test::fixture_files;
using io_test::temp_path;
using io_test::RunResult;
#ifdef MHA_RUN_EXE
using io_test::run_mha_run;
#endif

using Catch::Matchers::ContainsSubstring;
using Catch::Matchers::StartsWith;
using mha::io::Dtype;
using mha::io::SafetensorsFile;
using mha::io::Tensor;

bool is_f32(const SafetensorsFile& f) { return f.at("query").dtype() == Dtype::f32; }

/// max|a - b| / max(max|b|, tiny); infinity when the shapes differ.
double relative_error(const mha::Matrix<double>& a, const mha::Matrix<double>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return INFINITY;
  if (b.size() == 0) return 0.0;
  return (a - b).cwiseAbs().maxCoeff() / std::max(b.cwiseAbs().maxCoeff(), 1e-30);
}

double tolerance(bool f32) { return f32 ? 2e-5 : 1e-12; }

struct Outputs {
  mha::Matrix<double> output;   // [N * L, E]
  mha::Matrix<double> weights;  // [N * L, S'] or [N * H * L, S'], empty without need_weights
};

/// Runs the fixture through the C++ API. With `share`, a self-attention fixture (query, key and
/// value byte-identical) passes one matrix three times, which takes the packed projection.
template <class Scalar>
Outputs run_api(const SafetensorsFile& f, bool share) {
  const auto& meta = f.metadata();
  const mha::Index H = std::stoi(meta.at("num_heads"));
  const auto module = mha::io::load_multi_head_attention<Scalar>(f, H, "", meta.at("add_zero_attn") == "true");
  const Tensor& query = f.at("query");
  const mha::Index N = query.shape()[0], L = query.shape()[1], S = f.at("key").shape()[1];
  const mha::Matrix<Scalar> q = query.to_matrix<Scalar>();
  const mha::Matrix<Scalar> k = f.at("key").to_matrix<Scalar>();
  const mha::Matrix<Scalar> v = f.at("value").to_matrix<Scalar>();
  const bool self = share && f.at("key") == query && f.at("value") == query;
  const mha::BatchView<Scalar> qv(q, N), kv(self ? q : k, N), vv(self ? q : v, N);

  mha::ForwardOptions<Scalar> options;
  options.is_causal = meta.at("is_causal") == "true";
  options.need_weights = meta.at("need_weights") == "true";
  options.average_attn_weights = meta.at("average_attn_weights") == "true";
  mha::AttentionMask<Scalar> mask;
  if (const Tensor* m = f.find("attn_mask")) {
    const mha::Index slices = m->rank() == 3 ? N * H : 1;
    mask = m->dtype() == Dtype::boolean ? mha::AttentionMask<Scalar>::blocked(m->to_bool_matrix(), slices)
                                        : mha::AttentionMask<Scalar>::additive(m->to_matrix<Scalar>(), slices);
    options.with_mask(mask);
  }
  mha::KeyPaddingMask<Scalar> kpm;
  if (const Tensor* m = f.find("key_padding_mask")) {
    REQUIRE(m->shape() == std::vector<std::int64_t>{N, S});
    kpm = m->dtype() == Dtype::boolean ? mha::KeyPaddingMask<Scalar>::padding(m->to_bool_matrix())
                                       : mha::KeyPaddingMask<Scalar>::additive(m->to_matrix<Scalar>());
    options.with_key_padding(kpm);
  }
  const mha::AttentionResult<Scalar> r = module.forward(qv, kv, vv, options);
  (void)L;
  return {r.output.template cast<double>(), r.weights.template cast<double>()};
}

struct Worst {
  double error = 0.0;
  std::string where = "(none)";
  void update(double e, const std::string& w) {
    if (e > error || where == "(none)") {
      error = std::max(error, e);
      where = w;
    }
  }
};

/// Compares `got` with the fixture's expected tensors, records the errors in `worst`.
void compare(const SafetensorsFile& f, const Outputs& got, const std::string& label, Worst& worst) {
  const bool f32 = is_f32(f);
  const double tol = tolerance(f32);
  const double e_out = relative_error(got.output, f.at("expected_attn_output").to_matrix<double>());
  INFO(label << ": attn_output error " << e_out << " (tolerance " << tol << ")");
  CHECK(e_out <= tol);
  worst.update(e_out, label + " attn_output");
  if (const Tensor* w = f.find("expected_attn_output_weights")) {
    const double e_w = relative_error(got.weights, w->to_matrix<double>());
    INFO(label << ": attn_output_weights error " << e_w << " (tolerance " << tol << ")");
    CHECK(e_w <= tol);
    worst.update(e_w, label + " attn_output_weights");
  } else {
    CHECK(got.weights.size() == 0);
  }
}

#ifdef MHA_RUN_EXE
/// mha-run must fail with `status`, printing exactly one line "mha-run: ...<needle>...".
void check_fails(const std::vector<std::string>& args, int status, const std::string& needle) {
  const RunResult r = run_mha_run(args);
  INFO("stderr: " << r.err);
  CHECK(r.status == status);
  CHECK_THAT(r.err, StartsWith("mha-run: "));
  CHECK_THAT(r.err, ContainsSubstring(needle));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK((!r.err.empty() && r.err.back() == '\n'));
  CHECK(r.out.empty());
}
#endif

}  // namespace

TEST_CASE("parity: the C++ API matches torch.nn.MultiheadAttention on every fixture", "[io][pytorch][parity]") {
  const auto files = fixture_files();
  REQUIRE(files.size() == 54);  // 27 cases x {f32, f64}
  Worst worst32, worst64;
  int self_attention_cases = 0;
  for (const auto& path : files) {
    const std::string name = path.filename().string();
    INFO(name);
    const SafetensorsFile f = mha::io::read_safetensors(path);
    const bool f32 = is_f32(f);
    Worst& worst = f32 ? worst32 : worst64;
    const bool self = f.at("key") == f.at("query") && f.at("value") == f.at("query");
    self_attention_cases += self;
    // Separate projections always; the packed self-attention path too when it applies.
    for (const bool share : self ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
      const std::string label = name + (share ? " (packed self-attention)" : "");
      compare(f, f32 ? run_api<float>(f, share) : run_api<double>(f, share), label, worst);
    }
  }
  CHECK(self_attention_cases == 2 * 8);
  WARN("worst error vs PyTorch, C++ API, metric max|a-b|/max|b| per tensor: F32 " << worst32.error << " ("
                                                                                   << worst32.where << "), F64 "
                                                                                   << worst64.error << " ("
                                                                                   << worst64.where << ")");
}

TEST_CASE("parity: fully masked rows give zero weights and out_proj.bias", "[io][pytorch][masks]") {
  for (const char* name : {"fully_masked_row_f32.safetensors", "fully_masked_row_f64.safetensors"}) {
    INFO(name);
    const SafetensorsFile f = mha::io::read_safetensors(fixtures_dir() / name);
    const bool f32 = is_f32(f);
    const Outputs got = f32 ? run_api<float>(f, false) : run_api<double>(f, false);
    const mha::Matrix<double> bias = f.at("out_proj.bias").to_matrix<double>();  // [1, E]
    const mha::Index N = 2, L = 4, row = 2;
    REQUIRE(got.weights.rows() == N * L);  // averaged
    for (mha::Index n = 0; n < N; ++n)
      for (mha::Index i = 0; i < L; ++i) {
        INFO("batch entry " << n << ", query " << i);
        if (i == row) {
          CHECK(got.weights.row(n * L + i).isZero(0.0));
          CHECK(got.output.row(n * L + i) == bias);  // exactly: zero context through out_proj
        } else {
          CHECK(std::abs(got.weights.row(n * L + i).sum() - 1.0) < (f32 ? 1e-6 : 1e-14));
        }
      }
  }
}

TEST_CASE("parity: mha-run matches torch.nn.MultiheadAttention on every fixture", "[io][pytorch][parity][mha-run]") {
#ifndef MHA_RUN_EXE
  WARN("MHA_RUN_EXE is not defined: mha-run parity skipped");
#else
  const auto files = fixture_files();
  REQUIRE(files.size() == 54);
  Worst worst32, worst64;
  const std::filesystem::path out_path = temp_path("mha_run_parity");
  for (const auto& path : files) {
    const std::string name = path.filename().string();
    INFO(name);
    const SafetensorsFile f = mha::io::read_safetensors(path);
    // Every other file with two threads, to exercise --threads.
    std::vector<std::string> args = {path.string(), out_path.string()};
    if (name.find("_f64") != std::string::npos) args.insert(args.end(), {"--threads", "2"});
    const RunResult r = run_mha_run(args);
    INFO("stderr: " << r.err);
    REQUIRE(r.status == 0);
    CHECK(r.err.empty());
    const SafetensorsFile out = mha::io::read_safetensors(out_path);
    const Tensor& output = out.at("attn_output");
    CHECK(output.dtype() == f.at("query").dtype());
    CHECK(output.shape() == f.at("expected_attn_output").shape());
    Outputs got{output.to_matrix<double>(), {}};
    if (const Tensor* w = f.find("expected_attn_output_weights")) {
      REQUIRE(out.contains("attn_output_weights"));
      CHECK(out.at("attn_output_weights").shape() == w->shape());
      CHECK(out.at("attn_output_weights").dtype() == w->dtype());
      got.weights = out.at("attn_output_weights").to_matrix<double>();
    }
    CHECK(out.size() == (f.contains("expected_attn_output_weights") ? 2u : 1u));
    compare(f, got, name + " (mha-run)", is_f32(f) ? worst32 : worst64);
  }
  std::filesystem::remove(out_path);
  WARN("worst error vs PyTorch, mha-run, metric max|a-b|/max|b| per tensor: F32 " << worst32.error << " ("
                                                                                  << worst32.where << "), F64 "
                                                                                  << worst64.error << " ("
                                                                                  << worst64.where << ")");
#endif
}

TEST_CASE("mha-run: errors exit non-zero with one line on stderr", "[io][mha-run]") {
#ifndef MHA_RUN_EXE
  WARN("MHA_RUN_EXE is not defined: mha-run error tests skipped");
#else
  const std::string good = (fixtures_dir() / "kdim_vdim_f32.safetensors").string();
  const std::filesystem::path out = temp_path("mha_run_err_out");
  const std::filesystem::path in = temp_path("mha_run_err_in");
  const SafetensorsFile base = mha::io::read_safetensors(good);
  // Writes `base` changed by `edit` to `in`.
  const auto input = [&](auto edit) {
    SafetensorsFile f = base;
    edit(f);
    mha::io::write_safetensors(in, f);
    return in.string();
  };

  SECTION("command line") {
    check_fails({}, 2, "expected 2 file arguments, got 0");
    check_fails({good}, 2, "expected 2 file arguments, got 1");
    check_fails({good, out.string(), "third"}, 2, "expected 2 file arguments, got 3");
    check_fails({good, out.string(), "--threads"}, 2, "--threads expects a value");
    check_fails({good, out.string(), "--threads", "0"}, 2, "--threads expects a positive integer, got \"0\"");
    check_fails({good, out.string(), "--threads", "two"}, 2, "--threads expects a positive integer, got \"two\"");
    check_fails({good, out.string(), "--threads", "1", "--threads", "2"}, 2, "--threads given twice");
    check_fails({good, out.string(), "--fast"}, 2, "unknown option \"--fast\"");
  }
  SECTION("files") {
    check_fails({(fixtures_dir() / "no_such.safetensors").string(), out.string()}, 1, "no such file");
    check_fails({(fixtures_dir() / "README.md").string(), out.string()}, 1, "[mha.format]");
    check_fails({good, (out.parent_path() / "no_such_dir" / "out.safetensors").string()}, 1,
                "cannot open for writing");
  }
  SECTION("metadata") {
    check_fails({input([](SafetensorsFile& f) { f.metadata()["is_causal"] = "yes"; }), out.string()}, 1,
                "metadata is_causal: expected \"true\" or \"false\", got \"yes\"");
    check_fails({input([](SafetensorsFile& f) { f.metadata()["need_weights"] = "True"; }), out.string()}, 1,
                "metadata need_weights: expected \"true\" or \"false\", got \"True\"");
    // A misspelt setting (here two letters swapped) is an error; descriptions are not (the
    // fixtures carry "case" and "generator"; "model" is one letter from "mode").
    check_fails({input([](SafetensorsFile& f) { f.metadata()["is_casual"] = "true"; }), out.string()}, 1,
                "metadata \"is_casual\" is not a setting; did you mean \"is_causal\"?");
    check_fails({input([](SafetensorsFile& f) { f.metadata().erase("num_heads"); }), out.string()}, 1,
                "metadata num_heads is missing");
    check_fails({input([](SafetensorsFile& f) { f.metadata()["num_heads"] = "2x"; }), out.string()}, 1,
                "metadata num_heads: expected a positive integer, got \"2x\"");
    check_fails({input([](SafetensorsFile& f) { f.metadata()["num_heads"] = "0"; }), out.string()}, 1,
                "expected a positive integer, got \"0\"");
    check_fails({input([](SafetensorsFile& f) { f.metadata()["num_heads"] = "3"; }), out.string()}, 1,
                "embed_dim 8 is not divisible by num_heads 3");
    check_fails({input([](SafetensorsFile& f) { f.metadata()["num_heads"] = "2\nx"; }), out.string()}, 1,
                "got \"2\\nx\"");
  }
  SECTION("tensors") {
    check_fails({input([](SafetensorsFile& f) { f.erase("query"); }), out.string()}, 1, "tensor query is missing");
    check_fails({input([](SafetensorsFile& f) { f.erase("out_proj.weight"); }), out.string()}, 1,
                "missing \"out_proj.weight\"");
    check_fails({input([](SafetensorsFile& f) {
                   f.insert("key", Tensor::from_matrix(f.at("key").to_matrix<double>(), f.at("key").shape()));
                 }),
                 out.string()},
                1, "key: expected dtype F32 like query, got F64");
    check_fails({input([](SafetensorsFile& f) {
                   f.insert("query", Tensor::from_matrix(mha::Matrix<float>::Zero(6, 8), {2, 3, 8}));
                   f.insert("value", Tensor::from_matrix(mha::Matrix<float>::Zero(12, 7), {2, 6, 7}));
                   f.insert("key", Tensor::from_matrix(mha::Matrix<float>::Zero(12, 7), {2, 6, 7}));
                 }),
                 out.string()},
                1, "key [N, S, kdim]: expected shape [2, 6, 5], got [2, 6, 7]");
    check_fails({input([](SafetensorsFile& f) { f.insert("query", Tensor(Dtype::i32, {1, 1, 8}, std::vector<std::uint8_t>(32))); }),
                 out.string()},
                1, "query: expected dtype F32 or F64, got I32");
    check_fails({input([](SafetensorsFile& f) { f.insert("attn_mask", Tensor(Dtype::boolean, {3, 5}, std::vector<std::uint8_t>(15))); }),
                 out.string()},
                1, "attn_mask [L, S]: expected shape [3, 6], got [3, 5]");
    check_fails({input([](SafetensorsFile& f) { f.insert("attn_mask", Tensor(Dtype::boolean, {2, 3, 6}, std::vector<std::uint8_t>(36))); }),
                 out.string()},
                1, "attn_mask [N * num_heads, L, S]: expected shape [4, 3, 6], got [2, 3, 6]");
    check_fails({input([](SafetensorsFile& f) { f.insert("key_padding_mask", Tensor(Dtype::i64, {2, 6}, std::vector<std::uint8_t>(96))); }),
                 out.string()},
                1, "key_padding_mask (BOOL or float): expected dtype F32 like query, got I64");
    check_fails({input([](SafetensorsFile& f) {
                   mha::Matrix<float> m = mha::Matrix<float>::Zero(3, 6);
                   m(1, 1) = NAN;
                   f.insert("attn_mask", Tensor::from_matrix(m));
                 }),
                 out.string()},
                1, "additive mask: value at [1, 1] is NaN");
  }
  CHECK_FALSE(std::filesystem::exists(out));
  std::filesystem::remove(in);
#endif
}

TEST_CASE("mha-run: defaults, --help and ignored tensors", "[io][mha-run]") {
#ifndef MHA_RUN_EXE
  WARN("MHA_RUN_EXE is not defined: mha-run tests skipped");
#else
  const RunResult help = run_mha_run({"--help"});
  CHECK(help.status == 0);
  CHECK_THAT(help.out, StartsWith("usage: mha-run IN.safetensors OUT.safetensors [--threads N]"));

  // Only num_heads in the metadata: need_weights and average_attn_weights default to true,
  // is_causal and add_zero_attn to false; an unknown tensor is ignored.
  SafetensorsFile f = mha::io::read_safetensors(fixtures_dir() / "self_attn_basic_f64.safetensors");
  REQUIRE(f.metadata().at("is_causal") == "false");
  REQUIRE(f.metadata().at("average_attn_weights") == "true");
  f.metadata() = {{"num_heads", "2"}};
  f.insert("unrelated", Tensor(Dtype::i8, {3}, {1, 2, 3}));
  const std::filesystem::path in = temp_path("mha_run_defaults_in"), out = temp_path("mha_run_defaults_out");
  mha::io::write_safetensors(in, f);
  const RunResult r = run_mha_run({in.string(), out.string()});
  INFO(r.err);
  REQUIRE(r.status == 0);
  const SafetensorsFile result = mha::io::read_safetensors(out);
  Worst unused;
  compare(f, {result.at("attn_output").to_matrix<double>(), result.at("attn_output_weights").to_matrix<double>()},
          "defaults", unused);
  std::filesystem::remove(in);
  std::filesystem::remove(out);
#endif
}
