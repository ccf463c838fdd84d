"""ModelConfig: the hyper-parameters in a checkpoint's config.json, validated.

Field names are transformers' own. Two on-disk forms are read:
- transformers 4.x: `rope_theta` and `rope_scaling` ({"type" or "rope_type": ..., "factor": ...}),
  `torch_dtype`;
- transformers 5.x: `rope_parameters` ({"rope_type", "rope_theta", ...}), `dtype`, `layer_types`.
Both are normalised to `rope_parameters` (with `rope_theta` and `rope_scaling` kept as aliases).
Defaults for optional fields are those of transformers' (5.x) config class of the model_type; what
differs between the family's architectures is read from the table in family.py.
"""

import json
import math
import os
from dataclasses import dataclass, field

from .errors import ConfigError
from .family import (ARCHITECTURES, HYBRID_DEFAULTS, HYPER_DEFAULTS, INDEXER_FIELDS, LINEAR_ATTENTION,
                     hybrid_layer_types, is_sparse, sliding_layers)

SUPPORTED_MODEL_TYPES = tuple(ARCHITECTURES)
SUPPORTED_ARCHITECTURES = tuple(a.class_name for a in ARCHITECTURES.values())
SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "yarn")
LAYER_TYPES = ("full_attention", "sliding_attention")
HYBRID_LAYER_TYPES = ("linear_attention", "full_attention")
# Qwen3.8-Flash-Next: every attention layer is QSA; its released config names them "full_attention",
# transformers' save_pretrained "indexed_attention" (npqwen, as transformers, reads both as QSA)
HYPER_LAYER_TYPES = ("linear_attention", "indexed_attention", "full_attention")
REQUIRED_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")

# Keys each rope type may carry (besides rope_type/type and rope_theta), as transformers validates them.
_ROPE_KEYS = {
    "default": set(),
    "linear": {"factor"},
    "dynamic": {"factor"},
    "yarn": {"factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow",
             "mscale", "mscale_all_dim", "truncate"},
}


