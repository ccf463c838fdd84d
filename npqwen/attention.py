"""Self-attention, the token mixer of every Qwen2 / Qwen3 layer (and of every fourth layer of the
hybrid generation): the one place where tokens see each other.

    x -> q, k, v projections (biases where the model has them)   [Qwen3.5 / Qwen3-Next: and a gate per head]
      -> [Qwen3 and later: RMSNorm of each q and k head]
      -> RoPE on q and k (Qwen3.5 / Qwen3-Next: on the first quarter of each head's dimensions)
      -> KV cache -> grouped-query attention under a causal mask
      -> [Qwen3.5 / Qwen3-Next: times sigmoid(gate)] -> o_proj (a bias where the model has one)
"""

from dataclasses import dataclass

import numpy as np

from .primitives import NEG, apply_rope, attention, causal_mask, linear, rms_norm, sigmoid
from .threads import WORKERS, parallel
from .weights import norm_weight


@dataclass
class Attention:
    """One layer's attention weights, projections [out, in] as stored (float32, or bf16 kept as
    stored). q, k and v are stacked so that one product computes all three. A missing bias or norm is None."""
    w_qkv: np.ndarray                                   # [(H + 2K) * hd, d]
    b_qkv: np.ndarray | None                            # [(H + 2K) * hd]   Qwen2; Qwen3 iff attention_bias
    wo: np.ndarray                                      # [d, H * hd]
    bo: np.ndarray | None                               # [d]               Qwen3 iff attention_bias
    q_norm: np.ndarray | None                           # [hd]              Qwen3
    k_norm: np.ndarray | None                           # [hd]              Qwen3

    def __call__(self, x, cfg, ctx: "Context", cache, layer):
        return self_attention(x, self, cfg, ctx, cache, layer)


@dataclass
class Context:
    """What every layer of one forward call shares: RoPE's cos and sin at each position, and padding."""
    cos: np.ndarray                                     # [b, t, hd]
    sin: np.ndarray                                     # [b, t, hd]
    padding: np.ndarray | None                          # [b, past + t] 1 = token, 0 = left padding; None: no padding


# Queries are processed in blocks sized so that a block's attention scores, [b, H, block, s],
# take about this many bytes: small enough to stay in the CPU's cache while they are masked,
# exponentiated and normalised, and never [H, seq, seq] for a long prompt.
SCORES_BYTES = 4 << 20
NO_BIAS = np.zeros((1, 1, 1, 0), np.float32)   # every key given is visible


