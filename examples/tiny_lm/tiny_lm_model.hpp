#pragma once
// The tiny_lm decoder of examples/tiny_lm in C++: Hugging Face's Llama at a small size, with mha's
// GroupedQueryAttention for the attention and plain Eigen for the rest. The conventions (weight
// layout, RMSNorm, RoPE tables, GQA head mapping, sliding window) are those written at the top of
// examples/tiny_lm/model.py, which trained the weights:
//
//     x = embed_tokens[ids]                                       // [T, E]
//     for each layer i:
//         x = x + o_proj(attention(input_layernorm(x)))           // GQA, RoPE, causal (+ window)
//         x = x + down_proj(silu(gate_proj(n)) * up_proj(n))      // n = post_attention_layernorm(x)
//     logits = norm(x) embed_tokens^T                             // tied LM head, [T, V]
//
// Shapes: T tokens of a call, E = hidden_size, V = vocab_size (256 bytes), I = intermediate_size,
// H / Hkv query / key-value heads of head_dim d. Linear weights are `[out, in]` (y = x W^T).
//
// Two ways to run it:
// - Session: generation with a KV cache per layer (the windowed layer's cache is a ring, from
//   GroupedQueryAttention::make_cache); feed() the prompt once (prefill), then one token per step;
// - Model::forward_full(): the whole sequence at once, without a cache (full recomputation), which
//   can also return every head's attention weights.
//
// Errors (a missing or malformed file, a missing tensor, a wrong shape, a bad config) throw
// std::runtime_error (mha::io's own exceptions derive from it) with a message starting "tiny_lm: ".

#include <mha/io.hpp>
#include <mha/mha.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace tiny_lm {

using mha::Index;
using Matrix = mha::Matrix<float>;
using RowVector = mha::RowVector<float>;

/// The hyper-parameters, read from the weights file's `__metadata__["config"]` (model.py's Config).
struct Config {
  Index vocab_size = 0;               // V
  Index hidden_size = 0;              // E
  Index num_hidden_layers = 0;
  Index num_attention_heads = 0;      // H
  Index num_key_value_heads = 0;      // Hkv
  Index head_dim = 0;                 // d
  Index intermediate_size = 0;        // I
  Index max_position_embeddings = 0;  // training context
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  std::vector<Index> sliding_window;  // per layer: 0 = full causal, W > 0 = window of W keys

  static Config from_json(const std::string& text) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(std::string("tiny_lm: the metadata \"config\" is not valid JSON: ") + e.what());
    }
    Config c;
    auto get = [&](const char* key, auto& out) {
      if (!j.is_object() || !j.contains(key))
        throw std::runtime_error(std::string("tiny_lm: the metadata \"config\" has no \"") + key + "\"");
      try {
        j.at(key).get_to(out);
      } catch (const nlohmann::json::exception&) {
        throw std::runtime_error(std::string("tiny_lm: config \"") + key + "\" has the wrong type: " +
                                 j.at(key).dump());
      }
    };
    get("vocab_size", c.vocab_size);
    get("hidden_size", c.hidden_size);
    get("num_hidden_layers", c.num_hidden_layers);
    get("num_attention_heads", c.num_attention_heads);
    get("num_key_value_heads", c.num_key_value_heads);
    get("head_dim", c.head_dim);
    get("intermediate_size", c.intermediate_size);
    get("max_position_embeddings", c.max_position_embeddings);
    get("rope_theta", c.rope_theta);
    get("rms_norm_eps", c.rms_norm_eps);
    get("sliding_window", c.sliding_window);
    bool tied = false;
    get("tie_word_embeddings", tied);
    if (!tied) throw std::runtime_error("tiny_lm: config has tie_word_embeddings false; this model needs a tied LM head");
    if (c.vocab_size != 256)
      throw std::runtime_error("tiny_lm: expected vocab_size 256 (byte tokens), got " + std::to_string(c.vocab_size));
    if (c.num_hidden_layers <= 0 || c.hidden_size <= 0 || c.intermediate_size <= 0 || c.head_dim <= 0 ||
        c.num_attention_heads <= 0 || c.num_key_value_heads <= 0)
      throw std::runtime_error("tiny_lm: config sizes must be positive: " + text);
    if (static_cast<Index>(c.sliding_window.size()) != c.num_hidden_layers)
      throw std::runtime_error("tiny_lm: config sliding_window has " + std::to_string(c.sliding_window.size()) +
                               " entries, expected one per layer (" + std::to_string(c.num_hidden_layers) + ")");
    return c;
  }
};

