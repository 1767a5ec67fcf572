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

The decoder families (bench_decoder.cpp) get tables of their own: BM_CopyBandwidth (GB/s of a
256 MiB memcpy, read + written), BM_DecodeAttention (GB/s of K and V read, % of the copy bandwidth
at the same thread count, speed-up of a bf16/f16 cache over f32), BM_DecodeStep next to
BM_TorchDecodeStep (tokens/s, x torch), BM_Prefill (GQA GF/s against MHA GF/s), and a list of the
issue-8 targets with met / missed.

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
                    entry["raw"] = b  # its counters (GBps, tokps, ...): medians too
                elif agg == "cv":
                    entry["cv"] = b["real_time"]  # a fraction (aggregate_unit "percentage")
            else:
                singles.setdefault(key, []).append(b)
        for key, runs in singles.items():
            if key in results:
                continue
            runs = sorted(runs, key=lambda r: to_ms(r["real_time"], r["time_unit"]))
            mid = runs[len(runs) // 2]
            results[key] = {"ms": to_ms(mid["real_time"], mid["time_unit"]), "gflops": mid.get("GFLOPS"), "cv": None,
                            "raw": mid}
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


STORAGE = {0: "f32", 1: "bf16", 2: "f16"}


def counter(entry, name):
    return None if entry is None else entry.get("raw", {}).get(name)


def decoder_tables(results):
    """The tables of bench_decoder.cpp's families and the issue-8 target lines, or []."""
    def get(family, *args):
        return results.get((family, tuple(args)))

    def keys(family, n):
        return sorted(k[1] for k in results if k[0] == family and len(k[1]) == n)

    def cv(r):
        return fmt(None if r["cv"] is None else 100 * r["cv"], ".1f", "%")

    sections, targets = [], []
    copy = {}
    rows = []
    for (threads,) in keys("BM_CopyBandwidth", 1):
        r = get("BM_CopyBandwidth", threads)
        copy[threads] = counter(r, "GBps")
        rows.append(f"| {threads} | {fmt(r['ms'], '.1f')} | {fmt(copy[threads], '.1f')} | {cv(r)} |")
    if rows:
        sections.append("### BM_CopyBandwidth: memcpy of 256 MiB, (bytes read + written) / time\n\n"
                        "| threads | ms | GB/s | cv |\n|---:|---:|---:|---:|\n" + "\n".join(rows))

    rows = []
    for S, storage, threads in keys("BM_DecodeAttention", 3):
        r = get("BM_DecodeAttention", S, storage, threads)
        gbps = counter(r, "GBps")
        of_copy = ratio(gbps, copy.get(threads))
        f32 = get("BM_DecodeAttention", S, 0, threads)
        one = get("BM_DecodeAttention", S, storage, 1)
        rows.append("| " + " | ".join([
            str(S), STORAGE.get(storage, str(storage)), str(threads), fmt(1000 * r["ms"], ".0f"), fmt(gbps, ".1f"),
            fmt(None if of_copy is None else 100 * of_copy, ".0f", "%"),
            fmt(None if counter(r, "of_copy") is None else 100 * counter(r, "of_copy"), ".0f", "%"),
            fmt(ratio(f32["ms"] if f32 else None, r["ms"]), ".2f") if storage else "",
            fmt(ratio(one["ms"] if one else None, r["ms"]), ".2f") if threads > 1 else "", cv(r)]) + " |")
        if S == 4096:
            targets.append((f"decode attention S=4096 {STORAGE.get(storage)} {threads}T reads K+V at >= 70% of copy",
                            of_copy is not None and of_copy >= 0.7, fmt(None if of_copy is None else 100 * of_copy, ".0f", "%")))
            if storage == 1:
                x = ratio(f32["ms"] if f32 else None, r["ms"])
                targets.append((f"bf16 cache about 2x faster than f32 (S=4096, {threads}T)", x is not None and x >= 1.8,
                                fmt(x, ".2f", "x")))
    if rows:
        sections.append(
            "### BM_DecodeAttention: one token against S cached keys, H = 32, Hkv = 8, d = 128 (attention core only)\n\n"
            "GB/s counts the K and V bytes read once; % copy is that over BM_CopyBandwidth at the same thread count "
            "(table above), in-run % the same against the copy bandwidth the process measured before the case.\n\n"
            "| S | cache | threads | us | GB/s K+V | % copy | in-run % | x f32 | 2T speedup | cv |\n"
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows))

    rows = []
    for S, storage, threads in keys("BM_DecodeStep", 3):
        r = get("BM_DecodeStep", S, storage, threads)
        torch = get("BM_TorchDecodeStep", S, 0, threads)
        x = ratio(torch["ms"] if torch else None, r["ms"])
        one = get("BM_DecodeStep", S, storage, 1)
        rows.append("| " + " | ".join([
            str(S), STORAGE.get(storage, str(storage)), str(threads), fmt(r["ms"], ".2f"), fmt(counter(r, "tokps"), ".1f"),
            fmt(counter(r, "GBps"), ".1f"), fmt(x, ".2f"),
            fmt(ratio(one["ms"] if one else None, r["ms"]), ".2f") if threads > 1 else "", cv(r)]) + " |")
        if storage == 0 and torch:
            targets.append((f"decode step S={S} f32 {threads}T >= 1.5x LibTorch eager", x is not None and x >= 1.5,
                            fmt(x, ".2f", "x")))
    for S, storage, threads in keys("BM_TorchDecodeStep", 3):
        r = get("BM_TorchDecodeStep", S, storage, threads)
        rows.append("| " + " | ".join([
            str(S), "torch f32", str(threads), fmt(r["ms"], ".2f"), fmt(counter(r, "tokps"), ".1f"),
            fmt(counter(r, "GBps"), ".1f"), "", "", cv(r)]) + " |")
    if rows:
        sections.append(
            "### BM_DecodeStep / BM_TorchDecodeStep: one token through the layer, E = 4096, H = 32, Hkv = 8, d = 128, "
            "S keys attended\n\nGB/s counts the four f32 weights (160 MiB) and the K, V read once; x torch is "
            "BM_TorchDecodeStep's time (f32 cache, same S and threads) over this time.\n\n"
            "| S | cache | threads | ms | tok/s | GB/s | x torch | 2T speedup | cv |\n"
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows))

    rows = []
    for L, threads in sorted({(k[0], k[2]) for k in keys("BM_Prefill", 3)}):
        gqa, mha = get("BM_Prefill", L, 1, threads), get("BM_Prefill", L, 0, threads)
        x = ratio(gqa["gflops"] if gqa else None, mha["gflops"] if mha else None)
        rows.append("| " + " | ".join([
            str(L), str(threads), fmt(gqa and gqa["ms"], ".0f"), fmt(gqa and gqa["gflops"], ".1f"),
            fmt(mha and mha["ms"], ".0f"), fmt(mha and mha["gflops"], ".1f"), fmt(x, ".2f")]) + " |")
        targets.append((f"prefill L={L} {threads}T: GQA GF/s within 10% of MHA", x is not None and x >= 0.9,
                        fmt(x, ".2f", "x")))
    if rows:
        sections.append(
            "### BM_Prefill: causal attention core, L = S, H = 32, d = 64; GQA Hkv = 8 against MHA Hkv = 32\n\n"
            "FLOPs: 4 (L^2 / 2) H d (causal half of Q K^T and P V).\n\n"
            "| L | threads | GQA ms | GQA GF/s | MHA ms | MHA GF/s | GQA / MHA |\n"
            "|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows))
    if targets:
        sections.append("### Issue 8 performance targets\n\n" + "\n".join(
            f"- {'met' if ok else 'MISSED'}: {what} ({value})" for what, ok, value in targets))
    return sections


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
    sections += decoder_tables(results)
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
