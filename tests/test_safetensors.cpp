// Tests of <mha/io/safetensors.hpp>: round trips, dtype conversions, and one test per way a
// hostile file is rejected (each checks the exception type and its message).
#include <mha/io/safetensors.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io_test_support.hpp"
#include "mha_catch.hpp"

namespace {

using io_test::thrown;
using io_test::temp_path;

using Catch::Matchers::ContainsSubstring;
using mha::io::Dtype;
using mha::io::SafetensorsFile;
using mha::io::Tensor;
using Bytes = std::vector<std::uint8_t>;

// A file from a header text and a data buffer; `declared` overrides the header length.
Bytes make_file(const std::string& header, const Bytes& buffer = {}, std::uint64_t declared = ~std::uint64_t(0)) {
  const std::uint64_t n = declared == ~std::uint64_t(0) ? header.size() : declared;
  Bytes b(8);
  for (int i = 0; i < 8; ++i) b[i] = static_cast<std::uint8_t>(n >> (8 * i));
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), buffer.begin(), buffer.end());
  return b;
}

SafetensorsFile parse(const Bytes& b) { return mha::io::parse_safetensors(b.data(), b.size()); }

std::string format_error_of(const std::string& header, const Bytes& buffer = {}) {
  return thrown<mha::format_error>([&] { parse(make_file(header, buffer)); });
}

SafetensorsFile sample_file() {
  SafetensorsFile f;
  mha::Matrix<float> a(2, 3);
  a << 1, -2, 3.5f, 0, 1e-7f, -1e30f;
  mha::Matrix<double> b(1, 2);
  b << 3.141592653589793, -0.1;
  mha::BoolMatrix c(2, 2);
  c << true, false, false, true;
  f.insert("weight", Tensor::from_matrix(a));
  f.insert("bias", Tensor::from_matrix(b, {2}));
  f.insert("mask", Tensor::from_matrix(c, {1, 2, 2}));
  f.metadata()["format"] = "pt";
  f.metadata()["note"] = "line\nbreak \xc3\xa9";
  return f;
}

}  // namespace

TEST_CASE("safetensors: write then read gives the same tensors and metadata", "[io][safetensors]") {
  const SafetensorsFile f = sample_file();
  const Bytes bytes = mha::io::serialize_safetensors(f);
  const SafetensorsFile g = parse(bytes);
  REQUIRE(g.size() == 3);
  CHECK(g.metadata() == f.metadata());
  for (const auto& item : f.tensors()) {
    INFO(item.first);
    REQUIRE(g.contains(item.first));
    CHECK(g.at(item.first) == item.second);
  }
  CHECK(g.at("weight").to_matrix<float>() == f.at("weight").to_matrix<float>());
  CHECK(g.at("bias").shape() == std::vector<std::int64_t>{2});
  CHECK(g.at("mask").dtype() == Dtype::boolean);

  SECTION("the header is padded so that the buffer is 8-byte aligned") {
    std::uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= std::uint64_t(bytes[i]) << (8 * i);
    CHECK((8 + n) % 8 == 0);
    CHECK(bytes.size() == 8 + n + 24 + 16 + 4);
    const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
    // F64 first, then F32, then BOOL; __metadata__ first; control characters escaped.
    CHECK(header.find("\"__metadata__\"") < header.find("\"bias\""));
    CHECK(header.find("\"bias\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}") != std::string::npos);
    CHECK(header.find("\"weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[16,40]}") != std::string::npos);
    CHECK(header.find("\"mask\":{\"dtype\":\"BOOL\",\"shape\":[1,2,2],\"data_offsets\":[40,44]}") != std::string::npos);
    CHECK(header.find('\n') == std::string::npos);
  }
  SECTION("the output is deterministic, whatever the insertion order") {
    SafetensorsFile h;
    h.metadata() = f.metadata();
    h.insert("mask", f.at("mask"));
    h.insert("weight", f.at("weight"));
    h.insert("bias", f.at("bias"));
    CHECK(mha::io::serialize_safetensors(h) == bytes);
    CHECK(mha::io::serialize_safetensors(g) == bytes);
  }
}

