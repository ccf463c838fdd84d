"""The Qwen family's configs (Qwen3, Qwen2-MoE, Qwen3-MoE) as transformers 5.23's config classes
read them, and the sparse MoE block against a token-by-token reference."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npqwen import ConfigError, ModelConfig
from npqwen.mlp import DenseMLP, Experts, SparseMoE, route, sparse_moe
from npqwen.primitives import sigmoid, softmax, swiglu_mlp

from conftest import shared_asset

BASE = {"vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 6,
        "num_attention_heads": 8, "num_key_value_heads": 2}
CLASS = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM",
         "qwen3_moe": "Qwen3MoeForCausalLM"}


def parse(model_type, **changes):
    return ModelConfig.from_dict({**BASE, "model_type": model_type, "architectures": [CLASS[model_type]], **changes})


# ---------------------------------------------------------------------------------------------
# configs


def test_qwen3_4b_config():
    path = shared_asset("configs", "Qwen3-4B", "config.json")
    with open(path) as f:
        raw = json.load(f)
    cfg = ModelConfig.from_file(path)
    assert cfg.model_type == "qwen3" and cfg.architectures == ["Qwen3ForCausalLM"]
    # head_dim is explicit and is not hidden / heads (2560 / 32 = 80)
    assert cfg.head_dim == raw["head_dim"] == 128 != raw["hidden_size"] // raw["num_attention_heads"]
    assert cfg.qk_norm and not cfg.qkv_bias and not cfg.o_proj_bias  # attention_bias: false
    assert cfg.tie_word_embeddings is True and cfg.mlp_types == ["dense"] * 36
    assert cfg.rope_parameters == {"rope_type": "default", "rope_theta": 1000000.0}


def test_qwen3_head_dim_defaults_to_128_but_qwen3_moe_to_hidden_over_heads():
    assert parse("qwen3").head_dim == 128          # Qwen3Config.head_dim = 128
    assert parse("qwen3_moe").head_dim == 8        # Qwen3MoeConfig has none: 64 / 8
    assert parse("qwen2_moe").head_dim == 8
    assert parse("qwen3_moe", head_dim=32).head_dim == 32


@pytest.mark.parametrize("model_type,field,qkv,o", [
    ("qwen2", None, True, False),
    ("qwen3", "attention_bias", True, True),
    ("qwen3_moe", "attention_bias", True, True),
    ("qwen2_moe", "qkv_bias", True, False),
])
def test_attention_biases(model_type, field, qkv, o):
    on = parse(model_type, **({field: True} if field else {}))
    assert (on.qkv_bias, on.o_proj_bias) == (qkv, o)
    if field:
        off = parse(model_type, **{field: False})
        assert (off.qkv_bias, off.o_proj_bias) == (False, False)
        with pytest.raises(ConfigError, match=field):
            parse(model_type, **{field: "yes"})
    assert parse("qwen2_moe").qkv_bias and not parse("qwen3").qkv_bias and not parse("qwen3_moe").qkv_bias


def test_qk_norm_is_qwen3s():
    assert [parse(t).qk_norm for t in CLASS] == [False, True, False, True]


def test_sliding_layers_per_model_type():
    """Restated from transformers 5.23's __post_init__ of each config class."""
    kw = dict(num_hidden_layers=6, use_sliding_window=True, sliding_window=16, max_window_layers=3)
    slides = {t: [lt == "sliding_attention" for lt in parse(t, **kw).layer_types] for t in CLASS}
    assert slides["qwen2"] == slides["qwen3"] == [i >= 3 for i in range(6)]
    assert slides["qwen2_moe"] == [i % 2 == 0 and i < 3 for i in range(6)]   # the other direction
    assert slides["qwen3_moe"] == [True] * 6                                  # no max_window_layers
    for t in CLASS:
        assert parse(t, **{**kw, "use_sliding_window": False}).layer_types == ["full_attention"] * 6
        assert parse(t, **kw).sliding_window == 16


def test_qwen3_moe_ignores_layer_types():
    cfg = parse("qwen3_moe", use_sliding_window=True, sliding_window=16, layer_types=["full_attention"] * 6)
    assert cfg.layer_types == ["sliding_attention"] * 6


def test_sparse_layers():
    cfg = parse("qwen3_moe", num_experts=8, num_experts_per_tok=2, decoder_sparse_step=2)
    assert cfg.mlp_types == ["dense", "sparse"] * 3
    cfg = parse("qwen2_moe", num_experts=8, num_experts_per_tok=2, mlp_only_layers=[1, 4])
    assert cfg.mlp_types == ["sparse", "dense", "sparse", "sparse", "dense", "sparse"]
    assert parse("qwen3_moe", num_experts=0).mlp_types == ["dense"] * 6
    assert parse("qwen3").mlp_types == ["dense"] * 6


