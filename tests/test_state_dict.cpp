// Tests of <mha/io/state_dict.hpp>: loading the PyTorch fixtures' state_dicts, saving them back
// byte for byte, prefixes, and every rejected state_dict.
#include <mha/io.hpp>
#include <mha/mha.hpp>

#include <algorithm>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "io_test_support.hpp"
#include "mha_catch.hpp"

namespace {

using io_test::thrown;
using io_test::fixtures_dir;
using io_test::fixture_files;
using io_test::temp_path;

using Catch::Matchers::ContainsSubstring;
using mha::io::Dtype;
using mha::io::SafetensorsFile;
using mha::io::Tensor;

SafetensorsFile fixture(const std::string& name) { return mha::io::read_safetensors(fixtures_dir() / name); }

const char* const state_dict_keys[] = {"in_proj_weight", "q_proj_weight", "k_proj_weight",   "v_proj_weight",
                                       "in_proj_bias",   "out_proj.weight", "out_proj.bias", "bias_k",
                                       "bias_v"};

// Only the state_dict of a fixture, optionally under a prefix.
SafetensorsFile state_dict_of(const SafetensorsFile& f, const std::string& prefix = "") {
  SafetensorsFile out;
  for (const char* k : state_dict_keys)
    if (const Tensor* t = f.find(k)) out.insert(prefix + k, *t);
  return out;
}

// Saves `module` to a SafetensorsFile, through bytes and back.
template <class Scalar>
SafetensorsFile saved(const mha::MultiHeadAttention<Scalar>& module, const std::string& prefix = "") {
  SafetensorsFile f;
  mha::io::save_multi_head_attention(module, f, prefix);
  const std::vector<std::uint8_t> bytes = mha::io::serialize_safetensors(f);
  return mha::io::parse_safetensors(bytes.data(), bytes.size());
}

}  // namespace

TEST_CASE("state_dict: the options of every fixture are inferred", "[io][state_dict]") {
  struct Expect {
    const char* file;
    mha::Index E, H, kdim, vdim;
    bool bias, bias_kv;
  };
  const Expect cases[] = {
      {"self_attn_basic_f32.safetensors", 8, 2, 8, 8, true, false},
      {"kdim_vdim_f64.safetensors", 8, 2, 5, 7, true, false},
      {"no_bias_f32.safetensors", 8, 4, 8, 8, false, false},
      {"no_bias_kdim_vdim_bias_kv_f64.safetensors", 8, 2, 6, 4, false, true},
      {"bias_kv_f32.safetensors", 8, 2, 8, 8, true, true},
      {"odd_sizes_h5_f32.safetensors", 15, 5, 15, 15, true, false},
  };
  for (const Expect& c : cases) {
    INFO(c.file);
    const SafetensorsFile f = fixture(c.file);
    const auto m = mha::io::load_multi_head_attention<double>(f, c.H);
    CHECK(m.embed_dim() == c.E);
    CHECK(m.num_heads() == c.H);
    CHECK(m.kdim() == c.kdim);
    CHECK(m.vdim() == c.vdim);
    CHECK(m.options().bias == c.bias);
    CHECK(m.options().add_bias_kv == c.bias_kv);
    CHECK_FALSE(m.options().add_zero_attn);
    CHECK(m.in_proj().packed() == (c.kdim == c.E && c.vdim == c.E));
    CHECK(m.out_proj().weight() == f.at("out_proj.weight").to_matrix<double>());
    if (m.in_proj().packed()) CHECK(m.in_proj().in_proj_weight() == f.at("in_proj_weight").to_matrix<double>());
    if (!m.in_proj().packed()) CHECK(m.in_proj().k_weight() == f.at("k_proj_weight").to_matrix<double>());
    if (c.bias_kv) CHECK(m.bias_k() == f.at("bias_k").to_matrix<double>());
  }
  CHECK(mha::io::load_multi_head_attention<float>(fixture("zero_attn_f32.safetensors"), 2, "", true)
            .options()
            .add_zero_attn);
}

TEST_CASE("state_dict: load then save gives every fixture's tensors byte for byte", "[io][state_dict]") {
  const auto files = fixture_files();
  REQUIRE(files.size() == 54);
  for (const auto& path : files) {
    INFO(path.filename().string());
    const SafetensorsFile f = mha::io::read_safetensors(path);
    const mha::Index H = std::stoi(f.metadata().at("num_heads"));
    const SafetensorsFile expected = state_dict_of(f);
    SafetensorsFile out;
    if (f.at("out_proj.weight").dtype() == Dtype::f32)
      out = saved(mha::io::load_multi_head_attention<float>(f, H));
    else
      out = saved(mha::io::load_multi_head_attention<double>(f, H));
    REQUIRE(out.size() == expected.size());
    for (const auto& item : expected.tensors()) {
      INFO(item.first);
      REQUIRE(out.contains(item.first));
      CHECK(out.at(item.first) == item.second);  // dtype, shape and bytes
    }
  }
}

