"""Qwen2Config: the hyper-parameters in a checkpoint's config.json, validated.

Field names are transformers' own. Two on-disk forms are read:
- transformers 4.x: `rope_theta` and `rope_scaling` ({"type" or "rope_type": ..., "factor": ...}),
  `torch_dtype`;
- transformers 5.x: `rope_parameters` ({"rope_type", "rope_theta", ...}), `dtype`, `layer_types`.
Both are normalised to `rope_parameters` (with `rope_theta` and `rope_scaling` kept as aliases).
Defaults for optional fields are transformers' Qwen2Config defaults (5.x).
"""

import json
import math
import os
from dataclasses import dataclass, field

from .errors import ConfigError

SUPPORTED_MODEL_TYPES = ("qwen2",)
SUPPORTED_ARCHITECTURES = ("Qwen2ForCausalLM",)
SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "yarn")
LAYER_TYPES = ("full_attention", "sliding_attention")
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
class Qwen2Config:
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

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "Qwen2Config":
        return _parse(d, source)

    @classmethod
    def from_file(cls, path: str) -> "Qwen2Config":
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
        return _parse(d, path)


# ---------------------------------------------------------------------------------------------
# parsing and validation


def _parse(d, src) -> Qwen2Config:
    if not isinstance(d, dict):
        raise ConfigError(f"{src}: expected a JSON object, found {type(d).__name__}")

    model_type = d.get("model_type")
    if model_type is None:
        raise ConfigError(f"{src}: missing field 'model_type' (npqwen supports: {', '.join(SUPPORTED_MODEL_TYPES)})")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"{src}: model_type {model_type!r} is not supported "
                          f"(npqwen supports: {', '.join(SUPPORTED_MODEL_TYPES)})")
    archs = d.get("architectures") or ["Qwen2ForCausalLM"]
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise ConfigError(f"{src}: 'architectures' must be a list of names, found {archs!r}")
    unsupported = [a for a in archs if a not in SUPPORTED_ARCHITECTURES]
    if unsupported:
        raise ConfigError(f"{src}: architecture {unsupported[0]!r} is not supported "
                          f"(npqwen supports: {', '.join(SUPPORTED_ARCHITECTURES)})")

    for name in REQUIRED_FIELDS:
        if name not in d or d[name] is None:
            raise ConfigError(f"{src}: missing field '{name}'")
    ints = {name: _pos_int(d, name, src) for name in REQUIRED_FIELDS}
    heads = ints["num_attention_heads"]
    kv_heads = _pos_int(d, "num_key_value_heads", src) if d.get("num_key_value_heads") is not None else heads
    if heads % kv_heads:
        raise ConfigError(f"{src}: num_attention_heads ({heads}) is not divisible by "
                          f"num_key_value_heads ({kv_heads})")
    if d.get("head_dim") is not None:
        head_dim = _pos_int(d, "head_dim", src)
    else:
        if ints["hidden_size"] % heads:
            raise ConfigError(f"{src}: hidden_size ({ints['hidden_size']}) is not divisible by "
                              f"num_attention_heads ({heads})")
        head_dim = ints["hidden_size"] // heads
    if head_dim % 2:
        raise ConfigError(f"{src}: head_dim ({head_dim}) must be even for rotary embeddings")

    hidden_act = d.get("hidden_act", "silu")
    if hidden_act != "silu":
        raise ConfigError(f"{src}: hidden_act {hidden_act!r} is not supported (Qwen2 uses 'silu')")
    eps = d.get("rms_norm_eps", 1e-6)
    if not _is_num(eps) or not (0 < eps < 1):
        raise ConfigError(f"{src}: rms_norm_eps must be a number in (0, 1), found {eps!r}")
    max_pos = _pos_int(d, "max_position_embeddings", src) if "max_position_embeddings" in d else 32768
    tie = d.get("tie_word_embeddings", False)
    if not isinstance(tie, bool):
        raise ConfigError(f"{src}: tie_word_embeddings must be true or false, found {tie!r}")

    n_layers = ints["num_hidden_layers"]
    use_sw = d.get("use_sliding_window", False)
    if not isinstance(use_sw, bool):
        raise ConfigError(f"{src}: use_sliding_window must be true or false, found {use_sw!r}")
    # transformers: 4096 when the key is absent; null disables the window.
    window = d.get("sliding_window", 4096) if use_sw else None
    if window is not None:
        window = _pos_int({"sliding_window": window}, "sliding_window", src)
    max_window_layers = _pos_int(d, "max_window_layers", src, allow_zero=True) if "max_window_layers" in d else 28
    layer_types = d.get("layer_types")
    if layer_types is None:
        # transformers 5.x: layers from max_window_layers on use the sliding window, when it is on.
        layer_types = ["sliding_attention" if window is not None and i >= max_window_layers else "full_attention"
                       for i in range(n_layers)]
    else:
        if not isinstance(layer_types, list) or len(layer_types) != n_layers:
            raise ConfigError(f"{src}: layer_types must be a list of {n_layers} entries (one per layer), "
                              f"found {layer_types!r}")
        bad = [t for t in layer_types if t not in LAYER_TYPES]
        if bad:
            raise ConfigError(f"{src}: layer_types entry {bad[0]!r} is not supported "
                              f"(npqwen supports: {', '.join(LAYER_TYPES)})")
        if "sliding_attention" in layer_types and window is None:
            raise ConfigError(f"{src}: layer_types has sliding_attention layers but sliding_window is not set "
                              f"(or use_sliding_window is false)")

    dtype = d.get("dtype", d.get("torch_dtype"))
    return Qwen2Config(
        vocab_size=ints["vocab_size"], hidden_size=ints["hidden_size"],
        intermediate_size=ints["intermediate_size"], num_hidden_layers=n_layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
        rms_norm_eps=float(eps), max_position_embeddings=max_pos, tie_word_embeddings=tie,
        rope_parameters=_rope_parameters(d, src, max_pos),
        use_sliding_window=use_sw, sliding_window=window, max_window_layers=max_window_layers,
        layer_types=list(layer_types), hidden_act=hidden_act,
        dtype=dtype if isinstance(dtype, str) else None, model_type=model_type, architectures=list(archs),
        bos_token_id=d.get("bos_token_id"), eos_token_id=d.get("eos_token_id"), pad_token_id=d.get("pad_token_id"),
    )


