// Packaging check: the mha headers are found through the exported targets and compile on their own.
#include <mha/mha.hpp>
#if defined(MHA_CONSUMER_IO) && __has_include(<mha/io.hpp>)
#include <mha/io.hpp>
#endif

#include <cstdio>
#include <stdexcept>
#include <type_traits>

static_assert(std::is_base_of<std::exception, mha::shape_error>::value,
              "mha::shape_error is an exception type");

int main() {
  mha::Matrix<float> x(2, 3);  // (tokens, features)
  x.setOnes();
  std::printf("consumer: mha::Matrix<float> %dx%d, sum %g\n", static_cast<int>(x.rows()),
              static_cast<int>(x.cols()), static_cast<double>(x.sum()));
  return x.sum() == 6.0f ? 0 : 1;
}
