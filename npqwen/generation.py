"""Generation: prefill the prompt once into a KV cache, then one forward per new token.

    prompt ids --prefill--> cache + logits of the last position
    loop: sample a token from the logits -> yield it -> stop at eos / max tokens / context limit
          -> forward that one token against the cache -> logits

`generate` is the streaming API for one prompt (text or ids): the text of its tokens, joined, is
the decoded continuation, nothing held back at the end. `generate_batch` runs several prompts of
different lengths together, left-padded, giving each the tokens it would get alone. With
logprobs=K, each token also carries its log-probability under the distribution it was drawn from
(the logits after the sampling processors: transformers' output_scores) and the K most likely
tokens under that distribution.
"""

import numbers
from dataclasses import dataclass

import numpy as np

from .cache import KVCache
from .errors import NpqwenError
from .generation_config import eos_token_ids
from .logprobs import step_logprobs
from .model import available_memory
from .sampling import SamplingSettings, draw, processed_logits


@dataclass
class Token:
    id: int
    text: str = ""                    # the text this token completes ("" mid-character, or without tokenizer);
                                      # the last token's also carries what was held back, as decode renders it
    finish_reason: str | None = None  # on the last token: "eos", "length" (max_new_tokens) or "context"
    logprob: float | None = None      # with logprobs=K: log-probability of this id under the distribution it
                                      # was drawn from (after the sampling processors: transformers' output_scores)
    top_logprobs: list | None = None  # with logprobs=K: the K most likely [(id, logprob)] under it, most likely
                                      # first (fewer when sampling filters leave fewer tokens)


def context_limit(config) -> int:
    """How many positions the model is meant to see: max_position_embeddings, which for yarn is
    already the extended length; dynamic NTK RoPE stretches the trained length by its factor."""
    rope = config.rope_parameters
    if rope["rope_type"] == "dynamic":
        return int(config.max_position_embeddings * rope["factor"])
    return config.max_position_embeddings


def generate_steps(model, prompts, max_new_tokens, settings=None, seed=None, eos_ids=(), pad_id=0, max_context=None,
                   min_new_tokens=0, logprobs=None, images=None, constraint=None):
    """Yield, for each step, the next token of every prompt ([b] ints). Rows that produced an eos
    id continue with pad_id (as transformers does) until all are done. prompts: list of id lists.
    max_context: stop when a sequence reaches this many positions (default: context_limit).
    min_new_tokens: the eos ids cannot be chosen before this many tokens (transformers' option).
    logprobs=K (an int >= 0): yield (ids [b], [(logprob, [(id, logprob)] * <= K)] per row) instead,
    see logprobs.step_logprobs.
    images=(pixel_values, image_grid_thw): the images whose expanded <|image_pad|> tokens the prompts hold,
    row after row (vision/multimodal.py).
    constraint: a structured.Constraint (one prompt): only the tokens its grammar allows are drawn."""
    settings = (settings or SamplingSettings()).validate()
    cfg = model.config
    if not prompts or any(len(p) == 0 for p in prompts):
        raise NpqwenError("empty prompt: give at least one token")
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise NpqwenError(f"max_new_tokens must be an integer of at least 1, found {max_new_tokens!r}")
    if not _is_int(min_new_tokens) or min_new_tokens < 0:
        raise NpqwenError(f"min_new_tokens must be an integer of at least 0, found {min_new_tokens!r}")
    if logprobs is not None and (not _is_int(logprobs) or logprobs < 0):
        raise NpqwenError(f"logprobs must be an integer >= 0 (how many alternatives), found {logprobs!r}")
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise NpqwenError(f"the seed must be an integer >= 0 (or None for a random one), found {seed!r}")
    b, T = len(prompts), max(len(p) for p in prompts)
    limit = max_context or context_limit(cfg)
    if T >= limit:
        raise NpqwenError(f"the prompt is {T} tokens long; the model's context is {limit} tokens, "
                          f"leaving no room to generate")
    steps = min(max_new_tokens, limit - T)  # whatever max_new_tokens asks, nothing is sized past the context
    _check_cache_fits(cfg, b, T + steps)

    ids = np.full((b, T), pad_id, np.int64)
    mask = np.zeros((b, T), np.int64)
    for r, p in enumerate(prompts):
        ids[r, T - len(p):], mask[r, T - len(p):] = p, 1
    # For the repetition penalty, padding must not count as "seen": repeat each row's first token there.
    history = np.where(mask == 1, ids, ids[np.arange(b), T - mask.sum(1)][:, None])

    cache = KVCache(cfg, b, T + steps)
    rng = np.random.default_rng(seed)
    seen = {} if images is None else {"pixel_values": images[0], "image_grid_thw": images[1]}
    logits = model.forward(ids, mask if not mask.all() else None, cache=cache, logits_to_keep=1, **seen).logits[:, -1]
    done = np.zeros(b, bool)
    eos = np.asarray(list(eos_ids), np.int64)
    for step in range(steps):
        if step < min_new_tokens and eos.size:
            logits = logits.copy()
            logits[:, eos] = -np.inf
        if constraint is not None:
            logits = constraint.allow(logits[0])[None]
        scores = processed_logits(logits, settings, history)  # the distribution the token is drawn from
        nxt = np.where(done, pad_id, draw(scores, settings, rng))
        if constraint is not None:
            constraint.advance(nxt[0])
        yield nxt if logprobs is None else (nxt, step_logprobs(scores, nxt, logprobs))
        done |= np.isin(nxt, eos)
        if done.all() or step == steps - 1:
            return
        history = np.concatenate([history, nxt[:, None]], axis=1)
        logits = model.forward(nxt[:, None], cache=cache).logits[:, -1]


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_cache_fits(cfg, batch, positions):
    """The KV cache is allocated for every position generation may reach; refuse one larger than
    the memory available (a huge context with a huge max_new_tokens) instead of failing mid-way."""
    attention_layers = sum(kind != "linear_attention" for kind in cfg.layer_types)  # DeltaNet layers: no KV
    need = 2 * attention_layers * batch * cfg.num_key_value_heads * positions * cfg.head_dim * 4
    if need > available_memory():
        rows = f" x {batch} sequences" if batch > 1 else ""
        raise NpqwenError(f"the KV cache for {positions} positions{rows} needs {need / 1e9:,.1f} GB, more memory "
                          f"than is available: lower max_new_tokens")


