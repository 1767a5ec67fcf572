#pragma once
/// \file grouped_query_attention.hpp
/// `GroupedQueryAttention`, the self-attention of a modern decoder (Llama, Mistral, Qwen, Gemma,
/// BLOOM/MPT): grouped-query heads, RoPE, ALiBi, sliding window, softcap, QK-norm, and a KV cache
/// for token-by-token generation. Thin: options, weights, and a call into the attention core
/// (detail/attention_core.hpp) that MultiHeadAttention runs on too.
///
/// Shapes (E = embed_dim, H = num_heads, Hkv = num_kv_heads, d = head_dim, N = batch, T = tokens
/// of this call, P0 = tokens already in the cache):
///
/// | tensor            | shape                      | Hugging Face name                 |
/// |-------------------|----------------------------|-----------------------------------|
/// | x / output        | `[N * T, E]`               | hidden_states / attn_output       |
/// | W_Q, b_Q          | `[H d, E]`, `[H d]`        | `q_proj.weight`, `q_proj.bias`    |
/// | W_K, b_K          | `[Hkv d, E]`, `[Hkv d]`    | `k_proj.weight`, `k_proj.bias`    |
/// | W_V, b_V          | `[Hkv d, E]`, `[Hkv d]`    | `v_proj.weight`, `v_proj.bias`    |
/// | W_O, b_O          | `[E, H d]`, `[E]`          | `o_proj.weight`, `o_proj.bias`    |
/// | QK-norm weights   | `[d]` each                 | `q_norm.weight`, `k_norm.weight`  |
///
/// Semantics (positions are absolute: the T tokens of a call after P0 cached ones are at
/// P0 .. P0 + T - 1):
/// 1. `q = x W_Q^T + b_Q`, `k`, `v` likewise (PyTorch layout `[out, in]`);
/// 2. QK-norm (Qwen3's `Qwen3RMSNorm`): each head x of q and k becomes
///    `weight * x / sqrt(mean(x^2) + eps)` (RMSNorm), before RoPE. Gemma 3 scales by
///    `1 + weight` instead and stores the offset weight: give it `weight + 1`;
/// 3. RoPE rotates q and k at their positions (rotary_embedding.hpp); k is rotated before it is
///    cached, v never;
/// 4. k and v are appended to the cache; query head h reads kv head `h / (H / Hkv)`;
/// 5. score `s = (scale q) . k` (scale defaults to `1 / sqrt(d)`), softcap `c tanh(s / c)`
///    (Gemma 2), ALiBi `- m_h (pos_q - pos_k)` (Press et al., 2022), causal `pos_k <= pos_q`,
///    window W `pos_q - W < pos_k <= pos_q` (Mistral), softmax (README "Non-finite values"),
///    `P V`;
/// 6. `output = concat_h(head_h) W_O^T + b_O`.

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>

#include "alibi.hpp"
#include "detail/attention_core.hpp"
#include "detail/linear_kernel.hpp"
#include "detail/random.hpp"
#include "kv_cache.hpp"
#include "linear.hpp"
#include "parallel.hpp"
#include "rotary_embedding.hpp"
#include "types.hpp"

namespace mha {

/// The hyper-parameters of a GroupedQueryAttention layer, named as in Hugging Face configs.
struct GroupedQueryAttentionOptions {
  Index embed_dim = 0;      ///< E (`hidden_size`)
  Index num_heads = 1;      ///< H (`num_attention_heads`)
  Index num_kv_heads = 0;   ///< Hkv (`num_key_value_heads`); 0 means H; H % Hkv == 0 (1 is MQA)
  Index head_dim = 0;       ///< d; 0 means E / H
  bool qkv_bias = false;    ///< biases on q_proj, k_proj, v_proj (Qwen2)
  bool out_bias = false;    ///< bias on o_proj
  std::optional<RopeOptions> rope;  ///< rotary embedding (its head_dim 0 means d), or none
  bool alibi = false;       ///< ALiBi with the standard slopes (set_alibi_slopes overrides them)
  Index sliding_window = 0; ///< W > 0: a query at P sees keys P - W < K <= P; 0: no window
  double softcap = 0;       ///< c > 0: scores become c tanh(s / c) (Gemma 2); 0: off
  std::optional<double> scale;  ///< score scale; default 1 / sqrt(d)
  bool qk_norm = false;     ///< per-head RMSNorm of q and k
  double qk_norm_eps = 1e-6;  ///< epsilon of the QK-norm RMSNorm (> 0)
  bool causal = true;       ///< false for an encoder: whole sequences only, no cache, no window

