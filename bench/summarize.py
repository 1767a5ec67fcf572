#!/usr/bin/env python3
"""Turns mha_bench's Google Benchmark JSON into the markdown tables of bench/README.md.

Usage: summarize.py RESULT.json [RESULT.json ...] [--update-readme bench/README.md]

Reads the aggregates of runs made with --benchmark_repetitions=N
--benchmark_report_aggregates_only=true (median and cv); a run without repetitions is read as
its single iteration (cv then shows as "-"). Several files (a suite split with
--benchmark_filter) are merged; a case present twice keeps the last file's numbers.

Per attention family (BM_MHA, BM_MHA_Reference, BM_Torch), one row per
(B, L, E, H, causal, threads) with:
  ms         median wall time of one forward
  GFLOP/s    median, dense FLOPs (8 B L E^2 + 4 B L^2 E) over time, causal included
  cv         coefficient of variation of the time over the repetitions
  x torch    BM_Torch time / this time, same args (> 1: faster than LibTorch)
  x ref      BM_MHA_Reference time / this time, same args (BM_MHA only)
  % GEMM     this GFLOP/s / BM_GemmRoofline GFLOP/s of the in-projection [B L, E] x [E, 3E], same threads
  causal/dense  time with causal = 1 / time with causal = 0, same shape and threads (causal rows)
  2T speedup    time at 1 thread / time at 2 threads, same shape and causal (2-thread rows)

Plain python3, no third-party modules.
"""

import argparse
import json
import os
import re
import sys

ATTENTION_FAMILIES = ["BM_MHA", "BM_MHA_Reference", "BM_Torch"]
ROOFLINE = "BM_GemmRoofline"
README_BEGIN = "<!-- results:begin -->"
README_END = "<!-- results:end -->"


def parse_name(run_name):
    """'BM_MHA/1/128/512/8/0/1/real_time' -> ('BM_MHA', (1, 128, 512, 8, 0, 1))."""
    parts = run_name.split("/")
    family = parts[0]
    args = tuple(int(p) for p in parts[1:] if re.fullmatch(r"-?\d+", p))
    return family, args


