#pragma once
// Helpers shared by the I/O tests: exception messages, the fixture files, temporary paths.

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <random>
#include <string>
#include <vector>

#ifndef _WIN32
#include <sys/wait.h>
#endif

namespace io_test {

// The message of the exception of type E that `f` throws, or a note that it threw none / another.
template <class E, class F>
std::string thrown(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<other exception> ") + e.what();
  }
  return "<no exception>";
}

inline std::filesystem::path fixtures_dir() {
#ifdef MHA_FIXTURES_DIR
  return MHA_FIXTURES_DIR;
#else
  for (const char* p : {"tests/fixtures", "../tests/fixtures", "../../tests/fixtures"})
    if (std::filesystem::is_directory(p)) return p;
  return "tests/fixtures";
#endif
}

// Every torch.nn.MultiheadAttention fixture of tests/fixtures/generate.py (`<case>_f32` and
// `<case>_f64.safetensors`), sorted by name. Other files there, such as tiny_lm_parity.safetensors
// from examples/tiny_lm/export.py, follow another contract and have their own tests.
inline std::vector<std::filesystem::path> fixture_files() {
  const auto is_mha_case = [](const std::string& name) {
    for (const char* suffix : {"_f32.safetensors", "_f64.safetensors"}) {
      const std::string s = suffix;
      if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) return true;
    }
    return false;
  };
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(fixtures_dir()))
    if (is_mha_case(entry.path().filename().string())) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

// A fresh path in the test scratch directory.
inline std::filesystem::path temp_path(const std::string& stem, const std::string& extension = ".safetensors") {
#ifdef MHA_TEST_TMP_DIR
  const std::filesystem::path dir = MHA_TEST_TMP_DIR;
#else
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
#endif
  std::random_device rd;
  return dir / (stem + "_" + std::to_string(rd()) + std::to_string(rd()) + extension);
}


inline std::string shell_quote(const std::string& s) {
#ifdef _WIN32
  return "\"" + s + "\"";
#else
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
#endif
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct RunResult {
  int status = -1;  // exit status (-1: did not exit normally)
  std::string out;  // stdout
  std::string err;  // stderr
};

/// Runs mha-run with `args` (each quoted), capturing stdout and stderr.
#ifdef MHA_RUN_EXE
inline RunResult run_mha_run(const std::vector<std::string>& args) {
  const std::filesystem::path out = temp_path("mha_run_stdout", ".txt"), err = temp_path("mha_run_stderr", ".txt");
  std::string command = shell_quote(MHA_RUN_EXE);
  for (const std::string& a : args) command += " " + shell_quote(a);
  command += " >" + shell_quote(out.string()) + " 2>" + shell_quote(err.string());
  const int raw = std::system(command.c_str());
  RunResult r;
#ifdef _WIN32
  r.status = raw;
#else
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
#endif
  r.out = read_text(out);
  r.err = read_text(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}
#endif

}  // namespace io_test