  GroupedQueryAttentionOptions() = default;
  /// E, H and Hkv (0: H); everything else at its default.
  GroupedQueryAttentionOptions(Index embed_dim_, Index num_heads_, Index num_kv_heads_ = 0)
      : embed_dim(embed_dim_), num_heads(num_heads_), num_kv_heads(num_kv_heads_) {}
};

/// Scratch memory of GroupedQueryAttention forward passes, reused across calls and across layers
/// of any shapes (it grows to the largest it has served): a repeated shape allocates nothing.
/// Not shareable between concurrent calls.
template <class Scalar>
class DecoderWorkspace {
 public:
  DecoderWorkspace() = default;

 private:
  template <class>
  friend class GroupedQueryAttention;
  // Grow-only (detail::grow): rows [0, N * T) of each hold the current call, so that alternating
  // prefill chunks and decode steps allocate nothing.
  // A call uses the top-left [N * T, width] corner: the columns too only grow, so one workspace
  // serves layers of different widths.
  Matrix<Scalar> m_q;    // [>= N * T, >= H d]   rotated queries
  Matrix<Scalar> m_k;    // [>= N * T, >= Hkv d] new keys (rotated)
  Matrix<Scalar> m_v;    // [>= N * T, >= Hkv d] new values
  Matrix<Scalar> m_ctx;  // [>= N * T, >= H d]   heads' outputs, concatenated
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> m_positions;  // [>= N * T] positions of this call
  detail::ScratchPool<Scalar> m_threads;
};

/// Decoder self-attention with grouped-query heads and a KV cache; see the file comment for the
/// shapes and the formulas. Weights follow Hugging Face / PyTorch (`[out, in]`, `y = x W^T + b`).
template <class Scalar_>
class GroupedQueryAttention {
 public:
  using Scalar = Scalar_;  ///< float or double: weights, activations and accumulation
  static_assert(std::is_floating_point<Scalar>::value, "Scalar must be float or double");

  /// A layer with weights drawn uniformly in `+-1/sqrt(fan_in)` (nn.Linear's default bound) from a
  /// deterministic `seed`, zero biases and unit QK-norm weights. Throws argument_error /
  /// shape_error for inconsistent options (message names the values).
  explicit GroupedQueryAttention(const GroupedQueryAttentionOptions& options, std::uint64_t seed = 0)
      : m_options(validated(options)),
        m_q_proj(m_options.embed_dim, num_heads() * head_dim(), m_options.qkv_bias),
        m_k_proj(m_options.embed_dim, num_kv_heads() * head_dim(), m_options.qkv_bias),
        m_v_proj(m_options.embed_dim, num_kv_heads() * head_dim(), m_options.qkv_bias),
        m_o_proj(num_heads() * head_dim(), m_options.embed_dim, m_options.out_bias) {
    if (m_options.rope) m_rope = RotaryEmbedding<Scalar>(*m_options.rope);
    if (m_options.alibi) m_alibi = mha::alibi_slopes<Scalar>(num_heads());
    if (m_options.qk_norm) {
      m_q_norm = RowVector<Scalar>::Ones(head_dim());
      m_k_norm = RowVector<Scalar>::Ones(head_dim());
    }
    detail::SplitMix64 rng(seed);
    for (Linear<Scalar>* l : {&m_q_proj, &m_k_proj, &m_v_proj, &m_o_proj}) {
      Matrix<Scalar> w(l->out_features(), l->in_features());
      const double bound = 1.0 / std::sqrt(double(l->in_features()));
      for (Index i = 0; i < w.size(); ++i) w.data()[i] = static_cast<Scalar>(rng.uniform(bound));
      l->set_weight(w);
    }
  }