def to_ms(value, unit):
    return value * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def load(paths):
    """{(family, args): {"ms": median ms, "gflops": median GFLOP/s, "cv": cv or None}}, context."""
    results, context = {}, {}
    loads = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        # The first file's context, except LibTorch's threading lines: the last file's (the
        # torch runs come last and are the ones whose environment those lines describe).
        for k, v in data.get("context", {}).items():
            if k not in context or k.startswith("torch_"):
                context[k] = v
        load_avg = data.get("context", {}).get("load_avg")
        if load_avg:
            loads.append(f"{os.path.basename(path)} {load_avg[0]:.2f}")
        singles = {}
        for b in data.get("benchmarks", []):
            if b.get("error_occurred"):
                print(f"warning: {b['name']} failed: {b.get('error_message', '')}", file=sys.stderr)
                continue
            key = parse_name(b.get("run_name", b["name"]))
            if b.get("run_type") == "aggregate":
                entry = results.setdefault(key, {"ms": None, "gflops": None, "cv": None})
                agg = b.get("aggregate_name")
                if agg == "median":
                    entry["ms"] = to_ms(b["real_time"], b["time_unit"])
                    entry["gflops"] = b.get("GFLOPS")
                elif agg == "cv":
                    entry["cv"] = b["real_time"]  # a fraction (aggregate_unit "percentage")
            else:
                singles.setdefault(key, []).append(b)
        for key, runs in singles.items():
            if key in results:
                continue
            times = sorted(to_ms(r["real_time"], r["time_unit"]) for r in runs)
            rates = sorted(r.get("GFLOPS", 0.0) for r in runs)
            results[key] = {"ms": times[len(times) // 2], "gflops": rates[len(rates) // 2], "cv": None}
    if loads:
        context["load_avg"] = "; ".join(loads) + " (1-minute load average when each run started)"
    return results, context


def fmt(x, spec, suffix=""):
    return "-" if x is None else format(x, spec) + suffix


def ratio(a, b):
    return a / b if a is not None and b else None


def attention_table(results, family):
    keys = sorted(k for k in results if k[0] == family and len(k[1]) == 6)
    if not keys:
        return None
    cols = ["B", "L", "E", "H", "causal", "threads", "ms", "GFLOP/s", "cv"]
    if family != "BM_Torch":
        cols.append("x torch")
    if family == "BM_MHA":
        cols.append("x ref")
    cols += ["% GEMM", "causal/dense", "2T speedup"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" for _ in cols) + "|"]
    for key in keys:
        B, L, E, H, causal, threads = key[1]
        r = results[key]

        def other(fam=family, c=causal, t=threads):
            return results.get((fam, (B, L, E, H, c, t)), {}).get("ms")

        gemm = results.get((ROOFLINE, (B * L, E, 3 * E, threads)), {}).get("gflops")
        row = [str(B), str(L), str(E), str(H), str(causal), str(threads), fmt(r["ms"], ".2f"),
               fmt(r["gflops"], ".1f"), fmt(None if r["cv"] is None else 100 * r["cv"], ".1f", "%")]
        if family != "BM_Torch":
            row.append(fmt(ratio(other("BM_Torch"), r["ms"]), ".2f"))
        if family == "BM_MHA":
            row.append(fmt(ratio(other("BM_MHA_Reference"), r["ms"]), ".2f"))
        row.append(fmt(None if ratio(r["gflops"], gemm) is None else 100 * ratio(r["gflops"], gemm), ".0f", "%"))
        row.append(fmt(ratio(r["ms"], other(c=0)), ".2f") if causal else "")
        row.append(fmt(ratio(other(t=1), r["ms"]), ".2f") if threads > 1 else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def roofline_table(results):
    keys = sorted(k for k in results if k[0] == ROOFLINE and len(k[1]) == 4)
    if not keys:
        return None
    lines = ["| M = B L | K = E | N = 3E | threads | ms | GFLOP/s | cv | 2T speedup |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key in keys:
        M, K, N, threads = key[1]
        r = results[key]
        one = results.get((ROOFLINE, (M, K, N, 1)), {}).get("ms")
        lines.append("| " + " | ".join([
            str(M), str(K), str(N), str(threads), fmt(r["ms"], ".3f"), fmt(r["gflops"], ".1f"),
            fmt(None if r["cv"] is None else 100 * r["cv"], ".1f", "%"),
            fmt(ratio(one, r["ms"]), ".2f") if threads > 1 else ""]) + " |")
    return "\n".join(lines)


def context_lines(context):
    keys = ["date", "host_name", "num_cpus", "mhz_per_cpu", "load_avg", "eigen_version", "eigen_simd",
            "mha_openmp", "torch_version", "torch_blas", "torch_blas_threads"]
    out = []
    for k in keys:
        if k in context:
            v = context[k]
            if isinstance(v, list):
                v = ", ".join(format(x, ".2f") if isinstance(x, float) else str(x) for x in v)
            out.append(f"- {k}: {v}")
    return "\n".join(out)


def summarize(paths):
    results, context = load(paths)
    sections = ["Machine and libraries:\n\n" + context_lines(context)]
    titles = {
        "BM_MHA": "mha, default kernel (Kernel::automatic: tiled)",
        "BM_MHA_Reference": "mha, Kernel::reference (unfused, materialises [L, S] per head)",
        "BM_Torch": "LibTorch torch::nn::MultiheadAttention",
    }
    for family in ATTENTION_FAMILIES:
        table = attention_table(results, family)
        if table:
            sections.append(f"### {family}: {titles[family]}\n\n{table}")
    table = roofline_table(results)
    if table:
        sections.append(f"### {ROOFLINE}: Eigen GEMM of the in-projection shape\n\n{table}")
    return "\n\n".join(sections) + "\n"


def update_readme(path, text):
    with open(path) as f:
        readme = f.read()
    begin, end = readme.find(README_BEGIN), readme.find(README_END)
    if begin < 0 or end < begin:
        sys.exit(f"{path}: no {README_BEGIN} ... {README_END} block to fill")
    readme = readme[: begin + len(README_BEGIN)] + "\n" + text + readme[end:]
    with open(path, "w") as f:
        f.write(readme)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", nargs="+", help="Google Benchmark JSON output files")
    parser.add_argument("--update-readme", metavar="README", help="replace the results block of this file")
    args = parser.parse_args()
    text = summarize(args.json)
    print(text, end="")
    if args.update_readme:
        update_readme(args.update_readme, text)


if __name__ == "__main__":
    main()
