#!/usr/bin/python3
"""Trains the tiny byte-level decoder of examples/tiny_lm on the English fortune cookies of
Debian's `fortunes` and `fortunes-min` packages (BSD licence), and writes its weights as
safetensors with Hugging Face Llama names, plus the loss curve as CSV.

    /usr/bin/python3 examples/tiny_lm/train.py            # the committed run (see README.md)

Deterministic: the same arguments, thread count and torch build give the same weights (seeded
initialisation and batches, torch.use_deterministic_algorithms, a fixed number of steps and of
threads). Installs nothing: when the fortune files are missing it says which package to install.
"""

import argparse
import math
import os
import random
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import (HERE, WEIGHTS, Config, TinyLM, F, decode, encode, save_model,  # noqa: E402
                   set_threads, torch)

FORTUNE_DIR = "/usr/share/games/fortunes"
# Plain English prose from the two packages. Left out: the offensive files (package
# fortunes-off, not used), files that are mostly ASCII art, code, shell or IRC logs (art,
# ascii-art, debian, linux, linuxcookie, perl, knghtbrd), non-English text (translate-me), legal
# boilerplate (disclaimer), and files whose jokes are about groups of people (ethnic, men-women,
# politics, drugs), to keep the sample text inoffensive.
CORPUS = {
    "fortunes-min": ["fortunes", "literature", "riddles"],
    "fortunes": ["computers", "cookie", "definitions", "education", "food", "goedel",
                 "humorists", "kids", "law", "love", "magic", "medicine", "miscellaneous",
                 "news", "paradoxum", "people", "pets", "platitudes", "pratchett", "science",
                 "songs-poems", "sports", "startrek", "tao", "wisdom", "work", "zippy"],
}
SEPARATOR = "%\n"   # the fortune file format: each fortune ends with a line holding only '%'


def read_fortunes(directory=FORTUNE_DIR):
    """All fortunes of the CORPUS files, in file order, each ending with a newline."""
    missing = {pkg: [f for f in files if not os.path.isfile(os.path.join(directory, f))]
               for pkg, files in CORPUS.items()}
    missing = {pkg: files for pkg, files in missing.items() if files}
    if missing:
        raise SystemExit(
            "tiny_lm: fortune files missing in %s: %s.\nInstall them with: apt-get install %s"
            % (directory, "; ".join("%s (package %s)" % (", ".join(f), p) for p, f in missing.items()),
               " ".join(sorted(missing))))
    fortunes = []
    for pkg, files in CORPUS.items():
        for name in files:
            raw = open(os.path.join(directory, name), "rb").read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            for chunk in text.replace("\r\n", "\n").split("\n%\n"):
                lines = [line.rstrip() for line in chunk.strip("\n").split("\n")]
                if lines != ["%"] and any(lines):
                    fortunes.append("\n".join(lines).rstrip("%").rstrip() + "\n")
    return fortunes


def corpus_splits(seed, val_fraction=0.05):
    """(train bytes, validation bytes) as uint8 tensors: the fortunes shuffled with `seed`,
    the last val_fraction of them held out, each followed by the '%' line."""
    fortunes = read_fortunes()
    random.Random(seed).shuffle(fortunes)
    n_val = max(1, int(len(fortunes) * val_fraction))

    def stream(fs):
        return torch.tensor(encode("".join(f + SEPARATOR for f in fs)), dtype=torch.uint8)

    return stream(fortunes[:-n_val]), stream(fortunes[-n_val:]), len(fortunes)


def batch(data, starts, T):
    idx = starts[:, None] + torch.arange(T + 1)[None, :]
    x = data[idx].long()
    return x[:, :-1], x[:, 1:]


@torch.no_grad()
def evaluate(model, val, T, n_windows):
    """Mean cross-entropy (nats/byte) over n_windows evenly spaced windows of the validation
    bytes: the same windows at every evaluation."""
    model.eval()
    starts = torch.linspace(0, len(val) - T - 2, n_windows).long()
    losses = []
    for chunk in starts.split(8):
        x, y = batch(val, chunk, T)
        losses.append(F.cross_entropy(model(x).reshape(-1, model.cfg.vocab_size), y.reshape(-1),
                                      reduction="sum"))
    model.train()
    return float(sum(losses)) / (n_windows * T)