@dataclass
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int                      # hidden_size // num_attention_heads unless config.json sets it
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    rope_parameters: dict = field(default_factory=lambda: {"rope_type": "default", "rope_theta": 10000.0})
    use_sliding_window: bool = False
    sliding_window: int | None = None  # None unless use_sliding_window, as transformers sets it
    max_window_layers: int = 28
    layer_types: list = field(default_factory=list)
    hidden_act: str = "silu"
    dtype: str | None = None           # the dtype the checkpoint was saved in ("bfloat16", ...)
    model_type: str = "qwen2"
    architectures: list = field(default_factory=lambda: ["Qwen2ForCausalLM"])
    bos_token_id: int | None = None
    eos_token_id: int | list | None = None
    pad_token_id: int | None = None
    # attention: what family.py says this model_type has
    qkv_bias: bool = True              # biases on q_proj, k_proj, v_proj
    o_proj_bias: bool = False          # a bias on o_proj
    qk_norm: bool = False              # RMSNorm over head_dim of each q and k head, before RoPE
    # mixture of experts (num_experts 0: every MLP is dense)
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0   # 0: no shared expert
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: list = field(default_factory=list)
    mlp_types: list = field(default_factory=list)   # per layer: "dense" or "sparse"
    # the hybrid generation (Qwen3.5, Qwen3-Next): layer_types holds "linear_attention" layers
    hybrid: bool = False               # zero-centred norms, gated attention, Gated DeltaNet layers
    partial_rotary_factor: float = 1.0  # RoPE rotates the first head_dim * this dimensions
    deltanet_layout: str | None = None  # "split" (Qwen3.5) or "fused" (Qwen3-Next) projections
    linear_conv_kernel_dim: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    linear_num_key_heads: int = 0
    linear_num_value_heads: int = 0
    weight_prefix: str = "model."      # composite checkpoints: "model.language_model."
    deltanet_gate: str = "silu"        # the DeltaNet output norm's gate on z (Qwen3.8: output_gate_type, sigmoid)
    # Qwen3.8-Flash-Next (flash_next.py): hc_count residual streams, n-gram embeddings, QSA attention
    hyper_connections: bool = False
    hc_count: int = 0                  # residual streams
    hc_lowrank: int = 0                # rank of the streams' input mixer
    ple_layer_ids: list = field(default_factory=list)   # ONE-indexed layers with n-gram embeddings (1 = layers.0)
    ple_embed_dim: int = 0             # width of a token's n-gram embedding (all heads concatenated)
    ple_conv_kernel_size: int = 0      # taps of the dilated convolution (dilation: ngram_size)
    ngram_size: int = 0                # the longest n-gram (3: bigrams and trigrams)
    heads_per_ngram: int = 0           # hash heads per n-gram order
    ngram_vocab_size_base: int = 0     # each head's table has the next primes at or above this many rows
    make_ngram_vocab_size_divisible_by: int = 0
    seed: int = 0                      # of the hash multipliers (the checkpoint's stored ones override it)
    split_ngram_parts: int = 0         # at most this many shards of the n-gram table in the files
    indexer_n_heads: int = 0           # QSA's indexer: query heads,
    indexer_kv_heads: int = 0          # key heads (1),
    indexer_head_dim: int = 0          # their width,
    indexer_budget: int = 0            # tokens of complete blocks each query may attend to,
    indexer_compress_ratio: int = 0    # tokens per block
    # the vision-language models: image tokens' 3-D positions (vision/positions.py) and the tower
    mrope: str | None = None           # "interleaved" or "contiguous": how RoPE's frequencies split over t, h, w
    mrope_section: list = field(default_factory=list)   # frequencies given to t, h and w
    experts_in_out: bool = False       # fused experts stored [E, d, 2i] and [E, i, d] (Qwen3-VL-MoE)
    image_token_id: int | None = None  # the placeholder each image's features replace
    video_token_id: int | None = None
    vision_start_token_id: int | None = None
    vision_end_token_id: int | None = None
    vision: object = None              # vision.config.VisionConfig of a composite checkpoint's tower, or None
    quant: object = None               # quant.QuantConfig of a quantized checkpoint (FP8, GPTQ, AWQ), or None

    @property
    def ngram_heads(self) -> int:
        return (self.ngram_size - 1) * self.heads_per_ngram

    # 4.x names, read-only views of rope_parameters.
    @property
    def rope_theta(self) -> float:
        return self.rope_parameters["rope_theta"]

    @property
    def rope_scaling(self) -> dict | None:
        return None if self.rope_parameters["rope_type"] == "default" else self.rope_parameters

    @property
    def torch_dtype(self) -> str | None:
        return self.dtype

    @property
    def num_key_value_groups(self) -> int:
        """How many query heads share one key/value head (1 = multi-head attention)."""
        return self.num_attention_heads // self.num_key_value_heads

    def layer_window(self, layer: int) -> int | None:
        """The sliding-window size layer `layer` attends with, or None for full causal attention."""
        return self.sliding_window if self.layer_types[layer] == "sliding_attention" else None

    def is_sparse(self, layer: int) -> bool:
        return self.mlp_types[layer] == "sparse"

    @property
    def rotary_dim(self) -> int:
        """How many of each head's dimensions RoPE rotates (the rest pass through)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "ModelConfig":
        return _with_quant(_parse(d, source), d, source)

    @classmethod
    def from_file(cls, path: str) -> "ModelConfig":
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: no config.json (a Hugging Face checkpoint folder has one)")
        try:
            with open(path, "rb") as f:
                raw = f.read(10_000_001)
            if len(raw) > 10_000_000:
                raise ConfigError(f"{path}: larger than 10 MB, not a config.json")
            d = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        except (ValueError, RecursionError) as e:  # e.g. an integer of thousands of digits
            raise ConfigError(f"{path}: not usable JSON ({str(e)[:120]})") from None
        return _with_quant(_parse(d, path), d, path)


Qwen2Config = ModelConfig  # the name it had when npqwen read Qwen2 only


# ---------------------------------------------------------------------------------------------
# parsing and validation


def _with_quant(cfg, d, src):
    """quantization_config: at the top level, or (some composite configs) in text_config (quant.py)."""
    from .quant import parse_quant
    q = d.get("quantization_config")
    if q is None and isinstance(d.get("text_config"), dict):
        q = d["text_config"].get("quantization_config")
    cfg.quant = parse_quant(q, src)
    return cfg


def _parse(d, src) -> ModelConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"{src}: expected a JSON object, found {type(d).__name__}")

    model_type = d.get("model_type")
    if model_type is None:
        raise ConfigError(f"{src}: missing field 'model_type' (npqwen supports: {', '.join(SUPPORTED_MODEL_TYPES)})")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"{src}: model_type {model_type!r} is not supported "
                          f"(npqwen supports: {', '.join(SUPPORTED_MODEL_TYPES)})")
    arch = ARCHITECTURES[model_type]
    archs = d.get("architectures") or [arch.class_name]
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise ConfigError(f"{src}: 'architectures' must be a list of names, found {archs!r}")
    unsupported = [a for a in archs if a not in SUPPORTED_ARCHITECTURES]
    if unsupported:
        raise ConfigError(f"{src}: architecture {unsupported[0]!r} is not supported "
                          f"(npqwen supports: {', '.join(SUPPORTED_ARCHITECTURES)})")
    other = [a for a in archs if a != arch.class_name]
    if other:
        raise ConfigError(f"{src}: architecture {other[0]!r} does not match model_type {model_type!r} "
                          f"(which is {arch.class_name})")
    if arch.text_config_of:
        return _parse_composite(d, src, arch, list(archs))

    required = [f for f in REQUIRED_FIELDS if not (f == "intermediate_size" and arch.every_layer_sparse)]
    for name in required:
        if name not in d or d[name] is None:
            raise ConfigError(f"{src}: missing field '{name}'")
    ints = {name: _pos_int(d, name, src) for name in required}
    ints.setdefault("intermediate_size", 0)  # Qwen3.5-MoE: every layer is sparse, no dense MLP
    heads = ints["num_attention_heads"]
    kv_heads = _pos_int(d, "num_key_value_heads", src) if d.get("num_key_value_heads") is not None else heads
    if heads % kv_heads:
        raise ConfigError(f"{src}: num_attention_heads ({heads}) is not divisible by "
                          f"num_key_value_heads ({kv_heads})")
    if d.get("head_dim") is not None:
        head_dim = _pos_int(d, "head_dim", src)
    elif arch.head_dim_default is not None:  # Qwen3Config: 128, whatever hidden_size / heads is
        head_dim = arch.head_dim_default
    else:
        if ints["hidden_size"] % heads:
            raise ConfigError(f"{src}: hidden_size ({ints['hidden_size']}) is not divisible by "
                              f"num_attention_heads ({heads})")
        head_dim = ints["hidden_size"] // heads
    if head_dim % 2:
        raise ConfigError(f"{src}: head_dim ({head_dim}) must be even for rotary embeddings")

    hidden_act = d.get("hidden_act", "silu")
    if hidden_act != "silu":
        raise ConfigError(f"{src}: hidden_act {hidden_act!r} is not supported (the Qwen family uses 'silu')")
    eps = d.get("rms_norm_eps", 1e-6)
    if not _is_num(eps) or not (0 < eps < 1):
        raise ConfigError(f"{src}: rms_norm_eps must be a number in (0, 1), found {eps!r}")
    max_pos = _pos_int(d, "max_position_embeddings", src) if "max_position_embeddings" in d else 32768
    tie = _bool(d, "tie_word_embeddings", False, src)
    bias = _bool(d, arch.bias_field, arch.bias_default, src) if arch.bias_field else arch.bias_default

    n_layers = ints["num_hidden_layers"]
    use_sw = _bool(d, "use_sliding_window", False, src)
    # transformers: 4096 when the key is absent; null (or Qwen2-MoE's 0) disables the window.
    window = d.get("sliding_window", 4096) if use_sw else None
    if window is not None:
        window = _pos_int({"sliding_window": window}, "sliding_window", src)
    max_window_layers = _pos_int(d, "max_window_layers", src, allow_zero=True) if "max_window_layers" in d else 28
    layer_types = d.get("layer_types") if arch.window_rule != "every_layer" else None
    if arch.hyper_connections:
        layer_types = _hyper_layer_types(d, layer_types, n_layers, src)
    elif arch.hybrid:
        layer_types = _hybrid_layer_types(d, layer_types, n_layers, src)
    elif layer_types is None:
        slides = sliding_layers(arch.window_rule, n_layers, max_window_layers)
        layer_types = ["sliding_attention" if window is not None and s else "full_attention" for s in slides]
    else:
        _check_layer_types(layer_types, LAYER_TYPES, n_layers, src)
        if "sliding_attention" in layer_types and window is None:
            raise ConfigError(f"{src}: layer_types has sliding_attention layers but sliding_window is not set "
                              f"(or use_sliding_window is false)")

    dtype = d.get("dtype", d.get("torch_dtype"))
    return ModelConfig(
        vocab_size=ints["vocab_size"], hidden_size=ints["hidden_size"],
        intermediate_size=ints["intermediate_size"], num_hidden_layers=n_layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
        rms_norm_eps=float(eps), max_position_embeddings=max_pos, tie_word_embeddings=tie,
        rope_parameters=_rope_parameters(d, src, max_pos, arch),
        use_sliding_window=use_sw, sliding_window=window, max_window_layers=max_window_layers,
        layer_types=list(layer_types), hidden_act=hidden_act,
        dtype=dtype if isinstance(dtype, str) else None, model_type=model_type, architectures=list(archs),
        bos_token_id=d.get("bos_token_id"), eos_token_id=d.get("eos_token_id"), pad_token_id=d.get("pad_token_id"),
        qkv_bias=bias, o_proj_bias=bias and arch.o_proj_bias, qk_norm=arch.qk_norm,
        **_moe_fields(d, arch, n_layers, src), **_hybrid_fields(d, arch, src, head_dim),
        **_hyper_fields(d, arch, src, head_dim, ints["hidden_size"], layer_types),
        **_mrope_fields(d, arch, src, head_dim),
    )


def _mrope_fields(d, arch, src, head_dim) -> dict:
    """How M-RoPE gives the rotary frequencies to the time, height and width axes (primitives.mrope_cos_sin).
    The class decides the layout (interleaved for Qwen3-VL / Qwen3.5 whatever mrope_interleaved says:
    transformers 5.23 does not read it); mrope_section how many frequencies each axis gets."""
    if not arch.mrope:
        return {}
    rp = d.get("rope_parameters") or d.get("rope_scaling") or {}
    section = rp.get("mrope_section", list(arch.mrope_section)) if isinstance(rp, dict) else list(arch.mrope_section)
    prf = rp.get("partial_rotary_factor", d.get("partial_rotary_factor", 1.0)) if isinstance(rp, dict) else 1.0
    half = int(head_dim * (prf if _is_num(prf) else 1.0)) // 2
    if not isinstance(section, list) or len(section) != 3 or \
            not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in section):
        raise ConfigError(f"{src}: mrope_section must be a list of 3 non-negative integers (the time, height and "
                          f"width frequencies), found {section!r}")
    if arch.mrope == "contiguous" and sum(section) != half:
        raise ConfigError(f"{src}: mrope_section {section} must add up to the {half} rotary frequencies "
                          f"(head_dim / 2)")
    return dict(mrope=arch.mrope, mrope_section=list(section), experts_in_out=arch.experts_in_out)


def _parse_composite(d, src, arch, archs) -> ModelConfig:
    """A vision-language checkpoint (Qwen3.5 as released, Qwen3-VL, Qwen2.5-VL): the text model's
    config in text_config, its weights under model.language_model.* (load_model also reads the older
    model.*), the vision tower's in vision_config; tying follows the top-level tie_word_embeddings
    (Qwen2.5-VL's config class also takes text_config's, as older saves placed it there).
    Qwen2.5-VL's hub files are flat: the text fields at the top level, beside vision_config."""
    text = d.get("text_config")
    if text is None and arch.flat_text_config:
        text = {k: v for k, v in d.items() if k not in ("text_config", "vision_config", "model_type", "architectures")}
    if not isinstance(text, dict):
        raise ConfigError(f"{src}: model_type {arch.model_type!r} needs a 'text_config' object, found {text!r}")
    text = dict(text)
    if text.setdefault("model_type", arch.text_config_of) != arch.text_config_of:
        raise ConfigError(f"{src}: text_config.model_type must be {arch.text_config_of!r}, found "
                          f"{text['model_type']!r}")
    text["architectures"] = [ARCHITECTURES[arch.text_config_of].class_name]
    tied = _bool(d, "tie_word_embeddings", False, src)
    if arch.flat_text_config and not tied:
        tied = _bool(text, "tie_word_embeddings", False, src)
    text["tie_word_embeddings"] = tied
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if text.get(key) is None and d.get(key) is not None:
            text[key] = d[key]
    cfg = _parse(text, f"{src} (text_config)" if "text_config" in d else src)
    cfg.model_type, cfg.architectures, cfg.weight_prefix = arch.model_type, archs, "model.language_model."
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    for name, default in zip(names, arch.image_tokens):
        value = d.get(name, default) if d.get(name) is not None else default
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{src}: {name} must be a token id, found {value!r}")
        setattr(cfg, name, value)
    from .vision.config import parse_vision_config   # no Pillow: reading a config never needs it
    cfg.vision = parse_vision_config(d.get("vision_config"), arch, f"{src} (vision_config)", cfg.hidden_size)
    return cfg


