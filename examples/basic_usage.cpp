// basic_usage: self-attention, batched cross-attention over caller memory, masks, per-head
// weights, and what a shape error looks like.

#include <mha/mha.hpp>

#include <iomanip>
#include <iostream>
#include <vector>

int main() {
  using Matrix = mha::Matrix<float>;
  mha::MultiHeadAttentionOptions options;
  options.embed_dim = 32;  // E
  options.num_heads = 4;   // H, so head_dim = 8
  const mha::MultiHeadAttention<float> attention(options, /*seed=*/42);

  // Self-attention on one sequence: x [L, E] -> output [L, E], averaged weights [L, L].
  const Matrix x = Matrix::Random(6, 32);
  const auto self = attention.forward(x, x, x, mha::ForwardOptions<float>().weights());
  std::cout << "self-attention: output " << self.output.rows() << "x" << self.output.cols() << ", weights "
            << self.weights.rows() << "x" << self.weights.cols() << '\n';

  // Cross-attention on a batch held in plain buffers: queries [N, L, E], memory [N, S, E].
  const mha::Index N = 2, L = 3, S = 5, E = 32;
  std::vector<float> queries(N * L * E), memory(N * S * E);
  for (std::size_t i = 0; i < queries.size(); ++i) queries[i] = 0.01f * float(i % 17);
  for (std::size_t i = 0; i < memory.size(); ++i) memory[i] = 0.02f * float(i % 13);
  const mha::BatchView<float> q(queries.data(), N, L, E), kv(memory.data(), N, S, E);  // no copy
  const auto cross = attention.forward(q, kv, kv);  // output [N * L, E]: the [N, L, E] tensor
  std::cout << "cross-attention: output " << cross.output.rows() << "x" << cross.output.cols()
            << ", output[1][0][0] = " << cross.output(1 * L + 0, 0) << '\n';

  // Causal self-attention on the memory batch, whose entry 1 has two padding tokens at the end.
  mha::BoolMatrix padding = mha::BoolMatrix::Zero(N, S);  // [N, S], true = padding
  padding(1, 3) = padding(1, 4) = true;
  const auto key_padding = mha::KeyPaddingMask<float>::padding(padding);
  const auto masked = attention.forward(kv, kv, kv, mha::ForwardOptions<float>()
                                                        .causal()
                                                        .with_key_padding(key_padding)
                                                        .weights(/*average=*/false));
  // Per-head weights [N * H * S, S]; entry n, head h, query i is row (n * H + h) * S + i.
  const mha::Index H = attention.num_heads(), n = 1, h = 2, i = 4;
  std::cout << "per-head weights " << masked.weights.rows() << "x" << masked.weights.cols()
            << "; entry 1, head 2, last query (keys 3, 4 are padding):" << std::fixed << std::setprecision(3);
  for (mha::Index j = 0; j < S; ++j) std::cout << ' ' << masked.weights((n * H + h) * S + i, j);
  std::cout << '\n';

  // A wrong shape throws mha::shape_error, whose message names the expected and given shapes.
  try {
    const Matrix bad = Matrix::Random(6, 31);
    attention.forward(bad, bad, bad);
  } catch (const mha::shape_error& e) {
    std::cout << "shape_error: " << e.what() << '\n';
  }
  return 0;
}
