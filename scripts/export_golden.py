"""Export golden reference data from transformers, once. Not used by the package or its tests.

For each case below this builds a small Qwen2 / Qwen3 / Qwen2-MoE / Qwen3-MoE ForCausalLM (or a
Qwen3.5 / Qwen3.5-MoE / Qwen3-Next Gated DeltaNet hybrid, text-only or composite) with transformers,
overwrites EVERY parameter with random values (transformers' init leaves biases at 0 and norms at 1,
which would hide whole classes of bugs), saves it as a standard checkpoint folder
(bf16 or f32 safetensors, single file or sharded) under golden/checkpoints/<case>/, reloads that
folder with transformers in float32 with eager attention (and eager experts), and records for fixed
prompts the logits and every hidden state (golden/references/<case>.safetensors), plus the greedy
tokens of `generate(do_sample=False)`.

MoE cases route clear of ties: every router call (the forward, generate's prefill and decode steps,
and a forward over prompt + generated tokens) is hooked, and routers are re-drawn, deterministically,
until no real token's k-th and (k+1)-th router probabilities lie within 1e-3 and every expert serves
a share of the tokens in every sparse layer. Each feature a case covers (sliding window, q/k norm,
o_proj bias, norm_topk_prob, the shared-expert gate) is switched off on the same weights and must
move the logits by more than 1e-2; the json records by how much.

    python -m venv /tmp/goldenv && /tmp/goldenv/bin/pip install torch==2.13.0 && \
    /tmp/goldenv/bin/pip install -e ".[golden]" && /tmp/goldenv/bin/python scripts/export_golden.py

Install torch with that exact pin before transformers: anything else pulls CUDA packages.
`--out DIR` writes DIR/checkpoints/<case>/ and DIR/references/<case>.* instead of golden/ (a staging
folder for cases the package cannot run yet: the tests pick up every case under golden/).

Hybrid cases (Qwen3.5, Qwen3.5-MoE, Qwen3-Next: Gated DeltaNet "linear attention" layers beside gated
full attention) also record the decode-step logits of generate (p<k>.generate_logits), check that
generate's cached recurrent decode, a token-by-token run of the prompt through the cache and the
token-by-token delta-rule kernel all agree with the chunked prefill, and switch off, one at a time, each
detail that must be exactly right (zero-centred norms, output gates, L2 norm of q and k, decay before the
update, value heads grouped per key head, partial RoPE, the padding zeroing, ...): each must move the
logits by more than 1e-2. Their files can be rewritten the way Qwen released them (composite config,
model.language_model.* beside model.visual.* and mtp.*, `model.safetensors-0000i-of-0000n.safetensors`
shards, fused experts, A_log and the DeltaNet norm kept in float32 inside bf16 files).
"""

import argparse
import contextlib
import copy
import functools
import json
import math
import os
import shutil
import sys
import types

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch_file
from transformers import (Qwen2Config, Qwen2ForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM, Qwen3_5Config,
                          Qwen3_5ForCausalLM, Qwen3_5ForConditionalGeneration, Qwen3_5MoeConfig,
                          Qwen3_5MoeForCausalLM, Qwen3_5MoeForConditionalGeneration, Qwen3_5MoeTextConfig,
                          Qwen3_5TextConfig, Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM,
                          Qwen3NextConfig, Qwen3NextForCausalLM)
from transformers.models.qwen3_5 import modeling_qwen3_5
from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe
from transformers.models.qwen3_next import modeling_qwen3_next

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden")
MODELS = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM),
          "qwen2_moe": (Qwen2MoeConfig, Qwen2MoeForCausalLM), "qwen3_moe": (Qwen3MoeConfig, Qwen3MoeForCausalLM),
          "qwen3_5_text": (Qwen3_5TextConfig, Qwen3_5ForCausalLM),
          "qwen3_5": (Qwen3_5Config, Qwen3_5ForConditionalGeneration),
          "qwen3_5_moe_text": (Qwen3_5MoeTextConfig, Qwen3_5MoeForCausalLM),
          "qwen3_5_moe": (Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration),
          "qwen3_next": (Qwen3NextConfig, Qwen3NextForCausalLM)}
MOE_TYPES = {"qwen2_moe", "qwen3_moe", "qwen3_5_moe_text", "qwen3_5_moe", "qwen3_next"}
# Gated DeltaNet hybrids: the transformers module whose delta-rule kernel the sensitivity checks replace
HYBRID = {"qwen3_5_text": modeling_qwen3_5, "qwen3_5": modeling_qwen3_5, "qwen3_5_moe_text": modeling_qwen3_5_moe,
          "qwen3_5_moe": modeling_qwen3_5_moe, "qwen3_next": modeling_qwen3_next}
COMPOSITE = {"qwen3_5", "qwen3_5_moe"}  # ForConditionalGeneration: text_config + vision_config

BASE = dict(vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            max_position_embeddings=512, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
MOE = dict(num_experts=8, moe_intermediate_size=32)
# Hybrids: the released structure, tiny. head_dim 32 of which 8 rotate (partial_rotary_factor 0.25), rope_theta 1e7;
# linear attention: 2 key heads of 16, 4 value heads of 12 (each key head serves 2 consecutive value heads).
L, F = "linear_attention", "full_attention"
HYBRID_BASE = dict(vocab_size=320, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=32, rms_norm_eps=1e-6, max_position_embeddings=512, tie_word_embeddings=False,
                   linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=12,
                   linear_conv_kernel_dim=4,
                   rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25})
HYBRID_MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=32)
# Composite checkpoints' rope_parameters, as released (mrope_section sums to the 4 rotary frequencies here)
MROPE = {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25, "mrope_section": [2, 1, 1],
         "mrope_interleaved": True}
VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=4, spatial_merge_size=2,
              temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=16)
F32_KEEP = ("linear_attn.A_log", "linear_attn.norm.weight")  # float32 in the released bf16 files

