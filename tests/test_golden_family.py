"""The family's golden cases test what they claim: each detail that distinguishes Qwen3, Qwen2-MoE
and Qwen3-MoE from Qwen2, done wrong, moves npqwen's logits away from transformers' by more than
1e-2. (test_golden.py checks that done right they agree to 1e-4.)"""

import dataclasses

import numpy as np
import pytest
from safetensors.numpy import load_file

import npqwen.attention as A
from npqwen import load_model
from npqwen.primitives import apply_rope, rms_norm

from conftest import CHECKPOINTS, REFERENCES, golden_cases, golden_meta

MOVES = 1e-2


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def cases(model_type):
    return [c for c in golden_cases() if golden_meta(c).get("model_type", "qwen2") == model_type]


def error_against_golden(case, model):
    ref = load_file(f"{REFERENCES}/{case}.safetensors")
    ids, mask = ref["p0.input_ids"], ref["p0.attention_mask"]
    out = model.forward(ids, attention_mask=None if mask.all() else mask)
    valid = mask == 1
    return rel_err(out.logits[valid], ref["p0.logits"][valid])


def fresh(case):
    return load_model(f"{CHECKPOINTS}/{case}")


def test_the_family_is_covered():
    types = {golden_meta(c).get("model_type", "qwen2") for c in golden_cases()}
    assert {"qwen2", "qwen3", "qwen2_moe", "qwen3_moe"} <= types
    cfgs = {c: fresh(c).config for c in golden_cases() if "quant" not in golden_meta(c)}   # (the architectures'
    q3 = [c for c in cfgs.values() if c.model_type == "qwen3"]                              # cases, not the formats')
    assert any(c.head_dim * c.num_attention_heads != c.hidden_size for c in q3)   # explicit head_dim
    assert {c.qkv_bias for c in q3} == {True, False} and {c.tie_word_embeddings for c in q3} == {True, False}
    assert any("sliding_attention" in c.layer_types for c in q3)
    moe = [c for c in cfgs.values() if c.num_experts]
    assert any(c.shared_expert_intermediate_size and not c.norm_topk_prob and c.mlp_only_layers for c in moe)
    assert any(c.model_type == "qwen3_moe" and c.norm_topk_prob and c.decoder_sparse_step == 2 for c in moe)
    assert all("dense" in c.mlp_types and "sparse" in c.mlp_types for c in moe if c.model_type in ("qwen2_moe", "qwen3_moe"))
    forms = {golden_meta(c)["config_form"] for c in cfgs if cfgs[c].model_type != "qwen2"}
    assert forms == {"4.x", "5.x"}


@pytest.mark.parametrize("case", cases("qwen3") + cases("qwen3_moe"))
def test_skipping_qk_norm_is_caught(case):
    model = fresh(case)
    for layer in model.layers:
        layer.mixer.q_norm = layer.mixer.k_norm = None
    assert error_against_golden(case, model) > MOVES


@pytest.mark.parametrize("case", cases("qwen3") + cases("qwen3_moe"))
def test_qk_norm_after_rope_is_caught(case, monkeypatch):
    model = fresh(case)
    cfg = model.config
    assert cfg.num_attention_heads != cfg.num_key_value_heads  # so q and k are told apart by head count
    calls = []

    def rope_then_norm(a, cos, sin):
        norm = calls[-1].q_norm if a.shape[1] == cfg.num_attention_heads else calls[-1].k_norm
        return rms_norm(apply_rope(a, cos, sin), norm, cfg.rms_norm_eps)

    original = A.self_attention

    def norm_after_rope(x, w, cfg, ctx, cache=None, layer=0):
        calls.append(w)
        return original(x, dataclasses.replace(w, q_norm=None, k_norm=None), cfg, ctx, cache, layer)

    monkeypatch.setattr(A, "apply_rope", rope_then_norm)
    monkeypatch.setattr(A, "self_attention", norm_after_rope)
    assert error_against_golden(case, model) > MOVES


@pytest.mark.parametrize("case", [c for c in cases("qwen3") + cases("qwen3_moe") if fresh(c).config.o_proj_bias])
def test_dropping_o_proj_bias_is_caught(case):
    model = fresh(case)
    for layer in model.layers:
        layer.mixer.bo = None
    assert error_against_golden(case, model) > MOVES


@pytest.mark.parametrize("case", cases("qwen2_moe") + cases("qwen3_moe"))
def test_flipping_norm_topk_prob_is_caught(case):
    model = fresh(case)
    for i, layer in enumerate(model.layers):
        if model.config.is_sparse(i):
            layer.mlp.norm_topk_prob = not layer.mlp.norm_topk_prob
    assert error_against_golden(case, model) > MOVES


@pytest.mark.parametrize("case", cases("qwen2_moe"))
def test_dropping_the_shared_expert_gate_is_caught(case):
    model = fresh(case)
    for layer in model.layers:
        if getattr(layer.mlp, "shared_gate", None) is not None:
            layer.mlp.shared_gate = np.full_like(layer.mlp.shared_gate, 1e4)  # sigmoid = 1: ungated
    assert error_against_golden(case, model) > MOVES
