"""The Qwen family's causal LM in NumPy: the forward pass, read top to bottom like the diagram.

    input_ids -> embed_tokens
              -> N x decoder layer:  x = x + mixer(input_layernorm(x))       attention.py or deltanet.py
                                     x = x + mlp(post_attention_layernorm(x)) mlp.py: dense or sparse
              -> norm -> lm_head -> logits

What each architecture's mixer and MLP are (Qwen2, Qwen3, Qwen2-MoE, Qwen3-MoE, Qwen3.5, Qwen3-Next)
is one table, in family.py; this file is the same for all of them.
"""

import os
from dataclasses import dataclass

import numpy as np

from .attention import Attention, Context, load_attention
from .config import ModelConfig
from . import quant
from .errors import CheckpointError, NpqwenError
from .mlp import DenseMLP, SparseMoE, load_dense_mlp, load_sparse_moe
from .progress import Progress
from .primitives import linear, mrope_cos_sin, rms_norm, rope_cos_sin, rope_inv_freq
from .threads import blas_threads
from .deltanet import GatedDeltaNet, load_gated_deltanet
from .weights import Upcast, check_tensors, norm_weight, open_checkpoint, to_float32


@dataclass
class Layer:
    """One decoder layer: a norm and a token mixer, a norm and an MLP, each added to the residual."""
    input_norm: np.ndarray                              # [d]
    mixer: Attention | GatedDeltaNet                    # mixes information across positions
    post_norm: np.ndarray                               # [d]
    mlp: DenseMLP | SparseMoE                           # works on each position alone


@dataclass
class ModelOutput:
    logits: np.ndarray                                  # [b, t, vocab] float32
    hidden_states: tuple | None = None                  # num_hidden_layers + 1 arrays [b, t, d]


# ---------------------------------------------------------------------------------------------
# the decoder layer