# name: (model type, config overrides, dtype, shard size or None, prompts, rewrite config.json in 4.x form
#        [, file layout of a hybrid case: see save_layout])
# A prompt is a list of lengths: one row each, left-padded to the longest.
# New cases go at the END: each case's seed is its position in this table.
CASES = {
    "gqa3_bf16": ("qwen2", dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2,  # 3 q heads per kv head
                                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
                  torch.bfloat16, None, [[7], [33], [300], [5, 12, 9]], False),
    "mha_f32_tied": ("qwen2", dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
                     torch.float32, None, [[11], [4, 16]], False),
    "mqa_bf16_sharded": ("qwen2", dict(num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=4),
                         torch.bfloat16, "60KB", [[19], [3, 8, 8]], False),
    "rope_linear": ("qwen2", dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
                    torch.bfloat16, None, [[13], [90]], False),
    "rope_yarn_4x": ("qwen2", dict(max_position_embeddings=128,
                                   rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                                    "original_max_position_embeddings": 32}),
                     torch.bfloat16, None, [[10], [100]], True),
    "rope_dynamic": ("qwen2", dict(max_position_embeddings=32,
                                   rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}),
                     torch.bfloat16, None, [[20], [80]], False),
    "sliding_window": ("qwen2", dict(use_sliding_window=True, sliding_window=8, max_window_layers=1,
                                     num_key_value_heads=1),
                       torch.bfloat16, None, [[40], [25, 40, 31]], False),
    # Qwen3: q/k RMSNorm per head; head_dim 24 is not hidden/heads = 16; biases on q, k, v AND o_proj.
    "qwen3_headdim_bias": ("qwen3", dict(head_dim=24, attention_bias=True),
                           torch.bfloat16, None, [[110], [5, 30, 17]], False),
    # Qwen3, tied embeddings, no bias, window 8 on layers >= max_window_layers (2 and 3).
    "qwen3_tied_window": ("qwen3", dict(head_dim=16, num_hidden_layers=4, tie_word_embeddings=True,
                                        use_sliding_window=True, sliding_window=8, max_window_layers=2),
                          torch.bfloat16, None, [[120], [25, 40, 31]], False),
    # Qwen2-MoE: top-2 of 8 experts plus a sigmoid-gated shared expert; layer 1 dense; qkv biases.
    "qwen2_moe_shared": ("qwen2_moe", dict(**MOE, num_experts_per_tok=2, shared_expert_intermediate_size=96,
                                           norm_topk_prob=False, mlp_only_layers=[1]),
                         torch.bfloat16, None, [[110], [20, 45, 33]], False),
    # Qwen3-MoE: top-3 of 8, renormalised; decoder_sparse_step 2 makes layers 1 and 3 sparse, 0 and 2 dense.
    "qwen3_moe_step2": ("qwen3_moe", dict(**MOE, head_dim=16, num_hidden_layers=4, num_experts_per_tok=3,
                                          norm_topk_prob=True, decoder_sparse_step=2),
                        torch.bfloat16, None, [[105], [12, 50, 29]], False),
    # Qwen3-MoE as hub checkpoints ship it: 4.x config.json (num_experts, rope_theta, torch_dtype), sharded;
    # top-2 of 8 without renormalising, layer 0 dense via mlp_only_layers, head_dim 32 (not 16), tied.
    "qwen3_moe_v4_sharded": ("qwen3_moe", dict(**MOE, head_dim=32, num_experts_per_tok=2, norm_topk_prob=False,
                                               mlp_only_layers=[0], tie_word_embeddings=True),
                             torch.bfloat16, "60KB", [[100], [9, 40, 22]], True),
    # Qwen3.5 text model, irregular layer_types (full attention at layer 1 of 4), a 200-token prompt (4 chunks of 64)
    # and a left-padded batch whose longest row spans 3 chunks; A_log and the DeltaNet norm float32 in a bf16 file.
    "qwen3_5_text_irregular": ("qwen3_5_text", dict(intermediate_size=160, layer_types=[L, F, L, L]),
                               torch.bfloat16, None, [[200], [30, 150, 70]], False, dict(float32=True)),
    # Qwen3.5 text model, all bf16 (as save_pretrained writes), config.json without layer_types (full_attention_interval
    # 3 of 5 layers: L L F L L), without head_dim (default 256, not hidden/heads = 32; 64 rotary dims as released) and
    # without partial_rotary_factor (default 0.25); 3 value heads per key head (as Qwen3.5-27B), tied embeddings.
    "qwen3_5_text_interval": ("qwen3_5_text", dict(intermediate_size=128, num_hidden_layers=5,
                                                   full_attention_interval=3, num_attention_heads=2,
                                                   num_key_value_heads=1, head_dim=256,
                                                   linear_num_value_heads=6, tie_word_embeddings=True,
                                                   rope_parameters={"rope_type": "default", "rope_theta": 10000000.0}),
                              torch.bfloat16, None, [[140], [9, 130, 64]], False,
                              dict(config_drop=["head_dim", "layer_types", "rope_parameters.partial_rotary_factor"],
                                   full_attention_interval=3)),
    # Qwen3.5 as released (Qwen3_5ForConditionalGeneration, read text-only): text_config + a tiny vision_config,
    # model.language_model.* beside model.visual.* and random mtp.*, two `model.safetensors-0000i-of-00002` shards,
    # tied by the top-level tie_word_embeddings (as Qwen3.5-0.8B).
    "qwen3_5_released": ("qwen3_5", dict(text_config=dict(intermediate_size=160, tie_word_embeddings=True,
                                                          rope_parameters=MROPE), tie_word_embeddings=True),
                         torch.bfloat16, None, [[130], [17, 129, 60]], False, dict(float32=True, released=True)),
    # Qwen3.5-MoE as released: every layer sparse (top-2 of 8, always renormalised, sigmoid-gated shared expert),
    # experts FUSED in the file (gate_up_proj [E, 2I, H], down_proj [E, H, I]); untied because the top-level
    # tie_word_embeddings is false although text_config says true (transformers follows the top level).
    "qwen3_5_moe_released": ("qwen3_5_moe", dict(text_config=dict(**HYBRID_MOE, tie_word_embeddings=True,
                                                                  rope_parameters=MROPE), tie_word_embeddings=False),
                             torch.bfloat16, None, [[140], [12, 133, 50]], False,
                             dict(float32=True, released=True, fused_experts=True)),
    # Qwen3.5-MoE text model as transformers' save_pretrained writes it: one tensor set per expert, all bf16.
    "qwen3_5_moe_text": ("qwen3_5_moe_text", dict(**HYBRID_MOE), torch.bfloat16, None, [[130], [9, 60, 33]], False,
                         dict()),
    # Qwen3-Next: fused in_proj_qkvz / in_proj_ba grouped per key head, layer 2 dense (mlp_only_layers), the others
    # sparse with a shared expert, norm_topk_prob; 4.x config.json as released (partial_rotary_factor and
    # full_attention_interval at the top level), sharded; A_log and the DeltaNet norm float32.
    "qwen3_next": ("qwen3_next", dict(**HYBRID_MOE, intermediate_size=96, mlp_only_layers=[2], norm_topk_prob=True),
                   torch.bfloat16, "120KB", [[150], [25, 140, 66]], True, dict(float32=True)),
}
GENERATE_NEW_TOKENS = 12
ROUTER_SCALE = 1.5       # router logits of std ~1.5: fewest near ties (larger shrinks the k-th probability)
MIN_ROUTER_GAP = 1e-3    # no token's k-th and (k+1)-th router probabilities closer than this
MIN_EXPERT_SHARE = 0.02  # every expert chosen in at least this share of the routed rows, in every sparse layer
MIN_SENSITIVITY = 1e-2   # each feature must move the logits by at least this (relative)
MAX_ATTEMPTS = 100       # whole-model re-draws, when generated tokens route near a tie
MAX_ROUTER_DRAWS = 2000  # router re-draws per sparse layer, against the prompt tokens


