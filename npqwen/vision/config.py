"""VisionConfig: a vision tower's hyper-parameters, from config.json's vision_config, validated.

Two towers (tower.py), named by the family table (family.py, `vision`):
  "qwen3"   Qwen3-VL, Qwen3.5 / 3.6 / 3.8: LayerNorm, GELU (tanh) MLP, learned position embeddings on a
            square grid, full attention within each image, DeepStack mergers (Qwen3-VL).
  "qwen2_5" Qwen2.5-VL: RMSNorm, SwiGLU MLP, no learned positions, window attention with full attention
            at fullatt_block_indexes.
Defaults are those of transformers 5.23's config classes (Qwen3_5VisionConfig, Qwen3VLVisionConfig,
Qwen2_5_VLVisionConfig). Qwen2.5-VL's hub files also name in_channels `in_chans` and patch_size
`spatial_patch_size`.
"""

from dataclasses import dataclass, field

from ..errors import ConfigError

_QWEN3 = dict(depth=27, hidden_size=1152, hidden_act="gelu_pytorch_tanh", intermediate_size=4304, num_heads=16,
              in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=3584,
              num_position_embeddings=2304)
_QWEN2_5 = dict(depth=32, hidden_size=3584, hidden_act="silu", intermediate_size=3420, num_heads=16, in_channels=3,
                patch_size=14, spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=3584, window_size=112,
                tokens_per_second=4)
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu", "silu", "quick_gelu")


@dataclass
class VisionConfig:
    kind: str                           # "qwen3" or "qwen2_5" (see above)
    depth: int                          # transformer blocks
    hidden_size: int                    # the ViT's width
    intermediate_size: int              # its MLP's
    num_heads: int
    in_channels: int
    patch_size: int                     # pixels per patch side
    temporal_patch_size: int            # frames per patch (a still image is repeated this many times)
    spatial_merge_size: int             # m: each m x m block of patches becomes one token of the language model
    out_hidden_size: int                # the language model's width
    hidden_act: str
    rope_theta: float = 10000.0         # of the 2-D rotary embedding
    num_position_embeddings: int = 0    # "qwen3": the learned grid's size (a square: side = sqrt of it)
    deepstack_visual_indexes: list = field(default_factory=list)   # "qwen3": blocks whose output is merged
    window_size: int = 0                # "qwen2_5": a window's side in pixels
    fullatt_block_indexes: list = field(default_factory=list)      # "qwen2_5": blocks attending over whole images
    prefix: str = "model.visual."       # where the tensors are (load_model also reads Qwen2.5-VL's visual.*)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def merged_size(self) -> int:       # one language-model token's share of the tower: m * m patches
        return self.hidden_size * self.spatial_merge_size ** 2

    @property
    def patch_dim(self) -> int:         # numbers in one patch: C * T * P * P
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

    @property
    def grid_side(self) -> int:
        return int(self.num_position_embeddings ** 0.5)


def parse_vision_config(d, arch, src, text_hidden) -> VisionConfig | None:
    """None when config.json has no vision_config: the model then reads text only."""
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ConfigError(f"{src}: expected a JSON object, found {type(d).__name__}")
    kind = arch.vision
    g = dict(d)
    if "in_chans" in g and "in_channels" not in g:
        g["in_channels"] = g["in_chans"]
    if "spatial_patch_size" in g and "patch_size" not in g:
        g["patch_size"] = g["spatial_patch_size"]
    defaults = _QWEN3 if kind == "qwen3" else _QWEN2_5
    out = {}
    for name, default in defaults.items():
        value = g.get(name, default) if g.get(name) is not None else default
        if name == "hidden_act":
            if value not in ACTIVATIONS:
                raise ConfigError(f"{src}: hidden_act {value!r} is not supported (npqwen's vision towers use: "
                                  f"{', '.join(ACTIVATIONS)})")
        elif not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{src}: {name} must be a positive integer, found {value!r}")
        out[name] = value
    out.pop("tokens_per_second", None)   # video only
    if out["hidden_size"] % out["num_heads"] or (out["hidden_size"] // out["num_heads"]) % 4:
        raise ConfigError(f"{src}: hidden_size ({out['hidden_size']}) / num_heads ({out['num_heads']}) must be a "
                          f"multiple of 4 (the 2-D rotary embedding gives each head a quarter per axis and direction)")
    if out["out_hidden_size"] != text_hidden:
        raise ConfigError(f"{src}: out_hidden_size ({out['out_hidden_size']}) must equal the text model's "
                          f"hidden_size ({text_hidden}): the image features replace token embeddings")
    rp = g.get("rope_parameters") if isinstance(g.get("rope_parameters"), dict) else {}
    theta = rp.get("rope_theta", g.get("rope_theta", 10000.0))
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta <= 1:
        raise ConfigError(f"{src}: rope_theta must be a number greater than 1, found {theta!r}")
    out["rope_theta"] = float(theta)
    if kind == "qwen3":
        side = int(out["num_position_embeddings"] ** 0.5)
        if side * side != out["num_position_embeddings"] or side < 2:
            raise ConfigError(f"{src}: num_position_embeddings ({out['num_position_embeddings']}) must be a square "
                              f"of at least 4 (the learned positions are a square grid)")
        default = [8, 16, 24] if arch.model_type.startswith("qwen3_vl") else []
        out["deepstack_visual_indexes"] = _indexes(g.get("deepstack_visual_indexes", default), out["depth"],
                                                   "deepstack_visual_indexes", src)
    else:
        out["fullatt_block_indexes"] = _indexes(g.get("fullatt_block_indexes", [7, 15, 23, 31]), out["depth"],
                                                "fullatt_block_indexes", src)
        window = out["window_size"]
        unit = out["patch_size"] * out["spatial_merge_size"]
        if window % unit:
            raise ConfigError(f"{src}: window_size ({window}) must be a multiple of patch_size x spatial_merge_size "
                              f"({unit})")
    return VisionConfig(kind=kind, **out)


def _indexes(value, depth, name, src) -> list:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < depth
                                                       for i in value):
        raise ConfigError(f"{src}: {name} must be a list of block numbers below depth ({depth}), found {value!r}")
    return list(value)