TEST_CASE("state_dict: save to a path and load from it", "[io][state_dict]") {
  const auto module = mha::io::load_multi_head_attention<float>(fixture("bias_kv_zero_attn_float_masks_kdim_vdim_f32.safetensors"), 2);
  const std::filesystem::path path = temp_path("state_dict");
  mha::io::save_multi_head_attention(module, path, "attn");
  const auto back = mha::io::load_multi_head_attention<float>(path, 2, "attn.");
  std::filesystem::remove(path);
  CHECK(back.kdim() == 6);
  CHECK(back.vdim() == 3);
  CHECK(back.in_proj().q_weight() == module.in_proj().q_weight());
  CHECK(back.in_proj().v_weight() == module.in_proj().v_weight());
  CHECK(back.in_proj().in_proj_bias() == module.in_proj().in_proj_bias());
  CHECK(back.bias_v() == module.bias_v());
}

TEMPLATE_TEST_CASE("state_dict: a randomly initialised module survives save and load", "[io][state_dict]", float,
                   double) {
  for (const bool bias : {true, false})
    for (const bool bias_kv : {true, false})
      for (const mha::Index kdim : {0, 3}) {
        mha::MultiHeadAttentionOptions o;
        o.embed_dim = 6;
        o.num_heads = 3;
        o.kdim = kdim;
        o.vdim = kdim == 0 ? 0 : 5;
        o.bias = bias;
        o.add_bias_kv = bias_kv;
        const mha::MultiHeadAttention<TestType> m(o, 42);
        const SafetensorsFile f = saved(m, "layers.0.self_attn.");
        CHECK(f.contains("layers.0.self_attn.out_proj.weight"));
        CHECK(f.contains("layers.0.self_attn.in_proj_weight") == (kdim == 0));
        CHECK(f.contains("layers.0.self_attn.q_proj_weight") == (kdim != 0));
        CHECK(f.contains("layers.0.self_attn.in_proj_bias") == bias);
        CHECK(f.contains("layers.0.self_attn.out_proj.bias") == bias);
        CHECK(f.contains("layers.0.self_attn.bias_k") == bias_kv);
        if (bias_kv) CHECK(f.at("layers.0.self_attn.bias_k").shape() == std::vector<std::int64_t>{1, 1, 6});
        if (bias) CHECK(f.at("layers.0.self_attn.in_proj_bias").shape() == std::vector<std::int64_t>{18});
        const auto back = mha::io::load_multi_head_attention<TestType>(f, 3, "layers.0.self_attn");
        CHECK(back.options().bias == bias);
        CHECK(back.options().add_bias_kv == bias_kv);
        CHECK(back.kdim() == m.kdim());
        CHECK(back.vdim() == m.vdim());
        CHECK(back.in_proj().q_weight() == m.in_proj().q_weight());
        CHECK(back.in_proj().k_weight() == m.in_proj().k_weight());
        CHECK(back.in_proj().v_weight() == m.in_proj().v_weight());
        CHECK(back.in_proj().in_proj_bias() == m.in_proj().in_proj_bias());
        CHECK(back.out_proj().weight() == m.out_proj().weight());
        CHECK(back.out_proj().bias() == m.out_proj().bias());
        CHECK(back.bias_k() == m.bias_k());
        CHECK(back.bias_v() == m.bias_v());
      }
}

TEST_CASE("state_dict: F64 weights load into a float module and back", "[io][state_dict]") {
  const SafetensorsFile f = fixture("kdim_vdim_f64.safetensors");
  const auto m = mha::io::load_multi_head_attention<float>(f, 2);
  CHECK(m.in_proj().v_weight() == f.at("v_proj_weight").to_matrix<float>());
  // The F64 fixture holds exact up-casts of the F32 one, so the round trip to F32 is exact too.
  const SafetensorsFile f32 = fixture("kdim_vdim_f32.safetensors");
  CHECK(saved(m).at("v_proj_weight") == f32.at("v_proj_weight"));
}

TEST_CASE("state_dict: separate q/k/v weights with kdim == vdim == E load into the packed layout",
          "[io][state_dict]") {
  SafetensorsFile f = state_dict_of(fixture("self_attn_basic_f64.safetensors"));
  const mha::Matrix<double> w = f.at("in_proj_weight").to_matrix<double>();
  f.erase("in_proj_weight");
  f.insert("q_proj_weight", Tensor::from_matrix(w.topRows(8)));
  f.insert("k_proj_weight", Tensor::from_matrix(w.middleRows(8, 8)));
  f.insert("v_proj_weight", Tensor::from_matrix(w.bottomRows(8)));
  const auto m = mha::io::load_multi_head_attention<double>(f, 2);
  REQUIRE(m.in_proj().packed());
  CHECK(m.in_proj().in_proj_weight() == w);
}

