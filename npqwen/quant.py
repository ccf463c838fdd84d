"""Quantized checkpoints as released: block FP8, GPTQ int4 and AWQ int4, read as they are stored.

Each format stores a Linear's weight W [out, in] as small integers (or 8-bit floats) plus the
numbers that scale them back. npqwen keeps them memory-mapped as stored and, for each product,
dequantizes a cache-sized block of W into float32 and multiplies it there (stored.py), as its bf16
mode upcasts: memory carries a quarter or half of bf16's bytes. `--weights float32` instead
dequantizes every weight once at load. Either way the float32 weights are the formats' own
formula, computed in float32; nothing is rounded to bf16 or float16 on the way.

FP8 ("quant_method": "fp8", transformers' FineGrainedFP8; Qwen's -FP8 releases)
    weight          F8_E4M3 [out, in]      q: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits
    weight_scale_inv  float [ceil(out / bh), ceil(in / bw)]     one scale per bh x bw tile (128 x 128)
    W[r, c] = float(q[r, c]) * float(scale_inv[r // bh, c // bw])
    A dimension that is not a multiple of the tile uses a last, partial tile (ceil-div), as
    llama.cpp and transformers' GPU kernels do. (transformers' CPU fallback instead takes the tile
    to be rows // scale_rows: wrong there, see the README.)
    Decoding: a byte's low 7 bits shifted up by 20 are the float32 bits of q * 2^-120 (for every
    normal and subnormal e4m3 value), and its sign goes to bit 31. So one widening shift of the
    signed byte, one mask clearing the four bits the sign was copied into, and a multiply by
    scale * 2^120 give float(q) * scale exactly, as one float32 product, the formula's own rounding.
    (e4m3fn's NaN codes, 0x7f and 0xff, would read as +-480: a released weight holds no NaN.)

GPTQ ("quant_method": "gptq", 4 bits)
    qweight  int32 [in / 8, out]     8 values per int32 along the INPUT axis, value j at bits 4j
    qzeros   int32 [groups, out / 8] 8 zero points per int32 along the output axis
    scales   float [groups, out]     (float16 as released)
    g_idx    int32 [in]              each input channel's group: i // group_size, or, with
                                     act-order (desc_act), any assignment
    W[o, i] = (q[i, o] - z[g_idx[i], o]) * s[g_idx[i], o], where the stored zero is z - 1 in the
    original format (checkpoint_format "gptq" or absent) and z itself in "gptq_v2".
    group_size -1: one group over the whole input.

AWQ ("quant_method": "awq", version "gemm", zero_point)
    qweight  int32 [in, out / 8]     8 values per int32 along the OUTPUT axis, interleaved:
                                     output 8c + j is the value at bits 4 * AWQ_NIBBLE[j]
    qzeros   int32 [in / group, out / 8]  packed the same way
    scales   float [in / group, out]
    W[o, i] = (q[i, o] - z[i // group, o]) * s[i // group, o]

A `Quantized` weight stands where a stored [out, in] matrix would: it has a shape, rows can be
sliced from it without reading anything (q | k | v rows of a fused projection), `rows(buf)`
dequantizes its rows into float32, and np.asarray dequantizes the whole of it. The int4 formats
dequantize into buf as W^T [in, rows], the layout their packing gives without a transpose, and
hand back the transposed view (BLAS multiplies either layout).
"""

import functools
import math
from dataclasses import dataclass

import numpy as np

from .errors import CheckpointError, ConfigError
from .threads import WORKERS, parallel, scratch, split

METHODS = ("fp8", "gptq", "awq")
FLOATS = ("F32", "F16", "BF16")
AWQ_NIBBLE = np.array([0, 4, 1, 5, 2, 6, 3, 7])   # output 8c + j is packed at nibble AWQ_NIBBLE[j] (AutoAWQ's reverse order)
GPTQ_SHIFTS = (4 * np.arange(8, dtype=np.int32))[None, :, None]             # [1, 8, 1]: value j at bits 4j
AWQ_SHIFTS = (4 * AWQ_NIBBLE.astype(np.int32))[None, None, :]               # [1, 1, 8]
AWQ_ORDER = np.argsort(AWQ_NIBBLE)                  # value j of a word is output 8c + AWQ_ORDER[j]
TWO_120 = np.float32(2.0 ** 120)
MASKS = (np.uint32(15) << 4 * np.arange(8, dtype=np.uint32)).view(np.int32)[None, :, None, None]  # value j in place
UNSHIFT = np.array([16.0 ** -j for j in range(8)], np.float32)  # ... is q * 16^j: undone on x or on the products
SIGN = np.uint32(1 << 31).astype(np.int32)
@functools.lru_cache(maxsize=256)
def awq_columns(w8):
    """w8 words of outputs in the low-then-high-halves layout: the output of column (h, 4c + j), which is
    value 2j + h of word c."""
    h, c, j = np.meshgrid(np.arange(2), np.arange(w8), np.arange(4), indexing="ij")
    return (8 * c + AWQ_ORDER[2 * j + h]).reshape(-1)


