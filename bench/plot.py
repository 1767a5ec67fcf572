#!/usr/bin/env python3
"""Draws the sequence-length sweep of mha_bench as an SVG: GF/s against L (log2 axis) for mha,
LibTorch's module, LibTorch's native op and the OpenBLAS sgemm of the in-projection (the ceiling),
one panel per thread count.

Usage: plot.py RESULT.json [RESULT.json ...] [-o docs/bench_seqlen.svg]

Reads the same JSON files as summarize.py (it imports summarize.py's loader; the sweep is
B = 1, E = 512, H = 8, non-causal: bench_common.hpp's sweep_lengths()). The ceiling is the GF/s of
cblas_sgemm on [L, E] x [E, 3E] at the same thread count (BM_GemmOpenBLASF32), or Eigen's GEMM
(BM_GemmRoofline) when the files hold no OpenBLAS results. Plain python3, no third-party modules:
the SVG is written by hand, so neither CI nor the tests need a plotting library.
"""

import argparse
import math
import os
import sys
from xml.sax.saxutils import escape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import summarize  # noqa: E402  (the loader and the look-ups of the tables)

SERIES = [
    # (label, colour, dash, marker)
    ("mha", "#1f77b4", "", "circle"),
    ("LibTorch module", "#d62728", "", "square"),
    ("LibTorch native op", "#2ca02c", "", "triangle"),
    ("OpenBLAS sgemm, in-projection (ceiling)", "#555555", "6,4", "none"),
]

PANEL_W, PANEL_H = 430, 300  # plot area of one panel, px
LEFT, TOP, GAP, RIGHT, BOTTOM = 70, 96, 80, 30, 124


def sweep_data(res):
    """{threads: {series index: [(L, GF/s)]}} over the sweep rows present in the results."""
    data = {}
    rows = [a for a in res.keys("BM_MHA", 6)
            if a[0] == 1 and a[2] == summarize.SWEEP_E and a[3] == summarize.SWEEP_H and a[4] == 0]
    for a in rows:
        L, threads = a[1], a[5]
        values = [res.gflops("BM_MHA", a), res.gflops("BM_Torch", a), res.gflops("BM_TorchNative", a),
                  res.ceiling(1, L, summarize.SWEEP_E, threads)]
        panel = data.setdefault(threads, {})
        for i, v in enumerate(values):
            if v is not None:
                panel.setdefault(i, []).append((L, v))
    for panel in data.values():
        for points in panel.values():
            points.sort()
    return data


def nice_step(top):
    for step in (10, 20, 25, 50, 100, 200, 250, 500):
        if top / step <= 8:
            return step
    return 1000


def marker(kind, x, y, colour):
    if kind == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>'
    if kind == "square":
        return f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="{colour}"/>'
    if kind == "triangle":
        return f'<path d="M{x:.1f},{y - 5:.1f} L{x + 5:.1f},{y + 4:.1f} L{x - 5:.1f},{y + 4:.1f} Z" fill="{colour}"/>'
    return ""


