"""Quantize a checkpoint folder into one of the released formats npqwen reads (npqwen/quant.py):
block FP8, GPTQ int4 or AWQ int4, by rounding to nearest (no calibration: for benchmarks and
tests, where the layout, sizes and arithmetic matter, not the quality).

    python scripts/quantize_checkpoint.py SRC OUT --method fp8|gptq|awq [--group 128] [--scale-dtype F32]
        [--act-order] [--asym] [--gptq-v2]

Quantized, as in Qwen's releases (npqwen.quant.released_quantized): every Linear of the decoder
layers (attention, Gated DeltaNet's in_proj_qkv / in_proj_z / out_proj, MLPs and experts). Kept as
stored: embeddings, the LM head, norms, routers, DeltaNet's small projections (in_proj_a /
in_proj_b / in_proj_ba) and anything outside the layers (the vision tower, the MTP layer). The packing here is written from the formats'
descriptions; the golden data (scripts/export_golden_quant.py) checks npqwen against independent
dequantizers, not against this.
"""

import argparse
import json
import os
import shutil
import sys

import ml_dtypes
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from npqwen.quant import released_quantized  # noqa: E402
from npqwen.weights import open_checkpoint  # noqa: E402

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]    # AutoAWQ's pack order: nibble p holds output 8c + AWQ_ORDER[p]
FP8_MAX = 448.0


def quantized(name, a) -> bool:
    return released_quantized(name, a.shape)


# ---------------------------------------------------------------------------------------------
# one matrix W [out, in] -> the format's tensors


