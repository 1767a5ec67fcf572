#pragma once
/// \file state_dict.hpp
/// Loading and saving `MultiHeadAttention` as the state_dict of PyTorch's
/// `torch.nn.MultiheadAttention`, in safetensors files.
///
/// Keys (after an optional prefix such as `"encoder.self_attn."`), exactly PyTorch's, with
/// E = embed_dim:
///
/// | key               | shape       | present when                                   |
/// |-------------------|-------------|------------------------------------------------|
/// | `in_proj_weight`  | `[3E, E]`   | kdim == vdim == E (rows: W_Q, W_K, W_V)        |
/// | `q_proj_weight`   | `[E, E]`    | otherwise                                      |
/// | `k_proj_weight`   | `[E, kdim]` | otherwise                                      |
/// | `v_proj_weight`   | `[E, vdim]` | otherwise                                      |
/// | `in_proj_bias`    | `[3E]`      | bias                                           |
/// | `out_proj.weight` | `[E, E]`    | always                                         |
/// | `out_proj.bias`   | `[E]`       | bias                                           |
/// | `bias_k`, `bias_v`| `[1, 1, E]` | add_bias_kv                                    |
///
/// A weight `[out, in]` computes `x W^T + b`, as in PyTorch, so the tensors load as they are.
/// num_heads and add_zero_attn are not part of a state_dict: the loader takes them as arguments.

#include <filesystem>
#include <string>
#include <vector>

#include "../multi_head_attention.hpp"
#include "safetensors.hpp"

