// tiny_lm_parity: the C++ tiny_lm must generate what PyTorch generated (CTest `tiny_lm_parity`).
//
//     tiny_lm_parity WEIGHTS.safetensors FIXTURE.safetensors TMP_DIR
//
// FIXTURE is tests/fixtures/tiny_lm_parity.safetensors, written by examples/tiny_lm/export.py:
// `prompt` I32 [P], PyTorch's greedy continuation `generated` I32 [64] and the logits of its first
// steps `logits` F32 [4, V]. The model greedily generates 64 tokens twice, with the KV caches
// (prefill, then one token per step) and with full recomputation (the whole sequence each step,
// no cache). Both must give exactly the fixture's tokens and, for the first 4 steps, logits within
// 1e-4 relative: max|a - b| / max|b| per step. Then the loader's error paths are checked on
// damaged copies of the weights written to TMP_DIR. Exit status 0 when everything holds.

#include "tiny_lm_model.hpp"

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace {

using tiny_lm::Index;

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

std::vector<int> int_tensor(const mha::io::SafetensorsFile& f, const char* name) {
  const mha::io::Tensor& t = f.at(name);
  if (t.dtype() != mha::io::Dtype::i32 || t.rank() != 1)
    throw std::runtime_error(std::string("fixture tensor ") + name + " is not I32 [n]");
  const tiny_lm::Matrix m = t.to_matrix<float>();  // exact: the values are bytes
  std::vector<int> v;
  for (Index i = 0; i < m.size(); ++i) v.push_back(static_cast<int>(m.data()[i]));
  return v;
}

struct Run {
  std::vector<int> tokens;                 // generated, [n]
  std::vector<tiny_lm::RowVector> logits;  // logits[k] [V]: the output generated[k] was picked from
};

Run generate_cached(const tiny_lm::Model& model, const std::vector<int>& prompt, int n, int threads) {
  Run r;
  tiny_lm::Session session(model, static_cast<Index>(prompt.size()) + n);
  tiny_lm::RowVector logits = session.feed(prompt, threads);
  for (int k = 0; k < n; ++k) {
    r.logits.push_back(logits);
    r.tokens.push_back(tiny_lm::argmax(logits));
    if (k + 1 < n) logits = session.feed({r.tokens.back()}, threads);
  }
  return r;
}

Run generate_full(const tiny_lm::Model& model, std::vector<int> sequence, int n, int threads) {
  Run r;
  for (int k = 0; k < n; ++k) {
    const tiny_lm::Matrix all = model.forward_full(sequence, threads);  // [T, V]
    r.logits.push_back(all.bottomRows(1));
    r.tokens.push_back(tiny_lm::argmax(r.logits.back()));
    sequence.push_back(r.tokens.back());
  }
  return r;
}

void compare(const char* name, const Run& run, const std::vector<int>& expected, const tiny_lm::Matrix& logits) {
  check(run.tokens.size() == expected.size() && expected.size() == 64,
        std::string(name) + ": " + std::to_string(run.tokens.size()) + " tokens generated, fixture has " +
            std::to_string(expected.size()) + ", both must be 64");
  std::size_t same = 0;
  while (same < run.tokens.size() && same < expected.size() && run.tokens[same] == expected[same]) ++same;
  check(same == expected.size() && run.tokens.size() == expected.size(),
        std::string(name) + ": tokens equal PyTorch's for the first " + std::to_string(same) + " of " +
            std::to_string(expected.size()));
  double worst = 0;
  for (Index k = 0; k < logits.rows(); ++k) {
    const tiny_lm::RowVector& a = run.logits.at(static_cast<std::size_t>(k));
    const double err = (a - logits.row(k)).cwiseAbs().maxCoeff() / logits.row(k).cwiseAbs().maxCoeff();
    worst = std::max(worst, err);
  }
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s: logits of the first %d steps within %.3g relative (max|a-b|/max|b|, limit 1e-4)",
                name, static_cast<int>(logits.rows()), worst);
  check(logits.rows() == 4 && worst <= 1e-4, buf);
}