def draw(data, subtitle, ceiling_label):
    panels = sorted(data)
    lengths = sorted({L for panel in data.values() for pts in panel.values() for L, _ in pts})
    top = max(v for panel in data.values() for pts in panel.values() for _, v in pts)
    step = nice_step(top)
    ymax = step * math.ceil(top * 1.05 / step)
    lo, hi = math.log2(lengths[0]), math.log2(lengths[-1])
    width = LEFT + len(panels) * PANEL_W + (len(panels) - 1) * GAP + RIGHT
    height = TOP + PANEL_H + BOTTOM
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" fill="#222">',
           '  <rect width="100%" height="100%" fill="white"/>',
           f'  <text x="20" y="30" font-size="18" font-weight="bold">Self-attention forward, B = 1, E = '
           f'{summarize.SWEEP_E}, H = {summarize.SWEEP_H}, non-causal, float: GF/s against sequence length</text>',
           f'  <text x="20" y="52" font-size="12" fill="#555">{escape(subtitle)}</text>']
    series = SERIES[:3] + [(ceiling_label,) + SERIES[3][1:]]
    for p, threads in enumerate(panels):
        x0 = LEFT + p * (PANEL_W + GAP)

        def px(L):
            return x0 + (math.log2(L) - lo) / (hi - lo) * PANEL_W if hi > lo else x0 + PANEL_W / 2

        def py(v):
            return TOP + PANEL_H - v / ymax * PANEL_H

        out.append(f'  <text x="{x0 + PANEL_W / 2:.0f}" y="{TOP - 12}" text-anchor="middle" font-size="14" '
                   f'font-weight="bold">{threads} thread{"s" if threads > 1 else ""}</text>')
        for k in range(0, int(ymax / step) + 1):
            v = k * step
            out.append(f'  <line x1="{x0}" y1="{py(v):.1f}" x2="{x0 + PANEL_W}" y2="{py(v):.1f}" stroke="#e5e5e5"/>')
            out.append(f'  <text x="{x0 - 8}" y="{py(v) + 4:.1f}" text-anchor="end" font-size="11">{v:g}</text>')
        for L in lengths:
            out.append(f'  <line x1="{px(L):.1f}" y1="{TOP}" x2="{px(L):.1f}" y2="{TOP + PANEL_H}" stroke="#f0f0f0"/>')
            out.append(f'  <text x="{px(L):.1f}" y="{TOP + PANEL_H + 18}" text-anchor="middle" font-size="11">{L}</text>')
        out.append(f'  <rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>')
        out.append(f'  <text x="{x0 + PANEL_W / 2:.0f}" y="{TOP + PANEL_H + 38}" text-anchor="middle" font-size="12">'
                   'sequence length L = S (log2 scale)</text>')
        out.append(f'  <text transform="translate({x0 - 46},{TOP + PANEL_H / 2:.0f}) rotate(-90)" text-anchor="middle" '
                   'font-size="12">GFLOP/s</text>')
        for i, (name, colour, dash, kind) in enumerate(series):
            pts = data[threads].get(i, [])
            if not pts:
                continue
            path = " ".join(f"{'M' if j == 0 else 'L'}{px(L):.1f},{py(v):.1f}" for j, (L, v) in enumerate(pts))
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'  <path d="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>')
            for L, v in pts:
                m = marker(kind, px(L), py(v), colour)
                if m:
                    out.append("  " + m)
    # Legend, one row under the panels.
    lx, ly = LEFT, TOP + PANEL_H + 68
    for name, colour, dash, kind in series:
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'  <line x1="{lx}" y1="{ly}" x2="{lx + 28}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        m = marker(kind, lx + 14, ly, colour)
        if m:
            out.append("  " + m)
        out.append(f'  <text x="{lx + 36}" y="{ly + 4}" font-size="12">{escape(name)}</text>')
        lx += 36 + 7 * len(name) + 30
    out.append(f'  <text x="20" y="{height - 26}" font-size="11" fill="#555">FLOPs: 8 L E^2 + 4 L^2 E (the four '
               f'projections, Q K^T and P V). Ceiling: {escape(ceiling_label.split(",")[0])} GF/s on [L, E] x [E, 3E] '
               'at the same thread count.</text>')
    out.append(f'  <text x="20" y="{height - 10}" font-size="11" fill="#555">Medians of the repetitions; the load '
               'average of each run is in bench/README.md. Drawn by bench/plot.py from mha_bench JSON.</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def subtitle_of(context):
    parts = []
    if "cpu_model" in context:
        parts.append(f"{context['cpu_model']}, {context.get('num_cpus', '?')} cores")
    if "compiler" in context:
        parts.append(context["compiler"] + " -O3 -march=native")
    if "eigen_version" in context:
        parts.append(f"Eigen {context['eigen_version']}")
    if "torch_version" in context:
        parts.append(f"LibTorch {context['torch_version']}")
    if "blas" in context:
        parts.append(" ".join(context["blas"].split()[:2]))
    if "date" in context:
        parts.append(context["date"][:10])
    return "; ".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", nargs="+", help="Google Benchmark JSON output files")
    parser.add_argument("-o", "--output", default="docs/bench_seqlen.svg", help="SVG to write")
    args = parser.parse_args()
    results, context = summarize.load(args.json)
    res = summarize.Results(results)
    data = sweep_data(res)
    if not data:
        sys.exit("plot.py: no sweep rows (BM_MHA/1/<L>/512/8/0/<threads>) in these files")
    with open(args.output, "w") as f:
        ceiling = ("OpenBLAS sgemm" if res.ceiling_family() == summarize.OPENBLAS_F32 else "Eigen GEMM (no OpenBLAS results)")
        f.write(draw(data, subtitle_of(context), ceiling + ", in-projection (ceiling)"))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
