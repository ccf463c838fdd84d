"""Generation against transformers' generate(do_sample=False), the KV cache against recomputation,
batching against single prompts, and seeded sampling."""

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import REFERENCES, golden_cases, golden_meta, golden_model
from npqwen.cache import KVCache
from npqwen.generation import generate, generate_batch
from npqwen.sampling import SamplingSettings


def prompts_of(ref, k):
    ids, mask = ref[f"p{k}.input_ids"], ref[f"p{k}.attention_mask"]
    return [row[m == 1].tolist() for row, m in zip(ids, mask)]


@pytest.mark.parametrize("case", golden_cases())
def test_greedy_equals_transformers_generate(case):
    """Token for token, for single prompts and left-padded batches. The export ran generate with
    min_new_tokens = max_new_tokens, so eos ids (the demo's) were suppressed throughout, and with
    the checkpoint's generation_config (greedy, no penalty, for all of them)."""
    from npqwen.generation_config import default_settings, eos_token_ids, read_generation_config
    from conftest import CHECKPOINTS
    ref = load_file(f"{REFERENCES}/{case}.safetensors")
    model = golden_model(case)
    gen_cfg = read_generation_config(f"{CHECKPOINTS}/{case}", model.config.vocab_size)
    for k, _ in enumerate(golden_meta(case)["prompts"]):
        want = ref[f"p{k}.generated"]
        n = want.shape[1]
        got = generate_batch(model, prompts_of(ref, k), max_new_tokens=n, min_new_tokens=n,
                             settings=default_settings(gen_cfg), eos_ids=eos_token_ids(model.config, gen_cfg),
                             max_context=10_000)  # rope_dynamic's prompt runs past its trained context
        assert np.array_equal(np.array(got), want), f"{case} prompt {k}"


@pytest.mark.parametrize("case", ["gqa3_bf16", "sliding_window", "rope_dynamic", "rope_yarn_4x"])
def test_cached_decoding_equals_recomputing(case):
    """Feeding tokens one at a time through the KV cache gives the logits of a full forward.
    (Dynamic RoPE is excluded past its original context: transformers itself re-bases the
    frequencies as the sequence grows, so cached keys keep their old rotation there.)"""
    model = golden_model(case)
    rng = np.random.default_rng(0)
    n = 30 if case != "rope_dynamic" else 31  # rope_dynamic: max_position_embeddings 32
    ids = rng.integers(0, model.config.vocab_size, (2, n))
    full = model.forward(ids).logits
    cache = KVCache(model.config, 2, n)
    pieces = [model.forward(ids[:, :7], cache=cache).logits]      # a prefill of 7, then one by one
    for t in range(7, n):
        pieces.append(model.forward(ids[:, t:t + 1], cache=cache).logits)
    inc = np.concatenate(pieces, axis=1)
    assert np.abs(inc - full).max() < 1e-4 * np.abs(full).max()


def test_batch_gives_each_prompt_its_own_tokens():
    model = golden_model("gqa3_bf16")
    rng = np.random.default_rng(1)
    prompts = [rng.integers(1, 320, n).tolist() for n in (3, 17, 9)]
    batch = generate_batch(model, prompts, max_new_tokens=10, eos_ids=[])
    alone = [generate_batch(model, [p], max_new_tokens=10, eos_ids=[])[0] for p in prompts]
    assert batch == alone


def test_batch_stops_each_row_at_its_eos():
    model = golden_model("gqa3_bf16")
    prompt = [5, 6, 7]
    free = generate_batch(model, [prompt], max_new_tokens=8, eos_ids=[])[0]
    eos = free[3]
    stopped = generate_batch(model, [prompt, [9, 9, 9, 9]], max_new_tokens=8, eos_ids=[eos])
    assert stopped[0] == free[:free.index(eos) + 1]


def test_seed_reproduces_and_differs():
    model = golden_model("mha_f32_tied")
    s = SamplingSettings(temperature=1.0)
    run = lambda seed: [t.id for t in generate(model, None, [1, 2, 3], 20, s, seed=seed, eos_ids=[])]
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_generate_reports_why_it_stopped():
    model = golden_model("rope_dynamic")  # context: 32 positions x dynamic factor 2
    toks = list(generate(model, None, list(range(1, 53)), max_new_tokens=100, eos_ids=[]))
    assert len(toks) == 12 and toks[-1].finish_reason == "context"
    assert all(t.finish_reason is None for t in toks[:-1])
    toks = list(generate(model, None, [1, 2], max_new_tokens=5, eos_ids=[]))
    assert len(toks) == 5 and toks[-1].finish_reason == "length"
    first = toks[0].id
    toks = list(generate(model, None, [1, 2], max_new_tokens=5, eos_ids=[first]))
    assert len(toks) == 1 and toks[0].finish_reason == "eos"