def _hybrid_layer_types(d, layer_types, n_layers, src) -> list:
    """layer_types when config.json lists them (fine-tunes with irregular patterns exist), else one
    full-attention layer every full_attention_interval layers."""
    if layer_types is None:
        interval = d.get("full_attention_interval", HYBRID_DEFAULTS["full_attention_interval"])
        interval = _pos_int({"full_attention_interval": interval}, "full_attention_interval", src)
        return hybrid_layer_types(n_layers, interval)
    _check_layer_types(layer_types, HYBRID_LAYER_TYPES, n_layers, src)
    return list(layer_types)


def _hyper_layer_types(d, layer_types, n_layers, src) -> list:
    """Qwen3.8-Flash-Next: linear_attention and QSA layers; "full_attention" (the released config's
    name) is QSA, as transformers reads it."""
    if layer_types is None:
        interval = d.get("full_attention_interval", HYBRID_DEFAULTS["full_attention_interval"])
        interval = _pos_int({"full_attention_interval": interval}, "full_attention_interval", src)
        return hybrid_layer_types(n_layers, interval, "indexed_attention")
    _check_layer_types(layer_types, HYPER_LAYER_TYPES, n_layers, src)
    return ["indexed_attention" if t == "full_attention" else t for t in layer_types]


def _hyper_fields(d, arch, src, head_dim, hidden_size, layer_types) -> dict:
    """Qwen3.8-Flash-Next's fields, checked as transformers 5.23's Qwen4ExpTextConfig checks them."""
    if not arch.hyper_connections:
        return {}
    out = {name: _pos_int({name: d.get(name, default) if d.get(name) is not None else default}, name, src)
           for name, default in HYPER_DEFAULTS.items() if name != "seed"}
    seed = d.get("seed", HYPER_DEFAULTS["seed"]) if d.get("seed") is not None else HYPER_DEFAULTS["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63:
        raise ConfigError(f"{src}: field 'seed' must be an integer from 0 to 2^63 - 1, found {seed!r}")
    if out["hc_count"] < 2:
        raise ConfigError(f"{src}: hc_count must be at least 2 (hyper-connections mix several streams), "
                          f"found {out['hc_count']}")
    gate = d.get("output_gate_type") or d.get("hidden_act", "silu")
    if gate not in ("sigmoid", "silu"):
        raise ConfigError(f"{src}: output_gate_type must be 'sigmoid' or 'silu', found {gate!r}")
    ids = d.get("ple_layer_ids") or []
    n_layers = len(layer_types)
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ConfigError(f"{src}: ple_layer_ids must be a list of layer numbers, found {ids!r}")
    ids = sorted(set(ids))
    for i in ids:
        if not 1 <= i <= n_layers:
            raise ConfigError(f"{src}: ple_layer_ids entry {i} is out of range: the ids count layers from 1 "
                              f"(1 = model.layers.0) to num_hidden_layers ({n_layers})")
        if layer_types[i - 1] != "linear_attention":
            raise ConfigError(f"{src}: ple_layer_ids entry {i} names layer {i - 1}, a {layer_types[i - 1]} layer; "
                              f"n-gram embeddings go on linear_attention layers")
    ple_dim = d.get("ple_embed_dim") if d.get("ple_embed_dim") is not None else hidden_size
    ple_dim = _pos_int({"ple_embed_dim": ple_dim}, "ple_embed_dim", src)
    heads = (out["ngram_size"] - 1) * out["heads_per_ngram"]
    if ids:
        if heads < 1:
            raise ConfigError(f"{src}: ngram_size must be at least 2 when ple_layer_ids is set, found {out['ngram_size']}")
        if ple_dim % heads:
            raise ConfigError(f"{src}: ple_embed_dim ({ple_dim}) must be divisible by the n-gram heads "
                              f"((ngram_size - 1) * heads_per_ngram = {heads})")
        eos = d.get("eos_token_id")
        if eos is None or eos == [] or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0
                                               for e in (eos if isinstance(eos, list) else [eos])):
            raise ConfigError(f"{src}: eos_token_id must be set when ple_layer_ids is: the n-gram hash resets at "
                              f"it, found {eos!r}")
    idx = {}
    if "indexed_attention" in layer_types:
        for name in INDEXER_FIELDS:
            if d.get(name) is None:
                raise ConfigError(f"{src}: missing field '{name}' (QSA attention layers need all of "
                                  f"{', '.join(INDEXER_FIELDS)})")
            idx[name] = _pos_int(d, name, src)
        if idx["indexer_kv_heads"] != 1:
            raise ConfigError(f"{src}: indexer_kv_heads must be 1 (one index key per token), found "
                              f"{idx['indexer_kv_heads']}")
        if idx["indexer_budget"] % idx["indexer_compress_ratio"]:
            raise ConfigError(f"{src}: indexer_budget ({idx['indexer_budget']}) must be a multiple of "
                              f"indexer_compress_ratio ({idx['indexer_compress_ratio']}): whole blocks are chosen")
        rp = d.get("rope_parameters") if isinstance(d.get("rope_parameters"), dict) else {}
        prf = rp.get("partial_rotary_factor", d.get("partial_rotary_factor", HYBRID_DEFAULTS["partial_rotary_factor"]))
        if _is_num(prf) and int(head_dim * prf) > idx["indexer_head_dim"]:
            raise ConfigError(f"{src}: the rotary dimensions ({int(head_dim * prf)}) exceed indexer_head_dim "
                              f"({idx['indexer_head_dim']}), which RoPE also rotates")
    return dict(out, hyper_connections=True, deltanet_gate=gate, ple_layer_ids=ids, ple_embed_dim=ple_dim, seed=seed,
                **idx)


