"""Speculative decoding: guess several tokens cheaply, check them all in one forward of the model.

Decoding on a CPU is bound by reading the weights: one forward over k + 1 positions reads them once,
as one step does, so checking k guessed ("drafted") tokens costs little more than producing one.

    last token + drafts d1..dk --one forward--> the model's distribution after each of them
    d1 is kept if the model agrees, then d2, ... ; at the first disagreement the model's own token
    is taken instead; if all k are kept, the distribution after dk gives one token more.
    The cache is cut back to the kept tokens (KVCache.length), and the next round starts.

Agreeing: greedy, a draft is kept when it is the model's argmax, so the output is plain greedy
decoding's (up to float rounding in a forward of k + 1 positions instead of one: the same logits to
about 1e-6, the same tokens unless two were that close). Sampling, by rejection sampling with a
draft proposed with certainty (q = one-hot): d is kept with probability p(d), and when not, the
token is drawn from p with d removed and renormalised. Each token is then exactly a draw from p,
the distribution plain sampling draws from (after the same processors), though not the same draw.

Two ways to draft, as transformers' prompt_lookup_num_tokens and assistant_model, llama.cpp's
lookup and -md, mlx-lm's --draft-model:
- PromptLookup(n): find the latest earlier place where the last 3 (or 2, or 1) tokens occurred, and
  propose the n tokens that followed them there. Free; it pays off when the output repeats its
  context (editing, quoting, code).
- DraftModel(model): a smaller checkpoint with the same tokenizer proposes n tokens greedily, from a
  cache of its own.

The cut-back needs a cache that is only keys and values: the hybrid generation's recurrent state
(Gated DeltaNet) and Qwen3.8-Flash-Next's streams cannot be rewound, so both are refused.
"""

import numpy as np

from .cache import KVCache
from .errors import NpqwenError
from .sampling import processed_logits, softmax

MAX_NGRAM = 3


class PromptLookup:
    """Drafts from the context itself: what followed the last n-gram where it occurred before."""

    def __init__(self, n: int):
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 64:
            raise NpqwenError(f"prompt lookup proposes 1 to 64 tokens a round, found {n!r}")
        self.n = n

    def propose(self, history: list, k: int) -> list:
        seq = np.asarray(history)
        for size in range(min(MAX_NGRAM, len(seq) - 1), 0, -1):
            tail = seq[-size:]
            windows = np.lib.stride_tricks.sliding_window_view(seq[:-1], size)   # every earlier n-gram
            hits = np.flatnonzero((windows == tail).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + size                                     # the latest, and what followed it
                return seq[start:start + min(k, self.n)].tolist()
        return []

    def start(self, max_len):  # (nothing of its own to size)
        pass

    def accepted(self, history, n_cached):  # (nothing of its own to rewind)
        pass


class DraftModel:
    """Drafts by a smaller model of the same tokenizer, greedily, from a cache of its own."""

    def __init__(self, model, n: int = 5):
        check_rewindable(model.config, "the draft model")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 64:
            raise NpqwenError(f"the draft model proposes 1 to 64 tokens a round, found {n!r}")
        self.model, self.n, self.cache = model, n, None

    def start(self, max_len):
        self.cache = KVCache(self.model.config, 1, max_len)
        self.fed = []   # the tokens in its cache, in order

    def propose(self, history: list, k: int) -> list:
        k = min(k, self.n)
        # feed what it has not seen (the kept tokens and the model's own), then k - 1 more forwards
        new = history[len(self.fed):]
        V = self.model.config.vocab_size
        logits = self.model.forward(np.array([new]), cache=self.cache, logits_to_keep=1).logits[0, -1]
        self.fed = list(history)
        drafts = []
        for _ in range(k):
            d = int(logits.argmax())
            drafts.append(d)
            if len(drafts) == k or d >= V:
                break
            logits = self.model.forward(np.array([[d]]), cache=self.cache).logits[0, -1]
            self.fed.append(d)
        return drafts

    def accepted(self, history, n_cached):
        """The target kept history[:n_cached] in its cache: keep the longest prefix of ours that agrees."""
        same = 0
        for a, b in zip(self.fed, history):
            if a != b:
                break
            same += 1
        self.cache.length = same
        self.fed = self.fed[:same]


def check_rewindable(cfg, what="the model"):
    if "linear_attention" in cfg.layer_types or cfg.hyper_connections:
        raise NpqwenError(f"speculative decoding needs a cache that can be cut back, keys and values only; "
                          f"{what} ({cfg.model_type}) keeps a recurrent state (Gated DeltaNet) or streams that cannot "
                          f"be rewound")


def speculative_steps(model, prompt, steps, settings, rng, eos, draft, min_new_tokens=0, stats=None):
    """Yield the new token ids one at a time (at most `steps`), drafted and checked in rounds.
    eos: an int array of eos ids. stats: a dict that receives the rounds, drafted and accepted counts."""
    check_rewindable(model.config)
    history = list(prompt)
    cache = KVCache(model.config, 1, len(prompt) + steps)
    if isinstance(draft, DraftModel):
        draft.start(len(prompt) + steps + draft.n)
    stats = stats if stats is not None else {}
    stats.update(rounds=0, drafted=0, accepted=0)
    # the cache holds every token of history but the last, which the next forward starts with
    if len(history) > 1:
        model.forward(np.array([history[:-1]]), cache=cache, logits_to_keep=1)
    made = 0
    while made < steps:
        room = steps - made                                        # (drafts past max_new_tokens would be wasted)
        drafts = draft.propose(history, room - 1)[:room - 1] if room > 1 else []
        start = cache.length
        out = model.forward(np.array([[history[-1]] + drafts]), cache=cache).logits[0]   # [1 + k, V]
        stats["rounds"] += 1
        stats["drafted"] += len(drafts)
        kept, agreed = [], 0
        for i in range(len(drafts) + 1):
            row = out[i][None]
            if made + len(kept) < min_new_tokens and eos.size:
                row = row.copy()
                row[:, eos] = -np.inf
            scores = processed_logits(row, settings, np.array([history + kept]))[0]
            if i < len(drafts):
                token, ok = check_draft(scores, drafts[i], settings, rng)
            else:
                token, ok = _draw(scores, settings, rng), False
            kept.append(token)
            agreed += ok
            if not ok or token in eos:
                break
        stats["accepted"] += agreed
        # the cache now holds [last, drafts]; keep [last, the kept drafts] (all but the newest token)
        cache.length = start + len(kept)
        for token in kept:
            history.append(token)
            made += 1
            yield token
            if token in eos or made >= steps:
                return
        draft.accepted(history, cache.length)


def check_draft(scores, d, settings, rng):
    """The next token, given the processed scores [V] and a drafted token d -> (token, whether it is d)."""
    if settings.temperature == 0:
        best = int(scores.argmax())
        return best, best == d
    p = softmax(scores[None])[0].astype(np.float64)
    p /= p.sum()
    if d < len(p) and rng.random() < p[d]:
        return d, True
    if d < len(p):
        p[d] = 0.0                                                 # the residual max(p - q, 0), q one-hot at d
    total = p.sum()
    if total <= 0:                                                 # (p was all on d)
        return d, True
    return int(rng.choice(len(p), p=p / total)), False


def _draw(scores, settings, rng):
    if settings.temperature == 0:
        return int(scores.argmax())
    p = softmax(scores[None])[0].astype(np.float64)
    return int(rng.choice(len(p), p=p / p.sum()))