  ///@{
  /// The validated options (num_kv_heads and head_dim filled in) and the sizes E, H, Hkv, d.
  const GroupedQueryAttentionOptions& options() const { return m_options; }
  Index embed_dim() const { return m_options.embed_dim; }
  Index num_heads() const { return m_options.num_heads; }
  Index num_kv_heads() const { return m_options.num_kv_heads; }
  Index head_dim() const { return m_options.head_dim; }
  ///@}
  /// The score scale: options.scale, or 1 / sqrt(d).
  Scalar scale() const { return static_cast<Scalar>(m_options.scale ? *m_options.scale : 1.0 / std::sqrt(double(head_dim()))); }

  ///@{
  /// The projections, PyTorch layout: q_proj `[H d, E]`, k_proj and v_proj `[Hkv d, E]`,
  /// o_proj `[E, H d]` (set their weights and biases through Linear's setters).
  Linear<Scalar>& q_proj() { return m_q_proj; }
  Linear<Scalar>& k_proj() { return m_k_proj; }
  Linear<Scalar>& v_proj() { return m_v_proj; }
  Linear<Scalar>& o_proj() { return m_o_proj; }
  const Linear<Scalar>& q_proj() const { return m_q_proj; }
  const Linear<Scalar>& k_proj() const { return m_k_proj; }
  const Linear<Scalar>& v_proj() const { return m_v_proj; }
  const Linear<Scalar>& o_proj() const { return m_o_proj; }
  ///@}
  /// The rotary embedding; empty() without rope.
  const RotaryEmbedding<Scalar>& rope() const { return m_rope; }

  ///@{
  /// QK-norm weights `[d]` each; empty unless qk_norm. The setters throw argument_error on a
  /// layer without qk_norm and shape_error for another size. A Gemma 3 checkpoint's
  /// `q_norm.weight` / `k_norm.weight` hold `scale - 1` (its RMSNorm multiplies by `1 + w`): set
  /// them plus one.
  const RowVector<Scalar>& q_norm_weight() const { return m_q_norm; }
  const RowVector<Scalar>& k_norm_weight() const { return m_k_norm; }
  void set_q_norm_weight(const ConstRowVectorRef<Scalar>& w) { set_norm(m_q_norm, w, "q_norm.weight"); }
  void set_k_norm_weight(const ConstRowVectorRef<Scalar>& w) { set_norm(m_k_norm, w, "k_norm.weight"); }
  ///@}

  ///@{
  /// ALiBi slopes `[H]`; empty unless alibi. set_alibi_slopes replaces the standard ones
  /// (alibi.hpp); it throws argument_error on a layer without alibi, shape_error for another size.
  const RowVector<Scalar>& alibi_slopes() const { return m_alibi; }
  void set_alibi_slopes(const ConstRowVectorRef<Scalar>& slopes) {
    if (!m_options.alibi)
      MHA_THROW(argument_error, "[mha.argument] GroupedQueryAttention: alibi slopes set on a layer built without alibi");
    detail::check_shape("alibi_slopes [H]", 1, num_heads(), 1, slopes.size());
    m_alibi = slopes;
  }
  ///@}

  /// A cache for this layer: `batch` sequences of up to `capacity` tokens. A windowed layer gets a
  /// ring of `W - 1 + max_chunk` slots instead (it never needs older keys), whatever `capacity`
  /// says; `max_chunk` is then the most tokens one forward call may bring at once (longer calls
  /// are split internally).
  template <class Storage = Scalar>
  KVCache<Storage> make_cache(Index batch, Index capacity, Index max_chunk = 256) const {
    if (m_options.sliding_window > 0) {
      if (max_chunk <= 0)
        MHA_THROW(argument_error, "[mha.argument] make_cache: max_chunk must be > 0, got " + std::to_string(max_chunk));
      if (max_chunk > std::numeric_limits<Index>::max() - (m_options.sliding_window - 1))
        MHA_THROW(argument_error, "[mha.argument] make_cache: sliding_window - 1 + max_chunk = " +
                                      std::to_string(m_options.sliding_window) + " - 1 + " + std::to_string(max_chunk) +
                                      " slots overflow a 64-bit index");
      return KVCache<Storage>(batch, num_kv_heads(), m_options.sliding_window - 1 + max_chunk, head_dim(), head_dim(),
                              KVCacheMode::ring);
    }
    return KVCache<Storage>(batch, num_kv_heads(), capacity, head_dim(), head_dim(), KVCacheMode::linear);
  }

