#!/usr/bin/env bash
# Generation speed of tiny_lm, C++ (mha) against PyTorch, in one run:
#
#     examples/tiny_lm/bench.sh [BUILD_DIR]
#
# builds the tiny_lm target in BUILD_DIR (default build/release, configured with the `release`
# preset, -O2 -march=native, when it does not exist yet), then runs `tiny_lm --bench` and
# `generate.py --bench` one after the other. Both generate 256 tokens after the same 32-token
# prompt, greedy, with a KV cache, batch 1, at 1 and 2 threads, and print the median tokens/s of 3
# runs after a warm-up, timed from the start of the prompt's forward pass to the last token. The
# last lines give C++ / PyTorch per thread count. The load average is printed before and after:
# on a shared machine the figures mean little without it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-$root/build/release}"
python=/usr/bin/python3   # Debian's python3 with python3-torch (see examples/tiny_lm/README.md)

if [ ! -f "$build/CMakeCache.txt" ]; then
  if [ $# -gt 0 ]; then
    echo "bench.sh: $build is not a configured build directory" >&2
    exit 2
  fi
  (cd "$root" && cmake --preset release >/dev/null)
fi
cmake --build "$build" --target tiny_lm -j2 >/dev/null

echo "load before: $(uptime)"
echo "== C++ (mha): $build/examples/tiny_lm --bench"
cpp="$("$build/examples/tiny_lm" --bench)"
echo "$cpp"
echo "== PyTorch $("$python" -c 'import torch; print(torch.__version__)'): generate.py --bench"
py="$("$python" "$root/examples/tiny_lm/generate.py" --bench)"
echo "$py"
echo "load after: $(uptime)"

rate() {  # rate OUTPUT THREADS -> the median tokens/s of that thread count
  sed -n "s/^threads $2: \([0-9.]*\) tokens\/s.*/\1/p" <<<"$1"
}
for t in 1 2; do
  c="$(rate "$cpp" "$t")"
  p="$(rate "$py" "$t")"
  awk -v t="$t" -v c="$c" -v p="$p" \
    'BEGIN { printf "threads %d: C++ %.1f tokens/s, PyTorch %.1f tokens/s: C++ is %.1fx PyTorch\n", t, c, p, c / p }'
done
