#pragma once
/// \file multi_head_attention.hpp
/// `MultiHeadAttention`, PyTorch's `nn.MultiheadAttention` (batch_first) on Eigen.
///
/// Shapes (E = embed_dim, H = num_heads, d = E / H, N = batch):
///
/// | tensor              | one sequence | batch (contiguous, viewed by `BatchView`)           |
/// |---------------------|--------------|-----------------------------------------------------|
/// | query               | `[L, E]`     | `[N, L, E]`                                         |
/// | key                 | `[S, kdim]`  | `[N, S, kdim]`                                      |
/// | value               | `[S, vdim]`  | `[N, S, vdim]`                                      |
/// | attn_mask           | `[L, S]` or `[H * L, S]` | `[L, S]` or `[N * H * L, S]` (slice n * H + h) |
/// | key_padding_mask    | `[1, S]`     | `[N, S]`                                            |
/// | output              | `[L, E]`     | `[N * L, E]` = `[N, L, E]`                          |
/// | weights (averaged)  | `[L, S']`    | `[N * L, S']` = `[N, L, S']`                        |
/// | weights (per head)  | `[H * L, S']`| `[N * H * L, S']` = `[N, H, L, S']`                 |
///
/// S' = S + 1 with add_bias_kv, + 1 with add_zero_attn: bias_k / bias_v are appended to the
/// projected keys / values before the head split, and a zero key / value after it, each as an
/// extra key column that no mask blocks (PyTorch pads its masks with an allowed column).
///
/// Weights follow PyTorch's state_dict: `in_proj_weight [3E, E]` (or `q/k/v_proj_weight` when
/// kdim or vdim differs from E), `in_proj_bias [3E]`, `out_proj.weight [E, E]`,
/// `out_proj.bias [E]`, `bias_k`, `bias_v` `[E]`; a linear layer computes `x W^T + b`.
///
/// A query row with no key it may attend (every key masked) gets all-zero weights and a zero
/// head output, so its output row is `out_proj.bias`. PyTorch returns NaN for such rows.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "detail/attention_core.hpp"
#include "detail/linear_kernel.hpp"
#include "detail/random.hpp"
#include "linear.hpp"
#include "mask.hpp"
#include "parallel.hpp"
#include "types.hpp"

namespace mha {

/// The hyper-parameters of a layer, with `nn.MultiheadAttention`'s meaning.
///
///     mha::MultiHeadAttentionOptions options(512, 8);    // embed_dim, num_heads
///     options.with_kdim(256).with_bias_kv();             // or set the fields directly
struct MultiHeadAttentionOptions {
  Index embed_dim = 0;         ///< E, the query and output feature count
  Index num_heads = 1;         ///< H; must divide E
  Index kdim = 0;              ///< key feature count; 0 means E
  Index vdim = 0;              ///< value feature count; 0 means E
  bool bias = true;            ///< in_proj_bias and out_proj.bias
  bool add_bias_kv = false;    ///< learnt bias_k / bias_v appended as an extra key and value
  bool add_zero_attn = false;  ///< a zero key and value appended after the head split

  MultiHeadAttentionOptions() = default;
  /// E and H; the rest keeps its default (checked when a layer is built from it).
  MultiHeadAttentionOptions(Index embed_dim_, Index num_heads_) : embed_dim(embed_dim_), num_heads(num_heads_) {}

  ///@{
  /// Builder: sets the field of the same meaning and returns `*this` for chaining.
  MultiHeadAttentionOptions& with_kdim(Index k) { kdim = k; return *this; }
  MultiHeadAttentionOptions& with_vdim(Index v) { vdim = v; return *this; }
  MultiHeadAttentionOptions& with_bias(bool on) { bias = on; return *this; }
  MultiHeadAttentionOptions& with_bias_kv(bool on = true) { add_bias_kv = on; return *this; }
  MultiHeadAttentionOptions& with_zero_attn(bool on = true) { add_zero_attn = on; return *this; }
  ///@}
};

/// Which attention kernel a forward pass uses.
enum class Kernel {
  automatic,  ///< the tiled kernel unless weights are requested
  reference,  ///< the unfused path: materialises each head's [L, S'] scores
  tiled,      ///< the tiled kernel (online softmax); cannot return weights
};

/// Per-call options.
///
/// Masks are borrowed, not copied: the mask objects must outlive the forward call. Build the
/// options inline in the call, or keep the masks in named variables:
///
///     auto mask = mha::KeyPaddingMask<float>::padding(padding);
///     layer.forward(x, x, x, mha::ForwardOptions<float>().with_key_padding(mask).causal());
///
/// The builders return a copy when called on a temporary, so `auto o = ForwardOptions<float>()
/// .causal();` holds a value, never a reference to a destroyed temporary.
template <class Scalar>
struct ForwardOptions {
  const AttentionMask<Scalar>* attn_mask = nullptr;  ///< borrowed; `[L, S]` or `[N * H * L, S]` values
  const KeyPaddingMask<Scalar>* key_padding_mask = nullptr;  ///< borrowed; `[N, S]`
  bool is_causal = false;             ///< end-aligned causal mask, combined with attn_mask
  bool need_weights = false;          ///< also return the attention weights
  bool average_attn_weights = true;   ///< weights averaged over heads, else per head
  int num_threads = 0;                ///< 0: mha::num_threads()
  Kernel kernel = Kernel::automatic;  ///< which attention kernel runs

