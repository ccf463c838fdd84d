"""Property-based tests of npqwen.primitives (RoPE, attention, masks, norms, activations) and two
model-level properties (causality, left padding) on the golden checkpoints.

Each property is checked against an independent statement of what the function must do: a
float64 formula, a plain Python loop, or an invariant of the mathematics, never the function
under test compared with itself."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npqwen.primitives import (NEG, apply_rope, attention, attention_repeat_kv, causal_mask, repeat_kv, rms_norm,
                               rope_cos_sin, rope_inv_freq, rotate_half, silu, softmax, swiglu_mlp)

from conftest import golden_model

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODEL = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

seeds = st.integers(0, 2**32 - 1)
head_dims = st.integers(1, 64).map(lambda n: 2 * n)          # even, 2 ... 128
bases = st.sampled_from([10000.0, 1000000.0, 500000.0]) | st.floats(2.0, 1e7)


def rng_normal(seed, shape, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------------------------
# RoPE


def rope_at(x, positions, rope=None, max_pos=4096):
    """x [b, heads, t, hd] rotated at integer positions [b, t] with plain RoPE (scale 1)."""
    rope = rope or {"rope_type": "default", "rope_theta": 10000.0}
    inv_freq, scale = rope_inv_freq(x.shape[-1], rope, max_pos)
    cos, sin = rope_cos_sin(inv_freq, np.asarray(positions), scale)
    return apply_rope(x, cos, sin)


@FAST
@given(seed=seeds, b=st.integers(1, 3), heads=st.integers(1, 4), t=st.integers(1, 6), hd=head_dims,
       base=bases, max_position=st.integers(0, 4000))
def test_rope_preserves_norms(seed, b, heads, t, hd, base, max_position):
    x = rng_normal(seed, (b, heads, t, hd))
    positions = np.random.default_rng(seed + 1).integers(0, max_position + 1, (b, t))
    out = rope_at(x, positions, {"rope_type": "default", "rope_theta": base})
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5, atol=1e-6)


@FAST
@given(seed=seeds, t=st.integers(1, 5), hd=head_dims, base=bases)
def test_rope_is_identity_at_position_zero(seed, t, hd, base):
    x = rng_normal(seed, (2, 3, t, hd))
    out = rope_at(x, np.zeros((2, t), np.int64), {"rope_type": "default", "rope_theta": base})
    np.testing.assert_array_equal(out, x)


@FAST
@given(seed=seeds, hd=head_dims, factor=st.floats(1.0, 32.0))
def test_rope_at_position_zero_only_applies_the_attention_scale(seed, hd, factor):
    """cos and sin carry yarn's attention factor: at position 0 the rotation is the identity times it."""
    rope = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": factor, "original_max_position_embeddings": 64}
    inv_freq, scale = rope_inv_freq(hd, rope, 256)
    x = rng_normal(seed, (1, 2, 1, hd))
    cos, sin = rope_cos_sin(inv_freq, np.zeros((1, 1), np.int64), scale)
    np.testing.assert_allclose(apply_rope(x, cos, sin), x * np.float32(0.1 * math.log(factor) + 1), rtol=1e-6)


@FAST
@given(seed=seeds, hd=head_dims, base=bases, m=st.integers(0, 1000), n=st.integers(0, 1000),
       c=st.integers(-1000, 1000))
def test_rope_scores_depend_only_on_relative_position(seed, hd, base, m, n, c):
    assume(m + c >= 0 and n + c >= 0)
    rope = {"rope_type": "default", "rope_theta": base}
    q, k = rng_normal(seed, (1, 1, 1, hd)), rng_normal(seed + 1, (1, 1, 1, hd))

    def score(pq, pk):
        return float(np.sum(rope_at(q, [[pq]], rope) * rope_at(k, [[pk]], rope)))

    scale = float(np.linalg.norm(q) * np.linalg.norm(k))
    # float32 angles at positions <= 2000 are good to ~2000 * 6e-8 rad
    assert abs(score(m, n) - score(m + c, n + c)) <= 5e-4 * scale


