"""Choosing the next token: transformers' logits processors of the same names, as pure functions.

Each takes logits [b, vocab] (float32) and returns new logits, with removed tokens set to -inf.
`sample` applies them in transformers' order (`processed_logits`: repetition penalty, then temperature,
top-k, top-p, min-p) and draws from the softmax (`draw`); temperature 0 means greedy (argmax after
the penalty).
Every value `validate` accepts works, extreme ones included (a temperature of 1e-300, a penalty of
1e300): the logits are shifted so that their maximum is 0 before the temperature divides them, and
an infinitely favoured token (a positive logit divided by a vanishing penalty) takes all the
probability, so nothing overflows into NaN.
"""

import math
from dataclasses import dataclass

import numpy as np

from .errors import NpqwenError
from .primitives import softmax

FILTERED = -np.inf
F32 = np.finfo(np.float32)


@dataclass
class SamplingSettings:
    temperature: float = 0.0         # 0 = greedy
    top_k: int = 0                   # 0 = off
    top_p: float = 1.0               # 1 = off
    min_p: float = 0.0               # 0 = off
    repetition_penalty: float = 1.0  # 1 = off

    def validate(self):
        t, k, p, m, r = self.temperature, self.top_k, self.top_p, self.min_p, self.repetition_penalty
        if not _finite(t) or t < 0:
            raise NpqwenError(f"temperature must be a finite number >= 0 (0 = greedy), found {t}")
        if not _integer(k) or k < 0:
            raise NpqwenError(f"top-k must be an integer >= 0 (0 = off), found {k}")
        if not _finite(p) or not 0 < p <= 1:
            raise NpqwenError(f"top-p must be in (0, 1], found {p}")
        if not _finite(m) or not 0 <= m <= 1:
            raise NpqwenError(f"min-p must be in [0, 1], found {m}")
        if not _finite(r) or r <= 0:
            raise NpqwenError(f"repetition penalty must be a finite number > 0 (1 = off), found {r}")
        return self


def _integer(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _finite(v) -> bool:
    """A finite real number (NumPy's included; not a bool, not an int too large for a float)."""
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def repetition_penalty(logits, previous_ids, penalty):  # [b, V], [b, n] -> [b, V]
    """Make every token already in the sequence less likely: a positive logit is divided by the
    penalty, a negative one multiplied (so both move toward "less likely")."""
    if penalty == 1.0 or previous_ids.shape[1] == 0:
        return logits
    out = logits.copy()
    rows = np.arange(logits.shape[0])[:, None]
    seen = out[rows, previous_ids]
    p = _positive_float32(penalty)
    with np.errstate(over="ignore"):  # a huge or vanishing penalty: +-inf, the limit it tends to
        out[rows, previous_ids] = np.where(seen < 0, seen * p, seen / p)
    return out


def temperature(logits, t):  # [b, V] -> [b, V]
    with np.errstate(over="ignore"):  # a vanishing t sends all but the largest logits to -inf
        return logits / _positive_float32(t)


def _positive_float32(x):
    """x as a float32 that is neither 0 nor inf (1e-300 would round to 0 and divide 0 by 0)."""
    return np.float32(min(max(float(x), float(F32.smallest_subnormal)), float(F32.max)))


def _max_to_zero(logits):  # [b, V] -> [b, V]
    """Shift each row so that its largest logit is 0 (the distribution is unchanged) and no
    temperature can overflow it. A row whose largest logit is +inf (a token forced by a vanishing
    penalty) keeps only its +inf tokens; one whose largest is -inf (every token penalised away)
    keeps them all."""
    top = logits.max(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):  # inf - inf, where logits == top: replaced by 0
        return np.where(logits == top, np.float32(0), logits - top)


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


def processed_logits(logits, settings: SamplingSettings, previous_ids=None):  # [b, V] -> [b, V]
    """The scores the next token is drawn from: the logits after every processor, what transformers'
    generate reports as output_scores (up to a constant per row, which softmax ignores). Greedy:
    the logits after the repetition penalty only, as transformers applies no warper then."""
    logits = logits.astype(np.float32, copy=False)
    if previous_ids is not None:
        logits = repetition_penalty(logits, previous_ids, settings.repetition_penalty)
    if settings.temperature == 0:
        return logits
    logits = temperature(_max_to_zero(logits), settings.temperature)
    logits = top_k(logits, settings.top_k)
    logits = top_p(logits, settings.top_p)
    return min_p(logits, settings.min_p)


def draw(scores, settings: SamplingSettings, rng: np.random.Generator):  # [b, V] -> [b]
    """The next token of each row from processed scores: the argmax when greedy, else a draw from their softmax."""
    if settings.temperature == 0:
        return scores.argmax(axis=-1)
    probs = softmax(scores).astype(np.float64)
    probs /= probs.sum(axis=-1, keepdims=True)
    return np.array([rng.choice(len(p), p=p) for p in probs])


def sample(logits, settings: SamplingSettings, rng: np.random.Generator, previous_ids=None):  # [b, V] -> [b]
    """The next token of each row."""
    return draw(processed_logits(logits, settings, previous_ids), settings, rng)
