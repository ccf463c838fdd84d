"""Qwen3.8-Flash-Next's golden cases test what they claim (scripts/export_golden_qwen4.py, transformers
5.23.0): each new mechanism done wrong moves npqwen's logits away from transformers' by more than
1e-2 (test_golden.py checks that done right they agree to 1e-4, test_generation.py that greedy
decoding through the cache equals transformers' generate)."""

import json
import shutil

import numpy as np
import pytest

import npqwen.engram
import npqwen.flash_next
import npqwen.qsa
from npqwen import load_model
from npqwen.cache import KVCache

from conftest import CHECKPOINTS, golden_cases, golden_meta
from test_golden_family import MOVES, error_against_golden

FLASH_NEXT = ("qwen4_exp", "qwen4_exp_text")


def cases():
    return [c for c in golden_cases() if golden_meta(c).get("model_type") in FLASH_NEXT]


def fresh(case):
    return load_model(f"{CHECKPOINTS}/{case}")


def test_the_newest_architecture_is_covered():
    metas = {c: golden_meta(c) for c in cases()}
    assert {m["model_type"] for m in metas.values()} == set(FLASH_NEXT)
    for c, m in metas.items():
        cfg = fresh(c).config
        assert cfg.hyper_connections and cfg.ple_layer_ids and "indexed_attention" in cfg.layer_types
        assert any(len(p["lengths"]) > 1 for p in m["prompts"])                       # left padding
        assert all(p["qsa"]["prompt"]["rows_strict_subset"] > 50 for p in m["prompts"])   # QSA really chooses
        assert any(p["eos_columns"] and any(p["eos_columns"]) for p in m["prompts"])     # the n-gram reset
    text = next(c for c, m in metas.items() if m["model_type"] == "qwen4_exp_text")
    shards = [f for f in _tensor_names(text) if ".ngram_embedding.shard_" in f]
    assert len(shards) > 10                                                          # shard_10 after shard_9


def _tensor_names(case):
    from npqwen.weights import open_checkpoint
    return list(open_checkpoint(f"{CHECKPOINTS}/{case}"))


@pytest.mark.parametrize("case", cases())
def test_dense_attention_instead_of_qsa_is_caught(case, monkeypatch):
    monkeypatch.setattr(npqwen.qsa.Selection, "keep", lambda self, q0, q1, s: np.ones((len(self.first), 1, q1 - q0, s), bool))
    assert error_against_golden(case, fresh(case)) > MOVES


@pytest.mark.parametrize("case", cases())
def test_a_hash_off_by_one_is_caught(case, monkeypatch):
    rows = npqwen.engram.ngram_rows
    monkeypatch.setattr(npqwen.engram, "ngram_rows", lambda *a: rows(*a) + 1)
    assert error_against_golden(case, fresh(case)) > MOVES


@pytest.mark.parametrize("case", cases())
def test_a_plain_residual_is_caught(case, monkeypatch):
    """One stream's worth of residual: each block reads the streams' plain mean and adds its whole
    output to every stream (no norm, no learned mix, no per-stream scale)."""
    def plain_read(S, w, hc, eps):
        x = S.reshape(*S.shape[:-1], hc, -1).mean(axis=-2)
        return x, (None if w.w_inject is None else np.ones(S.shape[:-1] + (hc,), np.float32))
    monkeypatch.setattr(npqwen.flash_next, "read", plain_read)
    assert error_against_golden(case, fresh(case)) > MOVES


@pytest.mark.parametrize("case", cases())
def test_no_reset_at_eos_is_caught(case, monkeypatch):
    shifted = npqwen.engram.shifted_ids
    monkeypatch.setattr(npqwen.engram, "shifted_ids", lambda h, s, eos: shifted(h, s, -1) if s else h)
    assert error_against_golden(case, fresh(case)) > 1e-4     # only positions at and after an eos change


@pytest.mark.parametrize("case", cases())
def test_cached_decoding_crosses_block_boundaries_as_recomputing_does(case):
    """A prefill of 7, then one token at a time through the cache (DeltaNet states, the PLE layer's ids
    and convolution, the QSA layer's keys and index keys), past many blocks of the indexer."""
    model = fresh(case)
    from safetensors.numpy import load_file
    from conftest import REFERENCES
    row = load_file(f"{REFERENCES}/{case}.safetensors")["p0.input_ids"][:1]
    n = min(row.shape[1], 48)
    row = row[:, :n]
    full = model.forward(row).logits
    cache = KVCache(model.config, 1, n)
    pieces = [model.forward(row[:, :7], cache=cache).logits]
    for t in range(7, n):
        pieces.append(model.forward(row[:, t:t + 1], cache=cache).logits)
    assert n > 7 + 4 * model.config.indexer_budget // model.config.indexer_compress_ratio
    assert np.abs(np.concatenate(pieces, axis=1) - full).max() < 1e-4 * np.abs(full).max()


