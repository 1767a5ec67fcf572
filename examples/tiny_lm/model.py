"""The tiny decoder-only language model of examples/tiny_lm, shared by train.py, export.py and
generate.py, and the plain-Python safetensors reader/writer they use.

The architecture is Hugging Face's Llama (modeling_llama.py) at a small size, byte-level:

    x = embed_tokens[ids]                                       # [B, T, E]
    for each layer i:
        x = x + o_proj(attention(input_layernorm(x)))           # GQA, RoPE, causal (+ window)
        x = x + down_proj(silu(gate_proj(n)) * up_proj(n))      # n = post_attention_layernorm(x)
    logits = norm(x) @ embed_tokens^T                           # tied LM head, [B, T, V]

Conventions, which the C++ side (examples/tiny_lm) must follow exactly:
- Linear weights are `[out, in]` and compute `x W^T`; no biases anywhere.
- RMSNorm (HF LlamaRMSNorm): `y = w * (x * rsqrt(mean(x^2) + eps))`, computed in float32.
- RoPE, rotate-half layout (HF Llama / GPT-NeoX): `inv_freq[i] = theta^(-2i/d)` for i < d/2,
  angle `[p, i] = p * inv_freq[i]`, `cos/sin = cos/sin(cat(angle, angle))` over the d dims of a
  head, `rope(x) = x * cos + rotate_half(x) * sin` with `rotate_half(x) = cat(-x[d/2:], x[:d/2])`.
  Positions are absolute (0 for the first token). The tables are computed in float64 and rounded
  to float32, as mha's RotaryEmbedding does. (HF computes the angle in float32: its tables differ
  from these by up to 4e-6 at positions below 288, which moved the logits of the parity prompt by
  6e-7 relative to their largest magnitude.) K is rotated before it is cached.
- GQA: H query heads, Hkv key/value heads, query head h reads kv head h // (H / Hkv) (contiguous
  groups, as HF's repeat_kv). head_dim d = E / H. Scores are scaled by 1/sqrt(d).
- Causal: the query at absolute position P sees keys at positions K <= P. A layer with a sliding
  window W (config.sliding_window[i] > 0) also needs P - W < K (W keys including itself, as
  Mistral and mha's decoder attention define it).
- Byte-level tokens: a token is one byte of the UTF-8 text, vocab 256.
"""

import json
import math
import os
import struct
from dataclasses import asdict, dataclass, field
from typing import List

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # the scripts install nothing themselves
    raise SystemExit(
        "tiny_lm needs PyTorch and NumPy (Debian: apt-get install python3-torch python3-numpy; "
        "run the scripts with /usr/bin/python3): %s" % e)

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.path.join(HERE, "tiny_lm.safetensors")


@dataclass
class Config:
    """Model hyper-parameters; stored as JSON in the weights file's `__metadata__["config"]`."""
    vocab_size: int = 256                  # bytes
    hidden_size: int = 192                 # E
    num_hidden_layers: int = 4
    num_attention_heads: int = 8           # H
    num_key_value_heads: int = 2           # Hkv
    head_dim: int = 24                     # d = E / H
    intermediate_size: int = 512           # SwiGLU hidden width
    max_position_embeddings: int = 256     # training context
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    # Per layer: 0 = full causal attention, W > 0 = causal sliding window of W keys.
    sliding_window: List[int] = field(default_factory=lambda: [0, 0, 0, 0])
    tie_word_embeddings: bool = True

    def validate(self):
        assert self.num_attention_heads % self.num_key_value_heads == 0
        assert self.head_dim % 2 == 0
        assert len(self.sliding_window) == self.num_hidden_layers
        return self

    def to_json(self):
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(s):
        return Config(**json.loads(s)).validate()


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(head_dim, theta, positions):
    """cos, sin of shape [T, head_dim] (float32) for the absolute positions [T] (int64)."""
    i = torch.arange(0, head_dim, 2, dtype=torch.float64)
    inv_freq = 1.0 / (theta ** (i / head_dim))                       # [d/2]
    angle = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # [T, d/2]
    emb = torch.cat([angle, angle], dim=-1)                           # [T, d]
    return emb.cos().float(), emb.sin().float()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    """x [B, heads, T, d]; cos, sin [T, d]."""
    return x * cos + rotate_half(x) * sin


