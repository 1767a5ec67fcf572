#pragma once
/// \file safetensors.hpp
/// Reading and writing safetensors files, the format of Hugging Face and of
/// `safetensors.torch.save_file`, without any dependency beyond nlohmann-json.
///
/// Format: an 8-byte little-endian unsigned header length `n`, `n` bytes of UTF-8 JSON, then the
/// data buffer. The JSON is an object: an optional `"__metadata__"` object of string values, and
/// one entry per tensor, `name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}`,
/// the offsets in bytes relative to the start of the buffer, the data row-major little-endian.
///
/// Reading is strict, because a file may come from anywhere: every malformed input throws
/// `mha::format_error` (`mha::io_error` when the file cannot be opened or read) whose message
/// starts with `[mha.format]` and names the problem, never reads out of bounds and allocates
/// nothing before the sizes are checked against the input. Rejected, among others:
/// - a header length beyond the file or beyond `max_header_bytes` (100 MB, as the reference
///   implementation), invalid JSON, a JSON value that is not an object, duplicate keys
///   (JSON parsers silently keep one of them), nesting deeper than the format has;
/// - an unknown dtype, a shape that is not an array of non-negative integers or whose element
///   count overflows 64 bits, `data_offsets` that are not two integers, `begin > end`, offsets
///   beyond the buffer, a byte range whose size is not `elements x dtype size`, unknown fields;
/// - `__metadata__` that is not an object of strings;
/// - tensors that overlap, leave a gap between them, or do not end exactly at the end of the
///   buffer: like the reference implementation, the tensors must tile the buffer exactly.
///
/// Writing orders tensors by decreasing element size, then by name (so each tensor is aligned to
/// its element size; the output is deterministic), lists them in the header in that order after
/// `__metadata__`, and pads the header with spaces so that the data buffer starts at a multiple
/// of 8 bytes.
///
/// Byte order: data is decoded and encoded byte by byte (F32 / F64 into float / double are one
/// memcpy on little-endian hosts), so the code is correct on any host.
///
///     mha::io::SafetensorsFile f = mha::io::read_safetensors("in.safetensors");
///     mha::Matrix<float> x = f.at("query").to_matrix<float>();  // [N, L, E] -> [N * L, E]
///     mha::io::SafetensorsFile out;
///     out.metadata()["note"] = "example";
///     out.insert("y", mha::io::Tensor::from_matrix(x, f.at("query").shape()));
///     mha::io::write_safetensors("out.safetensors", out);

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../types.hpp"

namespace mha {
namespace io {

/// The element types of safetensors (the 8-bit float formats are not supported).
enum class Dtype { boolean, u8, i8, u16, i16, u32, i32, u64, i64, f16, bf16, f32, f64 };

/// Largest header accepted by the readers, in bytes (the reference implementation's limit).
inline constexpr std::uint64_t max_header_bytes = 100000000;

/// The dtype's name in a safetensors header: `"BOOL"`, `"U8"`, ..., `"BF16"`, `"F32"`, `"F64"`.
inline const char* dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::boolean: return "BOOL";
    case Dtype::u8: return "U8";
    case Dtype::i8: return "I8";
    case Dtype::u16: return "U16";
    case Dtype::i16: return "I16";
    case Dtype::u32: return "U32";
    case Dtype::i32: return "I32";
    case Dtype::u64: return "U64";
    case Dtype::i64: return "I64";
    case Dtype::f16: return "F16";
    case Dtype::bf16: return "BF16";
    case Dtype::f32: return "F32";
    case Dtype::f64: return "F64";
  }
  return "?";
}

/// Bytes per element.
inline std::size_t dtype_size(Dtype dtype) {
  switch (dtype) {
    case Dtype::boolean:
    case Dtype::u8:
    case Dtype::i8: return 1;
    case Dtype::u16:
    case Dtype::i16:
    case Dtype::f16:
    case Dtype::bf16: return 2;
    case Dtype::u32:
    case Dtype::i32:
    case Dtype::f32: return 4;
    case Dtype::u64:
    case Dtype::i64:
    case Dtype::f64: return 8;
  }
  return 1;
}

