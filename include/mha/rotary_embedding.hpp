#pragma once
/// \file rotary_embedding.hpp
/// `RotaryEmbedding`, rotary position embedding (RoPE) of queries and keys, with the two layouts
/// checkpoints use and Hugging Face's frequency scalings (`linear`, `llama3`, `yarn`).
///
/// RoPE (Su et al., 2021, "RoFormer") rotates each pair of dimensions `(a, b)` of a query or key
/// at absolute position p by the angle `p * inv_freq[i]`:
///
///     a' = a cos - b sin,    b' = b cos + a sin
///
/// with `inv_freq[i] = theta^(-2i / r)` for `i < r / 2`, where r is the number of rotated dims
/// (`rotary_dim <= head_dim`; dims `[r, head_dim)` of every head pass through unchanged). Which
/// dims form pair i belongs to the checkpoint, so the layout is chosen explicitly:
/// - `RopeLayout::rotate_half` (Hugging Face Llama / GPT-NeoX, `rotate_half`): dim i with dim
///   `i + r / 2`;
/// - `RopeLayout::interleaved` (GPT-J, Meta's original Llama code, ggml's "normal" mode): dim 2i
///   with dim 2i + 1.
///
/// The two are the same function up to a permutation of the rows of the q/k projection weights
/// (`rope_interleaved_to_half_rows`, as Hugging Face's Llama conversion script does).
///
/// Angles, cosines and sines are computed in double and only then rounded to Scalar, whatever
/// Scalar is: rounding the angle itself loses the phase at large positions.

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>

#include "types.hpp"

namespace mha {

/// Which dims of a head form rotation pair i (see the file comment).
enum class RopeLayout {
  rotate_half,  ///< dim i with dim i + r/2 (Hugging Face Llama, GPT-NeoX)
  interleaved,  ///< dim 2i with dim 2i + 1 (GPT-J, Meta Llama)
};

/// The frequency scalings of Hugging Face's `modeling_rope_utils.py` (`rope_scaling.rope_type`).
enum class RopeScalingType {
  none,    ///< `default`: `inv_freq[i] = theta^(-2i/r)`
  linear,  ///< position interpolation: `inv_freq / factor`
  llama3,  ///< Llama 3.1: low frequencies / factor, high ones unchanged, a smooth blend between
           ///< the two bands
  yarn,    ///< YaRN (Peng et al., 2023): ramp blend of interpolation and extrapolation, plus an
           ///< attention factor on cos and sin
};

/// Parameters of a RoPE frequency scaling, named as in a Hugging Face config's `rope_scaling`.
/// Build one with the named constructors; fields a type does not use are ignored.
struct RopeScaling {
  /// Which scaling (`rope_type`); `none` ignores every other field.
  RopeScalingType type = RopeScalingType::none;
  /// linear / llama3 / yarn: the context extension factor (> 0; HF expects >= 1).
  double factor = 1.0;
  ///@{
  /// llama3: wavelengths `2 pi / inv_freq[i]` (in positions) longer than
  /// `original_max_position_embeddings / low_freq_factor` are divided by factor, those shorter
  /// than `original_max_position_embeddings / high_freq_factor` are kept; in between,
  /// `inv_freq = (1 - smooth) * inv_freq / factor + smooth * inv_freq` with
  /// `smooth = (original_max_position_embeddings / wavelength - low_freq_factor) /
  /// (high_freq_factor - low_freq_factor)`, as in HF's `_compute_llama3_parameters`. Requires
  /// 0 < low_freq_factor < high_freq_factor.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  ///@}
  /// llama3 / yarn: the context length the model was trained with (> 0). For yarn HF falls back
  /// to the config's `max_position_embeddings` when the key is absent; here it must be given.
  Index original_max_position_embeddings = 0;
  ///@{
  /// yarn: the ramp runs between the dims that make beta_fast and beta_slow rotations (turns of
  /// 2 pi) over the original context, HF's `find_correction_range` (0 < beta_slow <= beta_fast).
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  ///@}
  /// yarn: multiplies cos and sin. Default (unset): `0.1 ln(factor) + 1` (1 when factor <= 1), or,
  /// when both mscale and mscale_all_dim are non-zero (DeepSeek-V2/V3 configs),
  /// `mscale_of(mscale) / mscale_of(mscale_all_dim)` with `mscale_of(m) = 0.1 m ln(factor) + 1`.
  std::optional<double> attention_factor;
  ///@{
  /// yarn: the `mscale` and `mscale_all_dim` keys of DeepSeek configs (0 = absent); used only when
  /// attention_factor is unset and both are non-zero (see attention_factor).
  double mscale = 0.0;
  double mscale_all_dim = 0.0;
  ///@}
  /// yarn: round the ramp ends to whole dims (floor / ceil), HF's default (gpt-oss sets false).
  bool truncate = true;