@FAST
@given(seed=seeds, hd=head_dims, base=bases, t=st.integers(1, 6))
def test_rope_rotates_pairs_i_and_i_plus_half(seed, hd, base, t):
    """apply_rope against the rotation written out in float64: pair (i, i + hd/2) turns by pos * base^(-2i/hd)."""
    x = rng_normal(seed, (1, 2, t, hd))
    positions = np.random.default_rng(seed).integers(0, 300, (1, t))
    out = rope_at(x, positions, {"rope_type": "default", "rope_theta": base})
    half = hd // 2
    theta = positions[0][:, None] * float(base) ** (-2.0 * np.arange(half) / hd)  # [t, hd/2]
    x64 = x.astype(np.float64)
    x1, x2 = x64[..., :half], x64[..., half:]
    want = np.concatenate([x1 * np.cos(theta) - x2 * np.sin(theta), x2 * np.cos(theta) + x1 * np.sin(theta)], -1)
    # float32 angles at positions < 300 are good to ~300 * 1.2e-7 rad, times |x| up to ~4
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=2e-4 * max(1.0, float(np.abs(x).max())))


@given(st.integers(1, 3), st.integers(1, 9), st.sampled_from([4, 8, 64]), st.integers(0, 2**31 - 1))
def test_apply_rope_is_the_rotate_half_formula_exactly(heads, t, hd, seed):
    """apply_rope computes its halves in place; the numbers are those of x * cos + rotate_half(x) * sin."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, heads, t, hd)).astype(np.float32)
    inv_freq, _ = rope_inv_freq(hd, {"rope_theta": 10000.0, "rope_type": "default"}, 64)
    cos, sin = rope_cos_sin(inv_freq, rng.integers(0, 5000, (2, t)))
    np.testing.assert_array_equal(apply_rope(x, cos, sin), x * cos[:, None] + rotate_half(x) * sin[:, None])


def test_rotate_half_by_hand():
    np.testing.assert_array_equal(rotate_half(np.array([1.0, 2.0, 3.0, 4.0], np.float32)), [-3.0, -4.0, 1.0, 2.0])


@FAST
@given(hd=head_dims, base=bases, scale=st.floats(0.5, 2.0), seed=seeds)
def test_rope_cos_sin_by_formula(hd, base, scale, seed):
    inv_freq, _ = rope_inv_freq(hd, {"rope_type": "default", "rope_theta": base}, 4096)
    positions = np.random.default_rng(seed).integers(0, 500, (2, 3))
    cos, sin = rope_cos_sin(inv_freq, positions, scale)
    assert cos.shape == sin.shape == (2, 3, hd) and cos.dtype == sin.dtype == np.float32
    angle = positions[..., None].astype(np.float64) * inv_freq.astype(np.float64)
    angle = np.concatenate([angle, angle], -1)  # dimension i and i + hd/2 share a frequency
    np.testing.assert_allclose(cos, scale * np.cos(angle), atol=1e-4)
    np.testing.assert_allclose(sin, scale * np.sin(angle), atol=1e-4)


def test_default_inv_freq_by_hand():
    inv_freq, scale = rope_inv_freq(8, {"rope_type": "default", "rope_theta": 10000.0}, 2048)
    assert inv_freq.dtype == np.float32 and inv_freq.shape == (4,) and scale == 1.0
    # base^(-2i/d) for i = 0..3, d = 8: 10000^0, 10000^-0.25, 10000^-0.5, 10000^-0.75
    np.testing.assert_allclose(inv_freq, [1.0, 0.1, 0.01, 0.001], rtol=1e-6)
    inv_freq, _ = rope_inv_freq(4, {"rope_type": "default", "rope_theta": 1e6}, 2048)
    np.testing.assert_allclose(inv_freq, [1.0, 1e-3], rtol=1e-6)


@FAST
@given(hd=head_dims, base=bases)
def test_default_inv_freq(hd, base):
    inv_freq, scale = rope_inv_freq(hd, {"rope_type": "default", "rope_theta": base}, 4096)
    assert scale == 1.0 and inv_freq.shape == (hd // 2,) and inv_freq.dtype == np.float32
    assert np.isfinite(inv_freq).all() and (inv_freq > 0).all()
    assert inv_freq[0] == 1.0
    assert (np.diff(inv_freq) < 0).all()  # strictly decreasing
    np.testing.assert_allclose(inv_freq, float(base) ** (-2.0 * np.arange(hd // 2) / hd), rtol=1e-5)


@FAST
@given(hd=head_dims, base=bases, factor=st.floats(1.0, 64.0))
def test_linear_inv_freq_is_default_over_factor(hd, base, factor):
    default, _ = rope_inv_freq(hd, {"rope_type": "default", "rope_theta": base}, 4096)
    inv_freq, scale = rope_inv_freq(hd, {"rope_type": "linear", "rope_theta": base, "factor": factor}, 4096)
    assert scale == 1.0 and np.isfinite(inv_freq).all() and (inv_freq > 0).all()
    assert (np.diff(inv_freq) < 0).all()
    np.testing.assert_allclose(inv_freq, default / factor, rtol=1e-6)


@FAST
@given(hd=st.integers(2, 64).map(lambda n: 2 * n), base=bases, factor=st.floats(1.0, 16.0),
       max_pos=st.integers(16, 131072), frac=st.floats(0.0, 1.0))
def test_dynamic_inv_freq_is_default_within_max_position_embeddings(hd, base, factor, max_pos, frac):
    seq_len = int(frac * max_pos)
    default, _ = rope_inv_freq(hd, {"rope_type": "default", "rope_theta": base}, max_pos)
    rope = {"rope_type": "dynamic", "rope_theta": base, "factor": factor}
    for s in (seq_len, None):
        inv_freq, scale = rope_inv_freq(hd, rope, max_pos, seq_len=s)
        assert scale == 1.0
        np.testing.assert_allclose(inv_freq, default, rtol=1e-6)


@FAST
@given(hd=st.integers(2, 64).map(lambda n: 2 * n), base=bases, factor=st.floats(1.5, 16.0),
       max_pos=st.integers(16, 8192), extra=st.integers(1, 100000))
def test_dynamic_inv_freq_beyond_max_position_embeddings(hd, base, factor, max_pos, extra):
    """Past the trained length the NTK base grows: every frequency but the first gets lower."""
    seq_len = max_pos + extra
    default, _ = rope_inv_freq(hd, {"rope_type": "default", "rope_theta": base}, max_pos)
    inv_freq, scale = rope_inv_freq(hd, {"rope_type": "dynamic", "rope_theta": base, "factor": factor},
                                    max_pos, seq_len=seq_len)
    assert scale == 1.0 and np.isfinite(inv_freq).all() and (inv_freq > 0).all()
    assert inv_freq[0] == 1.0 and (np.diff(inv_freq) <= 0).all()
    assert (inv_freq[1:] <= default[1:] * (1 + 1e-6)).all()
    grown = base * (factor * seq_len / max_pos - (factor - 1)) ** (hd / (hd - 2))
    np.testing.assert_allclose(inv_freq, grown ** (-2.0 * np.arange(hd // 2) / hd), rtol=1e-4)


@FAST
@given(hd=head_dims, base=bases, factor=st.floats(1.0, 64.0), original=st.integers(16, 131072))
def test_yarn_inv_freq_and_attention_factor(hd, base, factor, original):
    rope = {"rope_type": "yarn", "rope_theta": base, "factor": factor, "original_max_position_embeddings": original}
    default, _ = rope_inv_freq(hd, {"rope_type": "default", "rope_theta": base}, original)
    inv_freq, scale = rope_inv_freq(hd, rope, int(original * factor))
    assert np.isfinite(inv_freq).all() and (inv_freq > 0).all()
    assert (np.diff(inv_freq) <= 0).all()
    # each frequency is a blend of the original one and the interpolated (divided by factor) one
    assert (inv_freq <= default * (1 + 1e-6)).all() and (inv_freq >= default / factor * (1 - 1e-6)).all()
    assert scale == pytest.approx(0.1 * math.log(factor) + 1.0, rel=1e-12)


def yarn_reference(hd, base, factor, original, beta_fast=32, beta_slow=1):
    """transformers' _compute_yarn_parameters (truncate=True), in float64."""
    def correction_dim(rot):
        return hd * math.log(original / (rot * 2 * math.pi)) / (2 * math.log(base))
    low, high = max(math.floor(correction_dim(beta_fast)), 0), min(math.ceil(correction_dim(beta_slow)), hd - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(hd // 2) - low) / (high - low), 0, 1)
    pos_freqs = base ** (np.arange(0, hd, 2) / hd)
    return (1 / (factor * pos_freqs)) * ramp + (1 / pos_freqs) * (1 - ramp)


@pytest.mark.parametrize("hd,base,factor,original", [(128, 1e6, 4.0, 32768), (16, 10000.0, 4.0, 32),
                                                     (64, 10000.0, 8.0, 4096), (32, 500000.0, 2.5, 2048)])
def test_yarn_inv_freq_against_float64_reference(hd, base, factor, original):
    rope = {"rope_type": "yarn", "rope_theta": base, "factor": factor, "original_max_position_embeddings": original}
    inv_freq, _ = rope_inv_freq(hd, rope, int(original * factor))
    want = yarn_reference(hd, base, factor, original)
    np.testing.assert_allclose(inv_freq, want, rtol=1e-5)
    assert inv_freq[0] == pytest.approx(1.0) and inv_freq[-1] == pytest.approx(want[-1])
    assert not np.allclose(want, base ** (-np.arange(0, hd, 2) / hd))  # the blend really changes something


def test_yarn_attention_factor_variants():
    base = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64}
    _, scale = rope_inv_freq(16, {**base, "attention_factor": 0.75}, 256)
    assert scale == 0.75
    _, scale = rope_inv_freq(16, {**base, "mscale": 2.0, "mscale_all_dim": 1.0}, 256)
    assert scale == pytest.approx((0.2 * math.log(4) + 1) / (0.1 * math.log(4) + 1))
    _, scale = rope_inv_freq(16, {**base, "factor": 1.0}, 256)
    assert scale == 1.0


# ---------------------------------------------------------------------------------------------
# grouped-query attention


@FAST
@given(seed=seeds, b=st.integers(1, 3), K=st.integers(1, 4), n_rep=st.integers(1, 4), s=st.integers(1, 6),
       hd=st.integers(1, 8))
def test_repeat_kv(seed, b, K, n_rep, s, hd):
    x = rng_normal(seed, (b, K, s, hd))
    out = repeat_kv(x, n_rep)
    assert out.shape == (b, K * n_rep, s, hd)
    np.testing.assert_array_equal(out, np.repeat(x, n_rep, axis=1))
    for h in range(K * n_rep):
        np.testing.assert_array_equal(out[:, h], x[:, h // n_rep])


def attention_loop(q, k, v, bias):
    """Attention one query head at a time, in float64: head h uses kv head h // (H // K)."""
    b, H, t, hd = q.shape
    G = H // k.shape[1]
    out = np.zeros(q.shape)
    for bi in range(b):
        for h in range(H):
            scores = q[bi, h].astype(np.float64) @ k[bi, h // G].astype(np.float64).T / math.sqrt(hd)
            scores = scores + bias[bi if bias.shape[0] > 1 else 0, 0]
            scores = np.maximum(scores, np.finfo(np.float32).min)  # a masked entry stays "masked"
            e = np.exp(scores - scores.max(-1, keepdims=True))
            out[bi, h] = (e / e.sum(-1, keepdims=True)) @ v[bi, h // G]
    return out


@st.composite
def attention_case(draw):
    b, K, G = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    t, past, hd = draw(st.integers(1, 8)), draw(st.integers(0, 8)), draw(st.sampled_from([2, 4, 8, 16]))
    s = t + past
    window = draw(st.none() | st.integers(1, s + 1))
    padding = None
    if draw(st.booleans()):  # left padding: row r has its first pad[r] key positions masked
        pads = draw(st.lists(st.integers(0, s - 1), min_size=b, max_size=b))
        padding = (np.arange(s)[None, :] >= np.array(pads)[:, None]).astype(np.int64)
    seed = draw(seeds)
    return b, K, G, t, s, hd, window, padding, seed


@FAST
@given(attention_case())
def test_grouped_attention_equals_repeat_kv_attention(case):
    b, K, G, t, s, hd, window, padding, seed = case
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, K * G, t, hd)).astype(np.float32)
    k = rng.standard_normal((b, K, s, hd)).astype(np.float32)
    v = rng.standard_normal((b, K, s, hd)).astype(np.float32)
    bias = causal_mask(t, s, padding, window)
    grouped, repeated = attention(q, k, v, bias), attention_repeat_kv(q, k, v, bias)
    assert grouped.shape == repeated.shape == (b, K * G, t, hd) and grouped.dtype == np.float32
    np.testing.assert_allclose(grouped, repeated, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grouped, attention_loop(q, k, v, bias), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# RMSNorm


def scaled_rows(seed, shape, min_rms):
    x = rng_normal(seed, shape) * np.float32(3)
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True))
    return (x * (min_rms / np.minimum(rms, min_rms))).astype(np.float32)  # every row has rms >= min_rms


@FAST
@given(seed=seeds, rows=st.integers(1, 4), d=st.integers(2, 64), c=st.floats(0.5, 1000.0))
def test_rms_norm_is_scale_invariant(seed, rows, d, c):
    x = scaled_rows(seed, (rows, d), 2.0)  # rms >= 2 >> sqrt(1e-6)
    w = rng_normal(seed + 1, (d,))
    np.testing.assert_allclose(rms_norm(np.float32(c) * x, w, 1e-6), rms_norm(x, w, 1e-6), rtol=1e-5, atol=1e-5)


@FAST
@given(seed=seeds, shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=16))
def test_rms_norm_unit_weight_gives_unit_rms(seed, shape):
    x = scaled_rows(seed, shape, 0.1)
    out = rms_norm(x, np.ones(shape[-1], np.float32), 1e-6)
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_allclose(np.sqrt(np.mean(out.astype(np.float64) ** 2, axis=-1)), 1.0, rtol=1e-4)


@FAST
@given(seed=seeds, d=st.integers(2, 64), big=st.floats(300.0, 10000.0))
def test_rms_norm_computes_in_float32_for_float16_input(seed, d, big):
    """x*x overflows float16 above 256: only a float32 computation gets these rows right."""
    x = np.clip(rng_normal(seed, (3, d)), -6, 6) * np.float32(big)
    x[:, 0] = big  # |x| < 65504 fits float16, but x*x does not
    x = x.astype(np.float16)
    w = rng_normal(seed + 1, (d,))
    out = rms_norm(x, w, 1e-6)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    x64 = x.astype(np.float64)
    want = w * x64 / np.sqrt(np.mean(x64 ** 2, -1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_rms_norm_by_hand():
    out = rms_norm(np.array([[3.0, 4.0]], np.float32), np.array([1.0, 2.0], np.float32), 0.0)
    r = math.sqrt(12.5)
    np.testing.assert_allclose(out, [[3 / r, 8 / r]], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# softmax


finite32 = st.floats(-1e4, 1e4, width=32)


@FAST
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12), elements=finite32))
def test_softmax_rows_are_distributions(x):
    p = softmax(x)
    assert p.shape == x.shape and p.dtype == np.float32
    assert (p >= 0).all() and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    # monotone: the largest score gets the largest probability
    np.testing.assert_array_equal(np.take_along_axis(p, x.argmax(-1)[..., None], -1)[..., 0], p.max(-1))


@FAST
@given(x=hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 12)), elements=st.floats(-50, 50, width=32)),
       shift=st.lists(st.floats(-1000, 1000, width=32), min_size=5, max_size=5))