/// y = RMSNorm(x) (HF LlamaRMSNorm): each row `x * rsqrt(mean(x^2) + eps)`, times `weight` [E].
/// x, y: [T, E] (y may alias x).
inline void rms_norm(const Matrix& x, const RowVector& weight, double eps, Matrix& y) {
  y.resize(x.rows(), x.cols());
  for (Index r = 0; r < x.rows(); ++r) {
    const float inv_rms = 1.0f / std::sqrt(x.row(r).squaredNorm() / float(x.cols()) + float(eps));
    y.row(r) = (x.row(r) * inv_rms).cwiseProduct(weight);
  }
}

/// The weights of one decoder layer besides its attention (which holds q/k/v/o_proj itself).
struct Layer {
  RowVector input_layernorm;           // [E]
  RowVector post_attention_layernorm;  // [E]
  Matrix gate_proj;                    // [I, E]
  Matrix up_proj;                      // [I, E]
  Matrix down_proj;                    // [E, I]
  mha::GroupedQueryAttention<float> attention;
};

/// Scratch buffers of one forward call, reused from call to call.
struct Scratch {
  Matrix x;     // [T, E] the residual stream
  Matrix n;     // [T, E] normalised x
  Matrix a;     // [T, E] attention output
  Matrix gate;  // [T, I]
  Matrix up;    // [T, I]
  Matrix mlp;   // [T, E]
};

class Session;

/// The model: configuration and weights. Immutable once loaded; Sessions hold the caches.
class Model {
 public:
  /// Loads `path` (a safetensors file written by train.py). Throws std::runtime_error
  /// ("tiny_lm: ...") for a missing tensor, a wrong shape or dtype, or a bad config.
  static Model load(const std::string& path) {
    const mha::io::SafetensorsFile file = mha::io::read_safetensors(path);
    const auto it = file.metadata().find("config");
    if (it == file.metadata().end())
      throw std::runtime_error("tiny_lm: " + path + " has no \"config\" in its __metadata__ (write it with train.py)");
    Model m(Config::from_json(it->second));
    const Config& c = m.m_config;
    const Index E = c.hidden_size, I = c.intermediate_size, d = c.head_dim;
    const Index H = c.num_attention_heads, Hkv = c.num_key_value_heads;
    m.m_embed = tensor(file, path, "model.embed_tokens.weight", {c.vocab_size, E});
    m.m_norm = tensor(file, path, "model.norm.weight", {E});
    for (Index i = 0; i < c.num_hidden_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      mha::GroupedQueryAttentionOptions o(E, H, Hkv);
      o.head_dim = d;
      mha::RopeOptions rope;  // rotate-half over all d dims of a head, as model.py
      rope.head_dim = d;
      rope.theta = c.rope_theta;
      rope.max_positions = c.max_position_embeddings;
      o.rope = rope;
      o.sliding_window = c.sliding_window[static_cast<std::size_t>(i)];
      Layer layer{tensor(file, path, p + "input_layernorm.weight", {E}),
                  tensor(file, path, p + "post_attention_layernorm.weight", {E}),
                  tensor(file, path, p + "mlp.gate_proj.weight", {I, E}),
                  tensor(file, path, p + "mlp.up_proj.weight", {I, E}),
                  tensor(file, path, p + "mlp.down_proj.weight", {E, I}),
                  mha::GroupedQueryAttention<float>(o)};
      layer.attention.q_proj().set_weight(tensor(file, path, p + "self_attn.q_proj.weight", {H * d, E}));
      layer.attention.k_proj().set_weight(tensor(file, path, p + "self_attn.k_proj.weight", {Hkv * d, E}));
      layer.attention.v_proj().set_weight(tensor(file, path, p + "self_attn.v_proj.weight", {Hkv * d, E}));
      layer.attention.o_proj().set_weight(tensor(file, path, p + "self_attn.o_proj.weight", {E, H * d}));
      m.m_layers.push_back(std::move(layer));
    }
    // Everything in the file must have been used: an extra tensor means another architecture.
    const std::size_t expected = 2 + 9 * static_cast<std::size_t>(c.num_hidden_layers);
    if (file.size() != expected)
      throw std::runtime_error("tiny_lm: " + path + " holds " + std::to_string(file.size()) + " tensors, expected " +
                               std::to_string(expected) + " (an untied lm_head or biases are not supported)");
    return m;
  }

