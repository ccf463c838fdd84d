"""Continuous batching: one model, many requests, decoded together one token per step.

A decode step reads every weight once whatever the batch size, so b sequences in one forward cost
little more than one. Requests arrive at any time; each is prefilled alone, exactly as `generate`
prefills it (after the longest prefix the prompt cache already holds: for a hybrid model, the
longest that ends at a snapshot of its recurrent states), then joins the running batch; a finished
or abandoned request leaves it at the next step.

    engine thread, each step:
      admit waiting requests (up to max_batch rows): prefill each -> logits of its last position,
        the prompt's cache contents kept by the prompt cache
      every row samples its next token and reports its text; finished rows leave,
        their cache contents kept by the prompt cache
      one forward of every remaining row's new token against the batch cache -> logits
        (or, with a drafter and one row alone: its token and the drafted ones in one forward, the
        drafts kept or replaced as speculative.py does, several tokens reported at once)

The batch cache holds each row's stored positions right-aligned: row r's n_r positions are the
last n_r columns, the columns before them left padding (masked, and not counted in its RoPE
positions): the layout `generate_batch` uses, so the model's forward needs nothing new. A row
joining or leaving rebuilds it compactly.

The HTTP side (serve.py) talks to the engine through `Request` (submitted from any thread) and
the `Event`s the engine passes to the request's callback, from the engine thread.
"""

import collections
import copy
import itertools
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .cache import KVCache
from .deltanet import DeltaState
from .engram import PLEState
from .errors import NpqwenError
from .generation import Token, context_limit
from .model import available_memory
from .logprobs import logit_blocks, score_normed, step_logprobs
from .sampling import SamplingSettings, draw, processed_logits
from .speculative import check_draft, check_rewindable

ROOM = 256   # decode steps the batch cache is sized for beyond its longest row, before it is rebuilt


@dataclass(eq=False)   # compared and hashed by identity
class Request:
    prompt: list                                        # token ids
    max_new_tokens: int
    settings: SamplingSettings
    on_event: Callable                                  # called with each Event, in the engine thread
    seed: int | None = None
    stop: tuple = ()                                    # strings: the text ends before the first of them
    logit_bias: dict | None = None                      # {token id: added to its logit}
    cancelled: bool = False                             # set by the client's side; the row leaves at the next step
    logprobs: int | None = None                         # K: each token carries its logprob and K alternatives
    images: tuple | None = None                         # (pixel_values, image_grid_thw) of the prompt's images
    constraint: object = None                           # structured.Constraint: only what its grammar allows
    prompt_logprobs: int | None = None                  # K: the prompt's tokens are scored too (echo), each with
                                                        # its logprob under the model and K alternatives; with
                                                        # max_new_tokens 0, the prompt is scored and nothing generated


@dataclass
class Event:
    """What one step produced for one request."""
    text: str = ""                                      # new text: joined, the completion (stop strings cut off)
    token: Token | None = None                          # the token sampled at this step (None: nothing generated)
    prompt: list | None = None                          # with prompt_logprobs, on the first event: the prompt's
                                                        # tokens as Token (the first one's logprob None)
    finish_reason: str | None = None                    # "stop" (eos or a stop string) or "length" (max tokens, context)
    usage: dict | None = None                           # on the last event: prompt, completion and cached token counts
    error: str | None = None                            # the request failed: nothing else comes
    status: int = 400                                   # for an error: 400 bad request, 500 server fault


# ---------------------------------------------------------------------------------------------
# text: stop strings


class StopText:
    """Text streamed up to, not including, the first stop string to appear (which may span several
    tokens): the one that is complete first, character by character, the longer one on a tie, so the
    result does not depend on how the text was split into tokens. Text that could still be the start
    of a stop string is held back until the next piece decides."""

    def __init__(self, stops):
        self.stops, self.held = [s for s in stops if s], ""

    def feed(self, text, final=False):  # -> (text to emit, stopped)
        text = self.held + text
        self.held = ""
        found = [(i + len(s), i) for s in self.stops if (i := text.find(s)) >= 0]   # (end, start) of each
        if found:
            return text[:min(found)[1]], True
        if final or not self.stops:
            return text, False
        keep = max(self._partial(text, s) for s in self.stops)
        self.held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep], False

    @staticmethod
    def _partial(text, stop):
        """The length of the longest end of `text` that begins `stop`."""
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                return k
        return 0