def test_moe_defaults_are_transformers():
    q2, q3 = parse("qwen2_moe"), parse("qwen3_moe")
    assert (q2.num_experts, q2.num_experts_per_tok, q2.moe_intermediate_size, q2.shared_expert_intermediate_size,
            q2.norm_topk_prob, q2.decoder_sparse_step) == (60, 4, 1408, 5632, False, 1)
    assert (q3.num_experts, q3.num_experts_per_tok, q3.moe_intermediate_size, q3.shared_expert_intermediate_size,
            q3.norm_topk_prob) == (128, 8, 768, 0, False)


def test_num_local_experts_is_num_experts():
    assert parse("qwen3_moe", num_local_experts=16).num_experts == 16
    assert parse("qwen3_moe", num_experts=16, num_local_experts=16).num_experts == 16
    with pytest.raises(ConfigError, match="disagree"):
        parse("qwen3_moe", num_experts=16, num_local_experts=8)


@pytest.mark.parametrize("changes,needle", [
    (dict(num_experts=4, num_experts_per_tok=5), "num_experts_per_tok"),
    (dict(num_experts=-1), "num_experts"),
    (dict(num_experts_per_tok=0), "num_experts_per_tok"),
    (dict(moe_intermediate_size="768"), "moe_intermediate_size"),
    (dict(norm_topk_prob=1), "norm_topk_prob"),
    (dict(decoder_sparse_step=0), "decoder_sparse_step"),
    (dict(mlp_only_layers=[6]), "mlp_only_layers"),
    (dict(mlp_only_layers="1"), "mlp_only_layers"),
    (dict(architectures=["Qwen2MoeForCausalLM"]), "does not match model_type"),
])
def test_bad_moe_fields(changes, needle):
    with pytest.raises(ConfigError, match=needle):
        parse("qwen3_moe", **changes)


# ---------------------------------------------------------------------------------------------
# the sparse MoE block


def moe_weights(rng, d, i, E, k, norm, shared):
    def mat(*shape):  # [..., out, in], as checkpoints store weights
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    return SparseMoE(router=mat(E, d) * 4, experts=Experts(mat(E, 2 * i, d), mat(E, d, i)), top_k=k,
                     norm_topk_prob=norm, shared=DenseMLP(mat(2 * i, d), mat(d, i)) if shared else None,
                     shared_gate=mat(1, d) if shared else None)


def moe_by_token(x, w):
    """transformers' definition, one token at a time in float64: softmax over every expert, the
    top k, optionally renormalised, their weighted sum (+ the sigmoid-gated shared expert)."""
    out = np.zeros(x.shape, np.float64)
    for n, xt in enumerate(x.astype(np.float64)):
        logits = w.router @ xt
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top = np.argsort(-p)[:w.top_k]
        weights = p[top] / (p[top].sum() if w.norm_topk_prob else 1.0)
        for e, we in zip(top, weights):
            gu, dn = (a.astype(np.float64) for a in w.experts[e])
            h = gu @ xt
            g, u = h[:gu.shape[0] // 2], h[gu.shape[0] // 2:]
            out[n] += we * (dn @ (g / (1 + np.exp(-g)) * u))
        if w.shared is not None:
            h = w.shared.w_gate_up.astype(np.float64) @ xt
            g, u = np.split(h, 2)
            out[n] += 1 / (1 + np.exp(-(w.shared_gate[0] @ xt))) * (w.shared.w_down @ (g / (1 + np.exp(-g)) * u))
    return out


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), E=st.integers(1, 9), data=st.data())
def test_sparse_moe_equals_token_by_token(seed, n, E, data):
    k = data.draw(st.integers(1, E))
    norm, shared = data.draw(st.booleans()), data.draw(st.booleans())
    rng = np.random.default_rng(seed)
    w = moe_weights(rng, 16, 12, E, k, norm, shared)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    got = sparse_moe(x, w)
    want = moe_by_token(x, w)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_route_picks_the_most_probable_most_probable_first():
    logits = np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 4.0]], np.float32)
    chosen, weights = route(logits, 2, norm_topk_prob=False)
    assert chosen.tolist() == [[1, 3], [0, 3]]
    np.testing.assert_allclose(weights, np.take_along_axis(softmax(logits), chosen, -1))
    _, normed = route(logits, 2, norm_topk_prob=True)
    np.testing.assert_allclose(normed.sum(-1), 1, rtol=1e-6)


class CountingExperts(Experts):
    def __getitem__(self, e):
        self.used.append(int(e))
        return super().__getitem__(e)


def test_a_token_reads_only_its_k_experts():
    rng = np.random.default_rng(0)
    w = moe_weights(rng, 16, 12, 8, 2, True, False)
    w.experts = CountingExperts(w.experts.w_gate_up, w.experts.w_down)
    w.experts.used = []
    x = rng.standard_normal((1, 1, 16)).astype(np.float32)
    sparse_moe(x, w)
    chosen, _ = route(x[0] @ w.router.T, 2, True)
    assert sorted(w.experts.used) == sorted(chosen[0].tolist())


