"""The prompt cache of the hybrid models (Qwen3.5, Qwen3-Next, Qwen3.8-Flash-Next), whose DeltaNet
(and PLE) layers carry recurrent states that cannot be rewound: snapshots of them at the end of each
prompt and every SNAPSHOT_EVERY positions, reused only at exactly their position, each answer the
one the request gets alone; and rows of these models decoded together."""

import threading

import numpy as np
import pytest

from conftest import golden_model
from near_ties import MARGIN, greedy_margin
from npqwen import SamplingSettings, Tokenizer, generate
from npqwen import batching
from npqwen.batching import Engine, PromptCache, Request, _state_bytes
from npqwen.deltanet import DeltaState
from test_batching import DEMO, engine_ids

HYBRID = ["qwen3_5_text_interval", "qwen3_5_released", "qwen3_next", "qwen4_exp_text"]


def tokenizer():
    return Tokenizer(DEMO)   # its byte-level ids below 256 decode the golden models' small vocabulary


def random_ids(rng, n):   # (from 8: Qwen3.8-Flash-Next's eos, 5, would reset its n-gram context)
    return rng.integers(8, 256, n).tolist()


def start(model, **options):
    """An Engine for `ask`: its `stepped` event, cleared as a request finishes and set after every
    step, tells when the step that finished the request is over (and its cache contents stored)."""
    stepped = threading.Event()
    engine = Engine(model, tokenizer(), [], after_step=stepped.set, **options)
    engine.stepped = stepped
    return engine


def ask(engine, ids, n):
    """One greedy request of n tokens (no eos) -> (its ids, their logprobs, its usage), once the
    engine's step that finished it is over."""
    events, done = [], threading.Event()

    def on_event(e):
        events.append(e)
        if e.finish_reason or e.error:
            engine.stepped.clear()   # (in the engine thread, before this step's after_step)
            done.set()
    engine.submit(Request(ids, n, SamplingSettings(), on_event, logprobs=1))
    assert done.wait(60) and engine.stepped.wait(60)
    assert events[-1].error is None, events[-1].error
    tokens = [e.token for e in events if e.token is not None]
    return [t.id for t in tokens], [t.logprob for t in tokens], events[-1].usage


def check_alone(model, ids, n, got):
    """The engine's answer is the request's alone: the same greedy tokens (no step near a tie:
    near_ties.py), log-probabilities within float32 rounding (a prefill split in pieces, or after
    a snapshot, sums in another order)."""
    assert greedy_margin(model, None, ids, n) > MARGIN
    want = list(generate(model, None, ids, n, eos_ids=[], logprobs=1))
    assert got[0] == [t.id for t in want]
    np.testing.assert_allclose(got[1], [t.logprob for t in want], atol=1e-4)


@pytest.mark.parametrize("case", HYBRID)
def test_each_turn_of_a_chat_prefills_only_its_new_tokens(case):
    """Turn k starts from the snapshot at the end of turn k - 1's prompt when the reply comes back
    otherwise than it was generated (a chat template dropping the reasoning, say), and from the end
    of the finished sequence when it comes back as generated; the answers are those of the request
    alone and of an engine without the prompt cache."""
    model, rng = golden_model(case), np.random.default_rng(1)
    engine, uncached = start(model), start(model, prompt_cache_bytes=0)
    prompt, expected, n = random_ids(rng, 40), 0, 6
    try:
        for turn in range(5):
            got = ask(engine, prompt, n)
            assert got[2]["cached_tokens"] == expected and got[2]["prompt_tokens"] == len(prompt)
            check_alone(model, prompt, n, got)
            plain = ask(uncached, prompt, n)
            assert plain[0] == got[0] and plain[2]["cached_tokens"] == 0
            reply = got[0] if turn % 2 else [8 + (got[0][0] - 7) % 248] + got[0][1:]   # (another first token)
            expected = len(prompt) + (n - 1 if turn % 2 else 0)   # (the last token sampled is never run)
            prompt = prompt + reply + random_ids(rng, 30)
    finally:
        engine.close()
        uncached.close()