@pytest.mark.parametrize("case", ["gqa3_bf16", "sliding_window"])
def test_query_blocks_give_the_unblocked_result(case, monkeypatch):
    """Long prompts are attended in query blocks; on small sizes, blocks of 5 positions must give
    exactly what one block gives (padding and sliding windows included)."""
    import npqwen.attention as M
    model = golden_model(case)
    rng = np.random.default_rng(2)
    ids = rng.integers(1, 320, (2, 37))
    mask = np.ones_like(ids)
    mask[0, :6] = 0
    whole = model.forward(ids, mask).logits
    monkeypatch.setattr(M, "query_block", lambda b, H, s: 5)
    blocked = model.forward(ids, mask).logits
    valid = mask == 1
    assert np.allclose(blocked[valid], whole[valid], rtol=0, atol=1e-5 * np.abs(whole).max())


def test_nan_stops_generation_naming_the_layer():
    from npqwen import load_model
    from npqwen.errors import NpqwenError
    from conftest import CHECKPOINTS
    model = load_model(f"{CHECKPOINTS}/gqa3_bf16")
    model.layers[1].mlp.w_gate_up[-5, 3] = np.nan  # in up
    with pytest.raises(NpqwenError, match="decoder layer 1"):
        list(generate(model, None, [1, 2, 3], 5, eos_ids=[]))
    model = load_model(f"{CHECKPOINTS}/gqa3_bf16")
    model.lm_head = model.lm_head.copy()
    model.lm_head[7] = np.inf
    with pytest.raises(NpqwenError, match="LM head"):
        list(generate(model, None, [1, 2, 3], 5, eos_ids=[]))


@pytest.mark.parametrize("case", ["gqa3_bf16", "mha_f32_tied", "mqa_bf16_sharded", "qwen3_moe_step2",
                                  "qwen3_5_moe_released", "qwen3_next"])
def test_bf16_weights_give_the_float32_numbers_up_to_rounding(case, monkeypatch):
    """bf16 weights (kept as stored, each product upcasting a block of rows at a time) multiply the
    float32 mode's numbers; only BLAS's order of summation may differ (stored.py), by kernel and
    thread count. So the logits agree to 1e-5 relative error (ten times tighter than the golden
    tolerance; measured: at most 1.4e-6 on OpenBLAS's Haswell kernel, 0 on its SkylakeX kernel), both
    modes match transformers, and greedy generation gives the same tokens."""
    from npqwen import load_model, stored
    from npqwen.stored import StoredMatrix
    from conftest import CHECKPOINTS, REFERENCES
    from safetensors.numpy import load_file
    from test_golden import TOL, rel_err
    monkeypatch.setattr(stored, "SMALL", 0)           # these tiny matrices too, in many small blocks
    monkeypatch.setattr(stored, "BLOCK_BYTES", 4096)
    full = load_model(f"{CHECKPOINTS}/{case}", weights="float32")
    kept = load_model(f"{CHECKPOINTS}/{case}", weights="bf16")
    assert kept.weights_mode == "bf16" and full.weights_mode == "float32"
    assert isinstance(kept.lm_head, StoredMatrix) and kept.embed.dtype == kept.lm_head.dtype   # still as stored
    ids = np.random.default_rng(3).integers(1, 320, (2, 40))
    for rows, n in ((1, 1), (1, 40), (2, 1), (2, 40)):   # decode- and prefill-shaped products, 1 and 2 rows
        a, b = kept.forward(ids[:rows, :n]).logits, full.forward(ids[:rows, :n]).logits
        assert rel_err(a, b) < 1e-5, (rows, n, rel_err(a, b))
    ref = load_file(f"{REFERENCES}/{case}.safetensors")
    assert rel_err(kept.forward(ref["p0.input_ids"]).logits, ref["p0.logits"]) < TOL
    assert generate_batch(kept, ids.tolist(), 6, eos_ids=[]) == generate_batch(full, ids.tolist(), 6, eos_ids=[])
    assert load_model(f"{CHECKPOINTS}/{case}", weights="stream").weights_mode == "bf16"   # the old name


def test_weights_mode_is_validated():
    from npqwen import load_model
    from npqwen.errors import NpqwenError
    from conftest import CHECKPOINTS
    with pytest.raises(NpqwenError, match="weights"):
        load_model(f"{CHECKPOINTS}/gqa3_bf16", weights="int4")
    assert load_model(f"{CHECKPOINTS}/gqa3_bf16").weights_mode == "float32"  # tiny: fits


def test_auto_picks_bf16_when_float32_would_not_fit(monkeypatch):
    """--weights auto: float32 when its copy fits in 3/4 of the available memory, else bf16, and says why."""
    from npqwen import load_model, model as M
    from conftest import CHECKPOINTS
    need = M.float32_bytes(M.ModelConfig.from_file(f"{CHECKPOINTS}/gqa3_bf16"))
    monkeypatch.setattr(M, "available_memory", lambda: int(need / 0.75) + 1024)
    fits = load_model(f"{CHECKPOINTS}/gqa3_bf16")
    assert fits.weights_mode == "float32" and "needs" in fits.weights_reason
    monkeypatch.setattr(M, "available_memory", lambda: int(need / 0.75) - 1024)
    tight = load_model(f"{CHECKPOINTS}/gqa3_bf16")
    assert tight.weights_mode == "bf16" and "would need" in tight.weights_reason
