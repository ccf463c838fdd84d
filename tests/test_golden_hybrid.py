"""The hybrid generation's golden cases test what they claim: each detail of Qwen3.5 / Qwen3-Next done
wrong moves npqwen's logits away from transformers' by more than 1e-2 (test_golden.py checks that
done right they agree to 1e-4, and test_generation.py that greedy decoding through the recurrent
state equals transformers' generate)."""

import numpy as np
import pytest

import npqwen.attention
import npqwen.deltanet as D
import npqwen.model
from npqwen import load_model
from npqwen.cache import KVCache

from conftest import CHECKPOINTS, golden_cases, golden_meta
from test_golden_family import MOVES, error_against_golden

HYBRID = ("qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_next")


def cases():
    return [c for c in golden_cases() if golden_meta(c).get("model_type") in HYBRID]


def fresh(case):
    return load_model(f"{CHECKPOINTS}/{case}")


def test_the_hybrid_generation_is_covered():
    cfgs = {c: fresh(c).config for c in cases()}
    assert {golden_meta(c)["model_type"] for c in cfgs} >= {"qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text",
                                                            "qwen3_next"}
    assert any(c.num_experts for c in cfgs.values()) and any(not c.num_experts for c in cfgs.values())
    assert any(c.model_type == "qwen3_5" and c.weight_prefix == "model.language_model." for c in cfgs.values())
    from npqwen.family import hybrid_layer_types
    assert any(all(c.layer_types != hybrid_layer_types(len(c.layer_types), k) for k in range(1, len(c.layer_types) + 1))
               for c in cfgs.values())                                     # a pattern no interval gives
    for c in cfgs.values():
        assert c.layer_types.count("linear_attention") >= 3 and "full_attention" in c.layer_types
        assert c.linear_num_value_heads > c.linear_num_key_heads > 1      # so repeat and tile differ
        assert c.rotary_dim < c.head_dim                                   # partial rotary
    lengths = [n for c in cfgs for p in golden_meta(c)["prompts"] for n in p["lengths"]]
    assert max(lengths) > 2 * D.CHUNK                                      # more than two chunks
    assert any(len(p["lengths"]) > 1 for c in cfgs for p in golden_meta(c)["prompts"])   # left padding


@pytest.mark.parametrize("case", cases())
def test_norms_read_as_w_are_caught(case, monkeypatch):
    def plain(up, cfg, name):
        return up(name)
    monkeypatch.setattr(npqwen.model, "norm_weight", plain)
    monkeypatch.setattr(npqwen.attention, "norm_weight", plain)
    assert error_against_golden(case, fresh(case)) > MOVES


@pytest.mark.parametrize("case", cases())
def test_dropping_the_attention_gate_is_caught(case, monkeypatch):
    monkeypatch.setattr(npqwen.attention, "sigmoid", lambda x: np.ones_like(x))
    assert error_against_golden(case, fresh(case)) > MOVES


@pytest.mark.parametrize("case", cases())
def test_skipping_the_l2_norm_is_caught(case, monkeypatch):
    monkeypatch.setattr(D, "l2_normalise", lambda x: x)
    assert error_against_golden(case, fresh(case)) > MOVES


def decay_after_update(q, k, v, g, beta, S, chunk=None):
    """A deliberate mistake: the state written first and decayed after."""
    S = S.copy()
    out = np.empty(v.shape, np.float32)
    for i in range(q.shape[2]):
        err = v[:, :, i] - np.einsum("bhkv,bhk->bhv", S, k[:, :, i])
        S += k[:, :, i, :, None] * (beta[:, :, i, None] * err)[:, :, None, :]
        S *= np.exp(g[:, :, i])[..., None, None]
        out[:, :, i] = np.einsum("bhkv,bhk->bhv", S, q[:, :, i])
    return out, S


@pytest.mark.parametrize("case", cases())
def test_decay_after_the_update_is_caught(case, monkeypatch):
    monkeypatch.setattr(D, "delta_rule", decay_after_update)
    monkeypatch.setattr(D, "delta_rule_chunked", decay_after_update)
    assert error_against_golden(case, fresh(case)) > MOVES


@pytest.mark.parametrize("case", cases())
def test_tiled_heads_are_caught(case, monkeypatch):
    monkeypatch.setattr(D, "per_value_head", lambda x, Hv: np.tile(x, (1, 1, Hv // x.shape[2], 1)))
    assert error_against_golden(case, fresh(case)) > MOVES


@pytest.mark.parametrize("case", cases())
def test_decoding_from_the_state_equals_the_full_forward(case):
    """Token by token through the cache (conv inputs and recurrent state, never the prompt again)
    gives the logits of one forward over the whole sequence (the chunked form)."""
    model = fresh(case)
    ids = np.random.default_rng(0).integers(1, model.config.vocab_size, (2, 140))
    full = model.forward(ids).logits
    cache = KVCache(model.config, 2, 140)
    pieces = [model.forward(ids[:, :130], cache=cache).logits]
    for t in range(130, 140):
        pieces.append(model.forward(ids[:, t:t + 1], cache=cache).logits)
    assert np.abs(np.concatenate(pieces, axis=1) - full).max() < 1e-4 * np.abs(full).max()
