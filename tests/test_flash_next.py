"""Qwen3.8-Flash-Next's new blocks on their own: the n-gram hash against the constants the released
checkpoint stores, the eos reset against a loop written from the definition, QSA's selection against
a per-query loop, the streams' read and write, and the config's checks."""

import copy
import json
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import ROOT
from npqwen.config import ModelConfig
from npqwen.engram import hash_multipliers, head_primes, ngram_rows, shifted_ids, table_rows
from npqwen.errors import ConfigError

RELEASED = os.path.join(ROOT, "..", "shared", "assets", "qwen4_exp", "configs", "Qwen3.8-Flash-Next", "config.json")


def released_config() -> dict:
    if not os.path.exists(RELEASED):
        pytest.skip(f"../shared/assets/qwen4_exp is not beside this checkout ({RELEASED} missing)")
    with open(RELEASED) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# the n-gram hash


def test_hash_constants_are_those_the_release_stores():
    """The released checkpoint's I64 buffers (quoted from its shard, ../shared/assets/qwen4_exp/SOURCES.md):
    layer_multipliers, the 16 heads' primes and the table's padded rows, from its config alone."""
    cfg = ModelConfig.from_dict(released_config())
    assert hash_multipliers(cfg.vocab_size, cfg.ngram_size, 0, cfg.seed).tolist() == \
        [23703573157769, 20109073645365, 8052911324071]
    primes = head_primes(cfg.ngram_vocab_size_base, cfg.ngram_heads, 0)
    assert primes[0] == 20000003 and primes[-1] == 20000171 and len(primes) == 16
    assert sum(primes) == 320001446 and table_rows(primes, cfg.make_ngram_vocab_size_divisible_by) == 320001536
    assert head_primes(cfg.ngram_vocab_size_base, 16, 1)[0] > primes[-1]          # a second PLE layer: the next primes


def shifted_by_loop(history, shift, eos):
    """The id `shift` places back, or eos if that lies before the start or at/behind an eos before p."""
    out = np.empty_like(history)
    for r, row in enumerate(history):
        for p in range(len(row)):
            src = p - shift
            cut = any(row[q] == eos for q in range(max(src, 0), p)) if shift else False
            out[r, p] = row[src] if src >= 0 and not cut else eos
    return out


@given(st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=12), min_size=1, max_size=3).filter(
    lambda rows: len({len(r) for r in rows}) == 1), st.integers(0, 3))
def test_the_context_resets_at_eos(rows, shift):
    history = np.array(rows, np.int64)
    np.testing.assert_array_equal(shifted_ids(history, shift, eos=1), shifted_by_loop(history, shift, eos=1))


def test_rows_are_xor_of_products_modulo_each_heads_prime():
    m = np.array([7, 11, 13], np.int64)
    sizes, offsets = np.array([5, 7, 11, 13], np.int64), np.array([0, 5, 12, 23], np.int64)
    history = np.array([[1, 1, 4, 9, 2]], np.int64)                    # eos = 1 twice before the sequence
    rows = ngram_rows(history, 1, m, sizes, offsets, heads_per_ngram=2)
    a, b = 9 * 7 ^ 4 * 11, 9 * 7 ^ 4 * 11 ^ 1 * 13                   # position 3: bigram (4, 9), trigram (1, 4, 9)
    assert rows[0, 3].tolist() == [a % 5, a % 7 + 5, b % 11 + 12, b % 13 + 23]


# ---------------------------------------------------------------------------------------------
# QSA's choice of keys


class FakeCfg:
    indexer_compress_ratio, indexer_budget, rms_norm_eps = 2, 4, 1e-6


def test_selection_keeps_the_top_blocks_and_the_tail_from_each_rows_first_token():
    from npqwen.qsa import Selection
    rng = np.random.default_rng(0)
    b, n, t, di = 2, 2, 11, 8
    padding = np.ones((b, t), np.int64)
    padding[1, :3] = 0                                                 # row 1: 3 positions of left padding
    ctx = type("Ctx", (), dict(padding=padding, inv_freq=np.array([1.0, 0.1], np.float32), rope_scale=1.0))
    w = type("W", (), dict(index_k_norm=np.ones(di, np.float32)))
    q, keys = rng.standard_normal((b, n, t, di)).astype(np.float32), rng.standard_normal((b, t, di)).astype(np.float32)
    sel = Selection(q, keys, w, FakeCfg, ctx)
    keep = sel.keep(0, t, t)[:, 0]
    R, top = 2, 2
    for r in range(b):
        first = 3 * r
        for i in range(t):
            visible = i - first + 1
            if visible <= 0:
                continue
            blocks = visible // R
            got = {j for j in range(t) if keep[r, i, j] and j >= first and j <= i}
            if blocks <= top:   # every visible token
                assert got == set(range(first, i + 1)), (r, i)
                continue
            # choose: the loop scores each complete block itself; the kept blocks are whole, `top` of
            # them, none scoring below a block left out (relu makes ties at 0 common: either may go)
            scores = np.array([np.maximum(q[r, :, i] @ sel.block_keys[r, j], 0).sum() / np.sqrt(di) for j in range(blocks)])
            kept = [j for j in range(blocks) if all(first + j * R + k in got for k in range(R))]
            assert len(kept) == top and scores[kept].min() >= np.delete(scores, kept).max(), (r, i)
            tail = set(range(first + blocks * R, i + 1))
            assert got == {first + j * R + k for j in kept for k in range(R)} | tail, (r, i)
    assert (keep[:, :, :].sum(-1) < t).any()                           # some query really left keys out