  /// Linear position interpolation (Chen et al., 2023, "Extending Context Window of Large
  /// Language Models via Positional Interpolation"; HF `rope_type = "linear"`): every
  /// `inv_freq[i]` divided by factor. Checked when a RotaryEmbedding is built from it, not here:
  /// factor finite and positive (argument_error, `[mha.argument]`).
  static RopeScaling linear(double factor) {
    RopeScaling s;
    s.type = RopeScalingType::linear;
    s.factor = factor;
    return s;
  }
  /// Llama 3.1's scaling (HF `_compute_llama3_parameters`), the parameters as in the config's
  /// `rope_scaling` (see the fields). Checked when a RotaryEmbedding is built from it, not here:
  /// factor finite and positive, original_max_position_embeddings positive,
  /// 0 < low_freq_factor < high_freq_factor (argument_error, `[mha.argument]`).
  static RopeScaling llama3(double factor, double low_freq_factor, double high_freq_factor,
                            Index original_max_position_embeddings) {
    RopeScaling s;
    s.type = RopeScalingType::llama3;
    s.factor = factor;
    s.low_freq_factor = low_freq_factor;
    s.high_freq_factor = high_freq_factor;
    s.original_max_position_embeddings = original_max_position_embeddings;
    return s;
  }
  /// YaRN (Peng et al., 2023, "YaRN: Efficient Context Window Extension of Large Language
  /// Models"; HF `_compute_yarn_parameters`), with HF's defaults for beta_fast and beta_slow, the
  /// default attention factor and truncate = true; set the other fields afterwards if the config
  /// has them. Checked when a RotaryEmbedding is built from it, not here: factor finite and
  /// positive, original_max_position_embeddings positive, 0 < beta_slow <= beta_fast,
  /// attention_factor (if set) finite and positive (argument_error, `[mha.argument]`).
  static RopeScaling yarn(double factor, Index original_max_position_embeddings,
                          double beta_fast = 32.0, double beta_slow = 1.0) {
    RopeScaling s;
    s.type = RopeScalingType::yarn;
    s.factor = factor;
    s.original_max_position_embeddings = original_max_position_embeddings;
    s.beta_fast = beta_fast;
    s.beta_slow = beta_slow;
    return s;
  }
};

/// Configuration of a `RotaryEmbedding`.
struct RopeOptions {
  /// Which dims form a rotation pair; must match the checkpoint (see the file comment).
  RopeLayout layout = RopeLayout::rotate_half;
  /// Dims per head, d (> 0).
  Index head_dim = 0;
  /// Rotated dims per head, r: even, `0 < r <= head_dim`; 0 means head_dim. HF's
  /// `partial_rotary_factor` f gives `r = int(head_dim * f)`.
  Index rotary_dim = 0;
  /// Base of the frequencies (`rope_theta`), > 0.
  double theta = 10000.0;
  /// Frequency scaling (`rope_scaling` of an HF config); none by default.
  RopeScaling scaling;
  /// Positions `[0, max_positions)` get precomputed cos/sin tables (`2 * max_positions * r / 2`
  /// Scalars); beyond, apply() computes cos and sin on the fly (no allocation either way).
  Index max_positions = 0;
};

namespace detail {

/// `mscale_of(m)` of HF's yarn: `0.1 m ln(scale) + 1`, or 1 when scale <= 1.
inline double yarn_mscale(double scale, double m) {
  return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
}

inline std::string number_string(double v) {
  std::string s = std::to_string(v);
  // to_string prints 6 decimals; drop the trailing zeros so "2.500000" reads "2.5".
  if (s.find('.') != std::string::npos) {
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
  }
  return s;
}

[[noreturn]] inline void rope_argument_error(const std::string& what) {
  MHA_THROW(argument_error, "[mha.argument] RotaryEmbedding: " + what);
}

}  // namespace detail

/// Rotary position embedding of `[tokens, heads * head_dim]` queries or keys, in place.
///
/// Construction computes `inv_freq [r/2]` (double, with the scaling), the attention factor, and,
/// when `max_positions > 0`, the cos/sin tables `[max_positions, r/2]` in Scalar (attention
/// factor included). apply() never allocates. Cost of apply: `3 * tokens * heads * r` flops plus,
/// for positions past the tables, `r` cos/sin calls per token.
///
/// Errors:
/// - `mha::argument_error`, `[mha.argument]`: at construction, head_dim <= 0, rotary_dim odd,
///   not positive or larger than head_dim, theta not finite or <= 0, factor not finite or <= 0,
///   bad llama3 / yarn parameters (see `RopeScaling`), max_positions < 0; at apply() and
///   cos_sin(), an empty embedding, heads <= 0, a negative position, a null positions pointer;
/// - `mha::shape_error`, `[mha.shape]`: `x.cols() != heads * head_dim`, a position vector whose
///   length is not `x.rows()`.
template <class Scalar_>
class RotaryEmbedding {
 public:
  /// Element type of the rotated queries and keys and of the cos/sin tables (float or double).
  using Scalar = Scalar_;
  /// One position per token row.
  using Positions = Eigen::Matrix<Index, Eigen::Dynamic, 1>;

