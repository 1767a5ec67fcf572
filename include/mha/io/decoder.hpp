#pragma once
/// \file decoder.hpp
/// Loading a `GroupedQueryAttention` from Hugging Face-named weights in a safetensors file, and
/// reading a Hugging Face config's `rope_scaling` object.
///
/// Keys (after a prefix such as `"model.layers.0.self_attn."`; E = embed_dim, H = num_heads,
/// Hkv = num_kv_heads, d = head_dim):
///
/// | key             | shape        | present when                        |
/// |-----------------|--------------|-------------------------------------|
/// | `q_proj.weight` | `[H d, E]`   | always                              |
/// | `k_proj.weight` | `[Hkv d, E]` | always                              |
/// | `v_proj.weight` | `[Hkv d, E]` | always                              |
/// | `o_proj.weight` | `[E, H d]`   | always                              |
/// | `q_proj.bias`, `k_proj.bias`, `v_proj.bias` | `[H d]`, `[Hkv d]`, `[Hkv d]` | qkv_bias (all three) |
/// | `o_proj.bias`   | `[E]`        | out_bias                            |
/// | `q_norm.weight`, `k_norm.weight` | `[d]` | qk_norm (both)                 |
/// | `alibi_slopes`  | `[H]`        | optional with alibi: replaces the standard slopes |
///
/// The shapes of a Hugging Face config (hidden_size, num_attention_heads, num_key_value_heads,
/// head_dim) are not in the weights; the caller gives them in the options, and the loader checks
/// every tensor against them. The QK-norm weights are taken as Qwen3 stores them (the scale
/// itself); Gemma 3 stores `scale - 1`, so add one to them after loading
/// (`layer.set_q_norm_weight((layer.q_norm_weight().array() + 1).matrix())`, likewise k).

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../grouped_query_attention.hpp"
#include "safetensors.hpp"
#include "state_dict.hpp"