def decoder_layer(x, w: Layer, cfg: ModelConfig, ctx: Context, cache=None, layer=0):  # [b, t, d] -> [b, t, d]
    x = x + w.mixer(rms_norm(x, w.input_norm, cfg.rms_norm_eps), cfg, ctx, cache, layer)
    x = x + w.mlp(rms_norm(x, w.post_norm, cfg.rms_norm_eps))
    return x


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
    def __init__(self, config: ModelConfig, embed, layers, norm, lm_head):
        self.config = config
        self.embed = embed        # [vocab, d] float32, or the stored (bf16) memory map
        self.layers = layers      # list of Layer
        self.norm = norm          # [d]
        self.lm_head = lm_head    # [vocab, d] float32 (the same array as embed when tied), or a StoredMatrix
        self.weights_mode, self.weights_reason = "float32", ""
        self.vision = None        # vision/tower.VisionTower of a vision-language checkpoint

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, cache=None,
                logits_to_keep=0, lm_head=True, pixel_values=None, image_grid_thw=None) -> ModelOutput:
        """input_ids [b, t] ints; attention_mask [b, t] 0/1 with 0 for left padding.
        -> logits [b, t, vocab] float32 (and hidden_states in transformers' convention).
        pixel_values [n_patches, C*T*P*P], image_grid_thw [n_images, 3] (vision.load_image_processor's
        output): the images whose <|image_pad|> tokens input_ids holds, expanded (vision/multimodal.py).
        cache: a KVCache holding the earlier positions; attention_mask then covers the new ones only.
        logits_to_keep: compute the LM head only for the last n positions (0 = all).
        lm_head=False: stop after the final norm (logits None; hidden_states returned: every layer's with
        output_hidden_states, else only the last, the final norm's output) for a caller
        that applies lm_head_logits a block of positions at a time (logprobs.py)."""
        ids, mask = self._check_inputs(input_ids, attention_mask)
        # NaN/inf are detected layer by layer below, with a clear error instead of numpy's warnings.
        # BLAS on one thread, but for the weights' products (threads.py says why).
        images = None
        if pixel_values is not None or image_grid_thw is not None:
            from .vision.multimodal import image_inputs
            images = image_inputs(self, ids, mask, pixel_values, image_grid_thw, cache.length if cache else 0)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"), blas_threads(1):
            if (self.pieces and cache is not None and images is None and not output_hidden_states and logits_to_keep == 1
                    and ids.shape[1] > PREFILL_PIECE and (mask is None or mask.all())):
                return self._prefill_in_pieces(ids, cache, lm_head)
            return self._forward(ids, mask, output_hidden_states, cache, logits_to_keep, lm_head, images)

    pieces = True   # a long prompt with a cache is prefilled PREFILL_PIECE positions at a time

    def _prefill_in_pieces(self, ids, cache, lm_head):
        """A long prompt into a cache, PREFILL_PIECE positions at a time through every layer (as vLLM's
        chunked prefill): each piece attends to the cached keys before it, and the DeltaNet layers carry
        their state across, so the result is the whole prompt's at once up to float rounding, while the
        activations held are one piece's (on Qwen3.5-0.8B's shape at 8192 tokens, the projections of a
        whole prompt take hundreds of MB each)."""
        t = ids.shape[1]
        starts = range(0, t, PREFILL_PIECE)
        progress = Progress("prefill: positions", t, enabled=True)
        for s in starts[:-1]:
            self._forward(ids[:, s:s + PREFILL_PIECE], None, False, cache, 1, lm_head=False, show_progress=False)
            progress.update(s + PREFILL_PIECE)
        out = self._forward(ids[:, starts[-1]:], None, False, cache, 1, lm_head, show_progress=False)
        progress.close()
        return out

    __call__ = forward

    def _positions(self, ids, mask, cache, images=None):
        """-> (padding [b, past + t], inv_freq, scale, cos, sin [b, t, rotary], positions [b, t] or
        [3, b, t]): where the new tokens are, counting only real tokens (left padding excluded), and
        RoPE at those positions. With images, their tokens' 3-D positions (M-RoPE); after them,
        positions shifted by cache.rope_delta."""
        cfg = self.config
        b, t = ids.shape
        past = cache.length if cache is not None else 0
        if cache is not None:
            cache.reserve(t, mask)
            padding = cache.padding[:, :past + t]
        else:
            padding = mask if mask is not None else np.ones((b, t), np.int64)
        positions = position_ids_from_mask(padding)[:, past:]           # [b, t]
        if cache is not None:
            positions = positions + cache.rope_delta[:, None]
        if images is not None:
            positions = images.positions                                # [3, b, t]
            if cache is not None:
                cache.rope_delta[:] = images.delta
        inv_freq, scale = rope_inv_freq(cfg.rotary_dim, cfg.rope_parameters, cfg.max_position_embeddings,
                                        seq_len=int(positions.max()) + 1)
        if positions.ndim == 3:
            cos, sin = mrope_cos_sin(inv_freq, positions, cfg.mrope_section, cfg.mrope, scale)
        else:
            cos, sin = rope_cos_sin(inv_freq, positions, scale)            # [b, t, hd]
        return padding, inv_freq, scale, cos, sin, positions

    def _forward(self, ids, mask, output_hidden_states, cache, logits_to_keep, lm_head=True, images=None,
                 show_progress=True):
        cfg = self.config
        b, t = ids.shape
        padding, _, _, cos, sin, _ = self._positions(ids, mask, cache, images)
        ctx = Context(cos, sin, padding=None if padding.all() else padding)

        x = to_float32(self.embed[ids])                                       # [b, t, d]
        if images is not None:
            x = images.embed(x)                                               # the image tokens' features
        # every layer's output is kept only when asked for: at 8192 tokens of Qwen2-0.5B that is 734 MB
        hidden = [x] if output_hidden_states else []
        progress = Progress("prefill: layer", len(self.layers), enabled=show_progress and b * t >= 512)
        _check_finite(x, "the embedding")
        for i, layer in enumerate(self.layers):
            x = decoder_layer(x, layer, cfg, ctx, cache, i)
            _check_finite(x, f"decoder layer {i}")
            if output_hidden_states:
                hidden.append(x)
            if images is not None:
                x = images.after_layer(x, i)                                  # DeepStack (Qwen3-VL)
            progress.update(i + 1)
        progress.close()
        if cache is not None:
            cache.advance(t)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        x = rms_norm(x, self.norm, cfg.rms_norm_eps)
        if output_hidden_states:
            hidden[-1] = x  # transformers reports the last layer's output after the final norm
        else:
            hidden = [x]
        if not lm_head:
            return ModelOutput(logits=None, hidden_states=tuple(hidden))
        logits = self.lm_head_logits(x)
        _check_finite(logits, "the final norm and LM head")
        return ModelOutput(logits=logits, hidden_states=tuple(hidden) if output_hidden_states else None)

    def lm_head_logits(self, x):  # [b, t, d] -> [b, t, vocab]
        return linear(x, self.lm_head)

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


WEIGHT_MODES = ("auto", "float32", "bf16", "stream")
PREFILL_PIECE = 2048   # positions of a long prompt run through the layers together (Model._prefill_in_pieces):
# at 8192 tokens, float32, one process, no pieces against pieces of 1024 and 2048 (tokens/s; Zen 4):
# Qwen3.5-0.8B shape 73.5, 102, 99.7; Qwen2-0.5B shape 134 and 128, 120 and 119, 128 and 129


def add_weights_option(parser):
    """--weights, as every command that loads a model takes it (see load_model)."""
    parser.add_argument("--weights", choices=WEIGHT_MODES, default="auto",
                        help="float32: upcast (or dequantize) all weights once; bf16: keep them as stored, memory-mapped, "
                             "at half the memory (a quarter or less for FP8, GPTQ and AWQ checkpoints, which stay quantized; "
                             "the same products, summed in BLAS's order); stream: the same as bf16; auto (default): "
                             "float32 if it fits in 3/4 of the available memory, else bf16")


