"""Export golden reference data for quantized checkpoints as released (FP8 block-quantized, GPTQ int4, AWQ int4).

Not used by the package or its tests. Writes to a STAGING folder (default /tmp/goldquant/): checkpoints/<case>/
and references/<case>.{json,safetensors}, in the same record format as scripts/export_golden.py (whose helpers
this script imports: randomize, make_batch, run, the MoE router machinery, the hybrid decode paths).

    /tmp/goldenv/bin/python scripts/export_golden_quant.py [--out DIR] [--upstream-site DIR] [CASES...]

(about 20 seconds on 2 cores; the output is the same byte for byte from run to run.) --upstream-site adds a third
cross-check of the GPTQ / AWQ cases by the upstream packages, run in a subprocess, from an install made with

    /tmp/goldenv/bin/pip install --no-deps --target /tmp/thirdparty/site autoawq==0.2.9 gptqmodel==7.6.0 \
        LogBar Device-SMI TokeNicer Defuser PyPcre

(--no-deps: their declared dependencies pull triton and other torch builds; nothing here needs them).

For each case: a small Qwen model built with transformers 5.23.0, every parameter random (export_golden's
randomize), cast to the release's dtype (bf16 for FP8, f16 for GPTQ/AWQ); the chosen Linear weights are then
quantized here, round to nearest, in torch, and written the way the releases store them (config.json with
quantization_config, generation_config.json, safetensors only; quantize_config.json too for GPTQ). For FP8 each
128x128 tile of a master weight is first scaled by a random factor in [1/4, 4], so that tile scales differ as in
real checkpoints and a tile read with another tile's scale shows. The golden logits / hidden states come from
transformers in float32 with eager attention:

- FP8 (fp8_qwen3, fp8_qwen3_moe, fp8_qwen3_5_released): transformers' OWN CPU load of the FP8 folder
  (from_pretrained(dtype=float32): without a GPU the FineGrainedFP8 quantizer sets dequantize=True and each
  weight is dequantized by Fp8Dequantize into the float32 parameter; the non-quantized weights stay in the file's
  bf16, so the model is then .float()'ed). Every loaded parameter is checked to equal, bit for bit, this script's
  own float32 dequantization (loaded from a float32 checkpoint by the same class), so the fused experts included.
- fp8_qwen2_ceil and every GPTQ / AWQ case: this script's float32 dequantization, written as a float32 checkpoint
  in a temporary folder and loaded with transformers. Two independent implementations dequantize each tensor
  (for FP8 an index form and a tile-repeat form; for GPTQ a vectorised shift form and a per-row loop over the
  packing; for AWQ the same pair) and must agree bit for bit; each must also give back exactly the integers and
  scales the quantizer chose.

Each case also records how far the logits move when one format detail is done wrong (the +1 of GPTQ v1 dropped,
v2 read as v1, g_idx ignored for act-order, AWQ's nibble order read as 0..7, FP8 scales ignored, weight_scale_inv
divided by instead of multiplied, or the tile index transposed, s[c // 128, r // 128], in the matrices whose grid
of tiles is square): each must be above 1e-2. Recorded for information: the FP8 weights dequantized in bf16 (what a
load with the config's dtype gives) and with the tile size derived from the scale grid (transformers' CPU rule).
No real token's top-2 logits lie within 3e-4, in the prompts' forward or at generate's steps (seeds are re-drawn
until so). MoE cases route clear of ties (export_golden's router draws, on the dequantized weights, routers kept
in the checkpoint dtype) and hybrid cases record generate's decode-step logits as export_golden does.

Format facts, and where each was verified (read, not copied):

FP8 ("quant_method": "fp8")
- `<name>.weight` F8_E4M3 and `<name>.weight_scale_inv`, one scale per 128x128 tile, W = float(q) * float(s[r // 128,
  c // 128]); dimensions not a multiple of 128 use ceil-div tiles: llama.cpp convert_hf_to_gguf.py (ggml-org/llama.cpp,
  ModelBase.dequant_model, quant_method == "fp8" -> dequant_simple: scale.repeat_interleave(block) per dim, then
  cropped to the weight's shape, "unpad the scale (e.g. when the tensor size isn't a multiple of the block size)").
- transformers 5.23 integrations/finegrained_fp8.py (installed in /tmp/goldenv), Fp8Dequantize._dequantize_one:
  block_m = rows // scale_rows, block_n = cols // scale_cols, i.e. the tile size is DERIVED FROM THE SCALE GRID:
  right when every dim is a multiple of 128; for 192 rows and a 2-row grid it uses 96-row tiles (silently wrong;
  it raises only when rows % scale_rows != 0). Output dtype = the destination parameter's dtype (float32 when
  loaded with dtype=float32: exact, float(q) * float(s) in float32); with the default dtype (the config's bf16)
  the dequantized weights are rounded to bf16. quantizers/quantizer_finegrained_fp8.py: no GPU -> dequantize=True,
  replace_with_fp8_linear returns at once (plain nn.Linear), scales renamed from `.scale` / `.qscale_weight`.
- Scale dtypes BF16 / F16 / F32: F32 is what transformers' Fp8Quantize writes; the BF16 and F16 releases are from
  the issue (not verifiable here: no hub access). Per-expert FP8 MoE tensors: transformers' quantizer base
  update_weight_conversions (quantizers/base.py) prepends the dequantize op to the per-expert merge converter.
- modules_to_not_convert of Qwen3.6 FP8 releases: full module names, per layer, with the model.language_model.
  prefix, plus "lm_head" and "model.embed_tokens" (without language_model), mtp.* norms and mtp.fc, the vision tower:
  seen in two independent third-party sources found by code search (a test quoting Qwen/Qwen3.6-35B-A3B-FP8's list,
  and a builder of "official-style" lists for Qwen3.5/3.6), not in the release itself (no hub access).

GPTQ ("quant_method": "gptq", bits 4)
- qweight int32 [in/8, out], input row 8k+j in bits 4j of qweight[k]; qzeros int32 [groups, out/8], output column 8c+j
  in bits 4j; scales [groups, out]; g_idx int32 [in]; W[:, i] = s[g_idx[i]] * (q[i] - z[g_idx[i]]):
  AutoGPTQ/AutoGPTQ auto_gptq/nn_modules/qlinear/qlinear_cuda.py (pack; torch fallback of forward, zeros + 1),
  ModelCloud/GPTQModel gptqmodel/nn_modules/qlinear/__init__.py (dequantize_weight), llama.cpp convert_hf_to_gguf.py
  dequant_gptq (scales[g_idx] * (weight - zeros[g_idx])).T, "+1" when checkpoint_format == "gptq" (the default).
- v1 stores zero - 1 (AutoGPTQ pack: `zeros -= 1` before packing); v2 ("gptq_v2") stores the zero itself:
  GPTQModel gptqmodel/utils/model.py convert_gptq_v1_to_v2_format_module (adds 0b0001... to every nibble), llama.cpp
  ("gptq_v2 doesn't need to offset zeros"), vLLM-family gptq.py (`use_v2_format = checkpoint_format == "gptq_v2"`,
  seen by code search; the vllm-project/vllm gptq.py snapshot stored here predates it).
- Quantizer: AutoGPTQ auto_gptq/quantization/quantizer.py find_params: range [min(x, 0), max(x, 0)], sym: xmin = -xmax,
  zero = (maxq + 1) / 2 = 8, scale = (xmax - xmin) / 15; asym: zero = round(-xmin / scale). Act-order:
  auto_gptq/quantization/gptq.py: columns in perm order, g_idx = [i // group_size] then g_idx[invperm]: channel perm[i]
  is in group i // group_size, so each group's channels are scattered over the input.
- Config forms: AutoGPTQ auto_gptq/quantization/config.py BaseQuantizeConfig.to_dict (bits, group_size, damp_percent,
  desc_act, static_groups, sym, true_sequential, model_name_or_path, model_file_base_name, quant_method,
  checkpoint_format), written both as config.json's quantization_config and quantize_config.json (and gptq_*
  safetensors metadata, not reproduced here: auto_gptq/modeling/_base.py save_quantized). GPTQModel's
  QuantizeConfig.to_dict (gptqmodel/quantization/config.py) writes format and checkpoint_format both, dynamic,
  lm_head, pack_dtype, meta, and drops empty values. The real Qwen2.5-*-GPTQ-Int4 config.json could not be read
  here (no hub access; not in the code index).
- Which Qwen3.5 linears GPTQ quantizes: GPTQModel gptqmodel/models/definitions/qwen3_5_text.py module_tree:
  in_proj_qkv, in_proj_z, out_proj, q/k/v/o_proj, gate/up/down_proj quantized; in_proj_a, in_proj_b, conv1d, norms
  not ("!"). The released Qwen3.5-GPTQ-Int4 config could not be read here.

AWQ ("quant_method": "awq", version "gemm", zero_point true)
- qweight int32 [in, out/8], qzeros int32 [in/group, out/8], scales f16 [in/group, out], W = (q - z) * s, no g_idx:
  casper-hansen/AutoAWQ awq/modules/linear/gemm.py WQLinear_GEMM (buffers; from_linear packs with
  order_map = [0, 2, 4, 6, 1, 3, 5, 7]: bits 4i of packed column c hold output column 8c + order_map[i]),
  awq/utils/packing_utils.py (AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]: output column 8c + j is in bits
  4 * AWQ_REVERSE_ORDER[j]; dequantize_gemm), vLLM tests/kernels/quantization/test_awq_triton.py
  (awq_dequantize_torch, the same). llama.cpp's convert_hf_to_gguf.py has NO AWQ path (dequant_model handles fp8,
  gptq, bitnet, compressed-tensors, modelopt and raises NotImplementedError for others); the second implementation
  here follows AutoAWQ's packing loop instead.
- Quantizer: AutoAWQ awq/quantize/quantizer.py pseudo_quantize_tensor (zero_point: scales = (max - min) / 15,
  zeros = clamp(-round(min / scales), 0, 15)). Config form: awq/models/_config.py to_transformers_dict
  ({"quant_method", "zero_point", "group_size", "bits", "version", "modules_to_not_convert"}).
  AutoAWQ's exclude_layers_to_not_quantize (awq/utils/module.py) matches modules_to_not_convert by substring.
"""

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_golden as eg  # noqa: E402