def test_softmax_is_invariant_to_a_constant_per_row(x, shift):
    c = np.array(shift[: x.shape[0]], np.float32)[:, None]
    np.testing.assert_allclose(softmax(x + c), softmax(x), atol=2e-4)
    x64 = x.astype(np.float64)
    want = np.exp(x64 - x64.max(-1, keepdims=True))
    np.testing.assert_allclose(softmax(x), want / want.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)


extreme = st.sampled_from([float(np.float32(v)) for v in (1e30, -1e30, NEG, 3e38, -3e38, 0.0, 1.0)]) | finite32
# (as float32 holds them: on NumPy 1.x, Hypothesis refuses 1e30, which float32 rounds)


@FAST
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 10)), elements=extreme))
def test_softmax_survives_huge_inputs(x):
    with np.errstate(over="ignore", invalid="raise"):  # -3e38 - 3e38 may round to -inf, harmlessly
        p = softmax(x)
    assert np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    for row, prow in zip(x, p):
        top = row == row.max()
        if (row[~top] < row.max() - 100).all():  # the maxima take all the mass, evenly
            np.testing.assert_allclose(prow[top], 1.0 / top.sum(), rtol=1e-6)
            assert (prow[~top] == 0).all()


def test_softmax_of_fully_masked_row_is_uniform():
    p = softmax(np.full((2, 5), NEG, np.float32))
    np.testing.assert_allclose(p, 0.2, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# the attention mask


@st.composite
def mask_case(draw):
    kv_len = draw(st.integers(1, 12))
    q_len = draw(st.integers(1, kv_len))
    window = draw(st.none() | st.integers(1, kv_len + 2))
    padding = None
    if draw(st.booleans()):
        b = draw(st.integers(1, 3))
        extra = draw(st.integers(0, 3))  # padding_mask may be longer than kv_len
        bits = draw(st.lists(st.integers(0, 1), min_size=b * (kv_len + extra), max_size=b * (kv_len + extra)))
        padding = np.array(bits, np.int64).reshape(b, kv_len + extra)
    return q_len, kv_len, window, padding


def mask_loop(q_len, kv_len, window, padding, q_start=None):
    b = 1 if padding is None else padding.shape[0]
    q_start = kv_len - q_len if q_start is None else q_start
    out = np.empty((b, 1, q_len, kv_len), np.float32)
    for bi in range(b):
        for row in range(q_len):
            i = q_start + row
            for j in range(kv_len):
                ok = j <= i and (window is None or j > i - window) and (padding is None or padding[bi, j] == 1)
                out[bi, 0, row, j] = 0.0 if ok else NEG
    return out


@settings(max_examples=100, deadline=None)
@given(mask_case())
def test_causal_mask_against_loop(case):
    q_len, kv_len, window, padding = case
    got = causal_mask(q_len, kv_len, padding, window)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, mask_loop(q_len, kv_len, window, padding))


