#pragma once
/// \file mha.hpp
/// Everything public of mha, the header-only multi-head attention library on Eigen.
///
///     #include <mha/mha.hpp>
///
/// The safetensors I/O is a separate, optional include (`<mha/io.hpp>`, needs nlohmann-json).

#include "alibi.hpp"
#include "error.hpp"
#include "grouped_query_attention.hpp"
#include "kv_cache.hpp"
#include "linear.hpp"
#include "mask.hpp"
#include "multi_head_attention.hpp"
#include "parallel.hpp"
#include "rotary_embedding.hpp"
#include "scaled_dot_product_attention.hpp"
#include "types.hpp"

/// Library version: major * 10000 + minor * 100 + patch.
#define MHA_VERSION 100