# ---------------------------------------------------------------------------------------------
# the prompt cache

# A long prompt of a hybrid model is prefilled in pieces ending at multiples of this many positions,
# and its recurrent states at each end are kept: a later prompt that shares only its first part
# starts from the last such snapshot inside the shared part. Each snapshot costs the DeltaNet
# layers' states (Qwen3.5-0.8B: 19.3 MiB, about what 800 positions of its keys and values take in
# float32), so snapshots come no more often than the keys and values of as many positions.
SNAPSHOT_EVERY = 1024


@dataclass(eq=False)   # compared by identity
class _Entry:
    ids: np.ndarray          # [n]
    k: np.ndarray            # [layers, K, n, hd]
    v: np.ndarray
    along: dict              # other arrays with a place per position, on axis 1 (QSA: "index", "positions")
    snapshots: dict          # {p: the recurrent states (DeltaState, PLEState) after the first p positions}
    used: dict = field(default_factory=dict)   # {p: when snapshot p was last stored or reused (PromptCache.clock)}

    def upto(self, n):  # -> (k, v, along) of the first n positions (views)
        return self.k[:, :, :n], self.v[:, :, :n], {name: a[:, :n] for name, a in self.along.items()}

    @property
    def nbytes(self):
        return (self.k.nbytes + self.v.nbytes + sum(a.nbytes for a in self.along.values())
                + sum(_state_bytes(s) for s in self.snapshots.values()))