def hybrid_value(name, shape, gen):
    """A hybrid model's parameters that differ from the rule below, or None."""
    if ".visual." in name:
        return None  # the vision tower's LayerNorms are plain: the rule below
    if name.endswith("linear_attn.A_log"):  # decay rates exp(A_log) log-uniform in [0.02, 0.5]: some heads keep
        return math.log(0.02) + math.log(25.0) * torch.rand(shape, generator=gen)  # their state for 100s of tokens
    if name.endswith("linear_attn.norm.weight"):  # the DeltaNet output norm multiplies by w
        return 1.0 + 0.3 * torch.randn(shape, generator=gen)
    if "norm" in name:  # every other norm is zero-centred: x_normed * (1 + w), w near 0
        return 0.3 * torch.randn(shape, generator=gen)
    return None


def randomize(model, gen, hybrid=False):
    """Overwrite every parameter: biases and norm weights too, so none is a no-op."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if hybrid and (value := hybrid_value(name, p.shape, gen)) is not None:
                p.copy_(value)
            elif "norm" in name:  # input/post-attention/final norms, q_norm and k_norm
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif name.endswith("mlp.gate.weight"):  # MoE router [experts, hidden]
                p.copy_(ROUTER_SCALE * torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
            else:  # [out, in] matrices and fused experts [experts, out, in]: unit-variance outputs
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)


def to_v4_config(folder):
    """Rewrite config.json the way transformers 4.x saved it (rope_theta + rope_scaling, torch_dtype,
    and num_experts for Qwen3-MoE, which 5.x writes as num_local_experts)."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    if "partial_rotary_factor" in rp:  # Qwen3-Next: a top-level field in 4.x
        cfg["partial_rotary_factor"] = rp.pop("partial_rotary_factor")
    cfg["rope_theta"] = rp.pop("rope_theta")
    rp["type"] = rp.pop("rope_type")
    cfg["rope_scaling"] = None if rp == {"type": "default"} else rp  # hub configs: null for plain RoPE
    cfg["torch_dtype"] = cfg.pop("dtype")
    layer_types = cfg.pop("layer_types", None)
    if cfg["model_type"] in HYBRID:  # 4.x hybrids: full_attention_interval instead of layer_types
        cfg["full_attention_interval"] = regular_interval(layer_types)
    if "num_local_experts" in cfg:
        cfg["num_experts"] = cfg.pop("num_local_experts")
    cfg["transformers_version"] = ("4.57.0" if cfg["model_type"] == "qwen3_next"  # Qwen3-Next: 4.57
                                   else "4.51.0" if cfg["model_type"].startswith("qwen3") else "4.43.1")  # Qwen3: 4.51
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def make_batch(lengths, vocab, gen):
    """Random ids, left-padded to the longest row with pad id 0, and the 0/1 attention mask."""
    T = max(lengths)
    ids = np.zeros((len(lengths), T), np.int64)
    mask = np.zeros((len(lengths), T), np.int64)
    for r, n in enumerate(lengths):
        ids[r, T - n:] = torch.randint(1, vocab, (n,), generator=gen).numpy()
        mask[r, T - n:] = 1
    return ids, mask


def positions(mask):
    """Position ids as generate() computes them for left padding."""
    return torch.from_numpy(np.where(mask == 0, 1, mask.cumsum(-1) - 1))


def regular_interval(layer_types):
    """The full_attention_interval that gives these layer types: layer i is full iff (i + 1) % interval == 0."""
    interval = layer_types.index(F) + 1
    assert layer_types == [F if (i + 1) % interval == 0 else L for i in range(len(layer_types))], layer_types
    return interval


def load(model_type, folder, **overrides):
    """A fresh float32 eager model per call: dynamic RoPE keeps state between calls in transformers."""
    if model_type in MOE_TYPES:
        overrides = {"experts_implementation": "eager", **overrides}
    cls = MODELS[model_type][1]
    return cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager", **overrides).eval()


def run(model, ids, mask):
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.no_grad():
        out = model(input_ids=ids_t, attention_mask=mask_t, position_ids=positions(mask), output_hidden_states=True)
        gen = model.generate(input_ids=ids_t, attention_mask=mask_t, do_sample=False,
                             max_new_tokens=GENERATE_NEW_TOKENS, min_new_tokens=GENERATE_NEW_TOKENS,
                             pad_token_id=0)
    return out, gen[:, ids.shape[1]:].numpy()


def logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                     position_ids=positions(mask)).logits


def relative_change(other, ref, mask):
    valid = torch.from_numpy(mask) == 1
    return float((other - ref)[valid].norm() / ref[valid].norm())


# ----------------------------------------------------------------------------------------------
# MoE routing: record every router call, check that no choice hangs on a near tie
# ----------------------------------------------------------------------------------------------

def decoder_layers(model):
    """The decoder layers: model.model.layers, or model.model.language_model.layers in a composite model."""
    return getattr(model.model, "language_model", model.model).layers


def sparse_layers(model):
    return [i for i, layer in enumerate(decoder_layers(model)) if hasattr(layer.mlp, "experts")]


class RouterLog:
    """Forward hooks on every router: its float32 logits and chosen experts, per call, per layer."""

    def __init__(self, model):
        self.calls = {i: [] for i in sparse_layers(model)}
        self.handles = [decoder_layers(model)[i].mlp.gate.register_forward_hook(self.hook(i)) for i in self.calls]

    def hook(self, i):
        def record(module, inputs, output):
            self.calls[i].append((output[0].detach().float().clone(), output[2].detach().clone()))
        return record

    def take(self, batch, mask=None):
        """The calls since the last take, as {layer: (probs [n, E], chosen [n, k])} over real tokens only.
        mask [B, T] selects the real tokens of a call over T positions; calls over 1 position are all real."""
        out = {}
        for i, calls in self.calls.items():
            probs, chosen = [], []
            for router_logits, idx in calls:
                p = torch.softmax(router_logits, dim=-1).reshape(batch, -1, router_logits.shape[-1])
                idx = idx.reshape(batch, p.shape[1], -1)
                keep = torch.ones(p.shape[:2], dtype=torch.bool) if p.shape[1] == 1 else torch.from_numpy(mask == 1)
                probs.append(p[keep])
                chosen.append(idx[keep])
            out[i] = (torch.cat(probs), torch.cat(chosen))
            calls.clear()
        return out

    def close(self):
        for h in self.handles:
            h.remove()