def test_shared_expert_is_sigmoid_gated():
    rng = np.random.default_rng(1)
    w = moe_weights(rng, 16, 12, 4, 2, False, True)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    without = SparseMoE(w.router, w.experts, 2, False)
    gate = sigmoid(x @ w.shared_gate.T)
    np.testing.assert_allclose(sparse_moe(x, w) - sparse_moe(x, without),
                               gate * swiglu_mlp(x, w.shared.w_gate_up, w.shared.w_down), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the hybrid generation's configs


def test_qwen3_5_released_config():
    """The released Qwen3.5-0.8B layout: a composite config whose text model is read."""
    path = shared_asset("..", "qwen3_5", "configs", "Qwen3.5-0.8B", "config.json")
    with open(path) as f:
        raw = json.load(f)
    cfg = ModelConfig.from_file(path)
    text = raw["text_config"]
    assert cfg.model_type == "qwen3_5" and cfg.weight_prefix == "model.language_model."
    assert cfg.layer_types == text["layer_types"] and cfg.layer_types.count("full_attention") == 6
    assert (cfg.head_dim, cfg.rotary_dim, cfg.hidden_size, cfg.vocab_size) == (256, 64, 1024, 248320)
    assert cfg.rope_parameters == {"rope_type": "default", "rope_theta": 1e7}   # mrope: text-only, plain RoPE
    assert cfg.tie_word_embeddings is True and cfg.hybrid and cfg.qk_norm and not cfg.qkv_bias
    assert (cfg.linear_num_key_heads, cfg.linear_num_value_heads, cfg.linear_key_head_dim,
            cfg.linear_value_head_dim, cfg.linear_conv_kernel_dim) == (16, 16, 128, 128, 4)
    assert cfg.mlp_types == ["dense"] * 24 and cfg.deltanet_layout == "split"


def hybrid(model_type, **changes):
    d = {**BASE, "model_type": model_type, "num_hidden_layers": 8, **changes}
    return ModelConfig.from_dict(d)


def test_hybrid_layer_pattern():
    assert hybrid("qwen3_5_text").layer_types == ["linear_attention"] * 3 + ["full_attention"] + \
        ["linear_attention"] * 3 + ["full_attention"]                       # full_attention_interval 4
    assert hybrid("qwen3_next", full_attention_interval=2).layer_types == ["linear_attention", "full_attention"] * 4
    irregular = ["full_attention"] + ["linear_attention"] * 6 + ["full_attention"]
    assert hybrid("qwen3_5_text", layer_types=irregular).layer_types == irregular
    with pytest.raises(ConfigError, match="sliding_attention"):
        hybrid("qwen3_5_text", layer_types=["sliding_attention"] * 8)


def test_hybrid_defaults_are_transformers():
    c = hybrid("qwen3_5_text")
    assert (c.head_dim, c.partial_rotary_factor, c.linear_num_key_heads, c.linear_num_value_heads) == (256, 0.25, 16, 32)
    n = hybrid("qwen3_next")
    assert (n.num_experts, n.num_experts_per_tok, n.norm_topk_prob, n.shared_expert_intermediate_size) == (512, 10, True, 512)
    assert n.deltanet_layout == "fused"
    m = hybrid("qwen3_5_moe_text", intermediate_size=None, norm_topk_prob=False, decoder_sparse_step=2)
    assert m.mlp_types == ["sparse"] * 8 and m.norm_topk_prob is True   # always renormalised, every layer sparse


def test_composite_config_errors():
    base = {"model_type": "qwen3_5", "architectures": ["Qwen3_5ForConditionalGeneration"]}
    with pytest.raises(ConfigError, match="text_config"):
        ModelConfig.from_dict(base)
    with pytest.raises(ConfigError, match="text_config.model_type"):
        ModelConfig.from_dict({**base, "text_config": {**BASE, "model_type": "qwen3_5_moe_text"}})
    with pytest.raises(ConfigError, match=r"\(text_config\).*hidden_size"):
        ModelConfig.from_dict({**base, "text_config": {**BASE, "hidden_size": "64"}})
    cfg = ModelConfig.from_dict({**base, "tie_word_embeddings": True, "text_config": {**BASE, "tie_word_embeddings": False}})
    assert cfg.tie_word_embeddings is True      # the top level decides, as Qwen3_5Config does


@pytest.mark.parametrize("changes,needle", [
    (dict(linear_num_value_heads=6, linear_num_key_heads=4), "divisible"),
    (dict(linear_key_head_dim=0), "linear_key_head_dim"),
    (dict(rope_parameters={"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 1.5}),
     "partial_rotary_factor"),
])
def test_bad_hybrid_fields(changes, needle):
    with pytest.raises(ConfigError, match=needle):
        hybrid("qwen3_5_text", **changes)


def test_partial_rotary_is_refused_outside_the_hybrid_generation():
    with pytest.raises(ConfigError, match="partial_rotary_factor"):
        parse("qwen3", rope_parameters={"rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 0.5})