/// True for F16, BF16, F32 and F64.
inline bool is_float_dtype(Dtype dtype) {
  return dtype == Dtype::f16 || dtype == Dtype::bf16 || dtype == Dtype::f32 || dtype == Dtype::f64;
}

namespace detail {

inline bool dtype_from_name(const std::string& name, Dtype& dtype) {
  static const Dtype all[] = {Dtype::boolean, Dtype::u8,  Dtype::i8,  Dtype::u16, Dtype::i16,
                              Dtype::u32,     Dtype::i32, Dtype::u64, Dtype::i64, Dtype::f16,
                              Dtype::bf16,    Dtype::f32, Dtype::f64};
  for (Dtype d : all)
    if (name == dtype_name(d)) {
      dtype = d;
      return true;
    }
  return false;
}

/// "1 byte", "2 bytes".
inline std::string byte_count(std::uint64_t n) { return std::to_string(n) + (n == 1 ? " byte" : " bytes"); }

/// `[2, 3]`; `[]` for a scalar.
inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// A string as a JSON literal (quotes, control characters escaped, so that a message stays on
/// one line), cut to about `limit` characters.
inline std::string quoted(const std::string& s, std::size_t limit = 80) {
  std::string q = nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (q.size() > limit) q = q.substr(0, limit) + "...\"";
  return q;
}

/// A JSON value for an error message, cut to about `limit` characters.
inline std::string short_dump(const nlohmann::json& j, std::size_t limit = 60) {
  std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > limit) s = s.substr(0, limit) + "...";
  return s;
}

/// Element count of `shape`; false when a dimension is negative or the count (or the count
/// times `element_size`) exceeds INT64_MAX. Multiplies in order, as the reference does.
inline bool checked_numel(const std::vector<std::int64_t>& shape, std::size_t element_size,
                          std::int64_t& numel) {
  const std::uint64_t limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0) return false;
    const std::uint64_t u = static_cast<std::uint64_t>(d);
    if (u != 0 && n > limit / u) return false;
    n *= u;
  }
  if (n > limit / element_size) return false;
  numel = static_cast<std::int64_t>(n);
  return true;
}

template <class UInt>
UInt load_le(const std::uint8_t* p) {
  UInt v = 0;
  for (std::size_t b = 0; b < sizeof(UInt); ++b) v = static_cast<UInt>(v | (UInt(p[b]) << (8 * b)));
  return v;
}

template <class UInt>
void store_le(UInt v, std::uint8_t* p) {
  for (std::size_t b = 0; b < sizeof(UInt); ++b) p[b] = static_cast<std::uint8_t>(v >> (8 * b));
}

// Same-size reinterpretation (what std::bit_cast does in C++20).
template <class To, class From>
To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of different sizes");
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

/// Element i of little-endian `data` of type `dtype`, converted to Scalar.
template <class Scalar>
Scalar load_element(Dtype dtype, const std::uint8_t* data, std::size_t i) {
  const std::uint8_t* p = data + i * dtype_size(dtype);
  switch (dtype) {
    case Dtype::boolean:
    case Dtype::u8: return static_cast<Scalar>(*p);
    case Dtype::i8: return static_cast<Scalar>(bit_cast<std::int8_t>(*p));
    case Dtype::u16: return static_cast<Scalar>(load_le<std::uint16_t>(p));
    case Dtype::i16: return static_cast<Scalar>(bit_cast<std::int16_t>(load_le<std::uint16_t>(p)));
    case Dtype::u32: return static_cast<Scalar>(load_le<std::uint32_t>(p));
    case Dtype::i32: return static_cast<Scalar>(bit_cast<std::int32_t>(load_le<std::uint32_t>(p)));
    case Dtype::u64: return static_cast<Scalar>(load_le<std::uint64_t>(p));
    case Dtype::i64: return static_cast<Scalar>(bit_cast<std::int64_t>(load_le<std::uint64_t>(p)));
    case Dtype::f16:
      return static_cast<Scalar>(static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(load_le<std::uint16_t>(p))));
    case Dtype::bf16:
      return static_cast<Scalar>(
          static_cast<float>(Eigen::numext::bit_cast<Eigen::bfloat16>(load_le<std::uint16_t>(p))));
    case Dtype::f32: return static_cast<Scalar>(bit_cast<float>(load_le<std::uint32_t>(p)));
    case Dtype::f64: return static_cast<Scalar>(bit_cast<double>(load_le<std::uint64_t>(p)));
  }
  return Scalar(0);
}