def attention_mask(q_pos, k_pos, window):
    """Additive mask [T, S]: 0 where the query at q_pos[t] may see the key at k_pos[s], else -inf."""
    diff = q_pos[:, None] - k_pos[None, :]   # P - K
    allowed = diff >= 0
    if window > 0:
        allowed &= diff < window
    mask = torch.zeros(allowed.shape, dtype=torch.float32)
    return mask.masked_fill(~allowed, float("-inf"))


class Attention(nn.Module):
    def __init__(self, cfg: Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.H, self.Hkv, self.d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.window = cfg.sliding_window[layer_idx]
        E = cfg.hidden_size
        self.q_proj = nn.Linear(E, self.H * self.d, bias=False)      # [H d, E]
        self.k_proj = nn.Linear(E, self.Hkv * self.d, bias=False)    # [Hkv d, E]
        self.v_proj = nn.Linear(E, self.Hkv * self.d, bias=False)    # [Hkv d, E]
        self.o_proj = nn.Linear(self.H * self.d, E, bias=False)      # [E, H d]

    def forward(self, x, cos, sin, q_pos, cache=None, return_probs=False):
        """x [B, T, E] at absolute positions q_pos [T]. `cache` (optional) is any object with
        `update(layer_idx, k, v) -> (k_all, v_all)` that appends this call's rotated keys and
        values [B, Hkv, T, d] to the ones of earlier calls and returns all of them [B, Hkv, S, d]
        (generate.py's KVCache, as HF's DynamicCache). Keys are at positions 0..S-1."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.d).transpose(1, 2)     # [B, H, T, d]
        k = self.k_proj(x).view(B, T, self.Hkv, self.d).transpose(1, 2)   # [B, Hkv, T, d]
        v = self.v_proj(x).view(B, T, self.Hkv, self.d).transpose(1, 2)   # [B, Hkv, T, d]
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)                     # [B, Hkv, S, d]
        S = k.shape[2]
        g = self.H // self.Hkv
        # GQA without repeating K/V: the g query heads of kv head j (heads j*g .. j*g+g-1) are
        # stacked as g*T rows of one matrix product against that head's keys.
        qg = q.reshape(B, self.Hkv, g * T, self.d)                         # [B, Hkv, g T, d]
        scores = torch.matmul(qg, k.transpose(-1, -2)) / math.sqrt(self.d)  # [B, Hkv, g T, S]
        scores = scores.view(B, self.Hkv, g, T, S) + attention_mask(q_pos, torch.arange(S), self.window)
        probs = F.softmax(scores.float(), dim=-1).to(q.dtype)              # [B, Hkv, g, T, S]
        y = torch.matmul(probs.view(B, self.Hkv, g * T, S), v)              # [B, Hkv, g T, d]
        y = y.view(B, self.H, T, self.d).transpose(1, 2).reshape(B, T, self.H * self.d)
        probs = probs.view(B, self.H, T, S)
        out = self.o_proj(y)
        return (out, probs) if return_probs else (out, None)


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        E, I = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(E, I, bias=False)   # [I, E]
        self.up_proj = nn.Linear(E, I, bias=False)     # [I, E]
        self.down_proj = nn.Linear(I, E, bias=False)   # [E, I]

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Config, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, q_pos, cache=None, return_probs=False):
        a, probs = self.self_attn(self.input_layernorm(x), cos, sin, q_pos, cache, return_probs)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, probs


class Backbone(nn.Module):
    """HF's LlamaModel: holds the names `model.embed_tokens`, `model.layers.{i}`, `model.norm`."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)   # [V, E]
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class TinyLM(nn.Module):
    """HF's LlamaForCausalLM with tied embeddings (lm_head.weight is model.embed_tokens.weight)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg.validate()
        self.model = Backbone(cfg)

    def init_weights(self, generator):
        """GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2 layers)."""
        std = 0.02
        resid_std = std / math.sqrt(2 * self.cfg.num_hidden_layers)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)                   # RMSNorm weights
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                p.data.normal_(0.0, resid_std, generator=generator)
            else:
                p.data.normal_(0.0, std, generator=generator)

    def forward(self, ids, start_pos=0, cache=None, return_probs=False):
        """ids [B, T] int64 at positions start_pos..start_pos+T-1 -> logits [B, T, V] (float32),
        plus the attention probabilities of every layer ([B, H, T, S] each) if return_probs."""
        T = ids.shape[1]
        q_pos = torch.arange(start_pos, start_pos + T)
        cos, sin = rope_tables(self.cfg.head_dim, self.cfg.rope_theta, q_pos)
        x = self.model.embed_tokens(ids)
        all_probs = []
        for layer in self.model.layers:
            x, probs = layer(x, cos, sin, q_pos, cache, return_probs)
            all_probs.append(probs)
        x = self.model.norm(x)
        logits = F.linear(x, self.model.embed_tokens.weight)   # tied LM head
        return (logits, all_probs) if return_probs else logits

    def hf_state_dict(self):
        """The tensors stored in the safetensors file, under HF Llama names (lm_head is tied, so
        not stored)."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}


