"""Weights kept as the checkpoint stores them (bf16), multiplied without a float32 copy in memory.

NumPy has no bf16 matrix product: BLAS wants float32. Upcasting every weight once at load (the
float32 mode) doubles the memory, and decode then reads 4 bytes per parameter per token. A
StoredMatrix instead keeps the memory-mapped rows as stored and, for each product, upcasts a
block of rows into a small float32 buffer and multiplies it while it is still in the CPU's
cache: memory carries only the 2 stored bytes of each parameter.

    few rows of x (decode):   blocks of about BLOCK_BYTES of float32 rows, shared out over the cores
                              (threads.py), each upcast and multiplied there by BLAS on one thread;
    many rows (prefill):      the product itself dominates: CHUNK_BYTES of rows at a time are upcast
                              by every core, then multiplied by BLAS on every core.

Either way an output is the dot product of the same float32 numbers as `x @ W.T` in the float32
mode, computed by the same BLAS kernel: blocks start at multiples of 64 rows, and BLAS computes a
row's dot product alike whatever rows surround it, so logits are bit for bit those of the float32
mode (tests/test_stored.py holds them to it).
"""

import threading

import numpy as np

from .threads import parallel, split

BLOCK_BYTES = 2 << 20    # decode: float32 bytes of rows per block (measured best of 0.5 to 4 MB here)
CHUNK_BYTES = 32 << 20   # prefill: float32 bytes of rows upcast before one BLAS product
PREFILL_ROWS = 32        # x with at least this many rows takes the prefill path
ALIGN = 64               # block boundaries, in rows
SMALL = 1 << 16          # matrices with fewer elements are simply upcast at load (norms, a router)


class StoredMatrix:
    """A weight [out, in] as stored: one tensor, or several stacked along out (q | k | v)."""

    def __init__(self, parts):
        self.parts = list(parts)                             # [out_i, in] arrays (memory maps), any float dtype
        self.starts = np.cumsum([0] + [p.shape[0] for p in self.parts])   # first row of each part
        self.shape = (int(self.starts[-1]), self.parts[0].shape[1])
        self.dtype = self.parts[0].dtype
        self.nbytes = sum(p.nbytes for p in self.parts)

    def matmul_t(self, x):  # [n, in] float32 -> x @ W.T [n, out]
        x = np.ascontiguousarray(x, np.float32)
        out = np.empty((x.shape[0], self.shape[0]), np.float32)
        if x.shape[0] >= PREFILL_ROWS:
            self._chunks(x, out)
        else:
            self._blocks(x, out)
        return out

    def _blocks(self, x, out):
        step = _rows(BLOCK_BYTES, self.shape[1])
        blocks = [(r, min(r + step, self.shape[0])) for r in range(0, self.shape[0], step)]

        def work(share):  # on one core: upcast a block into this thread's buffer, multiply it there
            for r0, r1 in blocks[share]:
                w = self.view(r0, r1)
                if w is None:
                    w = self.upcast(r0, r1, _buffer("block", (r1 - r0) * self.shape[1]).reshape(r1 - r0, -1))
                np.matmul(x, w.T, out=out[:, r0:r1])

        parallel(work, split(len(blocks)))

    def _chunks(self, x, out):
        step = _rows(CHUNK_BYTES, self.shape[1])
        for r0 in range(0, self.shape[0], step):
            r1 = min(r0 + step, self.shape[0])
            w = self.view(r0, r1)
            if w is None:  # every core upcasts a share of the rows
                w = _buffer("chunk", (r1 - r0) * self.shape[1]).reshape(r1 - r0, self.shape[1])
                parallel(lambda s: self.upcast(r0 + s.start, r0 + s.stop, w[s]), split(r1 - r0))
            np.matmul(x, w.T, out=out[:, r0:r1])

    def view(self, r0, r1):  # rows r0:r1 as they are, if they are float32 and in one part, else None
        i = int(np.searchsorted(self.starts, r0, side="right")) - 1
        if self.parts[i].dtype == np.float32 and r1 <= self.starts[i + 1]:
            return self.parts[i][r0 - self.starts[i]:r1 - self.starts[i]]
        return None

    def upcast(self, r0, r1, buf):  # rows r0:r1 of the stacked matrix -> float32 buf [r1 - r0, in]
        i = int(np.searchsorted(self.starts, r0, side="right")) - 1
        done = 0
        while done < r1 - r0:   # the rows of each part in turn
            a = r0 + done - self.starts[i]
            n = min(self.parts[i].shape[0] - a, r1 - r0 - done)
            np.copyto(buf[done:done + n], self.parts[i][a:a + n], casting="unsafe")
            done, i = done + n, i + 1
        return buf


def _rows(nbytes, cols):
    return max(ALIGN, nbytes // (4 * cols) // ALIGN * ALIGN)


_local = threading.local()


def _buffer(kind, size):  # a float32 scratch buffer of this thread's, reused (fresh memory costs page faults)
    bufs = _local.__dict__.setdefault("buffers", {})
    if kind not in bufs or bufs[kind].size < size:
        bufs[kind] = np.empty(size, np.float32)
    return bufs[kind][:size]

