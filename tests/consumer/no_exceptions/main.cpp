// Consumer built with -fno-exceptions: includes all of mha, then makes a shape error. MHA_THROW
// must print the message on stderr and abort; expect_abort.cmake checks both.
#include <mha/mha.hpp>

#include <cstdio>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#error "this consumer must be compiled without exceptions (-fno-exceptions)"
#endif

int main() {
  const mha::Linear<float> layer(4, 2);  // in = 4 features, out = 2
  mha::Matrix<float> x(2, 3);            // [tokens, features]: 3 features where 4 are expected
  x.setOnes();
  std::printf("consumer: calling Linear::forward with a [2, 3] input\n");
  std::fflush(stdout);
  const mha::Matrix<float> y = layer.forward(x);  // must not return
  std::printf("consumer: continued after a shape error, y is %dx%d\n", static_cast<int>(y.rows()),
              static_cast<int>(y.cols()));
  return 0;
}
