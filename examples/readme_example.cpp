#include <mha/mha.hpp>

#include <iostream>

int main() {
  mha::MultiHeadAttention<float> attention({/*embed_dim=*/64, /*num_heads=*/8});
  mha::Matrix<float> x = mha::Matrix<float>::Random(10, 64);  // [L, E]: 10 tokens, 64 features

  // Causal self-attention, also returning the attention weights averaged over the heads.
  auto [output, weights] = attention.forward(x, x, x, mha::ForwardOptions<float>().causal().weights());

  std::cout << "output " << output.rows() << " x " << output.cols()         // output 10 x 64
            << ", weights row 3 sums to " << weights.row(3).sum() << '\n';  // [L, L], rows sum to 1
}
