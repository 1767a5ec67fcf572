// mha-run: runs a torch.nn.MultiheadAttention (batch_first) stored in a safetensors file on the
// inputs stored next to it, and writes the outputs to another safetensors file.
//
//     mha-run IN.safetensors OUT.safetensors [--threads N]
//
// IN holds, without prefix:
//   - the module's state_dict (in_proj_weight or q/k/v_proj_weight, in_proj_bias, out_proj.weight,
//     out_proj.bias, bias_k, bias_v; see <mha/io/state_dict.hpp>);
//   - query [N, L, E], key [N, S, kdim], value [N, S, vdim] (batch first);
//   - optionally attn_mask [L, S] or [N * num_heads, L, S] (slice n * num_heads + h): BOOL with
//     true = blocked, or float and additive;
//   - optionally key_padding_mask [N, S]: BOOL with true = padding, or float and additive;
//   - __metadata__: num_heads (required), is_causal, add_zero_attn, need_weights,
//     average_attn_weights, each "true" or "false" (defaults false, false, true, true).
//     is_causal is mha's end-aligned causal mask (query i sees key j iff j <= i + S - L).
// The float tensors it uses must all be F32 or all F64; it computes in that precision. Other
// tensors are ignored. When key and value hold the same bytes as query, it runs self-attention
// on one matrix (mha's packed projection); the result is the same.
//
// OUT receives attn_output [N, L, E] and, with need_weights, attn_output_weights [N, L, S'] when
// averaged or [N, num_heads, L, S'] per head (S' = S + add_bias_kv + add_zero_attn), in the
// input's dtype.
//
// Decoder mode (__metadata__ mode = "decoder"): IN holds a decoder self-attention layer with
// Hugging Face names (q_proj.weight [H d, E], k_proj.weight [Hkv d, E], v_proj.weight,
// o_proj.weight [E, H d], optional biases, q_norm.weight / k_norm.weight [d], alibi_slopes [H];
// see <mha/io/decoder.hpp>) and hidden_states [N, T, E]. Metadata strings: num_heads (required),
// num_kv_heads (H), head_dim (E / H), rope = none|half|interleaved (none), rope_theta (10000),
// rotary_dim (d), rope_scaling (a JSON object in HF config form), alibi (false), sliding_window
// (0: none), softcap (0: none), scale, qk_norm_eps (1e-6), causal (true), prefill (T: the first
// call takes tokens [0, prefill), the rest go through the KV cache `chunk` tokens per call),
// chunk (1), cache_dtype = float|bf16|f16 (float: the input's precision). OUT gets attn_output
// [N, T, E].
//
// Other metadata keys are descriptions and are ignored, except a key one edit or one swap of
// neighbours away from a setting of 5 letters or more ("sliding_windw", "is_casual"), which is
// an error rather than a silently defaulted setting.
//
// --threads N sets the thread count (N >= 1; without it, mha's default).
// Exit status: 0 on success, 2 for a bad command line, 1 for any other error; errors are one
// line on stderr starting with "mha-run: ".

#include <mha/io.hpp>
#include <mha/mha.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using mha::Index;
using mha::io::Dtype;
using mha::io::SafetensorsFile;
using mha::io::Tensor;

const char* const usage =
    "usage: mha-run IN.safetensors OUT.safetensors [--threads N]\n"
    "  IN:  a torch.nn.MultiheadAttention state_dict, query [N,L,E], key [N,S,kdim], value [N,S,vdim],\n"
    "       optional attn_mask, key_padding_mask; __metadata__ num_heads (required), is_causal,\n"
    "       add_zero_attn, need_weights, average_attn_weights (\"true\"/\"false\")\n"
    "  OUT: attn_output [N,L,E] and, with need_weights, attn_output_weights\n"
    "  Decoder mode (__metadata__ mode = \"decoder\"): HF-named q/k/v/o_proj weights and\n"
    "       hidden_states [N,T,E]; see the comment at the top of examples/mha_run.cpp\n";

