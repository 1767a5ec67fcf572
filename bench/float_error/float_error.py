#!/usr/bin/env python3
"""Float32 error of PyTorch's nn.MultiheadAttention, and where it comes from.

Run with the interpreter that has torch (Debian: /usr/bin/python3):

    /usr/bin/python3 bench/float_error/float_error.py [OUT_DIR]   # default /tmp/mha_float_error

For each case (no masks, need_weights=False, batch_first) it

1. draws a float32 module (PyTorch's initialisation, plus small random biases) and float32
   inputs, writes <case>_f32.safetensors / <case>_f64.safetensors to OUT_DIR in the fixture
   format of tests/fixtures (the f64 file holds exact up-casts of the f32 values, and each file's
   expected_attn_output is torch's output in that dtype), for bench/float_error/float_error.cpp;
2. prints torch float32's error against torch float64 on the same values, and
3. attributes it to the stages of the computation: the whole computation in float64 except one
   stage in float32 (its inputs rounded to float32 too), one stage at a time.

Error metrics (both relative to the float64 output R, over all outputs a):
    max  = max|a - R| / max|R|          (the metric of tests/test_pytorch_parity.cpp)
    mean = mean|a - R| / mean|R|
"""

import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "fixtures"))
from generate import write_safetensors  # noqa: E402  (the fixtures' own writer)

# name, E, H, N, L, S (S = None: self-attention), input scale
CASES = [
    ("l512_e256_h4", 256, 4, 1, 512, None, 1.0),
    ("l128_e512_h8_n2", 512, 8, 2, 128, None, 1.0),
    ("l64_s2048_e256_h4", 256, 4, 1, 64, 2048, 1.0),
    ("l512_e256_h4_x4", 256, 4, 1, 512, None, 4.0),  # larger scores: a peaked softmax
]

STAGES = ("proj", "scores", "softmax", "pv", "out")


def metrics(a, ref):
    a, ref = a.double(), ref.double()
    d = (a - ref).abs()
    return float(d.max() / ref.abs().max()), float(d.mean() / ref.abs().mean())


def manual_forward(m, q_in, k_in, v_in, H, float_stages):
    """nn.MultiheadAttention's forward (no masks) with the stages in `float_stages` in float32
    and the others in float64; every intermediate crosses stage boundaries in float64."""
    def dt(stage):
        return torch.float32 if stage in float_stages else torch.float64

    E = m.embed_dim
    d = E // H
    W = m.in_proj_weight.detach()
    b = m.in_proj_bias.detach()
    t = dt("proj")
    q = F.linear(q_in.to(t), W[:E].to(t), b[:E].to(t)).double()
    k = F.linear(k_in.to(t), W[E:2 * E].to(t), b[E:2 * E].to(t)).double()
    v = F.linear(v_in.to(t), W[2 * E:].to(t), b[2 * E:].to(t)).double()
    N, L, S = q.shape[0], q.shape[1], k.shape[1]
    # [N * H, tokens, d], as torch's F.multi_head_attention_forward arranges the heads
    heads = lambda x, T: x.reshape(N, T, H, d).transpose(1, 2).reshape(N * H, T, d)
    q, k, v = heads(q, L), heads(k, S), heads(v, S)
    t = dt("scores")
    s = torch.bmm(q.to(t) / math.sqrt(d), k.to(t).transpose(1, 2)).double()
    t = dt("softmax")
    p = torch.softmax(s.to(t), dim=-1).double()
    t = dt("pv")
    c = torch.bmm(p.to(t), v.to(t)).double()
    c = c.reshape(N, H, L, d).transpose(1, 2).reshape(N, L, E)
    t = dt("out")
    return F.linear(c.to(t), m.out_proj.weight.detach().to(t), m.out_proj.bias.detach().to(t)).double()


def run_case(name, E, H, N, L, S, scale, out_dir):
    torch.manual_seed(1234)
    m = torch.nn.MultiheadAttention(E, H, batch_first=True)
    with torch.no_grad():  # non-zero biases, so the bias additions are exercised
        m.in_proj_bias.copy_(0.1 * torch.randn(3 * E))
        m.out_proj.bias.copy_(0.1 * torch.randn(E))
    x = torch.randn(N, L, E) * scale
    if S is None:
        inputs = (x, x, x)
    else:
        inputs = (x, torch.randn(N, S, E) * scale, torch.randn(N, S, E) * scale)
    outs = {}
    for suffix, dtype in (("f32", torch.float32), ("f64", torch.float64)):
        md = torch.nn.MultiheadAttention(E, H, batch_first=True).to(dtype)
        md.load_state_dict({k: v.to(dtype) for k, v in m.state_dict().items()})
        ins = [t.to(dtype) for t in inputs]
        # grad enabled + parameters that require grad: torch's regular (Python) path, not the
        # fused inference fast path, as in tests/fixtures/generate.py
        out, _ = md(*ins, need_weights=False)
        out = out.detach()
        outs[suffix] = out
        tensors = {k: v.detach() for k, v in md.state_dict().items()}
        tensors["query"], tensors["key"], tensors["value"] = ins
        tensors["expected_attn_output"] = out
        meta = {"num_heads": str(H), "is_causal": "false", "add_zero_attn": "false",
                "need_weights": "false", "average_attn_weights": "true", "case": name,
                "generator": "bench/float_error/float_error.py, torch " + torch.__version__}
        write_safetensors(os.path.join(out_dir, "%s_%s.safetensors" % (name, suffix)), tensors, meta)
    ref = outs["f64"]
    rows = [("torch float32 (nn.MultiheadAttention)", metrics(outs["f32"], ref))]
    ins32 = inputs
    with torch.no_grad():
        all64 = manual_forward(m, *ins32, H, ())
        all32 = manual_forward(m, *ins32, H, STAGES)
        assert metrics(all64, ref)[0] < 1e-13, "manual forward does not match the module"
        rows.append(("manual forward, every stage float32", metrics(all32, ref)))
        for st in STAGES:
            rows.append(("only %-8s in float32" % st, metrics(manual_forward(m, *ins32, H, (st,)), ref)))
    print("%s: E=%d H=%d N=%d L=%d S=%d input scale %g" % (name, E, H, N, L, S or L, scale))
    for label, (mx, mn) in rows:
        print("  %-40s max %.2e  mean %.2e" % (label, mx, mn))
    sys.stdout.flush()


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/mha_float_error"
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    capability = [line.strip() for line in torch.__config__.show().splitlines() if "CPU capability" in line]
    print("torch", torch.__version__, "|", capability[0] if capability else "CPU capability unknown")
    for c in CASES:
        run_case(*c, out_dir)


if __name__ == "__main__":
    main()