  /// An empty embedding (`empty()`); apply() on it throws.
  RotaryEmbedding() = default;

  /// Validates `options` (rotary_dim 0 becomes head_dim), computes `inv_freq [r/2]` with the
  /// scaling and the attention factor in double, and fills the cos/sin tables
  /// `[max_positions, r/2]`: `O(max_positions * r)` cos/sin calls and `2 * max_positions * r/2`
  /// Scalars of memory. Throws argument_error (`[mha.argument]`) on the options listed above.
  explicit RotaryEmbedding(const RopeOptions& options) : m_options(options) {
    if (m_options.rotary_dim == 0) m_options.rotary_dim = m_options.head_dim;
    validate();
    m_inv_freq = compute_inv_freq();
    m_attention_factor = compute_attention_factor();
    const Index half = m_options.rotary_dim / 2;
    const Index table = m_options.max_positions;
    m_cos.resize(table, half);
    m_sin.resize(table, half);
    for (Index p = 0; p < table; ++p)
      for (Index i = 0; i < half; ++i) {
        const double angle = static_cast<double>(p) * m_inv_freq[i];
        m_cos(p, i) = static_cast<Scalar>(std::cos(angle) * m_attention_factor);
        m_sin(p, i) = static_cast<Scalar>(std::sin(angle) * m_attention_factor);
      }
  }

  /// True for a default-constructed embedding, on which apply() and cos_sin() throw.
  bool empty() const { return m_options.head_dim == 0; }
  ///@{
  /// The options as validated (`rotary_dim` resolved: never 0 unless empty()), and their fields:
  /// the pair layout, d, r and the number of tabulated positions.
  const RopeOptions& options() const { return m_options; }
  RopeLayout layout() const { return m_options.layout; }
  Index head_dim() const { return m_options.head_dim; }
  Index rotary_dim() const { return m_options.rotary_dim; }
  Index max_positions() const { return m_options.max_positions; }
  ///@}

  /// The inverse frequencies `[r/2]`, radians per position, after scaling (double).
  const Eigen::VectorXd& inv_freq() const { return m_inv_freq; }
  /// The factor applied to cos and sin (1 except for yarn).
  double attention_factor() const { return m_attention_factor; }