FEW_ROWS = 16              # products with at most this many rows of x take the few-rows path (Int4.few_rows)
TILE_COLUMNS = 4096        # its slabs: up to this many outputs wide (long contiguous rows for NumPy's loops)...
TILE_FLOATS = 1 << 20      # ...and about this many values (4 MB of float32; measured best of 2 to 16 MB on the 7B shape)


# ---------------------------------------------------------------------------------------------
# the config's quantization_config


@dataclass
class QuantConfig:
    method: str                      # "fp8", "gptq" or "awq"
    bits: int = 4
    group_size: int = 128            # gptq / awq; -1: one group (gptq)
    plus_one: bool = True            # gptq: the stored zero is z - 1 (checkpoint_format "gptq")
    block: tuple = (128, 128)        # fp8: the tile of one scale
    not_converted: tuple = ()        # fp8: modules_to_not_convert, as given (informational)

    @property
    def label(self) -> str:
        if self.method == "fp8":
            return f"fp8 e4m3, {self.block[0]}x{self.block[1]} tiles"
        g = "one group" if self.group_size == -1 else f"group {self.group_size}"
        return f"{self.method} int4, {g}" + (" (v1 zeros)" if self.method == "gptq" and self.plus_one else "")


# What each method's config may say, beyond quant_method: a field that changes the numbers and is
# not honoured is refused; the others describe how the checkpoint was made.
_INFORMATIONAL = {
    "fp8": {"activation_scheme", "dequantize", "modules_to_not_convert", "ignored_layers"},
    "gptq": {"damp_percent", "true_sequential", "static_groups", "model_name_or_path", "model_file_base_name",
             "quant_method", "desc_act", "sym", "meta", "damp_auto_increment", "mse", "v2", "v2_alpha",
             "pack_dtype", "lm_head", "modules_in_block_to_quantize", "tokenizer", "dataset", "module_name_preceding_first_block",
             "batch_size", "pad_token_id", "use_exllama", "max_input_length", "exllama_config", "cache_block_outputs",
             "use_cuda_fp16", "disable_exllama", "backend", "use_marlin", "format", "hyb_act", "adapter", "device", "dynamic"},
    "awq": {"modules_to_not_convert", "quant_method", "backend", "do_fuse", "fuse_max_seq_len", "modules_to_fuse",
            "exllama_config"},
}