# --------------------------------------------------------------------------------------------
# safetensors, written and read by hand (no `safetensors` package on Debian 12)
# --------------------------------------------------------------------------------------------
_DTYPES = {"F32": np.dtype("<f4"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8"),
           "U8": np.dtype("u1")}


def _to_numpy(t):
    if isinstance(t, torch.Tensor):
        t = t.detach().contiguous().cpu().numpy()
    a = np.ascontiguousarray(t)
    for name, dt in _DTYPES.items():
        if a.dtype == dt or (a.dtype.kind == dt.kind and a.dtype.itemsize == dt.itemsize):
            return name, a.astype(dt)
    raise TypeError("tiny_lm safetensors: unsupported dtype %s" % a.dtype)


def write_safetensors(path, tensors, metadata):
    """Writes {name: tensor/array} with string metadata. Tensors are laid out by decreasing
    element size, then name (each aligned to its element size; deterministic bytes); the header
    is padded with spaces so that the data starts at a multiple of 8 bytes."""
    arrays = {n: _to_numpy(t) for n, t in tensors.items()}
    order = sorted(arrays, key=lambda n: (-arrays[n][1].dtype.itemsize, n))
    header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    blobs, offset = [], 0
    for n in order:
        dtype, a = arrays[n]
        b = a.tobytes()
        header[n] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((-(8 + len(h))) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    """-> (metadata dict, {name: numpy array}); checks that the tensors tile the buffer."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    buf = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    out, spans = {}, []
    for name, info in header.items():
        dt = _DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        count = int(np.prod(info["shape"], dtype=np.int64))
        if e - b != count * dt.itemsize:
            raise ValueError("%s: %s has %d bytes for shape %s" % (path, name, e - b, info["shape"]))
        out[name] = np.frombuffer(buf[b:e], dtype=dt).reshape(info["shape"]).copy()
        spans.append((b, e))
    pos = 0
    for b, e in sorted(spans):
        if b != pos:
            raise ValueError("%s: gap or overlap at byte %d" % (path, b))
        pos = e
    if pos != len(buf):
        raise ValueError("%s: %d trailing bytes" % (path, len(buf) - pos))
    return meta, out


def save_model(model, path, extra_metadata=None):
    meta = {"format": "pt", "config": model.cfg.to_json(), "model_type": "llama",
            "tokenizer": "bytes (token = one byte of UTF-8 text, vocab 256)"}
    meta.update(extra_metadata or {})
    write_safetensors(path, model.hf_state_dict(), meta)


def load_model(path=WEIGHTS):
    if not os.path.exists(path):
        raise SystemExit("%s not found: train it with examples/tiny_lm/train.py" % path)
    meta, tensors = read_safetensors(path)
    model = TinyLM(Config.from_json(meta["config"]))
    state = {k: torch.from_numpy(v) for k, v in tensors.items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta


# --------------------------------------------------------------------------------------------
# Threads and determinism
# --------------------------------------------------------------------------------------------
def set_threads(n):
    """Sets torch's intra-op threads and, when torch uses OpenBLAS through Debian's generic
    libblas.so.3 (which torch.set_num_threads does not reach), OpenBLAS's threads too."""
    torch.set_num_threads(n)
    try:
        import ctypes
        lib = ctypes.CDLL("libblas.so.3")
        fn = getattr(lib, "openblas_set_num_threads", None)
        if fn is not None:
            fn(ctypes.c_int(n))
    except OSError:
        pass


def encode(text):
    return list(text.encode("utf-8"))


def decode(tokens):
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")
