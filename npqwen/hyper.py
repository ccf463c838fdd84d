"""Hyper-connections: Qwen3.8-Flash-Next's residual, hc_count streams instead of one.

Every other Qwen keeps one residual stream x [b, t, d] and adds each block's output to it,
x = x + block(norm(x)). Qwen3.8-Flash-Next keeps hc streams, S [b, t, hc, d] (stored side by side,
[b, t, hc * d], stream k in columns k*d to (k+1)*d), all starting as copies of the token's
embedding. A block reads one mix of them and writes its output back into each, scaled per stream:

    n    = RMSNorm of each stream, (1 + w) with w [hc * d]           [b, t, hc, d]
    a    = silu(n @ W_down.T / hc)                                   [b, t, r]       (r = hc_lowrank)
    m    = sigmoid(a @ W_up.T)                                       [b, t, hc, d]   a weight per stream and feature
    x    = mean over k of m[k] * n[k]                                [b, t, d]       what the block reads
    inj  = 2 * sigmoid(n @ W_inject.T / hc)                          [b, t, hc]      how much each stream takes
    y    = block(x)                                                  [b, t, d]
    S[k] = S[k] + inj[k] * y                                         (the streams themselves, not n)

Each decoder layer does this twice, around its token mixer and around its MLP; there is no other
norm in the layer. After the last layer, the same read without a write (the final mixer, which
has no W_inject) gives the [b, t, d] that the LM head multiplies: it stands where the final norm
stands in the other Qwens. The streams differ only through inj, and through what the n-gram
embeddings add to them (engram.py).
"""

from dataclasses import dataclass

import numpy as np

from .primitives import linear, sigmoid, silu
from .weights import norm_weight


@dataclass
class HyperConnection:
    """One reader/writer of the streams: weights [out, in] as stored (float32, or bf16 kept as stored)."""
    norm: np.ndarray                                    # [hc * d], 1 + w (one RMSNorm weight per stream and feature)
    w_down: np.ndarray                                  # [r, hc * d]
    w_up: np.ndarray                                    # [hc * d, r]
    w_inject: np.ndarray | None                         # [hc, hc * d]; None for the final mixer


def stream_norm(S, weight, hc, eps):  # [..., hc * d], [hc * d] -> [..., hc * d]
    """RMSNorm of each stream separately (over its d features), the weight spanning all hc * d."""
    shape = S.shape
    x = S.reshape(*shape[:-1], hc, shape[-1] // hc)
    variance = np.einsum("...i,...i->...", x, x)[..., None] / np.float32(x.shape[-1])
    y = (x / np.sqrt(variance + np.float32(eps))).reshape(shape)
    y *= weight
    return y


def read(S, w: HyperConnection, hc, eps):  # [b, t, hc * d] -> x [b, t, d], inj [b, t, hc] (None for the mixer)
    """What a block reads from the streams (the mix), and how much of its output each stream takes."""
    n = stream_norm(S, w.norm, hc, eps)
    a = silu(linear(n, w.w_down) / np.float32(hc))                       # [b, t, r]
    m = sigmoid(linear(a, w.w_up))                                       # [b, t, hc * d]
    d = S.shape[-1] // hc
    x = (m * n).reshape(*S.shape[:-1], hc, d).mean(axis=-2)              # [b, t, d]
    if w.w_inject is None:
        return x, None
    inj = np.float32(2) * sigmoid(linear(n, w.w_inject) / np.float32(hc))  # [b, t, hc]
    return x, inj


def write(S, y, inj):  # [b, t, hc * d], [b, t, d], [b, t, hc] -> [b, t, hc * d]
    """Each stream k takes inj[k] times the block's output."""
    b, t, _ = S.shape
    return S + (inj[..., :, None] * y[..., None, :]).reshape(b, t, -1)


def streams_from_embeddings(x, hc):  # [b, t, d] -> [b, t, hc * d]: every stream starts as the embedding
    return np.tile(x, (1, 1, hc))


def load_hyper_connection(up, cfg, p, inject=True) -> HyperConnection:
    """The tensors under p (model.layers.{i}.attn_hyper_connection. or model.hyper_connection_mixer.)."""
    return HyperConnection(norm=norm_weight(up, cfg, p + "hc_norm.weight"), w_down=up(p + "input_mix_weight_down.weight"),
                           w_up=up(p + "input_mix_weight_up.weight"),
                           w_inject=up(p + "block_inject_weight.weight") if inject else None)