def routing_facts(taken, k, num_experts):
    """Per sparse layer: experts used, how often, distinct top-k sets, smallest k-th/(k+1)-th gap."""
    facts = []
    for i in sorted(taken[0]):
        probs = torch.cat([t[i][0] for t in taken])
        chosen = torch.cat([t[i][1] for t in taken])
        top = probs.sort(dim=-1, descending=True)
        gap = top.values[:, k - 1] - top.values[:, k]
        clear = gap > 1e-6  # where the choice is not a tie, it is the top k of these probabilities
        assert torch.equal(top.indices[clear, :k].sort(-1).values, chosen[clear].sort(-1).values)
        counts = torch.bincount(chosen.flatten(), minlength=num_experts)
        facts.append({"layer": i, "rows_checked": int(probs.shape[0]),
                      "experts_used": [int(e) for e in torch.nonzero(counts).flatten()],
                      "selections_per_expert": [int(c) for c in counts],
                      "distinct_expert_sets": len({tuple(r) for r in chosen.sort(-1).values.tolist()}),
                      "min_gap_kth_vs_next_prob": float(gap.min())})
    return facts


def routing_ok(facts, num_experts):
    return all(min(f["selections_per_expert"]) >= MIN_EXPERT_SHARE * f["rows_checked"]
               and f["distinct_expert_sets"] > 1 and f["min_gap_kth_vs_next_prob"] >= MIN_ROUTER_GAP for f in facts)


# ----------------------------------------------------------------------------------------------
# Sensitivity: the same weights with one feature switched off must give other logits
# ----------------------------------------------------------------------------------------------

class SigmoidOne(torch.nn.Module):
    """Stands in for shared_expert_gate: +inf, so sigmoid(gate) is exactly 1 (the shared expert ungated)."""

    def forward(self, x):
        return torch.full((*x.shape[:-1], 1), float("inf"), dtype=x.dtype)


def variants(model_type, config, folder):
    """{meta name: model with one feature switched off or flipped}; each must change the logits."""
    out = {}
    if "sliding_attention" in (getattr(config, "layer_types", None) or []):
        out["relative_change_without_window"] = load(model_type, folder,
                                                     layer_types=["full_attention"] * config.num_hidden_layers)
    if model_type in ("qwen3", "qwen3_moe"):
        m = load(model_type, folder)
        for layer in m.model.layers:  # skipped, which is not the same as weight 1
            layer.self_attn.q_norm = torch.nn.Identity()
            layer.self_attn.k_norm = torch.nn.Identity()
        out["relative_change_without_qk_norm"] = m
    if getattr(config, "attention_bias", False):
        m = load(model_type, folder)
        with torch.no_grad():
            for layer in m.model.layers:
                layer.self_attn.o_proj.bias.zero_()
        out["relative_change_without_o_proj_bias"] = m
    if model_type.endswith("_moe"):
        out["relative_change_norm_topk_prob_flipped"] = load(model_type, folder,
                                                             norm_topk_prob=not config.norm_topk_prob)
    if model_type == "qwen2_moe":
        m = load(model_type, folder)
        for i in sparse_layers(m):
            m.model.layers[i].mlp.shared_expert_gate = SigmoidOne()
        out["relative_change_shared_expert_ungated"] = m
    return out


def read_tensors(folder):
    saved = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(folder, name), "pt") as f:
                saved.update({k: f.get_tensor(k) for k in f.keys()})
    return saved


def check_expert_layout(folder, model, fused=False):
    """The saved files hold one [out, in] matrix per expert (or, fused=True, the model's own [E, 2I, H] and
    [E, H, I] stacks); the model fuses them: gate_up_proj[e] is gate_proj (the first half of its rows) over
    up_proj, and down_proj[e] is down_proj."""
    saved = read_tensors(folder)
    prefix = "model.language_model.layers" if hasattr(model.model, "language_model") else "model.layers"
    assert fused == any(".experts.gate_up_proj" in k or k.endswith(".experts.down_proj") for k in saved)
    for i in sparse_layers(model):
        experts = decoder_layers(model)[i].mlp.experts
        if fused:
            assert torch.equal(saved[f"{prefix}.{i}.mlp.experts.gate_up_proj"].float(), experts.gate_up_proj)
            assert torch.equal(saved[f"{prefix}.{i}.mlp.experts.down_proj"].float(), experts.down_proj)
            continue
        n = experts.gate_up_proj.shape[1] // 2
        for e in range(experts.gate_up_proj.shape[0]):
            pre = f"{prefix}.{i}.mlp.experts.{e}."
            assert torch.equal(saved[pre + "gate_proj.weight"].float(), experts.gate_up_proj[e, :n])
            assert torch.equal(saved[pre + "up_proj.weight"].float(), experts.gate_up_proj[e, n:])
            assert torch.equal(saved[pre + "down_proj.weight"].float(), experts.down_proj[e])


# ----------------------------------------------------------------------------------------------
# Gated DeltaNet hybrids: the delta rule, each detail switched off, and the decode paths
# ----------------------------------------------------------------------------------------------

def delta_rule(query, key, value, g, beta, initial_state=None, output_final_state=False,
               use_qk_l2norm_in_kernel=False, l2=True, tile=False, decay_after=False, **kwargs):
    """The gated delta rule token by token in float32, as a stand-in for transformers' kernels (same arguments):
    per value head S [dk, dv]; S *= exp(g_t); delta = beta_t (v_t - S^T k_t); S += k_t delta^T; out_t = S^T q_t.
    Each flag switches one detail off: l2=False skips the L2 norm of q and k, tile=True gives value head h the
    key head h % num_k_heads (instead of h // (num_v_heads / num_k_heads)), decay_after=True decays S after the
    update instead of before it. With no flag this must agree with transformers' chunked kernel."""
    r = value.shape[2] // key.shape[2]
    if r > 1:
        query, key = ((x.repeat(1, 1, r, 1) if tile else x.repeat_interleave(r, dim=2)) for x in (query, key))
    q, k, v, b, g = (x.transpose(1, 2).float() for x in (query, key, value, beta, g))  # [B, H, T, ...]
    if use_qk_l2norm_in_kernel and l2:
        q, k = modeling_qwen3_5.l2norm(q), modeling_qwen3_5.l2norm(k)
    q = q * q.shape[-1] ** -0.5
    B, H, T, dk = k.shape
    S = torch.zeros(B, H, dk, v.shape[-1]) if initial_state is None else initial_state.float()
    out = torch.zeros_like(v)
    for t in range(T):
        decay = g[:, :, t].exp()[..., None, None]
        if not decay_after:
            S = S * decay
        delta = (v[:, :, t] - (S * k[:, :, t, :, None]).sum(-2)) * b[:, :, t, None]
        S = S + k[:, :, t, :, None] * delta[:, :, None, :]
        if decay_after:
            S = S * decay
        out[:, :, t] = (S * q[:, :, t, :, None]).sum(-2)
    return out.transpose(1, 2).to(query.dtype), (S if output_final_state else None)