// A bad command line (exit status 2).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Any other failure (exit status 1).
[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

// Edit distance with adjacent transpositions (optimal string alignment: insertions, deletions,
// substitutions, swaps of neighbours), case-insensitive.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  auto same = [&](std::size_t i, std::size_t j) {  // a[i - 1] vs b[j - 1]
    return std::tolower(static_cast<unsigned char>(a[i - 1])) == std::tolower(static_cast<unsigned char>(b[j - 1]));
  };
  // dist[i][j]: between a's first i and b's first j characters.
  std::vector<std::vector<std::size_t>> dist(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) dist[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) dist[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i)
    for (std::size_t j = 1; j <= b.size(); ++j) {
      dist[i][j] = std::min({dist[i - 1][j] + 1, dist[i][j - 1] + 1, dist[i - 1][j - 1] + (same(i, j) ? 0 : 1)});
      if (i > 1 && j > 1 && same(i, j - 1) && same(i - 1, j)) dist[i][j] = std::min(dist[i][j], dist[i - 2][j - 2] + 1);
    }
  return dist[a.size()][b.size()];
}

// Metadata keys that are not settings are descriptions (a fixture's "case", "model",
// safetensors' "format") and are ignored, except one a single edit or swap away from a setting
// of 5 letters or more, which stops the run: a misspelt "sliding_windw" or "is_casual" would
// otherwise run with the default and exit 0. Shorter settings ("mode", "rope") are left out:
// one edit from them is another word ("model", "code").
void reject_misspelt_settings(const SafetensorsFile& file, std::initializer_list<const char*> settings) {
  for (const auto& entry : file.metadata()) {
    const std::string& key = entry.first;
    if (std::any_of(settings.begin(), settings.end(), [&](const char* s) { return key == s; })) continue;
    for (const char* setting : settings)
      if (std::string(setting).size() >= 5 && edit_distance(key, setting) <= 1)
        fail("metadata " + mha::io::detail::quoted(key) + " is not a setting; did you mean " +
             mha::io::detail::quoted(setting) + "?");
  }
}

struct Arguments {
  std::string in;
  std::string out;
  int threads = 0;  // 0: mha's default
};

int parse_threads(const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const long n = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE || n < 1 || n > INT_MAX || text[0] == '+' ||
      text[0] == ' ')
    throw UsageError("--threads expects a positive integer, got \"" + text + "\"");
  return static_cast<int>(n);
}

Arguments parse_arguments(int argc, char** argv) {
  Arguments args;
  std::vector<std::string> positional;
  bool threads_seen = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads") {
      if (threads_seen) throw UsageError("--threads given twice");
      if (i + 1 >= argc) throw UsageError("--threads expects a value");
      args.threads = parse_threads(argv[++i]);
      threads_seen = true;
    } else if (a.size() > 1 && a[0] == '-') {
      throw UsageError("unknown option \"" + a + "\" (usage: mha-run IN.safetensors OUT.safetensors [--threads N])");
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2)
    throw UsageError("expected 2 file arguments, got " + std::to_string(positional.size()) +
                     " (usage: mha-run IN.safetensors OUT.safetensors [--threads N])");
  args.in = positional[0];
  args.out = positional[1];
  return args;
}

// What __metadata__ asks for.
struct Settings {
  Index num_heads = 0;
  bool is_causal = false;
  bool add_zero_attn = false;
  bool need_weights = true;
  bool average_attn_weights = true;
};

bool metadata_flag(const SafetensorsFile& file, const char* key, bool default_value) {
  const auto it = file.metadata().find(key);
  if (it == file.metadata().end()) return default_value;
  if (it->second == "true") return true;
  if (it->second == "false") return false;
  fail(std::string("metadata ") + key + ": expected \"true\" or \"false\", got " + mha::io::detail::quoted(it->second));
}

Settings read_settings(const SafetensorsFile& file) {
  reject_misspelt_settings(file, {"mode", "num_heads", "is_causal", "add_zero_attn", "need_weights",
                                  "average_attn_weights"});
  Settings s;
  const auto it = file.metadata().find("num_heads");
  if (it == file.metadata().end()) fail("metadata num_heads is missing (a positive integer, e.g. \"8\")");
  const std::string& text = it->second;
  Index n = 0;
  bool ok = !text.empty() && text.size() <= 9;
  for (char c : text) {
    if (c < '0' || c > '9') ok = false;
    n = n * 10 + (c - '0');
  }
  if (!ok || n < 1) fail("metadata num_heads: expected a positive integer, got " + mha::io::detail::quoted(text));
  s.num_heads = n;
  s.is_causal = metadata_flag(file, "is_causal", false);
  s.add_zero_attn = metadata_flag(file, "add_zero_attn", false);
  s.need_weights = metadata_flag(file, "need_weights", true);
  s.average_attn_weights = metadata_flag(file, "average_attn_weights", true);
  return s;
}

