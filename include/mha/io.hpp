#pragma once
/// \file io.hpp
/// The I/O part of mha: safetensors files and PyTorch state_dicts. Needs nlohmann-json (the
/// `mha::io` CMake target links it); `<mha/mha.hpp>` does not include it.
///
///     #include <mha/io.hpp>
///     auto file = mha::io::read_safetensors("layer.safetensors");
///     auto layer = mha::io::load_multi_head_attention<float>(file, /*num_heads=*/8);

#include "io/safetensors.hpp"
#include "io/decoder.hpp"
#include "io/state_dict.hpp"
