"""Choosing the next token: transformers' logits processors of the same names, as pure functions.

Each takes logits [b, vocab] (float32) and returns new logits, with removed tokens set to -inf.
`sample` applies them in transformers' order: repetition penalty, then temperature, top-k, top-p,
min-p, and draws from the softmax; temperature 0 means greedy (argmax after the penalty).
"""

from dataclasses import dataclass

import numpy as np

from .errors import NpqwenError
from .primitives import softmax

FILTERED = -np.inf


@dataclass
class SamplingSettings:
    temperature: float = 0.0         # 0 = greedy
    top_k: int = 0                   # 0 = off
    top_p: float = 1.0               # 1 = off
    min_p: float = 0.0               # 0 = off
    repetition_penalty: float = 1.0  # 1 = off

    def validate(self):
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise NpqwenError(f"temperature must be >= 0 (0 = greedy), found {self.temperature}")
        if self.top_k < 0:
            raise NpqwenError(f"top-k must be >= 0 (0 = off), found {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise NpqwenError(f"top-p must be in (0, 1], found {self.top_p}")
        if not 0 <= self.min_p <= 1:
            raise NpqwenError(f"min-p must be in [0, 1], found {self.min_p}")
        if not np.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise NpqwenError(f"repetition penalty must be > 0 (1 = off), found {self.repetition_penalty}")
        return self


def repetition_penalty(logits, previous_ids, penalty):  # [b, V], [b, n] -> [b, V]
    """Make every token already in the sequence less likely: a positive logit is divided by the
    penalty, a negative one multiplied (so both move toward "less likely")."""
    if penalty == 1.0 or previous_ids.shape[1] == 0:
        return logits
    out = logits.copy()
    rows = np.arange(logits.shape[0])[:, None]
    seen = out[rows, previous_ids]
    out[rows, previous_ids] = np.where(seen < 0, seen * penalty, seen / penalty)
    return out


def temperature(logits, t):  # [b, V] -> [b, V]
    return logits / np.float32(t)


def top_k(logits, k):  # [b, V] -> [b, V]
    """Keep the k largest logits (and any tied with the k-th), as transformers' TopKLogitsWarper."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k, axis=-1)[:, -k:].min(axis=-1, keepdims=True)
    return np.where(logits < kth, FILTERED, logits)


def top_p(logits, p):  # [b, V] -> [b, V]
    """Nucleus: keep the smallest set of most likely tokens whose probability reaches p. Computed as
    transformers does: sort ascending and drop tokens while the cumulative probability <= 1 - p;
    the most likely token is always kept."""
    if p >= 1.0:
        return logits
    order = np.argsort(logits, axis=-1, kind="stable")
    sorted_logits = np.take_along_axis(logits, order, axis=-1)
    cumulative = np.cumsum(softmax(sorted_logits), axis=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[:, -1] = False
    remove = np.zeros_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, FILTERED, logits)


def min_p(logits, p):  # [b, V] -> [b, V]
    """Drop tokens whose probability is below p times the most likely token's probability."""
    if p <= 0.0:
        return logits
    probs = softmax(logits)
    remove = probs < p * probs.max(axis=-1, keepdims=True)
    remove[np.arange(len(logits)), probs.argmax(axis=-1)] = False
    return np.where(remove, FILTERED, logits)


def sample(logits, settings: SamplingSettings, rng: np.random.Generator, previous_ids=None):  # [b, V] -> [b]
    """The next token of each row."""
    logits = logits.astype(np.float32, copy=False)
    if previous_ids is not None:
        logits = repetition_penalty(logits, previous_ids, settings.repetition_penalty)
    if settings.temperature == 0:
        return logits.argmax(axis=-1)
    logits = temperature(logits, settings.temperature)
    logits = top_k(logits, settings.top_k)
    logits = top_p(logits, settings.top_p)
    logits = min_p(logits, settings.min_p)
    probs = softmax(logits).astype(np.float64)
    probs /= probs.sum(axis=-1, keepdims=True)
    return np.array([rng.choice(len(p), p=p) for p in probs])