const Tensor& required(const SafetensorsFile& file, const char* name) {
  const Tensor* t = file.find(name);
  if (!t) fail(std::string("tensor ") + name + " is missing");
  return *t;
}

void expect_shape(const char* name, const Tensor& t, const std::vector<std::int64_t>& shape) {
  if (t.shape() != shape)
    fail(std::string(name) + ": expected shape " + mha::io::detail::shape_string(shape) + ", got " +
         mha::io::detail::shape_string(t.shape()));
}

// Every float tensor the run uses must have the precision of the computation, which the input
// tensor `like` (query, or hidden_states in decoder mode) sets.
void expect_dtype(const char* name, const Tensor& t, Dtype dtype, const char* like = "query") {
  if (t.dtype() != dtype)
    fail(std::string(name) + ": expected dtype " + mha::io::dtype_name(dtype) + " like " + like + ", got " +
         mha::io::dtype_name(t.dtype()));
}

template <class Scalar>
SafetensorsFile run(const SafetensorsFile& in, const Settings& settings, int threads) {
  const Dtype dtype = std::is_same<Scalar, float>::value ? Dtype::f32 : Dtype::f64;
  for (const char* name : {"in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
                           "out_proj.weight", "out_proj.bias", "bias_k", "bias_v", "key", "value"})
    if (const Tensor* t = in.find(name)) expect_dtype(name, *t, dtype);

  const mha::MultiHeadAttention<Scalar> module =
      mha::io::load_multi_head_attention<Scalar>(in, settings.num_heads, "", settings.add_zero_attn);
  const std::int64_t H = module.num_heads();

  // Inputs [N, L, E], [N, S, kdim], [N, S, vdim], viewed as [N * tokens, features].
  const Tensor& query = required(in, "query");
  const Tensor& key = required(in, "key");
  const Tensor& value = required(in, "value");
  if (query.rank() != 3) fail("query: expected shape [N, L, E], got " + mha::io::detail::shape_string(query.shape()));
  const std::int64_t N = query.shape()[0], L = query.shape()[1];
  if (key.rank() != 3) fail("key: expected shape [N, S, kdim], got " + mha::io::detail::shape_string(key.shape()));
  const std::int64_t S = key.shape()[1];
  expect_shape("query [N, L, E]", query, {N, L, module.embed_dim()});
  expect_shape("key [N, S, kdim]", key, {N, S, module.kdim()});
  expect_shape("value [N, S, vdim]", value, {N, S, module.vdim()});
  if (N <= 0 || L <= 0 || S <= 0)
    fail("query, key: expected N, L, S > 0, got N = " + std::to_string(N) + ", L = " + std::to_string(L) +
         ", S = " + std::to_string(S));

  const bool self_attention = key == query && value == query;
  const mha::Matrix<Scalar> q = query.to_matrix<Scalar>();
  const mha::Matrix<Scalar> k = self_attention ? mha::Matrix<Scalar>() : key.to_matrix<Scalar>();
  const mha::Matrix<Scalar> v = self_attention ? mha::Matrix<Scalar>() : value.to_matrix<Scalar>();
  const mha::BatchView<Scalar> qv(q, N);
  const mha::BatchView<Scalar> kv = self_attention ? qv : mha::BatchView<Scalar>(k, N);
  const mha::BatchView<Scalar> vv = self_attention ? qv : mha::BatchView<Scalar>(v, N);

  mha::ForwardOptions<Scalar> options;
  options.is_causal = settings.is_causal;
  options.need_weights = settings.need_weights;
  options.average_attn_weights = settings.average_attn_weights;
  options.num_threads = threads;

  mha::AttentionMask<Scalar> attn_mask;
  if (const Tensor* m = in.find("attn_mask")) {
    Index slices = 1;
    if (m->rank() == 3) {
      expect_shape("attn_mask [N * num_heads, L, S]", *m, {N * H, L, S});
      slices = N * H;
    } else {
      expect_shape("attn_mask [L, S]", *m, {L, S});
    }
    if (m->dtype() == Dtype::boolean) {
      attn_mask = mha::AttentionMask<Scalar>::blocked(m->to_bool_matrix(), slices);
    } else {
      expect_dtype("attn_mask (BOOL or float)", *m, dtype);
      attn_mask = mha::AttentionMask<Scalar>::additive(m->to_matrix<Scalar>(), slices);
    }
    options.attn_mask = &attn_mask;
  }
  mha::KeyPaddingMask<Scalar> key_padding_mask;
  if (const Tensor* m = in.find("key_padding_mask")) {
    expect_shape("key_padding_mask [N, S]", *m, {N, S});
    if (m->dtype() == Dtype::boolean) {
      key_padding_mask = mha::KeyPaddingMask<Scalar>::padding(m->to_bool_matrix());
    } else {
      expect_dtype("key_padding_mask (BOOL or float)", *m, dtype);
      key_padding_mask = mha::KeyPaddingMask<Scalar>::additive(m->to_matrix<Scalar>());
    }
    options.key_padding_mask = &key_padding_mask;
  }

  const mha::AttentionResult<Scalar> result = module.forward(qv, kv, vv, options);

  SafetensorsFile out;
  out.insert("attn_output", Tensor::from_matrix(result.output, {N, L, module.embed_dim()}));
  if (settings.need_weights) {
    const std::int64_t keys = result.weights.cols();  // S'
    const std::vector<std::int64_t> shape =
        settings.average_attn_weights ? std::vector<std::int64_t>{N, L, keys} : std::vector<std::int64_t>{N, H, L, keys};
    out.insert("attn_output_weights", Tensor::from_matrix(result.weights, shape));
  }
  return out;
}