  ///@{
  /// Builder on a named object: sets the field of the same meaning (weights() sets need_weights
  /// and average_attn_weights) and returns `*this`; the masks are borrowed.
  ForwardOptions& with_mask(const AttentionMask<Scalar>& mask) & { attn_mask = &mask; return *this; }
  ForwardOptions& with_key_padding(const KeyPaddingMask<Scalar>& mask) & { key_padding_mask = &mask; return *this; }
  ForwardOptions& causal(bool on = true) & { is_causal = on; return *this; }
  ForwardOptions& weights(bool average = true) & { need_weights = true; average_attn_weights = average; return *this; }
  ForwardOptions& threads(int n) & { num_threads = n; return *this; }
  ForwardOptions& use_kernel(Kernel k) & { kernel = k; return *this; }
  ///@}

  ///@{
  /// Builder on a temporary: as above, but returns the options by value.
  ForwardOptions with_mask(const AttentionMask<Scalar>& mask) && { return std::move(with_mask(mask)); }
  ForwardOptions with_key_padding(const KeyPaddingMask<Scalar>& mask) && { return std::move(with_key_padding(mask)); }
  ForwardOptions causal(bool on = true) && { return std::move(causal(on)); }
  ForwardOptions weights(bool average = true) && { return std::move(weights(average)); }
  ForwardOptions threads(int n) && { return std::move(threads(n)); }
  ForwardOptions use_kernel(Kernel k) && { return std::move(use_kernel(k)); }
  ///@}

  // Masks that are temporaries would be destroyed before the call that reads them.
  void with_mask(AttentionMask<Scalar>&&) = delete;
  void with_key_padding(KeyPaddingMask<Scalar>&&) = delete;
};

/// What a forward pass returns; `auto [output, weights] = layer.forward(...)` unpacks it.
/// Per-head weights of batch entry n and head h are rows `[(n * H + h) * L, (n * H + h + 1) * L)`.
template <class Scalar>
struct AttentionResult {
  Matrix<Scalar> output;   ///< `[L, E]`, or `[N * L, E]` for a batch
  Matrix<Scalar> weights;  ///< empty unless need_weights; see the shapes table above
};

/// Scratch memory of forward passes, reused across calls: once a shape has been run, running it
/// again allocates nothing. Not shareable between concurrent calls.
template <class Scalar>
class Workspace {
 public:
  Workspace() = default;

 private:
  template <class>
  friend class MultiHeadAttention;
  Matrix<Scalar> m_qkv;  // [N * L, 3E]  packed self-attention projection
  Matrix<Scalar> m_q;    // [N * L, g d]  a head group's projections (g d = E without grouping)
  Matrix<Scalar> m_k;    // [N * S, g d]
  Matrix<Scalar> m_v;    // [N * S, g d]
  Matrix<Scalar> m_ctx;  // [N * L, g d]  the group's heads' outputs, concatenated
  detail::ScratchPool<Scalar> m_threads;  // per-thread tiles and GEMM packing buffers
};

template <class Scalar_>
class MultiHeadAttention;

/// The cross-attention cache: an encoder memory's keys and values, projected once by a layer's
/// W_K, W_V and biases (`MultiHeadAttention::project_memory`) and reused by every decoder step,
/// which then projects only its queries. Tied to the weights it was projected with: project again
/// after changing them.
template <class Scalar>
class CrossAttentionCache {
 public:
  CrossAttentionCache() = default;