@pytest.mark.parametrize("case", ["qwen3_5_released", "qwen4_exp_text"])
def test_a_long_prompts_snapshots_serve_prompts_that_share_its_first_part(case, monkeypatch):
    """A prompt prefilled in pieces of SNAPSHOT_EVERY (64 here) keeps the states at each piece's end:
    a prompt sharing only its first 200 positions starts at 192; one that differs at position 100
    starts at 64, never from a snapshot past the difference."""
    monkeypatch.setattr(batching, "SNAPSHOT_EVERY", 64)
    model, rng = golden_model(case), np.random.default_rng(2)
    long = random_ids(rng, 300)
    shares = long[:200] + random_ids(rng, 50)
    differs = long[:100] + [8 + (long[100] - 7) % 248] + long[101:] + random_ids(rng, 10)
    engine = start(model)
    try:
        for ids, cached in ((long, 0), (shares, 192), (differs, 64)):
            got = ask(engine, ids, 4)
            assert got[2]["cached_tokens"] == cached
            check_alone(model, ids, 4, got)
            if ids is long:   # the pieces' ends, the prompt's end, the finished sequence's end
                assert sorted(engine.prompt_cache.entries[-1].snapshots) == [64, 128, 192, 256, 300, 303]
    finally:
        engine.close()


@pytest.mark.parametrize("case", ["qwen3_5_text_interval", "qwen4_exp_text"])
def test_hybrid_rows_of_different_lengths_decoded_together_get_what_they_get_alone(case):
    """Six requests at once, all in one batch, their recurrent states side by side; the second and
    fifth extend the first's prompt and start from its snapshot, taken a moment before."""
    model, rng = golden_model(case), np.random.default_rng(3)
    first = random_ids(rng, 40)
    prompts = [first, first + random_ids(rng, 30), random_ids(rng, 3), random_ids(rng, 130),
               first + random_ids(rng, 7), random_ids(rng, 9)]
    seen = engine_ids(Engine(model, tokenizer(), [], max_batch=6), [(ids, 10, None) for ids in prompts])
    for ids, got in zip(prompts, seen):
        assert greedy_margin(model, None, ids, 10) > MARGIN
        assert got == [t.id for t in generate(model, None, ids, 10, eos_ids=[])]


def state(x):   # one DeltaNet layer's state, filled with x
    return {0: DeltaState(np.full((3, 8), x, np.float32), np.full((2, 4, 4), x, np.float32))}


def test_snapshots_are_reused_only_at_their_positions_and_count_in_the_budget():
    k = np.zeros((2, 1, 10, 4), np.float32)   # 320 bytes of keys, 320 of values
    size = 2 * k.nbytes + 2 * 4 * (3 * 8 + 2 * 4 * 4)   # k, v and two snapshots of 224 bytes
    cache = PromptCache(budget_bytes=3 * size, exact=True)
    ids = list(range(10))
    snap = state(1.0)
    cache.store(ids, k, k, state(2.0), snapshots={4: snap})
    snap[0].S[:] = 9   # (stored as a copy)
    assert cache.bytes == size
    n, _, _, states = cache.lookup(ids + [99])
    assert n == 10 and (states[0].S == 2).all()
    n, kn, _, states = cache.lookup(ids[:7] + [99])
    assert n == 4 and kn.shape[2] == 4 and (states[0].S == 1).all()   # 7 shared, but the state is at 4
    assert cache.lookup(ids)[0] == 4                       # 10 would leave nothing to prefill
    assert cache.lookup(ids[:3] + [99, 99])[0] == 0
    assert cache.lookup([0, 1, 2, 99] + ids[4:] + [99])[0] == 0   # differs inside both snapshots
    cache.store(ids + [10, 11], np.zeros((2, 1, 12, 4), np.float32), np.zeros((2, 1, 12, 4), np.float32), state(3.0))
    cache.store(ids[:8], k[:, :, :8], k[:, :, :8], state(4.0))   # a prefix of what is held: only its snapshot
    assert len(cache.entries) == 1 and sorted(cache.entries[0].snapshots) == [4, 8, 10, 12]
    assert cache.lookup(ids[:9] + [99])[0] == 8 and cache.lookup(ids + [10, 11, 99])[0] == 12