class PromptCache:
    """Keys and values of earlier sequences, so that a request whose prompt starts with one of them
    (the next turn of a chat: the previous prompt, the reply, then the new message) prefills only the
    rest, as mlx-lm's and llama-server's prompt caches do. Least recently used entries go first
    once the byte budget is spent; an entry that a longer one extends is merged into it.

    A hybrid model (exact=True) also needs the recurrent states of its DeltaNet (and PLE) layers,
    which hold the whole prefix in a fixed size and cannot be rewound to a shorter one: its entries
    keep snapshots of them at a few positions (the end of each prompt, every SNAPSHOT_EVERY
    positions of a long one, the end of a finished sequence), and a prompt may reuse only a prefix
    that ends exactly at a snapshot, as llama.cpp's and SGLang's hybrid caches do. The keys and
    values of the attention layers are shared by all of an entry's snapshots. Past the budget, the
    least recently used snapshot goes first (with the keys past an entry's last snapshot, which
    nothing can reuse), not a whole entry: a long chat, one entry holding a snapshot or two per
    turn, loses its oldest turns' snapshots, never its latest."""

    def __init__(self, budget_bytes, exact=False):
        self.budget, self.exact, self.entries, self.bytes = budget_bytes, exact, [], 0   # entries: most recent last
        self.clock = itertools.count()

    def lookup(self, ids):  # -> (n, k, v, states): the cache contents of the first n positions of ids
        """k, v [layers, K, n, hd] (views); states: the per-position arrays and recurrent states
        (`_assemble`'s form)."""
        best, hit = 0, None
        ids = np.asarray(ids)
        for e in self.entries:
            n = min(_common_prefix(e.ids, ids), len(ids) - 1)   # at least one position is prefilled: its logits
            if self.exact:                                       # start generation
                n = max((p for p in e.snapshots if p <= n), default=0)
            if n > best:
                best, hit = n, e
        if not best:
            return 0, None, None, {}
        self._touch(hit)
        hit.used[best] = next(self.clock)
        k, v, states = hit.upto(best)
        return best, k, v, {**states, **hit.snapshots.get(best, {})}

    def store(self, ids, k, v, states=None, snapshots=None):
        """ids [n]; k and v [layers, K, n, hd]; states: the rest of the cache after them, as
        `Engine._kv` gives it (its recurrent states are the snapshot at n); snapshots: {p < n: the
        recurrent states after p positions}. All copied here."""
        ids, states = np.asarray(ids), states or {}
        snapshots = dict(snapshots or {})
        recurrent = {key: s for key, s in states.items() if isinstance(s, (DeltaState, PLEState))}
        if recurrent:
            snapshots[len(ids)] = recurrent
        new = _Entry(ids, k, v, {name: states[name] for name in ("index", "positions") if name in states}, snapshots)
        if len(ids) < 2 or new.nbytes > self.budget or (self.exact and not snapshots):
            return
        now = dict.fromkeys(snapshots, next(self.clock))
        holder = next((e for e in self.entries if len(e.ids) >= len(ids) and _common_prefix(e.ids, ids) == len(ids)),
                      None)
        if holder is not None:   # these ids are stored already (the same prompt again): only the snapshots are new
            holder.snapshots.update(copy.deepcopy(snapshots))
            holder.used.update(now)
            self._touch(holder)
        else:   # entries these ids extend are replaced, their snapshots (valid positions of the new one) kept
            new = copy.deepcopy(new)
            new.used = now
            for e in [e for e in self.entries if _common_prefix(e.ids, ids) == len(e.ids)]:
                new.snapshots, new.used = {**e.snapshots, **new.snapshots}, {**e.used, **new.used}
                self.entries.remove(e)
            self.entries.append(new)
        self.bytes = sum(e.nbytes for e in self.entries)
        while self.bytes > self.budget:
            self._evict()
            self.bytes = sum(e.nbytes for e in self.entries)

    def _evict(self):
        """Drop the least recently used entry; for a hybrid model, the least recently used snapshot
        (of those stored together, the earliest position first)."""
        if not self.exact:
            self.entries.pop(0)
            return
        e, p = min(((e, p) for e in self.entries for p in e.snapshots), key=lambda ep: (ep[0].used[ep[1]], ep[1]))
        del e.snapshots[p], e.used[p]
        if not e.snapshots:
            self.entries.remove(e)
        elif p > max(e.snapshots):   # its last: the keys past the one before it are of no use now
            n = max(e.snapshots)
            e.ids, (e.k, e.v, e.along) = e.ids[:n].copy(), copy.deepcopy(e.upto(n))

    def _touch(self, e):  # most recently used
        self.entries.remove(e)
        self.entries.append(e)


def _state_bytes(states) -> int:   # {key: DeltaState or PLEState} -> bytes of their arrays
    return sum(a.nbytes for s in states.values() for a in vars(s).values())


def _common_prefix(a, b) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


# ---------------------------------------------------------------------------------------------
# the batch cache: rows of stored positions, right-aligned


def _cache_bytes(cfg, rows, positions):
    attention_layers = sum(kind != "linear_attention" for kind in cfg.layer_types)
    per_position = 2 * cfg.num_key_value_heads * cfg.head_dim + cfg.indexer_head_dim   # (QSA: its index keys)
    return attention_layers * rows * positions * per_position * 4


def _new_cache(cfg, rows, positions):
    need = _cache_bytes(cfg, rows, positions)
    if need > available_memory():
        raise NpqwenError(f"the KV cache for {rows} sequences of up to {positions} positions needs "
                          f"{need / 1e9:,.1f} GB, more memory than is available")
    return KVCache(cfg, rows, positions)


