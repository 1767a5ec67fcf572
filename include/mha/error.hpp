#pragma once
/// \file error.hpp
/// Exceptions thrown on bad user input, and the two checking macros.
///
/// Every user error (a shape that does not fit, a bad argument, a malformed file) is reported by
/// an exception derived from a standard one, whatever NDEBUG says: Eigen's own `eigen_assert`
/// vanishes in Release builds, so it must never be the only thing between a caller and a wrong
/// result. Messages start with a stable id in brackets (`[mha.shape]`) and name both the expected
/// and the given value, so they can be grepped and read without a debugger.

#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace mha {

/// A tensor had the wrong shape: the message names the expected and the given shape.
class shape_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// An argument had a value the operation cannot use (a NaN in a mask, a thread count < 0, ...).
class argument_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A fixed-capacity container would exceed its capacity (a linear KV cache that is full). Derived
/// from std::length_error, the standard's "exceeds a maximum size" (std::vector::reserve throws
/// it), rather than from argument_error: the call is well-formed and could succeed on a cache with
/// room, so a generation loop can catch exactly this (and stop, or evict) without parsing messages.
/// Messages start with `[mha.cache]`.
class capacity_error : public std::length_error {
 public:
  using std::length_error::length_error;
};

/// A file could not be opened, read or written.
class io_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A file was read but its contents are malformed, truncated or inconsistent.
class format_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace mha

/// Throws `type(message)`. Users may define MHA_THROW before including mha to route errors
/// elsewhere; without exceptions it prints the message and aborts, never continues.
#ifndef MHA_THROW
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define MHA_THROW(type, message) throw type(message)
#else
#define MHA_THROW(type, message) \
  (std::fprintf(stderr, "%s\n", std::string(message).c_str()), std::abort())
#endif
#endif

/// Internal invariant (never user input): checked in Debug builds only.
#define MHA_ASSERT(condition) assert(condition)
