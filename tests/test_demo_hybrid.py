"""The trained hybrid demo (golden/checkpoints/demo_hybrid, scripts/train_demo_hybrid.py): a tiny Qwen3.5
(three Gated DeltaNet layers, one gated full-attention layer) that completes the seed's proverb. npqwen
against what transformers exported from it (golden/references/demo_hybrid.*, read with the safetensors
package): logits, every hidden state, greedy tokens and generate's decode-step logits; and the command
a new user runs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import CHECKPOINTS, REFERENCES, ROOT, golden_meta, golden_model
from npqwen import Tokenizer
from npqwen.cache import KVCache
from npqwen.generation import generate_batch

CASE = "demo_hybrid"
FOLDER = os.path.join(CHECKPOINTS, CASE)
PROVERB = "学习如逆水行舟,不进则"
TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return load_file(os.path.join(REFERENCES, f"{CASE}.safetensors"))


def prompts():
    return range(len(golden_meta(CASE)["prompts"]))


def record():
    with open(os.path.join(REFERENCES, f"{CASE}_train.json")) as f:
        return json.load(f)


def test_it_is_a_small_trained_qwen3_5_beside_the_qwen2_demo():
    cfg = golden_model(CASE).config
    assert cfg.model_type == "qwen3_5_text" and cfg.hybrid
    assert cfg.layer_types == ["linear_attention"] * 3 + ["full_attention"]          # 3:1, as released
    assert cfg.linear_num_value_heads > cfg.linear_num_key_heads > 1 and cfg.rotary_dim < cfg.head_dim
    size = sum(os.path.getsize(os.path.join(FOLDER, f)) for f in os.listdir(FOLDER))
    assert size < 10e6
    for name in ("tokenizer.json", "tokenizer_config.json"):                        # the demo's, byte for byte
        with open(os.path.join(FOLDER, name), "rb") as a, open(os.path.join(CHECKPOINTS, "demo", name), "rb") as b:
            assert a.read() == b.read(), name
    with open(os.path.join(FOLDER, "generation_config.json")) as f:
        assert json.load(f)["do_sample"] is False
    rec = record()
    with open(os.path.join(REFERENCES, "demo_train.json")) as f:
        qwen2 = json.load(f)
    assert rec["corpus"]["sha256"] == qwen2["corpus"]["sha256"]                      # the same held-out tokens
    assert rec["evaluation"]["valid_tokens_scored"] == qwen2["evaluation"]["valid_tokens_scored"]
    ev = rec["evaluation"]
    assert ev["acceptance"]["passed"] and ev["valid_perplexity"] < ev["unigram_add_one_valid_perplexity"]


@pytest.mark.parametrize("k", prompts())
def test_logits_and_hidden_states_within_1e4_of_transformers(ref, k):
    ids, mask = ref[f"p{k}.input_ids"], ref[f"p{k}.attention_mask"]
    out = golden_model(CASE).forward(ids, attention_mask=None if mask.all() else mask, output_hidden_states=True)
    valid = mask == 1
    assert len(out.hidden_states) == golden_meta(CASE)["prompts"][k]["hidden_states"] == 5
    for i, h in enumerate(out.hidden_states):
        want = ref[f"p{k}.hidden.{i}"][valid]
        err = np.abs(h[valid] - want).max()
        assert err < TOL, f"hidden state {i}: differs by {err:.2e}"
    want = ref[f"p{k}.logits"][valid]
    assert np.abs(out.logits[valid] - want).max() < TOL   # (logits up to ~18 in size: measured 1e-5 apart)
    assert (out.logits.argmax(-1)[valid] == want.argmax(-1)).all()


@pytest.mark.parametrize("k", prompts())
def test_greedy_tokens_and_decode_steps_equal_transformers_generate(ref, k):
    """generate's tokens, and the logits of each of its steps (the prefill's last position, then the decode
    steps through the DeltaNet state and the KV cache) against transformers' generate_logits."""
    model = golden_model(CASE)
    ids, mask, want = ref[f"p{k}.input_ids"], ref[f"p{k}.attention_mask"], ref[f"p{k}.generated"]
    rows = [row[m == 1].tolist() for row, m in zip(ids, mask)]
    n = want.shape[1]
    assert np.array_equal(np.array(generate_batch(model, rows, max_new_tokens=n, min_new_tokens=n, eos_ids=[])), want)
    for r, row in enumerate(rows):   # each row alone, through the cache, fed transformers' tokens
        cache = KVCache(model.config, 1, len(row) + n)
        steps = [model.forward(np.array([row]), cache=cache).logits[0, -1]]
        for token in want[r, :-1]:
            steps.append(model.forward(np.array([[token]]), cache=cache).logits[0, -1])
        expected = ref[f"p{k}.generate_logits"][r]
        assert np.abs(np.stack(steps) - expected).max() < TOL


def test_transformers_completes_the_proverb_with_tui(ref):
    """What the golden data itself says (independent of npqwen): the first greedy token is 退."""
    tok = Tokenizer(FOLDER)
    k = next(k for k in prompts() if golden_meta(CASE)["prompts"][k]["text"] == PROVERB)
    assert ref[f"p{k}.input_ids"][0].tolist() == tok.encode(PROVERB)
    assert tok.decode([int(ref[f"p{k}.generated"][0, 0])]) == "退"
    assert tok.decode([int(ref[f"p{k}.logits"][0, -1].argmax())]) == "退"


def test_the_command_completes_the_proverb():
    """As a user runs it: no options but the model, greedy from its generation_config.json."""
    r = subprocess.run([sys.executable, "-m", "npqwen.generate", "--model", FOLDER, PROVERB], cwd=ROOT,
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode("utf-8")
    assert out.startswith("退"), out