TEST_CASE("safetensors: empty file and zero-sized tensors", "[io][safetensors]") {
  SafetensorsFile empty;
  const Bytes b = mha::io::serialize_safetensors(empty);
  CHECK(b.size() == 16);  // "{}" padded to 8 bytes
  CHECK(parse(b).size() == 0);
  CHECK(parse(make_file("{}")).size() == 0);

  const SafetensorsFile z = parse(make_file(
      R"({"a":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
      R"("c":{"dtype":"F64","shape":[3,0],"data_offsets":[2,2]}})",
      {7, 9}));
  CHECK(z.at("a").to_matrix<float>().rows() == 0);
  CHECK(z.at("a").to_matrix<float>().cols() == 3);
  CHECK(z.at("c").to_matrix<double>().rows() == 3);
  CHECK(z.at("c").to_matrix<double>().cols() == 0);
  CHECK(z.at("b").to_matrix<double>()(0, 1) == 9.0);
}

TEST_CASE("safetensors: to_matrix shapes", "[io][safetensors]") {
  const Tensor scalar(Dtype::u8, {}, {5});
  CHECK(scalar.numel() == 1);
  CHECK(scalar.to_matrix<float>().rows() == 1);
  CHECK(scalar.to_matrix<float>()(0, 0) == 5.0f);
  const Tensor row(Dtype::u8, {3}, {1, 2, 3});
  CHECK(row.to_matrix<float>().rows() == 1);
  CHECK(row.to_matrix<float>().cols() == 3);
  const Tensor cube(Dtype::u8, {2, 3, 2}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  const mha::Matrix<double> m = cube.to_matrix<double>();
  CHECK(m.rows() == 6);
  CHECK(m.cols() == 2);
  CHECK(m(4, 1) == 9.0);  // row-major: element [1, 1, 1] = 1*6 + 1*2 + 1
}

TEMPLATE_TEST_CASE("safetensors: every dtype converts to float and double", "[io][safetensors][dtype]", float, double) {
  using S = TestType;
  struct Case {
    Dtype dtype;
    Bytes bytes;
    std::vector<double> values;
  };
  const std::vector<Case> cases = {
      {Dtype::f64, {0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 0, 0, 0, 0, 0, 0x04, 0xc0}, {1.0, -2.5}},
      {Dtype::f32, {0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0}, {1.0, -2.5}},
      {Dtype::f16, {0x00, 0x3c, 0x00, 0xc1}, {1.0, -2.5}},
      {Dtype::bf16, {0x80, 0x3f, 0x20, 0xc0}, {1.0, -2.5}},
      {Dtype::i64, {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 7, 0, 0, 0, 0, 0, 0, 0}, {-2.0, 7.0}},
      {Dtype::u64, {7, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}, {7.0, 256.0}},
      {Dtype::i32, {0xfe, 0xff, 0xff, 0xff, 0x10, 0x27, 0, 0}, {-2.0, 10000.0}},
      {Dtype::u32, {0xfe, 0xff, 0xff, 0xff, 1, 0, 0, 0}, {4294967294.0, 1.0}},
      {Dtype::i16, {0x00, 0x80, 0x01, 0x00}, {-32768.0, 1.0}},
      {Dtype::u16, {0xff, 0xff, 0x01, 0x00}, {65535.0, 1.0}},
      {Dtype::i8, {0xff, 0x7f}, {-1.0, 127.0}},
      {Dtype::u8, {0xff, 0x00}, {255.0, 0.0}},
      {Dtype::boolean, {1, 0}, {1.0, 0.0}},
  };
  for (const Case& c : cases) {
    INFO(mha::io::dtype_name(c.dtype));
    const Tensor t(c.dtype, {2}, c.bytes);
    const mha::Matrix<S> m = t.to_matrix<S>();
    REQUIRE(m.rows() == 1);
    REQUIRE(m.cols() == 2);
    CHECK(m(0, 0) == static_cast<S>(c.values[0]));
    CHECK(m(0, 1) == static_cast<S>(c.values[1]));
    // The dtype survives a write / read.
    SafetensorsFile f;
    f.insert("t", t);
    CHECK(parse(mha::io::serialize_safetensors(f)).at("t") == t);
  }
}

TEMPLATE_TEST_CASE("safetensors: from_matrix writes F32 / F64 row by row", "[io][safetensors]", float, double) {
  using S = TestType;
  mha::Matrix<S> m(2, 2);
  m << 1, 2, 3, 4;
  const Tensor t = Tensor::from_matrix(m.transpose());  // a lazy expression, column-major view
  CHECK(t.dtype() == (sizeof(S) == 4 ? Dtype::f32 : Dtype::f64));
  CHECK(t.to_matrix<S>() == mha::Matrix<S>(m.transpose()));
  CHECK(t.data().size() == 4 * sizeof(S));
  const Tensor three = Tensor::from_matrix(m, {1, 4});
  CHECK(three.shape() == std::vector<std::int64_t>{1, 4});
  CHECK_THAT(thrown<mha::shape_error>([&] { Tensor::from_matrix(m, {3}); }),
             ContainsSubstring("shape [3] does not hold the 4 elements of a [2, 2] matrix"));
}

TEST_CASE("safetensors: boolean matrices", "[io][safetensors][dtype]") {
  const Tensor b(Dtype::boolean, {2, 2}, {1, 0, 0, 2});
  const mha::BoolMatrix m = b.to_bool_matrix();
  CHECK(m(0, 0));
  CHECK_FALSE(m(0, 1));
  CHECK(m(1, 1));  // any non-zero byte is true
  CHECK(Tensor(Dtype::u8, {1}, {3}).to_bool_matrix()(0, 0));
  CHECK_THAT(thrown<mha::format_error>([] { Tensor(Dtype::f32, {1}, {0, 0, 0, 0}).to_bool_matrix(); }),
             ContainsSubstring("expected dtype BOOL or U8, got F32"));
}

TEST_CASE("safetensors: Tensor and SafetensorsFile reject bad arguments", "[io][safetensors]") {
  CHECK_THAT(thrown<mha::shape_error>([] { Tensor(Dtype::f32, {2}, {0, 0, 0, 0}); }),
             ContainsSubstring("shape [2] of F32 needs 8 bytes, got 4"));
  CHECK_THAT(thrown<mha::shape_error>([] { Tensor(Dtype::u8, {-1}, {}); }), ContainsSubstring("negative dimension"));
  SafetensorsFile f;
  CHECK_THAT(thrown<mha::argument_error>([&] { f.insert("__metadata__", Tensor(Dtype::u8, {0}, {})); }),
             ContainsSubstring("cannot name a tensor"));
  CHECK_THAT(thrown<mha::format_error>([&] { f.at("missing"); }), ContainsSubstring("no tensor \"missing\""));
  CHECK(f.find("missing") == nullptr);
  f.insert("x", Tensor(Dtype::u8, {1}, {1}));
  f.insert("x", Tensor(Dtype::u8, {1}, {2}));  // replaces
  CHECK(f.size() == 1);
  CHECK(f.at("x").data()[0] == 2);
  CHECK(f.erase("x"));
  CHECK_FALSE(f.erase("x"));
  f.insert("bad\xff", Tensor(Dtype::u8, {1}, {1}));
  CHECK_THAT(thrown<mha::argument_error>([&] { mha::io::serialize_safetensors(f); }),
             ContainsSubstring("not valid UTF-8"));
}

TEST_CASE("safetensors: files on disk", "[io][safetensors]") {
  const std::filesystem::path path = temp_path("st_roundtrip");
  const SafetensorsFile f = sample_file();
  mha::io::write_safetensors(path, f);
  const SafetensorsFile g = mha::io::read_safetensors(path);
  CHECK(g.at("weight") == f.at("weight"));
  CHECK(g.metadata() == f.metadata());

  SECTION("a malformed file names its path") {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << "abc";
    const std::string message = thrown<mha::format_error>([&] { mha::io::read_safetensors(path); });
    CHECK_THAT(message, ContainsSubstring("[mha.format] " + path.string() + ": file is 3 bytes"));
  }
  std::filesystem::remove(path);

  CHECK_THAT(thrown<mha::io_error>([&] { mha::io::read_safetensors(path); }),
             ContainsSubstring("[mha.io] " + path.string() + ": no such file"));
  CHECK_THAT(thrown<mha::io_error>([&] { mha::io::read_safetensors(path.parent_path()); }),
             ContainsSubstring("not a regular file"));
  CHECK_THAT(thrown<mha::io_error>([&] { mha::io::write_safetensors(path / "sub" / "x.safetensors", f); }),
             ContainsSubstring("cannot open for writing"));
}

// ---------------------------------------------------------------------------------------------
// Hostile input: every check of the parser, each with its message.

TEST_CASE("safetensors rejects: file shorter than the length prefix", "[io][safetensors][hostile]") {
  CHECK_THAT(thrown<mha::format_error>([] { mha::io::parse_safetensors(nullptr, 0); }),
             ContainsSubstring("file is 0 bytes, too short for the 8-byte header length"));
  const Bytes b = {1, 2, 3};
  CHECK_THAT(thrown<mha::format_error>([&] { parse(b); }), ContainsSubstring("file is 3 bytes"));
}

TEST_CASE("safetensors rejects: header length beyond the file or the limit", "[io][safetensors][hostile]") {
  CHECK_THAT(thrown<mha::format_error>([] { parse(make_file("{}", {}, 1)); }), ContainsSubstring("not valid JSON"));
  CHECK_THAT(thrown<mha::format_error>([] { parse(make_file("{}", {}, 50)); }),
             ContainsSubstring("header length 50 exceeds the 2 bytes after it (truncated file?)"));
  CHECK_THAT(thrown<mha::format_error>([] { parse(make_file("{}", {}, 100000001)); }),
             ContainsSubstring("header length 100000001 exceeds the limit of 100000000 bytes"));
  CHECK_THAT(thrown<mha::format_error>([] { parse(make_file("{}", {}, ~std::uint64_t(0) - 1)); }),
             ContainsSubstring("exceeds the limit"));
}

TEST_CASE("safetensors rejects: invalid JSON and non-objects", "[io][safetensors][hostile]") {
  CHECK_THAT(format_error_of("{\"a\":"), ContainsSubstring("header is not valid JSON"));
  CHECK_THAT(format_error_of(""), ContainsSubstring("header is not valid JSON"));
  CHECK_THAT(format_error_of("{} x"), ContainsSubstring("header is not valid JSON"));
  CHECK_THAT(format_error_of("{\"\xff\":1}"), ContainsSubstring("header is not valid JSON"));
  CHECK_THAT(format_error_of("[1, 2]"), ContainsSubstring("header is a JSON array, not an object"));
  CHECK_THAT(format_error_of("\"text\""), ContainsSubstring("header is a JSON string, not an object"));
  CHECK_THAT(format_error_of(std::string(1000, '[') + std::string(1000, ']')),
             ContainsSubstring("nested deeper than a safetensors header"));
  CHECK_THAT(format_error_of(R"({"a":{"dtype":"U8","shape":[[1]],"data_offsets":[0,1]}})", {0}),
             ContainsSubstring("nested deeper"));
}

TEST_CASE("safetensors rejects: duplicate keys", "[io][safetensors][hostile]") {
  const std::string entry = R"({"dtype":"U8","shape":[1],"data_offsets":[0,1]})";
  CHECK_THAT(format_error_of("{\"a\":" + entry + ",\"a\":" + entry + "}", {0}),
             ContainsSubstring("duplicate key \"a\" in the header"));
  CHECK_THAT(format_error_of(R"({"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", {0}),
             ContainsSubstring("duplicate key \"dtype\""));
  CHECK_THAT(format_error_of(R"({"__metadata__":{"k":"1","k":"2"}})"), ContainsSubstring("duplicate key \"k\""));
  CHECK_THAT(format_error_of(R"({"__metadata__":{},"__metadata__":{}})"), ContainsSubstring("duplicate key"));
}

TEST_CASE("safetensors rejects: bad __metadata__", "[io][safetensors][hostile]") {
  CHECK_THAT(format_error_of(R"({"__metadata__":[1]})"),
             ContainsSubstring("__metadata__ must be an object of strings, got [1]"));
  CHECK_THAT(format_error_of(R"({"__metadata__":null})"), ContainsSubstring("__metadata__ must be an object"));
  CHECK_THAT(format_error_of(R"({"__metadata__":{"n":2}})"),
             ContainsSubstring("__metadata__ value of \"n\" must be a string, got 2"));
  CHECK(parse(make_file(R"({"__metadata__":{"n":"2"}})")).metadata().at("n") == "2");
}

TEST_CASE("safetensors rejects: malformed tensor entries", "[io][safetensors][hostile]") {
  CHECK_THAT(format_error_of(R"({"a":3})"),
             ContainsSubstring("tensor \"a\": expected an object with dtype, shape and data_offsets, got 3"));
  CHECK_THAT(format_error_of(R"({"a":{"dtype":"U8","shape":[0]}})"),
             ContainsSubstring("tensor \"a\": missing field \"data_offsets\""));
  CHECK_THAT(format_error_of(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":1}})"),
             ContainsSubstring("tensor \"a\": unexpected field \"x\""));
}

TEST_CASE("safetensors rejects: unknown dtype", "[io][safetensors][hostile]") {
  CHECK_THAT(format_error_of(R"({"a":{"dtype":"F128","shape":[0],"data_offsets":[0,0]}})"),
             ContainsSubstring("tensor \"a\": unknown dtype \"F128\" (supported: BOOL"));
  CHECK_THAT(format_error_of(R"({"a":{"dtype":"f32","shape":[0],"data_offsets":[0,0]}})"),
             ContainsSubstring("unknown dtype \"f32\""));
  CHECK_THAT(format_error_of(R"({"a":{"dtype":4,"shape":[0],"data_offsets":[0,0]}})"),
             ContainsSubstring("unknown dtype 4"));
  CHECK_THAT(format_error_of(R"({"a":{"dtype":"F8_E4M3","shape":[0],"data_offsets":[0,0]}})"),
             ContainsSubstring("unknown dtype \"F8_E4M3\""));
}

TEST_CASE("safetensors rejects: shapes that are not non-negative integers", "[io][safetensors][hostile]") {
  const auto with_shape = [](const std::string& shape) {
    return format_error_of(R"({"a":{"dtype":"U8","shape":)" + shape + R"(,"data_offsets":[0,0]}})");
  };
  CHECK_THAT(with_shape("[-1]"), ContainsSubstring("tensor \"a\": shape must hold non-negative integers, got [-1]"));
  CHECK_THAT(with_shape("[2.0]"), ContainsSubstring("shape must hold non-negative integers, got [2.0]"));
  CHECK_THAT(with_shape("[\"2\"]"), ContainsSubstring("shape must hold non-negative integers"));
  CHECK_THAT(with_shape("[true]"), ContainsSubstring("shape must hold non-negative integers"));
  CHECK_THAT(with_shape("[9223372036854775808]"), ContainsSubstring("shape must hold non-negative integers"));
  CHECK_THAT(with_shape("[1e400]"), ContainsSubstring("header is not valid JSON"));
  CHECK_THAT(with_shape("3"), ContainsSubstring("shape must be an array of integers, got 3"));
}

TEST_CASE("safetensors rejects: shape products that overflow", "[io][safetensors][hostile]") {
  CHECK_THAT(format_error_of(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})"),
             ContainsSubstring("tensor \"a\": shape [4294967296, 4294967296] of U8 overflows 64-bit sizes"));
  // The element count fits, the byte count does not.
  CHECK_THAT(format_error_of(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}})"),
             ContainsSubstring("overflows 64-bit sizes"));
  // Overflow before a zero dimension is still an overflow (the product is taken in order).
  CHECK_THAT(format_error_of(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})"),
             ContainsSubstring("overflows"));
  // A zero dimension first keeps the running product at 0: a valid empty tensor.
  CHECK(parse(make_file(R"({"a":{"dtype":"U8","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})"))
            .at("a")
            .numel() == 0);
}

