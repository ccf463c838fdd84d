"""stored.StoredMatrix: bf16 rows kept as stored, multiplied a block at a time, give the products of
the float32 mode (x @ W.T on the upcast matrix) up to the order in which BLAS sums them, at
realistic sizes where BLAS uses its threads and its vector kernels.

Which order BLAS sums in depends on its kernel, blocking, thread count and the number of rows, so
no test here asks for equal bits. Each holds the products to the rounding bound of a K-term dot
product, which any summation order satisfies: two float32 sums of the same terms differ by at most
2 * gamma_K * sum |x_i w_i|, gamma_K = K u / (1 - K u), u = 2^-24 (Higham, Accuracy and
Stability of Numerical Algorithms, 3.1). A block of wrong rows is off by far more (the last test)."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, strategies as st

from npqwen import stored
from npqwen.stored import StoredMatrix


SHAPES = [[(1152, 896)], [(896, 4864)], [(896, 896), (128, 896), (128, 896)], [(7, 300)]]


def rounding_bound(x, w):  # [n, K], [out, K] -> [n, out]: how far two summation orders of x @ w.T may be apart
    K = x.shape[1]
    u = 2.0 ** -24
    gamma = K * u / (1 - K * u)
    return 2 * gamma * (np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T)


def within_rounding(got, x, w):
    want = x @ w.T
    return got.shape == want.shape and bool(np.all(np.abs(got.astype(np.float64) - want) <= rounding_bound(x, w)))


def product(shapes, n):
    rng = np.random.default_rng(n)
    parts = [rng.standard_normal(s, np.float32).astype(ml_dtypes.bfloat16) for s in shapes]
    x = rng.standard_normal((n, shapes[0][1]), np.float32)
    whole = np.concatenate([p.astype(np.float32) for p in parts])
    return StoredMatrix(parts).matmul_t(x), x, whole


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("n", [1, 2, 3, 8, 31, 32, 100, 1024])
def test_products_equal_the_float32_product_up_to_summation_order(shapes, n):
    """One row (decode), a few (batched decode) and many (prefill)."""
    got, x, whole = product(shapes, n)
    assert within_rounding(got, x, whole)


def test_float32_parts_and_strided_x(monkeypatch):
    monkeypatch.setattr(stored, "BLOCK_BYTES", 1)   # one aligned block of 64 rows at a time
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 64), np.float32)
    x = rng.standard_normal((2, 128), np.float32)[:, ::2]      # a view with a stride
    assert within_rounding(StoredMatrix([w]).matmul_t(x), x, w)
    parts = [w[:100], w[100:130], w[130:]]                        # blocks that span parts
    assert within_rounding(StoredMatrix(parts).matmul_t(x), x, w)


def test_a_wrong_product_is_caught():
    """The bound above can fail: a block upcast from the wrong rows is far outside it."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((256, 64), np.float32).astype(ml_dtypes.bfloat16)
    m = StoredMatrix([w[:128], w[64:192]])
    x = rng.standard_normal((1, 64), np.float32)
    assert not within_rounding(m.matmul_t(x), x, w[:256].astype(np.float32))
    one_ulp_off = StoredMatrix([w]).matmul_t(x) * np.float32(1 + 2 ** -10)   # a bf16-sized error in every output
    assert not within_rounding(one_ulp_off, x, w.astype(np.float32))


@given(st.integers(0, 2 ** 32 - 1))
def test_both_bf16_upcasts_are_exact(seed):
    """The shift of the bits and ml_dtypes' conversion give the same float32 for every bf16 value,
    NaN and infinities included (the machine picks whichever is faster: stored.UPCAST)."""
    import ml_dtypes
    from npqwen import stored
    bits = np.random.default_rng(seed).integers(0, 1 << 16, (64, 40), dtype=np.uint16)
    bits[0, :4] = [0x7F80, 0xFF80, 0x7FC1, 0x0001]            # +inf, -inf, a NaN, the smallest subnormal
    src = bits.view(ml_dtypes.bfloat16)
    want = src.astype(np.float32)
    for fn in (stored._shift, stored._copyto):
        out = np.empty((64, 40), np.float32)
        fn(src, out)
        np.testing.assert_array_equal(out, want)                 # (NaN equal to NaN)
        assert np.array_equal(out.view(np.uint32)[~np.isnan(want)], want.view(np.uint32)[~np.isnan(want)])
    buf = np.empty((64, 40), np.float32)
    stored.upcast([src[:10], src[10:]], buf)
    np.testing.assert_array_equal(buf, want)
    assert stored.UPCAST["choice"] in ("shift", "copyto")


def test_the_block_size_follows_the_l2_cache_the_machine_reports(tmp_path):
    from npqwen.stored import l2_bytes
    for i, (level, size) in enumerate([("1", "32K"), ("1", "32K"), ("2", "2048K"), ("3", "32768K")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "level").write_text(level + "\n")
        (d / "size").write_text(size + "\n")
    assert l2_bytes(str(tmp_path)) == 2 << 20
    (tmp_path / "index2" / "size").write_text("1M\n")
    assert l2_bytes(str(tmp_path)) == 1 << 20
    assert l2_bytes(str(tmp_path / "nothing")) == 1 << 20      # no sysfs: 1 MB
