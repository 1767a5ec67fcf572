#!/usr/bin/python3
"""Writes the parity fixture tests/fixtures/tiny_lm_parity.safetensors: a prompt, PyTorch's
greedy continuation of it by the committed model (examples/tiny_lm/tiny_lm.safetensors) and the
logits of the first generation steps, which the C++ generator must reproduce.

    /usr/bin/python3 examples/tiny_lm/export.py

Before writing, it checks that greedy generation with the KV cache and with full recomputation
give the same tokens (and logits within 1e-5), and it reports the smallest gap between the best
and the second-best logit over the greedy steps (a near-tie would make the token test fragile).
Deterministic: running it again gives a byte-identical file.

File contract (tensors; all metadata values are strings):
  prompt     I32 [P]      the prompt's tokens (bytes of the UTF-8 prompt text, 0..255)
  generated  I32 [N]      the greedy continuation (N = 64)
  logits     F32 [K, V]   logits[k] = the model's output at position P - 1 + k, from which
                          generated[k] was picked (K = 4, V = 256)
  metadata:  prompt_length (P), generated_tokens (N), logit_steps (K), config (the model's JSON
             config, as in the weights file), prompt_text, generated_text, weights (the weights
             file's path in the repository), weights_sha256 (of that file), min_greedy_margin,
             generator.
"""

import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generate import generate  # noqa: E402
from model import (WEIGHTS, decode, encode, load_model, read_safetensors, set_threads,  # noqa: E402
                   torch, write_safetensors)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tiny_lm_parity.safetensors")
PROMPT = "The secret of a happy life is to work hard, to love well, and to know when to "
N_TOKENS = 64             # the prompt (78 tokens) is longer than the window of layer 0 (64)
LOGIT_STEPS = 4


def main():
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=WEIGHTS)
    p.add_argument("--out", default=FIXTURE)
    args = p.parse_args()
    set_threads(1)
    torch.use_deterministic_algorithms(True)
    model, meta = load_model(args.weights)
    prompt = encode(PROMPT)
    cached, cached_logits, _, _ = generate(model, prompt, N_TOKENS, use_cache=True)
    full, full_logits, _, _ = generate(model, prompt, N_TOKENS, use_cache=False)
    if cached != full:
        first = next(i for i, (a, b) in enumerate(zip(cached, full)) if a != b)
        raise SystemExit("greedy tokens differ between the KV cache and full recomputation at "
                         "step %d" % first)
    diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(cached_logits, full_logits))
    if diff > 1e-5:
        raise SystemExit("logits differ between the KV cache and full recomputation: %.3g" % diff)
    margins = [float(torch.topk(l, 2).values[0] - torch.topk(l, 2).values[1]) for l in cached_logits]
    print("KV cache and full recomputation: same %d tokens, logits within %.2g (relative to max)"
          % (N_TOKENS, diff))
    print("smallest top-1 - top-2 logit gap over the %d greedy steps: %.4f (step %d)"
          % (N_TOKENS, min(margins), margins.index(min(margins))))

    weights_sha = hashlib.sha256(open(args.weights, "rb").read()).hexdigest()
    logits = torch.stack(cached_logits[:LOGIT_STEPS])   # [K, V]
    text = decode(cached)
    write_safetensors(args.out, {
        "prompt": torch.tensor(prompt, dtype=torch.int32),
        "generated": torch.tensor(cached, dtype=torch.int32),
        "logits": logits.float(),
    }, {
        "prompt_length": str(len(prompt)),
        "generated_tokens": str(N_TOKENS),
        "logit_steps": str(LOGIT_STEPS),
        "config": meta["config"],
        "prompt_text": PROMPT,
        "generated_text": text,
        "weights": "examples/tiny_lm/tiny_lm.safetensors",
        "weights_sha256": weights_sha,
        "min_greedy_margin": "%.6f" % min(margins),
        "generator": "examples/tiny_lm/export.py, torch " + torch.__version__,
    })
    # Read it back and check the contract.
    m, t = read_safetensors(args.out)
    assert t["prompt"].dtype.str == "<i4" and t["prompt"].tolist() == prompt
    assert t["generated"].dtype.str == "<i4" and t["generated"].tolist() == cached
    assert t["logits"].dtype.str == "<f4" and t["logits"].shape == (LOGIT_STEPS, model.cfg.vocab_size)
    assert (t["logits"] == logits.numpy()).all()
    assert int(m["prompt_length"]) == len(prompt) and m["config"] == meta["config"]
    print("wrote %s (%d bytes)\n%s|%s" % (args.out, os.path.getsize(args.out),
                                         PROMPT, text))


if __name__ == "__main__":
    main()
