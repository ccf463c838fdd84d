"""`python -m npqwen.compare` on dumps made from the golden references (transformers' hidden states
and logits), untouched, with an engine whose layer 2 is wrong, and with top tokens swapped."""

import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cli_inprocess import run_cli
from conftest import CHECKPOINTS, REFERENCES
from npqwen import load_model
from npqwen.compare import compare, main as compare_main

DEMO = os.path.join(CHECKPOINTS, "demo")


def golden_dump(case, k):
    """transformers' input_ids, mask, every hidden state and the logits of golden prompt k, as a dump."""
    ref = load_file(os.path.join(REFERENCES, f"{case}.safetensors"))
    dump = {"input_ids": ref[f"p{k}.input_ids"], "attention_mask": ref[f"p{k}.attention_mask"],
            "logits": ref[f"p{k}.logits"]}
    i = 0
    while f"p{k}.hidden.{i}" in ref:
        dump[f"hidden_states.{i}"] = ref[f"p{k}.hidden.{i}"]
        i += 1
    return dump


def run(tmp_path, dump, model=DEMO, *args):
    path = str(tmp_path / "dump.safetensors")
    save_file(dump, path)
    return run_cli(["--model", model, "--reference", path, *args], main=compare_main)


@pytest.mark.parametrize("case,k", [("demo", 0), ("gqa3_bf16", 3)])   # gqa3_bf16 prompt 3: a left-padded batch
def test_a_dump_of_the_golden_references_passes(tmp_path, case, k):
    dump = golden_dump(case, k)
    status, out, err = run(tmp_path, dump, os.path.join(CHECKPOINTS, case))
    assert status == 0, out + err
    n_states = sum(name.startswith("hidden_states.") for name in dump)
    assert sum(line.startswith("hidden_states.") for line in out.splitlines()) == n_states
    assert "top-1 agreement" in out and "PASS" in out and "<-" not in out


def test_a_wrong_layer_2_is_found_at_layer_2(tmp_path):
    """An engine whose decoder layer 2 computes something else (its MLP's output scaled by 1.01):
    its states from layer 2 on, and its logits, come from that engine; the earlier ones are right."""
    model = load_model(DEMO)
    model.layers[2].mlp.w_down *= np.float32(1.01)
    dump = golden_dump("demo", 0)
    out = model.forward(dump["input_ids"], output_hidden_states=True)
    for i in range(3, 5):
        dump[f"hidden_states.{i}"] = out.hidden_states[i]
    dump["logits"] = out.logits
    status, text, err = run(tmp_path, dump)
    assert status == 1, text + err
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith(("hidden_states.", "logits "))}
    assert "first over" in rows["hidden_states.3"] and "output of layer 2" in rows["hidden_states.3"]
    assert sum("first over" in line for line in rows.values()) == 1
    assert "FAIL: hidden_states.3 (output of layer 2)" in text


def test_logit_statistics(tmp_path):
    """Swap the two most likely tokens at position 4 and add noise at position 7: top-1 agreement 10
    of 11, the differing position named with both tokens, and the KL divergences those of the
    distributions, computed here in float64 from the logits directly."""
    dump = golden_dump("demo", 0)
    logits = dump["logits"].copy()
    a, b = np.argsort(logits[0, 4])[-2:]
    logits[0, 4, [a, b]] = logits[0, 4, [b, a]]
    logits[0, 7] += np.random.default_rng(0).normal(0, 0.1, logits.shape[-1]).astype(np.float32)
    dump["logits"] = logits
    c = compare(load_model(DEMO), dump)
    assert (c.logits.agree, c.logits.positions) == (10, 11)
    assert [(row, pos, top, theirs) for row, pos, top, _, theirs, _ in c.logits.differ] == [(0, 4, b, a)]

    def logsoftmax(x):
        x = x.astype(np.float64)
        return x - x.max() - np.log(np.exp(x - x.max()).sum())
    ref = load_file(os.path.join(REFERENCES, "demo.safetensors"))["p0.logits"][0]
    for pos in (4, 7):
        p, q = logsoftmax(ref[pos]), logsoftmax(logits[0, pos])
        assert c.logits.kl[pos] == pytest.approx(np.sum(np.exp(p) * (p - q)), rel=1e-3)
    assert np.delete(c.logits.kl, [4, 7]).max() < 1e-9
    status, out, err = run(tmp_path, dump)
    assert status == 1 and "top token differs at 1 position" in out and "row 0 position 4" in out
    assert f"mean {np.mean(c.logits.kl):.3e}" in out