namespace mha {
namespace io {

/// Builds a `GroupedQueryAttention` with `options` and the weights under `prefix` in `file`.
/// The presence of the bias tensors sets qkv_bias / out_bias, and of the QK-norm weights sets
/// qk_norm (a tensor that the options cannot use would otherwise be silently ignored). Tensors
/// of any float dtype are converted to Scalar. Throws `mha::format_error` for a missing or
/// inconsistent key and `mha::shape_error` for a tensor of the wrong shape, naming the key and
/// both shapes.
template <class Scalar>
GroupedQueryAttention<Scalar> load_grouped_query_attention(const SafetensorsFile& file,
                                                           GroupedQueryAttentionOptions options,
                                                           const std::string& prefix = "") {
  using detail::quoted;
  const std::string p = detail::with_dot(prefix);
  auto key = [&p](const char* name) { return p + name; };
  auto has = [&](const char* name) { return file.contains(key(name)); };
  auto all_or_none = [&](std::initializer_list<const char*> names) {
    const bool first = has(*names.begin());
    for (const char* name : names)
      if (has(name) != first)
        MHA_THROW(format_error, "[mha.format] decoder weights: " + quoted(key(*names.begin())) + " is " +
                                    (first ? "present" : "missing") + " but " + quoted(key(name)) + " is " +
                                    (first ? "missing" : "present"));
    return first;
  };
  options.qkv_bias = all_or_none({"q_proj.bias", "k_proj.bias", "v_proj.bias"});
  options.out_bias = has("o_proj.bias");
  options.qk_norm = all_or_none({"q_norm.weight", "k_norm.weight"});
  if (has("alibi_slopes") && !options.alibi)
    MHA_THROW(format_error, "[mha.format] decoder weights: " + quoted(key("alibi_slopes")) +
                                " is present but the layer has no alibi");
  GroupedQueryAttention<Scalar> layer(options);
  const std::int64_t E = layer.embed_dim(), H = layer.num_heads(), Hkv = layer.num_kv_heads(), d = layer.head_dim();
  layer.q_proj().set_weight(detail::parameter<Scalar>(file, key("q_proj.weight"), {H * d, E}));
  layer.k_proj().set_weight(detail::parameter<Scalar>(file, key("k_proj.weight"), {Hkv * d, E}));
  layer.v_proj().set_weight(detail::parameter<Scalar>(file, key("v_proj.weight"), {Hkv * d, E}));
  layer.o_proj().set_weight(detail::parameter<Scalar>(file, key("o_proj.weight"), {E, H * d}));
  if (options.qkv_bias) {
    layer.q_proj().set_bias(detail::parameter<Scalar>(file, key("q_proj.bias"), {H * d}));
    layer.k_proj().set_bias(detail::parameter<Scalar>(file, key("k_proj.bias"), {Hkv * d}));
    layer.v_proj().set_bias(detail::parameter<Scalar>(file, key("v_proj.bias"), {Hkv * d}));
  }
  if (options.out_bias) layer.o_proj().set_bias(detail::parameter<Scalar>(file, key("o_proj.bias"), {E}));
  if (options.qk_norm) {
    layer.set_q_norm_weight(detail::parameter<Scalar>(file, key("q_norm.weight"), {d}));
    layer.set_k_norm_weight(detail::parameter<Scalar>(file, key("k_norm.weight"), {d}));
  }
  if (has("alibi_slopes")) layer.set_alibi_slopes(detail::parameter<Scalar>(file, key("alibi_slopes"), {H}));
  return layer;
}

/// The `RopeScaling` of a Hugging Face config's `rope_scaling` object (HF
/// `modeling_rope_utils.py`). Accepted `rope_type` values and their keys:
/// - `linear`: `factor`;
/// - `llama3`: `factor`, `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`;
/// - `yarn`: `factor`, `original_max_position_embeddings`, optional `beta_fast`, `beta_slow`,
///   `attention_factor`, `mscale`, `mscale_all_dim`, `truncate`;
/// - `default`, or a null object: no scaling.
///
/// The older key `type` is accepted for `rope_type`. Throws `mha::format_error`
/// (`[mha.format] rope_scaling: ...`) naming the key for an unknown type, a missing key or a
/// value of the wrong JSON type.
inline RopeScaling rope_scaling_from_json(const nlohmann::json& j) {
  RopeScaling s;
  if (j.is_null()) return s;
  auto fail = [](const std::string& what) { MHA_THROW(format_error, "[mha.format] rope_scaling: " + what); };
  if (!j.is_object()) fail("expected a JSON object, got " + detail::short_dump(j));
  const auto type_it = j.contains("rope_type") ? j.find("rope_type") : j.find("type");
  if (type_it == j.end() || !type_it->is_string()) fail("expected a string \"rope_type\"");
  const std::string type = type_it->get<std::string>();
  auto number = [&](const char* name, bool required, double fallback) {
    const auto it = j.find(name);
    if (it == j.end()) {
      if (required) fail("\"" + type + "\" needs \"" + name + "\"");
      return fallback;
    }
    if (!it->is_number()) fail("\"" + std::string(name) + "\" must be a number, got " + detail::short_dump(*it));
    return it->get<double>();
  };
  auto integer = [&](const char* name) {
    const auto it = j.find(name);
    if (it == j.end()) fail("\"" + type + "\" needs \"" + name + "\"");
    // An unsigned value past INT64_MAX would wrap to a negative one, and its message would say so.
    if (!it->is_number_integer() ||
        (it->is_number_unsigned() && it->get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max())))
      fail("\"" + std::string(name) + "\" must be a 64-bit integer, got " + detail::short_dump(*it));
    return static_cast<Index>(it->get<std::int64_t>());
  };
  if (type == "default") return s;
  if (type == "linear") return RopeScaling::linear(number("factor", true, 1));
  // Keys are read one statement at a time so that a missing one is reported in a fixed order.
  if (type == "llama3") {
    const double factor = number("factor", true, 1);
    const double low = number("low_freq_factor", true, 1);
    const double high = number("high_freq_factor", true, 4);
    return RopeScaling::llama3(factor, low, high, integer("original_max_position_embeddings"));
  }
  if (type == "yarn") {
    const double factor = number("factor", true, 1);
    const Index original = integer("original_max_position_embeddings");
    const double beta_fast = number("beta_fast", false, 32);
    s = RopeScaling::yarn(factor, original, beta_fast, number("beta_slow", false, 1));
    if (j.contains("attention_factor") && !j["attention_factor"].is_null())
      s.attention_factor = number("attention_factor", true, 1);
    s.mscale = number("mscale", false, 0);
    s.mscale_all_dim = number("mscale_all_dim", false, 0);
    if (j.contains("truncate")) {
      if (!j["truncate"].is_boolean()) fail("\"truncate\" must be true or false");
      s.truncate = j["truncate"].get<bool>();
    }
    return s;
  }
  fail("unknown rope_type \"" + type + "\" (expected default, linear, llama3 or yarn)");
  return s;
}

}  // namespace io
}  // namespace mha
