"""`npqwen.explain` and `npqwen.info`: their numbers checked against the forward pass."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import CHECKPOINTS, ROOT, golden_model, shared_asset
from npqwen.explain import explain, layer_by_hand, walk
from npqwen.info import summary
from npqwen.weights import open_checkpoint


def golden_tensors(case):   # (a quantized checkpoint's weights as quant.py reads them)
    from npqwen.quant import wrap
    return wrap(open_checkpoint(os.path.join(CHECKPOINTS, case)), golden_model(case).config.quant, case)


@pytest.mark.parametrize("case", ["gqa3_bf16", "sliding_window", "rope_yarn_4x", "qwen3_headdim_bias",
                                  "qwen3_tied_window", "qwen2_moe_shared", "qwen3_moe_step2",
                                  "fp8_qwen3", "gptq_qwen2_actorder", "awq_qwen2"])
def test_walkthrough_numbers_are_the_models(case):
    model, tensors = golden_model(case), golden_tensors(case)
    ids = list(np.random.default_rng(4).integers(1, 320, 21))
    r = walk(model, tensors, ids)
    out = model.forward(np.array([ids]))
    # the by-hand layers, read from the checkpoint by tensor name, are the model's layers
    cfg = model.config
    for i in range(cfg.num_hidden_layers):
        by_hand = layer_by_hand(cfg, tensors, r["hidden_states"][i][0], i)
        if i < cfg.num_hidden_layers - 1:
            assert np.allclose(by_hand["out"], r["hidden_states"][i + 1][0], atol=1e-5)
        # the masked cells are the future and, in a sliding-window layer, what lies beyond the window
        q, k = np.arange(21)[:, None], np.arange(21)[None, :]
        window = cfg.layer_window(i)
        allowed = (k <= q) & ((q - k < window) if window else True)
        assert (by_hand["masked"] == ~allowed).all() and (by_hand["attention"][:, by_hand["masked"]] == 0).all()
    # the last layer's logit-lens line is the model's real prediction
    assert np.allclose(r["lens"][-1], r["next_probs"], atol=1e-6)
    assert r["lens"][-1].argmax() == out.logits[0, -1].argmax()
    # attention weights are rows that sum to one, causal
    att = r["attention"]
    assert np.allclose(att.sum(-1), 1, atol=1e-5) and (np.triu(att, 1) < 1e-30).all()


@pytest.mark.parametrize("case", ["qwen2_moe_shared", "qwen3_moe_step2"])
def test_router_lines_name_the_chosen_experts(case):
    """The router explained for each sparse layer is the one the model uses: layer 0's by hand from
    the checkpoint's tensors, and the experts marked chosen are the k most probable."""
    import io
    model, tensors = golden_model(case), golden_tensors(case)
    cfg = model.config
    ids = [int(i) for i in np.random.default_rng(5).integers(1, 320, 9)]
    f = io.StringIO()
    r = explain(model, tensors, None, ids, file=f)
    assert sorted(r["routers"]) == [i for i in range(cfg.num_hidden_layers) if cfg.is_sparse(i)]
    first = min(r["routers"])
    by_hand = layer_by_hand(cfg, tensors, r["hidden_states"][first][0], first)
    assert np.allclose(by_hand["router_probs"], r["routers"][first], atol=1e-5)
    lines = [line for line in f.getvalue().splitlines() if line.strip().startswith("layer") and "*e" in line]
    assert len(lines) == len(r["routers"])
    for line, probs in zip(lines, r["routers"].values()):
        marked = sorted(int(w[2:]) for w in line.split() if w.startswith("*e"))
        assert marked == sorted(np.argsort(-probs[-1])[:cfg.num_experts_per_tok].tolist())


def test_qwen3_explains_its_qk_norm():
    import io
    model, tensors = golden_model("qwen3_headdim_bias"), golden_tensors("qwen3_headdim_bias")
    f = io.StringIO()
    r = explain(model, tensors, None, [3, 4, 5], file=f)
    assert "q_norm, k_norm" in f.getvalue()
    hd = model.config.head_dim
    # the normed q heads have unit RMS before the weight: undo the weight and check
    w = np.asarray(tensors["model.layers.0.self_attn.q_norm.weight"], np.float32)
    assert np.allclose(np.sqrt(np.mean((r["q_normed"] / w) ** 2, axis=-1)), 1, atol=1e-3) and hd == w.shape[0]


def test_printed_explanation():
    import io
    model = golden_model("gqa3_bf16")
    buf = io.StringIO()
    ids = [5, 17, 42, 9, 100, 7]
    r = explain(model, golden_tensors("gqa3_bf16"), None, ids, file=buf)
    text = buf.getvalue()
    assert "6 query heads share 2 key/value heads, 3 per kv head" in text
    assert text.count("  layer ") == model.config.num_hidden_layers
    top = int(np.argmax(r["next_probs"]))
    assert text.split("== next token")[1].split()[0] == str(top)
    # the attention lines printed for the last token sum to one
    lines = text.split("mean over heads):")[1].split("  o_proj")[0].strip().splitlines()
    assert abs(sum(float(l.split()[1]) for l in lines) - 1) < 0.01


def test_explain_command_on_the_demo_with_plot(tmp_path):
    png = tmp_path / "explain.png"
    r = subprocess.run([sys.executable, "-m", "npqwen.explain", "--plot", str(png), "学习如逆水行舟,不进则"],
                       cwd=ROOT, capture_output=True, timeout=300)
    assert r.returncode == 0 and not r.stderr, r.stderr.decode()  # no "Glyph ... missing" warnings
    out = r.stdout.decode()
    for section in ("== tokens", "== embedding", "== layer 0", "RoPE", "logit lens", "== next token"):
        assert section in out
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 5_000_000
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 400 <= w <= 4000 and 200 <= h <= 3000   # (taller where no CJK font draws the tokens: escaped bytes)


def test_info_counts_match_the_published_sizes():
    from npqwen.config import Qwen2Config
    cfg = Qwen2Config.from_file(shared_asset("configs", "Qwen2-7B-Instruct", "config.json"))
    s = summary(cfg)
    assert round(s["total"] / 1e9, 2) == 7.62      # Qwen2-7B: 7.62 B parameters
    assert s["kv_bytes_per_token_bf16"] == 2 * 28 * 4 * 128 * 2
    r = subprocess.run([sys.executable, "-m", "npqwen.info", "--model",
                        shared_asset("configs", "Qwen2-1.5B-Instruct")], cwd=ROOT, capture_output=True)
    assert r.returncode == 0 and b"parameters: 1.544 B" in r.stdout


def test_info_of_the_qwen3_family():
    from npqwen.config import ModelConfig
    q3 = summary(ModelConfig.from_file(shared_asset("configs", "Qwen3-4B", "config.json")))
    assert round(q3["total"] / 1e9, 1) == 4.0 and q3["active"] == q3["total"]    # Qwen3-4B: 4.0 B
    # Qwen3-30B-A3B's published shape: 30.5 B parameters, 29.9 B without the embedding and LM head,
    # 3.3 B activated (its model card; 3.35 B counted here)
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from make_random_checkpoint import SHAPES
    moe = summary(ModelConfig.from_dict(SHAPES["qwen3-30b-a3b"]))
    assert round(moe["total"] / 1e9, 1) == 30.5 and 3.3 <= moe["active"] / 1e9 < 3.4
    assert round((moe["total"] - moe["embedding"] - moe["lm_head"]) / 1e9, 1) == 29.9
    assert moe["stream_read_bytes"] == 2 * (moe["active"] - moe["embedding"] + 151936 * 2048)
