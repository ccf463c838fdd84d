"""Gated DeltaNet's pieces: the chunked delta rule against the token-by-token recurrence (the
definition), against the recurrence written out in float64, the causal convolution and the state
carried between calls, and the fused Qwen3-Next projection layout."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from npqwen.deltanet import (causal_conv, delta_rule, delta_rule_chunked, fused_ba_order, fused_qkvz_order,
                             l2_normalise)


def inputs(seed, b, H, t, dk, dv):
    rng = np.random.default_rng(seed)
    q = l2_normalise(rng.standard_normal((b, H, t, dk)).astype(np.float32)) * np.float32(dk ** -0.5)
    k = l2_normalise(rng.standard_normal((b, H, t, dk)).astype(np.float32))
    v = rng.standard_normal((b, H, t, dv)).astype(np.float32)
    g = -rng.exponential(0.3, (b, H, t)).astype(np.float32)
    beta = rng.uniform(0, 1, (b, H, t)).astype(np.float32)
    S = rng.standard_normal((b, H, dk, dv)).astype(np.float32)
    return q, k, v, g, beta, S


def by_hand(q, k, v, g, beta, S):
    """The recurrence in float64, one head and one token at a time, straight from the equations."""
    q, k, v, g, beta, S = (a.astype(np.float64) for a in (q, k, v, g, beta, S))
    out = np.zeros(v.shape)
    for bi in range(q.shape[0]):
        for h in range(q.shape[1]):
            s = S[bi, h].copy()
            for i in range(q.shape[2]):
                s = np.exp(g[bi, h, i]) * s
                err = v[bi, h, i] - s.T @ k[bi, h, i]
                s = s + beta[bi, h, i] * np.outer(k[bi, h, i], err)
                out[bi, h, i] = s.T @ q[bi, h, i]
            S[bi, h] = s
    return out, S


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 2), H=st.integers(1, 3), t=st.integers(1, 150),
       dk=st.sampled_from([4, 8, 16]), dv=st.sampled_from([4, 8]), chunk=st.sampled_from([8, 16, 64]))
def test_chunked_equals_the_recurrence(seed, b, H, t, dk, dv, chunk):
    args = inputs(seed, b, H, t, dk, dv)
    want, want_S = by_hand(*args)
    for out, S in (delta_rule(*args), delta_rule_chunked(*args, chunk=chunk)):
        assert out.dtype == np.float32 and out.shape == want.shape
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))
        np.testing.assert_allclose(S, want_S, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want_S).max()))


def test_the_state_carries_a_sequence_across_calls():
    q, k, v, g, beta, S = inputs(1, 1, 2, 100, 8, 4)
    whole, S_whole = delta_rule_chunked(q, k, v, g, beta, S)
    first, S1 = delta_rule_chunked(q[:, :, :70], k[:, :, :70], v[:, :, :70], g[:, :, :70], beta[:, :, :70], S)
    rest, S2 = delta_rule(q[:, :, 70:], k[:, :, 70:], v[:, :, 70:], g[:, :, 70:], beta[:, :, 70:], S1)
    np.testing.assert_allclose(np.concatenate([first, rest], axis=2), whole, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(S2, S_whole, rtol=1e-4, atol=1e-5)


def test_the_decay_comes_before_the_update():
    """With beta = 1 and no decay the state stores v exactly for a unit key; a full decay (g -> -inf)
    forgets the past before this token is written, not after."""
    k = np.zeros((1, 1, 1, 4), np.float32)
    k[..., 0] = 1
    v = np.arange(1, 4, dtype=np.float32).reshape(1, 1, 1, 3)
    S0 = np.ones((1, 1, 4, 3), np.float32)
    out, S = delta_rule(k, k, v, np.full((1, 1, 1), -50, np.float32), np.ones((1, 1, 1), np.float32), S0)
    np.testing.assert_allclose(out[0, 0, 0], v[0, 0, 0], atol=1e-6)   # S^T k = v: the new value, read back
    np.testing.assert_allclose(S[0, 0, 1:], 0, atol=1e-6)              # the rest of the past was forgotten


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), t=st.integers(1, 20), split=st.integers(0, 20), kernel=st.integers(2, 5))
def test_causal_conv_by_hand_and_across_calls(seed, t, split, kernel):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, t, 3)).astype(np.float32)
    w = rng.standard_normal((kernel, 3)).astype(np.float32)
    out, history = causal_conv(x, w, np.zeros((2, kernel - 1, 3), np.float32))
    padded = np.concatenate([np.zeros((2, kernel - 1, 3)), x], axis=1)
    want = np.stack([sum(w[j] * padded[:, i + j] for j in range(kernel)) for i in range(t)], axis=1)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(history, padded[:, -(kernel - 1):])
    s = min(split, t)
    a, h = causal_conv(x[:, :s], w, np.zeros((2, kernel - 1, 3), np.float32))
    b, _ = causal_conv(x[:, s:], w, h)
    np.testing.assert_allclose(np.concatenate([a, b], axis=1), out, rtol=1e-5, atol=1e-5)


def test_fused_layout_is_grouped_per_key_head():
    """Qwen3-Next's in_proj_qkvz rows: for each key head, its q, its k, then the v and z of the
    value heads it serves. The reordering puts them flat: every q, every k, every v, every z."""
    Hk, Hv, dk, dv = 2, 4, 3, 2
    r = Hv // Hk
    labels = []
    for h in range(Hk):
        labels += [("q", h, i) for i in range(dk)] + [("k", h, i) for i in range(dk)]
        labels += [("v", h * r + j, i) for j in range(r) for i in range(dv)]
        labels += [("z", h * r + j, i) for j in range(r) for i in range(dv)]
    flat = [labels[i] for i in fused_qkvz_order(Hk, Hv, dk, dv)]
    want = [(kind, h, i) for kind, heads, d in (("q", Hk, dk), ("k", Hk, dk), ("v", Hv, dv), ("z", Hv, dv))
            for h in range(heads) for i in range(d)]
    assert flat == want
    ba = [x for h in range(Hk) for x in [("b", h * r + j) for j in range(r)] + [("a", h * r + j) for j in range(r)]]
    assert [ba[i] for i in fused_ba_order(Hk, Hv)] == [("b", h) for h in range(Hv)] + [("a", h) for h in range(Hv)]


@given(seed=st.integers(0, 2**32 - 1), C=st.integers(1, 70))
@settings(max_examples=30, deadline=None)
def test_unit_lower_inverse_inverts(seed, C):
    from npqwen.deltanet import unit_lower_inverse
    rng = np.random.default_rng(seed)
    L = np.tril(rng.uniform(-0.3, 0.3, (3, C, C)), -1).astype(np.float32)
    T = unit_lower_inverse(L)
    np.testing.assert_allclose(T @ (L + np.eye(C, dtype=np.float32)), np.broadcast_to(np.eye(C), T.shape), atol=2e-5)
    assert (np.triu(T, 1) == 0).all() and (np.diagonal(T, axis1=-2, axis2=-1) == 1).all()