  /// Prefill or decode: `x [N * T, E]` (N = cache.batch()) are the next T tokens of every
  /// sequence; their keys and values are appended to `cache`, and the output `[N * T, E]` is
  /// returned (T = 0: an empty output, the cache unchanged). Throws shape_error for a wrong x or
  /// cache, capacity_error when the cache is full.
  template <class Storage>
  Matrix<Scalar> forward(const ConstMatrixRef<Scalar>& x, KVCache<Storage>& cache, int threads = 0) const {
    DecoderWorkspace<Scalar> workspace;
    Matrix<Scalar> out(x.rows(), embed_dim());
    forward(x, cache, workspace, out, threads);
    return out;
  }

  /// The allocation-free form: writes `output [N * T, E]`, reusing `workspace`.
  template <class Storage>
  void forward(const ConstMatrixRef<Scalar>& x, KVCache<Storage>& cache, DecoderWorkspace<Scalar>& workspace,
               MatrixRef<Scalar> output, int threads = 0) const {
    check_cache(cache);
    const Index N = cache.batch();
    if (x.rows() % N != 0)
      MHA_THROW(shape_error, "[mha.shape] GroupedQueryAttention: x " + detail::shape_string(x.rows(), x.cols()) +
                                 " does not split into batch " + std::to_string(N));
    detail::check_shape("GroupedQueryAttention x [N * T, E]", -1, embed_dim(), x.rows(), x.cols());
    detail::check_shape("GroupedQueryAttention output", x.rows(), embed_dim(), output.rows(), output.cols());
    if (!m_options.causal)
      MHA_THROW(argument_error, "[mha.argument] GroupedQueryAttention: a non-causal layer has no KV cache; call "
                                "forward(x, batch)");
    if (x.rows() == 0) return;  // T = 0: nothing to append or attend, as KVCache::append
    const Index T = x.rows() / N;
    // A ring keeps W - 1 + chunk keys: longer calls go through in chunks it can hold.
    const Index chunk = cache.mode() == KVCacheMode::ring ? cache.capacity() - m_options.sliding_window + 1 : T;
    for (Index t0 = 0; t0 < T; t0 += chunk) {
      const Index t = std::min(chunk, T - t0);
      forward_chunk(x, N, T, t0, t, cache, workspace, output, num_threads(threads));
    }
  }

  /// Without a cache (an encoder, or a whole sequence at once): `x [N * T, E]`, N sequences of T
  /// tokens at positions 0 .. T - 1. When `weights` is not null it receives each head's attention
  /// weights `[N * H * T, T]` (rows of batch entry n, head h start at `(n * H + h) * T`), computed
  /// by the reference kernel (an `[T, T]` buffer per head). T = 0 gives an empty output.
  Matrix<Scalar> forward(const ConstMatrixRef<Scalar>& x, Index batch = 1, int threads = 0,
                         Matrix<Scalar>* weights = nullptr) const {
    if (batch <= 0 || x.rows() % batch != 0)
      MHA_THROW(shape_error, "[mha.shape] GroupedQueryAttention: x " + detail::shape_string(x.rows(), x.cols()) +
                                 " does not split into batch " + std::to_string(batch));
    detail::check_shape("GroupedQueryAttention x [N * T, E]", -1, embed_dim(), x.rows(), x.cols());
    Matrix<Scalar> out(x.rows(), embed_dim());
    if (x.rows() == 0) {  // T = 0
      if (weights) weights->resize(0, 0);
      return out;
    }
    DecoderWorkspace<Scalar> ws;
    const Index T = x.rows() / batch;
    threads = num_threads(threads);
    project(x, 0, ws, threads, batch, T);
    detail::AttentionProblem<Scalar> p = problem(batch, T);
    p.k = head_view<const Scalar>(ws.m_k.data(), T, ws.m_k.cols());
    p.v = head_view<const Scalar>(ws.m_v.data(), T, ws.m_v.cols());
    p.k_len = T;
    p.q_pos0 = 0;
    if (weights) weights->resize(batch * num_heads() * T, T);
    attend_and_project(p, ws, out, threads, weights);
    return out;
  }

