"""Independent pieces of work spread over the machine's cores.

NumPy runs each operation on one core; only matrix products are spread over several, by BLAS.
Where a step splits into independent parts (DeltaNet's heads, blocks of a weight's rows), npqwen
runs the parts on a pool of Python threads instead: NumPy releases the GIL inside its loops and
BLAS calls, so the parts truly run at once. Meanwhile BLAS is held to one thread, so that the
two kinds of parallelism do not fight over the same cores.

The number of workers is BLAS's own thread count (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, or the
cores this process may use), so one setting governs both.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np  # noqa: F401  (loaded first, so that the controller below finds its BLAS)
from threadpoolctl import ThreadpoolController

_blas = ThreadpoolController()


def _blas_threads():
    counts = [lib["num_threads"] for lib in _blas.info() if lib.get("user_api") == "blas"]
    return max(counts) if counts else len(os.sched_getaffinity(0))


WORKERS = max(1, _blas_threads())
_pool = ThreadPoolExecutor(WORKERS - 1, thread_name_prefix="npqwen") if WORKERS > 1 else None
_one_region = threading.Lock()        # one parallel region at a time (the BLAS limit is process-wide)
_inside = threading.local()


def parallel(fn, parts):
    """[fn(p) for p in parts], the parts run on WORKERS threads with BLAS on one thread each.
    Called from inside a part (or with one worker), it runs serially."""
    parts = list(parts)
    if _pool is None or len(parts) < 2 or getattr(_inside, "flag", False):
        return [fn(p) for p in parts]

    def run(p):
        _inside.flag = True
        try:
            return fn(p)
        finally:
            _inside.flag = False

    with _one_region, _blas.limit(limits=1, user_api="blas"):
        rest = [_pool.submit(run, p) for p in parts[1:]]
        try:
            first = run(parts[0])  # the calling thread does a share too, rather than wait idle
        finally:
            wait(rest)  # (even if that share failed: no part may outlive the BLAS limit)
        return [first] + [f.result() for f in rest]


def split(n, parts=None):
    """range(n) cut into `parts` (default WORKERS) contiguous slices of near-equal size (none empty if n > 0)."""
    parts = max(1, min(n, parts or WORKERS))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]
