"""The logits processors, against small hand-computed cases (values worked out from transformers'
definitions) and properties."""

import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from npqwen.sampling import SamplingSettings, min_p, repetition_penalty, sample, temperature, top_k, top_p
from npqwen.primitives import softmax

logit_rows = arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(2, 40)),
                    elements=st.floats(-20, 20, width=32), unique=False)


def test_repetition_penalty_hand_case():
    logits = np.array([[2.0, -2.0, 1.0, 0.5]], np.float32)
    out = repetition_penalty(logits, np.array([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.5]]  # positive divided, negative multiplied, once each


def test_top_k_hand_case():
    out = top_k(np.array([[1.0, 5.0, 3.0, 4.0]], np.float32), 2)
    assert np.isneginf(out[0, [0, 2]]).all() and out[0, 1] == 5 and out[0, 3] == 4


def test_top_p_hand_case():
    # probabilities 0.5, 0.3, 0.15, 0.05: top-p 0.8 keeps 0.5 and 0.3 (cumulative from the bottom:
    # 0.05, 0.20 <= 0.2 removed; 0.5 > 0.2 kept).
    logits = np.log(np.array([[0.15, 0.5, 0.05, 0.3]], np.float32))
    out = top_p(logits, 0.8)
    assert np.isfinite(out[0]).tolist() == [False, True, False, True]


def test_min_p_hand_case():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    out = min_p(logits, 0.2)  # threshold 0.2 * 0.5 = 0.1
    assert np.isfinite(out[0]).tolist() == [True, True, True, False]


def test_temperature_sharpens_and_flattens():
    logits = np.array([[1.0, 2.0, 3.0]], np.float32)
    assert np.allclose(temperature(logits, 0.5), logits * 2)
    assert softmax(temperature(logits, 0.5))[0, 2] > softmax(logits)[0, 2] > softmax(temperature(logits, 2))[0, 2]


@settings(max_examples=60, deadline=None)
@given(logit_rows, st.floats(0.01, 1.0))
def test_top_p_never_drops_the_most_likely_token(logits, p):
    out = top_p(logits, p)
    kept = np.isfinite(out)
    # (with ties for the top, one of the tied tokens is kept)
    assert (kept & (logits == logits.max(-1, keepdims=True))).any(-1).all()
    probs = softmax(logits)
    # what it keeps reaches probability p (up to float error), and it never keeps a less likely
    # token while dropping a more likely one
    assert (np.where(kept, probs, 0).sum(-1) >= p - 1e-5).all()
    for r in range(len(logits)):
        if (~kept[r]).any():
            assert logits[r][kept[r]].min() >= logits[r][~kept[r]].max()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(2, 40), st.data())
def test_top_k_keeps_exactly_k_distinct_logits(b, v, data):
    logits = np.stack([np.random.default_rng(data.draw(st.integers(0, 10**6))).permutation(v).astype(np.float32)
                       for _ in range(b)])
    k = data.draw(st.integers(1, v))
    kept = np.isfinite(top_k(logits, k))
    assert (kept.sum(-1) == k).all()
    assert (logits[kept].reshape(b, k).min(-1) > np.where(kept, -np.inf, logits).max(-1)).all()


@settings(max_examples=60, deadline=None)
@given(logit_rows, st.floats(0.0, 1.0))
def test_min_p_keeps_the_top_token_and_only_likely_ones(logits, p):
    kept = np.isfinite(min_p(logits, p))
    probs = softmax(logits)
    assert kept[np.arange(len(logits)), probs.argmax(-1)].all()
    assert (probs[~kept] < p * probs.max(-1, keepdims=True).repeat(logits.shape[1], 1)[~kept] + 1e-7).all()


def test_greedy_is_argmax_and_sampling_follows_the_distribution():
    logits = np.log(np.array([[0.7, 0.2, 0.1]], np.float32))
    rng = np.random.default_rng(0)
    assert sample(logits, SamplingSettings(temperature=0.0), rng)[0] == 0
    draws = [sample(logits, SamplingSettings(temperature=1.0), rng)[0] for _ in range(4000)]
    freq = np.bincount(draws, minlength=3) / len(draws)
    assert np.allclose(freq, [0.7, 0.2, 0.1], atol=0.03)
    # top-k 1 and a tiny top-p both reduce sampling to greedy
    assert {sample(logits, SamplingSettings(temperature=1.0, top_k=1), rng)[0] for _ in range(50)} == {0}
    assert {sample(logits, SamplingSettings(temperature=1.0, top_p=0.01), rng)[0] for _ in range(50)} == {0}


def test_settings_validation():
    import pytest
    from npqwen.errors import NpqwenError
    for bad in (dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.01), dict(min_p=-0.1), dict(top_k=-1),
                dict(repetition_penalty=0.0), dict(temperature=float("nan"))):
        with pytest.raises(NpqwenError):
            SamplingSettings(**bad).validate()