  /// N, the sequences of the memory.
  Index batch() const { return m_batch; }
  /// S, the tokens of each memory sequence (0 before project_memory).
  Index tokens() const { return m_batch > 0 ? m_keys.rows() / m_batch : 0; }
  ///@{
  /// Projected keys and values `[N * S, E]` (sequence n is rows `[n S, (n + 1) S)`).
  const Matrix<Scalar>& keys() const { return m_keys; }
  const Matrix<Scalar>& values() const { return m_values; }
  ///@}

 private:
  template <class>
  friend class MultiHeadAttention;
  Matrix<Scalar> m_keys;    // [N * S, E]
  Matrix<Scalar> m_values;  // [N * S, E]
  Index m_batch = 0;
};

/// Multi-head attention with PyTorch `nn.MultiheadAttention` semantics (batch_first=True).
///
/// Cost of a forward pass without weights: `2 N (L E^2 + S E kdim + S E vdim + L E^2)` FLOPs for
/// the projections and `4 N L S' E` for attention (about half of that with a causal mask); the
/// attention never holds an `[L, S]` buffer unless weights are requested, and the projections stay
/// within `workspace_budget()` by running heads in groups.
template <class Scalar_>
class MultiHeadAttention {
 public:
  /// Element type, `float` or `double`.
  using Scalar = Scalar_;
  static_assert(std::is_floating_point<Scalar>::value, "Scalar must be float or double");

  /// A layer initialised as PyTorch does (xavier_uniform in-projection, uniform(+-1/sqrt(E))
  /// out-projection, xavier_normal bias_k / bias_v, zero biases), from a deterministic `seed`.
  /// Throws shape_error unless embed_dim and num_heads are positive, kdim and vdim not negative
  /// and num_heads divides embed_dim.
  explicit MultiHeadAttention(const MultiHeadAttentionOptions& options, std::uint64_t seed = 0)
      : m_options(validated(options)),
        m_in_proj(m_options.embed_dim, m_options.kdim, m_options.vdim, m_options.bias),
        m_out_proj(m_options.embed_dim, m_options.embed_dim, m_options.bias) {
    if (m_options.add_bias_kv) {
      m_bias_k = RowVector<Scalar>::Zero(m_options.embed_dim);
      m_bias_v = RowVector<Scalar>::Zero(m_options.embed_dim);
    }
    reset_parameters(seed);
  }

  /// The options the layer was built with, kdim and vdim resolved (never 0).
  const MultiHeadAttentionOptions& options() const { return m_options; }
  /// E, the query and output feature count.
  Index embed_dim() const { return m_options.embed_dim; }
  /// H.
  Index num_heads() const { return m_options.num_heads; }
  /// d = E / H, the features of one head.
  Index head_dim() const { return m_options.embed_dim / m_options.num_heads; }
  /// Features of a key row.
  Index kdim() const { return m_options.kdim; }
  /// Features of a value row.
  Index vdim() const { return m_options.vdim; }

  ///@{
  /// The query/key/value projections (`in_proj_weight`, `in_proj_bias`), to read or load.
  InProjection<Scalar>& in_proj() { return m_in_proj; }
  const InProjection<Scalar>& in_proj() const { return m_in_proj; }
  ///@}
  ///@{
  /// The output projection `[E, E]` (`out_proj.weight`, `out_proj.bias`), to read or load.
  Linear<Scalar>& out_proj() { return m_out_proj; }
  const Linear<Scalar>& out_proj() const { return m_out_proj; }
  ///@}

  ///@{
  /// `[E]` each; empty unless add_bias_kv.
  const RowVector<Scalar>& bias_k() const { return m_bias_k; }
  const RowVector<Scalar>& bias_v() const { return m_bias_v; }
  ///@}
  ///@{
  /// Replaces bias_k / bias_v with `b [E]`. Throws argument_error when the layer was built
  /// without add_bias_kv, shape_error on another size.
  void set_bias_k(const ConstRowVectorRef<Scalar>& b) { set_bias_kv(m_bias_k, b, "bias_k"); }
  void set_bias_v(const ConstRowVectorRef<Scalar>& b) { set_bias_kv(m_bias_v, b, "bias_v"); }
  ///@}

