#!/usr/bin/env python3
"""Turns mha_bench's Google Benchmark JSON into the markdown tables of bench/README.md.

Usage: summarize.py RESULT.json [RESULT.json ...] [--update-readme bench/README.md]
                    [--update-headline README.md] [--memory-check memory_check.txt]

Reads the aggregates of runs made with --benchmark_repetitions=N
--benchmark_report_aggregates_only=true (median and cv); a run without repetitions is read as
its single iteration (cv then shows as "-"). Several files (a suite split with
--benchmark_filter) are merged; a case present twice keeps the last file's numbers. A `runs.txt`
next to the first file (bench/run_benchmarks.sh writes it) adds each run's duration and its
1-minute load average at start and end.

The ceiling: "% sgemm" is a rate over OpenBLAS's cblas_sgemm (BM_GemmOpenBLASF32) on the
in-projection product [B L, E] x [E, 3E] at the same thread count; without OpenBLAS results the
column falls back to Eigen's GEMM (BM_GemmRoofline) and says so in its header. f64 likewise with
BM_GemmOpenBLASF64 / BM_GemmEigenF64. "Best LibTorch" is the lower time of the module (BM_Torch)
and the native fast-path op (BM_TorchNative) on the same arguments.

Per attention family (BM_MHA, BM_MHA_Reference, BM_Torch, BM_TorchNative), one row per
(B, L, E, H, causal, threads) with:
  ms            median wall time of one forward
  GFLOP/s       median, dense FLOPs (8 B L E^2 + 4 B L^2 E) over time, causal included
  cv            coefficient of variation of the time over the repetitions
  x module      BM_Torch time / this time, same args (> 1: faster than the LibTorch module)
  x native      BM_TorchNative time / this time
  x best torch  min(BM_Torch, BM_TorchNative) time / this time
  x ref         BM_MHA_Reference time / this time (BM_MHA only)
  % sgemm       this GFLOP/s / the ceiling's GFLOP/s (above), same threads
  causal/dense  time with causal = 1 / time with causal = 0, same shape and threads (causal rows)
  2T speedup    time at 1 thread / time at 2 threads, same shape and causal (2-thread rows)

Then: the sequence-length sweep (B = 1, E = 512, H = 8, non-causal; the data of
docs/bench_seqlen.svg, bench/plot.py), f64 (BM_MHA_F64 against BM_TorchF64 / BM_TorchNativeF64
and OpenBLAS dgemm), the in-projection GEMMs (OpenBLAS, mha's packed micro-kernel, Eigen), the
attention core alone (BM_AttentionCore against BM_AttentionGemmOpenBLAS), and issue 7's targets
with met / MISSED.

The decoder families (bench_decoder.cpp) get tables of their own: BM_CopyBandwidth (GB/s of a
256 MiB memcpy, read + written), BM_ReadBandwidth (GB/s of a 256 MiB sum, read),
BM_DecodeAttention (GB/s of K and V read, % of the copy and of the read bandwidth at the same
thread count, speed-up of a bf16/f16 cache over f32), BM_DecodeStep next to
BM_TorchDecodeStep (tokens/s, x torch), BM_Prefill (GQA GF/s against MHA GF/s), and a list of the
issue-8 targets with met / missed.

--update-headline fills the <!-- perf:begin --> ... <!-- perf:end --> block of the top-level
README.md with a short table (issue 7's shapes). Plain python3, no third-party modules.
"""

import argparse
import json
import os
import re
import sys

ATTENTION_FAMILIES = ["BM_MHA", "BM_MHA_Reference", "BM_Torch", "BM_TorchNative"]
TORCH = ("BM_Torch", "BM_TorchNative")
TORCH_F64 = ("BM_TorchF64", "BM_TorchNativeF64")
ROOFLINE = "BM_GemmRoofline"
EIGEN_F64 = "BM_GemmEigenF64"
OPENBLAS_F32 = "BM_GemmOpenBLASF32"
OPENBLAS_F64 = "BM_GemmOpenBLASF64"
PACKED_F32 = "BM_GemmPackedF32"
PACKED_F64 = "BM_GemmPackedF64"
CORE = "BM_AttentionCore"
CORE_BLAS = "BM_AttentionGemmOpenBLAS"
SWEEP_E, SWEEP_H = 512, 8
CAUSAL_TARGET_SHAPE = (1, 4096, 512, 8)  # issue 7: causal <= 0.60x non-causal at this shape
README_BEGIN = "<!-- results:begin -->"
README_END = "<!-- results:end -->"
HEADLINE_BEGIN = "<!-- perf:begin -->"
HEADLINE_END = "<!-- perf:end -->"


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


