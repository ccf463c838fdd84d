"""Speculative decoding (npqwen/speculative.py): greedy output identical to plain decoding, sampling
keeping the model's distribution, and what it refuses."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import CHECKPOINTS, ROOT, golden_model
from npqwen import NpqwenError, Tokenizer
from npqwen.generation import generate
from npqwen.sampling import SamplingSettings, softmax
from npqwen.speculative import DraftModel, PromptLookup, check_draft

DEMO = os.path.join(CHECKPOINTS, "demo")
REPEATING = "Once upon a time, there was a little bird that wanted to fly over the mountain. Once upon a time, there was a"


def ids_of(model, tok, prompt, draft, n=48, **kw):
    stats = {}
    out = [t.id for t in generate(model, tok, prompt, n, draft=draft, stats=stats, **kw)]
    return out, stats


@pytest.mark.parametrize("penalty", [1.0, 1.3])
@pytest.mark.parametrize("draft", ["lookup 1", "lookup 3", "lookup 8", "model 4", "model 2"])
def test_greedy_is_plain_greedy(draft, penalty):
    model, tok = golden_model("demo"), Tokenizer(DEMO)
    settings = SamplingSettings(temperature=0, repetition_penalty=penalty)
    kind, n = draft.rsplit(" ", 1)
    drafter = PromptLookup(int(n)) if kind == "lookup" else DraftModel(golden_model("demo"), int(n))
    for prompt in (REPEATING, "学习如逆水行舟,不进则"):
        want, _ = ids_of(model, tok, prompt, None, settings=settings, eos_ids=[])
        got, stats = ids_of(model, tok, prompt, drafter, settings=settings, eos_ids=[])
        assert got == want, (draft, prompt)
        assert stats["rounds"] < len(want) or kind == "lookup"    # drafts were kept: fewer forwards than tokens
    if kind == "model" and penalty == 1.0:   # the model drafting for itself (greedy, no penalty): every draft kept
        assert stats["accepted"] == stats["drafted"] > 0


@pytest.mark.parametrize("case,draft_case", [("gqa3_bf16", "mha_f32_tied"), ("qwen3_moe_step2", "gqa3_bf16")])
def test_greedy_with_another_models_drafts(case, draft_case):
    """A draft model that often disagrees (another random model of the same vocabulary): still plain greedy."""
    model = golden_model(case)
    prompt = list(np.random.default_rng(1).integers(1, 320, 30))
    want, _ = ids_of(model, None, prompt, None, settings=SamplingSettings(temperature=0), eos_ids=[])
    got, stats = ids_of(model, None, prompt, DraftModel(golden_model(draft_case), 4),
                        settings=SamplingSettings(temperature=0), eos_ids=[])
    assert got == want and stats["accepted"] < stats["drafted"]


def test_stops_at_eos_and_at_max_new_tokens():
    model, tok = golden_model("demo"), Tokenizer(DEMO)
    eos = [int(i) for i in ids_of(model, tok, REPEATING, None, n=12, settings=SamplingSettings(temperature=0),
                                  eos_ids=[])[0][5:6]]
    for drafter in (None, PromptLookup(6), DraftModel(golden_model("demo"), 6)):
        out, _ = ids_of(model, tok, REPEATING, drafter, n=12, settings=SamplingSettings(temperature=0), eos_ids=eos)
        assert out[-1] == eos[0] and eos[0] not in out[:-1]
        out, _ = ids_of(model, tok, REPEATING, drafter, n=7, settings=SamplingSettings(temperature=0), eos_ids=[])
        assert len(out) == 7


def test_rejection_step_draws_from_the_models_distribution():
    """One checked draft: kept with probability p(d), else a draw from p without d. Over many draws
    the tokens follow p (a chi-square test at p > 1e-4, over fixed seeds)."""
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(12).astype(np.float32) * 1.5
    p = softmax(scores[None])[0].astype(np.float64)
    p /= p.sum()
    settings = SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    for d in (int(p.argmax()), int(p.argmin()), 5):
        draws = np.array([check_draft(scores, d, settings, rng)[0] for _ in range(20000)])
        counts = np.bincount(draws, minlength=12)
        expected = 20000 * p
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 40.0, (d, chi2)         # 11 degrees of freedom: P(chi2 > 40) < 1e-4


def test_sampling_keeps_the_distribution_of_a_token_after_drafts():
    """End to end, temperature 1: the token after a round of drafts is distributed as plain sampling's."""
    model, tok = golden_model("demo"), Tokenizer(DEMO)
    prompt = tok.encode(REPEATING)
    settings = SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    plain, spec = [], []
    for seed in range(300):
        plain.append([t.id for t in generate(model, None, prompt, 2, settings, seed=seed, eos_ids=[])][1])
        spec.append([t.id for t in generate(model, None, prompt, 2, settings, seed=10_000 + seed, eos_ids=[],
                                            draft=PromptLookup(4))][1])
    # both against the model's own distribution of the second token, computed exactly
    first = {}
    for t in plain + spec:
        first[t] = first.get(t, 0) + 1
    top = [t for t, _ in sorted(first.items(), key=lambda kv: -kv[1])[:3]]
    for t in top:   # the most frequent second tokens come out at the same rate (binomial, 5 sigma)
        a, b = plain.count(t) / 300, spec.count(t) / 300
        sd = np.sqrt(max(a * (1 - a), 1e-3) * 2 / 300)
        assert abs(a - b) < 5 * sd, (t, a, b)