// --------------------------------------------------------------------------------------------
// Decoder mode.

const std::string* metadata_value(const SafetensorsFile& file, const char* key) {
  const auto it = file.metadata().find(key);
  return it == file.metadata().end() ? nullptr : &it->second;
}

Index metadata_integer(const SafetensorsFile& file, const char* key, Index default_value, Index minimum) {
  const std::string* text = metadata_value(file, key);
  if (!text) return default_value;
  errno = 0;
  char* end = nullptr;
  const long long n = std::strtoll(text->c_str(), &end, 10);
  if (text->empty() || *end != '\0' || errno == ERANGE || n < minimum || (*text)[0] == ' ' || (*text)[0] == '+')
    fail(std::string("metadata ") + key + ": expected an integer >= " + std::to_string(minimum) + ", got " +
         mha::io::detail::quoted(*text));
  return static_cast<Index>(n);
}

double metadata_number(const SafetensorsFile& file, const char* key, double default_value) {
  const std::string* text = metadata_value(file, key);
  if (!text) return default_value;
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(text->c_str(), &end);
  if (text->empty() || *end != '\0' || errno == ERANGE || !std::isfinite(x) || (*text)[0] == ' ')
    fail(std::string("metadata ") + key + ": expected a finite number, got " + mha::io::detail::quoted(*text));
  return x;
}

struct DecoderRun {
  mha::GroupedQueryAttentionOptions options;
  Index prefill = 0;  // tokens of the first call
  Index chunk = 1;    // tokens of every later call
  std::string cache_dtype = "float";
};

