"""Weights kept as the checkpoint stores them (bf16), multiplied without a float32 copy in memory.

NumPy has no bf16 matrix product: BLAS wants float32. Upcasting every weight once at load (the
float32 mode) doubles the memory, and decode then reads 4 bytes per parameter per token. A
StoredMatrix instead keeps the memory-mapped rows as stored and, for each product, upcasts a
block of rows into a small float32 buffer and multiplies it while it is still in the CPU's
cache: memory carries only the 2 stored bytes of each parameter.

    up to CHUNKED_FROM rows of x      blocks of about BLOCK_BYTES of float32 rows, shared out over
    (decode, a short prompt):        the cores (threads.py), each upcast and multiplied there by BLAS
                                     on one thread, while the block is still in the core's cache;
    more rows (a long prompt):       the product itself dominates, and BLAS runs a large one best on
                                     all cores: CHUNK_BYTES of rows at a time are upcast by every
                                     core, then multiplied by BLAS on every core.

Either way an output is the dot product of the same float32 numbers as `x @ W.T` in the float32
mode, computed by the same BLAS kernel: blocks start at multiples of 64 rows, and BLAS computes a
row's dot product alike whatever rows surround it, so for one row (decode) and for 32 or more
(prefill) logits are bit for bit those of the float32 mode. For 2 to 31 rows OpenBLAS multiplies
a small block with its small-matrix kernel, which sums in another order: the last bits of float32
differ (tests/test_stored.py holds both to it).
"""

import numpy as np

from .threads import WORKERS, blas_threads, parallel, scratch, split

BLOCK_BYTES = 2 << 20    # float32 bytes of rows per block (measured best of 0.5 to 8 MB here, decode and prefill)
CHUNK_BYTES = 32 << 20   # a long prompt: float32 bytes of rows upcast before one BLAS product (4 to 16 MB: slower)
CHUNKED_FROM = 256       # x with this many rows or more takes the chunked path (measured: 128 rows of x ran
                         # 10% faster in blocks, 512 rows 15% faster in chunks)
BIT_EXACT_FROM = 32      # fewer rows than this (but more than one) may round differently (see above)
ALIGN = 64               # block boundaries, in rows
SMALL = 1 << 16          # matrices with fewer elements are simply upcast at load (norms, a router)


class StoredMatrix:
    """A weight [out, in] as stored: one tensor, or several stacked along out (q | k | v)."""

    def __init__(self, parts):
        self.parts = [p.view(np.ndarray) if isinstance(p, np.memmap) else p for p in parts]  # (plain views
        # of the memory maps: np.memmap's own slicing costs microseconds a block)
        self.starts = np.cumsum([0] + [p.shape[0] for p in self.parts])   # first row of each part
        self.shape = (int(self.starts[-1]), self.parts[0].shape[1])
        self.dtype = self.parts[0].dtype
        self._tables = {}

    def matmul_t(self, x):  # [n, in] float32 -> x @ W.T [n, out]
        x = np.ascontiguousarray(x, np.float32)
        out = np.empty((x.shape[0], self.shape[0]), np.float32)
        if x.shape[0] >= CHUNKED_FROM:
            self._chunks(x, out)
        else:
            self._blocks(x, out)
        return out

    def _blocks(self, x, out):
        step = _rows(BLOCK_BYTES, self.shape[1])
        blocks = self.blocks(step)

        def work(share):  # on one core: upcast a block into this thread's buffer, multiply it there
            # (As little Python per block as can be: while one thread runs it, the other waits for
            # the GIL, and a thread that had to wait takes tens of microseconds to wake.)
            buf = scratch("block", (step, self.shape[1]))
            for r0, r1, pieces in blocks[share]:
                if len(pieces) == 1 and pieces[0].dtype == np.float32:
                    w = pieces[0]                  # float32 as stored: no copy
                else:
                    w = upcast(pieces, buf[:r1 - r0])
                np.matmul(x, w.T, out=out[:, r0:r1])

        parallel(work, split(len(blocks)))

    def _chunks(self, x, out):
        for r0, r1, pieces in self.blocks(_rows(CHUNK_BYTES, self.shape[1])):
            if len(pieces) == 1 and pieces[0].dtype == np.float32:
                w = pieces[0]
            else:  # every core upcasts a share of the rows
                w = scratch("chunk", (r1 - r0, self.shape[1]))
                shares = split(r1 - r0)
                parallel(lambda s: upcast(self.pieces(r0 + s.start, r0 + s.stop), w[s]), shares)
            with blas_threads(WORKERS):
                np.matmul(x, w.T, out=out[:, r0:r1])

    def blocks(self, step):  # -> [(r0, r1, the stored rows r0:r1 as pieces of parts)], kept per step
        if step not in self._tables:
            self._tables[step] = [(r0, min(r0 + step, self.shape[0]), self.pieces(r0, min(r0 + step, self.shape[0])))
                                  for r0 in range(0, self.shape[0], step)]
        return self._tables[step]

    def pieces(self, r0, r1):  # rows r0:r1 of the stacked matrix -> the slices of parts that hold them
        pieces = []
        for p, s in zip(self.parts, self.starts):
            a, b = max(r0 - s, 0), min(r1 - s, p.shape[0])
            if a < b:
                pieces.append(p[a:b])
        return pieces


def upcast(pieces, buf):  # stored rows, in order -> float32 buf [rows, in]
    if len(pieces) == 1:
        np.copyto(buf, pieces[0], casting="unsafe")
        return buf
    r = 0
    for p in pieces:
        np.copyto(buf[r:r + len(p)], p, casting="unsafe")
        r += len(p)
    return buf


def _rows(nbytes, cols):
    return max(ALIGN, nbytes // (4 * cols) // ALIGN * ALIGN)