TEST_CASE("state_dict: rejected state_dicts name the key and the shapes", "[io][state_dict]") {
  const SafetensorsFile packed = state_dict_of(fixture("bias_kv_f32.safetensors"));       // E = 8
  const SafetensorsFile separate = state_dict_of(fixture("kdim_vdim_f32.safetensors"));  // kdim 5, vdim 7
  const auto load = [](const SafetensorsFile& f, mha::Index heads = 2, const std::string& prefix = "") {
    return [f, heads, prefix] { mha::io::load_multi_head_attention<float>(f, heads, prefix); };
  };
  const auto without = [](SafetensorsFile f, const std::string& key) {
    f.erase(key);
    return f;
  };
  const auto with = [](SafetensorsFile f, const std::string& key, Tensor t) {
    f.insert(key, std::move(t));
    return f;
  };
  const auto zeros = [](std::vector<std::int64_t> shape, Dtype dtype = Dtype::f32) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return Tensor(dtype, shape, std::vector<std::uint8_t>(static_cast<std::size_t>(n) * mha::io::dtype_size(dtype)));
  };

  CHECK_THAT(thrown<mha::format_error>(load(without(packed, "out_proj.weight"))),
             ContainsSubstring("[mha.format] state_dict: missing \"out_proj.weight\""));
  CHECK_THAT(thrown<mha::format_error>(load(packed, 2, "encoder.")),
             ContainsSubstring("missing \"encoder.out_proj.weight\""));
  CHECK_THAT(thrown<mha::shape_error>(load(with(packed, "out_proj.weight", zeros({8, 4})))),
             ContainsSubstring("\"out_proj.weight\": expected shape [E, E] with E > 0, got [8, 4]"));
  CHECK_THAT(thrown<mha::shape_error>(load(with(packed, "out_proj.weight", zeros({64})))),
             ContainsSubstring("expected shape [E, E] with E > 0, got [64]"));
  CHECK_THAT(thrown<mha::format_error>(load(with(packed, "q_proj_weight", zeros({8, 8})))),
             ContainsSubstring("both \"in_proj_weight\" and \"q_proj_weight\" are present"));
  CHECK_THAT(thrown<mha::format_error>(load(without(packed, "in_proj_weight"))),
             ContainsSubstring("missing \"q_proj_weight\" (and no \"in_proj_weight\")"));
  CHECK_THAT(thrown<mha::format_error>(load(without(separate, "v_proj_weight"))),
             ContainsSubstring("missing \"v_proj_weight\""));
  CHECK_THAT(thrown<mha::shape_error>(load(with(packed, "in_proj_weight", zeros({24, 9})))),
             ContainsSubstring("[mha.shape] state_dict \"in_proj_weight\": expected shape [24, 8], got [24, 9]"));
  CHECK_THAT(thrown<mha::shape_error>(load(with(separate, "q_proj_weight", zeros({8, 5})))),
             ContainsSubstring("\"q_proj_weight\": expected shape [8, 8], got [8, 5]"));
  CHECK_THAT(thrown<mha::shape_error>(load(with(separate, "k_proj_weight", zeros({7, 5})))),
             ContainsSubstring("\"k_proj_weight\": expected shape [8, *] with * > 0, got [7, 5]"));
  CHECK_THAT(thrown<mha::shape_error>(load(with(packed, "in_proj_bias", zeros({24, 1})))),
             ContainsSubstring("\"in_proj_bias\": expected shape [24], got [24, 1]"));
  CHECK_THAT(thrown<mha::shape_error>(load(with(packed, "out_proj.bias", zeros({7})))),
             ContainsSubstring("\"out_proj.bias\": expected shape [8], got [7]"));
  CHECK_THAT(thrown<mha::shape_error>(load(with(packed, "bias_k", zeros({8})))),
             ContainsSubstring("\"bias_k\": expected shape [1, 1, 8], got [8]"));
  CHECK_THAT(thrown<mha::format_error>(load(without(packed, "out_proj.bias"))),
             ContainsSubstring("\"in_proj_bias\" is present but \"out_proj.bias\" is missing"));
  CHECK_THAT(thrown<mha::format_error>(load(without(packed, "in_proj_bias"))),
             ContainsSubstring("\"out_proj.bias\" is present but \"in_proj_bias\" is missing"));
  CHECK_THAT(thrown<mha::format_error>(load(without(packed, "bias_k"))),
             ContainsSubstring("\"bias_v\" is present but \"bias_k\" is missing"));
  CHECK_THAT(thrown<mha::format_error>(load(with(packed, "in_proj_weight", zeros({24, 8}, Dtype::i32)))),
             ContainsSubstring("\"in_proj_weight\": expected a floating-point dtype, got I32"));
  CHECK_THAT(thrown<mha::shape_error>(load(packed, 3)),
             ContainsSubstring("embed_dim 8 is not divisible by num_heads 3"));
  CHECK_THAT(thrown<mha::shape_error>(load(packed, 0)), ContainsSubstring("expected positive embed_dim and num_heads"));
}
