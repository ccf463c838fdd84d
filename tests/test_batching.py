"""The engine behind the server: requests that start at different times decoded together, each
getting the tokens it gets alone; stop strings; the prompt cache."""

import os
import threading

import numpy as np
from hypothesis import given, settings, strategies as st

from cli_inprocess import load_model_once
from conftest import CHECKPOINTS
from npqwen import SamplingSettings, Tokenizer, generate
from near_ties import MARGIN, greedy_margin
from npqwen.batching import Engine, PromptCache, Request, StopText

DEMO = os.path.join(CHECKPOINTS, "demo")
EOS = [4002, 4000]


def collect(engine, jobs, gaps=None):
    """Submit (prompt ids, max_new_tokens, settings, seed) jobs, job i after job i-1 has produced
    gaps[i] tokens (requests joining a running batch). -> one (text, finish_reason, usage, error) each."""
    out = [{"text": [], "events": 0, "done": threading.Event()} for _ in jobs]
    progressed = [threading.Event() for _ in jobs]

    def on_event(i):
        def f(e):
            o = out[i]
            o["text"].append(e.text)
            o["events"] += 1
            if gaps and i + 1 < len(jobs) and o["events"] >= gaps[i + 1]:
                progressed[i].set()
            if e.finish_reason or e.error:
                o.update(reason=e.finish_reason, usage=e.usage, error=e.error)
                progressed[i].set()
                o["done"].set()
        return f

    for i, (ids, n, s, seed) in enumerate(jobs):
        if gaps and i:
            assert progressed[i - 1].wait(60)
        engine.submit(Request(ids, n, s or SamplingSettings(), on_event(i), seed=seed))
    for o in out:
        assert o["done"].wait(60)
    return [("".join(o["text"]), o.get("reason"), o.get("usage"), o.get("error")) for o in out]


def engine_ids(engine, jobs):
    """Submit greedy (prompt ids, max_new_tokens, seed) jobs all at once; -> the ids each got. Closes the engine."""
    ids_seen, out = [[] for _ in jobs], [threading.Event() for _ in jobs]

    def on_event(i):
        def f(e):
            if e.token is not None:
                ids_seen[i].append(e.token.id)
            if e.finish_reason or e.error:
                out[i].set()
        return f
    try:
        for i, (ids, n, seed) in enumerate(jobs):
            engine.submit(Request(ids, n, SamplingSettings(), on_event(i), seed=seed))
        assert all(o.wait(120) for o in out)
    finally:
        engine.close()
    return ids_seen


def alone(ids, n, s=None, seed=None):
    return "".join(t.text for t in generate(load_model_once(DEMO), Tokenizer(DEMO), ids, n, s, seed, EOS))


def test_requests_joining_a_running_batch_get_what_they_get_alone():
    tok = Tokenizer(DEMO)
    prompts = ["Once upon a time", "The river", "学习如逆水行舟,不进则", "Beautiful is better than", "import os\n",
               "Hello, my name is", "In the beginning", "The cat sat"]
    sampled = SamplingSettings(temperature=0.9, top_p=0.9, repetition_penalty=1.2)
    jobs = [(tok.encode(p), 30, sampled if i % 3 == 0 else None, i) for i, p in enumerate(prompts)]
    engine = Engine(load_model_once(DEMO), tok, EOS, max_batch=3, prompt_cache_bytes=0)
    try:
        got = collect(engine, jobs, gaps=[0, 3, 1, 5, 2, 7, 1, 4])
    finally:
        engine.close()
    model = load_model_once(DEMO)
    for (ids, n, s, seed), (text, reason, usage, error) in zip(jobs, got):
        if s is None:   # greedy: the same tokens alone, as no step is near a tie (near_ties.py)
            assert greedy_margin(model, tok, ids, n, EOS) > MARGIN
        assert error is None and text == alone(ids, n, s, seed)
        assert usage["prompt_tokens"] == len(ids) and usage["cached_tokens"] == 0
        assert reason == ("length" if usage["completion_tokens"] == n else "stop")