TEST_CASE("safetensors rejects: bad data_offsets", "[io][safetensors][hostile]") {
  const auto with_offsets = [](const std::string& offsets, const Bytes& buffer) {
    return format_error_of(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":)" + offsets + "}}", buffer);
  };
  CHECK_THAT(with_offsets("[0]", {1, 2}),
             ContainsSubstring("tensor \"a\": data_offsets must be two non-negative integers [begin, end], got [0]"));
  CHECK_THAT(with_offsets("[0,2,4]", {1, 2}), ContainsSubstring("data_offsets must be two non-negative integers"));
  CHECK_THAT(with_offsets("[-1,1]", {1, 2}), ContainsSubstring("data_offsets must be two non-negative integers"));
  CHECK_THAT(with_offsets("{\"b\":0}", {1, 2}), ContainsSubstring("data_offsets must be two non-negative integers"));
  CHECK_THAT(with_offsets("[2,0]", {1, 2}), ContainsSubstring("data_offsets [2, 0] has begin > end"));
  CHECK_THAT(with_offsets("[0,2]", {1}),
             ContainsSubstring("data_offsets [0, 2] outside the 1-byte data buffer (truncated file?)"));
  CHECK_THAT(with_offsets("[18446744073709551614,18446744073709551615]", {1, 2}),
             ContainsSubstring("outside the 2-byte data buffer"));
  CHECK_THAT(with_offsets("[0,1]", {1, 2}),
             ContainsSubstring("shape [2] of U8 needs 2 bytes, but data_offsets [0, 1] spans 1"));
}

