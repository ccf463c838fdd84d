"""Scoring against transformers: per-token log-probabilities, ranks, top tokens and perplexities
exported once by scripts/export_score_golden.py (transformers 5.23.0, float32, eager) for a text in
one window, a text longer than the window scored by the strided recipe, and documents of random ids,
which npqwen scores in left-padded batches."""

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import npqwen.logprobs as logprobs
from cli_inprocess import run_cli
from conftest import CHECKPOINTS, REFERENCES, golden_model, scoring_meta
from npqwen import Tokenizer
from npqwen.score import main as score_main, recipe_perplexity, score_documents, windows

LOGPROB_TOL = 1e-4   # absolute
PPL_TOL = 1e-5       # relative
DEMO = os.path.join(CHECKPOINTS, "demo")
GQA3 = os.path.join(CHECKPOINTS, "gqa3_bf16")

META = scoring_meta()


@pytest.fixture(scope="module")
def ref(scoring_ref):
    return scoring_ref


def text_of(name):
    with open(os.path.join(REFERENCES, f"scoring_{name}.txt"), encoding="utf-8") as f:
        return f.read()


def perplexity_of(s):
    return float(np.exp(-np.sum(s.logprobs, dtype=np.float64) / len(s.logprobs)))


def check(s, ref, name, top=True):
    assert np.array_equal(s.ids, ref[f"{name}.ids"][1:])
    assert np.abs(s.logprobs - ref[f"{name}.logprobs"]).max() < LOGPROB_TOL
    want_lp = ref[f"{name}.logprobs"]
    assert ranks_agree_up_to_ties(s.ranks, ref[f"{name}.ranks"], want_lp, ref.get(f"{name}.top_logprobs"))
    if top:
        assert np.abs(s.top_logprobs - ref[f"{name}.top_logprobs"]).max() < LOGPROB_TOL
        assert ids_agree_up_to_ties(s.top_ids, ref[f"{name}.top_ids"], ref[f"{name}.top_logprobs"])


# Ranks and the order of the top tokens are exact integers, but two tokens whose log-probabilities
# are within rounding of each other may come out in either order, by BLAS kernel (on OpenBLAS's
# Haswell and SkylakeX kernels they have not): a difference is accepted only between such near ties.
TIE = 2 * LOGPROB_TOL


def ranks_agree_up_to_ties(got, want, want_lp, want_top_lp):
    for p in np.flatnonzero(got != want):
        if abs(int(got[p]) - int(want[p])) != 1:
            return False
        visible = want_top_lp is not None and want[p] <= want_top_lp.shape[1]
        if visible and not (np.abs(np.delete(want_top_lp[p], want[p] - 1) - want_lp[p]) <= TIE).any():
            return False   # a rank that moved with no near tie in sight
    return True


def ids_agree_up_to_ties(got_ids, want_ids, want_lp):
    for p, j in zip(*np.nonzero(got_ids != want_ids)):
        partner = np.flatnonzero(want_ids[p] == got_ids[p, j])
        if partner.size:   # swapped with another of the top tokens: only a near tie may swap
            if abs(want_lp[p, partner[0]] - want_lp[p, j]) > TIE:
                return False
        elif j != want_ids.shape[1] - 1:
            return False   # a token from outside the top k: only in the last place (its value is checked above)
    return True


@pytest.fixture(scope="module")
def demo_scores(ref):
    """npqwen's scores of both demo texts, with the defaults (the model's 512-token context, stride 256)."""
    tok, out = Tokenizer(DEMO), {}
    for name in ("short", "long"):
        ids = tok.encode(text_of(name))
        assert ids == ref[f"demo_{name}.ids"].tolist()   # tokenized as transformers' tokenizer does
        (_, out[name]), = score_documents(golden_model("demo"), [ids], top_k=5)
    return out


@pytest.mark.parametrize("name", ["short", "long"])
def test_demo_text_matches_transformers(name, ref, demo_scores):
    meta = META[f"demo_{name}"]
    n = len(ref[f"demo_{name}.ids"])
    assert len(windows(n, 512, 256)) == meta["windows"]          # short: one window; long: two
    check(demo_scores[name], ref, f"demo_{name}")
    assert abs(perplexity_of(demo_scores[name]) / meta["perplexity"] - 1) < PPL_TOL


def test_exact_mean_and_the_recipe_sample_code(demo_scores):
    """The docs' sample code weights later windows one token short: recomputed from npqwen's per-token
    values it gives what that code printed in transformers, which differs from the exact mean."""
    meta = META["demo_long"]
    s = demo_scores["long"]
    recipe = recipe_perplexity(s.logprobs, windows(meta["tokens"], meta["context"], meta["stride"]))
    assert abs(recipe / meta["recipe_perplexity"] - 1) < PPL_TOL
    assert abs(recipe / perplexity_of(s) - 1) > 10 * PPL_TOL


def test_documents_in_left_padded_batches(ref):
    """Three documents of random ids (37, 150 and 81 tokens) scored two at a time, padded, against
    each scored alone by transformers; and one scored by the recipe with a 64-token window, stride 24,
    its windows batched together."""
    docs = [ref[f"gqa3_doc{d}.ids"].tolist() for d in range(3)]
    got = list(score_documents(golden_model("gqa3_bf16"), docs, batch_size=2, top_k=5))
    assert [d for d, _ in got] == [0, 1, 2]
    for d, s in got:
        check(s, ref, f"gqa3_doc{d}")
    (_, s), = score_documents(golden_model("gqa3_bf16"), [docs[1]], context=64, stride=24, batch_size=3, top_k=5)
    check(s, ref, "gqa3_strided")
    assert abs(perplexity_of(s) / META["gqa3_strided"]["perplexity"] - 1) < PPL_TOL