DecoderRun read_decoder_settings(const SafetensorsFile& in, Index E, Index T) {
  reject_misspelt_settings(in, {"mode", "num_heads", "num_kv_heads", "head_dim", "rope", "rope_theta", "rotary_dim",
                                "rope_scaling", "alibi", "sliding_window", "softcap", "scale", "qk_norm_eps",
                                "causal", "prefill", "chunk", "cache_dtype"});
  DecoderRun run;
  mha::GroupedQueryAttentionOptions& o = run.options;
  if (!metadata_value(in, "num_heads")) fail("metadata num_heads is missing (a positive integer, e.g. \"8\")");
  o.embed_dim = E;
  o.num_heads = metadata_integer(in, "num_heads", 0, 1);
  o.num_kv_heads = metadata_integer(in, "num_kv_heads", o.num_heads, 1);
  o.head_dim = metadata_integer(in, "head_dim", 0, 1);
  const std::string* rope = metadata_value(in, "rope");
  if (rope && *rope != "none") {
    if (*rope != "half" && *rope != "interleaved")
      fail("metadata rope: expected none, half or interleaved, got " + mha::io::detail::quoted(*rope));
    mha::RopeOptions r;
    r.layout = *rope == "half" ? mha::RopeLayout::rotate_half : mha::RopeLayout::interleaved;
    r.theta = metadata_number(in, "rope_theta", 10000.0);
    r.rotary_dim = metadata_integer(in, "rotary_dim", 0, 1);
    if (const std::string* scaling = metadata_value(in, "rope_scaling")) {
      const nlohmann::json j = nlohmann::json::parse(*scaling, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) fail("metadata rope_scaling: not valid JSON: " + mha::io::detail::quoted(*scaling));
      r.scaling = mha::io::rope_scaling_from_json(j);
    }
    r.max_positions = T;
    o.rope = r;
  } else {
    for (const char* key : {"rope_theta", "rotary_dim", "rope_scaling"})
      if (metadata_value(in, key)) fail(std::string("metadata ") + key + " is given but rope is none");
  }
  o.alibi = metadata_flag(in, "alibi", false);
  o.sliding_window = metadata_integer(in, "sliding_window", 0, 0);  // 0: none, as in the options
  o.softcap = metadata_number(in, "softcap", 0.0);
  if (!(o.softcap >= 0))
    fail("metadata softcap: expected c > 0 (or 0 for none), got " + mha::io::detail::quoted(*metadata_value(in, "softcap")));
  if (metadata_value(in, "scale")) o.scale = metadata_number(in, "scale", 0.0);
  o.qk_norm_eps = metadata_number(in, "qk_norm_eps", 1e-6);
  if (metadata_value(in, "qk_norm_eps") && !in.contains("q_norm.weight") && !in.contains("k_norm.weight"))
    fail("metadata qk_norm_eps is given but the file has no q_norm.weight / k_norm.weight");
  o.causal = metadata_flag(in, "causal", true);
  run.prefill = metadata_integer(in, "prefill", T, 1);
  run.chunk = metadata_integer(in, "chunk", 1, 1);
  if (run.prefill > T) fail("metadata prefill: expected <= T = " + std::to_string(T) + ", got " + std::to_string(run.prefill));
  if (!o.causal && run.prefill != T) fail("metadata prefill: a non-causal layer runs the whole sequence at once (prefill = T)");
  if (const std::string* c = metadata_value(in, "cache_dtype")) run.cache_dtype = *c;
  if (run.cache_dtype != "float" && run.cache_dtype != "bf16" && run.cache_dtype != "f16")
    fail("metadata cache_dtype: expected float, bf16 or f16, got " + mha::io::detail::quoted(run.cache_dtype));
  return run;
}

// Tokens [t0, t0 + t) of every sequence of x [N * T, E] through the cache, into out.
template <class Scalar, class Storage>
void run_decoder_calls(const mha::GroupedQueryAttention<Scalar>& layer, const mha::Matrix<Scalar>& x, Index N, Index T,
                       const DecoderRun& run, int threads, mha::Matrix<Scalar>& out) {
  mha::KVCache<Storage> cache = layer.template make_cache<Storage>(N, T, std::max(run.prefill, run.chunk));
  mha::DecoderWorkspace<Scalar> workspace;
  mha::Matrix<Scalar> xs, ys;  // [N * t, E]
  for (Index t0 = 0; t0 < T;) {
    const Index t = std::min(t0 == 0 ? run.prefill : run.chunk, T - t0);
    xs.resize(N * t, x.cols());
    ys.resize(N * t, x.cols());
    for (Index n = 0; n < N; ++n) xs.middleRows(n * t, t) = x.middleRows(n * T + t0, t);
    layer.forward(xs, cache, workspace, ys, threads);
    for (Index n = 0; n < N; ++n) out.middleRows(n * T + t0, t) = ys.middleRows(n * t, t);
    t0 += t;
  }
}

