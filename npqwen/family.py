"""The Qwen family in one table: what differs between its architectures, and nothing else.

Every member is the same decoder,

    input_ids -> embed_tokens -> N x [ x = x + mixer(norm(x));  x = x + mlp(norm(x)) ] -> norm -> lm_head

and differs only in the blocks a layer is built from and in how its config.json names them:

  model_type  class                attention (the mixer)                        MLP of layer i
  qwen2       Qwen2ForCausalLM     q/k/v biases, none on o_proj                 dense SwiGLU
  qwen3       Qwen3ForCausalLM     RMSNorm of each q and k head before RoPE;    dense SwiGLU
                                   biases on q/k/v AND o_proj iff attention_bias
  qwen2_moe   Qwen2MoeForCausalLM  q/k/v biases iff qkv_bias                    sparse MoE with a sigmoid-gated
                                                                                shared expert, or dense
  qwen3_moe   Qwen3MoeForCausalLM  as qwen3                                     sparse MoE, or dense

The hybrid generation mixes two token mixers, layer by layer (layer_types, or one full-attention
layer every full_attention_interval): three in four layers are Gated DeltaNet (deltanet.py), a
linear attention that carries a fixed-size state instead of a KV cache, and the fourth is gated
attention (q_proj also yields a sigmoid gate on each head's output; RoPE on a quarter of head_dim).
Every RMSNorm of theirs is zero-centred: its weight w is stored as an offset, applied as (1 + w).

  qwen3_next        Qwen3NextForCausalLM  DeltaNet (fused, per key head) / gated attention   sparse MoE + shared expert
  qwen3_5_text      Qwen3_5ForCausalLM    DeltaNet (split projections) / gated attention    dense SwiGLU
  qwen3_5_moe_text  Qwen3_5MoeForCausalLM as qwen3_5_text                                   sparse MoE + shared expert,
                                                                                            every layer, top-k renormalised
  qwen3_5, qwen3_5_moe: the released checkpoints (Qwen3_5[Moe]ForConditionalGeneration): a vision
  tower (vision/tower.py) beside the text model (text_config, model.language_model.*).

Qwen3.8-Flash-Next (qwen4_exp_text, and qwen4_exp as released) keeps the hybrid layers and changes
the decoder around them (flash_next.py): four residual streams mixed by hyper-connections instead
of one residual and its norms (hyper.py), hashed n-gram embeddings injected at chosen layers
(engram.py), and every attention layer sparse: QSA, each query attending only to the key blocks an
indexer scores highest (qsa.py).

  qwen4_exp_text    Qwen4ExpForCausalLM   DeltaNet (split, sigmoid output gate) / QSA      sparse MoE + shared expert,
                                                                                            every layer

The vision-language models are a vision tower (vision/) beside one of the text models above; image
tokens take 3-D positions (time, height, width) whose rotary frequencies are split between the three
axes, interleaved (t h w t h w ...) or in three contiguous sections (mrope below):

  qwen3_vl_text     Qwen3VLTextModel      as qwen3 (RoPE interleaved between 3 axes)     dense SwiGLU
  qwen3_vl_moe_text Qwen3VLMoeTextModel   as qwen3                                       sparse MoE, experts fused and
                                                                                          stored [E, in, out], top-k renormalised
  qwen2_5_vl_text   Qwen2_5_VLTextModel   as qwen2 (RoPE in 3 contiguous sections)       dense SwiGLU
  qwen3_vl, qwen3_vl_moe, qwen2_5_vl: the ForConditionalGeneration checkpoints (Qwen2.5-VL's hub files
  are flat: the text fields at the top level, weights model.* and visual.*).

Layer i's MLP is sparse iff the model has experts, i is not in mlp_only_layers and
(i + 1) % decoder_sparse_step == 0 (all three MoE configs agree). The rules below are transformers
5.23's configuration classes, each quoted where it is used.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Architecture:
    model_type: str
    class_name: str
    qk_norm: bool                   # q_norm / k_norm: RMSNorm over head_dim, per head, before RoPE
    bias_field: str | None          # the config field that switches attention biases on (None: fixed)
    bias_default: bool              # its default, or the fixed value
    o_proj_bias: bool               # does the bias switch cover o_proj too?
    head_dim_default: int | None    # when config.json has no head_dim; None = hidden_size / heads
    window_rule: str                # how layer_types is derived when config.json has none (see below)
    moe: dict = field(default_factory=dict)   # MoE fields and their defaults; empty = dense model
    shared_expert: bool = False
    # the hybrid generation
    hybrid: bool = False            # linear-attention (DeltaNet) layers among gated full-attention ones
    deltanet_layout: str | None = None   # "split" in_proj_qkv/_z/_b/_a, or "fused" in_proj_qkvz/_ba per key head
    every_layer_sparse: bool = False     # Qwen3.5-MoE: no mlp_only_layers / decoder_sparse_step
    fixed_norm_topk_prob: bool | None = None  # Qwen3.5-MoE always renormalises
    text_config_of: str | None = None     # a composite checkpoint: the model_type of its text_config
    hyper_connections: bool = False       # Qwen3.8-Flash-Next: streams, n-gram embeddings, sparse attention
    # the vision-language generation
    mrope: str | None = None        # how RoPE's frequencies are shared between t, h, w: "interleaved" or "contiguous"
    mrope_section: tuple = ()       # frequencies per axis when rope_parameters has no mrope_section (the class default)
    vision: str | None = None       # a composite's vision tower: "qwen3" (LayerNorm, learned positions) or "qwen2_5"
    image_tokens: tuple = ()        # default (image, video, vision_start, vision_end) token ids of the config class
    flat_text_config: bool = False  # the text fields may sit at the top level (Qwen2.5-VL's hub files)
    experts_in_out: bool = False    # fused experts stored [E, d, 2i] / [E, i, d] (Qwen3-VL-MoE), not [E, 2i, d]


# Defaults of the MoE fields, as transformers' config classes set them.
_QWEN2_MOE = dict(num_experts=60, num_experts_per_tok=4, moe_intermediate_size=1408,
                  shared_expert_intermediate_size=5632, norm_topk_prob=False, decoder_sparse_step=1)
_QWEN3_MOE = dict(num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768,
                  norm_topk_prob=False, decoder_sparse_step=1)
_QWEN3_NEXT_MOE = dict(num_experts=512, num_experts_per_tok=10, moe_intermediate_size=512,
                       shared_expert_intermediate_size=512, norm_topk_prob=True, decoder_sparse_step=1)
_QWEN3_5_MOE = dict(num_experts=256, num_experts_per_tok=8, moe_intermediate_size=512,
                    shared_expert_intermediate_size=512)
_QWEN4_EXP_MOE = dict(num_experts=512, num_experts_per_tok=10, moe_intermediate_size=512,
                      shared_expert_intermediate_size=512, norm_topk_prob=True)
_QWEN3_VL_MOE = dict(num_experts=60, num_experts_per_tok=4, moe_intermediate_size=1408, decoder_sparse_step=1)
_QWEN3_5_TOKENS = (248056, 248057, 248053, 248054)   # image, video, vision_start, vision_end
_QWEN_VL_TOKENS = (151655, 151656, 151652, 151653)
# Qwen3.8-Flash-Next's own fields and the defaults of transformers 5.23's Qwen4ExpTextConfig
# (split_ngram_parts: 512 by default, 128 in the release; seed: 1234 when absent, as released).
HYPER_DEFAULTS = dict(hc_count=4, hc_lowrank=320, ple_conv_kernel_size=4, ngram_size=3, heads_per_ngram=8,
                      ngram_vocab_size_base=20_000_000, make_ngram_vocab_size_divisible_by=128, seed=1234,
                      split_ngram_parts=512)
INDEXER_FIELDS = ("indexer_n_heads", "indexer_kv_heads", "indexer_head_dim", "indexer_budget", "indexer_compress_ratio")
# The Gated DeltaNet fields, and the defaults the hybrid configs share.
LINEAR_ATTENTION = dict(linear_conv_kernel_dim=4, linear_key_head_dim=128, linear_value_head_dim=128,
                        linear_num_key_heads=16, linear_num_value_heads=32)
HYBRID_DEFAULTS = dict(partial_rotary_factor=0.25, full_attention_interval=4)

ARCHITECTURES = {a.model_type: a for a in [
    Architecture("qwen2", "Qwen2ForCausalLM", qk_norm=False, bias_field=None, bias_default=True,
                 o_proj_bias=False, head_dim_default=None, window_rule="from_max_window_layers"),
    Architecture("qwen3", "Qwen3ForCausalLM", qk_norm=True, bias_field="attention_bias", bias_default=False,
                 o_proj_bias=True, head_dim_default=128, window_rule="from_max_window_layers"),
    Architecture("qwen2_moe", "Qwen2MoeForCausalLM", qk_norm=False, bias_field="qkv_bias", bias_default=True,
                 o_proj_bias=False, head_dim_default=None, window_rule="even_below_max_window_layers",
                 moe=_QWEN2_MOE, shared_expert=True),
    Architecture("qwen3_moe", "Qwen3MoeForCausalLM", qk_norm=True, bias_field="attention_bias", bias_default=False,
                 o_proj_bias=True, head_dim_default=None, window_rule="every_layer", moe=_QWEN3_MOE),
    Architecture("qwen3_next", "Qwen3NextForCausalLM", qk_norm=True, bias_field="attention_bias",
                 bias_default=False, o_proj_bias=True, head_dim_default=256, window_rule="none",
                 moe=_QWEN3_NEXT_MOE, shared_expert=True, hybrid=True, deltanet_layout="fused"),
    Architecture("qwen3_5_text", "Qwen3_5ForCausalLM", qk_norm=True, bias_field="attention_bias",
                 bias_default=False, o_proj_bias=True, head_dim_default=256, window_rule="none",
                 hybrid=True, deltanet_layout="split", mrope="interleaved", mrope_section=(11, 11, 10)),
    Architecture("qwen3_5_moe_text", "Qwen3_5MoeForCausalLM", qk_norm=True, bias_field="attention_bias",
                 bias_default=False, o_proj_bias=True, head_dim_default=256, window_rule="none",
                 moe=_QWEN3_5_MOE, shared_expert=True, hybrid=True, deltanet_layout="split",
                 every_layer_sparse=True, fixed_norm_topk_prob=True, mrope="interleaved",
                 mrope_section=(11, 11, 10)),
    Architecture("qwen4_exp_text", "Qwen4ExpForCausalLM", qk_norm=True, bias_field="attention_bias",
                 bias_default=False, o_proj_bias=True, head_dim_default=256, window_rule="none",
                 moe=_QWEN4_EXP_MOE, shared_expert=True, hybrid=True, deltanet_layout="split",
                 every_layer_sparse=True, hyper_connections=True, mrope="interleaved",
                 mrope_section=(11, 11, 10)),
    Architecture("qwen4_exp", "Qwen4ExpForConditionalGeneration", qk_norm=True, bias_field=None, bias_default=False,
                 o_proj_bias=False, head_dim_default=None, window_rule="none", text_config_of="qwen4_exp_text",
                 vision="qwen3", image_tokens=_QWEN3_5_TOKENS),
    Architecture("qwen3_5", "Qwen3_5ForConditionalGeneration", qk_norm=True, bias_field=None, bias_default=False,
                 o_proj_bias=False, head_dim_default=None, window_rule="none", text_config_of="qwen3_5_text",
                 vision="qwen3", image_tokens=_QWEN3_5_TOKENS),
    Architecture("qwen3_5_moe", "Qwen3_5MoeForConditionalGeneration", qk_norm=True, bias_field=None,
                 bias_default=False, o_proj_bias=False, head_dim_default=None, window_rule="none",
                 text_config_of="qwen3_5_moe_text", vision="qwen3", image_tokens=_QWEN3_5_TOKENS),
    Architecture("qwen3_vl_text", "Qwen3VLTextModel", qk_norm=True, bias_field="attention_bias", bias_default=False,
                 o_proj_bias=True, head_dim_default=128, window_rule="from_max_window_layers", mrope="interleaved",
                 mrope_section=(24, 20, 20)),
    Architecture("qwen3_vl_moe_text", "Qwen3VLMoeTextModel", qk_norm=True, bias_field="attention_bias",
                 bias_default=False, o_proj_bias=True, head_dim_default=None, window_rule="from_max_window_layers",
                 moe=_QWEN3_VL_MOE, fixed_norm_topk_prob=True, experts_in_out=True, mrope="interleaved",
                 mrope_section=(24, 20, 20)),
    Architecture("qwen2_5_vl_text", "Qwen2_5_VLTextModel", qk_norm=False, bias_field=None, bias_default=True,
                 o_proj_bias=False, head_dim_default=None, window_rule="from_max_window_layers", mrope="contiguous",
                 mrope_section=(16, 24, 24)),
    Architecture("qwen3_vl", "Qwen3VLForConditionalGeneration", qk_norm=True, bias_field=None, bias_default=False,
                 o_proj_bias=False, head_dim_default=None, window_rule="none", text_config_of="qwen3_vl_text",
                 vision="qwen3", image_tokens=_QWEN_VL_TOKENS),
    Architecture("qwen3_vl_moe", "Qwen3VLMoeForConditionalGeneration", qk_norm=True, bias_field=None,
                 bias_default=False, o_proj_bias=False, head_dim_default=None, window_rule="none",
                 text_config_of="qwen3_vl_moe_text", vision="qwen3", image_tokens=_QWEN_VL_TOKENS),
    Architecture("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", qk_norm=False, bias_field=None,
                 bias_default=False, o_proj_bias=False, head_dim_default=None, window_rule="none",
                 text_config_of="qwen2_5_vl_text", vision="qwen2_5", image_tokens=_QWEN_VL_TOKENS,
                 flat_text_config=True),
]}


def sliding_layers(rule: str, n_layers: int, max_window_layers: int) -> list[bool]:
    """Which layers use the sliding window when it is on and config.json lists no layer_types.
      from_max_window_layers        Qwen2Config, Qwen3Config: layers i >= max_window_layers
      even_below_max_window_layers  Qwen2MoeConfig: i even and i < max_window_layers (the other direction)
      every_layer                   Qwen3MoeConfig: no max_window_layers; every layer's attention slides"""
    if rule == "from_max_window_layers":
        return [i >= max_window_layers for i in range(n_layers)]
    if rule == "even_below_max_window_layers":
        return [i % 2 == 0 and i < max_window_layers for i in range(n_layers)]
    return [True] * n_layers


def hybrid_layer_types(n_layers: int, full_attention_interval: int, attention="full_attention") -> list[str]:
    """Qwen3.5 / Qwen3-Next without layer_types: layer i is full attention iff (i + 1) % interval == 0
    (Qwen3.8-Flash-Next: attention="indexed_attention", its only kind)."""
    return [attention if (i + 1) % full_attention_interval == 0 else "linear_attention"
            for i in range(n_layers)]


def is_sparse(layer: int, num_experts: int, mlp_only_layers, decoder_sparse_step: int) -> bool:
    return num_experts > 0 and layer not in mlp_only_layers and (layer + 1) % decoder_sparse_step == 0