[[noreturn]] inline void fail_format(const std::string& source, const std::string& what) {
  MHA_THROW(format_error, "[mha.format] " + source + ": " + what);
  std::abort();  // a user-defined MHA_THROW must not return
}

}  // namespace detail

/// One tensor: dtype, shape and its row-major little-endian bytes (owned).
class Tensor {
 public:
  /// Takes `data` as it is; throws `mha::shape_error` unless it holds exactly
  /// `prod(shape) * dtype_size(dtype)` bytes (a rank-0 shape `{}` is a scalar, one element).
  Tensor(Dtype dtype, std::vector<std::int64_t> shape, std::vector<std::uint8_t> data)
      : m_dtype(dtype), m_shape(std::move(shape)), m_data(std::move(data)) {
    if (!detail::checked_numel(m_shape, dtype_size(m_dtype), m_numel))
      MHA_THROW(shape_error, "[mha.shape] Tensor: shape " + detail::shape_string(m_shape) +
                                 " has a negative dimension or more than 2^63 bytes of " +
                                 dtype_name(m_dtype));
    const std::uint64_t bytes = static_cast<std::uint64_t>(m_numel) * dtype_size(m_dtype);
    if (bytes != m_data.size())
      MHA_THROW(shape_error, "[mha.shape] Tensor: shape " + detail::shape_string(m_shape) + " of " +
                                 dtype_name(m_dtype) + " needs " + std::to_string(bytes) +
                                 " bytes, got " + std::to_string(m_data.size()));
  }

  /// A tensor of `matrix`'s values (F32 for float, F64 for double, BOOL for bool), row by row.
  /// `shape` defaults to `[rows, cols]`; any other shape must have `rows * cols` elements (e.g.
  /// `{E}` for a bias, `{N, L, E}` for a batch stored as `[N * L, E]`).
  template <class Derived>
  static Tensor from_matrix(const Eigen::DenseBase<Derived>& matrix, std::vector<std::int64_t> shape = {}) {
    using S = typename Derived::Scalar;
    static_assert(std::is_same<S, float>::value || std::is_same<S, double>::value || std::is_same<S, bool>::value,
                  "from_matrix writes float (F32), double (F64) or bool (BOOL) matrices");
    const Dtype dtype = std::is_same<S, float>::value ? Dtype::f32 : std::is_same<S, double>::value ? Dtype::f64 : Dtype::boolean;
    const Index rows = matrix.rows(), cols = matrix.cols();
    if (shape.empty()) shape = {static_cast<std::int64_t>(rows), static_cast<std::int64_t>(cols)};
    std::int64_t numel = 0;
    if (!detail::checked_numel(shape, dtype_size(dtype), numel) || numel != rows * cols)
      MHA_THROW(shape_error, "[mha.shape] Tensor::from_matrix: shape " + detail::shape_string(shape) + " does not hold the " +
                                 std::to_string(rows * cols) + " elements of a " + mha::detail::shape_string(rows, cols) +
                                 " matrix");
    std::vector<std::uint8_t> data(static_cast<std::size_t>(numel) * dtype_size(dtype));
    std::uint8_t* p = data.data();
    for (Index i = 0; i < rows; ++i)
      for (Index j = 0; j < cols; ++j, p += sizeof(S)) store(matrix.derived().coeff(i, j), p);
    return Tensor(dtype, std::move(shape), std::move(data));
  }

  /// The element type as stored in the file.
  Dtype dtype() const { return m_dtype; }
  /// The extents, outermost first (PyTorch's `tensor.shape`); empty for a scalar.
  const std::vector<std::int64_t>& shape() const { return m_shape; }
  /// Number of dimensions, `shape().size()`.
  std::size_t rank() const { return m_shape.size(); }
  /// Number of elements, `prod(shape)`.
  std::int64_t numel() const { return m_numel; }
  /// The raw row-major little-endian bytes.
  const std::vector<std::uint8_t>& data() const { return m_data; }