  /// Re-draws every parameter from `seed` (see the constructor).
  void reset_parameters(std::uint64_t seed) {
    detail::SplitMix64 rng(seed);
    const Index E = embed_dim();
    auto uniform = [&rng](Index rows, Index cols, double bound) {
      Matrix<Scalar> m(rows, cols);
      for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<Scalar>(rng.uniform(bound));
      return m;
    };
    // xavier_uniform: bound = sqrt(6 / (fan_in + fan_out)); PyTorch draws the packed [3E, E]
    // weight as one tensor, so fan_out is 3E there.
    if (m_in_proj.packed()) {
      m_in_proj.set_in_proj_weight(uniform(3 * E, E, std::sqrt(6.0 / double(E + 3 * E))));
    } else {
      m_in_proj.set_q_weight(uniform(E, E, std::sqrt(6.0 / double(E + E))));
      m_in_proj.set_k_weight(uniform(E, kdim(), std::sqrt(6.0 / double(E + kdim()))));
      m_in_proj.set_v_weight(uniform(E, vdim(), std::sqrt(6.0 / double(E + vdim()))));
    }
    // out_proj keeps nn.Linear's kaiming_uniform(a = sqrt(5)) draw: bound 1 / sqrt(fan_in).
    m_out_proj.set_weight(uniform(E, E, 1.0 / std::sqrt(double(E))));
    if (m_options.bias) {
      m_in_proj.set_in_proj_bias(RowVector<Scalar>::Zero(3 * E));
      m_out_proj.set_bias(RowVector<Scalar>::Zero(E));
    }
    if (m_options.add_bias_kv) {
      // xavier_normal on a [1, 1, E] tensor: fan_in = fan_out = E, std = sqrt(2 / 2E).
      const double stddev = std::sqrt(1.0 / double(E));
      for (Index i = 0; i < E; ++i) m_bias_k[i] = static_cast<Scalar>(stddev * rng.normal());
      for (Index i = 0; i < E; ++i) m_bias_v[i] = static_cast<Scalar>(stddev * rng.normal());
    }
  }

  /// One sequence: `query [L, E]`, `key [S, kdim]`, `value [S, vdim]`. Self-attention (the same
  /// matrix passed three times) projects with one packed GEMM when kdim == vdim == E.
  ///
  /// Computes, per head h, `softmax(Q_h K_h^T / sqrt(d) + mask) V_h` with `Q = query W_Q^T + b_Q`
  /// (likewise K, V), concatenates the heads and applies out_proj: multi-head attention of
  /// Vaswani et al., "Attention Is All You Need" (2017), section 3.2, with the masks, biases and
  /// options of PyTorch's `nn.MultiheadAttention`. Returns the output `[L, E]` and, with
  /// need_weights, the weights (shapes table above).
  ///
  /// Throws shape_error when an input is empty or has another shape than in the table, or a mask
  /// does not fit L and S; argument_error for the tiled kernel with need_weights.
  AttentionResult<Scalar> forward(const ConstMatrixRef<Scalar>& query, const ConstMatrixRef<Scalar>& key,
                                  const ConstMatrixRef<Scalar>& value,
                                  const ForwardOptions<Scalar>& options = ForwardOptions<Scalar>()) const {
    check_not_empty("query", query.rows(), query.cols());
    check_not_empty("key", key.rows(), key.cols());
    check_not_empty("value", value.rows(), value.cols());
    // The shapes of one sequence, in its own terms, before the batch checks talk of [N, L, E].
    detail::check_shape("query [L, E]", -1, embed_dim(), query.rows(), query.cols());
    detail::check_shape("key [S, kdim]", -1, kdim(), key.rows(), key.cols());
    detail::check_shape("value [S, vdim]", key.rows(), vdim(), value.rows(), value.cols());
    return forward(BatchView<Scalar>(query, 1), BatchView<Scalar>(key, 1), BatchView<Scalar>(value, 1),
                   options);
  }

  /// A batch: `query [N, L, E]`, `key [N, S, kdim]`, `value [N, S, vdim]`, each contiguous.
  /// Computes and throws as the one-sequence form, for each batch entry; output `[N * L, E]`.
  AttentionResult<Scalar> forward(const BatchView<Scalar>& query, const BatchView<Scalar>& key,
                                  const BatchView<Scalar>& value,
                                  const ForwardOptions<Scalar>& options = ForwardOptions<Scalar>()) const {
    AttentionResult<Scalar> result;
    Workspace<Scalar> workspace;
    result.output.resize(query.batch() * query.tokens(), embed_dim());
    forward(query, key, value, options, workspace, result.output,
            options.need_weights ? &result.weights : nullptr);
    return result;
  }