 private:
  static GroupedQueryAttentionOptions validated(GroupedQueryAttentionOptions o) {
    auto fail = [](const std::string& what) {
      MHA_THROW(argument_error, "[mha.argument] GroupedQueryAttention: " + what);
    };
    if (o.embed_dim <= 0 || o.num_heads <= 0)
      MHA_THROW(shape_error, "[mha.shape] GroupedQueryAttention: expected positive embed_dim and num_heads, got " +
                                 std::to_string(o.embed_dim) + " and " + std::to_string(o.num_heads));
    if (o.num_kv_heads == 0) o.num_kv_heads = o.num_heads;
    if (o.num_kv_heads < 0 || o.num_heads % o.num_kv_heads != 0)
      MHA_THROW(shape_error, "[mha.shape] GroupedQueryAttention: num_heads " + std::to_string(o.num_heads) +
                                 " is not a multiple of num_kv_heads " + std::to_string(o.num_kv_heads));
    if (o.head_dim == 0) {
      if (o.embed_dim % o.num_heads != 0)
        MHA_THROW(shape_error, "[mha.shape] GroupedQueryAttention: embed_dim " + std::to_string(o.embed_dim) +
                                   " is not divisible by num_heads " + std::to_string(o.num_heads) +
                                   "; give head_dim explicitly");
      o.head_dim = o.embed_dim / o.num_heads;
    }
    if (o.head_dim < 0) fail("head_dim must be > 0, got " + std::to_string(o.head_dim));
    // H d must be an Index (and then an allocation, which throws std::bad_alloc past memory).
    if (o.head_dim > std::numeric_limits<Index>::max() / o.num_heads)
      MHA_THROW(shape_error, "[mha.shape] GroupedQueryAttention: num_heads * head_dim = " + std::to_string(o.num_heads) +
                                 " * " + std::to_string(o.head_dim) + " overflows a 64-bit index");
    if (o.sliding_window < 0) fail("sliding_window must be > 0 (or 0 for none), got " + std::to_string(o.sliding_window));
    if (!(o.softcap >= 0) || !std::isfinite(o.softcap)) fail("softcap must be > 0 (or 0 for none), got " + std::to_string(o.softcap));
    if (o.scale && !(std::isfinite(*o.scale) && *o.scale > 0)) fail("scale must be finite and > 0, got " + std::to_string(*o.scale));
    if (o.qk_norm && !(o.qk_norm_eps > 0)) fail("qk_norm_eps must be > 0, got " + std::to_string(o.qk_norm_eps));
    if (!o.causal && o.sliding_window > 0) fail("a sliding window needs a causal layer");
    if (o.rope) {
      if (o.rope->head_dim == 0) o.rope->head_dim = o.head_dim;
      if (o.rope->head_dim != o.head_dim)
        fail("rope head_dim " + std::to_string(o.rope->head_dim) + " differs from head_dim " + std::to_string(o.head_dim));
    }
    return o;
  }

  void set_norm(RowVector<Scalar>& target, const ConstRowVectorRef<Scalar>& w, const char* name) {
    if (!m_options.qk_norm)
      MHA_THROW(argument_error, std::string("[mha.argument] GroupedQueryAttention: ") + name +
                                    " set on a layer built without qk_norm");
    detail::check_shape(name, 1, head_dim(), 1, w.size());
    target = w;
  }

  template <class Storage>
  void check_cache(const KVCache<Storage>& cache) const {
    if (cache.num_kv_heads() != num_kv_heads() || cache.head_dim() != head_dim() || cache.v_head_dim() != head_dim())
      MHA_THROW(shape_error, "[mha.shape] GroupedQueryAttention: cache [num_kv_heads, head_dim, v_head_dim] = " +
                                 detail::shape_string(cache.num_kv_heads(), cache.head_dim(), cache.v_head_dim()) +
                                 ", layer expects " + detail::shape_string(num_kv_heads(), head_dim(), head_dim()));
    if (m_options.sliding_window > 0 && cache.mode() == KVCacheMode::ring &&
        cache.capacity() < m_options.sliding_window)
      MHA_THROW(shape_error, "[mha.shape] GroupedQueryAttention: a ring cache of " + std::to_string(cache.capacity()) +
                                 " slots cannot hold the window of " + std::to_string(m_options.sliding_window) +
                                 " keys; use make_cache");
    if (m_options.sliding_window <= 0 && cache.mode() == KVCacheMode::ring)
      MHA_THROW(argument_error, "[mha.argument] GroupedQueryAttention: a ring cache needs a sliding-window layer");
  }