  /// The shape as a 2-D matrix shape: `[prod(shape[:-1]), shape[-1]]`; `[1, n]` for rank 1 and
  /// `[1, 1]` for a scalar.
  Index matrix_rows() const {
    Index rows = 1;
    for (std::size_t i = 0; i + 1 < m_shape.size(); ++i) rows *= m_shape[i];  // no overflow: checked
    return rows;
  }
  /// `shape[-1]`, the columns of the 2-D matrix shape (see matrix_rows()).
  Index matrix_cols() const { return m_shape.empty() ? 1 : m_shape.back(); }

  /// The values as a `[matrix_rows(), matrix_cols()]` matrix, converted from any dtype (BOOL
  /// gives 0 / 1; integers and F64 to float round to nearest).
  template <class Scalar>
  Matrix<Scalar> to_matrix() const {
    static_assert(std::is_floating_point<Scalar>::value, "to_matrix converts to float or double");
    Matrix<Scalar> m(matrix_rows(), matrix_cols());
    Scalar* out = m.data();
    if (m_dtype == Dtype::f32 && std::is_same<Scalar, float>::value && little_endian_host()) {
      if (!m_data.empty()) std::memcpy(out, m_data.data(), m_data.size());
      return m;
    }
    if (m_dtype == Dtype::f64 && std::is_same<Scalar, double>::value && little_endian_host()) {
      if (!m_data.empty()) std::memcpy(out, m_data.data(), m_data.size());
      return m;
    }
    const std::size_t n = static_cast<std::size_t>(m_numel);
    for (std::size_t i = 0; i < n; ++i) out[i] = detail::load_element<Scalar>(m_dtype, m_data.data(), i);
    return m;
  }

  /// The values of a BOOL or U8 tensor as a boolean matrix (non-zero is `true`); other dtypes
  /// throw `mha::format_error`.
  BoolMatrix to_bool_matrix() const {
    if (m_dtype != Dtype::boolean && m_dtype != Dtype::u8)
      MHA_THROW(format_error, std::string("[mha.format] Tensor::to_bool_matrix: expected dtype BOOL or U8, got ") +
                                  dtype_name(m_dtype));
    BoolMatrix m(matrix_rows(), matrix_cols());
    for (std::size_t i = 0; i < m_data.size(); ++i) m.data()[i] = m_data[i] != 0;
    return m;
  }

  /// Same dtype, shape and bytes (so a NaN equals the same NaN).
  friend bool operator==(const Tensor& a, const Tensor& b) {
    return a.m_dtype == b.m_dtype && a.m_shape == b.m_shape && a.m_data == b.m_data;
  }
  /// `!(a == b)`.
  friend bool operator!=(const Tensor& a, const Tensor& b) { return !(a == b); }

 private:
  static bool little_endian_host() {
    const std::uint16_t one = 1;
    std::uint8_t first;
    std::memcpy(&first, &one, 1);
    return first == 1;
  }
  static void store(float v, std::uint8_t* p) { detail::store_le(detail::bit_cast<std::uint32_t>(v), p); }
  static void store(double v, std::uint8_t* p) { detail::store_le(detail::bit_cast<std::uint64_t>(v), p); }
  static void store(bool v, std::uint8_t* p) { *p = v ? 1 : 0; }

  Dtype m_dtype;
  std::vector<std::int64_t> m_shape;
  std::vector<std::uint8_t> m_data;  // row-major, little-endian
  std::int64_t m_numel = 0;
};

/// The contents of a safetensors file: string metadata and named tensors.
class SafetensorsFile {
 public:
  /// The `__metadata__` object of the header: string keys to string values.
  using Metadata = std::map<std::string, std::string>;

  ///@{
  /// `__metadata__`: free-form string pairs.
  Metadata& metadata() { return m_metadata; }
  const Metadata& metadata() const { return m_metadata; }
  ///@}