TEST_CASE("safetensors rejects: tensors that overlap, leave gaps or leave trailing bytes",
          "[io][safetensors][hostile]") {
  const std::string a = R"("a":{"dtype":"U8","shape":[2],"data_offsets":)";
  const std::string b = R"("b":{"dtype":"U8","shape":[2],"data_offsets":)";
  CHECK_THAT(format_error_of("{" + a + "[0,2]}," + b + "[1,3]}}", {1, 2, 3}),
             ContainsSubstring("tensors \"a\" [0, 2] and \"b\" [1, 3] overlap"));
  CHECK_THAT(format_error_of("{" + a + "[0,2]}," + b + "[0,2]}}", {1, 2}), ContainsSubstring("overlap"));
  CHECK_THAT(format_error_of("{" + a + "[0,2]}," + b + "[3,5]}}", {1, 2, 3, 4, 5}),
             ContainsSubstring("gap of 1 byte before tensor \"b\""));
  CHECK_THAT(format_error_of("{" + a + "[1,3]}}", {1, 2, 3}), ContainsSubstring("gap of 1 byte before tensor \"a\""));
  CHECK_THAT(format_error_of("{" + a + "[0,2]}}", {1, 2, 3, 4}),
             ContainsSubstring("2 bytes after the last tensor (buffer of 4 bytes, tensors end at 2)"));
  CHECK_THAT(format_error_of("{}", {0}), ContainsSubstring("1 byte after the last tensor (buffer of 1 byte, tensors end at 0)"));
  // In any order in the header, tensors that tile the buffer are fine.
  const SafetensorsFile ok = parse(make_file("{" + b + "[2,4]}," + a + "[0,2]}}", {1, 2, 3, 4}));
  CHECK(ok.at("b").data() == Bytes{3, 4});
}

TEST_CASE("safetensors rejects every truncation of a valid file", "[io][safetensors][hostile]") {
  const Bytes full = mha::io::serialize_safetensors(sample_file());
  for (std::size_t n = 0; n < full.size(); ++n) {
    INFO("prefix of " << n << " bytes");
    const Bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    const std::string message = thrown<mha::format_error>([&] { parse(cut); });
    CHECK_THAT(message, ContainsSubstring("[mha.format] safetensors: "));
  }
  CHECK(parse(full).size() == 3);
}

TEST_CASE("safetensors: any corrupted byte gives a valid file or a format_error", "[io][safetensors][hostile]") {
  const Bytes full = mha::io::serialize_safetensors(sample_file());
  for (std::size_t i = 0; i < full.size(); ++i)
    for (std::uint8_t x : {std::uint8_t(0x01), std::uint8_t(0x80), std::uint8_t(0xff)}) {
      Bytes b = full;
      b[i] ^= x;
      try {
        const SafetensorsFile f = parse(b);
        for (const auto& item : f.tensors()) (void)item.second.to_matrix<double>();
      } catch (const mha::format_error&) {
      }  // anything else escapes and fails the test
    }
  SUCCEED();
}
