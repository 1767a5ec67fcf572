#!/usr/bin/env bash
# Runs the mha_bench suite and writes the results table.
#
# Usage: bench/run_benchmarks.sh [path/to/mha_bench] [output-dir]
#   defaults: build/bench/mha_bench (or $MHA_BENCH), bench/results
# Environment:
#   REPS=5 BIG_REPS=3   repetitions of the small shapes (L <= 1024), the GEMMs and the attention
#                       core, and of L = 2048, 4096
#   MIN_TIME=0.3        seconds each repetition runs at least (one pass of a big case is longer)
#   INTERLEAVE=1        attention suite: repetitions of all cases of a run in random order
#                       (--benchmark_enable_random_interleaving); 0 runs them back to back
#   TORCH_BLAS=match    LibTorch's OpenBLAS gets each case's thread count (default);
#              single   OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1: LibTorch's GEMMs on one thread
#   DEC_REPS=3          repetitions of the decoder cases (bench_decoder.cpp)
#   SUITE=all           all | attention (GEMMs, attention core, BM_MHA*, BM_Torch*) | decoder
#                       (bench_decoder.cpp)
#   UPDATE_README=1     also write the tables into bench/README.md (between the results markers),
#                       the short table into README.md (between the perf markers) and redraw
#                       docs/bench_seqlen.svg (bench/plot.py)
#
# Each family runs in its own process so that its threading environment is its own: mha with
# OpenMP's defaults, LibTorch with OMP_WAIT_POLICY=PASSIVE (its idle OpenMP workers sleep instead
# of spinning against OpenBLAS's threads). Run it on an otherwise idle machine. On a shared one,
# INTERLEAVE=1 (the default for the attention suite) spreads a burst of foreign load over the
# repetitions of many cases instead of every repetition of one, so that the medians survive it. Each run's duration
# and its 1-minute load average at start and end go to <output-dir>/runs.txt (summarize.py prints
# them next to the tables).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bench=${1:-${MHA_BENCH:-build/bench/mha_bench}}
out=${2:-$here/results}
reps=${REPS:-5}
big_reps=${BIG_REPS:-3}
min_time=${MIN_TIME:-0.3}
torch_blas=${TORCH_BLAS:-match}
dec_reps=${DEC_REPS:-3}
interleave=${INTERLEAVE:-1}
suite=${SUITE:-all}

if [[ ! -x $bench ]]; then
  echo "run_benchmarks.sh: no mha_bench at '$bench' (cmake --preset bench && cmake --build --preset bench)" >&2
  exit 1
fi
mkdir -p "$out"

load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  echo "run_benchmarks.sh: warning: load average $load; the numbers will be noisy" >&2
fi

small='(128|256|512|1024)'
big='(2048|4096)'
torch_env=(OMP_WAIT_POLICY=PASSIVE)
if [[ $torch_blas == single ]]; then
  torch_env+=(OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 MHA_BENCH_TORCH_BLAS_THREADS=env)
fi

# The machine's busy CPU time so far, in seconds (user, nice, system, irq, softirq, steal of
# /proc/stat's cpu line; idle and iowait left out).
busy_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit }' /proc/stat
}

# Sets children_cpu to this shell's children's CPU time so far, in seconds (bash's `times`,
# second line: "XmY.YYYs XmY.YYYs"). `times` must run in this shell, not in a $(...) or <(...)
# subshell, which would see only its own children: hence the file.
children_cpu=0
times_file=$(mktemp)
trap 'rm -f "$times_file"' EXIT
read_children_cpu() {
  times >"$times_file"
  children_cpu=$(awk 'NR == 2 { split($1, a, "m"); split($2, b, "m"); printf "%.2f", a[1] * 60 + a[2] + b[1] * 60 + b[2] }' "$times_file")
}