  /// Cross-attention with a projected memory: projects `key [N, S, kdim]` and `value [N, S, vdim]`
  /// once (`S E (kdim + vdim)` multiply-adds per sequence) into `cache`, whose storage is reused
  /// when its shape is unchanged. Throws shape_error for inputs of the wrong shape.
  void project_memory(const BatchView<Scalar>& key, const BatchView<Scalar>& value, CrossAttentionCache<Scalar>& cache,
                      int threads = 0) const {
    const Index N = key.batch(), S = key.tokens(), E = embed_dim();
    auto check3 = [&](const char* what, const BatchView<Scalar>& t, Index features) {
      if (t.batch() != N || t.tokens() != S || t.features() != features)
        MHA_THROW(shape_error, std::string("[mha.shape] project_memory ") + what + ": expected " +
                                   detail::shape_string(N, S, features) + ", got " +
                                   detail::shape_string(t.batch(), t.tokens(), t.features()));
    };
    check3("key [N, S, kdim]", key, kdim());
    check3("value [N, S, vdim]", value, vdim());
    threads = num_threads(threads);
    const RowVector<Scalar>& in_bias = m_in_proj.in_proj_bias();
    cache.m_batch = N;
    cache.m_keys.resize(N * S, E);
    cache.m_values.resize(N * S, E);
    detail::ScratchPool<Scalar> pool;
    detail::linear_rows(key.flat(), m_in_proj.k_weight_panels(), bias_or_null(in_bias, E), cache.m_keys, threads, pool);
    detail::linear_rows(value.flat(), m_in_proj.v_weight_panels(), bias_or_null(in_bias, 2 * E), cache.m_values, threads,
                        pool);
  }

  /// The same, returning a new cache.
  CrossAttentionCache<Scalar> project_memory(const BatchView<Scalar>& key, const BatchView<Scalar>& value,
                                             int threads = 0) const {
    CrossAttentionCache<Scalar> cache;
    project_memory(key, value, cache, threads);
    return cache;
  }

  /// Attention of `query [N, L, E]` to a projected memory: the same result as
  /// `forward(query, key, value, options)` with the key and value the memory was projected from,
  /// without projecting them again. Masks are `[L, S]` / `[N * H * L, S]` and `[N, S]` as there.
  AttentionResult<Scalar> forward(const BatchView<Scalar>& query, const CrossAttentionCache<Scalar>& memory,
                                  const ForwardOptions<Scalar>& options = ForwardOptions<Scalar>()) const {
    AttentionResult<Scalar> result;
    Workspace<Scalar> workspace;
    result.output.resize(query.batch() * query.tokens(), embed_dim());
    forward(query, memory, options, workspace, result.output, options.need_weights ? &result.weights : nullptr);
    return result;
  }

  /// The allocation-free form of cross-attention with a projected memory.
  void forward(const BatchView<Scalar>& query, const CrossAttentionCache<Scalar>& memory,
               const ForwardOptions<Scalar>& options, Workspace<Scalar>& workspace, MatrixRef<Scalar> output,
               Matrix<Scalar>* weights = nullptr) const {
    if (memory.batch() == 0)
      MHA_THROW(argument_error, "[mha.argument] forward: the cross-attention cache is empty; call project_memory");
    if (memory.keys().cols() != embed_dim())
      MHA_THROW(shape_error, "[mha.shape] forward: cross-attention cache of width " +
                                 std::to_string(memory.keys().cols()) + ", layer embed_dim " + std::to_string(embed_dim()));
    const BatchView<Scalar> k(memory.keys(), memory.batch());
    forward_impl(query, k, k, &memory, options, workspace, output, weights);
  }

  /// The allocation-free form: writes `output [N * L, E]` (caller memory) and, when `weights` is
  /// not null, the attention weights (resized as in the shapes table), reusing `workspace`.
  /// After a first call at a given shape, further calls at that shape allocate nothing.
  /// Throws as the other forms, and shape_error when `output` is not `[N * L, E]`,
  /// argument_error when need_weights is set but `weights` is null.
  void forward(const BatchView<Scalar>& query, const BatchView<Scalar>& key, const BatchView<Scalar>& value,
               const ForwardOptions<Scalar>& options, Workspace<Scalar>& workspace, MatrixRef<Scalar> output,
               Matrix<Scalar>* weights = nullptr) const {
    forward_impl(query, key, value, nullptr, options, workspace, output, weights);
  }