// load() of `file` must throw a message containing `needle`.
void expect_load_error(const std::string& file, const std::string& needle) {
  try {
    tiny_lm::Model::load(file);
    check(false, "loading " + file + " throws \"" + needle + "\" (it loaded)");
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    check(msg.find(needle) != std::string::npos, "error \"" + msg + "\" contains \"" + needle + "\"");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: tiny_lm_parity WEIGHTS.safetensors FIXTURE.safetensors TMP_DIR\n");
    return 2;
  }
  try {
    const std::string weights = argv[1], tmp = argv[3];
    const mha::io::SafetensorsFile fixture = mha::io::read_safetensors(argv[2]);
    const std::vector<int> prompt = int_tensor(fixture, "prompt");
    const std::vector<int> expected = int_tensor(fixture, "generated");
    const tiny_lm::Matrix logits = fixture.at("logits").to_matrix<float>();  // [4, V]
    const tiny_lm::Model model = tiny_lm::Model::load(weights);
    const tiny_lm::Config& c = model.config();
    check(fixture.metadata().at("config") == mha::io::read_safetensors(weights).metadata().at("config"),
          "the fixture was made with the config of " + weights);
    check(logits.cols() == c.vocab_size, "fixture logits have V = " + std::to_string(logits.cols()) + " columns");
    // The prompt must be longer than the sliding window, so that the ring cache wraps.
    check(static_cast<Index>(prompt.size()) > c.sliding_window.at(0) && c.sliding_window.at(0) > 0,
          "prompt of " + std::to_string(prompt.size()) + " tokens exceeds layer 0's window of " +
              std::to_string(c.sliding_window.at(0)));

    const int n = static_cast<int>(expected.size());
    compare("KV cache (2 threads)", generate_cached(model, prompt, n, 2), expected, logits);
    compare("full recomputation (1 thread)", generate_full(model, prompt, n, 1), expected, logits);

    // The loader's errors, on damaged copies of the weights.
    const mha::io::SafetensorsFile good = mha::io::read_safetensors(weights);
    expect_load_error(tmp + "/does_not_exist.safetensors", "does_not_exist.safetensors");
    {
      mha::io::SafetensorsFile f = good;
      f.erase("model.layers.2.mlp.up_proj.weight");
      mha::io::write_safetensors(tmp + "/tiny_lm_missing.safetensors", f);
      expect_load_error(tmp + "/tiny_lm_missing.safetensors",
                        "tiny_lm: " + tmp + "/tiny_lm_missing.safetensors has no tensor \"model.layers.2.mlp.up_proj.weight\"");
    }
    {
      mha::io::SafetensorsFile f = good;
      f.insert("model.layers.1.self_attn.k_proj.weight", mha::io::Tensor::from_matrix(tiny_lm::Matrix::Zero(128, 128)));
      mha::io::write_safetensors(tmp + "/tiny_lm_shape.safetensors", f);
      expect_load_error(tmp + "/tiny_lm_shape.safetensors",
                        "tiny_lm: tensor \"model.layers.1.self_attn.k_proj.weight\" has shape [128, 128], expected [32, 128]");
    }
    {
      mha::io::SafetensorsFile f = good;
      f.metadata().erase("config");
      mha::io::write_safetensors(tmp + "/tiny_lm_noconfig.safetensors", f);
      expect_load_error(tmp + "/tiny_lm_noconfig.safetensors", "has no \"config\" in its __metadata__");
    }
    {
      mha::io::SafetensorsFile f = good;
      f.insert("lm_head.weight", mha::io::Tensor::from_matrix(tiny_lm::Matrix::Zero(256, 128)));
      mha::io::write_safetensors(tmp + "/tiny_lm_extra.safetensors", f);
      expect_load_error(tmp + "/tiny_lm_extra.safetensors", "holds 39 tensors, expected 38");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tiny_lm_parity: %s\n", e.what());
    return 1;
  }
  std::printf("%s\n", failures ? "tiny_lm_parity: FAILED" : "tiny_lm_parity: all checks passed");
  return failures ? 1 : 0;
}