def parse_quant(d, src) -> QuantConfig | None:
    """config.json's quantization_config (top level, or text_config's) -> QuantConfig, or None."""
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ConfigError(f"{src}: quantization_config must be an object, found {type(d).__name__}")
    method = d.get("quant_method")
    if method not in METHODS:
        raise ConfigError(f"{src}: quantization_config.quant_method {method!r} is not supported "
                          f"(npqwen reads {', '.join(METHODS)}: block FP8, GPTQ int4 and AWQ int4 checkpoints)")
    where = f"{src}: quantization_config"
    if method == "fp8":
        if d.get("fmt", "e4m3") != "e4m3":
            raise ConfigError(f"{where}.fmt {d['fmt']!r} is not supported (npqwen reads e4m3)")
        if d.get("activation_scheme", "dynamic") != "dynamic":
            raise ConfigError(f"{where}.activation_scheme {d['activation_scheme']!r} is not supported: npqwen reads "
                              f"'dynamic' checkpoints, whose activations carry no stored scales")
        block = d.get("weight_block_size", [128, 128])
        if not (isinstance(block, list) and len(block) == 2 and all(_pos_int(b) for b in block)):
            raise ConfigError(f"{where}.weight_block_size must be two positive integers, found {block!r} "
                              f"(per-tensor FP8 scales are not read)")
        not_converted = d.get("modules_to_not_convert") or []
        if not (isinstance(not_converted, list) and all(isinstance(m, str) for m in not_converted)):
            raise ConfigError(f"{where}.modules_to_not_convert must be a list of names")
        _known(d, method, where, {"fmt", "weight_block_size", "scale_fmt"})
        if d.get("scale_fmt") not in (None, "float"):
            raise ConfigError(f"{where}.scale_fmt {d['scale_fmt']!r} is not supported (npqwen reads float scales)")
        return QuantConfig("fp8", 8, block=tuple(block), not_converted=tuple(not_converted))
    bits = d.get("bits", d.get("w_bit"))
    if bits != 4:
        raise ConfigError(f"{where}.bits {bits!r} is not supported (npqwen reads 4-bit {method.upper()})")
    group = d.get("group_size", d.get("q_group_size"))
    if not (isinstance(group, int) and not isinstance(group, bool) and (group > 0 or (group == -1 and method == "gptq"))):
        raise ConfigError(f"{where}.group_size must be a positive integer{' or -1' if method == 'gptq' else ''}, "
                          f"found {group!r}")
    if method == "gptq":
        fmt = d.get("checkpoint_format", d.get("format", "gptq"))
        if fmt not in ("gptq", "gptq_v2"):
            raise ConfigError(f"{where}.checkpoint_format {fmt!r} is not supported (npqwen reads 'gptq' and 'gptq_v2')")
        if d.get("pack_dtype", "int32") != "int32":
            raise ConfigError(f"{where}.pack_dtype {d['pack_dtype']!r} is not supported (npqwen reads int32 packing)")
        if d.get("dynamic"):
            raise ConfigError(f"{where}.dynamic (per-module overrides) is not supported")
        for name in ("desc_act", "sym"):
            if not isinstance(d.get(name, False), bool):
                raise ConfigError(f"{where}.{name} must be true or false, found {d[name]!r}")
        _known(d, method, where, {"bits", "group_size", "checkpoint_format"})
        return QuantConfig("gptq", 4, group, plus_one=fmt == "gptq")
    version = d.get("version", "gemm")
    if not isinstance(version, str) or version.lower() != "gemm":
        raise ConfigError(f"{where}.version {version!r} is not supported (npqwen reads AWQ 'gemm' packing)")
    if d.get("zero_point", True) is not True:
        raise ConfigError(f"{where}.zero_point {d['zero_point']!r} is not supported (npqwen reads AWQ with zero points)")
    _known(d, method, where, {"bits", "w_bit", "group_size", "q_group_size", "version", "zero_point"})
    return QuantConfig("awq", 4, group)


def _known(d, method, where, read):
    other = sorted(set(d) - read - _INFORMATIONAL[method] - {"quant_method"})
    if other:
        raise ConfigError(f"{where}.{other[0]} is not a field npqwen reads for {method} checkpoints "
                          f"(it would change the weights in a way npqwen does not honour)")


def _pos_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


# What Qwen's quantized releases quantize: every Linear of the decoder layers except Gated DeltaNet's
# small projections and the routers; never the embedding, the LM head, norms, the vision tower or the
# MTP layer (Qwen3.6-27B-FP8's modules_to_not_convert). The checkpoint itself says which are: this
# is for estimates (info) and for making checkpoints (scripts/quantize_checkpoint.py).
KEPT = ("in_proj_a.", "in_proj_b.", "in_proj_ba.", "embed_tokens.", "lm_head.", "visual.", "mtp.", "mlp.gate.",
        "shared_expert_gate.")


def released_quantized(name, shape) -> bool:
    return len(shape) == 2 and name.endswith("_proj.weight") and ".layers." in name and not any(k in name for k in KEPT)


def stored_bytes(qcfg: QuantConfig, shape) -> float:
    """Bytes a quantized [out, in] weight takes as stored: values, scales (and zeros, g_idx)."""
    out, cols = shape
    if qcfg.method == "fp8":
        return out * cols + 4 * math.ceil(out / qcfg.block[0]) * math.ceil(cols / qcfg.block[1])
    groups = 1 if qcfg.group_size == -1 else math.ceil(cols / qcfg.group_size)
    return out * cols / 2 + groups * out * (2 + 0.5) + (4 * cols if qcfg.method == "gptq" else 0)


# ---------------------------------------------------------------------------------------------
# the weights


class Quantized:
    """A weight [out, in] as a quantized format stores it; rows [r0, r0 + n) of it."""
    ndim = 2
    method = ""

    def __len__(self):
        return self.shape[0]

    @property
    def size(self):
        return self.shape[0] * self.shape[1]

    @property
    def dtype(self):   # what error messages and info print
        return self.method

    def __getitem__(self, rows):
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("a quantized weight is sliced by a range of rows only")
        a, b, _ = rows.indices(self.shape[0])
        return self._rows(a, max(a, b))

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, np.float32)
        dequantize_into(self, out)
        return out if dtype is None else out.astype(dtype, copy=False)


