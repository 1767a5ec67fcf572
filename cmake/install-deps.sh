#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages mha needs for one task, when they are missing.
#
#   cmake/install-deps.sh demo        Eigen (enough for `cmake --workflow --preset demo`)
#   cmake/install-deps.sh test        + Catch2, nlohmann-json; clang + libFuzzer runtime if available
#   cmake/install-deps.sh bench       + Google Benchmark, OpenBLAS
#   cmake/install-deps.sh bench-torch + LibTorch (large) for the PyTorch baseline
#   cmake/install-deps.sh all         test + bench
#   cmake/install-deps.sh docs        Doxygen (the `docs` target, HTML API reference)
#   cmake/install-deps.sh compat      test + clang + Doxygen (.ci/run's compatibility stage)
#
# Installs with apt-get as root, or through `sudo -n` when that works without a password.
# When it cannot install (no apt-get, no root, no sudo), it prints one line naming the packages
# and exits 0: CMake then tries to fetch Eigen, Catch2 and nlohmann_json itself
# (MHA_FETCH_DEPS) and says what to install if that fails too.
set -euo pipefail

task="${1:-test}"
required=()
optional=()  # installed when possible, never an error

# Build tools, unless some other install already provides them.
command -v cmake >/dev/null 2>&1 || required+=(cmake)
command -v c++ >/dev/null 2>&1 || required+=(g++)
command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 || required+=(make)

case "$task" in
  demo)
    required+=(libeigen3-dev) ;;
  test)
    required+=(libeigen3-dev catch2 nlohmann-json3-dev)
    optional+=(clang libclang-rt-dev) ;;
  bench)
    required+=(libeigen3-dev libbenchmark-dev libopenblas-dev) ;;
  bench-torch)
    required+=(libeigen3-dev libbenchmark-dev libopenblas-dev libtorch-dev) ;;
  all)
    required+=(libeigen3-dev catch2 nlohmann-json3-dev libbenchmark-dev libopenblas-dev)
    optional+=(clang libclang-rt-dev) ;;
  -h|--help|help)
    sed -n '2,15s/^# \{0,1\}//p' "$0"; exit 0 ;;
  docs)
    required+=(doxygen) ;;
  compat)
    required+=(libeigen3-dev catch2 nlohmann-json3-dev clang doxygen) ;;
  *)
    echo "install-deps.sh: unknown task '$task' (demo, test, bench, bench-torch, all, docs, compat)" >&2
    exit 2 ;;
esac

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
missing_optional=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${required[@]}"; do installed "$p" || missing+=("$p"); done
  for p in "${optional[@]}"; do installed "$p" || missing_optional+=("$p"); done
else
  missing=("${required[@]}")
fi

if [ ${#missing[@]} -eq 0 ] && [ ${#missing_optional[@]} -eq 0 ]; then
  echo "mha: all packages for '$task' are installed"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo_cmd=(sudo -n)
  else
    sudo_cmd=(none)
  fi
fi

if [ ${#missing[@]} -gt 0 ] && { ! command -v apt-get >/dev/null 2>&1 || [ "${sudo_cmd[*]}" = none ]; }; then
  echo "mha: cannot install packages here (needs apt-get and root or sudo); please install: ${missing[*]}"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "${sudo_cmd[*]}" = none ]; then
  echo "mha: optional packages not installed (fuzzing is skipped without them): ${missing_optional[*]}"
  exit 0
fi

apt() {
  if [ ${#sudo_cmd[@]} -gt 0 ]; then
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@"
  else
    DEBIAN_FRONTEND=noninteractive apt-get "$@"
  fi
}

echo "mha: installing ${missing[*]}${missing_optional[*]:+ ${missing_optional[*]}}"
if ! apt update -qq; then
  echo "mha: apt-get update failed; please install: ${missing[*]} ${missing_optional[*]}"
  exit 0
fi
if [ ${#missing[@]} -gt 0 ]; then
  if ! apt install -y -qq --no-install-recommends "${missing[@]}"; then
    echo "mha: apt-get install failed; please install: ${missing[*]}"
    exit 0
  fi
fi
for p in "${missing_optional[@]}"; do
  apt install -y -qq --no-install-recommends "$p" \
    || echo "mha: optional package $p not installed (fuzzing is skipped without it)"
done
exit 0