def _shard_copy(tmp_path, case):
    d = tmp_path / "ckpt"
    shutil.copytree(f"{CHECKPOINTS}/{case}", d)
    return d


def test_shards_are_ordered_numerically_not_as_strings(tmp_path):
    """Renaming shards so that string order differs from numeric order breaks a reader that sorts
    names as strings: shard_10 read before shard_2 misplaces rows, and the logits move."""
    case = next(c for c in cases() if golden_meta(c)["model_type"] == "qwen4_exp_text")
    model = fresh(case)
    table = model.layers[model.config.ple_layer_ids[0] - 1].ple.table
    numeric = [s for s in table.shards]
    assert len(numeric) > 10
    as_strings = sorted(range(len(numeric)), key=str)
    assert as_strings != list(range(len(numeric)))
    rows = np.concatenate([np.asarray(numeric[i], np.float32) for i in range(len(numeric))])
    wrong = np.concatenate([np.asarray(numeric[i], np.float32) for i in as_strings])
    assert not np.array_equal(rows[:len(wrong)], wrong)           # the order matters for the rows read
    table.shards = [numeric[i] for i in as_strings]
    table.starts = np.cumsum([0] + [len(s) for s in table.shards])
    assert error_against_golden(case, model) > 1e-4


def test_greedy_generation_through_the_command_line_equals_transformers(tmp_path):
    """`python -m npqwen.generate` on the golden model, through its tokenizer, streaming and cache, 24
    greedy tokens across six of the indexer's blocks: transformers' tokens. The golden model has no
    tokenizer, so one of a character per id is written beside a copy of it, and p0's ids (the eos
    inside it typed as its special token) are the prompt."""
    from safetensors.numpy import load_file
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from cli_inprocess import run_cli
    from conftest import REFERENCES
    case = "qwen4_exp_text"
    d = _shard_copy(tmp_path, case)
    cfg = fresh(case).config
    eos = cfg.eos_token_id
    chars = {i: ("<|endoftext|>" if i == eos else chr(0x4E00 + i)) for i in range(cfg.vocab_size)}
    tok = Tokenizer(models.WordLevel({c: i for i, c in chars.items()}, unk_token=chars[0]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("<\\|endoftext\\|>|."), "isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    tok.save(str(d / "tokenizer.json"))
    ref = load_file(f"{REFERENCES}/{case}.safetensors")
    ids, want = ref["p0.input_ids"][0], ref["p0.generated"][0]
    assert eos in ids.tolist()                                   # the n-gram reset, typed
    status, out, err = run_cli(["--model", str(d), "--temperature", "0", "--max-new-tokens", str(len(want)),
                                "--json", "".join(chars[int(i)] for i in ids)])
    assert status == 0, err
    got = [json.loads(line)["id"] for line in out.splitlines()]
    assert got == want.tolist()


def test_the_server_engine_batches_this_model_as_generate_runs_it_alone():
    """Rows join and leave a running batch carrying their DeltaNet states, their PLE ids and
    convolution inputs and their index keys (batching.py): each gets the tokens it gets alone."""
    from near_ties import MARGIN, greedy_margin
    from npqwen import generate
    from npqwen.batching import Engine
    from test_batching import engine_ids
    case = "qwen4_exp_text"
    model = fresh(case)

    class NoText:   # the golden model has no tokenizer: the engine's streams decode nothing
        def stream(self, skip_special_tokens=True):
            return type("S", (), dict(feed=lambda self, i: "", flush=lambda self: ""))()

    rng = np.random.default_rng(4)
    eos = model.config.eos_token_id
    jobs = [[int(i) for i in rng.integers(8, 300, n)] for n in (9, 70, 3, 33, 50)]
    seen = engine_ids(Engine(model, NoText(), [], max_batch=3), [(ids, 14, None) for ids in jobs])
    for ids, got in zip(jobs, seen):
        assert eos not in ids and greedy_margin(model, None, ids, 14) > MARGIN   # (near_ties.py)
        assert got == [t.id for t in generate(model, None, ids, 14, eos_ids=[])]