@contextlib.contextmanager
def patched(obj, name, value):
    saved = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, saved)


def with_kernel(model_type, model, rule):
    """logits(ids, mask) of model with transformers' chunked delta-rule kernel replaced by rule."""
    def run(ids, mask):
        with patched(HYBRID[model_type], "torch_chunk_gated_delta_rule", rule):
            return logits(model, ids, mask)
    return run


class GateOpen(torch.nn.Module):
    """Stands in for q_proj: the gate half of every head is +inf, so sigmoid(gate) is exactly 1 (no output gate)."""

    def __init__(self, q_proj, head_dim):
        super().__init__()
        self.q_proj, self.head_dim = q_proj, head_dim

    def forward(self, x):
        y = self.q_proj(x).unflatten(-1, (-1, 2, self.head_dim)).clone()
        y[..., 1, :] = float("inf")
        return y.flatten(-3)


class QueryGateHalves(torch.nn.Module):
    """Stands in for q_proj: its rows read as [all queries | all gates] instead of [query | gate] per head."""

    def __init__(self, q_proj, head_dim):
        super().__init__()
        self.q_proj, self.head_dim = q_proj, head_dim

    def forward(self, x):
        queries, gates = self.q_proj(x).chunk(2, dim=-1)
        per_head = [z.unflatten(-1, (-1, self.head_dim)) for z in (queries, gates)]
        return torch.cat(per_head, dim=-1).flatten(-2)  # what the model splits per head as [query | gate]


class NormWithoutGate(torch.nn.Module):
    """Stands in for the DeltaNet output norm: normalise, multiply by w, and drop the silu(z) gate."""

    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, x, gate):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.norm.variance_epsilon)
        return (self.norm.weight * h.to(x.dtype)).to(x.dtype)


def ungrouped_qkvz(self, mixed_qkvz, mixed_ba):
    """Qwen3-Next's fused projections read flat, [q | k | v | z] and [b | a], instead of grouped per key head."""
    q, k, v, z = torch.split(mixed_qkvz, [self.key_dim, self.key_dim, self.value_dim, self.value_dim], dim=-1)
    b, a = torch.split(mixed_ba, [self.num_v_heads, self.num_v_heads], dim=-1)
    heads = lambda x, d: x.unflatten(-1, (-1, d))
    dk, dv = self.head_k_dim, self.head_v_dim
    return heads(q, dk), heads(k, dk), heads(v, dv), heads(z, dv), b, a


def unnormalised_router(self, hidden_states):
    """Qwen3.5-MoE's router without the renormalisation of the top-k probabilities it always applies."""
    router_logits = torch.nn.functional.linear(hidden_states.reshape(-1, self.hidden_dim), self.weight)
    probs = torch.softmax(router_logits, dtype=torch.float, dim=-1)
    top, chosen = torch.topk(probs, self.top_k, dim=-1)
    return router_logits, top.to(router_logits.dtype), chosen


def hybrid_variants(model_type, config, folder):
    """{meta name: logits(ids, mask)} of the same weights with one detail switched off; each must move the logits."""
    tc = config.get_text_config()
    out = {}

    def variant(name, change=None, **overrides):
        m = load(model_type, folder, **overrides)
        with torch.no_grad():
            (change or (lambda m: None))(m)
        out[name] = lambda ids, mask: logits(m, ids, mask)

    def norms_as_w(m):  # every zero-centred RMSNorm (input, post-attention, final, q_norm, k_norm) read as w
        for module in m.modules():
            if type(module).__name__.endswith("RMSNorm"):
                module.weight -= 1.0
    variant("relative_change_norm_read_as_w", norms_as_w)

    def linear_attn(m):
        return [layer.linear_attn for layer in decoder_layers(m) if hasattr(layer, "linear_attn")]

    def self_attn(m):
        return [layer.self_attn for layer in decoder_layers(m) if hasattr(layer, "self_attn")]

    def deltanet_norm_as_1_plus_w(m):
        for la in linear_attn(m):
            la.norm.weight += 1.0
    variant("relative_change_deltanet_norm_read_as_1_plus_w", deltanet_norm_as_1_plus_w)

    def attention_gate_dropped(m):
        for sa in self_attn(m):
            sa.q_proj = GateOpen(sa.q_proj, sa.head_dim)
    variant("relative_change_attention_gate_dropped", attention_gate_dropped)

    def query_gate_halves(m):
        for sa in self_attn(m):
            sa.q_proj = QueryGateHalves(sa.q_proj, sa.head_dim)
    variant("relative_change_q_proj_read_as_halves", query_gate_halves)

    def deltanet_gate_dropped(m):
        for la in linear_attn(m):
            la.norm = NormWithoutGate(la.norm)
    variant("relative_change_deltanet_gate_dropped", deltanet_gate_dropped)

    def rope_on_all_dims(m):
        inner = getattr(m.model, "language_model", m.model)
        theta, hd = tc.rope_parameters["rope_theta"], tc.head_dim
        inner.rotary_emb.inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float) / hd)
    variant("relative_change_rope_on_all_dims", rope_on_all_dims)

    for name, flags in [("relative_change_without_l2norm", dict(l2=False)),
                        ("relative_change_decay_after_update", dict(decay_after=True)),
                        ("relative_change_heads_tiled", dict(tile=True))]:
        out[name] = with_kernel(model_type, load(model_type, folder), functools.partial(delta_rule, **flags))

    if model_type == "qwen3_next":
        def qkvz_ungrouped(m):
            for la in linear_attn(m):
                la.fix_query_key_value_ordering = types.MethodType(ungrouped_qkvz, la)
        variant("relative_change_qkvz_read_ungrouped", qkvz_ungrouped)
    if model_type in MOE_TYPES:
        def shared_expert_ungated(m):
            for i in sparse_layers(m):
                decoder_layers(m)[i].mlp.shared_expert_gate = SigmoidOne()
        variant("relative_change_shared_expert_ungated", shared_expert_ungated)
    if model_type == "qwen3_next":
        variant("relative_change_norm_topk_prob_flipped", norm_topk_prob=not tc.norm_topk_prob)
    if model_type in ("qwen3_5_moe", "qwen3_5_moe_text"):
        def topk_not_renormalised(m):
            for i in sparse_layers(m):
                gate = decoder_layers(m)[i].mlp.gate
                gate.forward = types.MethodType(unnormalised_router, gate)
        variant("relative_change_topk_not_renormalised", topk_not_renormalised)
    if model_type in COMPOSITE and tc.tie_word_embeddings != config.tie_word_embeddings:
        def tied_as_text_config(m):
            if tc.tie_word_embeddings:
                m.lm_head.weight.copy_(m.model.language_model.embed_tokens.weight)
        variant("relative_change_tying_from_text_config", tied_as_text_config)
    return out