def test_prompt_cache_prefills_only_the_new_part_and_changes_nothing():
    tok = Tokenizer(DEMO)
    model = load_model_once(DEMO)
    first = tok.encode_chat([{"role": "user", "content": "Tell me a story."}])
    engine = Engine(model, tok, EOS, max_batch=2)
    try:
        (text, _, usage, _), = collect(engine, [(first, 20, None, None)])
        follow = tok.encode_chat([{"role": "user", "content": "Tell me a story."},
                                  {"role": "assistant", "content": text}, {"role": "user", "content": "More!"}])
        (text2, _, usage2, _), = collect(engine, [(follow, 20, None, None)])
        (text3, _, usage3, _), = collect(engine, [(follow, 20, None, None)])     # the same prompt again
    finally:
        engine.close()
    assert len(first) <= usage2["cached_tokens"] < len(follow)
    assert usage3["cached_tokens"] == len(follow) - 1          # all but the last position, whose logits are needed
    assert text2 == text3 == alone(follow, 20)


def test_prompt_cache_budget_and_superseded_entries():
    k = np.zeros((2, 1, 10, 4), np.float32)   # [layers, K, n, hd]: 320 bytes per 10 positions, k and v
    cache = PromptCache(budget_bytes=3 * 2 * k.nbytes)
    cache.store(list(range(10)), k, k)
    assert cache.lookup(list(range(5)) + [99]) [0] == 5
    assert cache.lookup([7, 8])[0] == 0
    cache.store(list(range(10)) + [10, 11], np.zeros((2, 1, 12, 4), np.float32), np.zeros((2, 1, 12, 4), np.float32))
    assert len(cache.entries) == 1                            # the longer sequence supersedes its prefix
    for start in (100, 200, 300):
        cache.store(list(range(start, start + 10)), k, k)
    assert cache.bytes <= cache.budget and cache.lookup(list(range(12)))[0] == 0   # least recently used: gone
    assert cache.lookup(list(range(300, 310)))[0] == 9


@settings(max_examples=300, deadline=None)
@given(st.text("ab\n", max_size=30), st.lists(st.integers(1, 5), max_size=12),
       st.lists(st.text("ab\n", min_size=1, max_size=4), max_size=3))
def test_stop_strings_cut_the_text_before_the_first_one_however_it_is_split(text, cuts, stops):
    pieces, at = [], 0
    for c in cuts:
        pieces.append(text[at:at + c])
        at += c
    pieces.append(text[at:])
    s, out, stopped = StopText(stops), [], False
    for i, p in enumerate(pieces):
        emitted, stopped = s.feed(p, final=i == len(pieces) - 1)
        out.append(emitted)
        if stopped:
            break
    found = [(i + len(x), i) for x in stops if (i := text.find(x)) >= 0]   # the first to be complete
    assert "".join(out) == (text[:min(found)[1]] if found else text)
    assert stopped == bool(found)


def test_failures_reach_the_request_and_the_engine_goes_on():
    tok = Tokenizer(DEMO)
    model = load_model_once(DEMO)
    engine = Engine(model, tok, EOS, max_batch=2)
    try:
        (_, _, _, error), = collect(engine, [(list(range(1, 600)), 5, None, None)])   # longer than the context
        assert "context is 512 tokens" in error
        (text, reason, _, error), = collect(engine, [(tok.encode("The river"), 6, None, None)])
        assert error is None and text == alone(tok.encode("The river"), 6)
    finally:
        engine.close()


def test_hybrid_rows_joining_a_running_batch_get_what_they_get_alone():
    """A hybrid model's rows carry their DeltaNet states (no positions, so no padding) into the batch."""
    from conftest import golden_cases, golden_meta
    case = next(c for c in golden_cases() if golden_meta(c).get("model_type", "").startswith("qwen3_5"))
    model = load_model_once(os.path.join(CHECKPOINTS, case))
    tok = Tokenizer(DEMO)  # its byte-level ids below 256 decode the hybrid model's small vocabulary
    rng = np.random.default_rng(0)
    jobs = [(rng.integers(1, 256, n).tolist(), 12, None, i) for i, n in enumerate([9, 70, 3, 30, 140])]
    ids_seen = engine_ids(Engine(model, tok, [], max_batch=3), [(ids, n, seed) for ids, n, _, seed in jobs])
    for (ids, n, _, _), got in zip(jobs, ids_seen):
        assert greedy_margin(model, None, ids, n) > MARGIN   # (near_ties.py)
        assert got == [t.id for t in generate(model, None, ids, n, eos_ids=[])]