OUT = "/tmp/goldquant"
MIN_SENSITIVITY = 1e-2
MIN_MARGIN = 3e-4  # no real token's top-2 logits (prompt forward and generated steps) closer: argmax is not a tie
E4M3_MAX = 448.0
FP8_BLOCK = 128
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]          # bits 4i of a packed word hold output column 8c + AWQ_ORDER[i]
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]  # output column 8c + j sits in bits 4 * AWQ_REVERSE_ORDER[j]
QUANT_LINEAR = re.compile(r"\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|in_proj_qkv|in_proj_z|out_proj)"
                          r"\.weight$")
L, F = "linear_attention", "full_attention"
MROPE_64 = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
            "mrope_section": [3, 3, 2], "mrope_interleaved": True}  # head_dim 64: 16 rotary dims, 8 frequencies

# name: model type, config overrides, checkpoint dtype, quantization, file layout, prompts (lists of lengths)
# New cases go at the END: each case's seed is its position in this table.
CASES = {
    # Qwen3 dense, tied (as Qwen3-1.7B), BF16 scales, one file; q/o_proj 256x256 (a 2x2 grid of tiles), gate/up
    # 384x256 (3x2), down 256x384 (2x3).
    "fp8_qwen3": dict(
        model_type="qwen3", dtype=torch.bfloat16,
        overrides=dict(hidden_size=256, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=64, tie_word_embeddings=True),
        quant=dict(method="fp8", scale_dtype=torch.bfloat16), layout=dict(v4=True),
        prompts=[[120], [25, 90, 47]]),
    # Qwen3-MoE: 4 experts stored one by one, top-2, layer 0 dense; routers (mlp.gate) bf16; F16 scales; 2 shards.
    "fp8_qwen3_moe": dict(
        model_type="qwen3_moe", dtype=torch.bfloat16,
        overrides=dict(hidden_size=256, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, head_dim=128, num_experts=4, num_experts_per_tok=2,
                       moe_intermediate_size=128, norm_topk_prob=True, mlp_only_layers=[0]),
        quant=dict(method="fp8", scale_dtype=torch.float16), layout=dict(v4=True, shards=2),
        prompts=[[110], [20, 70, 45]]),
    # Qwen3.5 as released (composite, tied, model.language_model.*, model.visual.* bf16, mtp.*), F32 scales. Every
    # quantized dim a multiple of 128: hidden 256; DeltaNet 2 key heads x 64, 4 value heads x 64 -> in_proj_qkv
    # 512x256, in_proj_z and out_proj 256x256 (2x2 grids: a transposed tile index shows); attention 2 q heads / 2 kv
    # heads of 64 (q_proj with its gates 256x256, k/v_proj 128x256, o_proj 256x128); rope_theta 1e4, not the
    # release's 1e7, so that rotating all 64 dims instead of 16 moves the logits by more than 1e-2. The q and k rows
    # of in_proj_qkv are drawn at 0.3 of the scale: with 64-dim keys the delta rule without its L2 norm (a
    # sensitivity check) overflows to NaN at full scale.
    "fp8_qwen3_5_released": dict(
        model_type="qwen3_5", dtype=torch.bfloat16,
        overrides=dict(text_config=dict(hidden_size=256, intermediate_size=128, num_attention_heads=2,
                                        num_key_value_heads=2, head_dim=64, linear_num_key_heads=2,
                                        linear_key_head_dim=64, linear_num_value_heads=4, linear_value_head_dim=64,
                                        tie_word_embeddings=True, rope_parameters=MROPE_64),
                       vision_config=dict(out_hidden_size=256), tie_word_embeddings=True),
        quant=dict(method="fp8", scale_dtype=torch.float32), layout=dict(released=True, float32=True),
        deltanet_qk_scale=0.3, prompts=[[130], [17, 96, 60]]),
    # Qwen2 with qkv bias, tied, dims NOT multiples of 128 (hidden 192, intermediate 200): ceil-div tiles matter.
    "fp8_qwen2_ceil": dict(
        model_type="qwen2", dtype=torch.bfloat16,
        overrides=dict(hidden_size=192, intermediate_size=200, num_hidden_layers=2, num_attention_heads=3,
                       num_key_value_heads=1, tie_word_embeddings=True),
        quant=dict(method="fp8", scale_dtype=torch.bfloat16, own_reference=True), layout=dict(),
        prompts=[[100], [9, 60, 33]]),
    # GPTQ v1 (AutoGPTQ), sym, group 32, desc_act false, Qwen2 with qkv bias, tied (as Qwen2.5-0.5B..3B), f16.
    "gptq_qwen2": dict(
        model_type="qwen2", dtype=torch.float16,
        overrides=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, tie_word_embeddings=True),
        quant=dict(method="gptq", group_size=32, sym=True, desc_act=False, checkpoint_format="gptq"),
        layout=dict(v4=True), prompts=[[120], [30, 100, 64]]),
    # GPTQ v1, act-order (desc_act true: a random permutation scatters each group's channels), asym, group 64, untied,
    # 3 shards.
    "gptq_qwen2_actorder": dict(
        model_type="qwen2", dtype=torch.float16,
        overrides=dict(hidden_size=128, intermediate_size=320, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=1),
        quant=dict(method="gptq", group_size=64, sym=False, desc_act=True, checkpoint_format="gptq"),
        layout=dict(v4=True, shards=3), prompts=[[110], [12, 95, 40]]),
    # GPTQ v2 (GPTQModel, no +1), group_size -1 (one group), sym, Qwen3.5 text model; in_proj_a/b f16.
    "gptq_qwen3_5_v2": dict(
        model_type="qwen3_5_text", dtype=torch.float16,
        overrides=dict(intermediate_size=160, layer_types=[L, L, L, F]),
        quant=dict(method="gptq", group_size=-1, sym=True, desc_act=False, checkpoint_format="gptq_v2"),
        layout=dict(float32=True), prompts=[[130], [17, 129, 60]]),
    # AWQ gemm, zero point, group 128, Qwen2 with qkv bias, tied, f16.
    "awq_qwen2": dict(
        model_type="qwen2", dtype=torch.float16,
        overrides=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, tie_word_embeddings=True),
        quant=dict(method="awq", group_size=128), layout=dict(v4=True), prompts=[[120], [25, 100, 57]]),
    # AWQ gemm, group 32, Qwen3-MoE, 8 experts stored one by one, top-2, routers f16 (not quantized).
    "awq_qwen3_moe": dict(
        model_type="qwen3_moe", dtype=torch.float16,
        overrides=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=16, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                       norm_topk_prob=True),
        quant=dict(method="awq", group_size=32, modules_to_not_convert=["mlp.gate"]), layout=dict(v4=True),
        prompts=[[100], [9, 80, 41]]),
}


