"""Log-probabilities of tokens, read off the logits: what scoring (score.py), `--logprobs` in
generation and the comparison with another engine (compare.py) report.

    final-normed hidden states [b, t, d]
        -> LM head, one block of positions at a time -> logits [b, P, vocab]
        -> log-softmax in float32 (as torch.log_softmax) -> each next token's log-probability,
           its rank, and the k most likely alternatives

A block holds at most BLOCK_FLOATS logits (64 MB): scoring a 4096-token window on Qwen's
151936-word vocabulary never holds the 2.5 GB of all its logits at once.
"""

from dataclasses import dataclass

import numpy as np

from .model import _check_finite
from .sampling import _max_to_zero

BLOCK_FLOATS = 1 << 24


# ---------------------------------------------------------------------------------------------
# log-softmax, ranks and the k most likely tokens


def log_softmax(x, out=None):  # [..., V] -> [..., V] float32 (float64 stays float64)
    """log(softmax(x)) = x - max - log(sum(exp(x - max))), as torch.log_softmax. -inf entries (tokens
    a sampling filter removed) stay -inf; a row with +inf entries (a token forced by a vanishing
    repetition penalty) shares all its probability among them; a row of -inf is uniform, as
    sampling treats it. out=x computes in place."""
    x = x if x.dtype == np.float64 else x.astype(np.float32, copy=False)
    top = x.max(axis=-1, keepdims=True)
    if not np.isfinite(top).all():
        x, top = _max_to_zero(x), np.float32(0)
    y = np.subtract(x, top, out=out)
    y -= np.log(np.exp(y).sum(axis=-1, keepdims=True))
    return y


def top_tokens(logprobs, k):  # [..., V] -> ids [..., k], logprobs [..., k]
    """The k most likely tokens, most likely first."""
    k = min(k, logprobs.shape[-1])
    if k == 0:
        return np.zeros(logprobs.shape[:-1] + (0,), np.int64), np.zeros(logprobs.shape[:-1] + (0,), logprobs.dtype)
    ids = np.argpartition(logprobs, -k, axis=-1)[..., -k:]
    values = np.take_along_axis(logprobs, ids, axis=-1)
    order = np.argsort(-values, axis=-1, kind="stable")
    return np.take_along_axis(ids, order, axis=-1), np.take_along_axis(values, order, axis=-1)


def ranks(logprobs, picked):  # [..., V], [...] -> [...] ints
    """1 + how many tokens are strictly more likely than the one picked (1 = the model's top choice)."""
    return 1 + (logprobs > picked[..., None]).sum(axis=-1)


def logit_blocks(model, normed, start, stop, floats=None):  # [b, t, d] -> (a, logits [b, P, V]), ...
    """The LM head over positions start..stop-1 of the final-normed hidden states, a block of P
    positions at a time (the first at position a), so that a block holds at most `floats` logits
    (default BLOCK_FLOATS; a single position's always fit)."""
    b, V = normed.shape[0], model.config.vocab_size
    P = max(1, (floats or BLOCK_FLOATS) // (b * V))
    for a in range(start, stop, P):
        with np.errstate(over="ignore", invalid="ignore"):
            logits = model.lm_head_logits(normed[:, a:min(a + P, stop)])
        _check_finite(logits, "the final norm and LM head")
        yield a, logits


# ---------------------------------------------------------------------------------------------
# scoring sequences


@dataclass
class Scores:
    """What the model says about each scored token of one sequence (row i: the i-th scored token)."""
    ids: np.ndarray            # [n] the tokens scored
    logprobs: np.ndarray       # [n] float32: log p(token | the tokens before it in its window)
    ranks: np.ndarray          # [n] 1 = the model's most likely next token
    top_ids: np.ndarray        # [n, k] the k most likely next tokens, most likely first
    top_logprobs: np.ndarray   # [n, k]

    @staticmethod
    def concat(parts):
        return Scores(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                        ("ids", "logprobs", "ranks", "top_ids", "top_logprobs")))


def score_rows(model, ids, attention_mask=None, first=None, top_k=0) -> list:
    """One forward over ids [b, T] (left-padded rows, attention_mask 0 for padding) and, for each
    row r, the Scores of its tokens ids[r, first[r]:], each under the distribution the model
    predicts from the tokens before it (first[r] >= 1 and past the row's padding; default 1)."""
    ids = np.asarray(ids)
    normed = model.forward(ids, attention_mask, lm_head=False).hidden_states[-1]   # [b, T, d]
    return score_normed(model, normed, ids, first, top_k)


def score_normed(model, normed, ids, first=None, top_k=0) -> list:
    """score_rows from the final-normed hidden states [b, T, d] of a forward already run over ids
    (the server's prefill, which also fills its cache)."""
    b, T = ids.shape
    first = np.ones(b, np.int64) if first is None else np.asarray(first, np.int64)
    start = int(first.min()) - 1                               # the first position that predicts
    n = T - 1 - start
    lp, rk = np.empty((b, n), np.float32), np.empty((b, n), np.int64)
    top_ids, top_lp = np.empty((b, n, top_k), np.int64), np.empty((b, n, top_k), np.float32)
    for a, logits in logit_blocks(model, normed, start, T - 1):
        P = logits.shape[1]
        block = log_softmax(logits, out=logits)                # [b, P, V], in place
        picked = np.take_along_axis(block, ids[:, a + 1:a + 1 + P, None], axis=-1)[..., 0]
        i = a - start
        lp[:, i:i + P], rk[:, i:i + P] = picked, ranks(block, picked)
        if top_k:
            top_ids[:, i:i + P], top_lp[:, i:i + P] = top_tokens(block, top_k)
    return [Scores(ids[r, first[r]:], *(x[r, first[r] - 1 - start:] for x in (lp, rk, top_ids, top_lp)))
            for r in range(b)]


# ---------------------------------------------------------------------------------------------
# generation: the distribution each token was drawn from


def step_logprobs(scores, chosen, k):  # [b, V] processed scores, [b] ids -> per row (logprob, [(id, logprob)])
    """Each chosen token's log-probability under the scores it was drawn from, and the k most
    likely tokens under them (only tokens that could be drawn: those a filter removed are left out)."""
    lp = log_softmax(scores)
    picked = lp[np.arange(len(chosen)), chosen]
    ids, values = top_tokens(lp, k)
    return [(float(p), [(int(i), float(v)) for i, v in zip(row_ids, row_values) if np.isfinite(v)])
            for p, row_ids, row_values in zip(picked, ids, values)]