  const Config& config() const { return m_config; }
  const std::vector<Layer>& layers() const { return m_layers; }

  /// Full recomputation, no cache: `tokens` [T] at positions 0..T-1 -> logits [T, V]. With
  /// `attention` non-null it receives, per layer, every head's attention weights [H * T, T] (rows
  /// of head h start at h * T; mha's reference kernel computes them).
  Matrix forward_full(const std::vector<int>& tokens, int threads = 0,
                      std::vector<Matrix>* attention = nullptr) const {
    Scratch s;
    embed(tokens, s.x);
    if (attention) attention->assign(m_layers.size(), Matrix());
    for (std::size_t i = 0; i < m_layers.size(); ++i) {
      const Layer& l = m_layers[i];
      rms_norm(s.x, l.input_layernorm, m_config.rms_norm_eps, s.n);
      s.a = l.attention.forward(s.n, 1, threads, attention ? &(*attention)[i] : nullptr);
      s.x += s.a;
      mlp_block(l, s);
    }
    return lm_head(s);
  }

 private:
  friend class Session;
  explicit Model(Config c) : m_config(std::move(c)) {}

  // The tensor `name` of `file` as a float matrix, checked to have `shape` exactly.
  static Matrix tensor(const mha::io::SafetensorsFile& file, const std::string& path, const std::string& name,
                       const std::vector<std::int64_t>& shape) {
    const mha::io::Tensor* t = file.find(name);
    if (!t) throw std::runtime_error("tiny_lm: " + path + " has no tensor \"" + name + "\"");
    if (t->shape() != shape)
      throw std::runtime_error("tiny_lm: tensor \"" + name + "\" has shape " + mha::io::detail::shape_string(t->shape()) +
                               ", expected " + mha::io::detail::shape_string(shape));
    if (!mha::io::is_float_dtype(t->dtype()))
      throw std::runtime_error("tiny_lm: tensor \"" + name + "\" is " + mha::io::dtype_name(t->dtype()) +
                               ", expected a float dtype (F32 or BF16)");
    return t->to_matrix<float>();
  }

  // x [T, E] = embed_tokens[tokens].
  void embed(const std::vector<int>& tokens, Matrix& x) const {
    x.resize(static_cast<Index>(tokens.size()), m_config.hidden_size);
    for (std::size_t t = 0; t < tokens.size(); ++t) {
      if (tokens[t] < 0 || tokens[t] >= m_config.vocab_size)
        throw std::runtime_error("tiny_lm: token " + std::to_string(tokens[t]) + " is outside the vocabulary [0, " +
                                 std::to_string(m_config.vocab_size) + ")");
      x.row(static_cast<Index>(t)) = m_embed.row(tokens[t]);
    }
  }

  // s.x += down_proj(silu(gate_proj(n)) * up_proj(n)), n = post_attention_layernorm(s.x).
  void mlp_block(const Layer& l, Scratch& s) const {
    rms_norm(s.x, l.post_attention_layernorm, m_config.rms_norm_eps, s.n);
    s.gate.noalias() = s.n * l.gate_proj.transpose();  // [T, I]
    s.up.noalias() = s.n * l.up_proj.transpose();      // [T, I]
    s.gate = s.gate.array() / (1.0f + (-s.gate.array()).exp()) * s.up.array();  // silu(g) * u
    s.mlp.noalias() = s.gate * l.down_proj.transpose();  // [T, E]
    s.x += s.mlp;
  }

