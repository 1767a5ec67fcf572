// Parity of the decoder attention with the PyTorch reference of tests/fixtures/generate_decoder.py
// (tests/fixtures/decoder/*.safetensors; see tests/fixtures/README.md): every fixture through
// mha-run's decoder mode (prefill + chunked decode through the KV cache, as the file's metadata
// asks) and some through the C++ API; load_grouped_query_attention's and mha-run's errors.
//
// Error metric per output: max|a - b| / max|b|, in double. Limits: 2e-5 (F32), 1e-12 (F64), and
// for a bf16 / f16 cache 1e-2 / 2e-3 (their rounding of K and V, see the fixtures' README).
#include <mha/io.hpp>
#include <mha/mha.hpp>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "io_test_support.hpp"
#include "mha_catch.hpp"

namespace {

using Catch::Matchers::ContainsSubstring;
using mha::io::Dtype;
using mha::io::SafetensorsFile;
using mha::io::Tensor;

std::vector<std::filesystem::path> decoder_fixtures() {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(io_test::fixtures_dir() / "decoder"))
    if (e.path().extension() == ".safetensors") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

double relative_error(const mha::Matrix<double>& a, const mha::Matrix<double>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return INFINITY;
  return (a - b).cwiseAbs().maxCoeff() / std::max(b.cwiseAbs().maxCoeff(), 1e-30);
}

double tolerance(const SafetensorsFile& f) {
  const auto it = f.metadata().find("cache_dtype");
  const std::string cache = it == f.metadata().end() ? "float" : it->second;
  if (cache == "bf16") return 1e-2;
  if (cache == "f16") return 2e-3;
  return f.at("hidden_states").dtype() == Dtype::f32 ? 2e-5 : 1e-12;
}

std::string metadata(const SafetensorsFile& f, const char* key, const std::string& fallback) {
  const auto it = f.metadata().find(key);
  return it == f.metadata().end() ? fallback : it->second;
}

}  // namespace

TEST_CASE("Decoder fixtures: mha-run matches the PyTorch reference, bitwise the same at 1 and 2 threads",
          "[decoder][parity][io]") {
#ifndef MHA_RUN_EXE
  SKIP("MHA_RUN_EXE is not defined: mha-run decoder parity skipped");
#else
  const auto files = decoder_fixtures();
  REQUIRE(files.size() >= 30);
  double worst = 0;
  std::string worst_case;
  for (const auto& file : files) {
    const std::string name = file.filename().string();
    INFO(name);
    const SafetensorsFile in = mha::io::read_safetensors(file);
    REQUIRE(metadata(in, "mode", "") == "decoder");
    const mha::Matrix<double> expected = in.at("expected_attn_output").to_matrix<double>();
    mha::Matrix<double> outputs[2];
    for (int threads : {1, 2}) {
      const auto out_path = io_test::temp_path("decoder_" + name);
      const io_test::RunResult r =
          io_test::run_mha_run({file.string(), out_path.string(), "--threads", std::to_string(threads)});
      INFO("stderr: " << r.err);
      REQUIRE(r.status == 0);
      const SafetensorsFile out = mha::io::read_safetensors(out_path);
      std::filesystem::remove(out_path);
      REQUIRE(out.at("attn_output").dtype() == in.at("hidden_states").dtype());
      REQUIRE(out.at("attn_output").shape() == in.at("hidden_states").shape());
      outputs[threads - 1] = out.at("attn_output").to_matrix<double>();
    }
    const double e = relative_error(outputs[0], expected);
    INFO("error " << e << " (tolerance " << tolerance(in) << ")");
    CHECK(e <= tolerance(in));
    CHECK((outputs[0].array() == outputs[1].array()).all());
    if (tolerance(in) <= 2e-5 && e / tolerance(in) > worst) {
      worst = e / tolerance(in);
      worst_case = name;
    }
  }
  WARN("worst decoder error relative to its tolerance: " << worst << " (" << worst_case << ")");
#endif
}

