"""Qwen2ForCausalLM in NumPy: the forward pass, read top to bottom like the architecture diagram.

    input_ids -> embed_tokens
              -> N x decoder layer:  x = x + attention(input_layernorm(x))
                                     x = x + mlp(post_attention_layernorm(x))
              -> norm -> lm_head -> logits

Attention: q, k, v projections (with biases), RoPE on q and k, grouped-query attention with a
causal (optionally sliding-window, optionally padded) mask, o_proj (no bias).
MLP: SwiGLU, down(silu(gate(x)) * up(x)).
"""

import os
from dataclasses import dataclass

import numpy as np

from .config import Qwen2Config
from .errors import NpqwenError
from .progress import Progress
from .primitives import apply_rope, attention, causal_mask, rms_norm, rope_cos_sin, rope_inv_freq, swiglu_mlp
from .weights import check_tensors, open_checkpoint, to_float32


@dataclass
class Layer:
    """One decoder layer's weights, float32. Projections are transposed once at load to [in, out],
    so every matmul below is a plain `x @ W` BLAS call with no strided copy. Projections that read
    the same input are stacked side by side (q|k|v, gate|up): one large matmul instead of several
    small ones, the same numbers."""
    input_norm: np.ndarray                              # [d]
    w_qkv: np.ndarray; b_qkv: np.ndarray                # [d, (H + 2K) * hd], [(H + 2K) * hd]
    wo: np.ndarray                                      # [H*hd, d]
    post_norm: np.ndarray                               # [d]
    w_gate_up: np.ndarray                               # [d, 2i]
    w_down: np.ndarray                                  # [i, d]


# Each Layer field and the checkpoint tensors it stacks along the output axis.
LAYER_TENSORS = {
    "input_norm": ["input_layernorm.weight"],
    "w_qkv": ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"],
    "b_qkv": ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"],
    "wo": ["self_attn.o_proj.weight"],
    "post_norm": ["post_attention_layernorm.weight"],
    "w_gate_up": ["mlp.gate_proj.weight", "mlp.up_proj.weight"],
    "w_down": ["mlp.down_proj.weight"],
}


@dataclass
class ModelOutput:
    logits: np.ndarray                                  # [b, t, vocab] float32
    hidden_states: tuple | None = None                  # num_hidden_layers + 1 arrays [b, t, d]


# ---------------------------------------------------------------------------------------------
# the blocks


# Queries are processed in blocks sized so that a block's attention scores, [b, H, block, s],
# take about this many bytes: small enough to stay in the CPU's cache while they are masked,
# exponentiated and normalised, and never [H, seq, seq] for a long prompt.
SCORES_BYTES = 4 << 20


