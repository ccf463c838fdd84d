"""Quantized checkpoints (FP8, GPTQ, AWQ) against golden data from scripts/export_golden_quant.py:
FP8 cases against transformers 5.23's own CPU load of the FP8 folder (dequantized, then run in
float32); GPTQ and AWQ (which transformers cannot load without gptqmodel or autoawq) and FP8 with
tiles that do not divide the matrix against transformers running float32 checkpoints of the weights
dequantized by two independent implementations that agree bit for bit. test_golden.py and
test_generation.py run every golden case, these included, with the weights dequantized at load;
here the weights stay quantized, as stored."""

import io
import subprocess
import sys
from contextlib import redirect_stdout

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import CHECKPOINTS, REFERENCES, ROOT, golden_cases, golden_meta
from npqwen import load_model
from npqwen.generation import generate_batch
from npqwen.quant import Quantized
from npqwen.stored import StoredMatrix
from test_generation import prompts_of
from test_golden import TOL, rel_err

QUANT = [c for c in golden_cases() if "quant" in golden_meta(c)]


def refs(case):
    return load_file(f"{REFERENCES}/{case}.safetensors")


_kept = {}


def kept(case):
    """Each quantized case loaded once, its weights kept as stored."""
    if case not in _kept:
        _kept[case] = load_model(f"{CHECKPOINTS}/{case}", weights="bf16")
    return _kept[case]


def quantized_parts(model):
    """Every quantized weight the model multiplies by (the first layer's, and its experts')."""
    layer = model.layers[0]
    found = []
    for block in (layer.mixer, layer.mlp):
        for v in vars(block).values():
            if isinstance(v, StoredMatrix):
                found += [p for p in v.parts if isinstance(p, Quantized)]
        experts = getattr(block, "experts", None)
        if experts is not None and hasattr(experts, "fetch"):
            for w in experts.fetch(0):
                found += [p for p in getattr(w, "parts", []) if isinstance(p, Quantized)]
    return found


@pytest.mark.parametrize("case", QUANT)
def test_kept_quantized_matches_the_reference(case):
    model, ref = kept(case), refs(case)
    assert quantized_parts(model), "the weights should still be quantized"
    for k, p in enumerate(golden_meta(case)["prompts"]):
        ids, mask = ref[f"p{k}.input_ids"], ref[f"p{k}.attention_mask"]
        out = model.forward(ids, attention_mask=None if mask.all() else mask, output_hidden_states=True)
        valid = mask == 1
        for i, h in enumerate(out.hidden_states):
            err = rel_err(h[valid], ref[f"p{k}.hidden.{i}"][valid])
            assert err < TOL, f"{case} prompt {k}: hidden state {i}, relative error {err:.2e}"
        assert rel_err(out.logits[valid], ref[f"p{k}.logits"][valid]) < TOL


@pytest.mark.parametrize("case", QUANT)
def test_kept_quantized_generates_transformers_tokens(case):
    """Greedy decoding, one token at a time: GPTQ and AWQ through the few-rows products (quant.py),
    FP8 with its scales applied to the inputs."""
    model, ref = kept(case), refs(case)
    want = ref["p0.generated"]
    got = generate_batch(model, prompts_of(ref, 0), max_new_tokens=want.shape[1], min_new_tokens=want.shape[1],
                         eos_ids=[])
    assert np.array_equal(np.array(got), want)