def _assemble(cfg, parts, room):
    """A batch cache holding parts [(k, v, states)], k and v [layers, K, n_r, hd], right-aligned, with
    room for `room` more positions; and the rows' DeltaNet states (hybrid models), stacked.
    Qwen3.8-Flash-Next: states also holds "index" [layers, n_r, d_i] (positions, so right-aligned like
    k and v) and a PLEState per PLE layer (no positions, like a DeltaNet state)."""
    n_max = max(k.shape[2] for k, _, _ in parts)
    cache = _new_cache(cfg, len(parts), n_max + room)
    for r, (k, v, st) in enumerate(parts):
        n = k.shape[2]
        cache.k[:, r, :, n_max - n:n_max] = k
        cache.v[:, r, :, n_max - n:n_max] = v
        if cache.index is not None:
            cache.index[:, r, n_max - n:n_max] = st["index"]
            cache.positions[:, r, n_max - n:n_max] = st["positions"]
        cache.padding[r, :n_max - n] = 0
        cache.rope_delta[r] = st.get("rope_delta", 0)
    for layer, first in parts[0][2].items():  # states have no positions: each row's is its own, whatever the padding
        if isinstance(first, DeltaState):
            cache.states[layer] = DeltaState(np.stack([st[layer].conv for _, _, st in parts]),
                                             np.stack([st[layer].S for _, _, st in parts]))
        elif isinstance(first, PLEState):
            cache.ple[layer[1]] = PLEState(np.stack([st[layer].ids for _, _, st in parts]),
                                           np.stack([st[layer].conv for _, _, st in parts]))
    cache.length = n_max
    return cache


def _recurrent(cache, r):  # -> row r's recurrent states (views): no positions, the whole prefix in a fixed size
    states = {layer: DeltaState(s.conv[r], s.S[r]) for layer, s in cache.states.items()}
    states.update({("ple", layer): PLEState(s.ids[r], s.conv[r]) for layer, s in cache.ple.items()})
    return states


# ---------------------------------------------------------------------------------------------
# the engine


class _Row:
    """One request being generated: its sampling state, its text, where its keys and values are."""

    def __init__(self, req, tokenizer, limit, vocab_size):
        n = len(req.prompt)
        self.req = req
        self.steps = max(0, min(req.max_new_tokens, limit - n))   # nothing past the context
        self.rng = np.random.default_rng(req.seed)
        self.history = np.empty(n + self.steps, np.int64)      # prompt and generated ids (repetition penalty)
        self.history[:n] = req.prompt
        self.n, self.generated, self.cached = n, 0, 0
        self.stream, self.stop = tokenizer.stream(), StopText(req.stop)
        self.bias = None
        if req.logit_bias:
            self.bias = np.zeros(vocab_size, np.float32)
            for i, b in req.logit_bias.items():
                self.bias[i] = b
        self.logits = None        # [V]: the distribution of its next token
        self.prompt_tokens = None # with prompt_logprobs: the prompt scored, until the first event carries it
        self.stored = 0           # positions whose keys and values are cached
        self.own = None           # its own KVCache, until it joins the batch cache
        self.slot = None          # its row in the batch cache
        self.last = None          # its newest token, not yet run through the model
        self.ahead = False        # its newest token was chosen by a speculative round, not at the next step
        self.drafter = None       # speculative decoding: its own drafter, once it speculates
        self.finished = False

    @property
    def speculates(self):  # drafts are checked token by token like plain sampling, but for these
        req = self.req        # (logprobs: of the distribution a rejected draft leaves; a grammar's state)
        return req.logprobs is None and req.images is None and req.constraint is None