  /// All tensors, by name.
  const std::map<std::string, Tensor>& tensors() const { return m_tensors; }
  /// Number of tensors.
  std::size_t size() const { return m_tensors.size(); }
  /// Whether a tensor called `name` exists.
  bool contains(const std::string& name) const { return m_tensors.count(name) != 0; }

  /// The tensor called `name`, or nullptr.
  const Tensor* find(const std::string& name) const {
    const auto it = m_tensors.find(name);
    return it == m_tensors.end() ? nullptr : &it->second;
  }

  /// The tensor called `name`; throws `mha::format_error` when there is none.
  const Tensor& at(const std::string& name) const {
    const Tensor* t = find(name);
    if (!t) MHA_THROW(format_error, "[mha.format] safetensors: no tensor " + detail::quoted(name));
    return *t;
  }

  /// Adds `tensor` as `name`, replacing a tensor of that name. `"__metadata__"` is reserved.
  void insert(const std::string& name, Tensor tensor) {
    if (name == "__metadata__")
      MHA_THROW(argument_error, "[mha.argument] safetensors: \"__metadata__\" cannot name a tensor");
    m_tensors.insert_or_assign(name, std::move(tensor));
  }

  /// Removes the tensor called `name`; false when there was none.
  bool erase(const std::string& name) { return m_tensors.erase(name) != 0; }

 private:
  Metadata m_metadata;
  std::map<std::string, Tensor> m_tensors;
};

namespace detail {

struct HeaderEntry {
  std::string name;
  Dtype dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin;
  std::uint64_t end;
};

// Parses the header JSON; rejects duplicate keys and nesting deeper than the format's
// (object > tensor entry > shape array).
inline nlohmann::json parse_header_json(const std::uint8_t* text, std::size_t size, const std::string& source) {
  using json = nlohmann::json;
  std::vector<std::set<std::string>> open;  // keys seen in each open object (arrays: empty)
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (open.size() >= 3) fail_format(source, "header JSON is nested deeper than a safetensors header");
        open.emplace_back();
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!open.empty()) open.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open.empty() && parsed.is_string() && !open.back().insert(parsed.get_ref<const std::string&>()).second)
          fail_format(source, "duplicate key " + quoted(parsed.get_ref<const std::string&>()) + " in the header");
        break;
      case json::parse_event_t::value:
        break;
    }
    return true;
  };
  try {
    return json::parse(text, text + size, callback);
  } catch (const json::exception& e) {
    fail_format(source, std::string("header is not valid JSON: ") + e.what());
  }
}

inline bool json_to_u64(const nlohmann::json& j, std::uint64_t& out) {
  if (j.is_number_unsigned()) {
    out = j.get<std::uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<std::int64_t>() >= 0) {
    out = static_cast<std::uint64_t>(j.get<std::int64_t>());
    return true;
  }
  return false;
}

