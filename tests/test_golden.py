"""npqwen against transformers: logits and every hidden state exported once from transformers
5.23.0 (float32, eager attention) on the bf16/f32 checkpoints under golden/. The references are
read with the safetensors package itself, not with npqwen's reader."""

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import REFERENCES, golden_cases, golden_meta, golden_model

TOL = 1e-4


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def prompts():
    for case in golden_cases():
        for k, _ in enumerate(golden_meta(case)["prompts"]):
            yield case, k


@pytest.fixture(scope="module")
def refs():
    return {case: load_file(f"{REFERENCES}/{case}.safetensors") for case in golden_cases()}


@pytest.mark.parametrize("case,k", list(prompts()))
def test_logits_and_hidden_states_match_transformers(case, k, refs):
    ref = refs[case]
    ids, mask = ref[f"p{k}.input_ids"], ref[f"p{k}.attention_mask"]
    model = golden_model(case)
    padded = not mask.all()
    out = model.forward(ids, attention_mask=mask if padded else None, output_hidden_states=True)
    valid = mask == 1  # outputs at padding positions are unspecified, in transformers too

    n_states = model.config.num_hidden_layers + 1
    assert len(out.hidden_states) == n_states == golden_meta(case)["prompts"][k]["hidden_states"]
    for i in range(n_states):  # report the first layer that diverges, not only the logits
        err = rel_err(out.hidden_states[i][valid], ref[f"p{k}.hidden.{i}"][valid])
        where = "embeddings" if i == 0 else f"output of layer {i - 1}" + (" after final norm" if i == n_states - 1 else "")
        assert err < TOL, f"{case} prompt {k}: hidden state {i} ({where}) diverges, relative error {err:.2e}"

    logits, want = out.logits, ref[f"p{k}.logits"]
    assert logits.dtype == np.float32 and logits.shape == want.shape
    assert rel_err(logits[valid], want[valid]) < TOL
    assert (logits.argmax(-1)[valid] == want.argmax(-1)[valid]).all()


def test_sliding_window_matters(refs):
    """The sliding-window golden model's output really depends on the window: ignoring it is caught."""
    from npqwen import load_model
    from conftest import CHECKPOINTS
    model = load_model(f"{CHECKPOINTS}/sliding_window")
    assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    model.config.layer_types = ["full_attention"] * 3
    ref = refs["sliding_window"]
    out = model.forward(ref["p0.input_ids"])
    assert rel_err(out.logits, ref["p0.logits"]) > 1e-2


def test_golden_covers_what_it_claims():
    metas = {c: golden_meta(c) for c in golden_cases()}
    cfgs = {c: golden_model(c).config for c in metas}
    assert any(c.num_key_value_groups == 3 for c in cfgs.values())               # uneven GQA ratio
    assert any(c.num_key_value_groups == 1 for c in cfgs.values())               # multi-head
    assert any(c.num_key_value_heads == 1 for c in cfgs.values())                # multi-query
    assert {c.tie_word_embeddings for c in cfgs.values()} == {True, False}
    assert {m["dtype"] for m in metas.values()} >= {"bfloat16", "float32"}
    assert any(m["sharded"] for m in metas.values())
    assert {c.rope_parameters["rope_type"] for c in cfgs.values()} >= {"default", "linear", "dynamic", "yarn"}
    assert {m["config_form"] for m in metas.values()} == {"4.x", "5.x"}
    lengths = [n for m in metas.values() for p in m["prompts"] for n in p["lengths"]]
    assert max(lengths) >= 200
    assert any(len(p["lengths"]) > 1 for m in metas.values() for p in m["prompts"])  # padded batches