def lr_at(step, steps, peak, warmup, floor):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def sample_greedy(model, prompt, n):
    ids = torch.tensor([encode(prompt)])
    for _ in range(n):
        logits = model(ids[:, -model.cfg.max_position_embeddings:])
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return decode(ids[0].tolist())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=8, help="sequences per step")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--hidden", type=int, default=128, help="E")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8, help="H")
    p.add_argument("--kv-heads", type=int, default=2, help="Hkv")
    p.add_argument("--intermediate", type=int, default=384, help="SwiGLU width")
    p.add_argument("--sliding-window", default="64,0,0,0",
                   help="per layer, comma-separated: 0 = full causal, W = window of W keys")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW)")
    p.add_argument("--min-lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1,
                   help="torch and OpenBLAS threads (fixed, for determinism)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-windows", type=int, default=32)
    p.add_argument("--out", default=WEIGHTS)
    p.add_argument("--log", default=os.path.join(HERE, "train_log.csv"))
    args = p.parse_args()

    set_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)

    train, val, n_fortunes = corpus_splits(args.seed)
    windows = [int(w) for w in args.sliding_window.split(",")]
    cfg = Config(hidden_size=args.hidden, num_hidden_layers=args.layers,
                 num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                 head_dim=args.hidden // args.heads, intermediate_size=args.intermediate,
                 max_position_embeddings=args.context, sliding_window=windows)
    model = TinyLM(cfg)
    model.init_weights(torch.Generator().manual_seed(args.seed))
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    data_gen = torch.Generator().manual_seed(args.seed + 1)

    command = "/usr/bin/python3 examples/tiny_lm/train.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:])
    print("corpus: %d fortunes, %d train bytes, %d validation bytes" % (n_fortunes, len(train), len(val)))
    print("config: %s" % cfg.to_json())
    print("parameters: %d; %d steps of %d x %d tokens; %d thread(s)"
          % (n_params, args.steps, args.batch, args.context, args.threads), flush=True)

    log = open(args.log + ".tmp", "w")
    log.write("# %s\n# torch %s, %d thread(s); loss = cross-entropy in nats per byte; train_loss "
              "is the mean over the steps since the previous row\n" % (command, torch.__version__,
                                                                       args.threads))
    log.write("step,tokens,lr,train_loss,val_loss,elapsed_s,load_1min\n")
    t0 = time.time()
    running, count = 0.0, 0
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            val_loss = evaluate(model, val, args.context, args.eval_windows)
            train_loss = running / count if count else float("nan")
            elapsed = time.time() - t0
            row = "%d,%d,%.6g,%.4f,%.4f,%.1f,%.2f" % (
                step, step * args.batch * args.context, lr_at(max(0, step - 1), args.steps,
                                                              args.lr, args.warmup, args.min_lr),
                train_loss, val_loss, elapsed, os.getloadavg()[0])
            log.write(row + "\n")
            log.flush()
            print(row, flush=True)
            running, count = 0.0, 0
        if step == args.steps:
            break
        lr = lr_at(step, args.steps, args.lr, args.warmup, args.min_lr)
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(train) - args.context - 1, (args.batch,), generator=data_gen)
        x, y = batch(train, starts, args.context)
        loss = F.cross_entropy(model(x).reshape(-1, cfg.vocab_size), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += float(loss)
        count += 1
    wall = time.time() - t0
    log.write("# wall time %.1f s; final validation loss %.4f nats/byte\n" % (wall, val_loss))
    log.close()
    os.replace(args.log + ".tmp", args.log)

    model.eval()
    save_model(model, args.out, {
        "training_command": command,
        "training_steps": str(args.steps),
        "final_val_loss": "%.4f" % val_loss,
        "corpus": "Debian packages fortunes + fortunes-min (BSD licence): " + ",".join(
            f for files in CORPUS.values() for f in files),
    })
    print("wall time %.1f s; wrote %s (%d bytes) and %s"
          % (wall, args.out, os.path.getsize(args.out), args.log))
    for prompt in ["The ", "A wise man "]:
        print("---\n" + sample_greedy(model, prompt, 200))


if __name__ == "__main__":
    main()