namespace mha {
namespace io {

namespace detail {

inline std::string with_dot(const std::string& prefix) {
  return prefix.empty() || prefix.back() == '.' ? prefix : prefix + ".";
}

// The parameter `key` as a matrix; throws unless it is a float tensor of exactly `shape`.
template <class Scalar>
Matrix<Scalar> parameter(const SafetensorsFile& file, const std::string& key, const std::vector<std::int64_t>& shape) {
  const Tensor* t = file.find(key);
  if (!t) MHA_THROW(format_error, "[mha.format] state_dict: missing " + quoted(key));
  if (!is_float_dtype(t->dtype()))
    MHA_THROW(format_error, "[mha.format] state_dict " + quoted(key) + ": expected a floating-point dtype, got " +
                                dtype_name(t->dtype()));
  if (t->shape() != shape)
    MHA_THROW(shape_error, "[mha.shape] state_dict " + quoted(key) + ": expected shape " + shape_string(shape) +
                               ", got " + shape_string(t->shape()));
  return t->to_matrix<Scalar>();
}

// The column count of the rank-2 tensor `key`, which must have `rows` rows.
inline std::int64_t columns_of(const SafetensorsFile& file, const std::string& key, std::int64_t rows) {
  const Tensor& t = file.at(key);
  if (t.rank() != 2 || t.shape()[0] != rows || t.shape()[1] <= 0)
    MHA_THROW(shape_error, "[mha.shape] state_dict " + quoted(key) + ": expected shape [" + std::to_string(rows) +
                               ", *] with * > 0, got " + shape_string(t.shape()));
  return t.shape()[1];
}

}  // namespace detail

/// Builds a `MultiHeadAttention` from the state_dict of a `torch.nn.MultiheadAttention` held in
/// `file` under `prefix` (a missing trailing dot is added). embed_dim comes from
/// `out_proj.weight`, kdim / vdim from `k_proj_weight` / `v_proj_weight` (E with
/// `in_proj_weight`), bias from the presence of `in_proj_bias` and `out_proj.bias`, add_bias_kv
/// from `bias_k` / `bias_v`. Tensors of any float dtype are converted to Scalar; other keys are
/// ignored. A missing, contradictory or misshapen key throws `mha::format_error` or
/// `mha::shape_error` naming the key and the expected and given shapes; a num_heads that does
/// not divide embed_dim throws `mha::shape_error`.
template <class Scalar>
MultiHeadAttention<Scalar> load_multi_head_attention(const SafetensorsFile& file, Index num_heads,
                                                     const std::string& prefix = "", bool add_zero_attn = false) {
  using detail::quoted;
  const std::string p = detail::with_dot(prefix);
  auto key = [&p](const char* name) { return p + name; };
  auto has = [&](const char* name) { return file.contains(key(name)); };

  // embed_dim
  const Tensor* out_w = file.find(key("out_proj.weight"));
  if (!out_w) MHA_THROW(format_error, "[mha.format] state_dict: missing " + quoted(key("out_proj.weight")));
  if (out_w->rank() != 2 || out_w->shape()[0] != out_w->shape()[1] || out_w->shape()[0] <= 0)
    MHA_THROW(shape_error, "[mha.shape] state_dict " + quoted(key("out_proj.weight")) +
                               ": expected shape [E, E] with E > 0, got " + detail::shape_string(out_w->shape()));
  const std::int64_t E = out_w->shape()[0];

  // Packed or separate in-projection weights: exactly one of the two layouts.
  const bool packed = has("in_proj_weight");
  const char* separate[] = {"q_proj_weight", "k_proj_weight", "v_proj_weight"};
  for (const char* name : separate) {
    if (packed && has(name))
      MHA_THROW(format_error, "[mha.format] state_dict: both " + quoted(key("in_proj_weight")) + " and " +
                                  quoted(key(name)) + " are present; expected one layout");
    if (!packed && !has(name))
      MHA_THROW(format_error, "[mha.format] state_dict: missing " + quoted(key(name)) + " (and no " +
                                  quoted(key("in_proj_weight")) + ")");
  }
  const std::int64_t kdim = packed ? E : detail::columns_of(file, key("k_proj_weight"), E);
  const std::int64_t vdim = packed ? E : detail::columns_of(file, key("v_proj_weight"), E);

  // Biases: in_proj_bias and out_proj.bias come together (nn.MultiheadAttention's `bias`), as do
  // bias_k and bias_v (`add_bias_kv`).
  const bool bias = has("in_proj_bias");
  if (bias != has("out_proj.bias"))
    MHA_THROW(format_error, "[mha.format] state_dict: " + quoted(key(bias ? "in_proj_bias" : "out_proj.bias")) +
                                " is present but " + quoted(key(bias ? "out_proj.bias" : "in_proj_bias")) +
                                " is missing");
  const bool bias_kv = has("bias_k");
  if (bias_kv != has("bias_v"))
    MHA_THROW(format_error, "[mha.format] state_dict: " + quoted(key(bias_kv ? "bias_k" : "bias_v")) +
                                " is present but " + quoted(key(bias_kv ? "bias_v" : "bias_k")) + " is missing");

  MultiHeadAttentionOptions options;
  options.embed_dim = E;
  options.num_heads = num_heads;
  options.kdim = kdim;
  options.vdim = vdim;
  options.bias = bias;
  options.add_bias_kv = bias_kv;
  options.add_zero_attn = add_zero_attn;
  MultiHeadAttention<Scalar> module(options);

  InProjection<Scalar>& in = module.in_proj();
  if (packed) {
    in.set_in_proj_weight(detail::parameter<Scalar>(file, key("in_proj_weight"), {3 * E, E}));
  } else {
    in.set_q_weight(detail::parameter<Scalar>(file, key("q_proj_weight"), {E, E}));
    in.set_k_weight(detail::parameter<Scalar>(file, key("k_proj_weight"), {E, kdim}));
    in.set_v_weight(detail::parameter<Scalar>(file, key("v_proj_weight"), {E, vdim}));
  }
  module.out_proj().set_weight(detail::parameter<Scalar>(file, key("out_proj.weight"), {E, E}));
  if (bias) {
    in.set_in_proj_bias(detail::parameter<Scalar>(file, key("in_proj_bias"), {3 * E}));
    module.out_proj().set_bias(detail::parameter<Scalar>(file, key("out_proj.bias"), {E}));
  }
  if (bias_kv) {
    module.set_bias_k(detail::parameter<Scalar>(file, key("bias_k"), {1, 1, E}));
    module.set_bias_v(detail::parameter<Scalar>(file, key("bias_v"), {1, 1, E}));
  }
  return module;
}

/// Reads `path` and loads the state_dict in it (see above).
template <class Scalar>
MultiHeadAttention<Scalar> load_multi_head_attention(const std::filesystem::path& path, Index num_heads,
                                                     const std::string& prefix = "", bool add_zero_attn = false) {
  return load_multi_head_attention<Scalar>(read_safetensors(path), num_heads, prefix, add_zero_attn);
}

/// Adds the state_dict of `module` to `file` under `prefix` (a missing trailing dot is added),
/// with PyTorch's keys and shapes (table above), in the module's precision (F32 or F64), so that
/// `torch.nn.MultiheadAttention.load_state_dict` accepts it. Replaces tensors of the same names.
template <class Scalar>
void save_multi_head_attention(const MultiHeadAttention<Scalar>& module, SafetensorsFile& file,
                               const std::string& prefix = "") {
  const std::string p = detail::with_dot(prefix);
  const std::int64_t E = module.embed_dim();
  const InProjection<Scalar>& in = module.in_proj();
  if (in.packed()) {
    file.insert(p + "in_proj_weight", Tensor::from_matrix(in.in_proj_weight()));
  } else {
    file.insert(p + "q_proj_weight", Tensor::from_matrix(in.q_weight()));
    file.insert(p + "k_proj_weight", Tensor::from_matrix(in.k_weight()));
    file.insert(p + "v_proj_weight", Tensor::from_matrix(in.v_weight()));
  }
  if (in.has_bias()) file.insert(p + "in_proj_bias", Tensor::from_matrix(in.in_proj_bias(), {3 * E}));
  file.insert(p + "out_proj.weight", Tensor::from_matrix(module.out_proj().weight()));
  if (module.out_proj().has_bias()) file.insert(p + "out_proj.bias", Tensor::from_matrix(module.out_proj().bias(), {E}));
  if (module.options().add_bias_kv) {
    file.insert(p + "bias_k", Tensor::from_matrix(module.bias_k(), {1, 1, E}));
    file.insert(p + "bias_v", Tensor::from_matrix(module.bias_v(), {1, 1, E}));
  }
}

/// Writes the state_dict of `module` to a new safetensors file at `path`.
template <class Scalar>
void save_multi_head_attention(const MultiHeadAttention<Scalar>& module, const std::filesystem::path& path,
                               const std::string& prefix = "") {
  SafetensorsFile file;
  save_multi_head_attention(module, file, prefix);
  write_safetensors(path, file);
}

}  // namespace io
}  // namespace mha
