// libFuzzer target for the safetensors reader (<mha/io/safetensors.hpp>) and the state_dict
// loader (<mha/io/state_dict.hpp>).
//
// Properties checked on every input:
// - parse_safetensors either returns or throws mha::format_error: any other exception, a crash,
//   an out-of-bounds access (ASan) or undefined behaviour (UBSan) is a finding;
// - a parsed file converts every tensor (to_matrix<float>, to_matrix<double>, to_bool_matrix for
//   BOOL / U8) and survives serialize -> parse unchanged;
// - load_multi_head_attention on it returns or throws mha::format_error / mha::shape_error /
//   mha::argument_error.
//
// Build by hand:
//   clang++ -g -O1 -fsanitize=fuzzer,address,undefined -std=c++17 -I include -I /usr/include/eigen3 \
//       tests/fuzz/fuzz_safetensors.cpp -o fuzz_safetensors
//   cp -r tests/fuzz/corpus /tmp/corpus && ./fuzz_safetensors -max_total_time=60 /tmp/corpus
#include <mha/io.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mha::io::SafetensorsFile file;
  try {
    file = mha::io::parse_safetensors(data, size);
  } catch (const mha::format_error&) {
    return 0;  // rejected: the expected outcome for most inputs
  }

  for (const auto& item : file.tensors()) {
    const mha::io::Tensor& t = item.second;
    const mha::Matrix<float> f = t.to_matrix<float>();
    const mha::Matrix<double> d = t.to_matrix<double>();
    if (f.size() != t.numel() || d.size() != t.numel()) finding("to_matrix size differs from numel");
    if (t.dtype() == mha::io::Dtype::boolean || t.dtype() == mha::io::Dtype::u8)
      if (t.to_bool_matrix().size() != t.numel()) finding("to_bool_matrix size differs from numel");
  }

  const std::vector<std::uint8_t> bytes = mha::io::serialize_safetensors(file);
  std::uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= std::uint64_t(bytes[i]) << (8 * i);
  if (header_size % 8 != 0) finding("written data buffer not 8-byte aligned");
  const mha::io::SafetensorsFile again = mha::io::parse_safetensors(bytes.data(), bytes.size());
  if (again.metadata() != file.metadata() || again.tensors() != file.tensors())
    finding("serialize -> parse changed the file");
  if (mha::io::serialize_safetensors(again) != bytes) finding("serialization is not deterministic");

  try {
    const auto module = mha::io::load_multi_head_attention<float>(file, 1);
    if (module.embed_dim() <= 0) finding("loaded a module with embed_dim <= 0");
  } catch (const mha::format_error&) {
  } catch (const mha::shape_error&) {
  } catch (const mha::argument_error&) {
  }
  return 0;
}