class Engine:
    """Owns the model: requests are decoded together by one thread, at most max_batch at a time;
    the rest wait in arrival order."""

    def __init__(self, model, tokenizer, eos_ids, max_batch=8, prompt_cache_bytes=1 << 30, after_step=None,
                 drafter=None):
        """after_step: called in the engine thread after every step (to hand that step's events on at once).
        drafter: a function making a fresh speculative.PromptLookup or DraftModel: a request decoding
        alone is then decoded speculatively (with others, the batch shares each reading of the weights)."""
        if max_batch < 1:
            raise NpqwenError(f"max_batch must be at least 1, found {max_batch}")
        if drafter is not None:
            check_rewindable(model.config)
        self.drafter = drafter
        self.speculative = {"rounds": 0, "drafted": 0, "accepted": 0}
        self.model, self.tok, self.eos = model, tokenizer, set(int(i) for i in eos_ids)
        self.cfg, self.limit, self.max_batch = model.config, context_limit(model.config), max_batch
        self.prompt_cache = PromptCache(prompt_cache_bytes, exact=self.cfg.hybrid)
        self.waiting = collections.deque()
        self.rows, self.cache = [], None
        self.cond = threading.Condition()
        self.stopping = False
        self.after_step = after_step or (lambda: None)
        self.tokens_generated = 0   # by all requests so far
        self.thread = threading.Thread(target=self._run, name="npqwen-engine", daemon=True)
        self.thread.start()

    def submit(self, req: Request) -> None:
        with self.cond:
            self.waiting.append(req)
            self.cond.notify()

    def queued(self) -> int:
        return len(self.waiting)

    def close(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join()

    def _run(self):
        while True:
            with self.cond:
                while not self.stopping and not self.waiting and not self.rows:
                    self.cond.wait()
                if self.stopping:
                    return
                new = [self.waiting.popleft() for _ in range(min(len(self.waiting), self.max_batch - len(self.rows)))]
            try:
                self._step(new)
            except Exception as e:  # no memory, or a fault of npqwen's: those in flight are told, the engine goes on
                if isinstance(e, NpqwenError):
                    message, status = str(e), 503
                else:
                    traceback.print_exc(file=sys.stderr)
                    message, status = ("out of memory" if isinstance(e, MemoryError) else
                                       f"internal error: {type(e).__name__}: {e}"), 500
                for req in dict.fromkeys([r.req for r in self.rows] + new):
                    if not req.cancelled:
                        req.on_event(Event(error=message, status=status))
                self.rows, self.cache = [], None
            self.after_step()

    def _step(self, new):
        joining = [row for row in map(self._prefill, new) if row is not None]
        for row in self.rows + joining:
            if not (row.req.cancelled or row.ahead):
                self._sample(row)
            row.ahead = False
        stay = [r for r in self.rows if not (r.finished or r.req.cancelled)]
        join = [r for r in joining if not (r.finished or r.req.cancelled)]
        for r in self.rows + joining:
            if r.finished and r.req.images is None:   # (images: the ids do not say what the keys saw)
                self.prompt_cache.store(r.history[:r.stored], *self._kv(r))
        if join or len(stay) < len(self.rows) or (stay and self.cache.length == self.cache.max_len):
            self._regroup(stay, join)
        if len(self.rows) == 1 and self.drafter is not None and self.rows[0].speculates:
            self._speculate(self.rows[0])
        elif self.rows:
            self._decode()

    def _prefill(self, req):
        """A new request's prompt run through the model alone, after the prefix the prompt cache holds.
        -> its row, or None when the request failed (told through its callback)."""
        if req.cancelled:
            return None
        try:
            row = _Row(req, self.tok, self.limit, self.cfg.vocab_size)
            scoring = req.prompt_logprobs is not None
            if row.steps < 1 and not (scoring and req.max_new_tokens == 0 and row.n <= self.limit):
                raise NpqwenError(f"the prompt is {row.n} tokens long; the model's context is {self.limit} tokens, "
                                  f"leaving no room to generate")
            # a prompt to score needs the logits of every position, one with images has keys its ids do
            # not describe: neither reuses nor feeds the prompt cache
            cached = not (scoring or req.images is not None) and self.prompt_cache.budget > 0
            n, k, v, states = self.prompt_cache.lookup(req.prompt) if cached else (0, None, None, {})
            row.own = _assemble(self.cfg, [(k, v, states)], row.n - n) if n else _new_cache(self.cfg, 1, row.n)
            ids = np.asarray(req.prompt, np.int64)[None]
            if scoring:
                normed = self.model.forward(ids, cache=row.own, lm_head=False).hidden_states[-1]   # [1, n, d]
                row.prompt_tokens = self._scored_prompt(req, ids, normed)
                row.logits = next(logit_blocks(self.model, normed, row.n - 1, row.n))[1][0, -1]
            else:
                seen = {} if req.images is None else {"pixel_values": req.images[0], "image_grid_thw": req.images[1]}
                snapshots = {}
                for start, end in self._pieces(n, row.n, cached):
                    out = self.model.forward(ids[:, start:end], cache=row.own, logits_to_keep=1, lm_head=end == row.n,
                                             **seen)
                    if end < row.n:   # (a forward replaces the states, never writes into them: views will do)
                        snapshots[end] = _recurrent(row.own, 0)
                row.logits = out.logits[0, -1]
            row.stored, row.cached = row.n, n
            if cached:   # the end of the prompt: where the next turn of a chat starts (its reply, as the chat
                # template renders it back, may not encode to the tokens generated)
                self.prompt_cache.store(req.prompt, *self._kv(row), snapshots)
            if row.steps < 1:   # scored, nothing to generate (max_tokens 0)
                req.on_event(Event(prompt=row.prompt_tokens, finish_reason="length",
                                   usage={"prompt_tokens": row.n, "completion_tokens": 0, "cached_tokens": 0}))
                return None
            return row
        except NpqwenError as e:
            req.on_event(Event(error=str(e)))
            return None

    def _scored_prompt(self, req, ids, normed):
        """The prompt's tokens, each (but the first, which nothing predicts) with its log-probability
        under the model and the K most likely alternatives: what `python -m npqwen.score` reports for
        these ids, read off the prefill's own hidden states. Each token's text is what it adds to
        the prompt's text (special tokens included, as echo shows them)."""
        s = score_normed(self.model, normed, ids, top_k=req.prompt_logprobs)[0]
        stream, tokens = self.tok.stream(skip_special_tokens=False), []
        for p, i in enumerate(req.prompt):
            t = Token(int(i), stream.feed(i))
            if p:
                t.logprob = float(s.logprobs[p - 1])
                t.top_logprobs = [(int(a), float(b)) for a, b in zip(s.top_ids[p - 1], s.top_logprobs[p - 1])]
            tokens.append(t)
        tokens[-1].text += stream.flush()
        return tokens

    def _sample(self, row, draft=None):
        """Choose the row's next token, as `generate` does, and report it. draft: a drafted token, kept
        or replaced by rejection sampling (speculative.check_draft) -> whether it was kept."""
        req = row.req
        logits = row.logits[None] if row.bias is None else (row.logits + row.bias)[None]
        if req.constraint is not None:   # structured output: the grammar's tokens only
            logits = req.constraint.allow(logits[0])[None]
        scores = processed_logits(logits, req.settings, row.history[None, :row.n])  # what the token is drawn from
        if draft is None:
            tok, kept = int(draw(scores, req.settings, row.rng)[0]), False
        else:
            tok, kept = check_draft(scores[0], draft, req.settings, row.rng)
        if req.constraint is not None:
            req.constraint.advance(tok)
        row.history[row.n] = tok
        row.n, row.generated, row.last = row.n + 1, row.generated + 1, tok
        self.tokens_generated += 1
        reason = "stop" if tok in self.eos else "length" if row.generated >= row.steps else None
        piece = row.stream.feed(tok) + (row.stream.flush() if reason else "")
        text, stopped = row.stop.feed(piece, final=reason is not None)
        reason = "stop" if stopped else reason
        token = Token(tok, piece)
        if req.logprobs is not None:  # under the distribution it was drawn from, as generate reports them
            token.logprob, token.top_logprobs = step_logprobs(scores, np.array([tok]), req.logprobs)[0]
        event = Event(text=text, token=token, finish_reason=reason, prompt=row.prompt_tokens)
        row.prompt_tokens = None
        if reason:
            row.finished = True
            event.usage = {"prompt_tokens": len(req.prompt), "completion_tokens": row.generated,
                           "cached_tokens": row.cached}
        req.on_event(event)
        return kept

    def _pieces(self, start, end, cached):  # -> (start, end) of each forward of the prompt's prefill
        """Positions start..end in one forward, or, for a hybrid model whose states the prompt cache
        keeps, in pieces ending at each multiple of SNAPSHOT_EVERY (the states there are kept)."""
        cuts = range((start // SNAPSHOT_EVERY + 1) * SNAPSHOT_EVERY, end, SNAPSHOT_EVERY) \
            if cached and self.cfg.hybrid else ()
        bounds = [start, *cuts, end]
        return zip(bounds[:-1], bounds[1:])

    def _kv(self, row):  # -> the row's stored keys and values, [layers, K, n, hd] each (views), its other states
        cache, r = (row.own, 0) if row.own is not None else (self.cache, row.slot)
        end = cache.length if row.own is None else row.stored
        states = _recurrent(cache, r)
        if cache.index is not None:
            states["index"] = cache.index[:, r, end - row.stored:end]
            states["positions"] = cache.positions[:, r, end - row.stored:end]
        states["rope_delta"] = cache.rope_delta[r]   # (after images: vision/multimodal.py)
        return cache.k[:, r, :, end - row.stored:end], cache.v[:, r, :, end - row.stored:end], states

    def _regroup(self, stay, join):
        """Rebuild the batch cache for these rows, compactly, with room for the steps to come."""
        rows = stay + join
        if rows:
            room = max(1, min(ROOM, max(r.steps - r.generated for r in rows)))
            try:
                cache = _assemble(self.cfg, [self._kv(r) for r in rows], room)
            except NpqwenError as e:  # no memory for the newcomers: they fail, the others go on
                if not join or not stay:
                    raise
                for r in join:
                    r.req.on_event(Event(error=str(e), status=503))
                return self._regroup(stay, [])
        self.rows, self.cache = rows, cache if rows else None
        for slot, r in enumerate(rows):
            r.slot, r.own = slot, None

    def _decode(self):
        """One forward of every row's newest token against the batch cache."""
        ids = np.array([[r.last] for r in self.rows], np.int64)
        try:
            logits = self.model.forward(ids, cache=self.cache).logits[:, -1]
        except NpqwenError as e:  # NaN in the model's output: every row of this step fails
            for r in self.rows:
                r.req.on_event(Event(error=str(e), status=500))
            self.rows, self.cache = [], None
            return
        for r, row_logits in zip(self.rows, logits):
            r.logits, r.stored = row_logits, r.stored + 1

    def _speculate(self, row):
        """One speculative round for the only row (speculative.py): its newest token and up to k drafted
        ones in one forward; each draft kept or replaced in turn, as `_sample` would choose; the first
        replaced (or the one after every draft) is chosen now and run at the next step, the cache cut
        back to the tokens kept."""
        if row.drafter is None:
            row.drafter = self.drafter()
            row.drafter.start(len(row.history) + 65)
        room = min(row.steps - row.generated, self.cache.max_len - self.cache.length) - 1
        history = row.history[:row.n].tolist()
        drafts = row.drafter.propose(history, room)[:room] if room > 0 else []
        if not drafts:
            return self._decode()
        start = self.cache.length
        try:
            logits = self.model.forward(np.array([[row.last] + drafts], np.int64), cache=self.cache).logits[0]
        except NpqwenError as e:  # NaN in the model's output
            row.req.on_event(Event(error=str(e), status=500))
            self.rows, self.cache = [], None
            return
        chosen = 0
        for i in range(len(drafts) + 1):
            row.logits = logits[i]
            kept = self._sample(row, drafts[i] if i < len(drafts) else None)
            chosen += 1
            self.speculative["accepted"] += kept
            if not kept or row.finished or row.req.cancelled:
                break
        self.speculative["rounds"] += 1
        self.speculative["drafted"] += len(drafts)
        # the cache holds [last, drafts]: keep [last, the drafts kept]; the newest choice runs next step
        self.cache.length = start + chosen
        row.stored += chosen
        row.ahead = True
        row.drafter.accepted(row.history[:row.n].tolist(), self.cache.length)