@settings(max_examples=60, deadline=None)
@given(mask_case(), st.integers(0, 12))
def test_causal_mask_with_explicit_query_start(case, q_start):
    q_len, kv_len, window, padding = case
    got = causal_mask(q_len, kv_len, padding, window, q_start=q_start)
    np.testing.assert_array_equal(got, mask_loop(q_len, kv_len, window, padding, q_start))


def test_causal_mask_by_hand():
    got = causal_mask(2, 4, np.array([[0, 1, 1, 1]]), window=2)
    N = NEG
    np.testing.assert_array_equal(got[0, 0], [[N, 0, 0, N], [N, N, 0, 0]])  # queries at 2 and 3; key 0 is padding


# ---------------------------------------------------------------------------------------------
# activations and the MLP


@FAST
@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=2, max_side=20), elements=st.floats(-80, 80, width=32)))
def test_silu_matches_float64(x):
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(silu(x), x64 * (1 / (1 + np.exp(-x64))), rtol=1e-5, atol=1e-6)


@FAST
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=9), elements=st.floats(-80, 80, width=32)))
def test_in_place_silu_and_softmax_give_the_same_numbers(x):
    """The model overwrites its intermediates (out=x) to save memory: aliasing must not change a bit."""
    a, b = x.copy(), x.copy()
    np.testing.assert_array_equal(silu(a, out=a), silu(x))
    np.testing.assert_array_equal(a, silu(x))
    np.testing.assert_array_equal(softmax(b, out=b), softmax(x))
    np.testing.assert_array_equal(b, softmax(x))