def _rope_parameters(d, src, max_pos) -> dict:
    """Normalise 4.x `rope_theta` + `rope_scaling` and 5.x `rope_parameters` into one dict."""
    where = "rope_parameters" if d.get("rope_parameters") is not None else "rope_scaling"
    rp = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if not isinstance(rp, dict):
        raise ConfigError(f"{src}: {where} must be a JSON object, found {rp!r}")
    rp = dict(rp)
    rope_type = rp.pop("rope_type", None) or rp.pop("type", None) or "default"
    rp.pop("type", None)
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(f"{src}: {where} type {rope_type!r} is not supported "
                          f"(npqwen supports: {', '.join(SUPPORTED_ROPE_TYPES)})")
    theta = rp.pop("rope_theta", None)
    if theta is None:
        theta = d.get("rope_theta", 10000.0)
    if not _is_num(theta) or theta <= 1:
        raise ConfigError(f"{src}: rope_theta must be a number greater than 1, found {theta!r}")
    prf = rp.pop("partial_rotary_factor", d.get("partial_rotary_factor", 1.0))
    if prf != 1.0:
        raise ConfigError(f"{src}: partial_rotary_factor {prf!r} is not supported by Qwen2 (must be 1.0)")
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


def _pos_int(d, name, src, allow_zero=False) -> int:
    v = d.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or (v == 0 and not allow_zero):
        kind = "a non-negative integer" if allow_zero else "a positive integer"
        raise ConfigError(f"{src}: field '{name}' must be {kind}, found {v!r}")
    if v > 2**31:
        raise ConfigError(f"{src}: field '{name}' is implausibly large ({v})")
    return v
