"""Quantized weights (npqwen/quant.py) against the formats' formulas, written here element by element
in a different way: FP8 through ml_dtypes' own float8_e4m3fn, int4 values by integer division and
remainder. (The golden tests, test_golden.py's quantized cases, check whole models against
transformers and independent dequantizers.)"""

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, strategies as st

from npqwen.errors import CheckpointError, ConfigError
from npqwen.quant import AWQ_NIBBLE, FEW_ROWS, parse_quant, wrap
from npqwen.stored import StoredMatrix

FLOAT = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


def fp8_reference(q_bytes, scale, block):
    """W[r, c] = float(q[r, c]) * float(scale[r // bh, c // bw]), in float32."""
    q = q_bytes.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    r = np.arange(q.shape[0])[:, None] // block[0]
    c = np.arange(q.shape[1])[None, :] // block[1]
    return q * scale.astype(np.float32)[r, c]


def nibble(words, k):  # the k-th 4-bit value of each int32 (bits 4k .. 4k + 3), by arithmetic
    return (words.astype(np.int64) % 2 ** 32) // 16 ** k % 16


def gptq_reference(qweight, qzeros, scales, g_idx, plus_one):
    cols, out = qweight.shape[0] * 8, qweight.shape[1]
    q = np.stack([nibble(qweight, j) for j in range(8)], axis=1).reshape(cols, out)          # input 8k + j
    z = np.stack([nibble(qzeros, j) for j in range(8)], axis=2).reshape(len(qzeros), -1)[:, :out] + plus_one
    s = scales.astype(np.float32)
    return ((q - z[g_idx]).astype(np.float32) * s[g_idx]).T                                 # [out, in]


def awq_reference(qweight, qzeros, scales, size):
    """AutoAWQ's reading: the 8 values of a word in bit order, then output j of the word is value
    AWQ_REVERSE_ORDER[j] (= [0, 4, 1, 5, 2, 6, 3, 7])."""
    reverse = [0, 4, 1, 5, 2, 6, 3, 7]

    def unpack(w):
        v = np.stack([nibble(w, k) for k in range(8)], axis=2)     # [r, words, 8] in bit order
        return v[:, :, reverse].reshape(len(w), -1)
    q, z = unpack(qweight), unpack(qzeros)
    g = np.arange(q.shape[0]) // size
    return ((q - z[g]).astype(np.float32) * scales.astype(np.float32)[g]).T


def words(rng, shape):
    return rng.integers(0, 2 ** 32, size=shape, dtype=np.uint64).astype(np.uint32).view(np.int32)


def product_bound(x, w, extra=0):  # 2 gamma_K sum |x_i w_i|: the rounding bound of two float32 sums of K terms
    K = x.shape[1] + extra                  # (extra: roundings each term has besides, e.g. a scale applied to x)
    u = 2.0 ** -24
    return 2 * (K * u / (1 - K * u)) * (np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64))


# ---------------------------------------------------------------------------------------------
# FP8


@given(st.integers(1, 300), st.integers(1, 300), st.sampled_from([(128, 128), (16, 32), (7, 5)]),
       st.sampled_from(list(FLOAT)), st.integers(0, 2 ** 32 - 1))
def test_fp8_weights_are_the_formula_bit_for_bit(rows, cols, block, scale_dtype, seed):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, (rows, cols), dtype=np.uint8)
    q[(q & 0x7f) == 0x7f] = 0                       # (e4m3fn's NaN codes: not read as NaN, see quant.py)
    scale = (rng.random((math.ceil(rows / block[0]), math.ceil(cols / block[1]))) * 2.0 ** rng.integers(-20, 6)
             ).astype(FLOAT[scale_dtype])
    w = wrap({"m.weight": q.view(ml_dtypes.float8_e4m3fn), "m.weight_scale_inv": scale},
             parse_quant({"quant_method": "fp8", "weight_block_size": list(block)}, "t"), "t")["m.weight"]
    want = fp8_reference(q, scale, block)
    assert np.array_equal(np.asarray(w), want)
    a = int(rng.integers(0, rows))
    b = int(rng.integers(a, rows + 1))              # rows sliced anywhere, even inside a tile
    assert np.array_equal(np.asarray(w[a:b]), want[a:b])
    for n in (1, 5, 200):                           # the scales on x (few rows: one more rounding) or on the weights
        x = rng.standard_normal((n, cols)).astype(np.float32)
        y = StoredMatrix([w]).matmul_t(x)
        assert np.all(np.abs(y - x @ want.T) <= product_bound(x, want, extra=1) + 1e-30)