def test_golden_quant_covers_what_it_claims():
    metas = {c: golden_meta(c)["quant"] for c in QUANT}
    methods = {m["method"] for m in metas.values()}
    assert methods == {"fp8", "gptq", "awq"}
    models = {c: kept(c) for c in QUANT}
    fp8 = [c for c, m in metas.items() if m["method"] == "fp8"]
    assert {d for c in fp8 for d in metas[c]["format"]["scale_dtype"]} >= {"bfloat16", "float16", "float32"}
    assert any(p.scale.shape[0] > 1 and p.scale.shape[1] > 1 for c in fp8 for p in quantized_parts(models[c]))  # a 2-D grid
    assert any(p.shape[0] % 128 or p.shape[1] % 128 for c in fp8 for p in quantized_parts(models[c]))          # partial tiles
    assert any(models[c].config.num_experts for c in fp8) and any(models[c].config.hybrid for c in fp8)
    gptq = {c: quantized_parts(models[c]) for c, m in metas.items() if m["method"] == "gptq"}
    parts = [p for ps in gptq.values() for p in ps]
    assert any(not isinstance(p.groups, int) for p in parts)                     # act-order
    assert {p.plus_one for p in parts} == {True, False}                          # v1 and v2 zeros
    assert any(isinstance(p.groups, int) and p.groups == p.shape[1] for p in parts)   # group_size -1
    assert any(models[c].config.hybrid for c in gptq)
    assert any(metas[c]["format"].get("sym") is False for c in gptq)             # asymmetric zeros
    awq = [c for c, m in metas.items() if m["method"] == "awq"]
    assert any(models[c].config.num_experts for c in awq)
    assert all("reference" in m for m in metas.values())


def mutated(case, change):
    """The kept-quantized model's logits for prompt 0 with `change` made to every quantized weight."""
    model = load_model(f"{CHECKPOINTS}/{case}", weights="bf16")
    for layer in model.layers:
        for block in (layer.mixer, layer.mlp):
            for v in vars(block).values():
                if isinstance(v, StoredMatrix):
                    for p in v.parts:
                        change(p)
    return model.forward(refs(case)["p0.input_ids"]).logits


@pytest.mark.parametrize("case,change,what", [
    ("gptq_qwen2", lambda p: setattr(p, "plus_one", False), "GPTQ v1's stored zero read without the +1"),
    ("gptq_qwen2_actorder", lambda p: setattr(p, "groups", p.shape[1] // int(np.max(p.groups) + 1)),
     "act-order's g_idx ignored (i // group_size)"),
    ("fp8_qwen3", lambda p: setattr(p, "scale", 1 / p.scale.astype(np.float32)),
     "FP8's weight_scale_inv taken as an inverse (it multiplies)"),
])
def test_golden_data_catches_a_misread_format(case, change, what):
    """Each format detail, got wrong in npqwen, moves the logits far past the golden tolerance."""
    ref = refs(case)["p0.logits"]
    assert rel_err(mutated(case, change), ref) > 1e-2, what


def test_compare_passes_an_engines_fp8_output(tmp_path):
    """`compare` diffs another engine's output on an FP8 checkpoint: transformers' own FP8 load passes."""
    case = "fp8_qwen3"
    ref = refs(case)
    dump = {"input_ids": ref["p0.input_ids"], "logits": ref["p0.logits"]}
    dump.update({f"hidden_states.{i}": ref[f"p0.hidden.{i}"] for i in range(golden_meta(case)["prompts"][0]["hidden_states"])})
    save_file(dump, str(tmp_path / "ok.safetensors"))
    bad = dict(dump, **{"hidden_states.1": dump["hidden_states.1"] * 1.01})
    save_file(bad, str(tmp_path / "bad.safetensors"))
    run = lambda f: subprocess.run([sys.executable, "-m", "npqwen.compare", "--model", f"{CHECKPOINTS}/{case}",
                                    "--reference", str(tmp_path / f), "--weights", "bf16"],
                                   cwd=ROOT, capture_output=True, text=True, timeout=300)
    ok, off = run("ok.safetensors"), run("bad.safetensors")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert off.returncode == 1 and "hidden_states.1" in off.stdout, off.stdout + off.stderr


def test_info_shows_what_each_mode_keeps_resident():
    from npqwen.info import main
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["--model", f"{CHECKPOINTS}/gptq_qwen2"]) in (0, None)
    text = buf.getvalue()
    assert "quantized: gptq int4, group" in text and "--weights float32" in text and "memory-mapped" in text