  /// Writes `attention_factor * cos(position * inv_freq)` and `... * sin(...)`, `[r/2]` each, to
  /// caller memory (from the table when the position is in it); `cos` and `sin` must each have
  /// room for r/2 Scalars. Throws argument_error
  /// (`[mha.argument]`) on an empty embedding or a negative position.
  void cos_sin(Index position, Scalar* cos, Scalar* sin) const {
    require_configured();
    if (position < 0) detail::rope_argument_error("negative position " + std::to_string(position));
    const Index half = m_options.rotary_dim / 2;
    if (position < m_options.max_positions) {
      std::copy_n(m_cos.row(position).data(), half, cos);
      std::copy_n(m_sin.row(position).data(), half, sin);
      return;
    }
    for (Index i = 0; i < half; ++i) {
      const double angle = static_cast<double>(position) * m_inv_freq[i];
      cos[i] = static_cast<Scalar>(std::cos(angle) * m_attention_factor);
      sin[i] = static_cast<Scalar>(std::sin(angle) * m_attention_factor);
    }
  }

  /// Rotates every head of `x [T, heads * head_dim]` in place, row t at position
  /// `first_position + t`.
  void apply(MatrixRef<Scalar> x, Index heads, Index first_position) const {
    check(x, heads);
    if (first_position < 0)
      detail::rope_argument_error("negative position " + std::to_string(first_position));
    if (x.rows() > 0 && first_position > std::numeric_limits<Index>::max() - (x.rows() - 1))
      detail::rope_argument_error("positions " + std::to_string(first_position) + " + " + std::to_string(x.rows() - 1) +
                                  " overflow a 64-bit index");
    for (Index t = 0; t < x.rows(); ++t) rotate_row(x.row(t).data(), heads, first_position + t);
  }

  /// Rotates every head of `x [T, heads * head_dim]` in place, row t at position
  /// `positions[t]` (`T` values >= 0, any order: batches of sequences, caches, padding).
  /// (A template so that a literal `0` picks the first_position overload, not a null pointer.)
  template <class P, class = std::enable_if_t<std::is_same<P, Index>::value>>
  void apply(MatrixRef<Scalar> x, Index heads, const P* positions) const {
    check(x, heads);
    if (x.rows() > 0 && positions == nullptr)
      detail::rope_argument_error("null positions pointer");
    for (Index t = 0; t < x.rows(); ++t)
      if (positions[t] < 0)
        detail::rope_argument_error("negative position " + std::to_string(positions[t]) +
                                    " at row " + std::to_string(t));
    for (Index t = 0; t < x.rows(); ++t) rotate_row(x.row(t).data(), heads, positions[t]);
  }

  /// As above, positions `[T]` in an Eigen vector.
  void apply(MatrixRef<Scalar> x, Index heads, const Eigen::Ref<const Positions>& positions) const {
    if (positions.size() != x.rows())
      MHA_THROW(shape_error, "[mha.shape] RotaryEmbedding: expected " + std::to_string(x.rows()) +
                                 " positions (one per row), got " + std::to_string(positions.size()));
    apply(x, heads, positions.data());
  }

 private:
  // Frequencies handled per block when cos/sin are computed on the fly: stack buffers, so that
  // apply() never allocates whatever rotary_dim is.
  static constexpr Index kOnTheFlyBlock = 64;

  void require_configured() const {
    if (empty()) detail::rope_argument_error("empty (default-constructed) embedding");
  }

  void check(const MatrixRef<Scalar>& x, Index heads) const {
    require_configured();
    if (heads <= 0) detail::rope_argument_error("heads must be > 0, got " + std::to_string(heads));
    if (x.cols() != heads * m_options.head_dim)
      MHA_THROW(shape_error, "[mha.shape] RotaryEmbedding: expected " + std::to_string(heads) +
                                 " heads * head_dim " + std::to_string(m_options.head_dim) + " = " +
                                 std::to_string(heads * m_options.head_dim) + " columns, got " +
                                 std::to_string(x.cols()));
  }

