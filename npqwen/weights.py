"""Weights loading: safetensors files memory-mapped into NumPy, and a checkpoint's tensors checked
against its config.

Why a reader of our own: the safetensors package hands tensors to NumPy only for dtypes NumPy
knows, and NumPy has no bfloat16, the dtype nearly every Qwen2 checkpoint is saved in. The format
is simple: an 8-byte little-endian header length N, N bytes of JSON describing each tensor
({"dtype", "shape", "data_offsets": [begin, end]} relative to the data region), then the data.
We validate the header exactly as the format's own library does (header size bound, UTF-8 JSON
object, known dtypes, offsets contiguous from 0 and matching shape x dtype size, data region
ending at end of file) and `np.memmap` the data read-only, viewing bf16 through ml_dtypes. Nothing
is read into memory until a tensor is used, and no pickle is ever involved.
"""

import json
import os

import ml_dtypes
import numpy as np

from .errors import CheckpointError
from . import quant, stored
from .threads import parallel, split

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit

DTYPES = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
    "U16": np.dtype(np.uint16), "I16": np.dtype(np.int16), "U32": np.dtype(np.uint32),
    "I32": np.dtype(np.int32), "U64": np.dtype(np.uint64), "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16), "F32": np.dtype(np.float32), "F64": np.dtype(np.float64),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
FLOAT_DTYPES = ("F32", "F16", "BF16")  # what a model's weights may be stored as


# ---------------------------------------------------------------------------------------------
# one safetensors file