def test_past_the_budget_the_least_recently_used_snapshots_go_first():
    """A chat is one entry, growing by a turn's keys and a snapshot or two each turn: past the budget
    its oldest snapshots go, never the latest (which the next turn reuses); an entry whose last
    snapshot goes keeps only the keys before the one left, one whose only snapshot goes, nothing."""
    per_position = 2 * 2 * 4 * 4   # k and v [2 layers, 1 head, n, 4] in float32
    snapshot = _state_bytes(state(0.0))
    cache = PromptCache(budget_bytes=90 * per_position + 4 * snapshot, exact=True)   # (90: the last turn's keys)
    ids = []
    for turn in range(10):   # each turn: the prompt (snapshot at its end), then the finished sequence
        ids = ids + list(range(1000 * turn, 1000 * turn + 8))
        kv = np.zeros((2, 1, len(ids), 4), np.float32)
        cache.store(ids, kv, kv, state(turn))
        ids = ids + [7]
        kv = np.zeros((2, 1, len(ids), 4), np.float32)
        cache.store(ids, kv, kv, state(turn + 0.5))
        assert cache.bytes <= cache.budget and len(cache.entries) == 1
        n, _, _, states = cache.lookup(ids + [99])
        assert n == len(ids) and (states[0].S == turn + 0.5).all()
    assert sorted(cache.entries[0].snapshots) == [80, 81, 89, 90]   # the last two turns'

    cache = PromptCache(budget_bytes=10 * per_position + 2 * snapshot, exact=True)
    kv = np.zeros((2, 1, 6, 4), np.float32)
    cache.store(range(6), kv, kv, state(1.0), {3: state(0.0)})
    cache.lookup([0, 1, 2, 99])                            # snapshot 3 used again: 6 is now the older
    cache.store(range(10, 14), kv[:, :, :4], kv[:, :, :4], state(2.0))
    first = next(e for e in cache.entries if e.ids[0] == 0)
    assert sorted(first.snapshots) == [3] and len(first.ids) == first.k.shape[2] == 3
    kv = np.zeros((2, 1, 10, 4), np.float32)
    cache.store(range(20, 30), kv, kv, state(3.0))         # room for it alone: the others go whole, oldest first
    assert [int(e.ids[0]) for e in cache.entries] == [20] and cache.bytes == 10 * per_position + snapshot


def test_a_hybrid_chat_through_the_live_server_reuses_its_last_prompt(tmp_path):
    """The official client against a live server on a Qwen3.5 golden model (the demo's tokenizer: its
    ids below 256 decode the model's small vocabulary): the second request's prompt begins with the
    first's, and usage says those positions came from the cache; the answers are the ones a server
    without the cache gives."""
    openai = pytest.importorskip("openai")
    import os
    import shutil
    from serve_inprocess import running_server
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(DEMO, name), tmp_path / name)
    model = golden_model("qwen3_5_text_interval")
    rng = np.random.default_rng(7)
    first = random_ids(rng, 150)
    second = first + random_ids(rng, 40)
    for ids in (first, second):   # (no greedy step near a tie: the cached prefill sums in another order)
        assert greedy_margin(model, None, ids, 8) > MARGIN
    turns = {}
    for budget in (1024, 0):
        with running_server(model, str(tmp_path), model_id="m", prompt_cache_mb=budget) as (url, _):
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
            a = client.completions.create(model="m", prompt=first, max_tokens=8, temperature=0)
            b = client.completions.create(model="m", prompt=second, max_tokens=8, temperature=0)
            turns[budget] = (a.choices[0].text, b.choices[0].text, b.usage.prompt_tokens_details.cached_tokens)
    assert turns[1024][2] == len(first) and turns[0][2] == 0
    assert turns[1024][:2] == turns[0][:2]


@pytest.mark.parametrize("case", ["gqa3_bf16", "qwen3_moe_step2", "qwen3_5_text_irregular", "qwen3_next"])
@pytest.mark.parametrize("piece", [64, 40])
def test_a_long_prompt_prefilled_in_pieces_is_the_prompt_at_once(case, piece, monkeypatch):
    """Model._prefill_in_pieces: a prompt longer than PREFILL_PIECE goes through the layers a piece at
    a time into the cache (attention reading the earlier pieces' keys, DeltaNet carrying its state);
    its last logits and every decode step after it equal the whole prompt's in one forward."""
    from npqwen import model as model_module
    from npqwen.cache import KVCache
    m = golden_model(case)
    ids = np.random.default_rng(3).integers(1, 320, (1, 150))
    whole = KVCache(m.config, 1, 160)
    want = m.forward(ids, cache=whole, logits_to_keep=1).logits     # (150 <= PREFILL_PIECE: one forward)
    calls = []
    monkeypatch.setattr(model_module, "PREFILL_PIECE", piece)
    forward = m._forward
    monkeypatch.setattr(m, "_forward", lambda ids, *a, **k: calls.append(ids.shape[1]) or forward(ids, *a, **k))
    pieces = KVCache(m.config, 1, 160)
    got = m.forward(ids, cache=pieces, logits_to_keep=1).logits
    assert calls == [piece] * (149 // piece) + [150 - piece * (149 // piece)]
    assert pieces.length == whole.length == 150
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    token = np.array([[int(want[0, -1].argmax())]])
    for _ in range(4):   # the caches hold the same keys, values and states
        a = m.forward(token, cache=whole).logits
        b = m.forward(token, cache=pieces).logits
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())
        token = np.array([[int(a[0, -1].argmax())]])