def generate(model, tokenizer, prompt, max_new_tokens=256, settings=None, seed=None, eos_ids=None, max_context=None,
             logprobs=None, images=None, constraint=None, draft=None, stats=None):
    """Stream the continuation of one prompt (a string, or a list of token ids) as Token objects.
    With a tokenizer, the texts of the tokens joined are tokenizer.decode(ids, skip_special_tokens=True)
    of the new ids, whatever stopped generation. logprobs=K: each Token carries its logprob and
    the K most likely alternatives (top_logprobs). draft: a speculative.PromptLookup or DraftModel,
    to decode speculatively (stats, a dict, then receives its rounds, drafted and accepted counts)."""
    if tokenizer is not None:
        tokenizer.check_fits(model.config.vocab_size)
    if isinstance(prompt, str):
        if tokenizer is None:
            raise NpqwenError("a text prompt needs a tokenizer; pass token ids to run without one")
        ids = tokenizer.encode(prompt)
        if not ids:
            raise NpqwenError("empty prompt: give some text")
    else:
        ids = [int(i) for i in prompt]
    if eos_ids is None:
        eos_ids = eos_token_ids(model.config)
    stream = tokenizer.stream() if tokenizer is not None else None
    limit = max_context or context_limit(model.config)
    n = 0
    if draft is not None:
        steps = _speculative(model, ids, max_new_tokens, settings, seed, eos_ids, limit, draft, stats,
                             logprobs, images, constraint)
    else:
        steps = generate_steps(model, [ids], max_new_tokens, settings, seed, eos_ids, max_context=limit,
                               logprobs=logprobs, images=images, constraint=constraint)
    for step in steps:
        lp = top = None
        if logprobs is not None:
            step, [(lp, top)] = step
        tok = int(step[0])
        n += 1
        reason = ("eos" if tok in eos_ids else "length" if n == max_new_tokens
                  else "context" if len(ids) + n >= limit else None)
        text = ""
        if stream is not None:  # the eos id too, as transformers' streamer gets it (a special token decodes to "")
            text = stream.feed(tok) + (stream.flush() if reason else "")
        yield Token(tok, text, reason, lp, top)


def _speculative(model, ids, max_new_tokens, settings, seed, eos_ids, limit, draft, stats, logprobs, images, constraint):
    """generate's steps, drafted and checked in rounds (speculative.py), as [1] arrays."""
    from .speculative import speculative_steps
    if logprobs is not None or images is not None or constraint is not None:
        raise NpqwenError("speculative decoding (prompt lookup, a draft model) does not combine with logprobs, "
                          "images or a JSON schema")
    settings = (settings or SamplingSettings()).validate()
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise NpqwenError(f"max_new_tokens must be an integer of at least 1, found {max_new_tokens!r}")
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise NpqwenError(f"the seed must be an integer >= 0 (or None for a random one), found {seed!r}")
    if len(ids) >= limit:
        raise NpqwenError(f"the prompt is {len(ids)} tokens long; the model's context is {limit} tokens, "
                          f"leaving no room to generate")
    steps = min(max_new_tokens, limit - len(ids))
    _check_cache_fits(model.config, 1, len(ids) + steps)
    eos = np.asarray(list(eos_ids), np.int64)
    for token in speculative_steps(model, ids, steps, settings, np.random.default_rng(seed), eos, draft, stats=stats):
        yield np.array([token])


def generate_batch(model, prompts, max_new_tokens, settings=None, seed=None, eos_ids=None, pad_id=0,
                   max_context=None, min_new_tokens=0):
    """Generate for several id prompts at once. -> one list of new ids per prompt, each ending at
    (and including) its first eos id."""
    if eos_ids is None:
        eos_ids = eos_token_ids(model.config)
    out = [[] for _ in prompts]
    done = [False] * len(prompts)
    for step in generate_steps(model, prompts, max_new_tokens, settings, seed, eos_ids, pad_id, max_context,
                               min_new_tokens):
        for r, tok in enumerate(step):
            if not done[r]:
                out[r].append(int(tok))
                done[r] = int(tok) in eos_ids
    return out