 private:
  // The forward pass; with `memory`, key and value are its projected keys (only their shapes are
  // read) and only the queries are projected.
  void forward_impl(const BatchView<Scalar>& query, const BatchView<Scalar>& key, const BatchView<Scalar>& value,
                    const CrossAttentionCache<Scalar>* memory, const ForwardOptions<Scalar>& options,
                    Workspace<Scalar>& workspace, MatrixRef<Scalar> output, Matrix<Scalar>* weights) const {
    const Index N = query.batch(), L = query.tokens(), S = key.tokens(), E = embed_dim(), H = num_heads();
    if (memory)
      check_inputs(query, key, key, options, /*key_features=*/E, /*value_features=*/E);
    else
      check_inputs(query, key, value, options, kdim(), vdim());
    detail::check_shape("output", N * L, E, output.rows(), output.cols());
    const bool want_weights = options.need_weights || weights != nullptr;
    if (want_weights && weights == nullptr)
      MHA_THROW(argument_error, "[mha.argument] forward: need_weights is set but no weights matrix was given");
    if (want_weights && options.kernel == Kernel::tiled)
      MHA_THROW(argument_error, "[mha.argument] forward: the tiled kernel cannot return attention weights");
    const int threads = num_threads(options.num_threads);
    const Index d = head_dim();

    // The problem every kernel reads; what changes per head group is filled in below.
    detail::AttentionProblem<Scalar> p;
    p.batch = N;
    p.q_len = L;
    p.k_len = S;
    p.head_dim = p.v_dim = d;
    p.num_heads = p.num_kv_heads = H;
    p.scale = Scalar(1) / std::sqrt(Scalar(d));
    p.q_pos0 = S - L;  // PyTorch's causal mask is end-aligned: query i sees keys j <= i + S - L
    p.zero_attn = m_options.add_zero_attn;
    if (options.attn_mask && options.attn_mask->has_values()) {
      p.mask = options.attn_mask->values().data();
      p.mask_slices = options.attn_mask->slices();
    }
    if (options.key_padding_mask && !options.key_padding_mask->empty())
      p.key_padding = options.key_padding_mask->values().data();
    p.causal = options.is_causal || (options.attn_mask && options.attn_mask->is_causal());

    // Heads are processed in groups whose projections fit the workspace budget: one group (and
    // one packed QKV product for self-attention) at ordinary sizes; at long sequences, a few heads
    // at a time, each group adding its share of the output projection, so that memory stays
    // bounded instead of growing with 4 * E * (L + S).
    const bool tiled = !want_weights && options.kernel != Kernel::reference;
    const Index group = tiled && !memory ? heads_per_group(N, L, S) : H;
    const bool self_attention = !memory && group == H && m_in_proj.packed() && query.data() == key.data() &&
                                key.data() == value.data() && query.tokens() == key.tokens() &&
                                query.row_stride() == key.row_stride() &&
                                key.row_stride() == value.row_stride();
    const RowVector<Scalar>& in_bias = m_in_proj.in_proj_bias();
    const Index total_keys = S + (m_options.add_bias_kv ? 1 : 0) + (m_options.add_zero_attn ? 1 : 0);  // S'
    if (want_weights) {
      weights->resize(options.average_attn_weights ? N * L : N * H * L, total_keys);
      if (options.average_attn_weights) weights->setZero();
    }

    for (Index h0 = 0; h0 < H; h0 += group) {
      const Index g = std::min(group, H - h0), width = g * d;  // heads [h0, h0 + g): columns [h0 d, h0 d + width)
      // 1. Projections of this group's heads, all tokens of the batch in one product each.
      if (self_attention) {
        workspace.m_qkv.resize(N * L, 3 * E);  // [N*L, 3E]: Q | K | V
        detail::linear_rows(query.flat(), m_in_proj.in_proj_weight_panels(), bias_or_null(in_bias, 0), workspace.m_qkv,
                            threads, workspace.m_threads);
        p.q = head_view<const Scalar>(workspace.m_qkv.data(), L, 3 * E);
        p.k = head_view<const Scalar>(workspace.m_qkv.data() + E, S, 3 * E);
        p.v = head_view<const Scalar>(workspace.m_qkv.data() + 2 * E, S, 3 * E);
      } else if (memory) {  // the whole memory is projected already; group == H
        workspace.m_q.resize(N * L, E);  // [N*L, E]
        detail::linear_rows(query.flat(), m_in_proj.q_weight_panels(), bias_or_null(in_bias, 0), workspace.m_q, threads,
                            workspace.m_threads);
        p.q = head_view<const Scalar>(workspace.m_q.data(), L, E);
        p.k = head_view<const Scalar>(memory->keys().data(), S, E);
        p.v = head_view<const Scalar>(memory->values().data(), S, E);
      } else {
        workspace.m_q.resize(N * L, width);  // [N*L, g d]
        workspace.m_k.resize(N * S, width);  // [N*S, g d]
        workspace.m_v.resize(N * S, width);  // [N*S, g d]
        const Index r0 = h0 * d;
        detail::linear_rows(query.flat(), m_in_proj.q_weight_panels().middle_rows(r0, width), bias_or_null(in_bias, r0),
                            workspace.m_q, threads, workspace.m_threads);
        detail::linear_rows(key.flat(), m_in_proj.k_weight_panels().middle_rows(r0, width), bias_or_null(in_bias, E + r0),
                            workspace.m_k, threads, workspace.m_threads);
        detail::linear_rows(value.flat(), m_in_proj.v_weight_panels().middle_rows(r0, width),
                            bias_or_null(in_bias, 2 * E + r0), workspace.m_v, threads, workspace.m_threads);
        p.q = head_view<const Scalar>(workspace.m_q.data(), L, width);
        p.k = head_view<const Scalar>(workspace.m_k.data(), S, width);
        p.v = head_view<const Scalar>(workspace.m_v.data(), S, width);
      }

      // 2. Attention of every (batch entry, head of the group) into the group's context.
      workspace.m_ctx.resize(N * L, width);  // [N*L, g d]
      p.heads = g;
      p.head_offset = h0;
      p.ctx = head_view<Scalar>(workspace.m_ctx.data(), L, width);
      if (m_options.add_bias_kv) {
        p.bias_k = m_bias_k.data() + h0 * d;
        p.bias_v = m_bias_v.data() + h0 * d;
      }
      if (tiled)
        detail::run_tiled(p, m_tiles, threads, workspace.m_threads);
      else
        detail::run_reference(p, threads, workspace.m_threads, want_weights ? weights : nullptr,
                              options.average_attn_weights);

      // 3. Output projection: out = bias + sum over groups of ctx_group W_O[:, group columns]^T.
      detail::linear_rows(workspace.m_ctx, m_out_proj.weight_panels().middle_cols(h0 * d, width),
                          h0 == 0 ? bias_or_null(m_out_proj.bias(), 0) : nullptr, output, threads, workspace.m_threads,
                          /*accumulate=*/h0 > 0);
    }
  }