def query_block(b, H, s):
    return max(16, SCORES_BYTES // (4 * b * H * s))


def self_attention(x, w: Attention, cfg, ctx: Context, cache=None, layer=0):  # [b, t, d] -> [b, t, d]
    b, t, _ = x.shape
    H, K, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    qkv = linear(x, w.w_qkv, w.b_qkv)                                    # [b, t, (H + 2K) * hd]
    q, k, v = np.split(qkv, [H * hd, (H + K) * hd], axis=-1)
    out = attend(q.reshape(b, t, H, hd), k.reshape(b, t, K, hd), v.reshape(b, t, K, hd), w, cfg, ctx, cache, layer)
    return linear(out, w.wo, w.bo)


class GatedAttention(Attention):
    """Qwen3.5 / Qwen3-Next: q_proj yields, for each head, its query and a gate beside it
    ([query | gate], head after head); the attention output is scaled by sigmoid(gate) before
    o_proj, so each head can switch itself off for a token."""

    def __call__(self, x, cfg, ctx: Context, cache, layer):
        return gated_self_attention(x, self, cfg, ctx, cache, layer)


def gated_self_attention(x, w: Attention, cfg, ctx: Context, cache=None, layer=0, keep=None):  # [b, t, d] -> [b, t, d]
    """keep: for sparse attention (qsa.py), which keys each query may read (see attend)."""
    b, t, _ = x.shape
    H, K, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    qkv = linear(x, w.w_qkv, w.b_qkv)                                    # [b, t, (2H + 2K) * hd]
    q_gate, k, v = np.split(qkv, [2 * H * hd, (2 * H + K) * hd], axis=-1)
    q_gate = q_gate.reshape(b, t, H, 2 * hd)
    q, gate = q_gate[..., :hd], q_gate[..., hd:]                          # [b, t, H, hd] x2
    out = attend(q, k.reshape(b, t, K, hd), v.reshape(b, t, K, hd), w, cfg, ctx, cache, layer, keep)
    out *= sigmoid(gate.reshape(b, t, H * hd))
    return linear(out, w.wo, w.bo)


def attend(q, k, v, w: Attention, cfg, ctx: Context, cache, layer, keep=None):  # [b, t, heads, hd] x3 -> [b, t, H * hd]
    """The attention both forms share: q/k norm, RoPE, the KV cache, grouped-query attention.
    keep(q0, q1, s) -> bool [b, 1, q1 - q0, s]: a further mask, the keys queries q0..q1 may read."""
    b, t, H, hd = q.shape
    if w.q_norm is not None:  # Qwen3: each head's q and k scaled to unit RMS, before RoPE (v untouched)
        q, k = rms_norm(q, w.q_norm, cfg.rms_norm_eps), rms_norm(k, w.k_norm, cfg.rms_norm_eps)
    q, k, v = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [b, heads, t, hd]
    q, k = apply_rope(q, ctx.cos, ctx.sin), apply_rope(k, ctx.cos, ctx.sin)
    if cache is not None:                                                # all keys so far
        k, v = cache.update(layer, k, v)                                 # [b, K, past + t, hd]
    past = k.shape[2] - t
    window = cfg.layer_window(layer)
    out = np.empty((b, t, H, hd), np.float32)
    block = query_block(b, H, past + t)
    starts = range(0, t, block)

    def blocks(share):  # one core's query blocks
        for q0 in share:
            q1 = min(t, q0 + block)
            s = past + q1  # causal: this block never looks past its last query
            if ctx.padding is None and window is None and keep is None:  # only the block's own keys need a mask
                bias = causal_mask(q1 - q0, q1 - q0)
            else:
                bias = causal_mask(q1 - q0, s, ctx.padding, window, q_start=past + q0)
                if keep is not None:
                    bias = np.where(keep(q0, q1, s), bias, NEG)
                    if q1 - q0 == 1:   # one query (decode): read only the keys it keeps, not all of them
                        for r in range(b):
                            cols = np.flatnonzero(bias[min(r, len(bias) - 1), 0, 0] == 0)
                            out[r:r + 1, q0:q1] = attention(q[r:r + 1, :, q0:q1], k[r:r + 1, :, cols],
                                                            v[r:r + 1, :, cols], NO_BIAS).transpose(0, 2, 1, 3)
                        continue
            out[:, q0:q1] = attention(q[:, :, q0:q1], k[:, :, :s], v[:, :, :s], bias).transpose(0, 2, 1, 3)

    # A prompt: every n-th query block on each core (causal blocks grow along it). Decode, one block,
    # runs on one thread: its thin products stream the cache no faster with a kv head on each core
    # (measured at 8192 keys, 24 layers: 20.5 ms per token on one core, 22.6 on two).
    parallel(blocks, [starts[i::WORKERS] for i in range(min(WORKERS, len(starts)))])
    return out.reshape(b, t, H * hd)


def load_attention(up, cfg, p) -> Attention:
    """The checkpoint tensors under prefix p (model.layers.{i}.self_attn.) that make this block."""
    qkv = [p + "q_proj", p + "k_proj", p + "v_proj"]
    return (GatedAttention if cfg.hybrid else Attention)(
        w_qkv=up(*[n + ".weight" for n in qkv]),
        b_qkv=up(*[n + ".bias" for n in qkv]) if cfg.qkv_bias else None,
        wo=up(p + "o_proj.weight"),
        bo=up(p + "o_proj.bias") if cfg.o_proj_bias else None,
        q_norm=norm_weight(up, cfg, p + "q_norm.weight") if cfg.qk_norm else None,
        k_norm=norm_weight(up, cfg, p + "k_norm.weight") if cfg.qk_norm else None,
    )
