#!/usr/bin/python3
"""Generates text with the trained tiny_lm in PyTorch, with a KV cache written here the way
Hugging Face's eager Llama does it (per layer, the new keys and values are concatenated to the
cached ones with torch.cat), greedy by default. This is the baseline the C++ generator
(examples/tiny_lm with mha) is compared with.

    /usr/bin/python3 examples/tiny_lm/generate.py "PROMPT" [--tokens N]
        [--temperature T --top-k K --seed S] [--threads 2] [--no-cache]
    /usr/bin/python3 examples/tiny_lm/generate.py --bench      # 256 tokens after a 32-token
                                                               # prompt, at 1 and 2 threads

Speed is reported as generated tokens per second, timed from the start of the prompt's forward
pass (prefill) to the last generated token, batch 1; the decode-only rate (after the prefill)
is printed beside it.
"""

import argparse
import codecs
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import WEIGHTS, encode, load_model, set_threads, torch  # noqa: E402

BENCH_PROMPT = "The best way to predict the futu"   # 32 bytes = 32 tokens
BENCH_TOKENS = 256


class KVCache:
    """As HF's DynamicCache: for each layer, the rotated keys and the values of every position
    so far, [B, Hkv, S, d]; each forward call appends its new ones by concatenation."""

    def __init__(self):
        self.keys, self.values = {}, {}

    def update(self, layer_idx, k, v):
        if layer_idx in self.keys:
            k = torch.cat([self.keys[layer_idx], k], dim=2)
            v = torch.cat([self.values[layer_idx], v], dim=2)
        self.keys[layer_idx], self.values[layer_idx] = k, v
        return k, v

    def length(self):
        return self.keys[0].shape[2] if self.keys else 0


def pick(logits, temperature, top_k, generator):
    """Greedy (argmax, the lowest index on a tie) when temperature is 0; otherwise sampling from
    softmax(logits / temperature) restricted to the top_k largest logits (all when top_k is 0)."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate(model, prompt_ids, n_tokens, use_cache=True, temperature=0.0, top_k=0, seed=0,
             on_token=None):
    """-> (generated token ids [n_tokens], logits list: logits[k] [V] is the output from which
    generated[k] was picked, i.e. the model's prediction after prompt + generated[:k],
    seconds to the end of the prefill, total seconds).

    With use_cache the prompt runs once (prefill) and every later token is one forward call of
    one token at its absolute position against the KVCache; without, every step recomputes the
    whole sequence."""
    generator = torch.Generator().manual_seed(seed)
    cache = KVCache() if use_cache else None
    ids = list(prompt_ids)
    t0 = time.perf_counter()
    logits = model(torch.tensor([ids]), 0, cache)[0, -1]
    t_prefill = time.perf_counter() - t0
    out, all_logits = [], []
    for step in range(n_tokens):
        all_logits.append(logits)
        tok = pick(logits, temperature, top_k, generator)
        ids.append(tok)
        out.append(tok)
        if on_token is not None:
            on_token(tok)
        if step == n_tokens - 1:
            break
        if use_cache:
            logits = model(torch.tensor([[tok]]), len(ids) - 1, cache)[0, -1]
        else:
            logits = model(torch.tensor([ids]))[0, -1]
    return out, all_logits, t_prefill, time.perf_counter() - t0


def bench(model, repeats):
    prompt = encode(BENCH_PROMPT)
    assert len(prompt) == 32
    print("bench: %d tokens after a %d-token prompt, greedy, KV cache, batch 1; "
          "median of %d runs after one warm-up; load average now %s"
          % (BENCH_TOKENS, len(prompt), repeats, " ".join("%.2f" % x for x in os.getloadavg())))
    for threads in (1, 2):
        set_threads(threads)
        generate(model, prompt, BENCH_TOKENS)   # warm-up
        rates, decode_rates = [], []
        for _ in range(repeats):
            _, _, t_prefill, total = generate(model, prompt, BENCH_TOKENS)
            rates.append(BENCH_TOKENS / total)
            decode_rates.append((BENCH_TOKENS - 1) / (total - t_prefill))
        print("threads %d: %.1f tokens/s (decode only %.1f tokens/s; runs: %s)"
              % (threads, statistics.median(rates), statistics.median(decode_rates),
                 ", ".join("%.1f" % r for r in rates)), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("prompt", nargs="?", default="The ")
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = all tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole sequence each step")
    p.add_argument("--weights", default=WEIGHTS)
    p.add_argument("--bench", action="store_true")
    p.add_argument("--repeats", type=int, default=3, help="runs per thread count in --bench")
    args = p.parse_args()

    torch.use_deterministic_algorithms(True)
    model, _ = load_model(args.weights)
    if args.bench:
        bench(model, args.repeats)
        return
    set_threads(args.threads)
    prompt = encode(args.prompt)
    if not prompt:
        raise SystemExit("the prompt must not be empty")
    if len(prompt) + args.tokens > model.cfg.max_position_embeddings:
        print("note: %d positions exceed the training context of %d; quality drops past it"
              % (len(prompt) + args.tokens, model.cfg.max_position_embeddings), file=sys.stderr)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    sys.stdout.write(args.prompt)

    def show(tok):
        sys.stdout.write(utf8.decode(bytes([tok])))
        sys.stdout.flush()

    out, _, t_prefill, total = generate(model, prompt, args.tokens, not args.no_cache,
                                        args.temperature, args.top_k, args.seed, show)
    sys.stdout.write(utf8.decode(b"", final=True) + "\n")
    sys.stdout.flush()
    print("[%d prompt tokens, %d generated in %.3f s: %.1f tokens/s (decode only %.1f tokens/s), "
          "%d thread(s), %s]" % (len(prompt), len(out), total, len(out) / total,
                                 (len(out) - 1) / max(total - t_prefill, 1e-9), args.threads,
                                 "no cache" if args.no_cache else "KV cache"), file=sys.stderr)


if __name__ == "__main__":
    main()
