"""`logprobs=K` on generation against transformers' generate(output_scores=True): each token's
log-probability under the processed scores it was drawn from, and the K most likely tokens under
them (golden data from scripts/export_score_golden.py, on the demo model)."""

import json
import os

import numpy as np
import pytest

from cli_inprocess import run_cli
from conftest import CHECKPOINTS, golden_model, scoring_meta
from npqwen import SamplingSettings, Tokenizer, generate
from npqwen.logprobs import log_softmax, step_logprobs
from npqwen.sampling import processed_logits

TOL = 1e-4
DEMO = os.path.join(CHECKPOINTS, "demo")

META = scoring_meta()


@pytest.fixture(scope="module")
def ref(scoring_ref):
    return scoring_ref


def settings_of(run):
    kw = {k: v for k, v in META[run].items() if k != "do_sample"}
    return SamplingSettings(**kw) if META[run]["do_sample"] else SamplingSettings(temperature=0, **kw)


def test_greedy_with_penalty_matches_output_scores(ref):
    """Greedy with a repetition penalty of 1.3: the tokens, each one's log-probability under the
    penalised logits (transformers applies no warper when greedy) and the 5 most likely."""
    prompt = ref["gen_greedy.prompt"].tolist()
    want = ref["gen_greedy.ids"].tolist()
    got = list(generate(golden_model("demo"), Tokenizer(DEMO), prompt, len(want), settings_of("gen_greedy"),
                        eos_ids=[], logprobs=5))
    assert [t.id for t in got] == want
    assert np.abs(np.array([t.logprob for t in got]) - ref["gen_greedy.logprob"]).max() < TOL
    assert [[i for i, _ in t.top_logprobs] for t in got] == ref["gen_greedy.top_ids"].tolist()
    assert np.abs(np.array([[v for _, v in t.top_logprobs] for t in got]) - ref["gen_greedy.top_logprobs"]).max() < TOL


def test_sampling_processors_match_output_scores(ref):
    """Sampled with temperature 0.7, top-k 20, top-p 0.9, min-p 0.05 and a penalty of 1.1: at every
    step transformers drew from, npqwen's processors turn the same raw logits (output_logits) and the
    same history into the same distribution (output_scores): the same tokens removed, the same
    log-probabilities for the rest, and so the same logprob for the token drawn."""
    s = settings_of("gen_sampled")
    prompt, ids = ref["gen_sampled.prompt"], ref["gen_sampled.ids"]
    kept_counts = []
    for i in range(len(ids)):
        history = np.concatenate([prompt, ids[:i]])[None]
        scores = processed_logits(ref["gen_sampled.raw_logits"][i:i + 1], s, history)
        got, want = log_softmax(scores)[0], ref["gen_sampled.scores_logprobs"][i]
        kept = np.isfinite(want)
        assert np.array_equal(np.isfinite(got), kept), i
        kept_counts.append(int(kept.sum()))
        assert np.abs(got[kept] - want[kept]).max() < TOL
        (lp, top), = step_logprobs(scores, ids[i:i + 1], 5)
        assert abs(lp - ref["gen_sampled.logprob"][i]) < TOL
        n = min(5, kept.sum())
        assert [t for t, _ in top] == ref["gen_sampled.top_ids"][i, :n].tolist()
    assert max(kept_counts) > 5 and max(kept_counts) <= 20   # the filters left choices, and removed tokens


def test_sampled_tokens_carry_the_logprob_of_their_step():
    """Through the KV cache, each sampled token's logprob is the one a full forward over the prompt
    and the tokens before it gives, after the processors; its alternatives are the finite ones, most
    likely first."""
    model = golden_model("demo")
    s = SamplingSettings(temperature=0.9, top_k=8, repetition_penalty=1.2)
    prompt = [100, 200, 300]
    toks = list(generate(model, None, prompt, 10, s, seed=3, eos_ids=[], logprobs=4))
    seq = list(prompt)
    for t in toks:
        logits = model.forward(np.array([seq])).logits[:, -1]
        lp = log_softmax(processed_logits(logits, s, np.array([seq])))[0]
        assert abs(t.logprob - lp[t.id]) < 1e-5
        assert np.allclose([v for _, v in t.top_logprobs], np.sort(lp)[::-1][:4], atol=1e-5)
        assert np.allclose([lp[i] for i, _ in t.top_logprobs], [v for _, v in t.top_logprobs], atol=1e-5)
        seq.append(t.id)


def test_cli_logprobs_json(ref):
    status, out, err = run_cli(["--model", DEMO, "--temperature", "0", "--repetition-penalty", "1.3",
                                "--max-new-tokens", "16", "--logprobs", "5", "The river"])
    assert status == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    n = len(lines)
    assert n >= 1 and [d["id"] for d in lines] == ref["gen_greedy.ids"][:n].tolist()
    assert np.abs(np.array([d["logprob"] for d in lines]) - ref["gen_greedy.logprob"][:n]).max() < TOL
    assert [[a["id"] for a in d["top_logprobs"]] for d in lines] == ref["gen_greedy.top_ids"][:n].tolist()
    tok = Tokenizer(DEMO)
    assert "".join(d["text"] for d in lines) == tok.decode([d["id"] for d in lines], skip_special_tokens=True)
    assert lines[-1]["finish_reason"] in ("eos", "length") and all(d["finish_reason"] is None for d in lines[:-1])
    assert all(a["token"] == tok.decode([a["id"]]) for a in lines[0]["top_logprobs"])
