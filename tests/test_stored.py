"""stored.StoredMatrix: bf16 rows kept as stored, multiplied a block at a time, give exactly the
products of the float32 mode (x @ W.T on the upcast matrix), at realistic sizes where BLAS uses
its threads and its vector kernels."""

import ml_dtypes
import numpy as np
import pytest

from npqwen import stored
from npqwen.stored import StoredMatrix


SHAPES = [[(1152, 896)], [(896, 4864)], [(896, 896), (128, 896), (128, 896)], [(7, 300)]]


def product(shapes, n):
    rng = np.random.default_rng(n)
    parts = [rng.standard_normal(s, np.float32).astype(ml_dtypes.bfloat16) for s in shapes]
    x = rng.standard_normal((n, shapes[0][1]), np.float32)
    whole = np.concatenate([p.astype(np.float32) for p in parts])
    return StoredMatrix(parts).matmul_t(x), x @ whole.T


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("n", [1, stored.BIT_EXACT_FROM, 100, 1024])
def test_decode_and_prefill_products_equal_the_float32_product(shapes, n):
    """One row (decode) and many (prefill): bit for bit."""
    got, want = product(shapes, n)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("n", [2, 3, 8, stored.BIT_EXACT_FROM - 1])
def test_a_few_rows_round_alike_to_a_few_ulps(shapes, n):
    """2 to 31 rows (batched decode): BLAS multiplies a small block with another kernel than the
    whole matrix (OpenBLAS's small-matrix GEMM), which sums in another order; the results then
    differ in the last bits of float32, never by more than this."""
    got, want = product(shapes, n)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())


def test_float32_parts_and_strided_x(monkeypatch):
    monkeypatch.setattr(stored, "BLOCK_BYTES", 1)   # one aligned block of 64 rows at a time
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 64), np.float32)
    x = rng.standard_normal((2, 128), np.float32)[:, ::2]      # a view with a stride
    np.testing.assert_array_equal(StoredMatrix([w]).matmul_t(x), x @ w.T)
    parts = [w[:100], w[100:130], w[130:]]                        # blocks that span parts
    np.testing.assert_array_equal(StoredMatrix(parts).matmul_t(x), x @ w.T)


def test_a_wrong_product_is_caught():
    """The comparison above can fail: a block upcast from the wrong rows is seen."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((256, 64), np.float32).astype(ml_dtypes.bfloat16)
    m = StoredMatrix([w[:128], w[64:192]])
    x = rng.standard_normal((1, 64), np.float32)
    assert not np.array_equal(m.matmul_t(x), x @ w[:256].astype(np.float32).T)