inline HeaderEntry parse_entry(const std::string& name, const nlohmann::json& j, std::uint64_t buffer_size,
                               const std::string& source) {
  const std::string what = "tensor " + quoted(name);
  if (!j.is_object())
    fail_format(source, what + ": expected an object with dtype, shape and data_offsets, got " + short_dump(j));
  for (const auto& item : j.items())
    if (item.key() != "dtype" && item.key() != "shape" && item.key() != "data_offsets")
      fail_format(source, what + ": unexpected field " + quoted(item.key()));
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!j.contains(field)) fail_format(source, what + ": missing field \"" + field + "\"");

  HeaderEntry e;
  e.name = name;
  const nlohmann::json& dtype = j["dtype"];
  if (!dtype.is_string() || !dtype_from_name(dtype.get_ref<const std::string&>(), e.dtype))
    fail_format(source, what + ": unknown dtype " + short_dump(dtype) +
                            " (supported: BOOL, U8, I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64)");

  const nlohmann::json& shape = j["shape"];
  if (!shape.is_array()) fail_format(source, what + ": shape must be an array of integers, got " + short_dump(shape));
  for (const nlohmann::json& d : shape) {
    std::uint64_t u = 0;
    if (!json_to_u64(d, u) || u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      fail_format(source, what + ": shape must hold non-negative integers, got " + short_dump(shape));
    e.shape.push_back(static_cast<std::int64_t>(u));
  }
  std::int64_t numel = 0;
  if (!checked_numel(e.shape, dtype_size(e.dtype), numel))
    fail_format(source, what + ": shape " + shape_string(e.shape) + " of " + dtype_name(e.dtype) +
                            " overflows 64-bit sizes");

  const nlohmann::json& offsets = j["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !json_to_u64(offsets[0], e.begin) ||
      !json_to_u64(offsets[1], e.end))
    fail_format(source, what + ": data_offsets must be two non-negative integers [begin, end], got " +
                            short_dump(offsets));
  const std::string range = "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  if (e.begin > e.end) fail_format(source, what + ": " + range + " has begin > end");
  if (e.end > buffer_size)
    fail_format(source, what + ": " + range + " outside the " + std::to_string(buffer_size) +
                            "-byte data buffer (truncated file?)");
  const std::uint64_t bytes = static_cast<std::uint64_t>(numel) * dtype_size(e.dtype);
  if (e.end - e.begin != bytes)
    fail_format(source, what + ": shape " + shape_string(e.shape) + " of " + dtype_name(e.dtype) + " needs " +
                            std::to_string(bytes) + " bytes, but " + range + " spans " +
                            std::to_string(e.end - e.begin));
  return e;
}