def test_prompt_lookup_proposes_what_followed_the_latest_match():
    lookup = PromptLookup(3)
    assert lookup.propose([1, 2, 3, 4, 5, 9, 2, 3], 10) == [4, 5, 9]      # after the last "2 3"
    assert lookup.propose([7, 1, 2, 8, 1, 2, 6, 1, 2], 10) == [6, 1, 2]   # the latest of two matches
    assert lookup.propose([1, 2, 3], 10) == []                           # nothing earlier to match
    assert lookup.propose([5, 6, 5, 6, 5], 2) == [6, 5]                  # at most k


def test_what_speculative_decoding_refuses():
    model = golden_model("qwen3_5_text_irregular")
    with pytest.raises(NpqwenError, match="cut back"):
        list(generate(model, None, [1, 2, 3], 4, draft=PromptLookup(2)))
    with pytest.raises(NpqwenError, match="cut back"):
        DraftModel(model)
    with pytest.raises(NpqwenError, match="logprobs"):
        list(generate(golden_model("demo"), None, [1, 2, 3], 4, draft=PromptLookup(2), logprobs=2))
    with pytest.raises(NpqwenError, match="1 to 64"):
        PromptLookup(0)


def test_cli_prompt_lookup_and_draft_model():
    base = [sys.executable, "-m", "npqwen.generate", "--temperature", "0", "--max-new-tokens", "30", REPEATING]
    plain = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=300)
    for extra in (["--prompt-lookup", "4"], ["--draft-model", DEMO, "--draft-tokens", "3"]):
        r = subprocess.run(base + extra, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and r.stdout == plain.stdout, r.stderr
        assert "drafted tokens kept" in r.stderr
    r = subprocess.run(base + ["--prompt-lookup", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("error: --prompt-lookup")


# ---------------------------------------------------------------------------------------------
# the server's engine: a request decoding alone is decoded speculatively


def engine_run(engine, jobs):
    """Submit (prompt ids, max_new_tokens, settings, seed) jobs one after another, each once the one
    before has finished (so each decodes alone). -> the ids and the events' count of each."""
    import threading
    from npqwen.batching import Request
    out = []
    for ids, n, settings, seed in jobs:
        got, events, done = [], [], threading.Event()

        def on_event(e, got=got, events=events, done=done):
            events.append(e)
            if e.token is not None:
                got.append(e.token.id)
            if e.finish_reason or e.error:
                done.set()
        engine.submit(Request(ids, n, settings, on_event, seed=seed))
        assert done.wait(120)
        assert events[-1].error is None, events[-1].error
        out.append(got)
    return out


@pytest.mark.parametrize("draft", ["lookup 4", "model 3"])
def test_engine_alone_is_plain_greedy(draft):
    from npqwen.batching import Engine
    model, tok = golden_model("demo"), Tokenizer(DEMO)
    kind, n = draft.split()
    drafter = (lambda: PromptLookup(int(n))) if kind == "lookup" else (lambda: DraftModel(golden_model("demo"), int(n)))
    greedy = SamplingSettings(temperature=0, repetition_penalty=1.1)
    jobs = [(tok.encode(p), 40, greedy, None) for p in (REPEATING, "学习如逆水行舟,不进则", "import os\nimport sys\n")]
    engine = Engine(model, tok, [], max_batch=4, prompt_cache_bytes=0, drafter=drafter)
    try:
        got = engine_run(engine, jobs)
    finally:
        engine.close()
    spec = engine.speculative
    for (ids, n_new, s, _), ids_got in zip(jobs, got):
        assert ids_got == [t.id for t in generate(model, None, ids, n_new, s, eos_ids=[])]
    assert spec["accepted"] > 0 and spec["drafted"] >= spec["accepted"]   # tokens made without a forward each


def test_engine_batch_with_a_drafter_gets_what_each_gets_alone():
    """Requests that overlap: while several decode they share plain steps, alone they speculate;
    greedy, each gets plain greedy's tokens; the prompt cache is kept right through the cut-backs."""
    import threading
    from npqwen.batching import Engine, Request
    model, tok = golden_model("demo"), Tokenizer(DEMO)
    greedy = SamplingSettings(temperature=0)
    prompts = [REPEATING, "Once upon a time", REPEATING + " little", "The river"]
    lengths = [60, 12, 30, 8]
    engine = Engine(model, tok, [], max_batch=2, drafter=lambda: PromptLookup(5))
    got, done = [[] for _ in prompts], [threading.Event() for _ in prompts]
    try:
        for i, (p, n) in enumerate(zip(prompts, lengths)):
            def on_event(e, i=i):
                if e.token is not None:
                    got[i].append(e.token.id)
                if e.finish_reason or e.error:
                    assert e.error is None
                    done[i].set()
            engine.submit(Request(tok.encode(p), n, greedy, on_event))
        assert all(d.wait(120) for d in done)
        again = engine_run(engine, [(tok.encode(REPEATING), 60, greedy, None)])[0]   # from the prompt cache
    finally:
        engine.close()
    for p, n, ids in zip(prompts, lengths, got):
        assert ids == [t.id for t in generate(model, None, tok.encode(p), n, greedy, eos_ids=[])]
    assert again == got[0] and engine.speculative["accepted"] > 0


def test_engine_sampling_with_drafts_keeps_the_distribution():
    """Temperature 1 through the engine: the second token after a prompt that repeats itself comes out
    at plain sampling's rates (the first round's drafts checked by rejection sampling)."""
    from npqwen.batching import Engine
    model, tok = golden_model("demo"), Tokenizer(DEMO)
    prompt = tok.encode(REPEATING)
    settings = SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    engine = Engine(model, tok, [], max_batch=1, prompt_cache_bytes=0, drafter=lambda: PromptLookup(4))
    try:
        spec = [ids[1] for ids in engine_run(engine, [(prompt, 3, settings, 10_000 + s) for s in range(300)])]
    finally:
        engine.close()
    plain = [[t.id for t in generate(model, None, prompt, 2, settings, seed=s, eos_ids=[])][1] for s in range(300)]
    assert engine.speculative["drafted"] > 0
    counts = {}
    for t in plain + spec:
        counts[t] = counts.get(t, 0) + 1
    for t in [t for t, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:3]]:
        a, b = plain.count(t) / 300, spec.count(t) / 300
        assert abs(a - b) < 5 * np.sqrt(max(a * (1 - a), 1e-3) * 2 / 300), (t, a, b)


def test_server_with_prompt_lookup_answers_as_without():
    import json
    import urllib.request
    pytest.importorskip("uvicorn")
    from serve_inprocess import running_server
    body = json.dumps({"model": "demo", "prompt": REPEATING, "max_tokens": 40, "temperature": 0,
                       "logit_bias": {"4000": -100, "4002": -100}}).encode()

    def ask(url, path="/v1/completions", data=body):
        req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())
    with running_server(golden_model("demo"), DEMO) as (url, _):
        plain = ask(url)["choices"][0]["text"]
    with running_server(golden_model("demo"), DEMO, drafter=lambda: PromptLookup(4)) as (url, service):
        got = ask(url)
        health = ask(url, "/health", None)
    assert got["choices"][0]["text"] == plain and got["usage"]["completion_tokens"] == 40
    assert health["speculative"]["accepted"] > 0
    assert health["speculative"]["rounds"] < 40