def load_model(path: str, weights: str = "auto") -> Model:
    """Read a Hugging Face checkpoint folder (config.json + safetensors).

    weights="float32": upcast every tensor once and keep it (4 bytes per parameter in memory).
    weights="bf16": keep the stored (bf16) matrices memory-mapped, as stored; each product upcasts a
    cache-sized block of rows at a time (stored.py). Half the memory, the same logits up to the
    order in which BLAS sums a product (within float32 rounding), and a checkpoint larger than memory still runs, its pages read from disk as needed.
    weights="stream": the same as bf16 (its name before bf16 had its own fast path).
    weights="auto": see choose_weights; model.weights_reason says why."""
    path = os.fspath(path)
    if weights not in WEIGHT_MODES:
        raise NpqwenError(f"weights must be one of {', '.join(WEIGHT_MODES)}, found {weights!r}")
    if not os.path.isdir(path):
        raise NpqwenError(f"{path}: not a folder (expected a checkpoint folder with config.json and safetensors)")
    cfg = ModelConfig.from_file(path)
    tensors = quant.wrap(open_checkpoint(path), cfg.quant, path)
    if cfg.vision is not None:   # a vision-language checkpoint: where its two parts are (vision/tower.py)
        from .vision.tower import check_vision_prefix, vision_prefix
        cfg.vision.prefix = vision_prefix(tensors, cfg.vision)
        check_vision_prefix(tensors, cfg.vision.prefix, path)
        if cfg.weight_prefix + "embed_tokens.weight" not in tensors and "model.embed_tokens.weight" in tensors:
            cfg.weight_prefix = "model."   # the text model as older (transformers 4) files store it
    check_tensors(tensors, cfg, path)
    reason = f"asked for {weights}"
    if weights == "auto":
        weights, reason = choose_weights(cfg)
    weights = "bf16" if weights == "stream" else weights

    up = Upcast(tensors, weights)
    if cfg.hyper_connections:   # Qwen3.8-Flash-Next: streams instead of a residual (flash_next.py)
        from .flash_next import FlashNextModel, load_layers
        layers, final_mixer = load_layers(up, cfg, path)
        model = FlashNextModel(cfg, *embeddings(up, cfg), final_mixer=final_mixer, layers=layers)
    else:
        progress = Progress("loading: layer", cfg.num_hidden_layers, enabled=weights == "float32")
        layers = []
        for i in range(cfg.num_hidden_layers):
            progress.update(i)
            layers.append(load_layer(up, cfg, i))
        progress.close()
        embed, lm_head = embeddings(up, cfg)
        model = Model(cfg, embed, layers, norm_weight(Upcast(tensors), cfg, cfg.weight_prefix + "norm.weight"), lm_head)
    model.vision = None
    if cfg.vision is not None and cfg.vision.prefix is not None:
        from .vision.tower import load_tower
        model.vision = load_tower(up, cfg.vision)
    if cfg.quant is not None:
        reason += f"; {cfg.quant.label}, " + ("dequantized at load" if weights == "float32" else "kept as stored")
    model.weights_mode, model.weights_reason = weights, reason
    return model


def embeddings(up: Upcast, cfg):
    """-> (embed_tokens, lm_head). The embedding's rows are looked up, so in bf16 mode it stays as
    stored; the LM head is multiplied, like any weight (tied: the same tensor)."""
    embed = up.tensors[cfg.weight_prefix + "embed_tokens.weight"]   # [vocab, d]
    if isinstance(embed, quant.Quantized):
        raise CheckpointError(f"{cfg.weight_prefix}embed_tokens is quantized ({embed.method}): npqwen reads quantized "
                              f"Linear layers, not a quantized embedding")
    lm_head = up.arrays([embed if cfg.tie_word_embeddings else up.tensors["lm_head.weight"]])
    if up.mode == "float32":
        embed = lm_head if cfg.tie_word_embeddings else up.arrays([embed])
    return embed, lm_head


def choose_weights(cfg) -> tuple[str, str]:
    """auto: float32 when its copy fits in 3/4 of the available memory, else bf16."""
    need, have = float32_bytes(cfg), available_memory()
    size = (lambda n: f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB")
    if need <= 0.75 * have:
        return "float32", f"auto: float32 needs {size(need)}, {size(have)} available"
    return "bf16", f"auto: float32 would need {size(need)} of {size(have)} available"


def load_layer(up: Upcast, cfg: ModelConfig, i: int) -> Layer:
    """Decoder layer i from the checkpoint: the blocks family.py says this architecture has."""
    p = f"{cfg.weight_prefix}layers.{i}."
    if cfg.layer_types[i] == "linear_attention":
        mixer = load_gated_deltanet(up, cfg, p + "linear_attn.")
    else:
        mixer = load_attention(up, cfg, p + "self_attn.")
    return Layer(input_norm=norm_weight(up, cfg, p + "input_layernorm.weight"), mixer=mixer,
                 post_norm=norm_weight(up, cfg, p + "post_attention_layernorm.weight"),
                 mlp=load_sparse_moe(up, cfg, p + "mlp.") if cfg.is_sparse(i) else load_dense_mlp(up, p + "mlp."))


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