TEST_CASE("Decoder fixtures through the C++ API: whole sequence and token by token", "[decoder][parity][io]") {
  for (const char* name : {"llama_like_everything_f64", "gqa_f32", "sliding_window_rope_long_f32"}) {
    INFO(name);
    const SafetensorsFile in = mha::io::read_safetensors(io_test::fixtures_dir() / "decoder" / (std::string(name) + ".safetensors"));
    const Tensor& hidden = in.at("hidden_states");
    const mha::Index N = hidden.shape()[0], T = hidden.shape()[1], E = hidden.shape()[2];
    mha::GroupedQueryAttentionOptions o(E, std::stoi(metadata(in, "num_heads", "")),
                                        std::stoi(metadata(in, "num_kv_heads", "0")));
    o.head_dim = std::stoi(metadata(in, "head_dim", "0"));
    if (metadata(in, "rope", "none") != "none") {
      o.rope = mha::RopeOptions{};
      o.rope->layout = metadata(in, "rope", "") == "half" ? mha::RopeLayout::rotate_half : mha::RopeLayout::interleaved;
      o.rope->theta = std::stod(metadata(in, "rope_theta", "10000"));
      o.rope->rotary_dim = std::stoi(metadata(in, "rotary_dim", "0"));
      if (in.metadata().count("rope_scaling"))
        o.rope->scaling = mha::io::rope_scaling_from_json(nlohmann::json::parse(metadata(in, "rope_scaling", "")));
    }
    o.alibi = metadata(in, "alibi", "false") == "true";
    o.sliding_window = std::stoi(metadata(in, "sliding_window", "0"));
    o.softcap = std::stod(metadata(in, "softcap", "0"));
    const mha::Matrix<double> x = hidden.to_matrix<double>();
    const mha::Matrix<double> expected = in.at("expected_attn_output").to_matrix<double>();
    const double tol = tolerance(in);
    auto check = [&](const auto& layer) {
      using S = typename std::decay_t<decltype(layer)>::Scalar;
      const mha::Matrix<S> xs = x.cast<S>();
      CHECK(relative_error(layer.forward(xs, N).template cast<double>(), expected) <= tol);
      auto cache = layer.template make_cache<S>(N, T, 4);
      mha::Matrix<double> stepped(N * T, E);
      for (mha::Index t = 0; t < T; ++t) {
        mha::Matrix<S> xt(N, E);
        for (mha::Index n = 0; n < N; ++n) xt.row(n) = xs.row(n * T + t);
        const mha::Matrix<S> y = layer.forward(xt, cache);
        for (mha::Index n = 0; n < N; ++n) stepped.row(n * T + t) = y.row(n).template cast<double>();
      }
      CHECK(relative_error(stepped, expected) <= tol);
    };
    if (hidden.dtype() == Dtype::f32)
      check(mha::io::load_grouped_query_attention<float>(in, o));
    else
      check(mha::io::load_grouped_query_attention<double>(in, o));
  }
}

TEST_CASE("load_grouped_query_attention and rope_scaling_from_json reject inconsistent input", "[decoder][io][errors]") {
  const SafetensorsFile base = mha::io::read_safetensors(io_test::fixtures_dir() / "decoder" / "biases_f32.safetensors");
  const mha::GroupedQueryAttentionOptions o(16, 4, 2);
  REQUIRE(base.at("hidden_states").shape()[2] == 16);
  auto load = [&](const SafetensorsFile& f, mha::GroupedQueryAttentionOptions options) {
    return io_test::thrown<std::invalid_argument>([&] { mha::io::load_grouped_query_attention<float>(f, options); }) + io_test::thrown<mha::format_error>([&] { mha::io::load_grouped_query_attention<float>(f, options); });
  };
  CHECK(load(base, o) == "<no exception><no exception>");
  SafetensorsFile f = base;
  f.erase("k_proj.bias");
  CHECK_THAT(load(f, o), ContainsSubstring("\"q_proj.bias\" is present but \"k_proj.bias\" is missing"));
  f = base;
  f.erase("o_proj.weight");
  CHECK_THAT(load(f, o), ContainsSubstring("missing \"o_proj.weight\""));
  CHECK_THAT(load(base, mha::GroupedQueryAttentionOptions(16, 4, 4)),
             ContainsSubstring("\"k_proj.weight\": expected shape [16, 16], got [8, 16]"));
  f = base;
  f.insert("alibi_slopes", Tensor::from_matrix(mha::Matrix<float>::Ones(1, 4), {4}));
  CHECK_THAT(load(f, o), ContainsSubstring("\"alibi_slopes\" is present but the layer has no alibi"));

  using nlohmann::json;
  auto scaling = [](const char* text) {
    return io_test::thrown<mha::format_error>([&] { mha::io::rope_scaling_from_json(json::parse(text)); });
  };
  CHECK_THAT(scaling(R"({"rope_type": "ntk"})"), ContainsSubstring("unknown rope_type \"ntk\""));
  CHECK_THAT(scaling(R"({"rope_type": "llama3", "factor": 8})"), ContainsSubstring("\"llama3\" needs \"low_freq_factor\""));
  CHECK_THAT(scaling(R"({"rope_type": "linear", "factor": "2"})"), ContainsSubstring("\"factor\" must be a number"));
  CHECK_THAT(scaling(R"([1, 2])"), ContainsSubstring("expected a JSON object"));
  CHECK_THAT(scaling(R"({"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": 18446744073709551615})"),
             ContainsSubstring("\"original_max_position_embeddings\" must be a 64-bit integer, got 18446744073709551615"));
  CHECK(mha::io::rope_scaling_from_json(json::parse(R"({"type": "linear", "factor": 2.5})")).factor == 2.5);
  CHECK(mha::io::rope_scaling_from_json(json()).type == mha::RopeScalingType::none);
}

