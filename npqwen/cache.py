"""The KV cache: every layer's rotated keys and values, preallocated for the whole generation.

Decoding one token needs the keys and values of all earlier positions. Recomputing them would
cost a forward over the whole sequence per token; keeping them costs memory instead:
2 (k and v) x layers x kv_heads x head_dim x 4 bytes per position. Grouped-query attention is what
keeps this small: only the K kv heads are stored, not the H query heads.
"""

import numpy as np

from .errors import NpqwenError


class KVCache:
    def __init__(self, config, batch: int, max_len: int):
        shape = (config.num_hidden_layers, batch, config.num_key_value_heads, max_len, config.head_dim)
        self.k = np.zeros(shape, np.float32)  # [layers, b, K, max_len, hd]
        self.v = np.zeros(shape, np.float32)
        self.padding = np.ones((batch, max_len), np.int64)  # 1 = real token, 0 = left padding
        self.length = 0    # positions filled so far (padding included)
        self.max_len = max_len

    def reserve(self, n: int, padding_mask=None) -> None:
        """Record the padding of the next n positions before a forward over them."""
        if self.length + n > self.max_len:
            raise NpqwenError(f"KV cache holds {self.max_len} positions; {self.length} used, {n} more requested")
        if padding_mask is not None:
            self.padding[:, self.length:self.length + n] = padding_mask

    def update(self, layer: int, k, v):  # [b, K, t, hd] x2 -> all keys and values so far [b, K, s, hd] x2
        t = k.shape[2]
        self.k[layer, :, :, self.length:self.length + t] = k
        self.v[layer, :, :, self.length:self.length + t] = v
        s = self.length + t
        return self.k[layer, :, :, :s], self.v[layer, :, :, :s]

    def advance(self, n: int) -> None:
        """Mark n more positions as filled, after every layer has stored them."""
        self.length += n

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes
