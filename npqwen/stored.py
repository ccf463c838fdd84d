"""Weights kept as the checkpoint stores them (bf16), multiplied without a float32 copy in memory.

NumPy has no bf16 matrix product: BLAS wants float32. Upcasting every weight once at load (the
float32 mode) doubles the memory, and decode then reads 4 bytes per parameter per token. A
StoredMatrix instead keeps the memory-mapped rows as stored and, for each product, upcasts a
block of rows (about twice the L2 cache's bytes, below) into a small float32 buffer and multiplies it while it is still
in the CPU's cache: memory carries only the 2 stored bytes of each parameter. The blocks are
shared out over the cores (threads.py), each upcast and multiplied there by BLAS on one thread,
for one row of x (decode) as for thousands (a prompt). (A long prompt's product could instead
upcast large chunks on every core and then hand one product to BLAS on all cores: measured, that
was level with blocks for a dense model's 1024- and 4096-token prompts and slower for the hybrid
and MoE ones, whose products are followed by steps that BLAS's spinning threads slow down.)

An output is the dot product of the same float32 numbers as `x @ W.T` in the float32 mode; only
the order in which BLAS sums its terms may differ. That order belongs to the BLAS kernel, its
blocking (OpenBLAS's L2 size), its thread count and the number of rows of x, not to npqwen: on one
kernel the two modes happened to agree bit for bit, on another they did not. So the promise is the
rounding bound of a dot product, which holds for any order: two float32 sums of the same K terms
differ by at most 2 * gamma_K * sum |x_i w_i| (gamma_K = K u / (1 - K u), u = 2^-24).
tests/test_stored.py holds every product to it, and tests/test_generation.py holds the two modes'
logits to 1e-5 of their largest magnitude, with identical greedy tokens, on golden checkpoints.
"""

import time

import ml_dtypes
import numpy as np

from .quant import FEW_ROWS, Int4, Quantized, few_rows
from .threads import parallel, scratch, split

BLOCK_BYTES = None       # float32 bytes of rows per block; None: twice the L2 cache (BLOCK, below)
ALIGN = 64               # block boundaries, in rows
SMALL = 1 << 16          # matrices with fewer elements are simply upcast at load (norms, a router)
# OpenBLAS's matrix product is slow for 2 to about 16 rows of x: a 585 x 896 block took 28.5 us for one row,
# 287 us for two and 372 for nine (SkylakeX kernel; 150 and 230 on Haswell's), where a matrix-vector product
# per row takes 28.5 us each, the block staying in the cache. So up to ROW_BY_ROW rows go row by row:
# a speculative check of k drafted tokens, a batch of a few sequences decoding together.
ROW_BY_ROW = 8


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
        if len(x) <= FEW_ROWS and all(isinstance(p, Int4) and p.tiled for p in self.parts):
            few_rows(self.parts, self.starts, x, out)    # GPTQ / AWQ decode (quant.py)
            return out
        step = _rows(BLOCK_BYTES or BLOCK["bytes"], self.shape[1])
        blocks = self.blocks(step)

        def work(share):  # on one core: upcast a block into this thread's buffer, multiply it there
            # (As little Python per block as can be: while one thread runs it, the other waits for
            # the GIL, and a thread that had to wait takes tens of microseconds to wake.)
            buf = scratch("block", (step, self.shape[1]))
            for r0, r1, pieces in blocks[share]:
                if isinstance(pieces[0], Quantized):   # (quant.py; a block never spans two of them)
                    pieces[0].product(x, buf, out[:, r0:r1])
                    continue
                if len(pieces) == 1 and pieces[0].dtype == np.float32:
                    w = pieces[0]                  # float32 as stored: no copy
                else:
                    w = upcast(pieces, buf[:r1 - r0])
                if 1 < len(x) <= ROW_BY_ROW:       # a few rows: one matrix-vector product each, the block in cache
                    for r in range(len(x)):
                        np.matmul(x[r], w.T, out=out[r, r0:r1])
                else:
                    np.matmul(x, w.T, out=out[:, r0:r1])

        parallel(work, split(len(blocks)))
        return out

    def blocks(self, step):  # -> [(r0, r1, the stored rows r0:r1 as pieces of parts)], kept per step
        if step not in self._tables:
            if any(isinstance(p, Quantized) for p in self.parts):   # blocks cut at each part's end too
                bounds = [(a, b) for s0, s1 in zip(map(int, self.starts), map(int, self.starts[1:]))
                          for a, b in zip(range(s0, s1, step), [*range(s0 + step, s1, step), s1])]
            else:
                bounds = [(r0, min(r0 + step, self.shape[0])) for r0 in range(0, self.shape[0], step)]
            self._tables[step] = [(r0, r1, self.pieces(r0, r1)) for r0, r1 in bounds]
        return self._tables[step]

    def pieces(self, r0, r1):  # rows r0:r1 of the stacked matrix -> the slices of parts that hold them
        pieces = []
        for p, s in zip(self.parts, self.starts):
            a, b = max(r0 - s, 0), min(r1 - s, p.shape[0])
            if a < b:
                pieces.append(p[a:b])
        return pieces


def upcast(pieces, buf):  # stored rows, in order -> float32 buf [rows, in]
    r = 0
    for p in pieces:
        _UPCAST[0](p, buf[r:r + len(p)]) if p.dtype == BF16 and p.strides[-1] == 2 else \
            np.copyto(buf[r:r + len(p)], p, casting="unsafe")
        r += len(p)
    return buf


# bf16 -> float32 is exact by construction: bf16 is the upper 16 bits of a float32, so the float32 is its
# bits shifted up (NaN and infinities included). Two ways to write it, whose speed depends on the CPU:
# measured 3x apart, in opposite orders, on two AMD EPYC generations (ml_dtypes' copyto 8.4-8.9 G values/s
# against the shift's 5.8 on one; 2.8-3.1 against 14.1-14.3 on the next). So the machine decides, once,
# at the first product: each way upcasts a block a few times, and the faster is kept (UPCAST says which).
BF16 = np.dtype(ml_dtypes.bfloat16)


def _copyto(src, dst):
    np.copyto(dst, src, casting="unsafe")


def _shift(src, dst):
    np.left_shift(src.view(np.uint16), 16, out=dst.view(np.uint32), casting="unsafe", dtype=np.uint32)


def _choose(src, dst):
    """The first bf16 block: time both ways on it and keep the faster."""
    rates = {}
    for name, fn in (("copyto", _copyto), ("shift", _shift)):
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            fn(src, dst)
            best = min(best, time.perf_counter() - t0)
        rates[name] = src.size / max(best, 1e-9)
    name = max(rates, key=rates.get)
    UPCAST.update(choice=name, rates=rates)
    _UPCAST[0] = {"copyto": _copyto, "shift": _shift}[name]
    _UPCAST[0](src, dst)


UPCAST = {"choice": None, "rates": {}}   # which bf16 upcast this machine runs, and each one's values per second
_UPCAST = [_choose]


# The block size, from the L2 cache the machine reports: twice one core's. Measured on AMD EPYCs with
# 1 MB of L2 a core, bf16 decode of the 0.5B shape (tokens/s, one process, 32 steps a size):
#   earlier session:  512 KB 9.0-9.2, 1 MB 11.0-11.3, 2 MB 12.4-13.8, 4 MB 8.4, 8 MB 6.8
#   this session:     512 KB 6.4-7.7, 1 MB 7.3-8.0,  2 MB 7.3-8.1,  4 MB 5.9-7.2 (three rounds)
# So 1 to 2 times the L2, and never 4: a block is upcast into one buffer and multiplied from it while
# the next is being read. (Timing the candidates on the first large matrix, as the upcast is chosen,
# was tried and rejected: alone, one matrix ran within 5% at every size and the timing picked 4 MB,
# the slowest in the model, where the other steps share the cache.)
def l2_bytes(root="/sys/devices/system/cpu/cpu0/cache") -> int:
    """The L2 cache of one core, as the machine reports it (Linux sysfs), or 1 MB when it does not."""
    import glob
    for d in sorted(glob.glob(f"{root}/index*")):
        try:
            with open(f"{d}/level") as f:
                level = f.read().strip()
            with open(f"{d}/size") as f:
                size = f.read().strip()
        except OSError:
            continue
        if level == "2" and size[:-1].isdigit():
            return int(size[:-1]) << {"K": 10, "M": 20}.get(size[-1], 0)
    return 1 << 20


BLOCK = {"l2": l2_bytes()}
BLOCK["bytes"] = 2 * BLOCK["l2"]


def _rows(nbytes, cols):
    return max(ALIGN, nbytes // (4 * cols) // ALIGN * ALIGN)