TEST_CASE("mha-run decoder mode: one-line errors for bad metadata and tensors", "[decoder][io][errors]") {
#ifndef MHA_RUN_EXE
  SKIP("MHA_RUN_EXE is not defined: mha-run decoder errors skipped");
#else
  const SafetensorsFile base = mha::io::read_safetensors(io_test::fixtures_dir() / "decoder" / "gqa_f32.safetensors");
  auto fails_with = [&](const SafetensorsFile& f, const std::string& needle) {
    const auto in = io_test::temp_path("decoder_bad"), out = io_test::temp_path("decoder_bad_out");
    mha::io::write_safetensors(in, f);
    const io_test::RunResult r = io_test::run_mha_run({in.string(), out.string()});
    std::filesystem::remove(in);
    INFO("stderr: " << r.err);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, ContainsSubstring("mha-run: "));
    CHECK_THAT(r.err, ContainsSubstring(needle));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  };
  auto with = [&](const char* key, const char* value) {
    SafetensorsFile f = base;
    f.metadata()[key] = value;
    return f;
  };
  fails_with(with("mode", "encoder"), "metadata mode: expected \"decoder\"");
  fails_with(with("num_kv_heads", "3"), "is not a multiple of num_kv_heads 3");
  fails_with(with("rope", "full"), "metadata rope: expected none, half or interleaved");
  SafetensorsFile f = with("rope", "half");
  f.metadata()["rope_scaling"] = "{not json";
  fails_with(f, "metadata rope_scaling: not valid JSON");
  f.metadata()["rope_scaling"] = R"({"rope_type": "yarn", "factor": 4})";
  fails_with(f, "\"yarn\" needs \"original_max_position_embeddings\"");
  fails_with(with("rotary_dim", "4"), "metadata rotary_dim is given but rope is none");
  f = with("rope", "interleaved");
  f.metadata()["rotary_dim"] = "5";
  fails_with(f, "rotary_dim");
  fails_with(with("cache_dtype", "f8"), "metadata cache_dtype: expected float, bf16 or f16");
  fails_with(with("prefill", "1000"), "metadata prefill: expected <= T");
  fails_with(with("prefill", "0"), "metadata prefill: expected an integer >= 1");
  fails_with(with("sliding_window", "-2"), "metadata sliding_window: expected an integer >= 0");
  fails_with(with("softcap", "-1"), "metadata softcap: expected c > 0 (or 0 for none), got \"-1\"");
  fails_with(with("sliding_windw", "4"), "metadata \"sliding_windw\" is not a setting; did you mean \"sliding_window\"?");
  fails_with(with("cahce_dtype", "bf16"), "did you mean \"cache_dtype\"?");  // two letters swapped
  {  // Descriptions stay descriptions, also one letter from a short setting ("model" / "mode").
    SafetensorsFile f = with("model", "Qwen/Qwen3-0.6B");
    f.metadata()["format"] = "pt";
    f.metadata()["profile"] = "x";  // two edits from "prefill"
    const auto in = io_test::temp_path("decoder_described"), out = io_test::temp_path("decoder_described_out");
    mha::io::write_safetensors(in, f);
    const io_test::RunResult r = io_test::run_mha_run({in.string(), out.string()});
    std::filesystem::remove(in);
    std::filesystem::remove(out);
    INFO("stderr: " << r.err);
    CHECK(r.status == 0);
  }
  fails_with(with("Num_Heads", "4"), "did you mean \"num_heads\"?");
  fails_with(with("qk_norm_eps", "1e-5"), "metadata qk_norm_eps is given but the file has no q_norm.weight / k_norm.weight");
  fails_with(with("softcap", "x"), "metadata softcap: expected a finite number");
  fails_with(with("causal", "maybe"), "metadata causal: expected \"true\" or \"false\"");
  f = base;
  f.erase("hidden_states");
  fails_with(f, "tensor hidden_states is missing");
  f = base;
  f.insert("q_proj.weight", Tensor::from_matrix(base.at("q_proj.weight").to_matrix<double>()));
  fails_with(f, "q_proj.weight: expected dtype F32 like hidden_states, got F64");
#endif
}