def test_logits_are_computed_a_block_at_a_time(ref, monkeypatch):
    """No more than BLOCK_FLOATS logits at once: with a block of 6 positions' worth, the LM head is
    called on blocks that small (2 rows of 3 positions) and the scores still match transformers'."""
    model = golden_model("gqa3_bf16")
    V = model.config.vocab_size
    shapes = []
    head = model.lm_head_logits
    monkeypatch.setattr(logprobs, "BLOCK_FLOATS", 6 * V)
    monkeypatch.setattr(model, "lm_head_logits", lambda x: shapes.append(x.shape) or head(x))
    docs = [ref[f"gqa3_doc{d}.ids"].tolist() for d in (0, 2)]
    for (_, s), d in zip(score_documents(model, docs, batch_size=2, top_k=5), (0, 2)):
        check(s, ref, f"gqa3_doc{d}")
    assert len(shapes) > 20 and all(b * p <= 6 for b, p, _ in shapes)


def test_dynamic_rope_windows_are_scored_as_if_alone():
    """Dynamic RoPE rescales its frequencies by the longest row of a forward: past the trained context
    (32 positions here, windows of 60 and 55), a window batched beside a longer one would be scored
    with the wrong frequencies, so windows of different lengths never share a forward there."""
    model = golden_model("rope_dynamic")
    ids = np.random.default_rng(5).integers(0, model.config.vocab_size, 80).tolist()
    (_, batched), = score_documents(model, [ids], context=60, stride=25, batch_size=8)
    (_, alone), = score_documents(model, [ids], context=60, stride=25, batch_size=1)
    assert np.abs(batched.logprobs - alone.logprobs).max() < 1e-5


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 400), st.integers(2, 64), st.data())
def test_windows_score_every_token_but_the_first_exactly_once(n, context, data):
    stride = data.draw(st.integers(1, context - 1))
    ws = windows(n, context, stride)
    scored = [t for _, end, first in ws for t in range(first, end)]
    assert scored == list(range(1, n))
    for k, (begin, end, first) in enumerate(ws):
        assert begin == k * stride and end - begin <= context and begin < first <= end  # >= 1 token of context
    assert ws[-1][1] == n


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_json_and_summary_match_transformers(ref):
    status, out, err = run_cli(["--model", DEMO, "--json", "--top-k", "5", os.path.join(REFERENCES, "scoring_short.txt")],
                               main=score_main)
    assert status == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    want = ref["demo_short.logprobs"]
    assert [d["pos"] for d in lines] == list(range(1, len(want) + 1))
    assert [d["id"] for d in lines] == ref["demo_short.ids"][1:].tolist()
    assert np.abs(np.array([d["logprob"] for d in lines]) - want).max() < LOGPROB_TOL
    assert [[t["id"] for t in d["top_logprobs"]] for d in lines] == ref["demo_short.top_ids"].tolist()
    tok = Tokenizer(DEMO)
    assert lines[3]["token"] == tok.decode([lines[3]["id"]])
    printed = float(err.split("perplexity ")[1].split()[0])     # 8 significant digits
    assert abs(printed / META["demo_short"]["perplexity"] - 1) < PPL_TOL
    assert f"scored {len(want)} tokens" in err


def test_cli_jsonl_of_ids_strided_prints_the_recipe_value_too(ref):
    ids = ref["gqa3_strided.ids"].tolist()
    status, out, err = run_cli(["--model", GQA3, "--jsonl", "--context", "64", "--stride", "24"],
                               stdin=(json.dumps({"ids": ids}) + "\n").encode(), main=score_main)
    assert status == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows[0] == ["doc", "pos", "id", "logprob", "rank", "token"] and len(rows) == len(ids)
    assert np.abs(np.array([float(r[3]) for r in rows[1:]]) - ref["gqa3_strided.logprobs"]).max() < LOGPROB_TOL
    assert abs(float(err.split("perplexity ")[1].split()[0]) / META["gqa3_strided"]["perplexity"] - 1) < PPL_TOL
    recipe = float(err.split("recipe prints ")[1].split()[0])
    assert abs(recipe / META["gqa3_strided"]["recipe_perplexity"] - 1) < PPL_TOL


def test_cli_jsonl_documents_each_as_if_alone():
    texts = ["The river was quiet.", "学习如逆水行舟,不进则退", "Once upon a time, there was a little bird."]
    jsonl = "\n".join([json.dumps(texts[0]), "", json.dumps({"text": texts[1]}), json.dumps({"text": texts[2]})])
    status, out, err = run_cli(["--model", DEMO, "--jsonl", "--json", "--batch-size", "2", "-"],
                               stdin=jsonl.encode(), main=score_main)
    assert status == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    tok = Tokenizer(DEMO)
    for d, text in enumerate(texts):
        (_, alone), = score_documents(golden_model("demo"), [tok.encode(text)])
        got = [x["logprob"] for x in lines if x["doc"] == d]
        assert len(got) == len(alone.logprobs) and np.abs(np.array(got) - alone.logprobs).max() < 1e-5
    assert "3 documents" in err
