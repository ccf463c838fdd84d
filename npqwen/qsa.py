"""QSA, Qwen Sparse Attention: Qwen3.8-Flash-Next's attention, where each query reads only the
blocks of keys a small indexer scores highest.

The attention itself is Qwen3.5's gated attention (attention.py: q/k norm, RoPE on the first
rotary dimensions, a sigmoid gate per head); only its mask changes. A query may attend to:

    the tokens of the top `budget / R` complete blocks, by the indexer's score     (R = compress_ratio)
    + the tail: the 0 to R - 1 newest visible tokens, which fill no complete block yet
(and, while a query sees no more than `budget / R` complete blocks, every visible token). There is
no other local window: the query's own block, once complete, competes like the rest.

Blocks are runs of R *visible* tokens, from a row's first real token (so a left-padded row has the
blocks it has alone). The indexer, per layer (n_i heads of width d_i, one shared key per token):

    q_i   = RoPE(RMSNorm(x @ W_q.T))                   [b, n_i, t, d_i]   (the first rotary dims)
    k_tok = x @ W_k.T                                  [b, t, d_i]        raw: what the cache keeps
    key_j = RoPE(RMSNorm(mean of k_tok over block j)) at the position of block j's first token
    score = sum over heads of relu(q_i . key_j) / sqrt(d_i)

Blocks, once complete, never change: a decode step only scores them against its one query.
"""

from dataclasses import dataclass

import numpy as np

from .attention import Attention, gated_self_attention, load_attention
from .primitives import apply_rope, linear, mrope_cos_sin, rms_norm, rope_cos_sin
from .weights import norm_weight


@dataclass
class QSAAttention(Attention):
    """Gated attention's weights, and the indexer's."""
    w_index: np.ndarray = None                          # [(n_i + 1) * d_i, d]: the query heads, then the key
    index_q_norm: np.ndarray = None                     # [d_i] (1 + w)
    index_k_norm: np.ndarray = None                     # [d_i]

    def __call__(self, x, cfg, ctx, cache, layer):
        return qsa_attention(x, self, cfg, ctx, cache, layer)


