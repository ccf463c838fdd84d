"""threads.py: parts run on the pool give what they give run one after another."""

import threading

import numpy as np
import pytest
from hypothesis import given, strategies as st

from npqwen import threads
from npqwen.deltanet import delta_rule_chunked, over_heads


@given(n=st.integers(0, 200), parts=st.integers(1, 9))
def test_split_covers_range_once(n, parts):
    slices = threads.split(n, parts)
    assert len(slices) == max(1, min(n, parts))
    covered = np.concatenate([np.arange(n)[s] for s in slices])
    assert (covered == np.arange(n)).all()


def test_parallel_keeps_order_and_runs_nested_calls_serially():
    seen = []

    def inner(i):
        seen.append(threading.current_thread().name)
        return i * 10

    def outer(i):
        return threads.parallel(inner, range(i, i + 3))

    assert threads.parallel(outer, [0, 5]) == [[0, 10, 20], [50, 60, 70]]
    assert len(seen) == 6


def blas_count():  # (None where threadpoolctl finds no BLAS to control: Debian's BLIS, reference BLAS, ATLAS)
    return max((lib.get_num_threads() for lib in threads._blas_libs), default=None)


def test_a_failing_part_raises_in_the_caller_and_the_pool_goes_on():
    """An exception in any part (the worker's or the caller's own) reaches the caller, after every
    part has finished, and BLAS gets its threads back."""
    before = blas_count()

    def part(i):
        if i == 1:
            raise ValueError("part 1")
        return i

    for parts in ([0, 1], [1, 0], [0, 1, 2, 3, 4]):
        with pytest.raises(ValueError, match="part 1"):
            threads.parallel(part, parts)
        assert blas_count() == before
    assert threads.parallel(lambda i: i + 1, range(5)) == [1, 2, 3, 4, 5]


def test_blas_threads_sets_and_restores_and_stays_single_inside_parts():
    if not threads._blas_libs:
        pytest.skip("no BLAS library that threadpoolctl can control")
    before = blas_count()
    with threads.blas_threads(1):
        assert blas_count() == 1
        with threads.blas_threads(threads.WORKERS):
            assert blas_count() == threads.WORKERS
        assert blas_count() == 1
    assert blas_count() == before

    def inside(_):
        with threads.blas_threads(threads.WORKERS):  # a product inside a part keeps its one thread
            return blas_count()

    assert threads.parallel(inside, [0, 1]) == ([1, 1] if threads.WORKERS > 1 else [before, before])


def test_heads_on_separate_threads_equal_one_call():
    rng = np.random.default_rng(0)
    b, H, t, dk, dv = 2, 6, 40, 8, 4
    k = rng.standard_normal((b, H, t, dk)).astype(np.float32)
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    args = (rng.standard_normal((b, H, t, dk)).astype(np.float32), k,
            rng.standard_normal((b, H, t, dv)).astype(np.float32),
            -rng.uniform(0, 2, (b, H, t)).astype(np.float32), rng.uniform(0, 1, (b, H, t)).astype(np.float32),
            rng.standard_normal((b, H, dk, dv)).astype(np.float32))
    whole, split = delta_rule_chunked(*args), over_heads(delta_rule_chunked, *args)
    for a, c in zip(whole, split):
        # (the same sums, but not always in the same order: a slice of the heads is a strided view,
        # which NumPy may multiply with its own loop instead of BLAS; so float32 rounding, not equal bits)
        assert a.shape == c.shape and np.linalg.norm(a - c) <= 1e-6 * np.linalg.norm(a)
