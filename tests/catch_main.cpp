// Catch2 v2 only: the test runner's main(). With Catch2 v3, Catch2::Catch2WithMain provides it.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