def test_fp8_large_scales_do_not_overflow():
    """scale * 2^120 overflows float32 for scales of 2^8 and more: those are applied in two steps."""
    q = np.full((4, 4), 0x38, np.uint8)             # 1.0
    scale = np.array([[300.0]], np.float32)
    w = wrap({"m.weight": q.view(ml_dtypes.float8_e4m3fn), "m.weight_scale_inv": scale},
             parse_quant({"quant_method": "fp8", "weight_block_size": [128, 128]}, "t"), "t")["m.weight"]
    assert np.array_equal(np.asarray(w), np.full((4, 4), 300.0, np.float32))
    assert np.allclose(StoredMatrix([w]).matmul_t(np.ones((1, 4), np.float32)), 1200.0)


# ---------------------------------------------------------------------------------------------
# GPTQ and AWQ


def gptq_case(rng, out, cols, size, act_order, plus_one):
    groups = -(-cols // size)
    qweight, qzeros = words(rng, (cols // 8, out)), words(rng, (groups, -(-out // 8)))
    scales = (rng.random((groups, out)) * 0.1).astype(np.float16)
    g_idx = np.arange(cols) // size
    if act_order:
        g_idx = rng.permutation(g_idx)
    fmt = "gptq" if plus_one else "gptq_v2"
    cfg = parse_quant({"quant_method": "gptq", "bits": 4, "group_size": size if size < cols else -1,
                       "desc_act": act_order, "sym": False, "checkpoint_format": fmt}, "t")
    t = {"m.qweight": qweight, "m.qzeros": qzeros, "m.scales": scales, "m.g_idx": g_idx.astype(np.int32)}
    return wrap(t, cfg, "t")["m.weight"], gptq_reference(qweight, qzeros, scales, g_idx, int(plus_one))


def awq_case(rng, out, cols, size):
    qweight, qzeros = words(rng, (cols, out // 8)), words(rng, (cols // size, out // 8))
    scales = (rng.random((cols // size, out)) * 0.1).astype(np.float16)
    cfg = parse_quant({"quant_method": "awq", "bits": 4, "group_size": size, "version": "gemm", "zero_point": True}, "t")
    w = wrap({"m.qweight": qweight, "m.qzeros": qzeros, "m.scales": scales}, cfg, "t")["m.weight"]
    return w, awq_reference(qweight, qzeros, scales, size)


CASES = st.one_of(
    st.tuples(st.just("gptq"), st.integers(1, 40).map(lambda k: 8 * k), st.sampled_from([32, 64, 128, 256]),
              st.sampled_from([32, 64, 128, -1]), st.booleans(), st.booleans()),
    st.tuples(st.just("awq"), st.integers(1, 40).map(lambda k: 8 * k), st.sampled_from([64, 128, 256]),
              st.sampled_from([32, 64, 128]), st.just(False), st.just(False)))


def make(rng, case):
    method, out, cols, size, act_order, plus_one = case
    if method == "gptq":
        return gptq_case(rng, out, cols, cols if size == -1 else size, act_order, plus_one)
    return awq_case(rng, out, cols, min(size, cols))


@given(CASES, st.integers(0, 2 ** 32 - 1))
def test_int4_weights_are_the_formula_bit_for_bit(case, seed):
    rng = np.random.default_rng(seed)
    w, want = make(rng, case)
    assert w.shape == want.shape
    assert np.array_equal(np.asarray(w), want)
    a = int(rng.integers(0, want.shape[0]))
    b = int(rng.integers(a, want.shape[0] + 1))      # rows (output channels) sliced anywhere
    assert np.array_equal(np.asarray(w[a:b]), want[a:b])


@given(CASES, st.integers(0, 2 ** 32 - 1), st.sampled_from([1, 2, 7, FEW_ROWS, FEW_ROWS + 1, 64]))
def test_int4_products_match_the_dequantized_weights(case, seed, n):
    """Few rows of x take the path that applies zero points and scales to each group's products:
    its rounding differs from x @ W.T by the cancellation of x . q against z * sum(x) in a group."""
    rng = np.random.default_rng(seed)
    w, want = make(rng, case)
    x = rng.standard_normal((n, want.shape[1])).astype(np.float32)
    y = StoredMatrix([w]).matmul_t(x)
    ref = x.astype(np.float64) @ want.T.astype(np.float64)
    q_scale = np.abs(x).astype(np.float64) @ (np.abs(want) + 32 * np.abs(want).max()).T   # x . q and z sum(x) terms
    assert np.all(np.abs(y - ref) <= 2e-6 * q_scale + product_bound(x, want) + 1e-30)


def test_awq_order_is_autoawqs():
    """A word whose value in bit order k is k: output j of it is AWQ_REVERSE_ORDER[j] = [0, 4, 1, 5, 2, 6, 3, 7]."""
    word = np.array([[sum(k << (4 * k) for k in range(8))]], np.uint32).view(np.int32)
    cfg = parse_quant({"quant_method": "awq", "bits": 4, "group_size": 8, "version": "gemm", "zero_point": True}, "t")
    w = wrap({"m.qweight": np.repeat(word, 8, 0), "m.qzeros": np.zeros((1, 1), np.int32),
              "m.scales": np.ones((1, 8), np.float16)}, cfg, "t")["m.weight"]
    assert np.asarray(w)[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7] == AWQ_NIBBLE.tolist()


def test_gptq_v1_zeros_are_stored_minus_one():
    """The original GPTQ format stores zero - 1: a stored 7 is a zero of 8 (v1), of 7 in gptq_v2."""
    qweight = np.full((1, 8), 0x88888888, np.uint32).view(np.int32)   # every value 8
    qzeros = np.array([[0x77777777]], np.uint32).view(np.int32)       # every stored zero 7
    for fmt, want in (("gptq", 0.0), ("gptq_v2", 1.0)):
        cfg = parse_quant({"quant_method": "gptq", "bits": 4, "group_size": -1, "checkpoint_format": fmt}, "t")
        w = wrap({"m.qweight": qweight, "m.qzeros": qzeros, "m.scales": np.ones((1, 8), np.float16)}, cfg, "t")
        assert np.all(np.asarray(w["m.weight"]) == want)


# ---------------------------------------------------------------------------------------------
# what is refused


@pytest.mark.parametrize("qc,expected", [
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "'bitsandbytes' is not supported"),
    ({"quant_method": "gptq", "bits": 3, "group_size": 128}, "bits 3"),
    ({"quant_method": "gptq", "bits": 8, "group_size": 128}, "bits 8"),
    ({"quant_method": "gptq", "bits": 4, "group_size": 128, "checkpoint_format": "marlin"}, "'marlin'"),
    ({"quant_method": "gptq", "bits": 4, "group_size": 0}, "group_size"),
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv"}, "'gemv'"),
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": False}, "zero_point"),
    ({"quant_method": "fp8", "fmt": "e5m2"}, "e5m2"),
    ({"quant_method": "fp8", "activation_scheme": "static"}, "static"),
    ({"quant_method": "fp8", "weight_block_size": None}, "per-tensor"),
    ({"quant_method": "fp8", "weight_block_size": [128, 128], "something_new": 1}, "something_new"),
    ({"quant_method": "compressed-tensors"}, "'compressed-tensors'"),
])
def test_unread_quantization_configs_are_refused(qc, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        parse_quant(qc, "config.json")


def test_bad_quantized_tensors_name_what_is_wrong():
    rng = np.random.default_rng(0)
    fp8 = parse_quant({"quant_method": "fp8"}, "t")
    q = np.zeros((130, 64), np.uint8).view(ml_dtypes.float8_e4m3fn)
    with pytest.raises(CheckpointError, match="m.weight_scale_inv, its scales, is missing"):
        wrap({"m.weight": q}, fp8, "t")
    with pytest.raises(CheckpointError, match=r"needs \[2, 1\]"):
        wrap({"m.weight": q, "m.weight_scale_inv": np.ones((1, 1), np.float32)}, fp8, "t")
    with pytest.raises(CheckpointError, match="no quantization_config"):
        wrap({"m.weight": q}, None, "t")
    gptq = parse_quant({"quant_method": "gptq", "bits": 4, "group_size": 32}, "t")
    good = {"m.qweight": words(rng, (8, 16)), "m.qzeros": words(rng, (2, 2)),
            "m.scales": np.ones((2, 16), np.float16), "m.g_idx": (np.arange(64) // 32).astype(np.int32)}
    assert wrap(good, gptq, "t")["m.weight"].shape == (16, 64)
    for change, expected in [({"m.qzeros": None}, "m.qzeros is missing"),
                             ({"m.g_idx": np.full(64, 2, np.int32)}, r"g_idx\[0\] is 2, outside the 2 groups"),
                             ({"m.qweight": np.zeros((8, 16), np.float32)}, "m.qweight is F32"),
                             ({"m.scales": np.ones((2, 16), np.int32)}, "m.scales is I32"),
                             ({"m.scales": np.ones((3, 16), np.float16)}, r"m.scales has shape \[3, 16\]")]:
        t = {k: v for k, v in {**good, **change}.items() if v is not None}
        with pytest.raises(CheckpointError, match=expected):
            wrap(t, gptq, "t")