# run NAME REPETITIONS FILTER [ENV...]
# Also appends "NAME seconds load_start load_end foreign" to runs.txt: the 1-minute load average
# counts mha_bench's own threads, so the last field says what else ran: the CPU time of every
# other process during the run over its wall time, in cores (0: nothing else ran; 1: another
# process kept one of the two cores busy on average).
run() {
  local name=$1 repetitions=$2 filter=$3
  shift 3
  rm -f "$out/$name.json"
  if [[ -z $("$bench" --benchmark_list_tests --benchmark_filter="$filter" 2>/dev/null) ]]; then
    echo "== $name: no case matches '$filter' (mha_bench built without LibTorch?), skipped" >&2
    return
  fi
  echo "== $name: --benchmark_filter='$filter' x $repetitions" >&2
  local load_start busy_start own_start wall_start
  load_start=$(cut -d' ' -f1 /proc/loadavg)
  busy_start=$(busy_seconds)
  read_children_cpu
  own_start=$children_cpu
  wall_start=$(date +%s.%N)
  env "$@" "$bench" "${extra_flags[@]}" \
    --benchmark_filter="$filter" \
    --benchmark_repetitions="$repetitions" \
    --benchmark_report_aggregates_only=true \
    --benchmark_min_time="$min_time" \
    --benchmark_format=json \
    --benchmark_out_format=json \
    --benchmark_out="$out/$name.json" >/dev/null
  local load_end seconds foreign
  load_end=$(cut -d' ' -f1 /proc/loadavg)
  read_children_cpu
  read -r seconds foreign < <(awk -v w0="$wall_start" -v w1="$(date +%s.%N)" -v b0="$busy_start" \
    -v b1="$(busy_seconds)" -v o0="$own_start" -v o1="$children_cpu" \
    'BEGIN { w = w1 - w0; f = (b1 - b0 - (o1 - o0)) / w; printf "%.0f %.2f\n", w, (f < 0 ? 0 : f) }')
  echo "   $name took $seconds s (load average $load_start -> $load_end; other processes used $foreign cores)" >&2
  echo "$name $seconds $load_start $load_end $foreign" >>"$out/runs.txt"
}

total=$SECONDS
rm -f "$out/runs.txt"
extra_flags=()
if [[ $suite == all || $suite == attention ]]; then
  [[ $interleave == 1 ]] && extra_flags=(--benchmark_enable_random_interleaving=true)
  # The in-projection GEMMs: OpenBLAS (the ceiling), mha's packed micro-kernel, Eigen (the
  # fallback ceiling); f32 and f64. Then the attention core alone, then the forwards, each size's
  # LibTorch run right after mha's.
  run gemm "$reps" '^BM_Gemm(Roofline|OpenBLASF32|OpenBLASF64|PackedF32|PackedF64)/'
  run attention_core "$reps" '^BM_Attention(Core|GemmOpenBLAS)/'
  run mha_small "$reps" "^BM_MHA(_Reference|_F64)?/[0-9]+/$small/"
  run torch_small "$reps" "^BM_Torch(Native)?(F64)?/[0-9]+/$small/" "${torch_env[@]}"
  run mha_big "$big_reps" "^BM_MHA(_Reference|_F64)?/[0-9]+/$big/"
  run torch_big "$big_reps" "^BM_Torch(Native)?(F64)?/[0-9]+/$big/" "${torch_env[@]}"
  extra_flags=()  # the decoder cases rebuild their 256 MiB caches when the case changes
fi
if [[ $suite == all || $suite == decoder ]]; then
  # The copy bandwidth runs first in the mha process, so its decode ratios use the same run's.
  run decoder "$dec_reps" '^BM_(CopyBandwidth|ReadBandwidth|DecodeAttention|DecodeStep|Prefill)/'
  run torch_decoder "$dec_reps" '^BM_TorchDecodeStep/' "${torch_env[@]}"
fi
echo "== suite took $((SECONDS - total)) s" >&2

memory_check=$(dirname "$bench")/mha_memory_check
if [[ -x $memory_check ]]; then
  "$memory_check" | tee "$out/memory_check.txt"
fi

results=()
for name in gemm attention_core mha_small torch_small mha_big torch_big decoder torch_decoder; do
  [[ -f $out/$name.json ]] && results+=("$out/$name.json")
done
summarize=(python3 "$here/summarize.py" "${results[@]}")
[[ -f $out/memory_check.txt ]] && summarize+=(--memory-check "$out/memory_check.txt")
if [[ ${UPDATE_README:-0} == 1 ]]; then
  "${summarize[@]}" --update-readme "$here/README.md" --update-headline "$here/../README.md" | tee "$out/summary.md"
  if [[ $suite == all || $suite == attention ]]; then
    python3 "$here/plot.py" "${results[@]}" -o "$here/../docs/bench_seqlen.svg"
  fi
else
  "${summarize[@]}" | tee "$out/summary.md"
fi