def query_block(b, H, s):
    return max(16, SCORES_BYTES // (4 * b * H * s))


def self_attention(x, w: Layer, cfg: Qwen2Config, cos, sin, mask: "MaskSpec", cache=None, layer=0):
    # [b, t, d] -> [b, t, d]
    b, t, _ = x.shape
    H, K, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    qkv = x @ w.w_qkv + w.b_qkv                                          # [b, t, (H + 2K) * hd]
    q, k, v = np.split(qkv, [H * hd, (H + K) * hd], axis=-1)
    q = q.reshape(b, t, H, hd).transpose(0, 2, 1, 3)                     # [b, H, t, hd]
    k = k.reshape(b, t, K, hd).transpose(0, 2, 1, 3)                     # [b, K, t, hd]
    v = v.reshape(b, t, K, hd).transpose(0, 2, 1, 3)                     # [b, K, t, hd]
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if cache is not None:                                                # all keys so far
        k, v = cache.update(layer, k, v)                                 # [b, K, past + t, hd]
    past = k.shape[2] - t
    window = cfg.layer_window(layer)
    out = np.empty((b, t, H, hd), np.float32)
    block = query_block(b, H, past + t)
    for q0 in range(0, t, block):
        q1 = min(t, q0 + block)
        s = past + q1  # causal: this block never looks past its last query
        bias = causal_mask(q1 - q0, s, mask.padding, window, q_start=past + q0)
        out[:, q0:q1] = attention(q[:, :, q0:q1], k[:, :, :s], v[:, :, :s], bias).transpose(0, 2, 1, 3)
    return out.reshape(b, t, H * hd) @ w.wo


def decoder_layer(x, w: Layer, cfg: Qwen2Config, cos, sin, mask, cache=None, layer=0):  # [b, t, d] -> [b, t, d]
    x = x + self_attention(rms_norm(x, w.input_norm, cfg.rms_norm_eps), w, cfg, cos, sin, mask, cache, layer)
    x = x + swiglu_mlp(rms_norm(x, w.post_norm, cfg.rms_norm_eps), w.w_gate_up, w.w_down)
    return x


@dataclass
class MaskSpec:
    padding: np.ndarray | None  # [b, past + t] 1 = token, 0 = left padding; None when nothing is padded


def _check_finite(x, where):
    """A NaN or infinity would silently poison every later token: stop where it first appears."""
    if not np.isfinite(x).all():
        raise NpqwenError(f"NaN or infinity in the output of {where} (corrupt weights, or float32 overflow)")


def position_ids_from_mask(attention_mask):  # [b, t] 0/1 -> [b, t]
    """transformers' generate: positions count only real tokens (cumsum - 1); padding gets 1."""
    pos = np.cumsum(attention_mask, axis=-1) - 1
    return np.where(attention_mask == 0, 1, pos)


# ---------------------------------------------------------------------------------------------
# the model


class Model:
    def __init__(self, config: Qwen2Config, embed, layers, norm, lm_head):
        self.config = config
        self.embed = embed        # [vocab, d] float32, or the stored (bf16) memory map when streaming
        self.layers = layers      # list of Layer, or StreamedLayers
        self.norm = norm          # [d]
        self.lm_head = lm_head    # [vocab, d]; the same array as embed when tied
        self.weights_mode = "float32"

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, cache=None,
                logits_to_keep=0) -> ModelOutput:
        """input_ids [b, t] ints; attention_mask [b, t] 0/1 with 0 for left padding.
        -> logits [b, t, vocab] float32 (and hidden_states in transformers' convention).
        cache: a KVCache holding the earlier positions; attention_mask then covers the new ones only.
        logits_to_keep: compute the LM head only for the last n positions (0 = all)."""
        ids, mask = self._check_inputs(input_ids, attention_mask)
        # NaN/inf are detected layer by layer below, with a clear error instead of numpy's warnings.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._forward(ids, mask, output_hidden_states, cache, logits_to_keep)

    __call__ = forward

    def _forward(self, ids, mask, output_hidden_states, cache, logits_to_keep):
        cfg = self.config
        b, t = ids.shape
        past = cache.length if cache is not None else 0
        if cache is not None:
            cache.reserve(t, mask)
            padding = cache.padding[:, :past + t]
        else:
            padding = mask if mask is not None else np.ones((b, t), np.int64)
        positions = position_ids_from_mask(padding)[:, past:]           # [b, t]
        spec = MaskSpec(padding=None if padding.all() else padding)

        inv_freq, scale = rope_inv_freq(cfg.head_dim, cfg.rope_parameters, cfg.max_position_embeddings,
                                        seq_len=int(positions.max()) + 1)
        cos, sin = rope_cos_sin(inv_freq, positions, scale)                # [b, t, hd]

        x = to_float32(self.embed[ids])                                       # [b, t, d]
        hidden = [x]
        progress = Progress("prefill: layer", len(self.layers), enabled=b * t >= 512)
        _check_finite(x, "the embedding")
        for i, layer in enumerate(self.layers):
            x = decoder_layer(x, layer, cfg, cos, sin, spec, cache, i)
            _check_finite(x, f"decoder layer {i}")
            hidden.append(x)
            progress.update(i + 1)
        progress.close()
        if cache is not None:
            cache.advance(t)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        x = rms_norm(x, self.norm, cfg.rms_norm_eps)
        hidden[-1] = x  # transformers reports the last layer's output after the final norm
        logits = self.lm_head_logits(x)
        _check_finite(logits, "the final norm and LM head")
        return ModelOutput(logits=logits, hidden_states=tuple(hidden) if output_hidden_states else None)

    def lm_head_logits(self, x, rows=16384):  # [b, t, d] -> [b, t, vocab]
        if self.lm_head.dtype == np.float32:
            return x @ self.lm_head.T
        # Streamed weights: upcast the LM head a block of vocabulary rows at a time, into one
        # reused buffer (a fresh array per block would cost a page fault per 4 KB).
        V = self.lm_head.shape[0]
        buf = np.empty((min(rows, V), self.lm_head.shape[1]), np.float32)
        logits = np.empty(x.shape[:-1] + (V,), np.float32)
        for r in range(0, V, rows):
            n = min(rows, V - r)
            np.copyto(buf[:n], self.lm_head[r:r + n], casting="unsafe")
            logits[..., r:r + n] = x @ buf[:n].T
        return logits

    def _check_inputs(self, input_ids, attention_mask):
        ids = np.asarray(input_ids)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.shape[1] == 0 or ids.shape[0] == 0:
            raise NpqwenError(f"input_ids must have shape (batch, seq) with seq >= 1, found {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise NpqwenError(f"input_ids must be integers, found dtype {ids.dtype}")
        V = self.config.vocab_size
        if ids.min() < 0 or ids.max() >= V:
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise NpqwenError(f"input_ids holds token id {bad}, outside the vocabulary [0, {V})")
        if attention_mask is None:
            return ids, None
        mask = np.asarray(attention_mask)
        if mask.ndim == 1:
            mask = mask[None]
        if mask.shape != ids.shape:
            raise NpqwenError(f"attention_mask has shape {mask.shape} but input_ids has {ids.shape}")
        if not np.isin(mask, (0, 1)).all():
            raise NpqwenError("attention_mask must hold only 0 and 1")
        empty = np.flatnonzero(mask.sum(-1) == 0)
        if empty.size:
            raise NpqwenError(f"attention_mask row {int(empty[0])} is all zeros (no token to attend to)")
        return ids, mask.astype(np.int64)


WEIGHT_MODES = ("auto", "float32", "stream")


def load_model(path: str, weights: str = "auto") -> Model:
    """Read a Hugging Face checkpoint folder (config.json + safetensors).

    weights="float32": upcast every tensor once and keep it (fastest; 4 bytes per parameter).
    weights="stream": keep the stored (bf16) tensors memory-mapped and upcast one layer at a time
    into reused float32 buffers, so only a layer's worth of float32 is ever resident.
    weights="auto": float32 when it fits in 3/4 of the available memory, else stream."""
    path = os.fspath(path)
    if weights not in WEIGHT_MODES:
        raise NpqwenError(f"weights must be one of {', '.join(WEIGHT_MODES)}, found {weights!r}")
    if not os.path.isdir(path):
        raise NpqwenError(f"{path}: not a folder (expected a checkpoint folder with config.json and safetensors)")
    cfg = Qwen2Config.from_file(path)
    tensors = open_checkpoint(path)
    check_tensors(tensors, cfg, path)
    if weights == "auto":
        weights = "float32" if float32_bytes(cfg) <= 0.75 * available_memory() else "stream"

    embed = tensors["model.embed_tokens.weight"]
    lm_head = embed if cfg.tie_word_embeddings else tensors["lm_head.weight"]
    norm = to_float32(tensors["model.norm.weight"])
    if weights == "stream":
        model = Model(cfg, embed, StreamedLayers(tensors, cfg), norm, lm_head)
    else:
        progress = Progress("loading: layer", cfg.num_hidden_layers)
        layers = []
        for i in range(cfg.num_hidden_layers):
            progress.update(i)
            layers.append(layer_weights(tensors, i))
        progress.close()
        embed = to_float32(embed)
        lm_head = embed if cfg.tie_word_embeddings else to_float32(lm_head)
        model = Model(cfg, embed, layers, norm, lm_head)
    model.weights_mode = weights
    return model


def layer_weights(tensors, i, out: Layer | None = None) -> Layer:
    """Layer i's weights as float32, projections transposed to [in, out] and stacked (LAYER_TENSORS);
    written into `out`'s arrays when given (streaming reuses one set of buffers for every layer)."""
    p = f"model.layers.{i}."
    fields = {}
    for field, names in LAYER_TENSORS.items():
        parts = [tensors[p + name] for name in names]
        if out is not None:
            dst = getattr(out, field)
        elif parts[0].ndim == 2:  # [out, in] in the file -> [in, sum of out]
            dst = np.empty((parts[0].shape[1], sum(t.shape[0] for t in parts)), np.float32)
        else:
            dst = np.empty(sum(t.shape[0] for t in parts), np.float32)
        o = 0
        for t in parts:  # upcast each tensor into its columns of the stacked matrix
            n = t.shape[0]
            if t.ndim == 1 or out is not None:  # streaming buffers are [out, in] underneath: a plain copy
                np.copyto(dst[..., o:o + n], t.T if t.ndim == 2 else t, casting="unsafe")
            else:  # upcasting and transposing at once is slow: upcast rows, then transpose them in cache
                for r in range(0, n, 256):
                    rows = np.asarray(t[r:r + 256], np.float32)        # [<= 256, in]
                    dst[:, o + r:o + r + len(rows)] = rows.T
            o += n
        fields[field] = dst
    return out if out is not None else Layer(**fields)


class StreamedLayers:
    """The decoder layers of a memory-mapped checkpoint, upcast one at a time on use."""

    def __init__(self, tensors, cfg):
        self.tensors, self.n = tensors, cfg.num_hidden_layers
        # float32 buffers reused for every layer, stored [out, in] like the file so that upcasting
        # is a contiguous copy; the Layer sees them transposed, [in, out], as always.
        first = layer_weights(tensors, 0)
        self.buffer = Layer(**{f: (np.empty(a.shape[::-1], np.float32).T if a.ndim == 2 else np.empty_like(a))
                               for f, a in vars(first).items()})

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return layer_weights(self.tensors, i, out=self.buffer)

    def __iter__(self):
        return (self[i] for i in range(self.n))


def float32_bytes(cfg) -> int:
    """Memory for every weight in float32 (the tied LM head shares the embedding)."""
    from .weights import expected_shapes
    return 4 * sum(int(np.prod(s)) for s in expected_shapes(cfg).values())


def available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