 public:
  /// Memory the projections and context of a forward pass may take before heads are processed
  /// in groups (default 32 MiB). Grouping changes no result, only memory and speed: a smaller
  /// budget bounds memory at long sequences, a larger one keeps one packed QKV product.
  void set_workspace_budget(std::size_t bytes) { m_workspace_budget = bytes; }
  /// The budget of set_workspace_budget(), in bytes.
  std::size_t workspace_budget() const { return m_workspace_budget; }

 private:
  static MultiHeadAttentionOptions validated(MultiHeadAttentionOptions o) {
    if (o.kdim == 0) o.kdim = o.embed_dim;
    if (o.vdim == 0) o.vdim = o.embed_dim;
    if (o.embed_dim <= 0 || o.num_heads <= 0 || o.kdim < 0 || o.vdim < 0)
      MHA_THROW(shape_error, "[mha.shape] MultiHeadAttention: expected positive embed_dim and num_heads "
                             "(and kdim, vdim >= 0), got embed_dim " + std::to_string(o.embed_dim) +
                                 ", num_heads " + std::to_string(o.num_heads) + ", kdim " +
                                 std::to_string(o.kdim) + ", vdim " + std::to_string(o.vdim));
    if (o.embed_dim % o.num_heads != 0)
      MHA_THROW(shape_error, "[mha.shape] MultiHeadAttention: embed_dim " + std::to_string(o.embed_dim) +
                                 " is not divisible by num_heads " + std::to_string(o.num_heads));
    return o;
  }

  static void check_not_empty(const char* what, Index rows, Index cols) {
    if (rows <= 0 || cols <= 0)
      MHA_THROW(shape_error, std::string("[mha.shape] ") + what + ": expected a non-empty [tokens, features], got " +
                                 detail::shape_string(rows, cols));
  }