template <class Scalar>
SafetensorsFile run_decoder(const SafetensorsFile& in, int threads) {
  const Dtype dtype = std::is_same<Scalar, float>::value ? Dtype::f32 : Dtype::f64;
  const Tensor& hidden = required(in, "hidden_states");
  if (hidden.rank() != 3 || hidden.shape()[0] <= 0 || hidden.shape()[1] <= 0 || hidden.shape()[2] <= 0)
    fail("hidden_states: expected shape [N, T, E] with N, T, E > 0, got " + mha::io::detail::shape_string(hidden.shape()));
  const Index N = hidden.shape()[0], T = hidden.shape()[1], E = hidden.shape()[2];
  for (const char* name : {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "q_proj.bias",
                           "k_proj.bias", "v_proj.bias", "o_proj.bias", "q_norm.weight", "k_norm.weight",
                           "alibi_slopes"})
    if (const Tensor* t = in.find(name)) expect_dtype(name, *t, dtype, "hidden_states");
  const DecoderRun run = read_decoder_settings(in, E, T);
  const mha::GroupedQueryAttention<Scalar> layer = mha::io::load_grouped_query_attention<Scalar>(in, run.options);
  const mha::Matrix<Scalar> x = hidden.to_matrix<Scalar>();  // [N * T, E]
  mha::Matrix<Scalar> out(N * T, E);
  if (!run.options.causal)
    out = layer.forward(x, N, threads);
  else if (run.cache_dtype == "bf16")
    run_decoder_calls<Scalar, Eigen::bfloat16>(layer, x, N, T, run, threads, out);
  else if (run.cache_dtype == "f16")
    run_decoder_calls<Scalar, Eigen::half>(layer, x, N, T, run, threads, out);
  else
    run_decoder_calls<Scalar, Scalar>(layer, x, N, T, run, threads, out);
  SafetensorsFile result;
  result.insert("attn_output", Tensor::from_matrix(out, {N, T, E}));
  return result;
}

void run_file(const Arguments& args) {
  const SafetensorsFile in = mha::io::read_safetensors(args.in);
  if (const std::string* mode = metadata_value(in, "mode")) {
    if (*mode != "decoder") fail("metadata mode: expected \"decoder\" (or no mode), got " + mha::io::detail::quoted(*mode));
    const Tensor& hidden = required(in, "hidden_states");
    if (hidden.dtype() == Dtype::f32)
      mha::io::write_safetensors(args.out, run_decoder<float>(in, args.threads));
    else if (hidden.dtype() == Dtype::f64)
      mha::io::write_safetensors(args.out, run_decoder<double>(in, args.threads));
    else
      fail(std::string("hidden_states: expected dtype F32 or F64, got ") + mha::io::dtype_name(hidden.dtype()));
    return;
  }
  const Settings settings = read_settings(in);
  const Tensor& query = required(in, "query");
  SafetensorsFile out;
  if (query.dtype() == Dtype::f32)
    out = run<float>(in, settings, args.threads);
  else if (query.dtype() == Dtype::f64)
    out = run<double>(in, settings, args.threads);
  else
    fail(std::string("query: expected dtype F32 or F64, got ") + mha::io::dtype_name(query.dtype()));
  mha::io::write_safetensors(args.out, out);
}

// One line on stderr, whatever the message holds.
int report(const std::string& message, int status) {
  std::string line = message;
  for (char& c : line)
    if (c == '\n' || c == '\r') c = ' ';
  std::fprintf(stderr, "mha-run: %s\n", line.c_str());
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
  }
  try {
    run_file(parse_arguments(argc, argv));
    return 0;
  } catch (const UsageError& e) {
    return report(e.what(), 2);
  } catch (const std::bad_alloc&) {
    return report("out of memory: the file's shapes or settings (in decoder mode sliding_window, which sizes the "
                  "KV cache, and head_dim) need more memory than this machine has",
                  1);
  } catch (const std::exception& e) {
    return report(e.what(), 1);
  } catch (...) {
    return report("unknown error", 1);
  }
}