  // [N][heads][T][d] view of a row-major [N * T, heads * d] matrix.
  template <class T>
  detail::HeadTensor<T> head_view(T* data, Index tokens, Index row_stride) const {
    return detail::HeadTensor<T>{data, tokens * row_stride, head_dim(), row_stride};
  }

  // The problem with everything but K, V, S and positions filled in; K and V are Storage.
  template <class Storage = Scalar>
  detail::AttentionProblem<Scalar, Storage> problem(Index N, Index T) const {
    detail::AttentionProblem<Scalar, Storage> p;
    p.batch = N;
    p.heads = p.num_heads = num_heads();
    p.num_kv_heads = num_kv_heads();
    p.q_len = T;
    p.head_dim = p.v_dim = head_dim();
    p.scale = scale();
    p.causal = m_options.causal;
    p.window = m_options.sliding_window;
    p.softcap = static_cast<Scalar>(m_options.softcap);
    if (m_options.alibi) p.alibi = m_alibi.data();
    return p;
  }

  // Steps 1-3 for rows [t0, t0 + t) of every sequence of x (T tokens each) at positions from
  // `position`: q, k, v into the workspace, normalised and rotated.
  void project(const ConstMatrixRef<Scalar>& x, Index position, DecoderWorkspace<Scalar>& ws, int threads,
               Index N = 1, Index T = -1, Index t0 = 0, Index t = -1) const {
    if (T < 0) T = x.rows() / N;
    if (t < 0) t = T;
    const Index Hd = num_heads() * head_dim(), Kd = num_kv_heads() * head_dim();
    detail::grow(ws.m_q, N * t, Hd);
    detail::grow(ws.m_k, N * t, Kd);
    detail::grow(ws.m_v, N * t, Kd);
    // Left corners: a workspace shared with a wider layer keeps its larger column count.
    auto q = ws.m_q.topLeftCorner(N * t, Hd);  // [N t, H d]
    auto k = ws.m_k.topLeftCorner(N * t, Kd);  // [N t, Hkv d]
    for (Index n = 0; n < N; ++n) {
      // Row blocks of one sequence: contiguous in x when t == T.
      const auto xn = x.middleRows(n * T + t0, t);
      detail::linear_rows(xn, m_q_proj.weight_panels(), bias_of(m_q_proj), ws.m_q.block(n * t, 0, t, Hd), threads,
                          ws.m_threads);
      detail::linear_rows(xn, m_k_proj.weight_panels(), bias_of(m_k_proj), ws.m_k.block(n * t, 0, t, Kd), threads,
                          ws.m_threads);
      detail::linear_rows(xn, m_v_proj.weight_panels(), bias_of(m_v_proj), ws.m_v.block(n * t, 0, t, Kd), threads,
                          ws.m_threads);
    }
    if (m_options.qk_norm) {
      rms_norm_heads(q, m_q_norm);
      rms_norm_heads(k, m_k_norm);
    }
    if (!m_rope.empty()) {
      if (ws.m_positions.size() < N * t) ws.m_positions.resize(N * t);
      for (Index n = 0; n < N; ++n)
        for (Index i = 0; i < t; ++i) ws.m_positions[n * t + i] = position + i;
      m_rope.apply(q, num_heads(), ws.m_positions.data());
      m_rope.apply(k, num_kv_heads(), ws.m_positions.data());
    }
  }

  template <class Rows>
  void rms_norm_heads(Rows& x, const RowVector<Scalar>& weight) const {
    const Index d = head_dim(), heads = x.cols() / d;
    const Scalar eps = static_cast<Scalar>(m_options.qk_norm_eps);
    for (Index r = 0; r < x.rows(); ++r)
      for (Index h = 0; h < heads; ++h) {
        auto head = x.row(r).segment(h * d, d);
        const Scalar inv_rms = Scalar(1) / std::sqrt(head.squaredNorm() / Scalar(d) + eps);
        head = head.cwiseProduct(weight) * inv_rms;
      }
  }