class FP8(Quantized):
    method = "fp8"

    def __init__(self, q, scale, block, r0=0):
        self.q, self.scale, self.block, self.r0 = q, scale, block, r0   # r0: the first row's index in the whole weight
        self.shape = q.shape

    def _rows(self, a, b):
        return FP8(self.q[a:b], self.scale, self.block, self.r0 + a)

    def rows(self, buf):  # -> float32 [n, in] in buf: float(q) * scale
        w = self.values(buf)
        for a, b, tile in _bands(self.r0, len(w), self.block[0]):
            self.scale_rows(w[a:b], tile)
        return w

    def values(self, buf):  # -> float32 [n, in] in buf: float(q) * 2^-120, exactly
        n, cols = self.shape
        w = buf.reshape(-1)[:n * cols].reshape(n, cols)
        bits = w.view(np.int32)
        np.left_shift(self.q.view(np.int8), 20, out=bits, dtype=np.int32, casting="unsafe")  # the sign fills bits 31..27,
        np.bitwise_and(bits, np.int32(~0x78000000), out=bits)                               # 30..27 are cleared again
        return w

    def scales(self, tile):  # -> float32 [in]: each column's scale in this band of tiles, times 2^120 (None: it
        s = self.scale[tile].astype(np.float32)                                      # would overflow)
        return np.repeat(s * TWO_120, self.block[1])[:self.shape[1]] if np.abs(s).max(initial=0) < 2 ** 7 else None

    def scale_rows(self, w, tile):
        s = self.scales(tile)
        if s is not None:       # s * 2^120 is exact: one float32 product per weight, as float(q) * s
            np.multiply(w, s, out=w)
        else:                   # two exact steps
            np.multiply(w, TWO_120, out=w)
            np.multiply(w, np.repeat(self.scale[tile].astype(np.float32), self.block[1])[:self.shape[1]], out=w)

    def product(self, x, buf, out):  # out = x @ W.T for these rows
        w = self.values(buf)
        for a, b, tile in _bands(self.r0, len(w), self.block[0]):
            s = self.scales(tile) if len(x) < b - a else None
            if s is not None:   # few rows of x: scaling them (the columns of each tile) is cheaper than the weights
                np.matmul(x * s, w[a:b].T, out=out[:, a:b])
            else:
                self.scale_rows(w[a:b], tile)
                np.matmul(x, w[a:b].T, out=out[:, a:b])


def _bands(r0, n, bh):  # rows [r0, r0 + n) cut where a tile of bh rows ends -> [(a, b, tile)], a and b from 0
    out, a = [], 0
    while a < n:
        tile = (r0 + a) // bh
        b = min(n, (tile + 1) * bh - r0)
        out.append((a, b, tile))
        a = b
    return out