def fp8(w, block=(128, 128), scale_dtype="F32"):
    out, cols = w.shape
    bh, bw = block
    sr, sc = -(-out // bh), -(-cols // bw)
    pad = np.zeros((sr * bh, sc * bw), np.float32)
    pad[:out, :cols] = w
    tiles = pad.reshape(sr, bh, sc, bw)
    amax = np.abs(tiles).max(axis=(1, 3))
    scale = np.where(amax > 0, amax / FP8_MAX, 1.0).astype(DT[scale_dtype]).astype(np.float32)   # as stored
    q = (tiles / scale[:, None, :, None]).reshape(sr * bh, sc * bw)[:out, :cols]
    q = np.clip(q, -FP8_MAX, FP8_MAX).astype(ml_dtypes.float8_e4m3fn)
    return {"weight": q, "weight_scale_inv": scale.astype(DT[scale_dtype])}


def int4_values(w, group, sym, g_idx):
    """W [out, in] -> (q [in, out] in 0..15, zero [groups, out] in 0..15, scale [groups, out] float16)."""
    wt = w.T.astype(np.float32)                                  # [in, out]
    n_groups = int(g_idx.max()) + 1
    zero = np.empty((n_groups, w.shape[0]), np.int64)
    scale = np.empty((n_groups, w.shape[0]), np.float16)
    q = np.empty(wt.shape, np.int64)
    for g in range(n_groups):
        rows = np.flatnonzero(g_idx == g)
        x = wt[rows]
        if sym:
            s = np.maximum(np.abs(x).max(0), 1e-8) * 2 / 15
            z = np.full(x.shape[1], 8)
        else:
            lo, hi = np.minimum(x.min(0), 0), np.maximum(x.max(0), 0)
            s = np.maximum(hi - lo, 1e-8) / 15
            z = np.clip(np.round(-lo / s), 0, 15).astype(np.int64)
        s16 = s.astype(np.float16)
        s32 = np.maximum(s16.astype(np.float32), np.float32(6e-8))
        q[rows] = np.clip(np.round(x / s32) + z, 0, 15)
        zero[g], scale[g] = z, s16
    return q, zero, scale


def pack(values, axis):
    """Non-negative ints < 16 -> int32, 8 per word along axis (0 or 1), value j at bits 4j."""
    v = np.moveaxis(values.astype(np.uint32), axis, -1)
    v = v.reshape(*v.shape[:-1], -1, 8)
    word = np.zeros(v.shape[:-1], np.uint32)
    for j in range(8):
        word |= v[..., j] << np.uint32(4 * j)
    return np.ascontiguousarray(np.moveaxis(word, -1, axis)).view(np.int32)


def gptq(w, group=128, sym=True, act_order=False, v1=True, rng=None):
    cols = w.shape[1]
    size = cols if group == -1 else group
    g_idx = np.arange(cols) // size
    if act_order:   # channels taken in a permuted order, groups of `size` consecutive in that order
        perm = (rng or np.random.default_rng(0)).permutation(cols)
        g_idx = np.empty(cols, np.int64)
        g_idx[perm] = np.arange(cols) // size
    q, zero, scale = int4_values(w, group, sym, g_idx)
    stored_zero = zero - 1 if v1 else zero          # the original format stores zero - 1 (0 - 1 wraps to 15)
    return {"qweight": pack(q, 0), "qzeros": pack(stored_zero & 15, 1), "scales": scale,
            "g_idx": g_idx.astype(np.int32)}


def awq(w, group=128):
    cols = w.shape[1]
    q, zero, scale = int4_values(w, group, False, np.arange(cols) // group)

    def interleave(v):   # [r, out] -> columns in AWQ's pack order, so that pack puts output 8c + order[p] at nibble p
        r, out = v.shape
        return v.reshape(r, out // 8, 8)[:, :, AWQ_ORDER].reshape(r, out)
    return {"qweight": pack(interleave(q), 1), "qzeros": pack(interleave(zero), 1), "scales": scale}


DT = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
NAMES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(ml_dtypes.bfloat16): "BF16",
         np.dtype(np.int32): "I32", np.dtype(ml_dtypes.float8_e4m3fn): "F8_E4M3"}


# ---------------------------------------------------------------------------------------------
# a folder


def quant_config(method, group=128, act_order=False, sym=None, v1=True, block=(128, 128)):
    if method == "fp8":
        return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": list(block),
                "modules_to_not_convert": ["lm_head", "embed_tokens", "in_proj_a", "in_proj_b", "in_proj_ba", "mlp.gate",
                                           "shared_expert_gate"]}
    if method == "gptq":
        return {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": act_order,
                "sym": True if sym is None else sym, "damp_percent": 0.01, "true_sequential": True,
                "static_groups": False, "checkpoint_format": "gptq" if v1 else "gptq_v2"}
    return {"quant_method": "awq", "bits": 4, "group_size": group, "version": "gemm", "zero_point": True,
            "modules_to_not_convert": None}


def write_safetensors(path, items):
    """items: [(name, shape, dtype name, fn() -> array)]: the header first, then each array as it is made."""
    header, offset = {}, 0
    for name, shape, dt, _ in items:
        n = int(np.prod(shape)) * np.dtype(DTYPE_OF[dt]).itemsize
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name, shape, dt, make in items:
            a = np.ascontiguousarray(make())
            assert a.shape == tuple(shape) and NAMES[a.dtype] == dt, name
            f.write(a.tobytes())


DTYPE_OF = {v: k for k, v in NAMES.items()}


def plan(tensors, method, options):
    """-> [(name, shape, dtype, fn)] of the quantized checkpoint, each array made only when written (so
    that a 7B checkpoint is never in memory whole): the shapes come from quantizing a small stand-in."""
    items, made = [], {}

    def part(name, base, key):
        def fn():
            if base not in made:          # the parts of one weight are written one after the other
                made.clear()
                made[base] = dict(quantize_one(np.asarray(tensors[base + ".weight"], np.float32), method, options))
            return made[base][key]
        return fn

    for name, a in tensors.items():
        if not quantized(name, a):
            items.append((name, a.shape, NAMES[np.dtype(a.dtype)], lambda a=a: a))
            continue
        base = name[:-len(".weight")]
        for key, shape, dt in shapes(a.shape, method, options):
            items.append((f"{base}.{key}", shape, dt, part(name, base, key)))
    return items


def shapes(shape, method, options):  # -> [(key, shape, dtype)] of one quantized weight [out, in]
    out, cols = shape
    if method == "fp8":
        bh, bw = options.get("block", (128, 128))
        return [("weight", shape, "F8_E4M3"), ("weight_scale_inv", (-(-out // bh), -(-cols // bw)),
                                                options.get("scale_dtype", "F32"))]
    group = options.get("group", 128)
    groups = 1 if group == -1 else -(-cols // group)
    if method == "gptq":
        return [("qweight", (cols // 8, out), "I32"), ("qzeros", (groups, out // 8), "I32"), ("scales", (groups, out), "F16"),
                ("g_idx", (cols,), "I32")]
    return [("qweight", (cols, out // 8), "I32"), ("qzeros", (groups, out // 8), "I32"), ("scales", (groups, out), "F16")]


def quantize_one(w, method, options):
    o = dict(options)
    if method == "fp8":
        return list(fp8(w, o.get("block", (128, 128)), o.get("scale_dtype", "F32")).items())
    if method == "gptq":
        return list(gptq(w, o.get("group", 128), o.get("sym", True) if o.get("sym") is not None else True,
                         o.get("act_order", False), o.get("v1", True), np.random.default_rng(w.shape[0])).items())
    return list(awq(w, o.get("group", 128)).items())


def quantize_folder(src, out, method, **options):
    os.makedirs(out, exist_ok=True)
    tensors = open_checkpoint(src)
    write_safetensors(os.path.join(out, "model.safetensors"), plan(tensors, method, options))
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    keys = {k: options[k] for k in ("group", "act_order", "sym", "v1", "block") if k in options}
    cfg["quantization_config"] = quant_config(method, **keys)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for extra in os.listdir(src):
        if extra not in ("config.json",) and not extra.endswith(".safetensors") and not extra.endswith(".index.json") \
                and os.path.isfile(os.path.join(src, extra)):
            shutil.copy(os.path.join(src, extra), os.path.join(out, extra))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--method", choices=("fp8", "gptq", "awq"), required=True)
    p.add_argument("--group", type=int, default=128, help="gptq / awq group size (gptq: -1 for one group)")
    p.add_argument("--scale-dtype", choices=list(DT), default="F32", help="fp8: the dtype the scales are stored in")
    p.add_argument("--act-order", action="store_true", help="gptq: desc_act, groups over a permutation of the inputs")
    p.add_argument("--asym", action="store_true", help="gptq: asymmetric zero points (awq always is)")
    p.add_argument("--gptq-v2", action="store_true", help="gptq: checkpoint_format gptq_v2 (zeros stored without -1)")
    a = p.parse_args()
    opts = dict(scale_dtype=a.scale_dtype) if a.method == "fp8" else \
        dict(group=a.group, act_order=a.act_order, sym=not a.asym, v1=not a.gptq_v2) if a.method == "gptq" else dict(group=a.group)
    print(quantize_folder(a.src, a.out, a.method, **opts))