  // logits [T, V] = norm(s.x) embed_tokens^T.
  Matrix lm_head(Scratch& s) const {
    rms_norm(s.x, m_norm, m_config.rms_norm_eps, s.n);
    Matrix logits(s.n.rows(), m_config.vocab_size);
    logits.noalias() = s.n * m_embed.transpose();
    return logits;
  }

  Config m_config;
  Matrix m_embed;     // [V, E], also the LM head
  RowVector m_norm;   // [E]
  std::vector<Layer> m_layers;
};

/// One sequence being generated: a KV cache per layer and the scratch buffers. feed() appends
/// tokens (the whole prompt at once, then one per step) and returns the logits of the last one.
class Session {
 public:
  /// Room for `capacity` tokens in all (prompt + generated) in the full-attention layers; the
  /// windowed layers keep a ring of W - 1 + max_chunk slots whatever the capacity.
  Session(const Model& model, Index capacity) : m_model(&model) {
    for (const Layer& l : model.m_layers) {
      m_caches.push_back(l.attention.make_cache<float>(1, capacity, /*max_chunk=*/64));
      m_workspaces.emplace_back();
    }
  }

  /// Tokens fed so far (the position of the next one).
  Index position() const { return m_caches.front().position(); }

  /// Runs `tokens` [T] at positions position() .. position() + T - 1 against the caches and
  /// returns the logits [V] of the last one. Throws mha::capacity_error past the capacity.
  RowVector feed(const std::vector<int>& tokens, int threads = 0) {
    if (tokens.empty()) throw std::runtime_error("tiny_lm: feed() needs at least one token");
    const Model& m = *m_model;
    Scratch& s = m_scratch;
    m.embed(tokens, s.x);
    s.a.resize(s.x.rows(), s.x.cols());
    for (std::size_t i = 0; i < m.m_layers.size(); ++i) {
      const Layer& l = m.m_layers[i];
      rms_norm(s.x, l.input_layernorm, m.m_config.rms_norm_eps, s.n);
      l.attention.forward(s.n, m_caches[i], m_workspaces[i], s.a, threads);
      s.x += s.a;
      m.mlp_block(l, s);
    }
    // Only the last row's logits are needed: run the head on it alone.
    s.x = s.x.bottomRows(1).eval();
    return m.lm_head(s);
  }

 private:
  const Model* m_model;
  std::vector<mha::KVCache<float>> m_caches;                // one per layer
  std::vector<mha::DecoderWorkspace<float>> m_workspaces;  // one per layer
  Scratch m_scratch;
};

/// The greedy choice: the index of the largest logit, the lowest one on a tie (as torch.argmax).
inline int argmax(const RowVector& logits) {
  Index best = 0;
  for (Index i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int>(best);
}

/// How the next token is picked: greedy when temperature <= 0, otherwise sampled from
/// softmax(logits / temperature) over the top_k largest logits (all when top_k is 0).
struct Sampler {
  double temperature = 0.0;
  int top_k = 0;
  std::mt19937_64 rng{0};

  int pick(const RowVector& logits) {
    if (temperature <= 0) return argmax(logits);
    std::vector<double> p(static_cast<std::size_t>(logits.size()));
    double kth = -INFINITY;  // logits below the k-th largest are dropped
    if (top_k > 0 && top_k < logits.size()) {
      std::vector<float> sorted(logits.data(), logits.data() + logits.size());
      std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<float>());
      kth = sorted[static_cast<std::size_t>(top_k - 1)];
    }
    const double top = logits.maxCoeff();
    for (Index i = 0; i < logits.size(); ++i)
      p[static_cast<std::size_t>(i)] = logits[i] < kth ? 0.0 : std::exp((logits[i] - top) / temperature);
    std::discrete_distribution<int> dist(p.begin(), p.end());
    return dist(rng);
  }
};

/// The bytes of `text` as tokens.
inline std::vector<int> encode(const std::string& text) {
  std::vector<int> tokens;
  for (unsigned char c : text) tokens.push_back(c);
  return tokens;
}

}  // namespace tiny_lm