def _check_layer_types(layer_types, allowed, n_layers, src):
    if not isinstance(layer_types, list) or len(layer_types) != n_layers:
        raise ConfigError(f"{src}: layer_types must be a list of {n_layers} entries (one per layer), "
                          f"found {layer_types!r}")
    bad = [t for t in layer_types if t not in allowed]
    if bad:
        raise ConfigError(f"{src}: layer_types entry {bad[0]!r} is not supported "
                          f"(this model's layers are: {', '.join(allowed)})")


def _hybrid_fields(d, arch, src, head_dim) -> dict:
    if not arch.hybrid:
        return {}
    out = {name: _pos_int({name: d.get(name, default)}, name, src) for name, default in LINEAR_ATTENTION.items()}
    if out["linear_num_value_heads"] % out["linear_num_key_heads"]:
        raise ConfigError(f"{src}: linear_num_value_heads ({out['linear_num_value_heads']}) is not divisible by "
                          f"linear_num_key_heads ({out['linear_num_key_heads']})")
    rp = d.get("rope_parameters") if isinstance(d.get("rope_parameters"), dict) else {}
    prf = rp.get("partial_rotary_factor", d.get("partial_rotary_factor", HYBRID_DEFAULTS["partial_rotary_factor"]))
    if not _is_num(prf) or not 0 < prf <= 1 or int(head_dim * prf) % 2:
        raise ConfigError(f"{src}: partial_rotary_factor must be in (0, 1] and give an even number of rotary "
                          f"dimensions of head_dim {head_dim}, found {prf!r}")
    return dict(out, hybrid=True, partial_rotary_factor=float(prf), deltanet_layout=arch.deltanet_layout)


