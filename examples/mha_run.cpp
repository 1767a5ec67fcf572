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
// --threads N sets the thread count (N >= 1; without it, mha's default).
// Exit status: 0 on success, 2 for a bad command line, 1 for any other error; errors are one
// line on stderr starting with "mha-run: ".

#include <mha/io.hpp>
#include <mha/mha.hpp>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
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
    "  OUT: attn_output [N,L,E] and, with need_weights, attn_output_weights\n";

// A bad command line (exit status 2).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Any other failure (exit status 1).
[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

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

// Every float tensor the run uses must have the precision of the computation.
void expect_dtype(const char* name, const Tensor& t, Dtype dtype) {
  if (t.dtype() != dtype)
    fail(std::string(name) + ": expected dtype " + mha::io::dtype_name(dtype) + " like query, got " +
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

void run_file(const Arguments& args) {
  const SafetensorsFile in = mha::io::read_safetensors(args.in);
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
  } catch (const std::exception& e) {
    return report(e.what(), 1);
  } catch (...) {
    return report("unknown error", 1);
  }
}