  template <class Storage>
  void forward_chunk(const ConstMatrixRef<Scalar>& x, Index N, Index T, Index t0, Index t, KVCache<Storage>& cache,
                     DecoderWorkspace<Scalar>& ws, MatrixRef<Scalar> output, int threads) const {
    const Index position = cache.position();
    project(x, position, ws, threads, N, T, t0, t);
    const Index Kd = num_kv_heads() * head_dim();
    cache.append(ws.m_k.topLeftCorner(N * t, Kd), ws.m_v.topLeftCorner(N * t, Kd));
    detail::AttentionProblem<Scalar, Storage> p = problem<Storage>(N, t);
    const Index C = cache.capacity(), d = head_dim();
    p.k = detail::HeadTensor<const Storage>{cache.keys(0, 0), num_kv_heads() * C * d, C * d, d};
    p.v = detail::HeadTensor<const Storage>{cache.values(0, 0), num_kv_heads() * C * d, C * d, d};
    p.q_pos0 = position;
    if (cache.mode() == KVCacheMode::ring) {
      p.k_len = C;
      p.k_positions = cache.slot_positions();
    } else {
      p.k_len = cache.length();
      p.k_pos0 = 0;
    }
    attend_and_project(p, ws, output, threads, nullptr, T, t0);
  }

  // Step 5 and 6: attention of the workspace's q against p's keys, then the output projection into
  // rows [t0, t0 + q_len) of each sequence of `output` (T rows per sequence; T = q_len: all rows).
  template <class Storage>
  void attend_and_project(detail::AttentionProblem<Scalar, Storage>& p, DecoderWorkspace<Scalar>& ws,
                          MatrixRef<Scalar> output, int threads, Matrix<Scalar>* weights = nullptr, Index T = -1,
                          Index t0 = 0) const {
    const Index Hd = num_heads() * head_dim(), t = p.q_len, rows = p.batch * t;
    p.q = head_view<const Scalar>(ws.m_q.data(), t, ws.m_q.cols());
    detail::grow(ws.m_ctx, rows, Hd);
    p.ctx = head_view<Scalar>(ws.m_ctx.data(), t, ws.m_ctx.cols());
    if constexpr (std::is_same<Storage, Scalar>::value) {
      if (weights)
        detail::run_reference(p, threads, ws.m_threads, weights, /*average=*/false);
      else
        detail::run_tiled(p, detail::TileSizes(), threads, ws.m_threads);
    } else {
      detail::run_tiled(p, detail::TileSizes(), threads, ws.m_threads);
    }
    if (T < 0 || T == t) {
      detail::linear_rows(ws.m_ctx.topLeftCorner(rows, Hd), m_o_proj.weight_panels(), bias_of(m_o_proj), output,
                          threads, ws.m_threads);
      return;
    }
    // A chunk of a longer call (a ring cache): a sequence's output rows are not contiguous.
    for (Index n = 0; n < p.batch; ++n)
      detail::linear_rows(ws.m_ctx.block(n * t, 0, t, Hd), m_o_proj.weight_panels(), bias_of(m_o_proj),
                          output.middleRows(n * T + t0, t), threads, ws.m_threads);
  }

  static const Scalar* bias_of(const Linear<Scalar>& l) { return l.has_bias() ? l.bias().data() : nullptr; }

  GroupedQueryAttentionOptions m_options;
  Linear<Scalar> m_q_proj;  // [H d, E]
  Linear<Scalar> m_k_proj;  // [Hkv d, E]
  Linear<Scalar> m_v_proj;  // [Hkv d, E]
  Linear<Scalar> m_o_proj;  // [E, H d]
  RotaryEmbedding<Scalar> m_rope;  // empty without rope
  RowVector<Scalar> m_alibi;       // [H] slopes, empty without alibi
  RowVector<Scalar> m_q_norm;      // [d], empty without qk_norm
  RowVector<Scalar> m_k_norm;      // [d]
};

using GroupedQueryAttentionf = GroupedQueryAttention<float>;   ///< float layer
using GroupedQueryAttentiond = GroupedQueryAttention<double>;  ///< double layer

}  // namespace mha