  void set_bias_kv(RowVector<Scalar>& target, const ConstRowVectorRef<Scalar>& b, const char* name) {
    if (!m_options.add_bias_kv)
      MHA_THROW(argument_error, std::string("[mha.argument] ") + name + ": the layer was built without add_bias_kv");
    detail::check_shape(name, 1, embed_dim(), 1, b.size());
    target = b;
  }

  void check_inputs(const BatchView<Scalar>& q, const BatchView<Scalar>& k, const BatchView<Scalar>& v,
                    const ForwardOptions<Scalar>& options, Index key_features, Index value_features) const {
    const Index N = q.batch(), L = q.tokens(), S = k.tokens(), H = num_heads();
    auto check3 = [](const char* what, const BatchView<Scalar>& t, Index n, Index tokens, Index features) {
      if ((n >= 0 && t.batch() != n) || (tokens >= 0 && t.tokens() != tokens) || t.features() != features) {
        auto e = [](Index x) { return x < 0 ? std::string("*") : std::to_string(x); };
        MHA_THROW(shape_error, std::string("[mha.shape] ") + what + ": expected [" + e(n) + ", " + e(tokens) +
                                   ", " + std::to_string(features) + "], got " +
                                   detail::shape_string(t.batch(), t.tokens(), t.features()));
      }
    };
    check3("query [N, L, E]", q, -1, -1, embed_dim());
    check3("key [N, S, kdim]", k, N, -1, key_features);
    check3("value [N, S, vdim]", v, N, S, value_features);
    if (options.attn_mask && options.attn_mask->has_values()) {
      const AttentionMask<Scalar>& m = *options.attn_mask;
      const Index slices = m.slices();
      if ((slices != 1 && slices != N * H) || m.query_len() != L || m.key_len() != S)
        MHA_THROW(shape_error, "[mha.shape] attn_mask: expected [L, S] = " + detail::shape_string(L, S) +
                                   " or [N * H, L, S] = " + detail::shape_string(N * H, L, S) + ", got " +
                                   detail::shape_string(slices, m.query_len(), m.key_len()));
    }
    if (options.key_padding_mask && !options.key_padding_mask->empty()) {
      const KeyPaddingMask<Scalar>& m = *options.key_padding_mask;
      detail::check_shape("key_padding_mask [N, S]", N, S, m.batch(), m.key_len());
    }
  }

  // How many heads' Q, K, V and context buffers fit the workspace budget (at least one).
  Index heads_per_group(Index N, Index L, Index S) const {
    const double per_head = double(2 * N * L + 2 * N * S) * double(head_dim()) * sizeof(Scalar);
    const Index fit = static_cast<Index>(double(m_workspace_budget) / per_head);
    return std::max<Index>(1, std::min<Index>(num_heads(), fit));
  }

  static const Scalar* bias_or_null(const RowVector<Scalar>& bias, Index offset) {
    return bias.size() > 0 ? bias.data() + offset : nullptr;
  }

  // The [N][heads][T][d] view of a row-major [N * T, width] projection whose heads are d-column
  // blocks, rows `width` apart.
  template <class T>
  detail::HeadTensor<T> head_view(T* data, Index tokens, Index row_stride) const {
    detail::HeadTensor<T> t;
    t.data = data;
    t.row_stride = row_stride;
    t.head_stride = head_dim();
    t.batch_stride = tokens * row_stride;
    return t;
  }

  MultiHeadAttentionOptions m_options;
  InProjection<Scalar> m_in_proj;  // W_Q, W_K, W_V and in_proj_bias
  Linear<Scalar> m_out_proj;       // W_O [E, E], out_proj.bias [E]
  RowVector<Scalar> m_bias_k;      // [E] when add_bias_kv
  RowVector<Scalar> m_bias_v;      // [E] when add_bias_kv
  detail::TileSizes m_tiles;
  std::size_t m_workspace_budget = std::size_t(32) << 20;

 public:
  /// Tile sizes of the tiled kernel (tuning knob for benchmarks; the defaults suit x86 L2 caches).
  void set_tile_sizes(Index query_rows, Index key_rows) {
    if (query_rows <= 0 || key_rows <= 0)
      MHA_THROW(argument_error, "[mha.argument] set_tile_sizes: expected positive sizes, got " +
                                    detail::shape_string(query_rows, key_rows));
    m_tiles.query_rows = query_rows;
    m_tiles.key_rows = key_rows;
  }
};

/// Single-precision layer.
using MultiHeadAttentionf = MultiHeadAttention<float>;
/// Double-precision layer.
using MultiHeadAttentiond = MultiHeadAttention<double>;

}  // namespace mha
