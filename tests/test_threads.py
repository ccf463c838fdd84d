"""threads.py: parts run on the pool give what they give run one after another."""

import threading

import numpy as np
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
        np.testing.assert_array_equal(a, c)
