"""Independent pieces of work spread over the machine's cores.

NumPy runs each operation on one core; only matrix products are spread over several, by BLAS.
Where a step splits into independent parts (DeltaNet's heads, blocks of a weight's rows), npqwen
runs the parts on a pool of Python threads instead: NumPy releases the GIL inside its loops and
BLAS calls, so the parts truly run at once. Meanwhile BLAS is held to one thread, so that the
two kinds of parallelism do not fight over the same cores.

They fight even after a BLAS call returns: its threads keep spinning for a while, waiting for the
next call, on the cores that npqwen's workers need. (Measured: a 128-token prefill with bf16
weights took 1.3 s where a BLAS call on both cores came before each parallel step, 0.75 s with
BLAS on one thread throughout.) So a forward pass runs with BLAS on one thread (`blas_threads(1)`,
model.py), and only a product large enough to use every core well, a large float32 weight's, is
handed all of them (`blas_threads(WORKERS)`, primitives.linear).

The number of workers is BLAS's own thread count (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, or the
cores this process may use), so one setting governs both.
"""

import os
import queue
import threading
from contextlib import contextmanager

import numpy as np  # (loaded first, so that the controller below finds its BLAS)
from threadpoolctl import ThreadpoolController

_blas = ThreadpoolController()


def _blas_threads():
    counts = [lib["num_threads"] for lib in _blas.info() if lib.get("user_api") == "blas"]
    return max(counts) if counts else len(os.sched_getaffinity(0))


WORKERS = max(1, _blas_threads())
_blas_libs = [lib for lib in _blas.lib_controllers if lib.user_api == "blas"]
# (OpenBLAS built with OpenMP, MKL, BLIS on OpenMP: a thread limit set in one thread holds for that
# thread only, so a worker sets its own; a pthreads OpenBLAS has one process-wide count, already 1 there)
_openmp_blas = [lib for lib in _blas_libs if getattr(lib, "threading_layer", None) == "openmp"]
_one_region = threading.Lock()        # one parallel region at a time (the BLAS limit is process-wide)
_inside = threading.local()


class _Worker:
    """A thread that runs the parts handed to it, one at a time. Decode opens a parallel region
    for each weight matrix, about a hundred per token, so the hand-over is kept to two C-level
    queues. (Measured here: a round trip through them took 46 us, through a ThreadPoolExecutor 53;
    most of it is the time a sleeping thread takes to wake, paid once each way.)"""

    def __init__(self, n):
        self.todo, self.done = queue.SimpleQueue(), queue.SimpleQueue()
        threading.Thread(target=self._loop, name=f"npqwen-{n}", daemon=True).start()

    def _loop(self):
        _inside.flag = True
        while True:
            fn, part = self.todo.get()
            for lib in _openmp_blas:   # an OpenMP BLAS counts threads per calling thread: this one's too
                lib.set_num_threads(1)
            try:
                self.done.put((True, fn(part)))
            except BaseException as e:  # handed back to the caller, raised there
                self.done.put((False, e))


_workers = [_Worker(n) for n in range(1, WORKERS)]


def parallel(fn, parts):
    """[fn(p) for p in parts], the parts run on WORKERS threads with BLAS on one thread each.
    Called from inside a part (or with one worker), it runs serially."""
    parts = list(parts)
    if not _workers or len(parts) < 2 or getattr(_inside, "flag", False):
        return [fn(p) for p in parts]
    results = []
    with _one_region, blas_threads(1):
        for start in range(0, len(parts), WORKERS):  # (more parts than workers: in rounds)
            batch = parts[start:start + WORKERS]
            busy = _workers[:len(batch) - 1]
            for w, p in zip(busy, batch[1:]):
                w.todo.put((fn, p))
            _inside.flag = True
            try:
                first = fn(batch[0])  # the calling thread does a share too, rather than wait idle
            finally:
                _inside.flag = False
                rest = [w.done.get() for w in busy]  # (even if that share failed: no part may outlive the BLAS limit)
            for ok, value in rest:
                if not ok:
                    raise value
            results += [first] + [value for _, value in rest]
    return results


@contextmanager
def blas_threads(n):
    """BLAS on n threads inside the block, then as before. (Set on the libraries' controllers
    directly: threadpoolctl's limit() costs microseconds more, on every product of a decode step.)
    Inside a part of `parallel`, BLAS stays on the one thread it has there."""
    if getattr(_inside, "flag", False):
        yield
        return
    before = [lib.get_num_threads() for lib in _blas_libs]
    for lib in _blas_libs:
        lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, k in zip(_blas_libs, before):
            lib.set_num_threads(k)


_scratch = threading.local()


def scratch(kind, shape):
    """A float32 array of this thread's, reused from call to call: fresh memory is paid for in page
    faults on first touch, which a decode step would otherwise pay for on every layer."""
    size = int(np.prod(shape))
    bufs = _scratch.__dict__.setdefault("buffers", {})
    if kind not in bufs or bufs[kind].size < size:
        bufs[kind] = np.empty(size, np.float32)
    return bufs[kind][:size].reshape(shape)


def split(n, parts=None):
    """range(n) cut into `parts` (default WORKERS) contiguous slices of near-equal size (none empty if n > 0)."""
    parts = max(1, min(n, parts or WORKERS))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]