def _moe_fields(d, arch, n_layers, src) -> dict:
    """The mixture-of-experts fields, with the model_type's defaults, and which layers are sparse.
    Hub checkpoints name the expert count `num_experts`; transformers 5.23 may write `num_local_experts`."""
    if not arch.moe:
        return dict(mlp_types=["dense"] * n_layers)
    if d.get("num_experts") is not None and d.get("num_local_experts") is not None \
            and d["num_experts"] != d["num_local_experts"]:
        raise ConfigError(f"{src}: num_experts ({d['num_experts']!r}) and num_local_experts "
                          f"({d['num_local_experts']!r}) disagree")
    g = dict(d)
    if g.get("num_experts") is None and g.get("num_local_experts") is not None:
        g["num_experts"] = g["num_local_experts"]
    out = {"norm_topk_prob": arch.fixed_norm_topk_prob} if arch.fixed_norm_topk_prob is not None else {}
    for name, default in arch.moe.items():
        if g.get(name) is None:
            out[name] = default
        elif isinstance(default, bool):
            out[name] = _bool(g, name, default, src)
        else:
            out[name] = _pos_int(g, name, src, allow_zero=name == "num_experts")
    if out["num_experts"] and out["num_experts_per_tok"] > out["num_experts"]:
        raise ConfigError(f"{src}: num_experts_per_tok ({out['num_experts_per_tok']}) is larger than "
                          f"num_experts ({out['num_experts']})")
    if arch.every_layer_sparse:  # Qwen3.5-MoE's config has no mlp_only_layers or decoder_sparse_step
        return dict(out, mlp_only_layers=[], mlp_types=["sparse"] * n_layers)
    only = g.get("mlp_only_layers") or []
    if not isinstance(only, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_layers
                                             for i in only):
        raise ConfigError(f"{src}: mlp_only_layers must be a list of layer indices below {n_layers}, found {only!r}")
    out["mlp_only_layers"] = list(only)
    out["mlp_types"] = ["sparse" if is_sparse(i, out["num_experts"], only, out["decoder_sparse_step"]) else "dense"
                        for i in range(n_layers)]
    return out