def pct(x):
    return None if x is None else 100 * x


def cv_text(r):
    return fmt(None if r is None or r["cv"] is None else 100 * r["cv"], ".1f", "%")


class Results:
    """Look-ups over the merged results: times, rates and the derived ratios."""

    def __init__(self, results):
        self.r = results
        self.has_openblas = any(k[0] == OPENBLAS_F32 for k in results)
        self.has_openblas_f64 = any(k[0] == OPENBLAS_F64 for k in results)

    def get(self, family, args):
        return self.r.get((family, tuple(args)))

    def ms(self, family, args):
        e = self.get(family, args)
        return e["ms"] if e else None

    def gflops(self, family, args):
        e = self.get(family, args)
        return e["gflops"] if e else None

    def keys(self, family, n):
        return sorted(k[1] for k in self.r if k[0] == family and len(k[1]) == n)

    def best_torch(self, args, f64=False):
        """(ms, which) of the faster LibTorch path, or (None, None)."""
        times = [(self.ms(f, args), f) for f in (TORCH_F64 if f64 else TORCH)]
        times = [t for t in times if t[0] is not None]
        return min(times) if times else (None, None)

    def ceiling_family(self, f64=False):
        if f64:
            return OPENBLAS_F64 if self.has_openblas_f64 else EIGEN_F64
        return OPENBLAS_F32 if self.has_openblas else ROOFLINE

    def ceiling_name(self, f64=False):
        return {OPENBLAS_F32: "sgemm", OPENBLAS_F64: "dgemm", ROOFLINE: "Eigen GEMM",
                EIGEN_F64: "Eigen GEMM"}[self.ceiling_family(f64)]

    def ceiling(self, B, L, E, threads, f64=False):
        """GFLOP/s of the in-projection [B L, E] x [E, 3E] at `threads` on the ceiling GEMM."""
        return self.gflops(self.ceiling_family(f64), (B * L, E, 3 * E, threads))

    def of_ceiling(self, family, args, f64=False):
        B, L, E, H, causal, threads = args
        return ratio(self.gflops(family, args), self.ceiling(B, L, E, threads, f64))