def read_header(path: str) -> tuple[int, dict, dict]:
    """Parse and validate a safetensors header. -> (data_start, {name: (dtype, shape, begin, end)}, metadata)"""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: file is {size} bytes, too small to be safetensors "
                                      f"(needs an 8-byte header length)")
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit "
                                      f"(not a safetensors file, or corrupt)")
            if 8 + n > size:
                raise CheckpointError(f"{path}: header length {n} runs past the end of the {size}-byte file "
                                      f"(truncated download?)")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: header is not UTF-8 (not a safetensors file, or corrupt)") from None
    if not text.startswith("{"):
        raise CheckpointError(f"{path}: header does not start with '{{' (not a safetensors file, or corrupt)")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: header {e}") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, or an integer of thousands of digits
        raise CheckpointError(f"{path}: header is not valid JSON ({str(getattr(e, 'msg', e))[:120]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: header is not a JSON object")

    metadata = obj.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: __metadata__ must map names to strings")
    tensors = {}
    for name, info in obj.items():
        tensors[name] = _tensor_info(path, name, info)

    # Offsets must tile the data region exactly, in order, with no gaps or overlaps.
    expected = 0
    for name, (dtype, shape, begin, end) in sorted(tensors.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != expected or end < begin:
            raise CheckpointError(f"{path}: tensor {name!r} has data_offsets [{begin}, {end}] but the previous "
                                  f"tensor ends at {expected} (offsets overlap or leave a gap)")
        nbytes = DTYPES[dtype].itemsize
        for d in shape:
            nbytes *= d
        if end - begin != nbytes:
            raise CheckpointError(f"{path}: tensor {name!r} of dtype {dtype} and shape {list(shape)} needs "
                                  f"{nbytes} bytes but its data_offsets span {end - begin}")
        expected = end
    if 8 + n + expected != size:
        raise CheckpointError(f"{path}: the header describes {expected} bytes of tensor data but the file holds "
                              f"{size - 8 - n} (truncated or padded file)")
    return 8 + n, tensors, metadata


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise CheckpointError(f"names {dup!r} twice")
    return dict(pairs)


def _tensor_info(path, name, info):
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(f"{path}: tensor {name!r} must be an object with exactly dtype, shape and "
                              f"data_offsets, found {_short(info)}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(f"{path}: tensor {name!r} has unknown dtype {_short(dtype)} "
                              f"(known: {', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        raise CheckpointError(f"{path}: tensor {name!r} has shape {_short(shape)}, not a list of "
                              f"non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_uint(o) for o in offsets)):
        raise CheckpointError(f"{path}: tensor {name!r} has data_offsets {_short(offsets)}, not two "
                              f"non-negative integers")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _is_uint(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**63


def _short(x) -> str:
    s = repr(x)
    return s if len(s) <= 80 else s[:77] + "..."


def open_safetensors(path: str) -> dict[str, np.ndarray]:
    """Memory-map every tensor of a safetensors file. -> {name: read-only array in its stored dtype}"""
    start, tensors, _ = read_header(path)
    size = os.path.getsize(path)
    if size == start:  # no tensor data at all (mmap cannot map zero bytes)
        data = np.zeros(0, np.uint8)
        data.flags.writeable = False
    else:
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(size - start,))
    return {name: data[begin:end].view(DTYPES[dtype]).reshape(shape)
            for name, (dtype, shape, begin, end) in tensors.items()}


# ---------------------------------------------------------------------------------------------
# a checkpoint folder: model.safetensors, or shards listed by model.safetensors.index.json

INDEX = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def open_checkpoint(folder: str) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint folder, memory-mapped. -> {name: array in its stored dtype}"""
    index_path = os.path.join(folder, INDEX)
    if os.path.isfile(index_path):
        return _open_sharded(folder, index_path)
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return open_safetensors(single)
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    if len(files) == 1:
        return open_safetensors(os.path.join(folder, files[0]))
    if len(files) > 1:
        raise CheckpointError(f"{folder}: several .safetensors files ({', '.join(files[:4])}...) but no {INDEX} "
                              f"saying which tensor is in which")
    pickles = sorted(f for f in os.listdir(folder) if f.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointError(
            f"{folder}: only PyTorch pickle weights ({', '.join(pickles[:3])}). npqwen reads safetensors only, "
            f"because loading a pickle can run arbitrary code. Convert once where torch is installed and you "
            f"trust the file: AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(OUT, "
            f"safe_serialization=True)")
    raise CheckpointError(f"{folder}: no model.safetensors or {INDEX} (is this a checkpoint folder?)")


def _open_sharded(folder, index_path):
    try:
        with open(index_path, "rb") as f:
            index = json.loads(f.read(MAX_HEADER_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{index_path}: not valid UTF-8 JSON ({e})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_path}: needs a 'weight_map' object mapping tensor names to shard files")
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        if os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise CheckpointError(f"{index_path}: shard name {shard!r} must be a file name inside the folder")
        shard_path = os.path.join(folder, shard)
        if not os.path.isfile(shard_path):
            raise CheckpointError(f"{index_path}: names shard {shard!r}, which is not in {folder}")
        in_shard = open_safetensors(shard_path)
        listed = [name for name, s in weight_map.items() if s == shard]
        missing = [name for name in listed if name not in in_shard]
        if missing:
            raise CheckpointError(f"{index_path}: lists {missing[0]!r} in {shard!r}, which does not hold it"
                                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        for name in listed:
            tensors[name] = in_shard[name]
    return tensors


# ---------------------------------------------------------------------------------------------
# tensors against the config

# transformers itself ignores these when loading (old checkpoints saved RoPE buffers).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# The multi-token-prediction layer of the hybrid generation's released checkpoints (npqwen, as
# transformers, never loads it), and a vision tower whose config.json has no vision_config.
IGNORED_PREFIXES = ("model.visual.", "mtp.")


def expected_shapes(cfg, fused_experts=False) -> dict[str, tuple]:
    """The name and shape of every tensor the checkpoint of this config holds, as transformers
    saves it: one tensor set per expert for the mixture-of-experts models, or, as Qwen3.5-MoE's
    released files store them, all experts of a layer in two fused tensors (fused_experts)."""
    if cfg.hyper_connections:
        return flash_next_shapes(cfg, fused_experts)
    D, V, m = cfg.hidden_size, cfg.vocab_size, cfg.weight_prefix
    shapes = {m + "embed_tokens.weight": (V, D), m + "norm.weight": (D,)}
    for i in range(cfg.num_hidden_layers):
        p = f"{m}layers.{i}."
        shapes[p + "input_layernorm.weight"] = (D,)
        if cfg.layer_types[i] == "linear_attention":
            shapes.update(deltanet_shapes(cfg, p + "linear_attn."))
        else:
            shapes.update(attention_shapes(cfg, p + "self_attn."))
        shapes[p + "post_attention_layernorm.weight"] = (D,)
        if cfg.is_sparse(i):
            shapes.update(sparse_moe_shapes(cfg, p + "mlp.", fused_experts))
        else:
            shapes.update(mlp_shapes(D, cfg.intermediate_size, p + "mlp."))
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, D)
    return shapes


def flash_next_shapes(cfg, fused_experts=False) -> dict:
    """Qwen3.8-Flash-Next: no norms around the layers, two stream readers per layer and the final
    mixer (hyper.py), the indexer beside every attention layer (qsa.py), and the PLE layers'
    projections (engram.py; their n-gram table and hash constants are checked by engram.open_table)."""
    D, V, m, hcD, r = cfg.hidden_size, cfg.vocab_size, cfg.weight_prefix, cfg.hc_count * cfg.hidden_size, cfg.hc_lowrank

    def reader(p, inject=True):
        out = {p + "hc_norm.weight": (hcD,), p + "input_mix_weight_down.weight": (r, hcD),
               p + "input_mix_weight_up.weight": (hcD, r)}
        return dict(out, **({p + "block_inject_weight.weight": (cfg.hc_count, hcD)} if inject else {}))

    shapes = {m + "embed_tokens.weight": (V, D), **reader(m + "hyper_connection_mixer.", inject=False)}
    for i in range(cfg.num_hidden_layers):
        p = f"{m}layers.{i}."
        shapes.update(reader(p + "attn_hyper_connection."))
        shapes.update(reader(p + "mlp_hyper_connection."))
        if cfg.layer_types[i] == "linear_attention":
            shapes.update(deltanet_shapes(cfg, p + "linear_attn."))
        else:
            a, n, di = p + "self_attn.", cfg.indexer_n_heads, cfg.indexer_head_dim
            shapes.update(attention_shapes(cfg, a))
            shapes.update({a + "indexer.index_qk_proj.weight": ((n + 1) * di, D), a + "indexer.q_layernorm.weight": (di,),
                           a + "indexer.k_layernorm.weight": (di,)})
        shapes.update(sparse_moe_shapes(cfg, p + "mlp.", fused_experts))
        if i + 1 in cfg.ple_layer_ids:
            e, P = p + "ple.", cfg.ple_embed_dim
            shapes.update({e + "key_proj.weight": (hcD, P), e + "value_proj.weight": (D, P), e + "norm_key.weight": (hcD,),
                           e + "norm_query.weight": (hcD,), e + "norm_conv.weight": (hcD,),
                           e + "conv1d.weight": (hcD, 1, cfg.ple_conv_kernel_size)})
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, D)
    return shapes


def ngram_prefixes(cfg) -> tuple:
    """Where the PLE layers' n-gram tables and hash constants are (engram.open_table checks them)."""
    return tuple(f"{cfg.weight_prefix}layers.{i - 1}.ple.ple_embedding." for i in cfg.ple_layer_ids)


def attention_shapes(cfg, p) -> dict:
    D, hd = cfg.hidden_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    q_out = 2 * q if cfg.hybrid else q  # gated attention: a gate beside each query head
    shapes = {p + "q_proj.weight": (q_out, D), p + "k_proj.weight": (kv, D), p + "v_proj.weight": (kv, D),
              p + "o_proj.weight": (D, q)}
    if cfg.qkv_bias:
        shapes.update({p + "q_proj.bias": (q_out,), p + "k_proj.bias": (kv,), p + "v_proj.bias": (kv,)})
    if cfg.o_proj_bias:
        shapes[p + "o_proj.bias"] = (D,)
    if cfg.qk_norm:
        shapes.update({p + "q_norm.weight": (hd,), p + "k_norm.weight": (hd,)})
    return shapes


def deltanet_shapes(cfg, p) -> dict:
    D, Hv = cfg.hidden_size, cfg.linear_num_value_heads
    Kd, Vd = cfg.linear_num_key_heads * cfg.linear_key_head_dim, Hv * cfg.linear_value_head_dim
    conv = 2 * Kd + Vd
    if cfg.deltanet_layout == "fused":
        shapes = {p + "in_proj_qkvz.weight": (conv + Vd, D), p + "in_proj_ba.weight": (2 * Hv, D)}
    else:
        shapes = {p + "in_proj_qkv.weight": (conv, D), p + "in_proj_z.weight": (Vd, D),
                  p + "in_proj_b.weight": (Hv, D), p + "in_proj_a.weight": (Hv, D)}
    return dict(shapes, **{p + "conv1d.weight": (conv, 1, cfg.linear_conv_kernel_dim), p + "dt_bias": (Hv,),
                           p + "A_log": (Hv,), p + "norm.weight": (cfg.linear_value_head_dim,),
                           p + "out_proj.weight": (D, Vd)})


def mlp_shapes(D, I, p) -> dict:
    return {p + "gate_proj.weight": (I, D), p + "up_proj.weight": (I, D), p + "down_proj.weight": (D, I)}


def sparse_moe_shapes(cfg, p, fused_experts=False) -> dict:
    D, E, I = cfg.hidden_size, cfg.num_experts, cfg.moe_intermediate_size
    shapes = {p + "gate.weight": (E, D)}  # the router
    if fused_experts:   # (Qwen3-VL-MoE's released files hold them transposed, [E, in, out]: check_tensors)
        shapes.update({p + "experts.gate_up_proj": (E, 2 * I, D), p + "experts.down_proj": (E, D, I)})
    for e in range(E if not fused_experts else 0):
        shapes.update(mlp_shapes(D, I, f"{p}experts.{e}."))
    if cfg.shared_expert_intermediate_size:
        shapes.update(mlp_shapes(D, cfg.shared_expert_intermediate_size, p + "shared_expert."))
        shapes[p + "shared_expert_gate.weight"] = (1, D)
    return shapes


def check_tensors(tensors: dict, cfg, folder: str) -> None:
    """Raise one CheckpointError listing every missing, unexpected, mis-shaped or non-float tensor."""
    want = expected_shapes(cfg, fused_experts=has_fused_experts(tensors, cfg.weight_prefix))
    vision = cfg.vision is not None and cfg.vision.prefix is not None
    if vision:
        from .vision.tower import vision_shapes
        want.update(vision_shapes(cfg.vision))
    problems = []
    for name, shape in want.items():
        if name not in tensors:
            problems.append(f"missing {name} (expected shape {list(shape)})")
        elif tuple(tensors[name].shape) != shape and not (cfg.experts_in_out and name.endswith("_proj") and len(shape) == 3
                                                          and tuple(tensors[name].shape) == (shape[0], shape[2], shape[1])):
            problems.append(f"{name}: expected shape {list(shape)}, found {list(tensors[name].shape)}")
        elif not isinstance(tensors[name], quant.Quantized) and stored_name(tensors[name].dtype) not in FLOAT_DTYPES:
            problems.append(f"{name}: dtype {stored_name(tensors[name].dtype)} is not one of "
                            f"{', '.join(FLOAT_DTYPES)}")
    for name in tensors:
        # A tied checkpoint may still carry lm_head.weight; transformers ignores it and so do we.
        if name not in want and not name.endswith(IGNORED_SUFFIXES) and name != "lm_head.weight" \
                and not (cfg.hybrid and name.startswith(IGNORED_PREFIXES) and not (vision and name.startswith("model.visual."))) \
                and not (cfg.hyper_connections and name.startswith(ngram_prefixes(cfg))):
            problems.append(f"unexpected tensor {name} (shape {list(tensors[name].shape)})")
    if problems:
        head = f"{folder}: the weights do not match config.json ({len(problems)} problem" \
               f"{'s' if len(problems) > 1 else ''}):"
        raise CheckpointError("\n  ".join([head] + problems[:50] + ([f"... {len(problems) - 50} more"]
                                                                    if len(problems) > 50 else [])))


def has_fused_experts(tensors, prefix="model.") -> bool:
    """Qwen3.5-MoE's released files hold each layer's experts as two 3-D tensors."""
    return any(name.startswith(prefix) and name.endswith(".mlp.experts.gate_up_proj") for name in tensors)


def stored_name(dtype) -> str:
    return next((k for k, v in DTYPES.items() if v == dtype), str(dtype))


class Upcast:
    """Stored (bf16/f16/f32, or quantized: quant.py) tensors -> what the forward pass multiplies by. `up(name, ...)` gives
    one tensor, or several stacked along their first axis (q | k | v: the output axis), in the
    file's layout: a matrix is [out, in], and the forward computes x @ W.T.

    mode "float32": everything is upcast once, at load, into float32 arrays.
    mode "bf16": matrices stay as stored, memory-mapped (stored.StoredMatrix: nothing is copied,
    each product upcasts a block at a time); vectors (norms, biases) and small tensors are upcast.
    A quantized matrix stays quantized in that mode, whatever its size, and is dequantized at load in
    float32 mode."""

    def __init__(self, tensors: dict, mode: str = "float32"):
        self.tensors, self.mode = tensors, mode

    def __call__(self, *names, into=None):
        """into: a float32 array of the result's shape to write into (the experts' stacked arrays at load)."""
        return self.arrays([self.tensors[n] for n in names], into)

    def arrays(self, parts, into=None):
        """The same for stored arrays (slices of a tensor, a reshaped one)."""
        quantized = any(isinstance(p, quant.Quantized) for p in parts)
        if self.mode == "bf16" and into is None and parts[0].ndim == 2 and (quantized or sum(p.size for p in parts) >= stored.SMALL):
            return stored.StoredMatrix(parts)
        dst = into if into is not None else np.empty((sum(t.shape[0] for t in parts),) + parts[0].shape[1:], np.float32)
        o = 0
        for t in parts:  # each tensor into its rows of the stacked array, a share of its rows per core
            n = t.shape[0]
            if isinstance(t, quant.Quantized):
                quant.dequantize_into(t, dst[o:o + n])
            else:
                parallel(lambda s: np.copyto(dst[o:o + n][s], t[s], casting="unsafe"),
                         split(n) if t.size >= 1 << 20 else [slice(None)])
                if into is None or self.mode == "float32":
                    drop_pages(t)
            o += n
        return dst


def drop_pages(a) -> None:
    """A memory-mapped tensor that has been upcast: its pages leave this process (madvise DONTNEED).
    They stay in the page cache, and a later read maps them again; but a checkpoint read whole into
    float32 no longer counts its stored bytes in the process's resident memory beside the copies
    (measured on the 0.5B shape: a peak of 2871 MB after loading float32 weights of 1976 MB)."""
    import mmap
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    mm = root.base
    if not isinstance(mm, mmap.mmap) or not hasattr(mm, "madvise") or a.nbytes == 0:
        return
    start = a.__array_interface__["data"][0] - root.__array_interface__["data"][0] + root.offset % mmap.ALLOCATIONGRANULARITY
    first = start // mmap.PAGESIZE * mmap.PAGESIZE
    try:
        mm.madvise(mmap.MADV_DONTNEED, first, min(len(mm), start + a.nbytes) - first)
    except (OSError, ValueError):   # (a platform without it, or a range it refuses: only memory is at stake)
        pass


def norm_weight(up, cfg, name) -> np.ndarray:
    """An RMSNorm's weight as the forward pass multiplies by it. The hybrid generation stores its
    norms zero-centred (initialised at 0, applied as 1 + w: transformers' Qwen3NextRMSNorm and
    Gemma3's): the offset is added here, once, so that every norm computes the same x / rms(x) * w."""
    w = up(name)
    return w + np.float32(1) if cfg.hybrid else w


def to_float32(a: np.ndarray) -> np.ndarray:
    """Upcast a stored (bf16/f16/f32) tensor to a plain float32 array in memory (not a memmap)."""
    return np.array(a, dtype=np.float32, copy=True, subok=False, order="C")
