// mha_memory_check: how much memory one long self-attention forward needs beyond its inputs.
//
// One forward of MultiHeadAttention<float> at B = 1, L = S = 16384, E = 512, H = 8, without
// weights, through the allocation-free overload. The layer, the input `[L, E]` and the output
// `[L, E]` are allocated and touched first; the peak resident set (VmHWM in /proc/self/status) is
// read before and after the forward, and the growth is what the forward itself took: the
// workspace (packed QKV `[L, 3E]` = 96 MiB, context `[L, E]` = 32 MiB) plus the kernel's per-thread
// scratch. With the tiled kernel that scratch is a few tiles; the reference kernel holds an
// `[L, S]` float matrix per thread (1 GiB each at L = 16384), so it runs only with --reference.
//
// Usage: mha_memory_check [--reference] [--threads=N] [--tokens=L]
// Prints `peak_rss_growth_mib=<x>` on stdout (details on stderr); exit code 0 on success.

#include <mha/multi_head_attention.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <string>

namespace {

// A `Vm...:` line of /proc/self/status, in KiB; -1 if absent.
long status_kib(const char* key) {
  std::ifstream status("/proc/self/status");
  std::string line;
  const std::size_t n = std::strlen(key);
  while (std::getline(status, line))
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') return std::atol(line.c_str() + n + 1);
  return -1;
}

// Resets VmHWM to the current RSS (Linux >= 4.0); false if the kernel refuses.
bool reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

bool starts_with(const char* arg, const char* prefix) { return std::strncmp(arg, prefix, std::strlen(prefix)) == 0; }

}  // namespace

int main(int argc, char** argv) {
  bool reference = false;
  int threads = 0;  // 0: mha's default
  mha::Index L = 16384;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reference") == 0) {
      reference = true;
    } else if (starts_with(argv[i], "--threads=")) {
      threads = std::atoi(argv[i] + 10);
    } else if (starts_with(argv[i], "--tokens=")) {
      L = std::atol(argv[i] + 9);
    } else {
      std::fprintf(stderr, "usage: %s [--reference] [--threads=N] [--tokens=L]\n", argv[0]);
      return 2;
    }
  }

  try {
    const mha::Index E = 512, H = 8;
    mha::MultiHeadAttentionOptions options;
    options.embed_dim = E;
    options.num_heads = H;
    const mha::MultiHeadAttention<float> layer(options, /*seed=*/1);
    const mha::Matrix<float> x = mha::Matrix<float>::Random(L, E);  // [L, E]: query, key and value
    mha::Matrix<float> output = mha::Matrix<float>::Zero(L, E);     // [L, E]
    mha::Workspace<float> workspace;
    const mha::BatchView<float> view(x, 1);
    mha::ForwardOptions<float> forward_options;
    forward_options.threads(threads).use_kernel(reference ? mha::Kernel::reference : mha::Kernel::automatic);

    const bool reset = reset_peak_rss();
    const long before_kib = status_kib("VmHWM");
    const auto start = std::chrono::steady_clock::now();
    layer.forward(view, view, view, forward_options, workspace, output);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const long after_kib = status_kib("VmHWM");
    if (before_kib < 0 || after_kib < 0) {
      std::fprintf(stderr, "mha_memory_check: no VmHWM in /proc/self/status\n");
      return 1;
    }

    const double growth_mib = double(after_kib - before_kib) / 1024.0;
    const double tensor_mib = double(L) * double(E) * sizeof(float) / (1024.0 * 1024.0);
    std::fprintf(stderr,
                 "mha_memory_check: B=1 L=S=%ld E=%ld H=%ld kernel=%s threads=%d, forward %.2f s\n"
                 "  VmHWM before %.1f MiB (inputs and output, %.1f MiB each, included%s), after %.1f MiB\n"
                 "  for scale: all heads' Q, K, V and context = %.1f MiB (the layer's workspace budget is %.1f MiB, "
                 "so it runs heads in groups); one [L, S] float matrix = %.1f MiB\n",
                 long(L), long(E), long(H), reference ? "reference" : "automatic", mha::num_threads(threads), seconds,
                 before_kib / 1024.0, tensor_mib, reset ? "; peak reset first" : "", after_kib / 1024.0,
                 4.0 * tensor_mib, double(layer.workspace_budget()) / (1024.0 * 1024.0),
                 double(L) * double(L) * sizeof(float) / (1024.0 * 1024.0));
    std::printf("peak_rss_growth_mib=%.1f\n", growth_mib);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mha_memory_check: %s\n", e.what());
    return 1;
  }
  return 0;
}