  // Rotates pairs [i0, i0 + n) of every head of one token row.
  void rotate_pairs(Scalar* row, Index heads, Index i0, Index n, const Scalar* cos,
                    const Scalar* sin) const {
    const Index d = m_options.head_dim;
    const Index half = m_options.rotary_dim / 2;
    for (Index h = 0; h < heads; ++h) {
      Scalar* head = row + h * d;
      if (m_options.layout == RopeLayout::rotate_half) {
        Scalar* a = head + i0;         // dims [i0, i0 + n)
        Scalar* b = head + half + i0;  // their partners, r/2 further
        for (Index i = 0; i < n; ++i) {
          const Scalar x1 = a[i], x2 = b[i];
          a[i] = x1 * cos[i] - x2 * sin[i];
          b[i] = x2 * cos[i] + x1 * sin[i];
        }
      } else {
        Scalar* p = head + 2 * i0;  // pairs (2i, 2i + 1)
        for (Index i = 0; i < n; ++i) {
          const Scalar x1 = p[2 * i], x2 = p[2 * i + 1];
          p[2 * i] = x1 * cos[i] - x2 * sin[i];
          p[2 * i + 1] = x2 * cos[i] + x1 * sin[i];
        }
      }
    }
  }

  void rotate_row(Scalar* row, Index heads, Index position) const {
    const Index half = m_options.rotary_dim / 2;
    if (position < m_options.max_positions) {
      rotate_pairs(row, heads, 0, half, m_cos.row(position).data(), m_sin.row(position).data());
      return;
    }
    Scalar cos[kOnTheFlyBlock];  // [block] cos/sin of pairs [i0, i0 + n)
    Scalar sin[kOnTheFlyBlock];
    for (Index i0 = 0; i0 < half; i0 += kOnTheFlyBlock) {
      const Index n = std::min(kOnTheFlyBlock, half - i0);
      for (Index i = 0; i < n; ++i) {
        const double angle = static_cast<double>(position) * m_inv_freq[i0 + i];
        cos[i] = static_cast<Scalar>(std::cos(angle) * m_attention_factor);
        sin[i] = static_cast<Scalar>(std::sin(angle) * m_attention_factor);
      }
      rotate_pairs(row, heads, i0, n, cos, sin);
    }
  }

  void validate() const {
    const RopeOptions& o = m_options;
    const RopeScaling& s = o.scaling;
    using detail::number_string;
    using detail::rope_argument_error;
    if (o.head_dim <= 0) rope_argument_error("head_dim must be > 0, got " + std::to_string(o.head_dim));
    if (o.rotary_dim <= 0 || o.rotary_dim > o.head_dim)
      rope_argument_error("rotary_dim must be in [1, head_dim = " + std::to_string(o.head_dim) +
                          "], got " + std::to_string(o.rotary_dim));
    if (o.rotary_dim % 2 != 0)
      rope_argument_error("rotary_dim must be even, got " + std::to_string(o.rotary_dim));
    if (!(o.theta > 0.0) || !std::isfinite(o.theta))
      rope_argument_error("theta must be finite and > 0, got " + number_string(o.theta));
    if (o.max_positions < 0)
      rope_argument_error("max_positions must be >= 0, got " + std::to_string(o.max_positions));
    if (s.type == RopeScalingType::none) return;
    if (!(s.factor > 0.0) || !std::isfinite(s.factor))
      rope_argument_error("scaling factor must be finite and > 0, got " + number_string(s.factor));
    if (s.type == RopeScalingType::linear) return;
    if (s.original_max_position_embeddings <= 0)
      rope_argument_error("original_max_position_embeddings must be > 0, got " +
                          std::to_string(s.original_max_position_embeddings));
    if (s.type == RopeScalingType::llama3) {
      // HF divides by (high - low) and by low: both must be well defined.
      if (!(s.low_freq_factor > 0.0) || !(s.high_freq_factor > s.low_freq_factor))
        rope_argument_error("llama3 needs 0 < low_freq_factor < high_freq_factor, got low_freq_factor " +
                            number_string(s.low_freq_factor) + ", high_freq_factor " +
                            number_string(s.high_freq_factor));
      return;
    }
    // yarn: find_correction_dim takes log(original / (beta * 2 pi)), so beta > 0; HF warns when
    // beta_fast < beta_slow (the ramp would run backwards).
    if (!(s.beta_slow > 0.0) || !(s.beta_fast >= s.beta_slow))
      rope_argument_error("yarn needs 0 < beta_slow <= beta_fast, got beta_fast " +
                          number_string(s.beta_fast) + ", beta_slow " + number_string(s.beta_slow));
    if (s.attention_factor && (!(*s.attention_factor > 0.0) || !std::isfinite(*s.attention_factor)))
      rope_argument_error("yarn attention_factor must be finite and > 0, got " +
                          number_string(*s.attention_factor));
  }

