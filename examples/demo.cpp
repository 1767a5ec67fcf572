// mha_demo: what attention heads can capture, shown with heads whose weights are set by hand.
//
// A ten-token sentence is encoded with one-hot features: [word (9) | position (10) | zeros], E = 48.
// Four heads of a self-attention layer (head_dim 12) get hand-made W_Q and W_K so that each one
// implements a known pattern; W_V copies the word one-hot into each head and out_proj is the
// identity, so the layer's output says which word each head read. A layer with random weights
// (seed 7) is run on the same input for contrast. The demo prints what every head attends to,
// checks that each designed head shows its pattern (exit status 1 if not), and draws all the heads
// as heatmaps in attention.svg (or the path given as first argument).
//
// Build: cmake --build build --target mha_demo, or by hand:
//   g++ -std=c++17 -O2 -I include -I /usr/include/eigen3 examples/demo.cpp -o mha_demo

#include <mha/mha.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "svg_heatmap.hpp"

namespace {

using Matrix = mha::Matrix<float>;
using mha::Index;

const std::vector<std::string> kSentence = {"the", "cat",     "sat", "on",  "the",
                                            "mat", "because", "it",  "was", "tired"};
const std::vector<std::string> kVocab = {"the", "cat", "sat", "on", "mat", "because", "it", "was", "tired"};
const std::vector<std::string> kNouns = {"cat", "mat"};

constexpr Index kMaxLen = 10;  // positions with a one-hot feature
constexpr Index kHeads = 4;
constexpr Index kHeadDim = 12;  // >= kMaxLen + 2 (the noun head's needs), >= vocabulary size
constexpr Index kEmbed = kHeads * kHeadDim;

Index word_id(const std::string& w) {
  return static_cast<Index>(std::find(kVocab.begin(), kVocab.end(), w) - kVocab.begin());
}
bool is_noun(const std::string& w) { return std::find(kNouns.begin(), kNouns.end(), w) != kNouns.end(); }

// Feature columns of the input.
Index word_feature(Index w) { return w; }
Index position_feature(Index p) { return static_cast<Index>(kVocab.size()) + p; }

// x [L, E]: one-hot word, one-hot position, zero padding.
Matrix embed(const std::vector<std::string>& tokens) {
  Matrix x = Matrix::Zero(static_cast<Index>(tokens.size()), kEmbed);
  for (Index i = 0; i < x.rows(); ++i) {
    x(i, word_feature(word_id(tokens[i]))) = 1;
    x(i, position_feature(i)) = 1;
  }
  return x;
}

// A head's pattern: the keys a query should attend, by the tokens' positions.
struct Head {
  std::string name;
  std::function<std::vector<Index>(Index query)> targets;
};

// The designed heads, in order. Each query's target keys, given the sentence.
std::vector<Head> designed_heads(const std::vector<std::string>& s) {
  const Index L = static_cast<Index>(s.size());
  return {
      {"previous token", [](Index i) { return std::vector<Index>{i > 0 ? i - 1 : 0}; }},
      {"same word",
       [&s, L](Index i) {
         std::vector<Index> keys;
         for (Index j = 0; j < L; ++j)
           if (s[j] == s[i]) keys.push_back(j);
         return keys;
       }},
      {"first token", [](Index) { return std::vector<Index>{0}; }},
      {"latest noun so far",
       [&s](Index i) {
         for (Index j = i; j >= 0; --j)
           if (is_noun(s[j])) return std::vector<Index>{j};
         return std::vector<Index>{i};  // no noun yet: the token itself
       }},
  };
}

// The hand-made layer. Head h's scores are q.k / sqrt(d) with q = x W_Q[h]^T and k = x W_K[h]^T
// (rows h*d .. h*d+d-1 of W_Q and W_K): each W_K row picks features of the key token, the matching
// W_Q row says how much the query rewards them, and sqrt(d) in W_Q cancels the 1/sqrt(d) scaling
// so that the numbers below are the logits themselves.
mha::MultiHeadAttention<float> designed_layer() {
  mha::MultiHeadAttentionOptions options;
  options.embed_dim = kEmbed;
  options.num_heads = kHeads;
  mha::MultiHeadAttention<float> layer(options);

  const Index E = kEmbed, d = kHeadDim, V = static_cast<Index>(kVocab.size());
  const float unscale = std::sqrt(static_cast<float>(d));
  Matrix w = Matrix::Zero(3 * E, E);  // in_proj_weight: rows [0,E) W_Q, [E,2E) W_K, [2E,3E) W_V
  auto q = [&](Index head, Index c, Index feature) -> float& { return w(head * d + c, feature); };
  auto k = [&](Index head, Index c, Index feature) -> float& { return w(E + head * d + c, feature); };
  auto set_constant = [&](Index head, Index c, float logit) {  // the words' one-hots sum to 1
    for (Index v = 0; v < V; ++v) q(head, c, word_feature(v)) = logit * unscale;
  };

  // Head 0, previous token: query at position i is coordinate i, key at j is coordinate j + 1.
  // Key 0 is also coordinate 0, so the first query attends itself.
  const float sharp = 10;
  for (Index p = 0; p < kMaxLen; ++p) {
    q(0, p, position_feature(p)) = sharp * unscale;
    if (p + 1 < d) k(0, p + 1, position_feature(p)) = 1;
  }
  k(0, 0, position_feature(0)) = 1;

  // Head 1, same word: query and key both are the word's one-hot.
  for (Index v = 0; v < V; ++v) {
    q(1, v, word_feature(v)) = sharp * unscale;
    k(1, v, word_feature(v)) = 1;
  }

  // Head 2, first token: every query (a constant) rewards the key at position 0.
  set_constant(2, 0, sharp);
  k(2, 0, position_feature(0)) = 1;

  // Head 3, latest noun so far: logit = 70 [j <= i] + 35 [key is a noun] + 3 j. The first term
  // keeps keys in the past (q has ones for positions <= i, k a one-hot), the second prefers
  // nouns, the third the most recent one. The gaps are >= 8 logits in every case.
  for (Index c = 0; c < kMaxLen; ++c)
    for (Index p = c; p < kMaxLen; ++p) q(3, c, position_feature(p)) = 70 * unscale;
  for (Index p = 0; p < kMaxLen; ++p) k(3, p, position_feature(p)) = 1;
  set_constant(3, kMaxLen, 35);
  for (const std::string& noun : kNouns) k(3, kMaxLen, word_feature(word_id(noun))) = 1;
  set_constant(3, kMaxLen + 1, 3);
  for (Index p = 0; p < kMaxLen; ++p) k(3, kMaxLen + 1, position_feature(p)) = static_cast<float>(p);

  // W_V: every head's value is the key's word one-hot, so a head's output is the word it read.
  for (Index h = 0; h < kHeads; ++h)
    for (Index v = 0; v < V; ++v) w(2 * E + h * d + v, word_feature(v)) = 1;

  layer.in_proj().set_in_proj_weight(w);
  layer.out_proj().set_weight(Matrix::Identity(E, E));
  return layer;  // the biases are zero after construction
}

std::string fixed(double x) { return svg::fixed(x, 2); }

std::string pad(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

// Head h of per-head weights [H * L, L].
Matrix head_weights(const Matrix& weights, Index h, Index L) { return weights.middleRows(h * L, L); }

}  // namespace

int main(int argc, char** argv) {
  const std::string svg_path = argc > 1 ? argv[1] : "attention.svg";
  const std::vector<std::string>& s = kSentence;
  const Index L = static_cast<Index>(s.size());
  const Matrix x = embed(s);  // [L, E]
  const auto options = mha::ForwardOptions<float>().weights(/*average=*/false);

  const mha::MultiHeadAttention<float> designed = designed_layer();
  const mha::AttentionResult<float> result = designed.forward(x, x, x, options);  // weights [H * L, L]
  const std::vector<Head> heads = designed_heads(s);

  std::cout << "mha_demo: " << kHeads << " hand-made heads over \"";
  for (Index i = 0; i < L; ++i) std::cout << (i ? " " : "") << s[i];
  std::cout << "\" (E = " << kEmbed << ", head_dim = " << kHeadDim << ")\n\n";

  // What each query attends to most, per head: key[position] weight.
  std::cout << pad("query", 12);
  for (Index h = 0; h < kHeads; ++h) {
    const std::string name = "h" + std::to_string(h) + " " + heads[h].name;
    std::cout << " | " << (h + 1 < kHeads ? pad(name, 20) : name);
  }
  std::cout << '\n' << std::string(12 + kHeads * 23, '-') << '\n';
  for (Index i = 0; i < L; ++i) {
    std::cout << pad(s[i] + "[" + std::to_string(i) + "]", 12);
    for (Index h = 0; h < kHeads; ++h) {
      Index j = 0;
      const float w = head_weights(result.weights, h, L).row(i).maxCoeff(&j);
      const std::string cell = s[j] + "[" + std::to_string(j) + "] " + fixed(w);
      std::cout << " | " << (h + 1 < kHeads ? pad(cell, 20) : cell);
    }
    std::cout << '\n';
  }

  // Each designed head must put (almost) all of every query's weight on its target keys.
  std::cout << '\n';
  bool all_ok = true;
  for (Index h = 0; h < kHeads; ++h) {
    const Matrix w = head_weights(result.weights, h, L);
    int hits = 0;
    for (Index i = 0; i < L; ++i) {
      float mass = 0;
      for (Index j : heads[h].targets(i)) mass += w(i, j);
      hits += mass >= 0.9f;
    }
    all_ok = all_ok && hits == L;
    std::cout << "head " << h << " (" << heads[h].name << "): " << hits << "/" << L
              << " queries put >= 0.9 of their weight on the " << heads[h].name
              << (hits == L ? "" : "   <-- FAILED") << '\n';
  }

  // The output: W_V copies words and out_proj is the identity, so head h's columns hold the word
  // it read, for each query.
  std::cout << "\nwhat each head read (argmax of its output columns):\n";
  for (Index h = 0; h < kHeads; ++h) {
    std::cout << "  h" << h << ": ";
    for (Index i = 0; i < L; ++i) {
      Index v = 0;
      result.output.row(i).segment(h * kHeadDim, static_cast<Index>(kVocab.size())).maxCoeff(&v);
      std::cout << (i ? " " : "") << kVocab[v];
    }
    std::cout << '\n';
  }

  // The same layer with random (PyTorch-style) initial weights, for contrast.
  const mha::MultiHeadAttention<float> random_layer(designed.options(), /*seed=*/7);
  const Matrix random_weights = random_layer.forward(x, x, x, options).weights;  // [H * L, L]
  std::cout << "\nrandom layer (seed 7), largest weight per query (uniform would be " << fixed(1.0 / L)
            << "):\n";
  for (Index h = 0; h < kHeads; ++h) {
    const Eigen::VectorXf row_max = head_weights(random_weights, h, L).rowwise().maxCoeff();
    std::cout << "  h" << h << ": " << fixed(row_max.minCoeff()) << " .. " << fixed(row_max.maxCoeff())
              << '\n';
  }

  std::vector<svg::PanelRow> rows(2);
  rows[0].heading = "Designed heads: W_Q and W_K set by hand";
  rows[1].heading = "Random heads: the same layer with PyTorch's initialisation (seed 7) attends almost "
                    "uniformly (1/" + std::to_string(L) + ")";
  for (Index h = 0; h < kHeads; ++h) {
    const std::string n = std::to_string(h);
    rows[0].panels.push_back({"head " + n + ": " + heads[h].name, head_weights(result.weights, h, L)});
    rows[1].panels.push_back({"random head " + n, head_weights(random_weights, h, L)});
  }
  std::ofstream out(svg_path);
  svg::write_figure(out, "What attention heads can capture",
                    "Attention weights of a 4-head self-attention layer over one sentence: a row per query "
                    "token, a column per key token; each row sums to 1.",
                    rows, s);
  out.close();
  if (!out) {
    std::cerr << "mha_demo: could not write " << svg_path << '\n';
    return 1;
  }
  std::cout << "\nwrote " << svg_path << '\n';
  return all_ok ? 0 : 1;
}