def _rope_parameters(d, src, max_pos, arch) -> dict:
    """Normalise 4.x `rope_theta` + `rope_scaling` and 5.x `rope_parameters` into one dict."""
    where = "rope_parameters" if d.get("rope_parameters") is not None else "rope_scaling"
    rp = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if not isinstance(rp, dict):
        raise ConfigError(f"{src}: {where} must be a JSON object, found {rp!r}")
    rp = dict(rp)
    rope_type = rp.pop("rope_type", None) or rp.pop("type", None) or "default"
    rp.pop("type", None)
    if arch.mrope and rope_type == "mrope":   # Qwen2-VL / Qwen2.5-VL's hub files: ordinary RoPE, on 3 axes
        rope_type = "default"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(f"{src}: {where} type {rope_type!r} is not supported "
                          f"(npqwen supports: {', '.join(SUPPORTED_ROPE_TYPES)})")
    theta = rp.pop("rope_theta", None)
    if theta is None:
        theta = d.get("rope_theta", 10000.0)
    if not _is_num(theta) or theta <= 1:
        raise ConfigError(f"{src}: rope_theta must be a number greater than 1, found {theta!r}")
    prf = rp.pop("partial_rotary_factor", d.get("partial_rotary_factor", 1.0))
    if not arch.hybrid and prf != 1.0:
        raise ConfigError(f"{src}: partial_rotary_factor {prf!r} is not supported by {arch.class_name} (must be 1.0)")
    if arch.mrope:
        # Multi-axis RoPE (time, height, width) of the vision-language checkpoints (_mrope_fields): for
        # text alone the three position axes are the token's position, and it is exactly ordinary RoPE.
        rp.pop("mrope_section", None), rp.pop("mrope_interleaved", None)
    unknown = sorted(set(rp) - _ROPE_KEYS[rope_type])
    if unknown:
        raise ConfigError(f"{src}: {where} key {unknown[0]!r} is not used by rope type {rope_type!r} "
                          f"(it takes: {', '.join(sorted(_ROPE_KEYS[rope_type])) or 'nothing'})")
    out = {"rope_type": rope_type, "rope_theta": float(theta)}
    if rope_type != "default":
        factor = rp.get("factor")
        if not _is_num(factor) or factor < 1:
            raise ConfigError(f"{src}: {where}.factor must be a number >= 1 for rope type {rope_type!r}, "
                              f"found {factor!r}")
        out["factor"] = float(factor)
    if rope_type == "yarn":
        omp = rp.get("original_max_position_embeddings", max_pos)
        if not isinstance(omp, int) or isinstance(omp, bool) or omp <= 0:
            raise ConfigError(f"{src}: {where}.original_max_position_embeddings must be a positive integer, "
                              f"found {omp!r}")
        out["original_max_position_embeddings"] = omp
        for key in ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
            if rp.get(key) is not None:
                if not _is_num(rp[key]) or rp[key] < 0:
                    raise ConfigError(f"{src}: {where}.{key} must be a non-negative number, found {rp[key]!r}")
                out[key] = float(rp[key])
        truncate = rp.get("truncate", True)
        if not isinstance(truncate, bool):
            raise ConfigError(f"{src}: {where}.truncate must be true or false, found {truncate!r}")
        out["truncate"] = truncate
    return out


def _is_num(x) -> bool:
    try:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def _bool(d, name, default, src) -> bool:
    v = d.get(name, default)
    if not isinstance(v, bool):
        raise ConfigError(f"{src}: {name} must be true or false, found {v!r}")
    return v


def _pos_int(d, name, src, allow_zero=False) -> int:
    v = d.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or (v == 0 and not allow_zero):
        kind = "a non-negative integer" if allow_zero else "a positive integer"
        raise ConfigError(f"{src}: field '{name}' must be {kind}, found {v!r}")
    if v > 2**31:
        raise ConfigError(f"{src}: field '{name}' is implausibly large ({v})")
    return v