def padding_not_zeroed(model_type, folder):
    """logits(ids, mask) without the zeroing of padded positions before the DeltaNet projections."""
    m = load(model_type, folder)

    def run(ids, mask):
        with patched(HYBRID[model_type], "apply_mask_to_padding_states", lambda h, attention_mask: h):
            return logits(m, ids, mask)
    return run


def stepwise_logits(model, ids):
    """The prompt fed one token at a time through the cache: every step is a cached decode step (conv state
    shifted by one, recurrent state updated by one token)."""
    cache, steps = None, []
    with torch.no_grad():
        for t in range(ids.shape[1]):
            out = model(input_ids=torch.from_numpy(ids[:, t:t + 1]), position_ids=torch.full((len(ids), 1), t),
                        past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits[:, -1])
    return torch.stack(steps, dim=1)


def decode_paths(model_type, folder, ids, mask, ref_logits, generated):
    """The decode-step logits of generate, and how far each other path to the same logits lies from the chunked
    prefill: transformers' own token-by-token kernel, this script's delta_rule, the cached step-by-step run of
    the prompt (unpadded rows only: transformers zeroes padding in prefill, never in a decode step), and generate's
    decode steps against a forward over prompt + generated tokens. All must be float32 round-off."""
    model = load(model_type, folder)
    facts = {}
    with torch.no_grad():
        gen = model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), do_sample=False,
                             max_new_tokens=GENERATE_NEW_TOKENS, min_new_tokens=GENERATE_NEW_TOKENS, pad_token_id=0,
                             output_logits=True, return_dict_in_generate=True)
    assert np.array_equal(gen.sequences[:, ids.shape[1]:].numpy(), generated)  # the same tokens as recorded
    step_logits = torch.stack(gen.logits, dim=1)  # [B, new tokens, V]: prefill's last position, then each decode step
    full_ids = np.concatenate([ids, generated], axis=1)
    full_mask = np.concatenate([mask, np.ones_like(generated)], axis=1)
    full = logits(load(model_type, folder), full_ids, full_mask)[:, ids.shape[1] - 1:-1]
    assert torch.equal(full.argmax(-1), torch.from_numpy(generated))  # greedy decode == greedy over one forward
    facts["relative_difference_generate_steps_vs_forward"] = float((step_logits - full).norm() / full.norm())
    top2 = step_logits.topk(2, dim=-1).values
    facts["min_top2_margin_generated"] = float((top2[..., 0] - top2[..., 1]).min())
    recurrent = with_kernel(model_type, load(model_type, folder), HYBRID[model_type].torch_recurrent_gated_delta_rule)
    facts["relative_difference_token_by_token_kernel"] = relative_change(recurrent(ids, mask), ref_logits, mask)
    ours = with_kernel(model_type, load(model_type, folder), delta_rule)
    facts["relative_difference_exporter_delta_rule"] = relative_change(ours(ids, mask), ref_logits, mask)
    if mask.all():
        facts["relative_difference_stepwise_cached_decode"] = relative_change(
            stepwise_logits(load(model_type, folder), ids), ref_logits, mask)
    for what, value in facts.items():
        assert what.startswith("min_") or value < 1e-4, (what, value)
    return step_logits.numpy().astype(np.float32), facts


# ----------------------------------------------------------------------------------------------
# Hybrid checkpoint files as released
# ----------------------------------------------------------------------------------------------

def fuse_experts(tensors):
    """Per-expert matrices -> the released stacks: gate_up_proj [E, 2I, H] (gate rows over up rows) and
    down_proj [E, H, I], under <layer>.mlp.experts."""
    out, groups = {}, {}
    for key, t in tensors.items():
        head, sep, tail = key.partition(".mlp.experts.")
        if sep and tail.split(".")[0].isdigit():
            e, proj = tail.split(".")[:2]
            groups.setdefault(head, {})[(int(e), proj)] = t
        else:
            out[key] = t
    for head, g in groups.items():
        n = 1 + max(e for e, _ in g)
        out[f"{head}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([g[(e, "gate_proj")], g[(e, "up_proj")]]) for e in range(n)])
        out[f"{head}.mlp.experts.down_proj"] = torch.stack([g[(e, "down_proj")] for e in range(n)])
    return out


def mtp_tensors(tensors, config, gen):
    """Random multi-token-prediction weights with the released names: one decoder layer shaped like the first
    full-attention layer, mtp.fc [H, 2H] and its zero-centred norms. npqwen must ignore them."""
    tc = config.get_text_config()
    layer = f"model.language_model.layers.{tc.layer_types.index(F)}."
    dtype = tensors["model.language_model.embed_tokens.weight"].dtype
    h = tc.hidden_size
    shapes = {"mtp.fc.weight": (h, 2 * h), "mtp.pre_fc_norm_embedding.weight": (h,),
              "mtp.pre_fc_norm_hidden.weight": (h,), "mtp.norm.weight": (h,)}
    shapes.update({"mtp.layers.0." + k[len(layer):]: tuple(t.shape) for k, t in tensors.items() if k.startswith(layer)})
    return random_tensors(shapes, gen, dtype)


def random_tensors(shapes, gen, dtype):
    """{name: shape} -> random tensors: norms about 0 (zero-centred), matrices scaled by 1/sqrt(fan-in)."""
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        scale = 0.3 if "norm" in name else 1.0 / shape[-1] ** 0.5
        out[name] = (scale * torch.randn(shape, generator=gen)).to(dtype)
    return out


def write_released_shards(folder, tensors, shards=2):
    """`model.safetensors-0000i-of-0000n.safetensors` files (as Qwen3.5 shipped) and model.safetensors.index.json."""
    for name in os.listdir(folder):
        if name.endswith(".safetensors") or name.endswith(".safetensors.index.json"):
            os.remove(os.path.join(folder, name))
    keys = sorted(tensors)
    sizes = [tensors[k].numel() * tensors[k].element_size() for k in keys]
    total, weight_map, start, done = sum(sizes), {}, 0, 0
    for i in range(shards):
        end = start
        while end < len(keys) and (i == shards - 1 or done + sizes[end] <= total * (i + 1) / shards):
            done += sizes[end]
            end += 1
        name = f"model.safetensors-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_torch_file({k: tensors[k].contiguous() for k in keys[start:end]}, os.path.join(folder, name),
                        metadata={"format": "pt"})
        weight_map.update({k: name for k in keys[start:end]})
        start = end
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)


