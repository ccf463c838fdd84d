"""The KV cache: every layer's rotated keys and values, preallocated for the whole generation.

Decoding one token needs the keys and values of all earlier positions. Recomputing them would
cost a forward over the whole sequence per token; keeping them costs memory instead:
2 (k and v) x layers x kv_heads x head_dim x 4 bytes per position. Grouped-query attention is what
keeps this small: only the K kv heads are stored, not the H query heads.
"""

import numpy as np

from .errors import NpqwenError


class KVCache:
    """Keys and values of the attention layers; and of the hybrid generation's Gated DeltaNet
    layers, their fixed-size state (deltanet.DeltaState, set by the layer itself in `states`)."""

    def __init__(self, config, batch: int, max_len: int):
        attention = [i for i, kind in enumerate(config.layer_types) if kind != "linear_attention"]
        self.slot = {layer: n for n, layer in enumerate(attention)}  # layer index -> row of k and v
        shape = (len(attention), batch, config.num_key_value_heads, max_len, config.head_dim)
        self.k = np.zeros(shape, np.float32)  # [attention layers, b, K, max_len, hd]
        self.v = np.zeros(shape, np.float32)
        self.states = {}                      # DeltaNet layer index -> DeltaState
        # Qwen3.8-Flash-Next: each QSA layer's raw index key of every position (qsa.py), each PLE
        # layer's last ids and convolution inputs (engram.PLEState)
        di = getattr(config, "indexer_head_dim", 0)
        self.index = np.zeros((len(attention), batch, max_len, di), np.float32) if di else None
        self.ple = {}
        # QSA's block keys are rotated at their first token's position, which after an image is not
        # its index: each position's M-RoPE position [3, b, max_len] (vision/multimodal.py)
        self.positions = np.zeros((3, batch, max_len), np.int64) if di else None
        self.blocks = {}   # QSA layer -> the keys of its complete blocks so far (qsa.Selection)
        self.padding = np.ones((batch, max_len), np.int64)  # 1 = real token, 0 = left padding
        self.length = 0    # positions filled so far (padding included)
        # after images: a row's next position minus its index (vision/multimodal.py; 0 for text)
        self.rope_delta = np.zeros(batch, np.int64)
        self.max_len = max_len

    def reserve(self, n: int, padding_mask=None) -> None:
        """Record the padding of the next n positions before a forward over them."""
        if self.length + n > self.max_len:
            raise NpqwenError(f"KV cache holds {self.max_len} positions; {self.length} used, {n} more requested")
        if padding_mask is not None:
            self.padding[:, self.length:self.length + n] = padding_mask

    def update(self, layer: int, k, v):  # [b, K, t, hd] x2 -> all keys and values so far [b, K, s, hd] x2
        t, n = k.shape[2], self.slot[layer]
        self.k[n, :, :, self.length:self.length + t] = k
        self.v[n, :, :, self.length:self.length + t] = v
        s = self.length + t
        return self.k[n, :, :, :s], self.v[n, :, :, :s]

    def update_index(self, layer: int, keys):  # [b, t, d_i] -> every index key so far [b, s, d_i]
        t, n = keys.shape[1], self.slot[layer]
        self.index[n, :, self.length:self.length + t] = keys
        return self.index[n, :, :self.length + t]

    def store_positions(self, positions):  # [3, b, t] of the next t -> every position's so far [3, b, s]
        t = positions.shape[-1]
        self.positions[:, :, self.length:self.length + t] = positions
        return self.positions[:, :, :self.length + t]

    def advance(self, n: int) -> None:
        """Mark n more positions as filled, after every layer has stored them."""
        self.length += n

    @property
    def nbytes(self) -> int:
        return (self.k.nbytes + self.v.nbytes + sum(s.conv.nbytes + s.S.nbytes for s in self.states.values())
                + (self.index.nbytes if self.index is not None else 0)
                + sum(s.ids.nbytes + s.conv.nbytes for s in self.ple.values()))