class Int4(Quantized):
    """GPTQ and AWQ: 4-bit values with a zero point and a scale per group of input channels."""

    def __init__(self, qweight, qzeros, scales, groups, c0, n, cols, plus_one=False):
        """groups: [in] each input channel's group, or an int: the group size of i // size."""
        self.qweight, self.qzeros, self.scales, self.groups = qweight, qzeros, scales, groups
        self.c0, self.plus_one = c0, plus_one     # c0: the first row's (output channel's) index in the whole weight
        self.shape = (n, cols)

    def _rows(self, a, b):
        return type(self)(self.qweight, self.qzeros, self.scales, self.groups, self.c0 + a, b - a, self.shape[1],
                          self.plus_one)

    def rows(self, buf):  # -> float32 [n, in]: the transposed view of W^T [in, n], written in buf
        n, cols = self.shape
        wt = buf.reshape(-1)[:n * cols].reshape(cols, n)
        q = self.unpack_values(n, cols)                        # int32 [in, n]
        np.copyto(wt, q, casting="unsafe")
        z = self.zeros()                                       # float32 [groups, n]
        s = self.scales[:, self.c0:self.c0 + n].astype(np.float32)
        if isinstance(self.groups, int):                       # i // size: groups are runs of rows
            size = self.groups
            full = cols // size * size
            v = wt[:full].reshape(-1, size, n)
            np.subtract(v, z[:full // size, None], out=v)
            np.multiply(v, s[:full // size, None], out=v)
            if full < cols:                                    # (a last, shorter group)
                np.subtract(wt[full:], z[-1], out=wt[full:])
                np.multiply(wt[full:], s[-1], out=wt[full:])
        else:                                                  # act-order: each row its group's
            np.subtract(wt, z[self.groups], out=wt)
            np.multiply(wt, s[self.groups], out=wt)
        return wt.T

    def zeros(self):  # -> float32 [groups, n]
        z = unpack_columns(self.qzeros, self.c0, self.shape[0], self.shifts_out)
        return z.astype(np.float32) + (1 if self.plus_one else 0)

    def product(self, x, buf, out):  # out = x @ W.T for these rows (a block of a prompt's products)
        np.matmul(x, self.rows(buf).T, out=out)

    # -- few rows of x (decode): no float32 weights, the scales applied to the products ------------------
    #
    # For a few rows of x, dequantizing each weight costs more than the product itself. So the values
    # are only turned into floats, each group's slab of them multiplied by its inputs, and the zero
    # points and scales applied afterwards to the [n, out] results of each group:
    #     x @ W^T = sum over groups g of  s_g * (x_g @ q_g - z_g * sum(x_g))
    # And a value need not even be shifted down: the int32 masked in place, value j of a word at bits 4j,
    # is q * 16^j, exact as a float32; its input is multiplied by 16^-j instead (exact too). The last
    # value, at bits 28..31, is shifted (masking it would leave a negative int32). Each weight then
    # costs one integer mask and one int32 -> float32 conversion on long contiguous rows, and the product.

    @property
    def tiled(self) -> bool:   # the few-rows path needs groups that are runs of whole packed words
        size = self.groups
        return isinstance(size, int) and size % 8 == 0 and self.shape[1] % size == 0 and self.aligned

    def tiles(self):  # -> [(a, b)]: this part's rows (outputs) in slabs at most TILE_COLUMNS wide, at least two
        width = max(8, min(TILE_COLUMNS, -(-len(self) // 2 // 8) * 8))
        return [(a, min(a + width, len(self))) for a in range(0, len(self), width)]

    def tile_product(self, xg, xsum, a, b, out):  # out [n, b - a] = x @ W.T for rows a .. b
        size, groups = self.groups, self.shape[1] // self.groups
        per = max(1, TILE_FLOATS // (size * (b - a)))          # groups per slab
        acc = np.zeros(out.shape, np.float32)
        for g0 in range(0, groups, per):
            g1 = min(g0 + per, groups)
            self.tile(xg[g0:g1], xsum[g0:g1], g0, g1, a, b, acc)
        out[...] = acc


def few_rows(parts, starts, x, out):
    """out [n, sum of rows] = x @ W.T for a stack of GPTQ / AWQ parts (q | k | v), x a few rows: every
    part's slabs shared out over the cores in one parallel region, balanced by their size."""
    grouped, tasks = {}, []
    for p, s0 in zip(parts, starts):
        key = (type(p), p.groups)
        if key not in grouped:                                 # x in each layout once
            grouped[key] = p.grouped(x)
        tasks += [(p, grouped[key], int(s0) + a, a, b) for a, b in p.tiles()]
    shares = [[] for _ in range(min(WORKERS, len(tasks)) or 1)]
    load = [0] * len(shares)
    for t in sorted(tasks, key=lambda t: -(t[4] - t[3]) * t[0].shape[1]):   # largest first, to the least loaded
        i = load.index(min(load))
        shares[i].append(t)
        load[i] += (t[4] - t[3]) * t[0].shape[1]

    def work(share):
        for p, (xg, xsum), o, a, b in share:
            p.tile_product(xg, xsum, a, b, out[:, o:o + b - a])

    parallel(work, shares)


class GPTQ(Int4):
    method = "gptq"
    shifts_out = (4 * np.arange(8, dtype=np.int32))[None, None, :]     # zeros: output 8c + j at bits 4j
    aligned = True

    def grouped(self, x):  # x [n, in] -> ([G, n, size] inputs in the slab's order, times UNSHIFT[j]; [G, n] sums
        n, size = x.shape[0], self.groups                   # of the group's x, and of its inputs read as value 7 of a word)
        xr = x.reshape(n, -1, size // 8, 8)                    # input 8k + j, word k of group g
        xg = (xr * UNSHIFT).transpose(1, 0, 3, 2).reshape(-1, n, size)
        return np.ascontiguousarray(xg), np.stack([xr.sum((2, 3)).T, xr[..., 7].sum(2).T], axis=1)   # [G, 2, n]

    def tile(self, xg, sums, g0, g1, a, b, acc):  # acc [n, b - a] += groups g0..g1's part of x @ W.T, rows a..b
        size, width, k = self.groups, b - a, self.groups // 8
        q = self.qweight[g0 * k:g1 * k, self.c0 + a:self.c0 + b].reshape(g1 - g0, 1, k, width)
        slab = values_slab(q, (g1 - g0, 8, k, width))          # value j of word kk -> slab row j * k + kk
        r = np.matmul(xg, slab.reshape(g1 - g0, size, width))  # [groups, n, width]
        z = unpack_columns(self.qzeros[g0:g1], self.c0 + a, width, self.shifts_out) + (1 if self.plus_one else 0)
        s = self.scales[g0:g1, self.c0 + a:self.c0 + b].astype(np.float32)
        xsum, x7sum = sums[:, 0], sums[:, 1]
        r -= z[:, None, :] * xsum[:, :, None] - 8 * x7sum[:, :, None]   # (value 7 was read as q - 8)
        r *= s[:, None, :]
        acc += r.sum(0)

    @property
    def out(self):
        return self.qweight.shape[1]

    def unpack_values(self, n, cols):  # qweight [in / 8, out] -> int32 [in, n] for rows c0 .. c0 + n
        qw = self.qweight[:, self.c0:self.c0 + n]
        tmp = scratch("int4", (cols // 8, 8, n)).view(np.int32)
        np.right_shift(qw[:, None, :], GPTQ_SHIFTS, out=tmp)      # value j of each int32 to input 8k + j
        np.bitwise_and(tmp, 15, out=tmp)
        return tmp.reshape(cols, n)


class AWQ(Int4):
    method = "awq"
    shifts_out = AWQ_SHIFTS

    @property
    def aligned(self):   # whole packed words of outputs
        return self.c0 % 8 == 0 and len(self) % 8 == 0

    def grouped(self, x):
        n, size = x.shape[0], self.groups
        xg = x.reshape(n, -1, size).transpose(1, 0, 2)
        return np.ascontiguousarray(xg), xg.sum(2)

    def tile(self, xg, xsum, g0, g1, a, b, acc):  # as GPTQ's, with the 8 values of a word 8 outputs
        """AWQ packs along the output, so a byte of a word holds two outputs' values, lo + 16 hi, with no
        input between them: its low and high halves, taken on the bytes and converted, are two matrices
        [inputs, outputs / 2] whose products with x are every output's x . q. (Cheaper than masking the
        int32 words: the mask runs on bytes, and there are half as many conversions a slab.)"""
        size, w8, n = self.groups, (b - a) // 8, len(acc)
        c = (self.c0 + a) // 8
        byte = self.qweight[g0 * size:g1 * size, c:c + w8].view(np.uint8)      # [rows, 4 w8]: byte j of word c
        byte = byte.reshape(g1 - g0, size, 4 * w8)
        LH = scratch("slab", (2, g1 - g0, size, 4 * w8))                       # (each converted as computed)
        np.bitwise_and(byte, np.uint8(15), out=LH[0], dtype=np.uint8, casting="unsafe")
        np.right_shift(byte, np.uint8(4), out=LH[1], dtype=np.uint8, casting="unsafe")
        r = np.matmul(xg[None], LH)                            # [2, groups, n, 4 w8]: x . lo, x . hi
        r = r.transpose(1, 2, 3, 0).reshape(g1 - g0, n, w8, 8)  # value 2j + h of word c: output 8c + AWQ_ORDER[2j + h]
        z = self.qzeros[g0:g1, c:c + w8]
        z = ((z[:, :, None] >> np.arange(0, 32, 4, dtype=np.int32)) & 15).astype(np.float32)   # [groups, w8, 8]
        s = self.scales[g0:g1, self.c0 + a:self.c0 + b].astype(np.float32).reshape(g1 - g0, w8, 8)[:, :, AWQ_ORDER]
        r -= z[:, None] * xsum[:, :, None, None]
        r *= s[:, None]
        acc.reshape(n, w8, 8)[:, :, AWQ_ORDER] += r.sum(0)

    @property
    def out(self):
        return self.qweight.shape[1] * 8

    def unpack_values(self, n, cols):  # qweight [in, out / 8] -> int32 [in, n]
        return unpack_columns(self.qweight, self.c0, n, AWQ_SHIFTS)

    def product(self, x, buf, out):  # a block of a prompt's product, whole words: W^T from the bytes' halves
        if not self.aligned:
            return super().product(x, buf, out)
        n, cols = self.shape
        w8, c, size = n // 8, self.c0 // 8, self.groups
        byte = self.qweight[:, c:c + w8].view(np.uint8)                       # [in, 4 w8]
        wt = buf.reshape(-1)[:cols * n].reshape(cols, 2, 4 * w8)             # low halves, then high halves
        np.bitwise_and(byte, np.uint8(15), out=wt[:, 0], dtype=np.uint8, casting="unsafe")
        np.right_shift(byte, np.uint8(4), out=wt[:, 1], dtype=np.uint8, casting="unsafe")
        zbyte = self.qzeros[:, c:c + w8].view(np.uint8)                       # the zeros alike: [groups, 2, 4 w8]
        z = np.stack([zbyte & 15, zbyte >> 4], axis=1).astype(np.float32)
        order = awq_columns(w8)                                              # column (h, 4c + j): output 8c + AWQ_ORDER[2j + h]
        s = self.scales[:, self.c0:self.c0 + n].astype(np.float32)[:, order].reshape(-1, 2, 4 * w8)
        v = wt.reshape(-1, size, 2, 4 * w8)                                   # exactly (q - z) * s, in float32
        np.subtract(v, z[:, None], out=v)
        np.multiply(v, s[:, None], out=v)
        out[:, order] = np.matmul(x, wt.reshape(cols, n))


def values_slab(q, shape):
    """Packed words q [g, 1, k, w] -> float32 slab [g, 8, k, w]: value j of each word, masked in place
    (q * 16^j) and converted to float32 in the same pass (NumPy's buffered cast, in cache), over the
    whole slab at once. Value 7 holds the sign bit of the int32: with that bit flipped first, it
    reads as the int32 (q - 8) * 2^28, exactly."""
    flipped = scratch("words", q.shape).view(np.int32)
    np.bitwise_xor(q, SIGN, out=flipped)
    slab = scratch("slab", shape)
    np.bitwise_and(flipped, MASKS, out=slab, dtype=np.int32, casting="unsafe")
    return slab


def unpack_columns(packed, c0, n, shifts):
    """int32 [r, out / 8], 8 values packed along the output axis -> int32 [r, n]: outputs c0 .. c0 + n."""
    p0, p1 = c0 // 8, -(-(c0 + n) // 8)
    r = packed.shape[0]
    tmp = scratch("int4", (r, p1 - p0, 8)).view(np.int32)
    np.right_shift(packed[:, p0:p1, None], shifts, out=tmp)
    np.bitwise_and(tmp, 15, out=tmp)
    return tmp.reshape(r, -1)[:, c0 - 8 * p0:c0 - 8 * p0 + n]


def dequantize_into(w: Quantized, out: np.ndarray) -> None:
    """The whole of w as float32 into out [rows, in] (C-contiguous), a share of the rows per core."""
    n, cols = w.shape
    step = max(8, (1 << 20) // max(cols, 1) // 8 * 8)     # about 4 MB of float32 at a time

    def work(blocks):
        for a in range(blocks.start * step, min(n, blocks.stop * step), step):
            b = min(a + step, n)
            if isinstance(w, FP8):                     # dequantized in place, in its own layout
                w[a:b].rows(out[a:b])
            else:
                np.copyto(out[a:b], w[a:b].rows(scratch("dequantize", ((b - a) * cols,))))

    parallel(work, split(-(-n // step)))


# ---------------------------------------------------------------------------------------------
# a checkpoint's tensors -> its quantized weights


def wrap(tensors: dict, qcfg: QuantConfig | None, folder: str) -> dict:
    """Each quantized Linear's tensors (weight + weight_scale_inv; qweight, qzeros, scales, g_idx)
    -> one `<name>.weight`, a Quantized [out, in]. Every other tensor stays as it is. Raises one
    CheckpointError naming the tensor and what is wrong with it."""
    names = {"fp8": [n for n in tensors if n.endswith(".weight") and stored_name(tensors[n].dtype).startswith("F8")],
             "int4": [n[:-len(".qweight")] for n in tensors if n.endswith(".qweight")]}
    found = "fp8" if names["fp8"] else "int4" if names["int4"] else None
    if qcfg is None:
        if found:
            example = names["fp8"][0] if found == "fp8" else names["int4"][0] + ".qweight"
            raise CheckpointError(f"{folder}: {example} is quantized but config.json has no quantization_config "
                                  f"saying how")
        return tensors
    out = dict(tensors)
    where = f"{folder}: "
    if qcfg.method == "fp8":
        if names["int4"]:
            raise CheckpointError(f"{where}{names['int4'][0]}.qweight is GPTQ/AWQ-packed, but quantization_config says fp8")
        for name in names["fp8"]:
            out[name] = _fp8(out, name, qcfg, where)
        stray = [n for n in out if n.endswith(".weight_scale_inv")]
        if stray:
            raise CheckpointError(f"{where}{stray[0]} is a scale without an F8_E4M3 "
                                  f"{stray[0][:-len('_scale_inv')]} beside it")
        return out
    if names["fp8"]:
        raise CheckpointError(f"{where}{names['fp8'][0]} is FP8, but quantization_config says {qcfg.method}")
    for base in names["int4"]:
        out[base + ".weight"] = _int4(out, base, qcfg, where)
    return out


def _fp8(t, name, qcfg, where):
    q = t.pop(name)
    scale = t.pop(name + "_scale_inv", None)
    if scale is None:
        raise CheckpointError(f"{where}{name} is F8_E4M3 but {name}_scale_inv, its scales, is missing")
    _float(scale, name + "_scale_inv", where)
    if q.ndim != 2:
        raise CheckpointError(f"{where}{name} is an F8_E4M3 tensor of shape {list(q.shape)}: npqwen reads FP8 "
                              f"matrices [out, in] (experts stored one by one)")
    bh, bw = qcfg.block
    want = (-(-q.shape[0] // bh), -(-q.shape[1] // bw))
    if tuple(scale.shape) != want:
        raise CheckpointError(f"{where}{name}_scale_inv has shape {list(scale.shape)}, but a {list(q.shape)} weight in "
                              f"{bh} x {bw} tiles needs {list(want)}")
    return FP8(_plain(q).view(np.uint8), _plain(scale), (bh, bw))


def _int4(t, base, qcfg, where):
    parts = {k: t.pop(f"{base}.{k}", None) for k in ("qweight", "qzeros", "scales", "g_idx")}
    for k in ("qzeros", "scales"):
        if parts[k] is None:
            raise CheckpointError(f"{where}{base}.{k} is missing ({base}.qweight is {qcfg.method.upper()}-packed "
                                  f"and needs its qzeros and scales)")
    qw, qz, sc, g = parts["qweight"], parts["qzeros"], parts["scales"], parts["g_idx"]
    for k in ("qweight", "qzeros"):
        if stored_name(parts[k].dtype) != "I32" or parts[k].ndim != 2:
            raise CheckpointError(f"{where}{base}.{k} is {stored_name(parts[k].dtype)} of shape {list(parts[k].shape)}, "
                                  f"expected a 2-D I32 tensor of packed 4-bit values")
    _float(sc, base + ".scales", where)
    if qcfg.method == "gptq":
        cols, out = qw.shape[0] * 8, qw.shape[1]
        size = cols if qcfg.group_size == -1 else qcfg.group_size
        n_groups = -(-cols // size)
    else:
        if g is not None:
            raise CheckpointError(f"{where}{base}.g_idx: AWQ checkpoints have no g_idx (is this GPTQ?)")
        cols, out = qw.shape[0], qw.shape[1] * 8
        size = qcfg.group_size
        if cols % size:
            raise CheckpointError(f"{where}{base}.qweight has {cols} input channels, not a multiple of group_size {size}")
        n_groups = cols // size
    if tuple(sc.shape) != (n_groups, out):
        raise CheckpointError(f"{where}{base}.scales has shape {list(sc.shape)}, expected {[n_groups, out]} "
                              f"({cols} inputs in groups of {size}, {out} outputs)")
    if tuple(qz.shape) != (n_groups, -(-out // 8)):
        raise CheckpointError(f"{where}{base}.qzeros has shape {list(qz.shape)}, expected {[n_groups, -(-out // 8)]}")
    groups = size
    if g is not None:
        if g.ndim != 1 or g.shape[0] != cols or g.dtype.kind not in "iu":
            raise CheckpointError(f"{where}{base}.g_idx is {stored_name(g.dtype)} of shape {list(g.shape)}, expected "
                                  f"{cols} integers (one group index per input channel)")
        g = np.asarray(g, np.int64)
        bad = np.flatnonzero((g < 0) | (g >= n_groups))
        if bad.size:
            raise CheckpointError(f"{where}{base}.g_idx[{bad[0]}] is {g[bad[0]]}, outside the {n_groups} groups")
        if not np.array_equal(g, np.arange(cols) // size):
            groups = g.astype(np.intp)                   # act-order: any channel in any group
    cls = GPTQ if qcfg.method == "gptq" else AWQ
    return cls(_plain(qw).view(np.int32), _plain(qz).view(np.int32), _plain(sc), groups, 0, out, cols,
               plus_one=qcfg.method == "gptq" and qcfg.plus_one)


def _plain(a):  # a plain view of a memory map: np.memmap's own slicing costs microseconds each time
    return a.view(np.ndarray) if isinstance(a, np.memmap) else a


def stored_name(dtype) -> str:
    from .weights import stored_name as name   # (weights.py imports this module)
    return name(dtype)


def _float(t, name, where):
    if stored_name(t.dtype) not in FLOATS:
        raise CheckpointError(f"{where}{name} is {stored_name(t.dtype)}, expected a float tensor ({', '.join(FLOATS)})")