# ----------------------------------------------------------------------------------------------
# Packing helpers
# ----------------------------------------------------------------------------------------------

def to_int32(words):
    """int64 tensor of 32-bit words (0 .. 2**32 - 1) -> the int32 tensor with the same bits."""
    assert int(words.min()) >= 0 and int(words.max()) < 2 ** 32
    return torch.from_numpy(words.numpy().astype(np.uint32).view(np.int32).copy())


def words_u32(t):
    """int32 tensor -> its bits as a uint32 numpy array."""
    return t.numpy().view(np.uint32)


# ----------------------------------------------------------------------------------------------
# FP8: quantize, two float32 dequantizations, and the variants a loader could get wrong
# ----------------------------------------------------------------------------------------------

def fp8_quantize(w, scale_dtype):
    """w float32 [R, C] -> q float8_e4m3fn [R, C], s [ceil(R/128), ceil(C/128)] in scale_dtype: s = amax(tile) / 448,
    rounded to scale_dtype, and q = w / s rounded to nearest (clamped to +-448)."""
    R, C = w.shape
    gr, gc = -(-R // FP8_BLOCK), -(-C // FP8_BLOCK)
    padded = torch.zeros(gr * FP8_BLOCK, gc * FP8_BLOCK)
    padded[:R, :C] = w.abs()
    amax = padded.reshape(gr, FP8_BLOCK, gc, FP8_BLOCK).amax(dim=(1, 3))
    s = (amax / E4M3_MAX).clamp(min=1e-8).to(scale_dtype)
    full = fp8_scale_by_index(s.float(), R, C)
    q = (w / full).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    assert not torch.isnan(q.float()).any()
    return q, s


def fp8_scale_by_index(s, R, C, transpose=False):
    """Each element's scale: s[r // 128, c // 128] (or s[c // 128, r // 128] with transpose=True)."""
    rows, cols = torch.arange(R) // FP8_BLOCK, torch.arange(C) // FP8_BLOCK
    if transpose:
        return s[cols][:, rows].T
    return s[rows][:, cols]


def fp8_dequant_index(q, s):
    """Implementation 1: W[r, c] = float(q[r, c]) * float(s[r // 128, c // 128]) in float32."""
    return q.float() * fp8_scale_by_index(s.float(), *q.shape)


def fp8_dequant_tiles(q, s):
    """Implementation 2 (as llama.cpp's dequant_simple): the scale grid repeated 128 times along each dim, cropped."""
    full = s.float().repeat_interleave(FP8_BLOCK, 0).repeat_interleave(FP8_BLOCK, 1)[:q.shape[0], :q.shape[1]]
    return q.float() * full


def fp8_dequant_grid_derived(q, s):
    """What transformers 5.23's CPU Fp8Dequantize does: tile size = dim // grid (wrong unless dims are multiples of
    128; raises when a dim is not a multiple of its grid)."""
    R, C = q.shape
    gr, gc = s.shape
    if R % gr or C % gc:
        raise ValueError(f"Weight shape ({R}, {C}) not divisible by scale grid ({gr}, {gc}).")
    full = s.float().repeat_interleave(R // gr, 0).repeat_interleave(C // gc, 1)
    return q.float() * full


def fp8_dequant_transposed(q, s):
    """The tile index transposed (s[c // 128, r // 128]) where the grid is square; other matrices unchanged."""
    if s.shape[0] != s.shape[1]:
        return fp8_dequant_index(q, s)
    return q.float() * fp8_scale_by_index(s.float(), *q.shape, transpose=True)


# ----------------------------------------------------------------------------------------------
# GPTQ: quantize (AutoGPTQ's rounding), pack, two dequantizations
# ----------------------------------------------------------------------------------------------

def gptq_quantize(w, group_size, sym, desc_act, gen):
    """w float32 [out, in] -> q int64 [in, out] (0..15), zeros int64 [groups, out], scales f16 [groups, out],
    g_idx int32 [in].
    desc_act: a random permutation plays act-order's (input channel perm[i] is in group i // group_size)."""
    out_f, in_f = w.shape
    gs = in_f if group_size == -1 else group_size
    groups = in_f // gs
    assert in_f % gs == 0 and in_f % 8 == 0 and out_f % 8 == 0
    if desc_act:
        perm = torch.randperm(in_f, generator=gen)
        g_idx = torch.empty(in_f, dtype=torch.int64)
        g_idx[perm] = torch.arange(in_f) // gs
    else:
        g_idx = torch.arange(in_f) // gs
    scales = torch.empty(groups, out_f, dtype=torch.float16)
    zeros = torch.empty(groups, out_f, dtype=torch.int64)
    for g in range(groups):
        x = w[:, g_idx == g]                                   # [out, channels of group g]
        xmin = torch.minimum(x.min(1).values, torch.zeros(out_f))
        xmax = torch.maximum(x.max(1).values, torch.zeros(out_f))
        if sym:
            xmax = torch.maximum(xmin.abs(), xmax)
            xmin = -xmax
        scales[g] = ((xmax - xmin) / 15).to(torch.float16)
        zeros[g] = 8 if sym else torch.round(-xmin / scales[g].float()).clamp(0, 15).long()
    s = scales.float()[g_idx]                                  # [in, out]
    q = (torch.round(w.T / s) + zeros[g_idx]).clamp(0, 15).long()
    return q, zeros, scales, g_idx.to(torch.int32)


def gptq_pack(q, zeros, scales, g_idx, checkpoint_format):
    """-> {qweight, qzeros, scales, g_idx}. v1 ("gptq") stores zero - 1, v2 ("gptq_v2") the zero."""
    stored = zeros - 1 if checkpoint_format == "gptq" else zeros
    assert int(stored.min()) >= 0 and int(stored.max()) <= 15, "a v1 zero of 0 cannot be stored"
    in_f, out_f = q.shape
    qweight = sum(q.reshape(in_f // 8, 8, out_f)[:, j] << (4 * j) for j in range(8))       # along input
    qzeros = sum(stored.reshape(-1, out_f // 8, 8)[:, :, j] << (4 * j) for j in range(8))  # along output
    return {"qweight": to_int32(qweight), "qzeros": to_int32(qzeros), "scales": scales, "g_idx": g_idx}


def gptq_dequant_shifts(t, zero_offset, g_idx=None):
    """Implementation 1 (as llama.cpp's dequant_gptq / GPTQModel's dequantize_weight): shift every word by 0, 4, ..
    28 at once, mask, W^T = scales[g_idx] * (weight - zeros[g_idx]), in float32. Returns W [out, in]."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    qweight, qzeros, scales = t["qweight"], t["qzeros"], t["scales"]
    weight = ((qweight.unsqueeze(1) >> shifts.view(1, 8, 1)) & 15).reshape(-1, qweight.shape[1])  # [in, out]
    zeros = ((qzeros.unsqueeze(2) >> shifts.view(1, 1, 8)) & 15).reshape(scales.shape) + zero_offset
    g = (t["g_idx"] if g_idx is None else g_idx).long()
    return (scales[g].float() * (weight - zeros[g]).float()).T.contiguous()


def gptq_dequant_loop(t, zero_offset, g_idx=None):
    """Implementation 2 (the inverse of AutoGPTQ's pack loops): input row 8k + j from bits 4j of qweight[k], output
    column 8c + j of the zeros from bits 4j of qzeros[:, c], as unsigned 32-bit words in numpy; then one input
    channel at a time. Returns W [out, in] float32."""
    qw, qz = words_u32(t["qweight"]), words_u32(t["qzeros"])
    in_f, out_f = qw.shape[0] * 8, qw.shape[1]
    q = np.zeros((in_f, out_f), np.int64)
    for k in range(qw.shape[0]):
        for j in range(8):
            q[8 * k + j] = (qw[k] >> np.uint32(4 * j)) & np.uint32(0xF)
    z = np.zeros((qz.shape[0], qz.shape[1] * 8), np.int64)
    for c in range(qz.shape[1]):
        for j in range(8):
            z[:, 8 * c + j] = (qz[:, c] >> np.uint32(4 * j)) & np.uint32(0xF)
    s = t["scales"].numpy().astype(np.float32)
    g = (t["g_idx"] if g_idx is None else g_idx).numpy()
    w = np.zeros((out_f, in_f), np.float32)
    for i in range(in_f):
        w[:, i] = (q[i] - (z[g[i]] + zero_offset)).astype(np.float32) * s[g[i]]
    return torch.from_numpy(w)


# ----------------------------------------------------------------------------------------------
# AWQ (gemm): quantize (AutoAWQ's rounding), pack in AWQ's nibble order, two dequantizations
# ----------------------------------------------------------------------------------------------

def awq_quantize(w, group_size):
    """w float32 [out, in] -> q int64 [in, out], zeros int64 [in/group, out], scales f16 [in/group, out]."""
    out_f, in_f = w.shape
    assert in_f % group_size == 0 and out_f % 8 == 0
    x = w.reshape(out_f, in_f // group_size, group_size)
    mx, mn = x.amax(-1), x.amin(-1)                                    # [out, groups]
    scales = ((mx - mn).clamp(min=1e-5) / 15).to(torch.float16)
    zeros = (-torch.round(mn / scales.float())).clamp(0, 15).long()
    q = (torch.round(x / scales.float()[..., None]) + zeros[..., None]).clamp(0, 15).long()
    return q.reshape(out_f, in_f).T.contiguous(), zeros.T.contiguous(), scales.T.contiguous()


def awq_pack_columns(v):
    """int64 [rows, cols] (0..15) -> words [rows, cols/8]: bits 4i of word c hold column 8c + AWQ_ORDER[i]."""
    rows, cols = v.shape
    blocks = v.reshape(rows, cols // 8, 8)
    return to_int32(sum(blocks[:, :, AWQ_ORDER[i]] << (4 * i) for i in range(8)))


def awq_dequant_shifts(t, group_size, reorder=True):
    """Implementation 1 (as AutoAWQ's unpack_awq + reverse_awq_order + dequantize_gemm, vLLM's awq_dequantize_torch):
    shift-unpack each row into 8 nibbles in bit order, then take columns in AWQ_REVERSE_ORDER within each 8.
    Returns W [out, in] float32. reorder=False reads the nibbles as plain order 0..7 (a sensitivity variant)."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)

    def unpack(p):
        v = ((p.unsqueeze(-1) >> shifts) & 15).reshape(p.shape[0], -1)
        if reorder:
            order = (torch.arange(v.shape[1]).view(-1, 8)[:, AWQ_REVERSE_ORDER]).reshape(-1)
            v = v[:, order]
        return v

    q, z = unpack(t["qweight"]), unpack(t["qzeros"])
    s = t["scales"].float().repeat_interleave(group_size, 0)
    return ((q - z.repeat_interleave(group_size, 0)).float() * s).T.contiguous()


def awq_dequant_loop(t, group_size):
    """Implementation 2 (the inverse of AutoAWQ WQLinear_GEMM.from_linear's packing loop): for packed column c and
    nibble i, column 8c + AWQ_ORDER[i] = (word >> 4i) & 15; then one input row at a time."""
    def unpack(p):
        u = words_u32(p)
        v = np.zeros((u.shape[0], u.shape[1] * 8), np.int64)
        for c in range(u.shape[1]):
            for i in range(8):
                v[:, 8 * c + AWQ_ORDER[i]] = (u[:, c] >> np.uint32(4 * i)) & np.uint32(0xF)
        return v

    q, z = unpack(t["qweight"]), unpack(t["qzeros"])
    s = t["scales"].numpy().astype(np.float32)
    w = np.zeros((q.shape[1], q.shape[0]), np.float32)
    for i in range(q.shape[0]):
        w[:, i] = (q[i] - z[i // group_size]).astype(np.float32) * s[i // group_size]
    return torch.from_numpy(w)


# ----------------------------------------------------------------------------------------------
# Quantizing a checkpoint's tensors
# ----------------------------------------------------------------------------------------------

def quantizable(name, method):
    """The Linear weights a release quantizes: attention, DeltaNet in_proj_qkv / in_proj_z / out_proj, MLP and
    experts, in the decoder layers (and, for FP8, the MTP layer). Never embed_tokens, lm_head, routers (mlp.gate),
    in_proj_a / in_proj_b, conv1d, norms, mtp.fc or the vision tower."""
    if not QUANT_LINEAR.search(name) or "visual" in name:
        return False
    return ".layers." in name and (method == "fp8" or not name.startswith("mtp."))


def quantize_tensors(tensors, quant, gen):
    """{file name: tensor} -> (files: the release's tensors, dequant: {file name of the unquantized layout: float32},
    variants: {variant name: that dict with one format detail done wrong}, facts)."""
    method = quant["method"]
    files, dequant, facts = {}, {}, {"quantized": [], "checks": []}
    variants = {}

    def variant(what, name, value):
        variants.setdefault(what, {})[name] = value

    for name in sorted(tensors):
        t = tensors[name]
        if not quantizable(name, method):
            files[name] = t
            dequant[name] = t.float()
            continue
        base = name[:-len(".weight")]
        w = t.float()
        facts["quantized"].append(base)
        if method == "fp8":
            # each 128x128 tile of the (bf16) master weights scaled by a random factor in [1/4, 4], so that the tile
            # scales differ (as outlier channels make them differ in real checkpoints) and a tile read with another
            # tile's scale is visible
            factors = torch.exp(2.8 * torch.rand(-(-w.shape[0] // FP8_BLOCK), -(-w.shape[1] // FP8_BLOCK),
                                                 generator=gen) - 1.4)
            w = (w * fp8_scale_by_index(factors, *w.shape)).to(torch.bfloat16).float()
            q, s = fp8_quantize(w, quant["scale_dtype"])
            d1, d2 = fp8_dequant_index(q, s), fp8_dequant_tiles(q, s)
            assert torch.equal(d1, d2), name
            files[name], files[base + ".weight_scale_inv"] = q, s
            dequant[name] = d1
            variant("relative_change_scales_ignored", name, q.float())
            variant("relative_change_scale_inv_divided", name, q.float() / fp8_scale_by_index(s.float(), *q.shape))
            variant("relative_change_tile_index_transposed", name, fp8_dequant_transposed(q, s))
            variant("relative_change_dequantized_in_bf16", name, d1.to(torch.bfloat16).float())
            try:
                variant("relative_change_tile_size_from_scale_grid", name, fp8_dequant_grid_derived(q, s))
            except ValueError:
                facts.setdefault("grid_derived_raises", []).append(name)
        elif method == "gptq":
            q, zeros, scales, g_idx = gptq_quantize(w, quant["group_size"], quant["sym"], quant["desc_act"], gen)
            packed = gptq_pack(q, zeros, scales, g_idx, quant["checkpoint_format"])
            offset = 1 if quant["checkpoint_format"] == "gptq" else 0
            d1, d2 = gptq_dequant_shifts(packed, offset), gptq_dequant_loop(packed, offset)
            assert torch.equal(d1, d2), name
            # and the integers and scales chosen come back exactly
            want = (scales.float()[g_idx.long()] * (q - zeros[g_idx.long()]).float()).T
            assert torch.equal(d1, want), name
            for key, value in packed.items():
                files[f"{base}.{key}"] = value
            dequant[name] = d1
            if offset:
                variant("relative_change_zero_plus_one_dropped", name, gptq_dequant_shifts(packed, 0))
            else:
                variant("relative_change_read_as_v1_plus_one", name, gptq_dequant_shifts(packed, 1))
            if quant["desc_act"]:
                in_f = d1.shape[1]
                variant("relative_change_g_idx_ignored", name,
                        gptq_dequant_shifts(packed, offset, torch.arange(in_f) // quant["group_size"]))
        else:  # awq
            gs = quant["group_size"]
            q, zeros, scales = awq_quantize(w, gs)
            packed = {"qweight": awq_pack_columns(q), "qzeros": awq_pack_columns(zeros), "scales": scales}
            d1, d2 = awq_dequant_shifts(packed, gs), awq_dequant_loop(packed, gs)
            assert torch.equal(d1, d2), name
            want = ((q - zeros.repeat_interleave(gs, 0)).float() * scales.float().repeat_interleave(gs, 0)).T
            assert torch.equal(d1, want), name
            for key, value in packed.items():
                files[f"{base}.{key}"] = value
            dequant[name] = d1
            variant("relative_change_nibble_order_plain", name, awq_dequant_shifts(packed, gs, reorder=False))
    return files, dequant, variants, facts


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def clear_weights(folder):
    for name in os.listdir(folder):
        if name.endswith(".safetensors") or name.endswith(".safetensors.index.json"):
            os.remove(os.path.join(folder, name))


def write_tensors(folder, tensors, shards=None):
    """model.safetensors, or model-0000i-of-0000n.safetensors + model.safetensors.index.json (shards by size).
    The header's metadata is {"format": "pt"} alone: AutoGPTQ adds gptq_* keys, but safetensors writes metadata in
    hash order, so more than one key makes the bytes differ from run to run."""
    clear_weights(folder)
    meta = {"format": "pt"}
    keys = sorted(tensors)
    if not shards:
        save_torch_file({k: tensors[k].contiguous() for k in keys}, os.path.join(folder, "model.safetensors"),
                        metadata=meta)
        return ["model.safetensors"]
    sizes = [tensors[k].numel() * tensors[k].element_size() for k in keys]
    total, weight_map, start, done, names = sum(sizes), {}, 0, 0, []
    for i in range(shards):
        end = start
        while end < len(keys) and (i == shards - 1 or done + sizes[end] <= total * (i + 1) / shards):
            done += sizes[end]
            end += 1
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        assert end > start, "an empty shard"
        save_torch_file({k: tensors[k].contiguous() for k in keys[start:end]}, os.path.join(folder, name),
                        metadata=meta)
        weight_map.update({k: name for k in keys[start:end]})
        names.append(name)
        start = end
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    return names


def read_config(folder):
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f)


def write_config(folder, cfg):
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def write_float32_checkpoint(folder, src_folder, tensors, released):
    """A float32 checkpoint of the unquantized layout: the source's config without quantization_config, float32."""
    os.makedirs(folder, exist_ok=True)
    for name in ("config.json", "generation_config.json"):
        shutil.copy(os.path.join(src_folder, name), os.path.join(folder, name))
    cfg = read_config(folder)
    cfg.pop("quantization_config", None)
    cfg["torch_dtype" if "torch_dtype" in cfg else "dtype"] = "float32"
    write_config(folder, cfg)
    tensors = {k: v.float() for k, v in tensors.items()}
    if released:
        eg.write_released_shards(folder, tensors)
    else:
        write_tensors(folder, tensors)


def modules_to_not_convert_qwen3_5(cfg):
    """The form the Qwen3.6 FP8 releases use (see the docstring): full module names, per layer."""
    tc, vc = cfg["text_config"], cfg["vision_config"]
    out = ["lm_head", "model.embed_tokens"]
    for i, kind in enumerate(tc["layer_types"]):
        layer = f"model.language_model.layers.{i}"
        out += [f"{layer}.input_layernorm", f"{layer}.post_attention_layernorm"]
        if kind == L:
            out += [f"{layer}.linear_attn.{s}" for s in ("A_log", "conv1d", "dt_bias", "in_proj_ba", "in_proj_b",
                                                         "in_proj_a", "norm")]
        else:
            out += [f"{layer}.self_attn.q_norm", f"{layer}.self_attn.k_norm"]
    out += ["mtp.layers.0.input_layernorm", "mtp.layers.0.post_attention_layernorm", "mtp.layers.0.self_attn.q_norm",
            "mtp.layers.0.self_attn.k_norm", "mtp.fc", "mtp.norm", "mtp.pre_fc_norm_embedding",
            "mtp.pre_fc_norm_hidden"]
    out += ["model.visual", "model.visual.patch_embed.proj", "model.visual.pos_embed", "model.visual.merger.linear_fc1",
            "model.visual.merger.linear_fc2", "model.visual.merger.norm"]
    for i in range(vc["depth"]):
        out += [f"model.visual.blocks.{i}.{m}" for m in ("attn.proj", "attn.qkv", "mlp.linear_fc1", "mlp.linear_fc2")]
    return out


def quantization_config(name, case, cfg, folder_tensors):
    q = case["quant"]
    if q["method"] == "fp8":
        qc = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}
        if case["model_type"] == "qwen3_5":
            qc["modules_to_not_convert"] = modules_to_not_convert_qwen3_5(cfg)
        elif case["model_type"] == "qwen3_moe":
            sparse = [k[:-len(".weight")] for k in folder_tensors if k.endswith(".mlp.gate.weight")]
            qc["modules_to_not_convert"] = ["lm_head", "model.embed_tokens"] + sorted(sparse)
        return qc
    if q["method"] == "gptq" and q["checkpoint_format"] == "gptq":  # AutoGPTQ's BaseQuantizeConfig.to_dict
        return {"bits": 4, "group_size": q["group_size"], "damp_percent": 0.01, "desc_act": q["desc_act"],
                "static_groups": False, "sym": q["sym"], "true_sequential": True, "model_name_or_path": None,
                "model_file_base_name": "model", "quant_method": "gptq", "checkpoint_format": "gptq"}
    if q["method"] == "gptq":  # GPTQModel's QuantizeConfig.to_dict (both format keys)
        return {"bits": 4, "checkpoint_format": q["checkpoint_format"], "damp_percent": 0.01,
                "desc_act": q["desc_act"], "format": q["checkpoint_format"],
                "group_size": q["group_size"], "lm_head": False, "meta": {"quantizer": ["gptqmodel:5.0.0"]},
                "pack_dtype": "int32", "quant_method": "gptq", "static_groups": False, "sym": q["sym"],
                "true_sequential": True}
    return {"bits": 4, "group_size": q["group_size"], "modules_to_not_convert": q.get("modules_to_not_convert"),
            "quant_method": "awq", "version": "gemm", "zero_point": True}


# ----------------------------------------------------------------------------------------------
# Loading and running
# ----------------------------------------------------------------------------------------------

LOAD_FACTS = {}


def load_any(model_type, folder, **overrides):
    """export_golden.load for float32 checkpoints; for an FP8 folder, transformers' own CPU load with dtype=float32
    (dequantized weights float32, the rest left in the file's bf16), then .float()."""
    if "quantization_config" not in read_config(folder):
        return ORIGINAL_LOAD(model_type, folder, **overrides)
    if model_type in eg.MOE_TYPES:
        overrides = {"experts_implementation": "eager", **overrides}
    cls = eg.MODELS[model_type][1]
    model = cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager", **overrides).eval()
    LOAD_FACTS[folder] = {
        "parameter_dtypes_as_loaded": sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()}),
        "quantization_config_kept": hasattr(model.config, "quantization_config"),
        "linear_classes": sorted({type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__}),
    }
    return model.float()


ORIGINAL_LOAD = eg.load
eg.load = load_any  # export_golden's decode paths and variants load through this


def qk_norm_after_rope(model_type, folder):
    """logits(ids, mask) of Qwen3 / Qwen3-MoE with q_norm / k_norm applied after RoPE instead of before (a move
    npqwen's family tests make on every such golden case)."""
    module = {"qwen3": transformers.models.qwen3.modeling_qwen3,
              "qwen3_moe": transformers.models.qwen3_moe.modeling_qwen3_moe}[model_type]
    model, current = load_any(model_type, folder), []
    for layer in eg.decoder_layers(model):
        attn = layer.self_attn
        attn.saved_norms = (attn.q_norm, attn.k_norm)
        attn.q_norm = attn.k_norm = torch.nn.Identity()
        attn.register_forward_pre_hook(lambda m, args, kwargs: current.append(m), with_kwargs=True)
    rope = module.apply_rotary_pos_emb

    def rope_then_norm(q, k, cos, sin, **kwargs):
        q, k = rope(q, k, cos, sin, **kwargs)
        q_norm, k_norm = current[-1].saved_norms
        return q_norm(q), k_norm(k)

    def run(ids, mask):
        with eg.patched(module, "apply_rotary_pos_emb", rope_then_norm):
            return eg.logits(model, ids, mask)
    return run


def compare_state(a, b, what):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), what
    for k in sa:
        assert torch.equal(sa[k].float(), sb[k].float()), (what, k)


def export_prompts(model_type, load, batches, moe):
    arrays, entries, taken = {}, [], []
    for k, (ids, mask) in enumerate(batches):
        loaded = load()
        log = eg.RouterLog(loaded) if moe else None
        out, new_tokens = eg.run(loaded, ids, mask)
        if log:
            taken.append(log.take(len(ids), mask))
        # a forward over prompt + generated tokens: its logits at the generated positions are generate's steps'
        full_mask = np.concatenate([mask, np.ones_like(new_tokens)], axis=1)
        full = eg.logits(loaded, np.concatenate([ids, new_tokens], axis=1), full_mask)[:, ids.shape[1] - 1:-1]
        if log:
            taken.append(log.take(len(ids), full_mask))
            log.close()
        assert torch.equal(full.argmax(-1), torch.from_numpy(new_tokens))
        arrays[f"p{k}.input_ids"] = ids
        arrays[f"p{k}.attention_mask"] = mask
        arrays[f"p{k}.logits"] = out.logits.numpy().astype(np.float32)
        for i, h in enumerate(out.hidden_states):
            arrays[f"p{k}.hidden.{i}"] = h.numpy().astype(np.float32)
        arrays[f"p{k}.generated"] = np.ascontiguousarray(new_tokens)
        top2 = np.sort(out.logits.numpy(), axis=-1)[..., -2:]
        margin = float((top2[..., 1] - top2[..., 0])[mask == 1].min())
        gen_top2 = full.topk(2, dim=-1).values
        entries.append({"lengths": [int(n) for n in mask.sum(-1)], "min_top2_margin": margin,
                        "min_top2_margin_generated_tokens": float((gen_top2[..., 0] - gen_top2[..., 1]).min()),
                        "hidden_states": len(out.hidden_states)})
    return arrays, entries, loaded, taken


# ----------------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------------

def build(case, gen):
    model_type = case["model_type"]
    config = eg.make_config(model_type, case["overrides"])
    model = eg.MODELS[model_type][1](config)
    eg.randomize(model, gen, hybrid=model_type in eg.HYBRID)
    if case.get("deltanet_qk_scale"):
        with torch.no_grad():
            for layer in eg.decoder_layers(model):
                if hasattr(layer, "linear_attn"):
                    layer.linear_attn.in_proj_qkv.weight[:2 * layer.linear_attn.key_dim] *= case["deltanet_qk_scale"]
    keep = {n: p.detach().clone() for n, p in model.named_parameters()
            if case["layout"].get("float32") and n.endswith(eg.F32_KEEP)}
    model = model.to(case["dtype"])
    for n, p in model.named_parameters():
        if n in keep:
            p.data = keep[n]
    vocab = config.get_text_config().vocab_size
    return config, model, [eg.make_batch(lengths, vocab, gen) for lengths in case["prompts"]]


def draw_routers(model_type, dequant_folder, config, batches, gen, dtype):
    """export_golden's router draws, on a float32 model holding the dequantized weights; the routers live in the
    checkpoint dtype (so what is drawn is what is saved). Returns {file name: router weight} or None."""
    probe = ORIGINAL_LOAD(model_type, dequant_folder)
    for i in eg.sparse_layers(probe):
        gate = eg.decoder_layers(probe)[i].mlp.gate
        gate.weight.data = gate.weight.data.to(dtype)
    if eg.draw_routers(probe, config, batches, gen) is None:
        return None
    prefix = "model.language_model.layers" if hasattr(probe.model, "language_model") else "model.layers"
    return {f"{prefix}.{i}.mlp.gate.weight": eg.decoder_layers(probe)[i].mlp.gate.weight.detach().clone()
            for i in eg.sparse_layers(probe)}


def folder_size(folder):
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))


def export_case(name, case, *, seed, out_dir, work):
    model_type, quant, layout = case["model_type"], case["quant"], case["layout"]
    method = quant["method"]
    moe, hybrid = model_type in eg.MOE_TYPES, model_type in eg.HYBRID
    released = bool(layout.get("released"))
    folder = os.path.join(out_dir, "checkpoints", name)
    f32 = os.path.join(work, name + "_float32")
    for attempt in range(eg.MAX_ATTEMPTS):
        case_seed = seed + 10000 * attempt
        gen = torch.Generator().manual_seed(case_seed)
        config, model, batches = build(case, gen)
        eg.save(model, None, layout.get("v4", False),
                folder, dict(released=True, float32=True) if released else None, gen)
        tensors = eg.read_tensors(folder)
        files, dequant, variants, facts = quantize_tensors(tensors, quant, gen)
        shutil.rmtree(f32, ignore_errors=True)
        write_float32_checkpoint(f32, folder, dequant, released)
        if moe:
            routers = draw_routers(model_type, f32, config, batches, gen, case["dtype"])
            if routers is None:
                continue
            for k, v in routers.items():
                files[k] = v
                dequant[k] = v.float()
            shutil.rmtree(f32, ignore_errors=True)
            write_float32_checkpoint(f32, folder, dequant, released)
        # the release's files
        cfg = read_config(folder)
        qc = quantization_config(name, case, cfg, files)
        cfg["quantization_config"] = qc
        write_config(folder, cfg)
        if released:
            eg.write_released_shards(folder, files)
        else:
            write_tensors(folder, files, layout.get("shards"))
        if method == "gptq":
            with open(os.path.join(folder, "quantize_config.json"), "w") as f:
                json.dump(qc, f, indent=2, sort_keys=True)
        own = method != "fp8" or quant.get("own_reference")
        ref_folder = f32 if own else folder
        load = lambda: load_any(model_type, ref_folder)  # noqa: E731
        arrays, entries, loaded, taken = export_prompts(model_type, load, batches, moe)
        margins_ok = all(min(e["min_top2_margin"], e["min_top2_margin_generated_tokens"]) >= MIN_MARGIN
                         for e in entries)
        if not moe:
            if margins_ok:
                break
            continue
        tc = config.get_text_config()
        facts_routing = eg.routing_facts(taken, tc.num_experts_per_tok, tc.num_experts)
        if margins_ok and eg.routing_ok(facts_routing, tc.num_experts):
            break
    else:
        raise SystemExit(f"{name}: no seed in {eg.MAX_ATTEMPTS} keeps the top-2 logits and the routing clear of ties")

    own_model = ORIGINAL_LOAD(model_type, f32)
    checks = {}
    if not own:
        # transformers' FP8 CPU load holds exactly this script's float32 dequantization (fused experts included)
        compare_state(loaded, own_model, name)
        checks["transformers_fp8_load_equals_own_float32_dequant"] = "every parameter, bit for bit"
        checks["transformers_fp8_cpu_load"] = LOAD_FACTS[folder]
    for k, (entry, (ids, mask)) in enumerate(zip(entries, batches)):
        ref = torch.from_numpy(arrays[f"p{k}.logits"])
        if not own:
            entry["relative_difference_own_float32_dequant"] = eg.relative_change(eg.logits(own_model, ids, mask),
                                                                                  ref, mask)
            assert entry["relative_difference_own_float32_dequant"] < 1e-6
    # Sensitivity: the same checkpoint with one format detail done wrong
    sensitivity = {}
    informational = {"relative_change_dequantized_in_bf16", "relative_change_tile_size_from_scale_grid"}
    for what, changed in sorted(variants.items()):
        vfolder = os.path.join(work, f"{name}_{what}")
        write_float32_checkpoint(vfolder, folder, {**dequant, **changed}, released)
        vmodel = ORIGINAL_LOAD(model_type, vfolder)
        values = []
        for k, (entry, (ids, mask)) in enumerate(zip(entries, batches)):
            values.append(eg.relative_change(eg.logits(vmodel, ids, mask), torch.from_numpy(arrays[f"p{k}.logits"]),
                                             mask))
            entry[what] = values[-1]
        shutil.rmtree(vfolder)
        sensitivity[what] = {"per_prompt": values, "required_above": None if what in informational else MIN_SENSITIVITY}
        if what not in informational:
            assert min(values) > MIN_SENSITIVITY, (name, what, values)
    if method == "fp8" and quant.get("own_reference"):
        # transformers' own CPU load of this FP8 folder: does it raise, or by how much is it wrong?
        try:
            tf = load_any(model_type, folder)
            values = [eg.relative_change(eg.logits(tf, ids, mask), torch.from_numpy(arrays[f"p{k}.logits"]), mask)
                      for k, (ids, mask) in enumerate(batches)]
            checks["transformers_fp8_cpu_load"] = {**LOAD_FACTS[folder], "raises": None,
                                                   "relative_logit_change_vs_golden": values}
            grid = variants.get("relative_change_tile_size_from_scale_grid", {})
            state = tf.state_dict()
            same = all(torch.equal(state[k], v) for k, v in grid.items() if k in state)
            checks["transformers_fp8_cpu_load"]["equals_tile_size_from_scale_grid_emulation"] = same
        except Exception as e:  # noqa: BLE001 - recorded as evidence
            checks["transformers_fp8_cpu_load"] = {"raises": f"{type(e).__name__}: {e}"}
    # The architecture's own details switched off on the same (dequantized) weights, as export_golden checks them for
    # its cases (npqwen's family / hybrid tests make the same moves on every golden case of the type)
    if hybrid:
        others = eg.hybrid_variants(model_type, loaded.config, ref_folder)
        unpadded = eg.padding_not_zeroed(model_type, ref_folder)
    else:
        others = {what: functools.partial(eg.logits, other)
                  for what, other in eg.variants(model_type, loaded.config, ref_folder).items()}
        if model_type in ("qwen3", "qwen3_moe"):
            others["relative_change_qk_norm_after_rope"] = qk_norm_after_rope(model_type, ref_folder)
    for k, (entry, (ids, mask)) in enumerate(zip(entries, batches)):
        ref_logits = torch.from_numpy(arrays[f"p{k}.logits"])
        changes = {what: eg.relative_change(other(ids, mask), ref_logits, mask) for what, other in others.items()}
        if hybrid and not mask.all():
            changes["relative_change_padding_not_zeroed"] = eg.relative_change(unpadded(ids, mask), ref_logits, mask)
        for what, change in changes.items():
            entry[what] = change
            assert change > MIN_SENSITIVITY, (name, what, change)
    if hybrid:
        for k, (entry, (ids, mask)) in enumerate(zip(entries, batches)):
            arrays[f"p{k}.generate_logits"], decode_facts = eg.decode_paths(
                model_type, ref_folder, ids, mask, torch.from_numpy(arrays[f"p{k}.logits"]), arrays[f"p{k}.generated"])
            entry.update(decode_facts)

    meta = {"case": name, "dtype": str(case["dtype"]).replace("torch.", ""), "sharded": bool(layout.get("shards"))
            or released, "config_form": "4.x" if layout.get("v4") else "5.x", "prompts": entries,
            "model_type": model_type, "seed": case_seed}
    if moe:
        tc = loaded.config.get_text_config()
        meta["experts_implementation"] = "eager"
        meta["routing"] = {"sparse_layers": eg.sparse_layers(loaded), "top_k": tc.num_experts_per_tok,
                           "num_experts": tc.num_experts, "norm_topk_prob": tc.norm_topk_prob,
                           "router_probability": "softmax over all experts, float32",
                           "checked": "every router call of the forward, generate (prefill and each decode step) and "
                                      "a forward over prompt + generated tokens; real tokens only; on the "
                                      "dequantized weights",
                           "min_gap_required": eg.MIN_ROUTER_GAP, "layers": facts_routing}
    meta["quant"] = quant_meta(name, case, qc, facts, folder, checks, sensitivity)
    ref = os.path.join(out_dir, "references")
    os.makedirs(ref, exist_ok=True)
    save_file(arrays, os.path.join(ref, f"{name}.safetensors"))
    meta["transformers"], meta["torch"] = transformers.__version__, torch.__version__
    meta["layer_types"] = getattr(loaded.config.get_text_config(), "layer_types", None)
    meta["rope_parameters"] = loaded.config.get_text_config().rope_parameters
    if hybrid:
        meta.update(eg.hybrid_meta(model_type, loaded, folder, dict(released=released, float32=True)))
    meta["file_layout"] = {**meta.get("file_layout", {}),
                           "files": sorted(os.listdir(folder)), "bytes": folder_size(folder)}
    with open(os.path.join(ref, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    print(f"{name}: {folder_size(folder) / 1024:.0f} KB, {[p['lengths'] for p in entries]}, sensitivity min "
          f"{ {w: round(min(v['per_prompt']), 4) for w, v in sensitivity.items()} }", file=sys.stderr)


def quant_meta(name, case, qc, facts, folder, checks, sensitivity):
    q = case["quant"]
    method = q["method"]
    tensors = eg.read_tensors(folder)
    fmt = {"bits": 8 if method == "fp8" else 4}
    if method == "fp8":
        scale_dtypes = sorted({str(t.dtype).replace("torch.", "") for k, t in tensors.items()
                               if k.endswith("weight_scale_inv")})
        fmt.update({"weight_dtype": "float8_e4m3fn", "scale_dtype": scale_dtypes, "block": [128, 128],
                    "tiles": "ceil-div: W[r, c] = float(q[r, c]) * float(weight_scale_inv[r // 128, c // 128])",
                    "dims_multiple_of_128": all(d % 128 == 0 for b in facts["quantized"]
                                                for d in tensors[b + ".weight"].shape)})
        if "grid_derived_raises" in facts:
            fmt["tile_size_from_scale_grid_raises_for"] = facts["grid_derived_raises"]
        reference = ("independent float32 dequant, two implementations agreeing (ceil-div tiles)"
                     if q.get("own_reference") else "transformers FP8 CPU load")
    elif method == "gptq":
        fmt.update({"group_size": q["group_size"], "sym": q["sym"], "desc_act": q["desc_act"],
                    "checkpoint_format": q["checkpoint_format"],
                    "stored_zero": "zero - 1 (v1)" if q["checkpoint_format"] == "gptq" else "zero (v2)",
                    "scale_dtype": "float16", "qweight": "int32 [in/8, out], input row 8k+j in bits 4j",
                    "qzeros": "int32 [groups, out/8], output column 8c+j in bits 4j",
                    "g_idx": "int32 [in]: " + ("act-order, a random permutation's groups (channel perm[i] in group "
                                               "i // group_size)" if q["desc_act"] else "i // group_size"),
                    "dequant": "W[o, i] = scales[g_idx[i], o] * (q[i, o] - (z[g_idx[i], o]"
                               + (" + 1))" if q["checkpoint_format"] == "gptq" else "))")})
        reference = "independent float32 dequant, two implementations agreeing"
    else:
        fmt.update({"group_size": q["group_size"], "version": "gemm", "zero_point": True, "scale_dtype": "float16",
                    "qweight": "int32 [in, out/8]", "qzeros": "int32 [in/group, out/8]",
                    "nibble_order": "bits 4i of packed column c hold output column 8c + [0, 2, 4, 6, 1, 3, 5, 7][i]; "
                                    "equivalently column 8c + j is in bits 4 * [0, 4, 1, 5, 2, 6, 3, 7][j]",
                    "dequant": "W[o, i] = (q[i, o] - z[i // group, o]) * scales[i // group, o]"})
        reference = "independent float32 dequant, two implementations agreeing"
    checks = dict(checks)
    two = {"fp8": "fp8_dequant_index (s[r // 128, c // 128]) and fp8_dequant_tiles (repeat_interleave + crop, "
                  "as llama.cpp): equal bit for bit on every tensor",
           "gptq": "gptq_dequant_shifts (vectorised, as llama.cpp / GPTQModel) and gptq_dequant_loop (the inverse of "
                   "AutoGPTQ's pack loops, numpy uint32): equal bit for bit on every tensor, and equal to the "
                   "quantizer's own integers, zeros and scales",
           "awq": "awq_dequant_shifts (as AutoAWQ / vLLM) and awq_dequant_loop (the inverse of AutoAWQ's from_linear "
                  "packing loop, numpy uint32): equal bit for bit on every tensor, and equal to the quantizer's own "
                  "integers, zeros and scales"}
    checks["two_implementations"] = two[method]
    not_quant = sorted(k for k, t in tensors.items() if k.endswith(".weight") and t.dim() >= 2
                       and t.dtype not in (torch.float8_e4m3fn,))
    return {"method": method, "quantization_config": qc, "format": fmt, "quantized_modules": facts["quantized"],
            "unquantized_matrices": not_quant,
            "other_dtypes": sorted({str(t.dtype).replace("torch.", "") for t in tensors.values()}),
            "reference": reference, "checks": checks,
            "sensitivity": {k: {"min": min(v["per_prompt"]), **v} for k, v in sensitivity.items()}}


def upstream_check(site, out_dir, cases):
    """The third cross-check, in a process of its own (importing gptqmodel patches transformers): each staged GPTQ /
    AWQ tensor dequantized by the upstream packages themselves, GPTQModel's TorchLinear (PackableQuantLinear.
    dequantize_weight, a v1 checkpoint first through convert_gptq_v1_to_v2_format_module) and AutoAWQ's
    awq/utils/packing_utils.dequantize_gemm (loaded from its file: the awq package's __init__ needs triton). Their
    arithmetic is in f16, the scales' dtype: theirs must equal this script's float32 dequantization rounded to f16,
    exactly. The result goes into references/<case>.json under quant.checks.upstream_dequant."""
    import importlib.metadata
    import importlib.util
    sys.path.insert(0, site)
    spec = importlib.util.spec_from_file_location("awq_packing_utils", os.path.join(site, "awq/utils/packing_utils.py"))
    awq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(awq)
    from gptqmodel.nn_modules.qlinear import PackableQuantLinear
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear
    from gptqmodel.quantization import FORMAT
    from gptqmodel.utils.model import convert_gptq_v1_to_v2_format_module
    versions = {p: importlib.metadata.version(p) for p in ("gptqmodel", "autoawq")}
    for name in cases:
        folder = os.path.join(out_dir, "checkpoints", name)
        qc = read_config(folder)["quantization_config"]
        method = qc["quant_method"]
        if method not in ("gptq", "awq"):
            continue
        tensors = eg.read_tensors(folder)
        count = 0
        for key in sorted(k for k in tensors if k.endswith(".qweight")):
            base = key[:-len(".qweight")]
            parts = {k: tensors[f"{base}.{k}"] for k in ("qweight", "qzeros", "scales", "g_idx")
                     if f"{base}.{k}" in tensors}
            gs = qc["group_size"]
            if method == "gptq":
                v1 = qc["checkpoint_format"] == "gptq"
                ours = gptq_dequant_shifts(parts, 1 if v1 else 0)
                out_f, in_f = ours.shape
                m = TorchLinear(bits=4, group_size=in_f if gs == -1 else gs, sym=qc["sym"], desc_act=qc["desc_act"],
                                in_features=in_f, out_features=out_f, bias=False, format=FORMAT.GPTQ)
                for k, v in parts.items():
                    getattr(m, k).data = v.clone()
                if v1:
                    convert_gptq_v1_to_v2_format_module(m, bits=4, pack_dtype=torch.int32)
                theirs = PackableQuantLinear.dequantize_weight(m.eval()).T
                how = (f"GPTQModel {versions['gptqmodel']} TorchLinear / PackableQuantLinear.dequantize_weight"
                       + (" after convert_gptq_v1_to_v2_format_module" if v1 else ""))
            else:
                ours = awq_dequant_shifts(parts, gs)
                theirs = awq.dequantize_gemm(parts["qweight"], parts["qzeros"], parts["scales"], 4, gs).T
                how = f"AutoAWQ {versions['autoawq']} awq/utils/packing_utils.py dequantize_gemm"
            assert theirs.dtype == torch.float16 and torch.equal(theirs, ours.to(torch.float16)), (name, base)
            count += 1
        path = os.path.join(out_dir, "references", f"{name}.json")
        with open(path) as f:
            meta = json.load(f)
        meta["quant"]["checks"]["upstream_dequant"] = {
            "by": how, "tensors": count,
            "result": "equal to this script's float32 dequantization rounded to float16 (their compute dtype), "
                      "bit for bit"}
        with open(path, "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        print(f"{name}: upstream dequantization agrees on {count} tensors ({how})", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", help=f"cases to export (default: all): {', '.join(CASES)}")
    parser.add_argument("--out", default=OUT, help=f"folder for checkpoints/ and references/ (default: {OUT})")
    parser.add_argument("--upstream-site", metavar="DIR",
                        help="a `pip install --no-deps --target DIR` of autoawq, gptqmodel and its small pure-Python "
                             "dependencies: after the export, a subprocess cross-checks every GPTQ / AWQ tensor with "
                             "their own dequantization (see upstream_check)")
    parser.add_argument("--upstream-check-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    cases = [name for name in CASES if not args.cases or name in args.cases]
    torch.set_num_threads(2)
    if args.upstream_check_only:
        upstream_check(args.upstream_site, args.out, cases)
        return
    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="goldquant_float32_") as work:
        for seed, (name, case) in enumerate(CASES.items()):
            if name in cases:
                export_case(name, case, seed=3000 + seed, out_dir=args.out, work=work)
    if args.upstream_site:
        subprocess.run([sys.executable, os.path.abspath(__file__), "--upstream-check-only", "--upstream-site",
                        args.upstream_site, "--out", args.out, *cases], check=True)


if __name__ == "__main__":
    main()