# ---------------------------------------------------------------------------------------------
# the streams


def test_streams_read_a_mean_and_write_scaled_copies():
    from npqwen.hyper import HyperConnection, read, streams_from_embeddings, write
    rng = np.random.default_rng(1)
    hc, d, r = 3, 4, 2
    x = rng.standard_normal((1, 2, d)).astype(np.float32)
    S = streams_from_embeddings(x, hc)
    assert np.array_equal(S.reshape(1, 2, hc, d)[:, :, 1], x)
    w = HyperConnection(np.ones(hc * d, np.float32), np.zeros((r, hc * d), np.float32), np.zeros((hc * d, r), np.float32),
                        np.zeros((hc, hc * d), np.float32))
    mixed, inj = read(S, w, hc, 1e-6)
    normed = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(mixed, 0.5 * normed, rtol=1e-6)          # sigmoid(0) = 1/2 on every identical stream
    np.testing.assert_allclose(inj, np.ones((1, 2, hc)), rtol=1e-6)     # 2 sigmoid(0)
    y = rng.standard_normal((1, 2, d)).astype(np.float32)
    out = write(S, y, np.array([[[1, 2, 3], [0, 0, 0]]], np.float32)).reshape(1, 2, hc, d)
    np.testing.assert_allclose(out[0, 0, 2], x[0, 0] + 3 * y[0, 0], rtol=1e-6)
    np.testing.assert_allclose(out[0, 1], np.tile(x[0, 1], (hc, 1)), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# the config


def test_the_released_config_reads_as_transformers_reads_it():
    cfg = ModelConfig.from_dict(released_config())
    assert cfg.model_type == "qwen4_exp" and cfg.weight_prefix == "model.language_model." and cfg.hyper_connections
    assert cfg.layer_types.count("linear_attention") == 36 and cfg.layer_types.count("indexed_attention") == 12
    assert cfg.layer_types[3] == "indexed_attention"                   # "full_attention" in the file: QSA
    assert (cfg.ple_layer_ids, cfg.seed, cfg.split_ngram_parts, cfg.norm_topk_prob) == ([2], 1234, 128, True)
    assert cfg.deltanet_gate == "sigmoid" and cfg.rotary_dim == 64 and cfg.mlp_types == ["sparse"] * 48


@pytest.mark.parametrize("change,message", [
    (dict(indexer_kv_heads=2), "indexer_kv_heads must be 1"),
    (dict(ple_layer_ids=[0]), "ple_layer_ids entry 0 is out of range"),
    (dict(ple_layer_ids=[49]), "ple_layer_ids entry 49 is out of range"),
    (dict(ple_layer_ids=[4]), "a indexed_attention layer"),
    (dict(indexer_budget=2046), "must be a multiple of indexer_compress_ratio"),
    (dict(indexer_budget=None), "missing field 'indexer_budget'"),
    (dict(hc_count=1), "hc_count must be at least 2"),
    (dict(output_gate_type="relu"), "output_gate_type"),
    (dict(ple_embed_dim=2561), "ple_embed_dim (2561) must be divisible"),
    (dict(eos_token_id=None), "eos_token_id must be set"),
    (dict(layer_types=["linear_attention"] * 47 + ["sliding_attention"]), "'sliding_attention' is not supported"),
])
def test_bad_configs_are_one_clear_error(change, message):
    d = copy.deepcopy(released_config())
    d["text_config"].update(change)
    if change.get("eos_token_id", 0) is None:
        d.pop("eos_token_id", None)
    with pytest.raises(ConfigError) as e:
        ModelConfig.from_dict(d)
    assert message in str(e.value), str(e.value)