def test_silu_by_hand():
    np.testing.assert_allclose(silu(np.array([0.0, 1.0, -1.0], np.float32)),
                               [0.0, 1 / (1 + math.exp(-1)), -1 / (1 + math.exp(1))], rtol=1e-6)


@FAST
@given(seed=seeds, rows=st.integers(1, 5), d=st.integers(1, 16), i=st.integers(1, 24))
def test_swiglu_mlp_by_formula(seed, rows, d, i):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, d)).astype(np.float32)
    w_gate, w_up = rng.standard_normal((i, d)).astype(np.float32), rng.standard_normal((i, d)).astype(np.float32)
    w_down = rng.standard_normal((d, i)).astype(np.float32)
    out = swiglu_mlp(x, np.concatenate([w_gate, w_up]), w_down)  # [out, in] as stored, gate rows then up rows
    assert out.shape == (rows, d)
    x64 = x.astype(np.float64)
    want = np.zeros((rows, d))
    for r in range(rows):
        for o in range(d):
            for j in range(i):
                g = float(w_gate[j] @ x64[r])
                want[r, o] += w_down[o, j] * (g / (1 + math.exp(-g))) * float(w_up[j] @ x64[r])
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# model-level properties on golden checkpoints


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@MODEL
@given(data=st.data())
@pytest.mark.parametrize("case", ["gqa3_bf16", "sliding_window"])
def test_later_tokens_never_change_earlier_logits(case, data):
    model = golden_model(case)
    V = model.config.vocab_size
    t = data.draw(st.integers(2, 24), label="length")
    ids = np.array(data.draw(st.lists(st.integers(0, V - 1), min_size=t, max_size=t), label="ids"))
    p = data.draw(st.integers(1, t - 1), label="changed position")
    new = data.draw(st.integers(0, V - 1).filter(lambda x: x != ids[p]), label="new token")
    changed = ids.copy()
    changed[p] = new
    a, b = model.forward(ids[None]).logits[0], model.forward(changed[None]).logits[0]
    np.testing.assert_allclose(b[:p], a[:p], rtol=1e-6, atol=1e-6)
    assert not np.allclose(b[p], a[p], rtol=1e-3, atol=1e-3)  # the change itself is seen


@MODEL
@given(data=st.data())
@pytest.mark.parametrize("case,min_len", [("gqa3_bf16", 1), ("sliding_window", 9)])
def test_left_padded_batch_matches_prompts_run_alone(case, min_len, data):
    model = golden_model(case)
    V = model.config.vocab_size
    if case == "sliding_window":
        assert model.config.sliding_window == 8
    lengths = data.draw(st.lists(st.integers(min_len, 30), min_size=2, max_size=4), label="lengths")
    T = max(lengths)
    tokens = st.integers(0, V - 1)
    ids = np.array(data.draw(st.lists(tokens, min_size=T * len(lengths), max_size=T * len(lengths)),
                             label="ids")).reshape(len(lengths), T)  # padding slots hold arbitrary tokens
    mask = (np.arange(T)[None, :] >= T - np.array(lengths)[:, None]).astype(np.int64)
    batch = model.forward(ids, attention_mask=mask).logits
    for r, n in enumerate(lengths):
        alone = model.forward(ids[r:r + 1, T - n:]).logits[0]
        assert rel_err(batch[r, T - n:], alone) < 1e-5, f"row {r} (length {n} of {T})"