def edit_config(folder, model_type, layout):
    """config.json as released: the composite's text_config with full_attention_interval, attn_output_gate and
    mlp_only_layers beside layer_types, the vision_config with its old model_type; or a text config with fields
    dropped (layout["config_drop"], "a.b" for a nested key) and full_attention_interval written instead."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    if layout.get("released"):
        text = cfg["text_config"]
        text["full_attention_interval"] = regular_interval(text["layer_types"])
        text["attn_output_gate"] = True
        if model_type == "qwen3_5":
            text["mlp_only_layers"] = []
        vision = cfg["vision_config"]
        vision["model_type"] = model_type  # released: "qwen3_5" / "qwen3_5_moe", renamed by transformers on load
        for key in ("rope_parameters", "initializer_range"):
            vision.pop(key)
    for key in layout.get("config_drop", []):
        *parents, last = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        node.pop(last)
    if "full_attention_interval" in layout:
        cfg["full_attention_interval"] = layout["full_attention_interval"]
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def save_layout(folder, model_type, config, layout, gen):
    """Rewrite a saved hybrid checkpoint as layout says: released=True (composite: mtp.* added, two shards named
    as released, config.json as released), fused_experts=True (experts stacked as released), config edits.
    float32=True is applied before saving (build)."""
    assert layout.get("released") or not layout.get("fused_experts"), "fused experts are written as released"
    if layout.get("released"):
        tensors = read_tensors(folder)
        if layout.get("fused_experts"):
            tensors = fuse_experts(tensors)
        if layout.get("released"):
            tensors.update(mtp_tensors(tensors, config, gen))
        write_released_shards(folder, tensors)
    if layout.get("released") or layout.get("config_drop"):
        edit_config(folder, model_type, layout)


# ----------------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------------

def make_config(model_type, overrides):
    config_cls = MODELS[model_type][0]
    if model_type in COMPOSITE:
        overrides = dict(overrides)
        return config_cls(text_config={**HYBRID_BASE, **overrides.pop("text_config")},
                          vision_config={**VISION, **overrides.pop("vision_config", {})}, **overrides)
    return config_cls(**{**(HYBRID_BASE if model_type in HYBRID else BASE), **overrides})


def build(model_type, overrides, dtype, prompts, gen, layout=None):
    """The randomised model in its checkpoint dtype, then the prompt batches, from one generator.
    layout["float32"]: A_log and the DeltaNet norm weight stay float32 (their float32 draws) in a bf16 model."""
    config = make_config(model_type, overrides)
    model = MODELS[model_type][1](config)
    randomize(model, gen, hybrid=model_type in HYBRID)
    keep = {n: p.detach().clone() for n, p in model.named_parameters()
            if (layout or {}).get("float32") and n.endswith(F32_KEEP)}
    model = model.to(dtype)
    for n, p in model.named_parameters():
        if n in keep:
            p.data = keep[n]
    vocab = config.get_text_config().vocab_size
    return config, model, [make_batch(lengths, vocab, gen) for lengths in prompts]


def save(model, shard, v4, folder, layout=None, gen=None):
    shutil.rmtree(folder, ignore_errors=True)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, **kwargs)
    if v4:
        to_v4_config(folder)
    if layout:
        save_layout(folder, model.config.model_type, model.config, layout, gen)


def export_prompts(model_type, model, folder, batches):
    """Reference arrays and meta for each prompt, the last reloaded model, router records."""
    arrays, entries, taken = {}, [], []
    for k, (ids, mask) in enumerate(batches):
        loaded = load(model_type, folder)
        # The reloaded model must hold exactly the bf16/f32 weights that were saved.
        for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert n1 == n2 and torch.equal(p1.float(), p2), n1
        log = RouterLog(loaded) if model_type in MOE_TYPES else None
        out, new_tokens = run(loaded, ids, mask)
        if log:
            # Every router call: the forward and generate's prefill (real tokens), each decode step, and a
            # forward over prompt + generated tokens (the only one that routes the last generated token).
            taken.append(log.take(len(ids), mask))
            full_mask = np.concatenate([mask, np.ones_like(new_tokens)], axis=1)
            logits(loaded, np.concatenate([ids, new_tokens], axis=1), full_mask)
            taken.append(log.take(len(ids), full_mask))
            log.close()
        arrays[f"p{k}.input_ids"] = ids
        arrays[f"p{k}.attention_mask"] = mask
        arrays[f"p{k}.logits"] = out.logits.numpy().astype(np.float32)
        for i, h in enumerate(out.hidden_states):
            arrays[f"p{k}.hidden.{i}"] = h.numpy().astype(np.float32)
        arrays[f"p{k}.generated"] = np.ascontiguousarray(new_tokens)  # save_file needs C order
        top2 = np.sort(out.logits.numpy(), axis=-1)[..., -2:]
        margin = float((top2[..., 1] - top2[..., 0])[mask == 1].min())
        entries.append({"lengths": [int(n) for n in mask.sum(-1)], "min_top2_margin": margin,
                        "hidden_states": len(out.hidden_states)})
    return arrays, entries, loaded, taken


def draw_routers(model, config, batches, gen):
    """Re-draw each sparse layer's router, lowest layer first, until the prompt tokens route clear of
    ties and use every expert there. A layer's router input depends only on the layers below it, so
    this takes tens of draws per layer where re-drawing the whole model would take many thousands.
    Returns the draws per layer, or None if some layer found no clean router."""
    probe = copy.deepcopy(model).float()  # runs in float32 on the checkpoint's (bf16) weights
    log, draws = RouterLog(probe), {}
    k, num_experts = config.get_text_config().num_experts_per_tok, config.get_text_config().num_experts
    for i in sparse_layers(model):
        gate = decoder_layers(model)[i].mlp.gate.weight
        for draw in range(MAX_ROUTER_DRAWS):
            if draw:
                with torch.no_grad():
                    gate.copy_(ROUTER_SCALE * torch.randn(gate.shape, generator=gen) / gate.shape[-1] ** 0.5)
                    decoder_layers(probe)[i].mlp.gate.weight.copy_(gate.float())
            taken = []
            for ids, mask in batches:
                logits(probe, ids, mask)
                taken.append({i: log.take(len(ids), mask)[i]})
            if routing_ok(routing_facts(taken, k, num_experts), num_experts):
                draws[i] = draw + 1
                break
        else:
            return None
    log.close()
    return draws


def export_case(name, model_type, overrides, dtype, shard, prompts, v4, layout=None, *, seed, out_dir):
    folder = os.path.join(out_dir, "checkpoints", name)
    moe, hybrid = model_type in MOE_TYPES, model_type in HYBRID
    for attempt in range(MAX_ATTEMPTS if moe else 1):
        case_seed = seed + 10000 * attempt  # attempt 0 is the table position, as for every case
        gen = torch.Generator().manual_seed(case_seed)
        config, model, batches = build(model_type, overrides, dtype, prompts, gen, layout)
        tc = config.get_text_config()
        if moe:
            router_draws = draw_routers(model, config, batches, gen)
            if router_draws is None:
                continue
        save(model, shard, v4, folder, layout, gen)
        arrays, entries, loaded, taken = export_prompts(model_type, model, folder, batches)
        if not moe:
            break
        facts = routing_facts(taken, tc.num_experts_per_tok, tc.num_experts)
        if routing_ok(facts, tc.num_experts):
            break
    else:
        raise SystemExit(f"{name}: no seed in {MAX_ATTEMPTS} attempts routes clear of ties with every expert used")

    if hybrid:
        others = hybrid_variants(model_type, loaded.config, folder)
        unpadded = padding_not_zeroed(model_type, folder)
    else:
        others = {what: functools.partial(logits, other) for what, other in
                  variants(model_type, loaded.config, folder).items()}
    grouped = load(model_type, folder, experts_implementation="grouped_mm") if moe else None
    for k, (entry, (ids, mask)) in enumerate(zip(entries, batches)):
        ref_logits = torch.from_numpy(arrays[f"p{k}.logits"])
        changes = {what: relative_change(other(ids, mask), ref_logits, mask) for what, other in others.items()}
        if hybrid and not mask.all():
            changes["relative_change_padding_not_zeroed"] = relative_change(unpadded(ids, mask), ref_logits, mask)
        for what, change in changes.items():
            entry[what] = change
            assert entry[what] > MIN_SENSITIVITY, (name, what, entry[what])
        if grouped is not None:  # transformers' default experts kernel: the same maths, for the record
            entry["relative_change_grouped_mm_experts"] = relative_change(logits(grouped, ids, mask), ref_logits, mask)
        if hybrid:
            arrays[f"p{k}.generate_logits"], decode_facts = decode_paths(model_type, folder, ids, mask, ref_logits,
                                                                         arrays[f"p{k}.generated"])
            entry.update(decode_facts)

    meta = {"case": name, "dtype": str(dtype).replace("torch.", ""), "sharded": bool(shard),
            "config_form": "4.x" if v4 else "5.x", "prompts": entries}
    if model_type != "qwen2":  # the Qwen2 cases' json stays byte-identical to the committed one
        meta["model_type"], meta["seed"] = model_type, case_seed
    if moe:
        check_expert_layout(folder, loaded, fused=bool((layout or {}).get("fused_experts")))
        meta["experts_implementation"] = "eager"
        meta["routing"] = {"sparse_layers": sparse_layers(loaded), "top_k": tc.num_experts_per_tok,
                           "num_experts": tc.num_experts,
                           "norm_topk_prob": getattr(tc, "norm_topk_prob", True),  # Qwen3.5-MoE: always
                           "router_probability": "softmax over all experts, float32",
                           "checked": "every router call of the forward, generate (prefill and each decode step) "
                                      "and a forward over prompt + generated tokens; real tokens only",
                           "min_gap_required": MIN_ROUTER_GAP, "layers": facts,
                           "router_draws": {str(i): n for i, n in router_draws.items()}}
    ref = os.path.join(out_dir, "references")
    os.makedirs(ref, exist_ok=True)
    save_file(arrays, os.path.join(ref, f"{name}.safetensors"))
    meta["transformers"], meta["torch"] = transformers.__version__, torch.__version__
    meta["layer_types"] = getattr(loaded.config.get_text_config(), "layer_types", None)  # Qwen3-MoE has none
    meta["rope_parameters"] = loaded.config.get_text_config().rope_parameters
    if hybrid:
        meta.update(hybrid_meta(model_type, loaded, folder, layout or {}))
    with open(os.path.join(ref, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    print(f"{name}: {[p['lengths'] for p in meta['prompts']]} "
          f"margin>={min(p['min_top2_margin'] for p in meta['prompts']):.4f}", file=sys.stderr)


def hybrid_meta(model_type, loaded, folder, layout):
    """What a hybrid case's files and model hold, for the record."""
    cfg, tc = loaded.config, loaded.config.get_text_config()
    saved = read_tensors(folder)
    float32 = sorted(k for k, t in saved.items() if t.dtype == torch.float32)
    la = next(layer.linear_attn for layer in decoder_layers(loaded) if hasattr(layer, "linear_attn"))
    return {
        "architecture": type(loaded).__name__,
        "file_layout": {
            "released": bool(layout.get("released")),
            "files": sorted(f for f in os.listdir(folder) if f.endswith((".safetensors", ".json"))),
            "experts": (None if model_type not in MOE_TYPES
                        else "fused" if layout.get("fused_experts") else "per_expert"),
            "float32_tensors": float32 if len(float32) < len(saved) else "all",
            "mtp_tensors": sorted(k for k in saved if k.startswith("mtp.")),
            "vision_tensors": sum(k.startswith("model.visual.") for k in saved),
            "config_drop": layout.get("config_drop", []),
        },
        "tie_word_embeddings": cfg.tie_word_embeddings, "text_config_tie_word_embeddings": tc.tie_word_embeddings,
        "lm_head_tied": loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr(),
        "head_dim": tc.head_dim, "rotary_dims": 2 * len(getattr(loaded.model, "language_model", loaded.model)
                                                        .rotary_emb.inv_freq),
        "linear_attention": {"num_key_heads": la.num_k_heads, "num_value_heads": la.num_v_heads,
                             "key_head_dim": la.head_k_dim, "value_head_dim": la.head_v_dim,
                             "conv_kernel": la.conv_kernel_size, "prefill_chunk_size": 64,
                             "conv_state_length": la.conv_kernel_size,  # transformers caches kernel, not kernel - 1
                             "recurrent_state_shape": ["batch", la.num_v_heads, la.head_k_dim, la.head_v_dim]},
        "mlp_types": ["sparse" if hasattr(layer.mlp, "experts") else "dense" for layer in decoder_layers(loaded)],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", help=f"cases to export (default: all): {', '.join(CASES)}")
    parser.add_argument("--out", default=GOLDEN, help="folder for checkpoints/ and references/ (default: golden/)")
    args = parser.parse_args()
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    torch.set_num_threads(2)
    for seed, (name, case) in enumerate(CASES.items()):
        if not args.cases or name in args.cases:
            export_case(name, *case, seed=1000 + seed, out_dir=args.out)


if __name__ == "__main__":
    main()