def qsa_attention(x, w: QSAAttention, cfg, ctx, cache=None, layer=0):  # [b, t, d] -> [b, t, d]
    b, t, _ = x.shape
    n, di, eps = cfg.indexer_n_heads, cfg.indexer_head_dim, cfg.rms_norm_eps
    qk = linear(x, w.w_index)                                            # [b, t, (n + 1) * d_i]
    q = rms_norm(qk[..., :n * di].reshape(b, t, n, di), w.index_q_norm, eps).transpose(0, 2, 1, 3)
    q = apply_rope(q, ctx.cos, ctx.sin)                                  # [b, n, t, d_i]
    keys = np.ascontiguousarray(qk[..., n * di:])                        # [b, t, d_i]
    if cache is not None:
        keys = cache.update_index(layer, keys)                           # [b, past + t, d_i]
    memo = cache.blocks.setdefault(layer, {"capacity": cache.max_len // cfg.indexer_compress_ratio + 1}) \
        if cache is not None else None
    selection = Selection(q, keys, w, cfg, ctx, memo)
    return gated_self_attention(x, w, cfg, ctx, cache, layer, keep=selection.keep)


class Selection:
    """Which keys each query keeps, computed for a block of queries at a time (attention.attend
    asks for queries q0..q1 against the first s keys)."""

    def __init__(self, q, keys, w, cfg, ctx, memo=None):
        """memo: a dict kept with the cache, holding the keys of the blocks already complete (they
        never change, so a decode step pools only the block its token completes)."""
        b, _, t, di = q.shape
        S = keys.shape[1]
        self.q, self.t, self.S, self.R = q, t, S, cfg.indexer_compress_ratio
        self.top = cfg.indexer_budget // self.R                          # blocks a query may choose
        padding = ctx.padding if ctx.padding is not None else np.ones((b, S), np.int64)
        self.first = np.argmax(padding[:, :S] != 0, axis=1)              # [b] each row's first real token
        R = self.R
        self.n_blocks = (S - self.first) // R                            # complete blocks among all keys, per row
        NB = int(self.n_blocks.max())
        fresh = memo is None or "keys" not in memo or not np.array_equal(memo["first"], self.first) \
            or not np.array_equal(memo["inv_freq"], ctx.inv_freq) or memo["keys"].shape[1] < NB
        if fresh:
            done = np.zeros(b, np.int64)
            stored = np.zeros((b, max(NB, 1 if memo is None else memo.get("capacity", 1)), di), np.float32)
        else:
            done, stored = memo["count"], memo["keys"]
        for r in range(b):   # each row's blocks start at its own first token
            j0, j1, f = int(done[r]), int(self.n_blocks[r]), int(self.first[r])
            if j1 > j0:
                stored[r, j0:j1] = block_keys(keys[r, f + j0 * R:f + j1 * R], j0, w, cfg, ctx, r, f)
        if memo is not None:
            memo.update(first=self.first.copy(), inv_freq=ctx.inv_freq, count=self.n_blocks.copy(), keys=stored)
        self.block_keys = stored[:, :NB]
        self.scale = np.float32(1 / np.sqrt(di))

    def keep(self, q0, q1, s):  # -> bool [b, 1, q1 - q0, s]: the keys queries q0..q1 (of the t new) may read
        b, R = len(self.first), self.R
        at = self.S - self.t + np.arange(q0, q1)                          # the queries' places among the keys
        visible = at[None, :] - self.first[:, None] + 1                   # [b, m] visible tokens (<= 0: padding)
        blocks = np.maximum(visible, 0) // R                              # complete blocks each query sees
        j = np.arange(s)
        key_block = (j[None, :] - self.first[:, None]) // R               # [b, s] block of each key (< 0: padding)
        keep = np.ones((b, q1 - q0, s), bool)                             # (causality and padding: the caller's mask)
        sparse = blocks > self.top                                        # [b, m] queries that must choose
        if sparse.any():
            NB = self.block_keys.shape[1]
            scores = np.einsum("bhmd,bnd->bmnh", self.q[:, :, q0:q1], self.block_keys)
            scores = np.maximum(scores, 0).sum(axis=-1) * self.scale      # [b, m, NB]
            scores[np.arange(NB)[None, None, :] >= blocks[..., None]] = -np.inf   # blocks not yet complete
            chosen_ids = np.argpartition(-scores, self.top - 1, axis=-1)[..., :self.top]
            chosen = np.zeros((b, q1 - q0, NB + 1), bool)                 # (column NB: keys of no block)
            np.put_along_axis(chosen, chosen_ids, True, axis=-1)
            col = np.where((key_block >= 0) & (key_block < NB), key_block, NB)   # [b, s]
            in_chosen = np.take_along_axis(chosen, np.broadcast_to(col[:, None, :], (b, q1 - q0, s)), axis=-1)
            tail = key_block[:, None, :] >= blocks[..., None]             # past the query's last complete block
            keep = np.where(sparse[..., None], in_chosen | tail, True)
        return keep[:, None]


def block_keys(keys, j0, w, cfg, ctx, r=0, first=0):  # [n * R, d_i] raw index keys of blocks j0.. -> [n, d_i]
    """Each block's key: the mean of its raw index keys (float32), RMS-normalised, rotated at the
    position of the block's first token: j R (positions count a row's real tokens from 0), or, after
    images, that token's M-RoPE position (ctx.positions [3, b, keys]: row r, whose first real token is `first`)."""
    R, di = cfg.indexer_compress_ratio, keys.shape[-1]
    pooled = keys.reshape(-1, R, di).mean(axis=1, dtype=np.float32)
    k = rms_norm(pooled, w.index_k_norm, cfg.rms_norm_eps)
    starts = np.arange(j0, j0 + len(k)) * R
    positions = getattr(ctx, "positions", None)
    if positions is not None:
        cos, sin = mrope_cos_sin(ctx.inv_freq, positions[:, r:r + 1, first + starts], cfg.mrope_section, cfg.mrope,
                                 ctx.rope_scale)
    else:
        cos, sin = rope_cos_sin(ctx.inv_freq, starts[None], ctx.rope_scale)
    return apply_rope(k[None, None], cos, sin)[0, 0]


def load_qsa_attention(up, cfg, p) -> QSAAttention:
    base = load_attention(up, cfg, p)
    return QSAAttention(w_qkv=base.w_qkv, b_qkv=base.b_qkv, wo=base.wo, bo=base.bo, q_norm=base.q_norm,
                        k_norm=base.k_norm, w_index=up(p + "indexer.index_qk_proj.weight"),
                        index_q_norm=norm_weight(up, cfg, p + "indexer.q_layernorm.weight"),
                        index_k_norm=norm_weight(up, cfg, p + "indexer.k_layernorm.weight"))