def attention_table(res, family):
    keys = res.keys(family, 6)
    if not keys:
        return None
    ceiling = res.ceiling_name()
    cols = ["B", "L", "E", "H", "causal", "threads", "ms", "GFLOP/s", "cv"]
    if family.startswith("BM_MHA"):
        cols += ["x module", "x native", "x best torch"]
    if family == "BM_MHA":
        cols.append("x ref")
    if family == "BM_TorchNative":
        cols.append("x module")
    cols += [f"% {ceiling}", "causal/dense", "2T speedup"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" for _ in cols) + "|"]
    for args in keys:
        B, L, E, H, causal, threads = args
        r = res.get(family, args)
        row = [str(B), str(L), str(E), str(H), str(causal), str(threads), fmt(r["ms"], ".2f"),
               fmt(r["gflops"], ".1f"), cv_text(r)]
        if family.startswith("BM_MHA"):
            row.append(fmt(ratio(res.ms("BM_Torch", args), r["ms"]), ".2f"))
            row.append(fmt(ratio(res.ms("BM_TorchNative", args), r["ms"]), ".2f"))
            row.append(fmt(ratio(res.best_torch(args)[0], r["ms"]), ".2f"))
        if family == "BM_MHA":
            row.append(fmt(ratio(res.ms("BM_MHA_Reference", args), r["ms"]), ".2f"))
        if family == "BM_TorchNative":
            row.append(fmt(ratio(res.ms("BM_Torch", args), r["ms"]), ".2f"))
        row.append(fmt(pct(res.of_ceiling(family, args)), ".0f", "%"))
        row.append(fmt(ratio(r["ms"], res.ms(family, (B, L, E, H, 0, threads))), ".2f") if causal else "")
        row.append(fmt(ratio(res.ms(family, (B, L, E, H, causal, 1)), r["ms"]), ".2f") if threads > 1 else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def headline_table(res):
    """The README's short table: every shape non-causal, plus the causal rows of the longest
    sequence, at 1 and 2 threads, against the best LibTorch and the sgemm ceiling."""
    keys = [a for a in res.keys("BM_MHA", 6)]
    if not keys:
        return None
    longest = max(a[1] for a in keys)
    rows = [a for a in keys if (a[4] == 0 or (a[1] == longest and a[0] == 1)) and in_shape_list(res, a)]
    ceiling = res.ceiling_name()
    lines = [f"| B, L, E, H | causal | threads | mha ms | GF/s | best LibTorch ms | x best LibTorch | % of OpenBLAS {ceiling} |"
             if ceiling == "sgemm" else
             f"| B, L, E, H | causal | threads | mha ms | GF/s | best LibTorch ms | x best LibTorch | % of {ceiling} |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for a in sorted(rows, key=lambda a: (a[4], a[5], a[1] * a[0], a[2], a[0])):
        B, L, E, H, causal, threads = a
        r = res.get("BM_MHA", a)
        best, which = res.best_torch(a)
        lines.append("| " + " | ".join([
            f"{B}, {L}, {E}, {H}", "yes" if causal else "no", str(threads), fmt(r["ms"], ".2f"), fmt(r["gflops"], ".1f"),
            fmt(best, ".2f") + ("" if which is None else (" (native)" if which == "BM_TorchNative" else " (module)")),
            fmt(ratio(best, r["ms"]), ".2f"),
            "(dense count)" if causal else fmt(pct(res.of_ceiling("BM_MHA", a)), ".0f", "%")]) + " |")
    return "\n".join(lines)


def in_shape_list(res, args):
    """True for the rows of bench_common.hpp's shapes(): those that also run causal (the sweep's
    extra rows are non-causal only)."""
    B, L, E, H, causal, threads = args
    return res.get("BM_MHA", (B, L, E, H, 1, threads)) is not None


def sweep_table(res):
    keys = [a for a in res.keys("BM_MHA", 6) if a[0] == 1 and a[2] == SWEEP_E and a[3] == SWEEP_H and a[4] == 0]
    if not keys:
        return None
    ceiling = res.ceiling_name()
    lines = [f"| L | threads | mha GF/s | module GF/s | native GF/s | {ceiling} GF/s | mha / {ceiling} | x best torch |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a in sorted(keys, key=lambda a: (a[5], a[1])):
        L, threads = a[1], a[5]
        ceil = res.ceiling(1, L, SWEEP_E, threads)
        lines.append("| " + " | ".join([
            str(L), str(threads), fmt(res.gflops("BM_MHA", a), ".1f"), fmt(res.gflops("BM_Torch", a), ".1f"),
            fmt(res.gflops("BM_TorchNative", a), ".1f"), fmt(ceil, ".1f"),
            fmt(pct(ratio(res.gflops("BM_MHA", a), ceil)), ".0f", "%"),
            fmt(ratio(res.best_torch(a)[0], res.ms("BM_MHA", a)), ".2f")]) + " |")
    return "\n".join(lines)


def f64_table(res):
    keys = res.keys("BM_MHA_F64", 6)
    if not keys:
        return None
    ceiling = res.ceiling_name(f64=True)
    lines = [f"| B | L | E | H | threads | ms | GFLOP/s | cv | module ms | native ms | x best torch | % {ceiling} | 2T speedup |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a in keys:
        B, L, E, H, causal, threads = a
        r = res.get("BM_MHA_F64", a)
        lines.append("| " + " | ".join([
            str(B), str(L), str(E), str(H), str(threads), fmt(r["ms"], ".2f"), fmt(r["gflops"], ".1f"), cv_text(r),
            fmt(res.ms("BM_TorchF64", a), ".2f"), fmt(res.ms("BM_TorchNativeF64", a), ".2f"),
            fmt(ratio(res.best_torch(a, f64=True)[0], r["ms"]), ".2f"),
            fmt(pct(res.of_ceiling("BM_MHA_F64", a, f64=True)), ".0f", "%"),
            fmt(ratio(res.ms("BM_MHA_F64", (B, L, E, H, causal, 1)), r["ms"]), ".2f") if threads > 1 else ""]) + " |")
    return "\n".join(lines)


def gemm_table(res, f64=False):
    blas, packed, eigen = (OPENBLAS_F64, PACKED_F64, EIGEN_F64) if f64 else (OPENBLAS_F32, PACKED_F32, ROOFLINE)
    keys = sorted({k for fam in (blas, packed, eigen) for k in res.keys(fam, 4)},
                  key=lambda k: (k[0] * k[1] * k[2], k[1], k[3]))
    if not keys:
        return None
    name = "dgemm" if f64 else "sgemm"
    lines = [f"| M = B L | K = E | N = 3E | threads | OpenBLAS ms | OpenBLAS GF/s | cv | mha packed GF/s | packed / OpenBLAS | Eigen GF/s | OpenBLAS 2T speedup |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in keys:
        M, K, N, threads = k
        b = res.get(blas, k)
        lines.append("| " + " | ".join([
            str(M), str(K), str(N), str(threads), fmt(b and b["ms"], ".3f"), fmt(b and b["gflops"], ".1f"), cv_text(b),
            fmt(res.gflops(packed, k), ".1f"), fmt(pct(ratio(res.gflops(packed, k), b and b["gflops"])), ".0f", "%"),
            fmt(res.gflops(eigen, k), ".1f"),
            fmt(ratio(res.ms(blas, (M, K, N, 1)), b["ms"]), ".2f") if b and threads > 1 else ""]) + " |")
    return f"OpenBLAS cblas_{name} (`NoTrans, Trans`), mha's micro-kernel on a weight packed once " \
           f"(`detail::linear_rows`) and Eigen's product, same operands.\n\n" + "\n".join(lines)


def core_table(res):
    keys = res.keys(CORE, 4)
    if not keys:
        return None
    lines = ["| L = S | d | H | threads | mha ms | mha GF/s | cv | OpenBLAS products ms | OpenBLAS products GF/s | "
             "mha / products | in-proj sgemm GF/s | mha / in-proj sgemm |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in keys:
        L, d, H, threads = k
        r, b = res.get(CORE, k), res.get(CORE_BLAS, k)
        inproj = res.gflops(OPENBLAS_F32, (L, H * d, 3 * H * d, threads))
        lines.append("| " + " | ".join([
            str(L), str(d), str(H), str(threads), fmt(r["ms"], ".1f"), fmt(r["gflops"], ".1f"), cv_text(r),
            fmt(b and b["ms"], ".1f"), fmt(b and b["gflops"], ".1f"), fmt(pct(ratio(r["gflops"], b and b["gflops"])), ".0f", "%"),
            fmt(inproj, ".1f"), fmt(pct(ratio(r["gflops"], inproj)), ".0f", "%")]) + " |")
    return "\n".join(lines)


def worst(items):
    """items: [(value, label)] -> (the lowest, its label), None values skipped."""
    items = [i for i in items if i[0] is not None]
    return min(items) if items else (None, None)


def label(args):
    B, L, E, H, causal, threads = args
    return f"({B}, {L}, {E}, {H}){' causal' if causal else ''}"


def issue7_targets(res, memory_mib=None):
    """[(text, ok or None, figure)] for issue 7's targets; ok None: not measured by this run."""
    out = []
    mha = res.keys("BM_MHA", 6)
    for t in (1, 2):
        rows = [(ratio(res.best_torch(a)[0], res.ms("BM_MHA", a)), label(a)) for a in mha if a[5] == t]
        rows = [x for x in rows if x[0] is not None]
        if rows:
            v, where = worst(rows)
            met = sum(1 for x in rows if x[0] >= 1.5)
            above = [n for n in needs_for_1_5x(res) if n[0][5] == t and n[3] is not None and n[3] > 1]
            out.append((f"full forward >= 1.5x the best LibTorch (module, native op) at every shape, {t} thread{'s' if t > 1 else ''}",
                        v >= 1.5, f"worst {v:.2f}x at {where}; {met} of {len(rows)} rows met; {len(above)} of the "
                                  f"{len(rows) - met} others would need a rate above OpenBLAS sgemm's on the in-projection "
                                  f"(see 'What 1.5x LibTorch needs')"))
    for f64 in (False, True):
        fam = "BM_MHA_F64" if f64 else "BM_MHA"
        name = res.ceiling_name(f64)
        for t in (1, 2):
            rows = [(res.of_ceiling(fam, a, f64), label(a)) for a in res.keys(fam, 6)
                    if a[4] == 0 and a[1] >= 512 and a[5] == t]
            rows = [x for x in rows if x[0] is not None]
            if rows:
                v, where = worst(rows)
                met = sum(1 for x in rows if x[0] >= 0.7)
                out.append((f"{'f64' if f64 else 'f32'} non-causal L >= 512: >= 70% of OpenBLAS {name} GF/s on [N L, E] x [E, 3E], {t}T",
                            v >= 0.7, f"worst {100 * v:.0f}% at {where}; {met} of {len(rows)} rows met"))
    for t in (1, 2):
        rows = [(ratio(res.gflops(PACKED_F32, k), res.gflops(OPENBLAS_F32, k)), f"[{k[0]}, {k[1]}] x [{k[1]}, {k[2]}]")
                for k in res.keys(PACKED_F32, 4) if k[0] >= 512 and k[3] == t]
        rows = [x for x in rows if x[0] is not None]
        if rows:
            v, where = worst(rows)
            met = sum(1 for x in rows if x[0] >= 0.9)
            out.append((f"projection alone (packed weights) >= 90% of OpenBLAS sgemm, N L >= 512, {t}T",
                        v >= 0.9, f"worst {100 * v:.0f}% at {where}; {met} of {len(rows)} products met"))
    for k in res.keys(CORE, 4):
        L, d, H, t = k
        core, prod = res.gflops(CORE, k), res.gflops(CORE_BLAS, k)
        inproj = res.gflops(OPENBLAS_F32, (L, H * d, 3 * H * d, t))
        x = ratio(core, prod)
        if x is not None:
            out.append((f"attention alone (L = S = {L}, d = {d}, H = {H}) >= 65% of OpenBLAS sgemm on the same products, {t}T",
                        x >= 0.65, f"{100 * x:.0f}%: {core:.1f} / {prod:.1f} GF/s"))
        y = ratio(core, inproj)
        if y is not None:
            out.append((f"attention alone (same case) >= 65% of OpenBLAS sgemm on the in-projection [{L}, {H * d}] x [{H * d}, {3 * H * d}], {t}T",
                        y >= 0.65, f"{100 * y:.0f}%: {core:.1f} / {inproj:.1f} GF/s"))
    out.append(("determinism: output bitwise identical for 1 and 2 threads and for a sequence alone or in a batch",
                None, "a test property (tests/test_multi_head_attention.cpp [mha][threads], "
                      "tests/test_grouped_query_attention.cpp [determinism]), not a benchmark figure"))
    for t in (1, 2):
        s = CAUSAL_TARGET_SHAPE
        x = ratio(res.ms("BM_MHA", s + (1, t)), res.ms("BM_MHA", s + (0, t)))
        if x is not None:
            out.append((f"causal time at {label(s + (0, t))} <= 0.60x non-causal, {t}T", x <= 0.6, f"{x:.2f}x"))
    for causal in (0, 1):
        for long_seq in (False, True):
            rows = [(ratio(res.ms("BM_MHA", a[:5] + (1,)), res.ms("BM_MHA", a)), label(a)) for a in mha
                    if a[5] == 2 and a[4] == causal and ((a[1] >= 512) if long_seq else (a[1] == 128))]
            rows = [x for x in rows if x[0] is not None]
            if rows:
                goal = 1.8 if long_seq else 1.7
                v, where = worst(rows)
                met = sum(1 for x in rows if x[0] >= goal)
                out.append((f"2 threads >= {goal}x one thread at {'L >= 512' if long_seq else 'L = 128'}"
                            f"{', causal' if causal else ', non-causal'}", v >= goal,
                            f"worst {v:.2f}x at {where}; {met} of {len(rows)} shapes met"))
    out.append(("zero allocation in steady state", None,
                "a test property (tests/alloc/test_zero_allocation.cpp counts every malloc), not a benchmark figure"))
    if memory_mib is not None:
        out.append(("one forward at L = S = 16384, E = 512, H = 8 grows the peak RSS by < 64 MiB", memory_mib < 64,
                    f"{memory_mib:.1f} MiB (mha_memory_check)"))
    return out


def needs_for_1_5x(res):
    """[(args, needed GF/s, ceiling GF/s, needed / ceiling)] for every BM_MHA row below 1.5x the
    best LibTorch: the whole forward's dense-count rate that 1.5x would take, against the ceiling
    GEMM's rate on the in-projection of the same shape and threads (a pure GEMM, no softmax)."""
    out = []
    for a in res.keys("BM_MHA", 6):
        best, which = res.best_torch(a)
        x = ratio(best, res.ms("BM_MHA", a))
        if x is None or x >= 1.5:
            continue
        needed = 1.5 * res.gflops(which, a)
        ceiling = res.ceiling(a[0], a[1], a[2], a[5])
        out.append((a, needed, ceiling, ratio(needed, ceiling)))
    return out


def needs_table(res):
    rows = needs_for_1_5x(res)
    if not rows:
        return None
    name = res.ceiling_name()
    lines = [f"| B, L, E, H | causal | threads | x best LibTorch | mha GF/s | 1.5x needs GF/s | {name} GF/s | needed / {name} |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for a, needed, ceiling, frac in rows:
        B, L, E, H, causal, threads = a
        lines.append("| " + " | ".join([
            f"{B}, {L}, {E}, {H}", "yes" if causal else "no", str(threads),
            fmt(ratio(res.best_torch(a)[0], res.ms("BM_MHA", a)), ".2f"), fmt(res.gflops("BM_MHA", a), ".1f"),
            fmt(needed, ".1f"), fmt(ceiling, ".1f"), fmt(pct(frac), ".0f", "%")]) + " |")
    return "\n".join(lines)


def targets_text(targets, title):
    def status(ok):
        return "not measured here" if ok is None else ("met" if ok else "MISSED")
    return f"### {title}\n\n" + "\n".join(f"- {status(ok)}: {what} ({value})" for what, ok, value in targets)


STORAGE = {0: "f32", 1: "bf16", 2: "f16"}


def counter(entry, name):
    return None if entry is None else entry.get("raw", {}).get(name)


def decoder_tables(results):
    """The tables of bench_decoder.cpp's families and the issue-8 target lines, or []."""
    def get(family, *args):
        return results.get((family, tuple(args)))

    def keys(family, n):
        return sorted(k[1] for k in results if k[0] == family and len(k[1]) == n)

    sections, targets = [], []

    def bandwidth(family, title):
        """{threads: GB/s} of a BM_*Bandwidth family, and its table appended to sections."""
        gbps, rows = {}, []
        for (threads,) in keys(family, 1):
            r = get(family, threads)
            gbps[threads] = counter(r, "GBps")
            rows.append(f"| {threads} | {fmt(r['ms'], '.1f')} | {fmt(gbps[threads], '.1f')} | {cv_text(r)} |")
        if rows:
            sections.append(f"### {family}: {title}\n\n"
                            "| threads | ms | GB/s | cv |\n|---:|---:|---:|---:|\n" + "\n".join(rows))
        return gbps

    copy = bandwidth("BM_CopyBandwidth", "memcpy of 256 MiB, (bytes read + written) / time")
    read = bandwidth("BM_ReadBandwidth", "sum of 256 MiB of floats, bytes read / time")

    rows = []
    for S, storage, threads in keys("BM_DecodeAttention", 3):
        r = get("BM_DecodeAttention", S, storage, threads)
        gbps = counter(r, "GBps")
        of_copy = ratio(gbps, copy.get(threads))
        f32 = get("BM_DecodeAttention", S, 0, threads)
        one = get("BM_DecodeAttention", S, storage, 1)
        rows.append("| " + " | ".join([
            str(S), STORAGE.get(storage, str(storage)), str(threads), fmt(1000 * r["ms"], ".0f"), fmt(gbps, ".1f"),
            fmt(pct(of_copy), ".0f", "%"),
            fmt(pct(counter(r, "of_copy")), ".0f", "%"),
            fmt(pct(ratio(gbps, read.get(threads))), ".0f", "%"),
            fmt(ratio(f32["ms"] if f32 else None, r["ms"]), ".2f") if storage else "",
            fmt(ratio(one["ms"] if one else None, r["ms"]), ".2f") if threads > 1 else "", cv_text(r)]) + " |")
        if S == 4096:
            targets.append((f"decode attention S=4096 {STORAGE.get(storage)} {threads}T reads K+V at >= 70% of copy",
                            of_copy is not None and of_copy >= 0.7, fmt(pct(of_copy), ".0f", "%")))
            if storage == 1:
                x = ratio(f32["ms"] if f32 else None, r["ms"])
                targets.append((f"bf16 cache about 2x faster than f32 (S=4096, {threads}T)", x is not None and x >= 1.8,
                                fmt(x, ".2f", "x")))
    if rows:
        sections.append(
            "### BM_DecodeAttention: one token against S cached keys, H = 32, Hkv = 8, d = 128 (attention core only)\n\n"
            "GB/s counts the K and V bytes read once; % copy is that over BM_CopyBandwidth at the same thread count "
            "(table above), in-run % the same against the copy bandwidth the process measured before the case, "
            "% read that over BM_ReadBandwidth (a pure read stream) at the same thread count.\n\n"
            "| S | cache | threads | us | GB/s K+V | % copy | in-run % | % read | x f32 | 2T speedup | cv |\n"
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows))

    rows = []
    for S, storage, threads in keys("BM_DecodeStep", 3):
        r = get("BM_DecodeStep", S, storage, threads)
        torch = get("BM_TorchDecodeStep", S, 0, threads)
        x = ratio(torch["ms"] if torch else None, r["ms"])
        one = get("BM_DecodeStep", S, storage, 1)
        rows.append("| " + " | ".join([
            str(S), STORAGE.get(storage, str(storage)), str(threads), fmt(r["ms"], ".2f"), fmt(counter(r, "tokps"), ".1f"),
            fmt(counter(r, "GBps"), ".1f"), fmt(x, ".2f"),
            fmt(ratio(one["ms"] if one else None, r["ms"]), ".2f") if threads > 1 else "", cv_text(r)]) + " |")
        if storage == 0 and torch:
            targets.append((f"decode step S={S} f32 {threads}T >= 1.5x LibTorch eager", x is not None and x >= 1.5,
                            fmt(x, ".2f", "x")))
    for S, storage, threads in keys("BM_TorchDecodeStep", 3):
        r = get("BM_TorchDecodeStep", S, storage, threads)
        rows.append("| " + " | ".join([
            str(S), "torch f32", str(threads), fmt(r["ms"], ".2f"), fmt(counter(r, "tokps"), ".1f"),
            fmt(counter(r, "GBps"), ".1f"), "", "", cv_text(r)]) + " |")
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
    keys = ["date", "host_name", "cpu_model", "num_cpus", "mhz_per_cpu", "load_avg", "runs", "compiler",
            "eigen_version", "eigen_simd", "mha_openmp", "blas", "torch_version", "torch_blas", "torch_blas_threads"]
    out = []
    for k in keys:
        if k in context:
            v = context[k]
            if isinstance(v, list):
                v = ", ".join(format(x, ".2f") if isinstance(x, float) else str(x) for x in v)
            out.append(f"- {k}: {v}")
    return "\n".join(out)


def read_runs(paths):
    """run_benchmarks.sh's runs.txt next to the first JSON: 'name seconds load_start load_end [foreign]'."""
    path = os.path.join(os.path.dirname(os.path.abspath(paths[0])), "runs.txt")
    if not os.path.exists(path):
        return None
    parts = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 4:
                name, seconds, start, end = fields[:4]
                foreign = f", other processes {fields[4]} cores" if len(fields) > 4 else ""
                parts.append(f"{name} {seconds} s, load {start} -> {end}{foreign}")
    return ("; ".join(parts) + " (duration; 1-minute load average at start and end, mha_bench's own threads "
            "included; CPU time of all other processes over the run's wall time)") if parts else None


def read_memory(path):
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        m = re.search(r"peak_rss_growth_mib=([0-9.]+)", f.read())
    return float(m.group(1)) if m else None


def summarize(paths, memory_check=None):
    results, context = load(paths)
    runs = read_runs(paths)
    if runs:
        context["runs"] = runs
    res = Results(results)
    sections = ["Machine and libraries:\n\n" + context_lines(context)]
    ceiling = res.ceiling_name()
    ceiling_note = ("OpenBLAS cblas_sgemm" if ceiling == "sgemm" else
                    "Eigen's GEMM (no OpenBLAS results in these files)")
    titles = {
        "BM_MHA": "mha, default kernel (Kernel::automatic: tiled)",
        "BM_MHA_Reference": "mha, Kernel::reference (unfused, materialises [L, S] per head)",
        "BM_Torch": "LibTorch torch::nn::MultiheadAttention (module)",
        "BM_TorchNative": "LibTorch at::_native_multi_head_attention (the fused op of Python's eval fast path)",
    }
    for family in ATTENTION_FAMILIES:
        table = attention_table(res, family)
        if table:
            sections.append(f"### {family}: {titles[family]}\n\n% {ceiling}: over {ceiling_note} on the "
                            f"in-projection [B L, E] x [E, 3E], same threads.\n\n{table}")
    table = sweep_table(res)
    if table:
        sections.append(f"### Sequence-length sweep: B = 1, E = {SWEEP_E}, H = {SWEEP_H}, non-causal "
                        f"(docs/bench_seqlen.svg)\n\n{table}")
    table = f64_table(res)
    if table:
        sections.append("### BM_MHA_F64: mha in double, non-causal, against LibTorch in double\n\n"
                        "module / native: BM_TorchF64 / BM_TorchNativeF64 (the module and the native op in "
                        f"kDouble); % {res.ceiling_name(True)}: over OpenBLAS cblas_dgemm on [B L, E] x [E, 3E], "
                        f"same threads.\n\n{table}")
    for f64 in (False, True):
        table = gemm_table(res, f64)
        if table:
            sections.append(f"### In-projection GEMM, {'f64' if f64 else 'f32'}: [M, K] x [K, N]\n\n{table}")
    table = core_table(res)
    if table:
        sections.append("### BM_AttentionCore: the attention alone, non-causal, against OpenBLAS on the same products\n\n"
                        "FLOPs 4 L S d H for both. OpenBLAS products: per head cblas_sgemm of Q_h K_h^T and of "
                        "that [L, S] times V_h (no softmax); in-proj sgemm: OpenBLAS on [L, H d] x [H d, 3 H d], "
                        f"same threads.\n\n{table}")
    table = needs_table(res)
    if table:
        sections.append("### What 1.5x LibTorch needs\n\n"
                        "Every BM_MHA row below 1.5x the best LibTorch: the forward's rate (dense count) that 1.5x "
                        f"would take, against OpenBLAS {res.ceiling_name()}'s rate on the in-projection [B L, E] x "
                        "[E, 3E] alone at the same threads. That product is a pure GEMM, and the forward also "
                        "runs the softmax, so a row needing 90% or more of it is out of reach on this machine.\n\n"
                        f"{table}")
    targets = issue7_targets(res, read_memory(memory_check))
    if any(ok is not None for _, ok, _ in targets):
        sections.append(targets_text(targets, "Issue 7 performance targets"))
    sections += decoder_tables(results)
    return "\n\n".join(sections) + "\n", res


def replace_block(path, begin_marker, end_marker, text):
    with open(path) as f:
        readme = f.read()
    begin, end = readme.find(begin_marker), readme.find(end_marker)
    if begin < 0 or end < begin:
        sys.exit(f"{path}: no {begin_marker} ... {end_marker} block to fill")
    readme = readme[: begin + len(begin_marker)] + "\n" + text + readme[end:]
    with open(path, "w") as f:
        f.write(readme)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", nargs="+", help="Google Benchmark JSON output files")
    parser.add_argument("--update-readme", metavar="README", help="replace the results block of this file")
    parser.add_argument("--update-headline", metavar="README",
                        help=f"replace the {HEADLINE_BEGIN} block of this file with the short table")
    parser.add_argument("--memory-check", metavar="TXT", help="mha_memory_check's output (peak_rss_growth_mib=...)")
    args = parser.parse_args()
    text, res = summarize(args.json, args.memory_check)
    print(text, end="")
    if args.update_readme:
        replace_block(args.update_readme, README_BEGIN, README_END, text)
    if args.update_headline:
        table = headline_table(res)
        if table:
            replace_block(args.update_headline, HEADLINE_BEGIN, HEADLINE_END, table + "\n")


if __name__ == "__main__":
    main()