  // HF `_compute_*_parameters`, in double (HF computes in float32).
  Eigen::VectorXd compute_inv_freq() const {
    const RopeOptions& o = m_options;
    const RopeScaling& s = o.scaling;
    const Index r = o.rotary_dim;
    const Index half = r / 2;
    Eigen::VectorXd inv(half);  // [r/2]
    for (Index i = 0; i < half; ++i)
      inv[i] = 1.0 / std::pow(o.theta, static_cast<double>(2 * i) / static_cast<double>(r));
    constexpr double kPi = 3.141592653589793238462643383279502884;
    switch (s.type) {
      case RopeScalingType::none:
        break;
      case RopeScalingType::linear:
        inv /= s.factor;
        break;
      case RopeScalingType::llama3: {
        // _compute_llama3_parameters: by wavelength 2 pi / inv_freq.
        const double context = static_cast<double>(s.original_max_position_embeddings);
        const double low_freq_wavelen = context / s.low_freq_factor;
        const double high_freq_wavelen = context / s.high_freq_factor;
        for (Index i = 0; i < half; ++i) {
          const double wavelen = 2.0 * kPi / inv[i];
          if (wavelen > low_freq_wavelen) {
            inv[i] /= s.factor;  // low frequency: interpolate
          } else if (!(wavelen < high_freq_wavelen)) {
            const double smooth =
                (context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
            inv[i] = (1.0 - smooth) * inv[i] / s.factor + smooth * inv[i];
          }  // high frequency: unchanged
        }
        break;
      }
      case RopeScalingType::yarn: {
        // _compute_yarn_parameters: the dim (out of r) that makes `rotations` turns over the
        // original context, the ramp between the beta_fast and beta_slow dims, and the blend.
        const double context = static_cast<double>(s.original_max_position_embeddings);
        auto correction_dim = [&](double rotations) {
          return static_cast<double>(r) * std::log(context / (rotations * 2.0 * kPi)) /
                 (2.0 * std::log(o.theta));
        };
        double low = correction_dim(s.beta_fast);
        double high = correction_dim(s.beta_slow);
        if (s.truncate) {
          low = std::floor(low);
          high = std::ceil(high);
        }
        low = std::max(low, 0.0);
        high = std::min(high, static_cast<double>(r - 1));
        if (low == high) high += 0.001;  // HF: "prevent singularity"
        for (Index i = 0; i < half; ++i) {
          const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
          const double extrapolation = 1.0 - ramp;  // weight of the unscaled frequency
          inv[i] = inv[i] / s.factor * (1.0 - extrapolation) + inv[i] * extrapolation;
        }
        break;
      }
    }
    return inv;
  }

  double compute_attention_factor() const {
    const RopeScaling& s = m_options.scaling;
    if (s.type != RopeScalingType::yarn) return 1.0;
    if (s.attention_factor) return *s.attention_factor;
    if (s.mscale != 0.0 && s.mscale_all_dim != 0.0)
      return detail::yarn_mscale(s.factor, s.mscale) / detail::yarn_mscale(s.factor, s.mscale_all_dim);
    return detail::yarn_mscale(s.factor, 1.0);
  }

  RopeOptions m_options;
  Eigen::VectorXd m_inv_freq;    // [r/2]
  double m_attention_factor = 1.0;
  Matrix<Scalar> m_cos;          // [max_positions, r/2], attention factor included
  Matrix<Scalar> m_sin;          // [max_positions, r/2]
};

/// Single-precision rotary embedding.
using RotaryEmbeddingf = RotaryEmbedding<float>;
/// Double-precision rotary embedding.
using RotaryEmbeddingd = RotaryEmbedding<double>;

/// Permutes the rows of a q or k projection weight `[heads * head_dim, in]` (or of a bias viewed
/// as `[heads * head_dim, 1]`) so that rotate-half RoPE on its output equals interleaved RoPE on
/// the original's output (with the same permutation of the output dims). Within each head, row
/// `2j + e` (interleaved pair j, e in {0, 1}) moves to row `e * r/2 + j`, for `j < r/2`; rows
/// `[r, head_dim)` stay. This is the `permute` of Hugging Face's `convert_llama_weights_to_hf.py`
/// (there with r = head_dim), which turns Meta's checkpoints into HF's layout.
/// Throws shape_error (`[mha.shape]`) when the rows are not `heads * head_dim`; argument_error
/// (`[mha.argument]`) for heads or head_dim <= 0, or rotary_dim odd, not positive or larger than
/// head_dim (0 means head_dim).
template <class Derived>
Matrix<typename Derived::Scalar> rope_interleaved_to_half_rows(const Eigen::MatrixBase<Derived>& w,
                                                               Index heads, Index head_dim,
                                                               Index rotary_dim = 0);

/// The inverse of `rope_interleaved_to_half_rows`: row `e * r/2 + j` moves to row `2j + e`
/// (turns HF-layout q/k weights back into Meta's). Same shapes and errors.
template <class Derived>
Matrix<typename Derived::Scalar> rope_half_to_interleaved_rows(const Eigen::MatrixBase<Derived>& w,
                                                               Index heads, Index head_dim,
                                                               Index rotary_dim = 0);

namespace detail {

// to_half: destination row of interleaved row `2j + e` is `e * r/2 + j`; otherwise the inverse.
template <class Scalar>
Matrix<Scalar> permute_rope_rows(const ConstMatrixRef<Scalar>& w, Index heads, Index head_dim,
                                 Index rotary_dim, bool to_half) {
  const char* name = to_half ? "rope_interleaved_to_half_rows" : "rope_half_to_interleaved_rows";
  if (heads <= 0 || head_dim <= 0)
    MHA_THROW(argument_error, std::string("[mha.argument] ") + name +
                                  ": heads and head_dim must be > 0, got " + std::to_string(heads) +
                                  ", " + std::to_string(head_dim));
  const Index r = rotary_dim == 0 ? head_dim : rotary_dim;
  if (r <= 0 || r > head_dim || r % 2 != 0)
    MHA_THROW(argument_error, std::string("[mha.argument] ") + name +
                                  ": rotary_dim must be even and in [2, head_dim = " +
                                  std::to_string(head_dim) + "], got " + std::to_string(r));
  check_shape(name, heads * head_dim, -1, w.rows(), w.cols());
  Matrix<Scalar> out = w;  // [heads * head_dim, in]; rows past r in each head stay
  for (Index h = 0; h < heads; ++h)
    for (Index j = 0; j < r / 2; ++j)
      for (Index e = 0; e < 2; ++e) {
        const Index interleaved = h * head_dim + 2 * j + e;
        const Index half = h * head_dim + e * (r / 2) + j;
        if (to_half)
          out.row(half) = w.row(interleaved);
        else
          out.row(interleaved) = w.row(half);
      }
  return out;
}

}  // namespace detail

template <class Derived>
Matrix<typename Derived::Scalar> rope_interleaved_to_half_rows(const Eigen::MatrixBase<Derived>& w,
                                                               Index heads, Index head_dim,
                                                               Index rotary_dim) {
  using Scalar = typename Derived::Scalar;
  return detail::permute_rope_rows<Scalar>(ConstMatrixRef<Scalar>(w), heads, head_dim, rotary_dim, true);
}

template <class Derived>
Matrix<typename Derived::Scalar> rope_half_to_interleaved_rows(const Eigen::MatrixBase<Derived>& w,
                                                               Index heads, Index head_dim,
                                                               Index rotary_dim) {
  using Scalar = typename Derived::Scalar;
  return detail::permute_rope_rows<Scalar>(ConstMatrixRef<Scalar>(w), heads, head_dim, rotary_dim, false);
}

}  // namespace mha