inline SafetensorsFile parse(const std::uint8_t* data, std::size_t size, const std::string& source) {
  if (size < 8)
    fail_format(source, "file is " + byte_count(size) + ", too short for the 8-byte header length");
  const std::uint64_t header_size = load_le<std::uint64_t>(data);
  if (header_size > max_header_bytes)
    fail_format(source, "header length " + std::to_string(header_size) + " exceeds the limit of " +
                            std::to_string(max_header_bytes) + " bytes");
  if (header_size > size - 8)
    fail_format(source, "header length " + std::to_string(header_size) + " exceeds the " +
                            byte_count(size - 8) + " after it (truncated file?)");
  const std::uint8_t* buffer = data + 8 + header_size;
  const std::uint64_t buffer_size = size - 8 - header_size;

  const nlohmann::json header = parse_header_json(data + 8, static_cast<std::size_t>(header_size), source);
  if (!header.is_object()) fail_format(source, std::string("header is a JSON ") + header.type_name() + ", not an object");

  SafetensorsFile file;
  std::vector<HeaderEntry> entries;
  for (const auto& item : header.items()) {
    if (item.key() == "__metadata__") {
      const nlohmann::json& m = item.value();
      if (!m.is_object())
        fail_format(source, "__metadata__ must be an object of strings, got " + short_dump(m));
      for (const auto& kv : m.items()) {
        if (!kv.value().is_string())
          fail_format(source, "__metadata__ value of " + quoted(kv.key()) + " must be a string, got " +
                                  short_dump(kv.value()));
        file.metadata()[kv.key()] = kv.value().get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(item.key(), item.value(), buffer_size, source));
  }

  // The tensors must tile the buffer: sorted by offset, each begins where the previous ends.
  std::sort(entries.begin(), entries.end(), [](const HeaderEntry& a, const HeaderEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t position = 0;
  const HeaderEntry* previous = nullptr;
  for (const HeaderEntry& e : entries) {
    if (e.begin < position)
      fail_format(source, "tensors " + quoted(previous->name) + " [" + std::to_string(previous->begin) + ", " +
                              std::to_string(previous->end) + "] and " + quoted(e.name) + " [" +
                              std::to_string(e.begin) + ", " + std::to_string(e.end) + "] overlap");
    if (e.begin > position)
      fail_format(source, "gap of " + byte_count(e.begin - position) + " before tensor " + quoted(e.name) +
                              " (data_offsets begin " + std::to_string(e.begin) + ", previous tensor ends at " +
                              std::to_string(position) + "); tensors must cover the buffer exactly");
    position = e.end;
    previous = &e;
  }
  if (position != buffer_size)
    fail_format(source, byte_count(buffer_size - position) + " after the last tensor (buffer of " +
                            byte_count(buffer_size) + ", tensors end at " + std::to_string(position) +
                            "); tensors must cover the buffer exactly");

  for (HeaderEntry& e : entries)
    file.insert(e.name, Tensor(e.dtype, std::move(e.shape),
                               std::vector<std::uint8_t>(buffer + e.begin, buffer + e.end)));
  return file;
}

}  // namespace detail

/// Parses a safetensors file held in memory (`size` bytes at `data`; the tensors are copied).
/// Throws `mha::format_error` on any malformed input (see the file comment).
inline SafetensorsFile parse_safetensors(const std::uint8_t* data, std::size_t size) {
  static const std::uint8_t empty = 0;
  return detail::parse(data ? data : &empty, data ? size : 0, "safetensors");
}

/// Reads a safetensors file (all of it, into memory; the tensors are then copied out). Throws
/// `mha::io_error` when it cannot be read and `mha::format_error`, naming the path, when it is
/// malformed.
inline SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  const std::string source = path.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    MHA_THROW(io_error, "[mha.io] " + source + ": " +
                            (std::filesystem::exists(path, ec) ? "not a regular file" : "no such file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) MHA_THROW(io_error, "[mha.io] " + source + ": cannot open for reading");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  if (size < 0 || !in) MHA_THROW(io_error, "[mha.io] " + source + ": cannot determine the file size");
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size))
    MHA_THROW(io_error, "[mha.io] " + source + ": read failed after " + std::to_string(in.gcount()) + " of " +
                            std::to_string(size) + " bytes");
  return detail::parse(bytes.data(), bytes.size(), source);
}

/// The bytes of `file` in safetensors format: tensors ordered by decreasing element size, then
/// name; header padded with spaces to a multiple of 8 bytes (with the length prefix). Names and
/// metadata must be valid UTF-8 (`mha::argument_error` otherwise).
inline std::vector<std::uint8_t> serialize_safetensors(const SafetensorsFile& file) {
  using json = nlohmann::ordered_json;  // keys in data order, as the reference implementation writes them
  std::vector<std::pair<const std::string*, const Tensor*>> order;
  for (const auto& item : file.tensors()) order.emplace_back(&item.first, &item.second);
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return dtype_size(a.second->dtype()) > dtype_size(b.second->dtype());  // names already sorted
  });

  json header = json::object();
  if (!file.metadata().empty()) {
    json& metadata = header["__metadata__"];
    for (const auto& kv : file.metadata()) metadata[kv.first] = kv.second;
  }
  std::uint64_t offset = 0;
  for (const auto& item : order) {
    const Tensor& t = *item.second;
    header[*item.first] = {{"dtype", dtype_name(t.dtype())},
                           {"shape", t.shape()},
                           {"data_offsets", {offset, offset + t.data().size()}}};
    offset += t.data().size();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception&) {
    MHA_THROW(argument_error, "[mha.argument] safetensors: a tensor name or metadata string is not valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // the buffer then starts at 8 + text.size(), a multiple of 8

  std::vector<std::uint8_t> bytes(8 + text.size() + static_cast<std::size_t>(offset));
  detail::store_le(static_cast<std::uint64_t>(text.size()), bytes.data());
  std::memcpy(bytes.data() + 8, text.data(), text.size());
  std::uint8_t* p = bytes.data() + 8 + text.size();
  for (const auto& item : order) {
    const std::vector<std::uint8_t>& d = item.second->data();
    if (!d.empty()) std::memcpy(p, d.data(), d.size());
    p += d.size();
  }
  return bytes;
}

/// Writes `file` to `path` (see serialize_safetensors); `mha::io_error` when it cannot.
inline void write_safetensors(const std::filesystem::path& path, const SafetensorsFile& file) {
  const std::vector<std::uint8_t> bytes = serialize_safetensors(file);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) MHA_THROW(io_error, "[mha.io] " + path.string() + ": cannot open for writing");
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) MHA_THROW(io_error, "[mha.io] " + path.string() + ": write failed");
}

}  // namespace io
}  // namespace mha
